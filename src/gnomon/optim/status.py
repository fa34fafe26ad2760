"""Why an optimization stopped: a readable sentence (``trace.status``) with a machine-readable code beside it.

``trace.status`` stays the sentence a person reads ("diverged at step 12: non-finite loss (nan)"); the code is
:class:`StatusCode`, recorded as ``trace.info["status_code"]`` (a list with one per member for a batch) and
written to summary.json as ``status_code``. Code inside gnomon tests the code, never the sentence's wording
(:func:`status_code` reads it from a trace, :func:`code_of` from a sentence that travelled without it — an
older run's summary, a status handed over as text).

The compiled loop carries an integer (:data:`RUNNING` … :data:`RAN_OFF`); :data:`LOOP_CODES` maps it to the code and
:func:`sentence` writes the sentence. The end-of-run checks (:mod:`gnomon.optim.verdict`) may replace a code by
``no_progress`` or ``saddle_point``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

import numpy as np


class StatusCode(StrEnum):
    """Why an optimization stopped (a ``str``: ``StatusCode.CONVERGED == "converged"``, JSON writes the value)."""

    CONVERGED = "converged"  #: |∇loss| ≤ tol, a relative loss change ≤ ftol, or an exactly zero gradient
    MAX_STEPS = "max_steps"  #: num_steps updates taken
    STALLED = "stalled"  #: STALL_STEPS updates in a row left θ bit-for-bit unchanged
    DIVERGED = "diverged"  #: a non-finite loss or gradient the method could not step back from
    NO_PROGRESS = "no_progress"  #: no point beat the start although its gradient is not small (verdict)
    SADDLE_POINT = "saddle_point"  #: stopped where the Hessian has a negative eigenvalue (verdict)
    RAN_OFF = "ran_off"  #: the loss kept falling at a steady rate along one coordinate (gnomon.optim.runoff)


# The compiled loop's status (an int32 in the carry): RUNNING until a stop rule fires.
RUNNING, CONVERGED, NONFINITE, MAX_STEPS, STALLED, RAN_OFF = range(6)
STALL_STEPS = 20  # updates in a row that leave θ bit-for-bit unchanged: the run has stalled
LOOP_CODES = {CONVERGED: StatusCode.CONVERGED, NONFINITE: StatusCode.DIVERGED, MAX_STEPS: StatusCode.MAX_STEPS,
              STALLED: StatusCode.STALLED, RAN_OFF: StatusCode.RAN_OFF}

# how each sentence begins (the sentences are written by this module and by gnomon.optim.verdict)
_OPENINGS = (("converged", StatusCode.CONVERGED), ("max_steps", StatusCode.MAX_STEPS),
             ("stalled", StatusCode.STALLED), ("diverged", StatusCode.DIVERGED),
             ("no progress", StatusCode.NO_PROGRESS), ("saddle point", StatusCode.SADDLE_POINT),
             ("ran off", StatusCode.RAN_OFF))


def code_of(status: Any) -> StatusCode | None:
    """The code of a status sentence, or None for a sentence that is not an optimizer's (a sampler's status, an
    unknown string, None)."""
    if isinstance(status, StatusCode):
        return status
    if not isinstance(status, str):
        return None
    for opening, code in _OPENINGS:
        if status.startswith(opening):
            return code
    return None


def status_code(trace: Any) -> StatusCode | tuple[StatusCode | None, ...] | None:
    """The code of an optimization trace: ``info["status_code"]`` (a member ``batch[i]`` gets its own entry;
    a batch a tuple), else read from the sentence (a trace written before codes existed)."""
    info = getattr(trace, "info", None) or {}
    recorded = info.get("status_code")
    status = getattr(trace, "status", None)
    if isinstance(recorded, (list, tuple)):
        i = (getattr(trace, "extras", None) or {}).get("batch_index")
        if i is not None and 0 <= int(i) < len(recorded):
            return _coerce(recorded[int(i)], status)
        if isinstance(status, (list, tuple)) and len(status) == len(recorded):
            return tuple(_coerce(c, s) for c, s in zip(recorded, status, strict=True))
    elif recorded is not None and not isinstance(status, (list, tuple)):
        return _coerce(recorded, status)
    if isinstance(status, (list, tuple)):
        return tuple(code_of(s) for s in status)
    return code_of(status)


def _coerce(code: Any, status: Any) -> StatusCode | None:
    try:
        return StatusCode(code)
    except ValueError:
        return code_of(status)


def codes_info(codes: list[StatusCode], batched: bool) -> Any:
    """What ``info["status_code"]`` holds: the code, or the list of the members' codes."""
    return list(codes) if batched else codes[0]


def sentence(code: int, t: int, loss: float, dtype: Any = None, runoff: tuple | None = None) -> str:
    """The sentence of a loop status. ``loss``: the value at the point where the run stopped (a finite one at a
    non-finite stop means the gradient was not finite); ``dtype``: θ's (the float32 advice only where θ is in
    low precision); ``runoff``: ``(label, distance, fall, points)`` of a run that ran off."""
    if code == CONVERGED:
        return "converged"
    if code == MAX_STEPS:
        return "max_steps"
    if code == STALLED:
        low = dtype is not None and np.dtype(dtype).itemsize < 8
        why = ("e.g. float32 on a large loss: use float64, or stop earlier with ftol or a larger tol" if low
               else "at or next to an optimum, or along a flat direction: set tol or ftol to stop earlier")
        return (f"stalled at step {t}: {STALL_STEPS} updates in a row left θ unchanged or made no progress the loss "
                f"can resolve (the loss is flat to working precision, {why})")
    if code == RAN_OFF:
        label, distance, fall, points = runoff if runoff is not None else ("a coordinate", math.nan, math.nan, 0)
        return (f"ran off at step {t} along {label}: over its last {points} improving points it moved {distance:.3g} "
                f"in one direction while the loss fell {fall:.3g} ({fall / distance if distance else math.nan:.3g} per "
                "unit) without slowing down — the density has no mode within reach along it (a neck, or a scale "
                "without a lower bound); non-centre the model, bound the scale with a prior, or pass runoff=False to "
                "follow it further")
    what = "loss" if not math.isfinite(loss) else "gradient"
    return f"diverged at step {t}: non-finite {what} ({loss if what == 'loss' else 'grad'})"
