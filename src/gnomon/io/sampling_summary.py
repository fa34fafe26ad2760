"""Aggregation scalars of a sampling run for ``summary.json``: ESS, R-hat, divergences, cost, decisions.

``sampling_summary(trace)`` computes, over every θ coordinate (base coordinates for an eigen-space trace),
the minimum bulk and tail effective sample sizes and the maximum rank-normalised split R-hat with
arviz-stats, and adds the divergences, gradient evaluations (and per effective sample), runtime split into
``compile_s`` and ``run_s``, the adapted step size, the hand-off diagnostics the sampler recorded in
``trace.info["handoff"]`` and what it decided (``seed_rejected``, ``recovered``, ``rejected_grad_evals`` and
the decisions as one sentence, ``sampler_decisions``) and the health of the draws (``min_ebfmi``,
``multimodal`` — chains in separate regions or a mode found by the probe —, ``unentered_region`` — a neck the
draws never entered —, ``num_health_problems``, ``chains_moved``, ``divergent_chains`` — chains whose
transitions diverged far more often than the others'), the run's ``status_code`` (``"sampled"``,
``"recovered"``, ``"unhealthy"``) and its ``kernel`` (``"nuts"``, ``"mclmc"``, ...). Pass it to
``save_run(..., summary=sampling_summary(trace))`` (:meth:`gnomon.HandOff.save_run` does).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gnomon.trace.trace import Trace

# the sampler's typed codes (gnomon.sampler.decisions.Action) as the strings files hold: a record read back from
# JSON holds these strings, a fresh trace the str-enum members, which compare equal to them
_SEED_REJECTED, _NO_MODE, _CHAINS_MOVED = "seed rejected", "no mode", "chains moved"


def ess_rhat(theta: Any) -> dict[str, float]:
    """``min_ess_bulk``, ``min_ess_tail`` and ``max_rhat`` of draws ``(C, N, D)`` (R-hat is NaN for a
    single chain)."""
    import arviz_stats as azs

    th = np.asarray(theta, dtype=np.float64)
    if th.ndim != 3:
        raise ValueError(f"draws must be (chains, draws, D), got shape {th.shape}")
    out = {
        "min_ess_bulk": float(np.nanmin(azs.ess(th, chain_axis=0, draw_axis=1, method="bulk"))),
        "min_ess_tail": float(
            np.nanmin(azs.ess(th, chain_axis=0, draw_axis=1, method="tail", prob=(0.05, 0.95)))
        ),
        "max_rhat": math.nan,
    }
    if th.shape[0] >= 2:
        out["max_rhat"] = float(np.nanmax(azs.rhat(th, chain_axis=0, draw_axis=1)))
    return out


def sampling_summary(trace: Trace) -> dict[str, Any]:
    """JSON scalars summarising a sampling trace (see the module docstring)."""
    if not isinstance(trace, Trace) or trace.kind != "sampling":
        raise ValueError("sampling_summary needs a sampling Trace")
    th = np.asarray(trace.decoded_theta())
    out: dict[str, Any] = ess_rhat(th)
    div = int(np.sum(np.asarray(trace.stats["diverging"]))) if "diverging" in trace.stats else 0
    nge = int(trace.num_grad_evals)
    out.update(
        divergences=div,
        num_grad_evals=nge,
        grad_evals_per_ess=nge / out["min_ess_bulk"] if out["min_ess_bulk"] > 0 else math.inf,
        runtime_s=float(trace.runtime_s),
    )
    info = trace.info or {}
    for k in ("compile_s", "run_s"):
        if k in info:
            out[k] = float(info[k])
    if "step_size" in info:
        out["step_size"] = float(info["step_size"])
    if "num_warmup" in info:
        out["num_warmup"] = int(info["num_warmup"])
    ge = info.get("grad_evals") or {}
    if "map" in ge:
        out["map_num_grad_evals"] = int(ge["map"])
        out["grad_evals_per_ess_with_map"] = (
            (nge + int(ge["map"])) / out["min_ess_bulk"] if out["min_ess_bulk"] > 0 else math.inf
        )
    h = info.get("handoff") or {}
    for k in ("metric_ratio_spread", "metric_ratio_min", "metric_ratio_max", "start_max_abs_z"):
        if k in h:
            out[k] = float(h[k])
    decisions = list(info.get("decisions") or [])
    actions = [str(d.get("action")) for d in decisions]
    if decisions or "recovered" in info:
        out["seed_rejected"] = _SEED_REJECTED in actions
        out["no_mode"] = _NO_MODE in actions
        out["recovered"] = bool(info.get("recovered", False))
        out["rejected_grad_evals"] = int(info.get("rejected_grad_evals", 0))
        out["sampler_decisions"] = " | ".join(str(d.get("message", "")) for d in decisions)
    health = info.get("health") or {}
    if health:
        eb = [v for v in health.get("ebfmi") or [] if v is not None and math.isfinite(v)]
        out["min_ebfmi"] = min(eb) if eb else math.nan
        found = health.get("modes") or []
        out["multimodal"] = any(f.get("kind") in ("chains", "probe") for f in found)
        out["unentered_region"] = any(f.get("kind") == "neck" for f in found)
        out["num_health_problems"] = len(health.get("problems") or [])
        out["chains_moved"] = actions.count(_CHAINS_MOVED)
        out["divergent_chains"] = len(health.get("divergent_chains") or [])
    if "status_code" in info:
        out["status_code"] = str(info["status_code"])
    if info.get("engine") is not None:
        out["kernel"] = str(info["engine"])
    warns = list(info.get("warnings") or [])
    out["num_warnings"] = len(warns)
    out["poor_start"] = any("poor start" in w or "far in the tails" in w for w in warns)
    return out
