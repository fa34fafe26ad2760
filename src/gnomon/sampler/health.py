r"""After sampling: do the chains agree, and did the integrator hold?

A problem found here is said — a warning and ``trace.info["health"]`` — never left for the user to find in a
table: chains that disagree (rank-normalised split :math:`\hat R` from arviz-stats above :data:`RHAT_LIMIT`),
divergent transitions in more than :data:`DIVERGENCE_LIMIT` of the draws, or non-finite draws. When the
optimizer that gave the start found no mode (it diverged, the sampler judged its end no mode, or it ran off to
:math:`|θ| > 10^{10}`), the message says that a posterior without a mode (improper, or with its mass at a
boundary) cannot be sampled at all.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

RHAT_LIMIT = 1.05  # warn above (R̂ ≤ 1.01 is the bar for reporting; 1.05 is "the chains disagree")
DIVERGENCE_LIMIT = 0.01  # fraction of the kept draws


RUNAWAY = 1e10  # an optimizer's best |θ| beyond this ran off rather than found a mode


def mode_note(map_status: str | None, best_theta: Any, judged_no_mode: bool) -> str | None:
    """Why the optimizer's end may not be a mode (for :func:`chain_health`), or None when nothing says so."""
    if map_status is None:
        return None
    status = map_status.split(":")[0]
    if judged_no_mode or map_status.startswith("diverged"):
        return f"the optimizer that gave the start found no mode ({status})"
    size = float(np.max(np.abs(np.asarray(best_theta, np.float64)))) if np.size(best_theta) else 0.0
    if not np.isfinite(size) or size > RUNAWAY:
        return f"the optimizer that gave the start ran off to |θ| = {size:.2g} ({status})"
    return None


def chain_health(theta: Any, diverging: Any, map_note: str | None = None) -> dict[str, Any]:
    """``{"max_rhat", "worst_coordinate", "divergence_fraction", "nonfinite_draws", "problems"}`` of draws
    ``theta`` ``(chains, draws, D)`` and ``diverging`` ``(chains, draws)``; ``problems`` holds one sentence
    per problem found (empty when the chains look healthy). ``map_note`` (:func:`mode_note`) is added when
    there is a problem."""
    theta = np.asarray(theta, np.float64)
    chains, draws = theta.shape[:2]
    finite = np.isfinite(theta)
    out: dict[str, Any] = {"max_rhat": None, "worst_coordinate": None,
                           "divergence_fraction": float(np.mean(np.asarray(diverging, bool))) if theta.size else 0.0,
                           "nonfinite_draws": int(np.sum(~np.all(finite, axis=-1))), "problems": []}
    if chains >= 2 and draws >= 4 and finite.all():
        import arviz_stats as azs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant coordinates give NaN R̂ with a RuntimeWarning
            rhat = np.asarray(azs.rhat(theta, chain_axis=0, draw_axis=1), np.float64).reshape(-1)
        if np.isfinite(rhat).any():
            worst = int(np.nanargmax(rhat))
            out["max_rhat"], out["worst_coordinate"] = float(rhat[worst]), worst
    problems = out["problems"]
    if out["max_rhat"] is not None and out["max_rhat"] > RHAT_LIMIT:
        problems.append(f"the chains disagree: R̂ = {out['max_rhat']:.3g} in coordinate {out['worst_coordinate']} "
                        f"(> {RHAT_LIMIT}); the draws do not represent the posterior")
    if out["divergence_fraction"] > DIVERGENCE_LIMIT:
        problems.append(f"{100 * out['divergence_fraction']:.3g} % of the draws are divergent transitions: the "
                        "step size is too large for some region of the posterior (often a funnel), which the "
                        "draws then miss")
    if out["nonfinite_draws"]:
        problems.append(f"{out['nonfinite_draws']} draws hold non-finite values")
    if problems and map_note:
        problems.append(f"{map_note}: a posterior without a mode — improper, or with its mass at a boundary — "
                        "cannot be sampled")
    return out


__all__ = ["chain_health", "mode_note", "RHAT_LIMIT", "DIVERGENCE_LIMIT", "RUNAWAY"]
