"""`HandOffBundle`: what one sampling run passes to the next (the MAP → NUTS hand-off).

A time series of fits (one posterior per epoch, each close to the last) should not pay a cold 1000-step
warmup every time. The bundle keeps what the sampler learned — the adapted step size and inverse mass
matrix — together with where it started (θ*), the curvature it was seeded with, the chains' last positions
and the key, so that ``gn.sample(obj_next, init=bundle, key=...)`` starts from the last
adaptation with a short warmup (150 steps by default; ``num_warmup=0`` reuses it as is).

This module holds the data and how it is built from a sampling trace; the engine reads it. Its file is the
public :class:`gnomon.HandOff` (:mod:`gnomon.sampler.handoff_files`): this bundle plus
``to_arrays``/``save``/``save_run``/``load``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gnomon.trace.trace import Trace

HANDOFF_SCHEMA = 1
ARRAYS = (
    "theta",
    "inverse_mass_matrix",
    "seed_inverse_mass_matrix",
    "curvature_diag",
    "curvature_matrix",
    "positions",
    "key",
)


@dataclass(frozen=True, eq=False)
class HandOffBundle:
    """The adaptation state of a sampling run, reusable by the next run.

    Attributes:
      theta: θ* ``(D,)``, the point the run started from (the MAP in a hand-off).
      step_size: the adapted step size.
      inverse_mass_matrix: the adapted inverse mass matrix, ``(D,)`` or ``(D, D)``.
      seed_inverse_mass_matrix: the metric the warmup was seeded with (e.g. from the curvature).
      curvature_diag, curvature_matrix: the curvature at θ* when the seed came from it.
      positions: the chains' last positions ``(C, D)``.
      key: the run's PRNG key data (uint32), for the record.
      transport: the arrays of the transport map the run ended in
        (:meth:`gnomon.sampler.transport.TransportMap.to_arrays`), or None; with one, the step size, the
        adapted metric and the seed are in the map's coordinates z, while ``theta`` and ``positions`` stay in
        base θ, and a run from this bundle samples in z again (no training, the compiled program reused).
      info: JSON-able description (engine settings, diagnostics, the sampler's decisions, layout hash).
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
    transport: dict | None = None

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
    def from_trace(cls, trace: Trace) -> HandOffBundle:
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
            "decisions": info.get("decisions"),
            "transport": info.get("transport"),
            "layout_hash": layout.hash if layout is not None else None,
            "theta_space": trace.theta_space,
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
            transport=({k: np.asarray(v) for k, v in ex["transport"].items()} if ex.get("transport") is not None
                       else None),
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

    def __repr__(self) -> str:
        kind = "dense" if self.dense else "diag"
        where = ", in a transport map's z" if self.transport is not None else ""
        return (
            f"{type(self).__name__}(D={self.dim}, step_size={self.step_size:.4g}, {kind} metric{where}, "
            f"chains={self.num_chains})"
        )

