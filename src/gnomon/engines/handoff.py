"""`HandOff`: what one sampling run passes to the next (the MAP → NUTS hand-off bundle).

A time series of fits (one posterior per epoch, each close to the last) should not pay a cold 1000-step
warmup every time. The bundle keeps what the sampler learned — the adapted step size and inverse mass
matrix — together with where it started (θ*), the curvature it was seeded with, the chains' last positions,
the key and the package versions, so that ``gn.sample(obj_next, init=..., key=..., handoff=bundle)`` starts
from the last adaptation with a short warmup (150 steps by default; ``num_warmup=0`` reuses it as is).

Storage: one ``handoff.npz`` in the run directory (arrays plus the JSON description as UTF-8 bytes under
``meta_json``), written atomically, no pickle. ``bundle.save_run(run_dir, trace)`` writes the whole run
(trace.npz, meta.json with a ``handoff`` section, summary.json with ESS/R-hat/divergences and the hand-off
diagnostics, handoff.npz); ``bundle.save(run_dir)`` adds only the file; by hand::

    gn.save_run(run_dir, trace, summary=sampling_summary(trace),
                extra_arrays={"handoff": bundle.to_arrays()}, extra_meta={"handoff": bundle.describe()})

``HandOff.load(run_or_dir)`` reads it back.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gnomon.trace.trace import Trace

HANDOFF_FILE = "handoff.npz"
HANDOFF_SCHEMA = 1
_ARRAYS = (
    "theta",
    "inverse_mass_matrix",
    "seed_inverse_mass_matrix",
    "curvature_diag",
    "curvature_matrix",
    "positions",
    "key",
)


@dataclass(frozen=True, eq=False)
class HandOff:
    """The adaptation state of a sampling run, reusable by the next run.

    Attributes:
      theta: θ* ``(D,)``, the point the run started from (the MAP in a hand-off).
      step_size: the adapted step size.
      inverse_mass_matrix: the adapted inverse mass matrix, ``(D,)`` or ``(D, D)``.
      seed_inverse_mass_matrix: the metric the warmup was seeded with (e.g. from the curvature).
      curvature_diag, curvature_matrix: the curvature at θ* when the seed came from it.
      positions: the chains' last positions ``(C, D)``.
      key: the run's PRNG key data (uint32), for the record.
      info: JSON-able description (engine settings, diagnostics, versions, layout hash).
    """

    theta: np.ndarray
    step_size: float
    inverse_mass_matrix: np.ndarray
    seed_inverse_mass_matrix: np.ndarray | None = None
    curvature_diag: np.ndarray | None = None
    curvature_matrix: np.ndarray | None = None
    positions: np.ndarray | None = None
    key: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        th = np.asarray(self.theta)
        imm = np.asarray(self.inverse_mass_matrix)
        if th.ndim != 1:
            raise ValueError(f"HandOff.theta must be a vector (D,), got shape {th.shape}")
        d = th.shape[0]
        if imm.shape not in ((d,), (d, d)):
            raise ValueError(
                f"HandOff.inverse_mass_matrix must be ({d},) or ({d}, {d}), got shape {imm.shape}"
            )
        if not (np.isfinite(self.step_size) and self.step_size > 0):
            raise ValueError(f"HandOff.step_size must be a positive number, got {self.step_size!r}")
        if self.positions is not None and (np.ndim(self.positions) != 2 or np.shape(self.positions)[1] != d):
            raise ValueError(f"HandOff.positions must be (C, {d}), got shape {np.shape(self.positions)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_trace(cls, trace: Trace) -> HandOff:
        """The bundle of a sampling :class:`Trace` returned by :func:`gnomon.sample`."""
        if not isinstance(trace, Trace) or trace.kind != "sampling":
            raise ValueError("HandOff.from_trace needs a sampling Trace (from gnomon.sample)")
        ex = trace.extras
        missing = [k for k in ("step_size", "inverse_mass_matrix", "theta_star") if k not in ex]
        if missing:
            raise ValueError(
                f"this sampling trace carries no adaptation ({missing} missing from extras); a trace loaded "
                "from a run directory keeps it in handoff.npz: use HandOff.load(run)"
            )
        info = dict(trace.info)
        layout = trace.layout
        desc = {
            "engine": info.get("engine"),
            "num_chains": info.get("num_chains"),
            "num_warmup": info.get("num_warmup"),
            "num_samples": info.get("num_samples"),
            "target_acceptance_rate": info.get("target_acceptance_rate"),
            "max_tree_depth": info.get("max_tree_depth"),
            "metric": info.get("metric"),
            "curvature": info.get("curvature"),
            "diagnostics": info.get("handoff"),
            "grad_evals": info.get("grad_evals"),
            "layout_hash": layout.hash if layout is not None else None,
            "theta_space": trace.theta_space,
            "packages": _versions(),
            "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        }

        def arr(name):
            v = ex.get(name)
            return None if v is None else np.asarray(v)

        return cls(
            theta=np.asarray(ex["theta_star"]),
            step_size=float(ex["step_size"]),
            inverse_mass_matrix=np.asarray(ex["inverse_mass_matrix"]),
            seed_inverse_mass_matrix=arr("seed_inverse_mass_matrix"),
            curvature_diag=arr("curvature_diag"),
            curvature_matrix=arr("curvature_matrix"),
            positions=arr("positions"),
            key=arr("key"),
            info=desc,
        )

    # ------------------------------------------------------------------ views
    @property
    def dim(self) -> int:
        return int(np.shape(self.theta)[0])

    @property
    def dense(self) -> bool:
        return np.ndim(self.inverse_mass_matrix) == 2

    @property
    def num_chains(self) -> int | None:
        return None if self.positions is None else int(np.shape(self.positions)[0])

    def describe(self) -> dict[str, Any]:
        """JSON-able description (for ``meta.json``): schema, dimensions, step size, settings, diagnostics."""
        return {
            "handoff_schema": HANDOFF_SCHEMA,
            "dim": self.dim,
            "dense": self.dense,
            "step_size": float(self.step_size),
            "num_chains": self.num_chains,
            **self.info,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``handoff.npz`` (the description is stored as UTF-8 bytes under ``meta_json``)."""
        out = {name: np.asarray(getattr(self, name)) for name in _ARRAYS if getattr(self, name) is not None}
        out["step_size"] = np.asarray(self.step_size, dtype=np.float64)
        text = json.dumps(_jsonable(self.describe()), allow_nan=False)
        out["meta_json"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> HandOff:
        """Inverse of :meth:`to_arrays`."""
        for name in ("theta", "inverse_mass_matrix", "step_size"):
            if name not in arrays:
                raise ValueError(f"hand-off arrays lack {name!r} (have {sorted(arrays)})")
        desc: dict[str, Any] = {}
        if "meta_json" in arrays:
            from gnomon.artifacts.jsonio import from_jsonable

            desc = from_jsonable(
                json.loads(bytes(np.asarray(arrays["meta_json"], dtype=np.uint8)).decode("utf-8"))
            )
            schema = desc.get("handoff_schema", 1)
            if isinstance(schema, int) and schema > HANDOFF_SCHEMA:
                raise ValueError(
                    f"hand-off schema {schema} is newer than this gnomon reads (≤ {HANDOFF_SCHEMA})"
                )
        for k in ("handoff_schema", "dim", "dense", "step_size", "num_chains"):
            desc.pop(k, None)
        kw = {name: np.asarray(arrays[name]) for name in _ARRAYS if name in arrays}
        return cls(step_size=float(np.asarray(arrays["step_size"])), info=desc, **kw)

    # ------------------------------------------------------------------ files
    def save_run(self, run_dir: str | os.PathLike, trace: Trace, **save_run_kwargs: Any) -> Path:
        """Write ``trace`` as a run directory with this bundle (``handoff.npz`` and ``meta.json["handoff"]``)
        and the sampling summary (min ESS, max R-hat, divergences, cost, hand-off diagnostics) merged into
        ``summary.json``. Other keyword arguments go to :func:`gnomon.save_run` (``arviz=True``, ``meta=``,
        ...)."""
        from gnomon.artifacts.run import save_run
        from gnomon.artifacts.sampling_summary import sampling_summary

        kw = dict(save_run_kwargs)
        kw["summary"] = {**sampling_summary(trace), **dict(kw.get("summary") or {})}
        kw["extra_arrays"] = {**dict(kw.get("extra_arrays") or {}), "handoff": self.to_arrays()}
        kw["extra_meta"] = {**dict(kw.get("extra_meta") or {}), "handoff": _jsonable(self.describe())}
        return save_run(run_dir, trace, **kw)

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``handoff.npz`` into ``run_dir`` (created if needed); return its path."""
        from gnomon.artifacts.npzio import write_npz

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / HANDOFF_FILE
        write_npz(path, self.to_arrays())
        return path

    @classmethod
    def load(cls, run_or_dir: Any) -> HandOff:
        """Read the bundle of a run: a loaded :class:`gnomon.Run`, its directory or the ``.npz`` itself."""
        from gnomon.artifacts.jsonio import ArtifactError
        from gnomon.artifacts.npzio import read_npz

        if hasattr(run_or_dir, "files") and hasattr(run_or_dir, "path"):
            path = Path(run_or_dir.files.get("handoff", Path(run_or_dir.path) / HANDOFF_FILE))
        else:
            path = Path(run_or_dir)
            if path.is_dir():
                path = path / HANDOFF_FILE
        if not path.exists():
            raise ArtifactError(
                f"{path}: no hand-off bundle (save one with HandOff.save(run_dir) or "
                "save_run(..., extra_arrays={'handoff': bundle.to_arrays()}))"
            )
        try:
            return cls.from_arrays(read_npz(path))
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"{path}: not a usable hand-off bundle ({exc})") from None

    def __repr__(self) -> str:
        kind = "dense" if self.dense else "diag"
        return (
            f"HandOff(D={self.dim}, step_size={self.step_size:.4g}, {kind} metric, chains={self.num_chains})"
        )


def _versions() -> dict[str, Any]:
    from gnomon.artifacts.provenance import package_versions

    return dict(package_versions())


def _jsonable(x: Any) -> Any:
    from gnomon.artifacts.jsonio import to_jsonable

    return to_jsonable(x)
