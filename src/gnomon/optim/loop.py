"""The compiled optimizer loop shared by every gradient-based engine.

One driver runs any optax transformation (a :class:`gnomon.optim.Program`) over an :class:`~gnomon.Objective`:

* two compiled programs per (objective, method settings, recording settings, argument shapes), lowered ahead of
  time, compiled in background threads and cached (:mod:`gnomon.optim.build`; :func:`prepare` starts them before
  a caller's other work), so that a second call does not recompile: ``init`` (the transformation's ``init`` at
  θ_0) and ``chunk`` (:mod:`gnomon.optim.chunk`), a ``lax.while_loop`` over at most one chunk of steps whose body
  (:mod:`gnomon.optim.body`) evaluates ``value_and_grad`` once: the objective's model is inlined at as few sites
  as the method needs (the body, plus its estimators);
* each body iteration evaluates θ_t, records row t (θ_t, loss(θ_t) and the asked channels), tests the stop
  rules and applies the update: ``loss[t]`` is the loss at ``θ[t]`` and the last row is the final point;
* Python runs only between chunks (rows to the host, progress bar); a batch of fits is the same body
  under ``jax.vmap``, stepping its members in lockstep; the trace is assembled on the host
  (:mod:`gnomon.optim.assemble`);
* compilation and execution are timed apart (``info["compile_s"]``, ``info["run_s"]``; ``runtime_s`` is the
  wall time, compilation that overlapped other work counted once);
* the compiled chunk also evaluates the loss and gradient at given points (:attr:`LoopResult.probe`) for the
  checks at the end of a run; built with ``output=True`` the body evaluates the loss together with the model's
  mean or residuals and keeps them at the best point (:attr:`LoopResult.output`) for the goodness of fit, compiling
  no copy of the model of its own.

Channels (:func:`resolve_channels`): ``grad_norm`` (|∇loss(θ_t)|), ``step_norm`` (|θ_{t+1} − θ_t|),
``learning_rate`` (the product of the state's ``learning_rate`` fields after the update from θ_t) and
``accepted`` (a backtracking rule's verdict on θ_t), where asked and available (:mod:`gnomon.optim.readout`);
the final row holds NaN for the channels that describe a step. By default only the ones that cost nothing per
step are recorded (a norm is an O(D) pass per step: on cheap objectives it is a measurable share of the loop);
the gradient norm at the final point is always reported (``info["final_grad_norm"]``).

Stopping (the status: :mod:`gnomon.optim.status`): the gradient-norm tolerance ``tol`` (|∇loss| ≤ tol), the
relative loss change ``ftol`` (|f_{t-1} − f_t| ≤ ftol · max(|f_{t-1}|, |f_t|, 1)), ``num_steps``, a non-finite
loss/gradient (status names the step; the trace keeps every finite point before it), a stall: ``STALL_STEPS``
updates in a row that leave θ bit-for-bit unchanged (float32 on a large loss does this), or, with ``runoff``, a
loss that keeps falling at a steady rate along one coordinate (:mod:`gnomon.optim.runoff`).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.optim import build
from gnomon.optim.assemble import assemble, assemble_batch
from gnomon.optim.build import compile_key, compiled
from gnomon.optim.carry import CHANNELS, LoopSettings, Rows
from gnomon.optim.methods import Program
from gnomon.optim.start_estimate import ESTIMATE
from gnomon.optim.status import RUNNING, STALL_STEPS
from gnomon.util.progress import Progress
from gnomon.util.validate import default_key

__all__ = ["CHANNELS", "STALL_STEPS", "LoopResult", "LoopSettings", "compile_key", "estimate_start", "prepare",
           "resolve_channels", "run_loop"]

# Rows buffered on the device per chunk: bounded by memory (≈ 64 MB of θ rows) and by the run length.
_ROW_BYTES_BUDGET = 64 * 2**20
_MAX_ROWS = 1024  # per chunk while a progress bar is drawn
_MAX_ROWS_QUIET = 1 << 16  # without a bar: few chunks (each costs a dispatch and a host copy)


class LoopResult(NamedTuple):
    """What :func:`run_loop` returns: the trace, the final optimizer state (numpy), the timings, ``probe`` and
    ``output``.

    ``probe(thetas) -> (losses, grads)`` evaluates the loss and its gradient at points ``(K, D)`` (``(K, B, D)``
    for a batch, one point per member) with the compiled loop itself — no new compilation — for checks at the
    end of a run (:mod:`gnomon.optim.verdict`); each point costs one gradient evaluation. ``output(theta)``
    (where the loop was built with ``output=True``, else None) is the model's mean (a likelihood objective) or
    residuals at θ when θ is the lowest-loss point the loop evaluated (``(B, D)`` for a batch: a list, None for a
    member whose best point is elsewhere), read from the carry: nothing is evaluated."""

    trace: Any
    state: Any
    compile_s: float
    run_s: float
    probe: Any = None
    output: Any = None


def _rows_for(dim: int, itemsize: int, num_steps: int, record_every: int, progress_on: bool = True) -> int:
    most = _MAX_ROWS if progress_on else _MAX_ROWS_QUIET
    cap = max(1, min(most, _ROW_BYTES_BUDGET // max(1, dim * itemsize)))
    need = max(1, math.ceil((num_steps + 1) / record_every))
    return min(cap, _round_up(need))


def _round_up(n: int) -> int:
    """``n`` rounded up to 2^k or 1.5 · 2^k: few distinct compilations, under ⅓ of the rows unused."""
    grain = 1 << max(0, n.bit_length() - 2)
    return -(-n // grain) * grain


def _check(num_steps: Any, record_every: Any, tol: Any, ftol: Any) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative int, got {num_steps!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, (int, np.integer)) or record_every < 1:
        raise ValueError(f"record_every must be a positive int, got {record_every!r}")
    for name, v in (("tol", tol), ("ftol", ftol)):
        if v is not None and (isinstance(v, bool) or not (isinstance(v, (int, float)) and v >= 0)):
            raise ValueError(f"{name} must be a non-negative number or None, got {v!r}")


def run_loop(
    obj: Objective,
    theta0: Any,
    program: Program,
    *,
    num_steps: int,
    record_every: int = 1,
    tol: float | None = None,
    ftol: float | None = None,
    data: Any = None,
    key: Any = None,
    batched: bool = False,
    progress: bool | None = None,
    channels: str | tuple[str, ...] | None = None,
    runoff: bool = False,
    output: bool = False,
    start_curvature: str | None = None,
) -> LoopResult:
    """Run ``program`` from ``theta0`` (``(D,)``, or ``(B, D)`` with ``batched``) -> :class:`LoopResult`.
    ``runoff``: the run-off stop (:mod:`gnomon.optim.runoff`); ``output``: build :attr:`LoopResult.output` (an
    objective with a likelihood or residuals); ``start_curvature``: the chunk can also estimate this curvature
    diagonal at θ_0 (:func:`estimate_start`)."""
    _check(num_steps, record_every, tol, ftol)
    channels = resolve_channels(channels, tol)
    theta0 = jnp.asarray(theta0)
    if not jnp.issubdtype(theta0.dtype, jnp.floating):
        theta0 = theta0.astype(jnp.result_type(float))
    want = 2 if batched else 1
    if theta0.ndim != want or theta0.shape[-1] != obj.dim:
        expected = f"(B, {obj.dim})" if batched else f"({obj.dim},)"
        raise ValueError(f"θ0 has shape {tuple(theta0.shape)}, expected {expected} for {obj!r}")
    key = default_key() if key is None else key

    start = time.perf_counter()
    bar = Progress(num_steps, f"{program.name}",
                   enabled=progress if progress is not None else (None if num_steps >= 2000 else False))
    settings = _settings(obj, theta0, num_steps, record_every, tol, ftol, batched, channels, bar.enabled, runoff,
                         output, start_curvature)
    programs = compiled(obj, program, settings, (theta0, data, key, program.arrays))
    programs.init.executable()
    programs.chunk.executable()
    compile_s = 0.0
    if programs.unreported[0]:  # this build's first run: its lowering and compiles (maybe begun by prepare())
        programs.unreported[0] = False
        compile_s = programs.lower_s + programs.init.seconds + programs.chunk.seconds
    run_start = time.perf_counter()
    carry = programs.init(theta0, data, key, program.arrays)
    pieces: list[Rows] = []
    n_steps = np.int32(num_steps)
    first = np.bool_(True)
    while True:
        carry, bufs, summary = programs.chunk(carry, data, key, program.arrays, n_steps, first)
        first = np.bool_(False)
        bufs, summary = jax.device_get((bufs, summary))
        pieces.append(bufs)
        bar.update(int(np.min(summary.t)), loss=_mean_finite(np.asarray(summary.loss)))
        if np.all(summary.status != RUNNING):
            break
    bar.close()
    state = jax.device_get(carry.opt_state) if programs.has_report else None
    runtime = time.perf_counter() - start
    run_s = time.perf_counter() - run_start
    info = {"engine": program.name, **program.info, "num_steps": int(num_steps), "record_every": int(record_every),
            "tol": settings.tol, "ftol": settings.ftol, "runoff": bool(runoff), "objective": dict(obj.info),
            "compile_s": compile_s, "run_s": run_s}
    rows_all = pieces[0] if len(pieces) == 1 else Rows(  # chunks follow each other on the row axis
        *(None if getattr(pieces[0], f) is None else
          np.concatenate([np.asarray(getattr(p, f)) for p in pieces], axis=int(batched)) for f in Rows._fields))
    if not batched:
        info["final_grad_norm"] = float(summary.grad_norm)
    trace = (assemble_batch if batched else assemble)(rows_all, pieces, summary, obj, info, runtime,
                                                      programs.channels, theta0)

    def probe_at(thetas: Any) -> tuple[np.ndarray, np.ndarray]:
        return build.probe(programs, carry, np.asarray(thetas), data, key, program.arrays)

    def output_at(theta: Any) -> Any:
        return build.output(programs, carry, np.asarray(theta))

    return LoopResult(trace, state, compile_s, run_s, probe_at, output_at if output else None)


def _settings(obj: Objective, theta0: Any, num_steps: int, record_every: int, tol: float | None, ftol: float | None,
              batched: bool, channels: tuple[str, ...], bar_enabled: bool, runoff: bool = False,
              output: bool = False, start_curvature: str | None = None) -> LoopSettings:
    width = obj.dim * (theta0.shape[0] if batched else 1)
    rows = _rows_for(width, theta0.dtype.itemsize, num_steps, record_every, bar_enabled)
    return LoopSettings(rows, int(record_every), None if tol is None else float(tol),
                        None if ftol is None else float(ftol), batched, channels, bool(runoff), bool(output),
                        start_curvature)


def estimate_start(obj: Objective, theta0: Any, program: Program, *, num_steps: int, record_every: int = 1,
                   tol: float | None = None, ftol: float | None = None, data: Any = None, key: Any = None,
                   batched: bool = False, progress: bool | None = None,
                   channels: str | tuple[str, ...] | None = None, runoff: bool = False, output: bool = False,
                   start_curvature: str | None = None) -> np.ndarray:
    """The raw ``start_curvature`` diagonal at θ_0 (``(D,)``, ``(B, D)`` with ``batched``) from the loop's own
    compiled chunk — the programs :func:`run_loop` then runs with the same arguments (``program.arrays`` any
    placeholder of the diagonal's shape): one call that evaluates θ_0 through the model's linearisation, adds its D
    JVPs and takes no step (:mod:`gnomon.optim.start_estimate`). Waits for the compile."""
    if start_curvature is None:
        raise ValueError("estimate_start needs the start_curvature the loop is built to estimate")
    channels = resolve_channels(channels, tol)
    theta0 = jnp.asarray(theta0)
    if not jnp.issubdtype(theta0.dtype, jnp.floating):
        theta0 = theta0.astype(jnp.result_type(float))
    key = default_key() if key is None else key
    enabled = _bar_enabled(progress, num_steps)
    settings = _settings(obj, theta0, num_steps, record_every, tol, ftol, batched, channels, enabled, runoff,
                         output, start_curvature)
    programs = compiled(obj, program, settings, (theta0, data, key, program.arrays))
    carry = programs.init(theta0, data, key, program.arrays)
    carry, _, _ = programs.chunk(carry, data, key, program.arrays, np.int32(ESTIMATE), np.bool_(True))
    return np.asarray(jax.device_get(carry.start_diag))


def _bar_enabled(progress: bool | None, num_steps: int) -> bool:
    """Whether :class:`Progress` would draw (its own rule: a terminal draws), without drawing anything."""
    enabled = progress if progress is not None else (None if num_steps >= 2000 else False)
    if enabled is None:
        isatty = getattr(sys.stderr, "isatty", None)
        enabled = bool(isatty()) if callable(isatty) else False
    return bool(enabled)


def prepare(obj: Objective, theta0: Any, program: Program, *, num_steps: int, record_every: int = 1,
            tol: float | None = None, ftol: float | None = None, data: Any = None, key: Any = None,
            batched: bool = False, progress: bool | None = None, channels: str | tuple[str, ...] | None = None,
            runoff: bool = False, output: bool = False, start_curvature: str | None = None) -> None:
    """Lower the programs :func:`run_loop` will run with these arguments and start compiling them in the background
    (``program.arrays`` may be placeholders of the right shapes and dtypes): a caller that has other work before the
    run — ``gn.optimize``'s curvature estimate at θ_0 — overlaps it with the compilation. Arguments as
    :func:`run_loop`, which finds the programs in its cache; invalid arguments are left for it to report."""
    try:
        channels = resolve_channels(channels, tol)
        theta0 = jnp.asarray(theta0)
        if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
            return
        settings = _settings(obj, theta0, num_steps, record_every, tol, ftol, batched, channels,
                             _bar_enabled(progress, num_steps), runoff, output, start_curvature)
        compiled(obj, program, settings, (theta0, data, default_key() if key is None else key, program.arrays))
    except (ValueError, TypeError):
        return


def resolve_channels(channels: str | tuple[str, ...] | None, tol: float | None = None) -> tuple[str, ...]:
    """The recorded channels: None → the ones that cost nothing per step (``learning_rate``, ``accepted``, and
    ``grad_norm`` when ``tol`` is set, since the stop test computes it); ``"all"`` → :data:`CHANNELS`; or a
    subset of :data:`CHANNELS`."""
    if channels is None:
        return ("grad_norm", "learning_rate", "accepted") if tol is not None else ("learning_rate", "accepted")
    if isinstance(channels, str):
        if channels != "all":
            raise ValueError(f"channels must be None, 'all' or a subset of {CHANNELS}, got {channels!r}")
        return CHANNELS
    unknown = set(channels) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channels {sorted(unknown)}; expected a subset of {CHANNELS} (or 'all')")
    return tuple(c for c in CHANNELS if c in channels)


def _mean_finite(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if x.size else float("nan")
