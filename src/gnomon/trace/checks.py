"""The shape invariants of a :class:`~gnomon.Trace` (:func:`validate`, :meth:`Trace.validate
<gnomon.Trace.validate>`) and its summary scalars (:func:`summary`, what ``summary.json`` holds)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def validate(trace: Any) -> None:
    """Check the shape invariants of ``trace``; raise ValueError naming the broken one."""
    th = np.shape(trace.theta)
    if trace.kind == "optimization":
        if len(th) not in (2, 3):
            raise ValueError(f"optimization theta must be (T, D) or (B, T, D), got {th}")
        lead = th[:-1]
        if trace.loss is None or np.shape(trace.loss) != lead:
            raise ValueError(f"loss must have shape {lead} (one per θ row), got {np.shape(trace.loss)}")
        if trace.step is not None and np.shape(trace.step) != lead:
            raise ValueError(f"step must have shape {lead}, got {np.shape(trace.step)}")
    else:
        if len(th) != 3:
            raise ValueError(f"sampling theta must be (chains, draws, D), got {th}")
        lead = th[:-1]
        if trace.log_prob is None or np.shape(trace.log_prob) != lead:
            raise ValueError(f"log_prob must have shape {lead}, got {np.shape(trace.log_prob)}")
    if trace.log_prob is not None and np.shape(trace.log_prob) != lead:
        raise ValueError(f"log_prob must have shape {lead}, got {np.shape(trace.log_prob)}")
    for k, v in trace.stats.items():
        if np.shape(v)[: len(lead)] != lead:
            raise ValueError(f"stats[{k!r}] must lead with shape {lead}, got {np.shape(v)}")
    if trace.z is not None:
        zs = np.shape(trace.z)
        if zs[:-1] != lead:
            raise ValueError(f"z must have the rows of theta {lead}, got shape {zs}")
        k = getattr(trace.thetamap, "z_dim", None)
        if k is not None and zs[-1] != int(k):
            raise ValueError(f"z has dimension {zs[-1]} but the θ-map's z_dim is {k}")
    if trace.layout is not None and trace.layout.size != th[-1]:
        raise ValueError(f"layout has size {trace.layout.size} but θ has dimension {th[-1]}")


def summary(trace: Any) -> dict[str, Any]:
    """Small aggregation-friendly scalars of ``trace`` (what ``summary.json`` holds)."""
    out: dict[str, Any] = {"kind": trace.kind, "runtime_s": float(trace.runtime_s)}
    for key in ("compile_s", "run_s"):  # compilation vs execution, recorded by the engines
        if isinstance(trace.info.get(key), (int, float)):
            out[key] = float(trace.info[key])
    if trace.kind == "optimization" and not trace.is_batched:
        loss = np.asarray(trace.loss, dtype=float)
        out.update(
            status=trace.status,
            converged=trace.converged,
            diverged=trace.diverged,
            final_loss=float(loss[-1]) if loss.size else math.nan,
            best_loss=float(np.nanmin(loss)) if np.isfinite(loss).any() else math.nan,
            initial_loss=float(loss[0]) if loss.size else math.nan,
            num_steps=trace.num_steps,
            num_rows=len(trace),
            num_grad_evals=int(trace.num_grad_evals),
        )
        if "grad_norm" in trace.stats:
            out["final_grad_norm"] = float(np.asarray(trace.stats["grad_norm"])[-1])
        elif isinstance(trace.info.get("final_grad_norm"), (int, float)):
            out["final_grad_norm"] = float(trace.info["final_grad_norm"])
    elif trace.kind == "sampling":
        out.update(
            status=trace.status,
            num_chains=trace.num_chains,
            num_draws=trace.num_draws,
            num_grad_evals=int(trace.num_grad_evals),
            mean_log_prob=float(np.mean(np.asarray(trace.log_prob, dtype=float))),
        )
        if "diverging" in trace.stats:
            out["divergences"] = int(np.sum(np.asarray(trace.stats["diverging"])))
    else:
        raise ValueError("summary of a batch: summarise each member (trace[i].summary())")
    return out
