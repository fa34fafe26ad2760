"""Optional per-run diagnostics, switched on by one :class:`DiagnosticsConfig` (everything off by default).

=====================  ==========================================================================
file                   content
=====================  ==========================================================================
``diag_steps.jsonl``   one JSON object per line, every ``diag_steps_every`` optimizer steps (or draws):
                       ``{"step", "loss", <scalar stats channels>}``; written line-buffered, so a crash
                       keeps every complete line (:func:`read_diag_steps` skips a torn last line)
``grads.npz``          ``step (K,)``, ``loss (K,)``, ``grad (K, D)``: ∇loss at every ``grads_every``-th step
``signals.npz``        derived time series for plotting (``{name: array}``); by default the constrained
                       parameter blocks ``layout.unpack(θ_t)`` of every row
``curvature.npz``      the curvature estimate (``diag``, optional ``matrix``)
``precond.npz``        the preconditioner (``lr_vec`` or the arrays given)
``handoff.npz``        the MAP → sampler hand-off bundle (θ*, metric, step size, ...)
=====================  ==========================================================================

Rows for "every N steps" are the first recorded row of each block ``[kN, (k+1)N)`` of optimizer steps plus
the final row, so thinned traces (``record_every``) still give one row per block.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from gnomon.io.jsonio import to_jsonable
from gnomon.trace.trace import Trace

DIAG_STEPS_FILE = "diag_steps.jsonl"


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Which optional diagnostic files a run gets (all off by default: default runs stay small).

    Attributes:
      diag_steps_every: write ``diag_steps.jsonl`` with one line every this many optimizer steps
        (sampling: draws) — scalar channels only (loss / log_prob, grad_norm, step_norm, learning_rate, ...).
      grads_every: write ``grads.npz`` with the gradient at every this many steps (taken from a ``grad``
        stats channel of the trace when the engine recorded one, else recomputed from ``objective=``,
        counted in meta.json ``diagnostics.grads_num_grad_evals``).
      signals: write ``signals.npz`` (from ``signals=``; by default the layout's constrained blocks per row).
      curvature: write ``curvature.npz`` (from ``curvature=``, a :class:`gnomon.Curvature` or arrays).
      precond: write ``precond.npz`` (from ``precond=``: a learning-rate vector or arrays).
      handoff: write ``handoff.npz`` (from ``handoff=``: a hand-off bundle or arrays).
    """

    diag_steps_every: int | None = None
    grads_every: int | None = None
    signals: bool = False
    curvature: bool = False
    precond: bool = False
    handoff: bool = False

    def __post_init__(self):
        for name in ("diag_steps_every", "grads_every"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise ValueError(f"DiagnosticsConfig.{name} must be a positive int or None, got {v!r}")
        for name in ("signals", "curvature", "precond", "handoff"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(
                    f"DiagnosticsConfig.{name} must be True or False, got {getattr(self, name)!r}"
                )

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) not in (None, False) for f in fields(self))

    def to_dict(self) -> dict[str, Any]:
        return {k: (int(v) if isinstance(v, np.integer) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiagnosticsConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"DiagnosticsConfig: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


def every_rows(step: np.ndarray, every: int) -> np.ndarray:
    """Indices of the first row in each block of ``every`` steps, plus the last row."""
    step = np.asarray(step).astype(np.int64)
    if step.size == 0:
        return np.zeros(0, dtype=np.int64)
    block = step // every
    keep = np.ones(step.shape, bool)
    keep[1:] = block[1:] != block[:-1]
    keep[-1] = True
    return np.flatnonzero(keep)


def _steps_of(trace: Trace) -> np.ndarray:
    n = len(trace)
    return np.asarray(trace.step) if trace.step is not None else np.arange(n)


def _json_num(x: Any) -> Any:
    v = x.item() if hasattr(x, "item") else x
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def write_diag_steps(path: Path, trace: Trace, every: int) -> int:
    """Write ``diag_steps.jsonl`` (line-buffered) and return the number of lines."""
    lines = 0
    with open(path, "w", buffering=1, encoding="utf-8") as fh:
        if trace.kind == "optimization":
            step = _steps_of(trace)
            chans = {"loss": trace.loss, "log_prob": trace.log_prob, **dict(trace.stats)}
            cols = {k: np.asarray(v) for k, v in chans.items() if v is not None and np.ndim(v) == 1}
            for i in every_rows(step, every):
                rec = {"step": int(step[i]), **{k: _json_num(v[i]) for k, v in cols.items()}}
                fh.write(json.dumps(rec, allow_nan=False) + "\n")
                lines += 1
        else:
            chans = {"log_prob": trace.log_prob, **dict(trace.stats)}
            cols = {k: np.asarray(v) for k, v in chans.items() if v is not None and np.ndim(v) == 2}
            c, n = np.shape(trace.log_prob)
            for j in every_rows(np.arange(n), every):
                for ch in range(c):
                    rec = {"draw": int(j), "chain": ch, **{k: _json_num(v[ch, j]) for k, v in cols.items()}}
                    fh.write(json.dumps(rec, allow_nan=False) + "\n")
                    lines += 1
    return lines


def read_diag_steps(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``diag_steps.jsonl``; a torn final line (a crash mid-write) is skipped."""
    from gnomon.io.jsonio import from_jsonable

    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                out.append(from_jsonable(json.loads(line)))
            except ValueError:
                break
    return out


def _arrays_of(name: str, src: Any) -> dict[str, Any]:
    """``{array_name: array}`` from a mapping, an object with ``to_arrays()``, or a bare array."""
    if hasattr(src, "to_arrays"):
        out = src.to_arrays()
    elif isinstance(src, Mapping):
        out = dict(src)
    elif name == "curvature" and hasattr(src, "diag"):
        out = {"diag": src.diag}
        if getattr(src, "matrix", None) is not None:
            out["matrix"] = src.matrix
    elif hasattr(src, "__array__") or hasattr(src, "shape"):
        out = {{"precond": "lr_vec", "curvature": "diag"}.get(name, name): src}
    else:
        raise ValueError(
            f"{name}=: expected a mapping of arrays, an array or an object with to_arrays(), got "
            f"{type(src).__name__}"
        )
    return {str(k): np.asarray(v) for k, v in out.items() if v is not None}


def _describe(src: Any) -> dict[str, Any] | None:
    for attr in ("describe", "to_meta"):
        fn = getattr(src, attr, None)
        if callable(fn):
            return to_jsonable(fn())
    doc = {}
    for attr in ("method", "num_grad_evals", "dense"):
        v = getattr(src, attr, None)
        if isinstance(v, (str, int, float, bool, np.integer, np.floating)):
            doc[attr] = to_jsonable(v)
    return doc or None


# what gnomon engines leave in ``trace.extras`` (gn.optimize: the curvature and lr_vec used at θ_0, and the
# final ones of refreshed runs; gn.sample: the hand-off bundle)
_EXTRAS_SOURCES = {
    "curvature": (("curvature", "diag"), ("curvature_final", "diag_final")),
    "precond": (("lr_vec", "lr_vec"), ("lr_vec_final", "lr_vec_final")),
}


def _from_extras(trace: Trace, name: str) -> Any:
    ex = trace.extras
    if name in _EXTRAS_SOURCES:
        found = {out: ex[k] for k, out in _EXTRAS_SOURCES[name] if ex.get(k) is not None}
        return found or None
    if name == "handoff":
        return ex.get("handoff")
    return None


def _default_signals(trace: Trace, layout: Any) -> dict[str, Any]:
    if layout is None:
        raise ValueError(
            "DiagnosticsConfig(signals=True): pass signals= (a mapping of arrays or a Signals object), or a "
            "layout so that the constrained parameter blocks can be stored"
        )
    theta = np.asarray(trace.decoded_theta())
    blocks = layout.unpack(theta)
    out = {name: np.asarray(v) for name, v in blocks.items()}
    if trace.kind == "optimization":
        out["step"] = _steps_of(trace)
    return out


def build_diagnostics(
    run_dir: Path,
    trace: Trace,
    config: DiagnosticsConfig,
    *,
    layout: Any = None,
    objective: Any = None,
    curvature: Any = None,
    precond: Any = None,
    signals: Any = None,
    handoff: Any = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Write ``diag_steps.jsonl`` now and return ``(extra_arrays, meta_section)`` for ``save_run``.

    Sources passed while their switch is off are ignored (one config switches a whole campaign); a switch
    that is on with no source raises a ValueError naming the argument to pass."""
    arrays: dict[str, dict[str, Any]] = {}
    meta: dict[str, Any] = {"config": config.to_dict(), "files": []}
    if not config.enabled:
        return arrays, meta
    if config.diag_steps_every:
        meta["diag_steps_lines"] = write_diag_steps(run_dir / DIAG_STEPS_FILE, trace, config.diag_steps_every)
        meta["files"].append(DIAG_STEPS_FILE)
    if config.grads_every:
        if trace.kind != "optimization":
            raise ValueError("DiagnosticsConfig.grads_every applies to optimization traces only")
        step = _steps_of(trace)
        rows = every_rows(step, config.grads_every)
        theta = np.asarray(trace.coords_in(getattr(objective, "thetamap", None), "theta"))[rows]
        if "grad" in trace.stats and np.ndim(trace.stats["grad"]) == 2:
            grad, source, evals = np.asarray(trace.stats["grad"])[rows], "trace", 0
        elif objective is not None:
            import jax

            grad = np.asarray(jax.vmap(lambda th: objective.value_and_grad(th)[1])(theta))
            source, evals = "objective", len(rows)
        else:
            raise ValueError(
                "DiagnosticsConfig.grads_every: the trace has no 'grad' channel; pass objective= so that "
                "gradients can be evaluated at the logged steps"
            )
        arrays["grads"] = {"step": step[rows], "loss": np.asarray(trace.loss)[rows], "grad": grad}
        meta.update(grads_source=source, grads_num_grad_evals=evals)
    for name, src, on in (
        ("curvature", curvature, config.curvature),
        ("precond", precond, config.precond),
        ("handoff", handoff, config.handoff),
        ("signals", signals, config.signals),
    ):
        if not on:
            continue
        if src is None:
            src = _from_extras(trace, name)
        if src is None:
            if name == "signals":
                arrays[name] = _default_signals(trace, layout)
                continue
            raise ValueError(f"DiagnosticsConfig({name}=True) but no {name} was given: pass {name}=...")
        arrays[name] = _arrays_of(name, src)
        desc = _describe(src)
        if desc:
            meta[name] = desc
    meta["files"] += [f"{n}.npz" for n in arrays]
    return arrays, meta
