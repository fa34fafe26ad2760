r"""How well the hand-off's start and seeded metric matched the posterior the chains found.

After sampling, the adapted inverse mass matrix :math:`M^{-1}` is compared with the seed :math:`M^{-1}_0`
coordinate by coordinate (:math:`r_i = M^{-1}_{ii} / M^{-1}_{0,ii}`; a correct seed has all :math:`r_i`
equal up to one overall scale), and the start θ* with the draws' marginal means and standard deviations
(:math:`z_i = |θ^*_i − \bar θ_i| / \mathrm{sd}_i`). Both end up in ``trace.info["handoff"]`` with warnings
when the curvature at the start did not describe the posterior.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gnomon.sampler import metric as mmx


def handoff_diagnostics(
    theta_star: np.ndarray, seed: mmx.InverseMassMatrix, imm: np.ndarray, draws: np.ndarray, divergences: int,
    names: Any = None,
) -> dict[str, Any]:
    """How well the start and its metric matched the posterior the chains found.

    * ``metric_ratio_*``: adapted / seeded marginal variances per coordinate; ``metric_ratio_spread`` is its
      geometric standard deviation (1 = the seed was right up to one overall scale).
    * ``start_max_abs_z``: the largest :math:`|θ^*_i − \\bar θ_i| / \\mathrm{sd}_i` over coordinates — how far
      into the tails the start sits.
    * ``warnings``: a ratio spread above 3 or a single coordinate off by 30× (a funnel or strongly
      non-Gaussian posterior: the curvature at the mode does not describe it), or a start more than 4 sd
      away.
    """
    draws = np.asarray(draws, dtype=np.float64).reshape(-1, np.shape(draws)[-1])
    adapted = np.diagonal(imm) if np.ndim(imm) == 2 else np.asarray(imm, dtype=np.float64)
    seeded = seed.variances.astype(np.float64)
    ratio = adapted / seeded
    mean = draws.mean(axis=0)
    sd = draws.std(axis=0)
    z = np.abs(theta_star - mean) / np.where(sd > 0, sd, np.inf)
    zmax = float(np.max(z)) if z.size else 0.0
    out: dict[str, Any] = {
        "metric_ratio_spread": mmx.spread(ratio),
        "metric_ratio_min": float(np.min(ratio)),
        "metric_ratio_max": float(np.max(ratio)),
        "start_max_abs_z": zmax,
        "start_argmax_z": int(np.argmax(z)) if z.size else None,
        "divergences": int(divergences),
        "warnings": [],
    }
    if seed.source != "identity":
        lr = np.abs(np.log(ratio[np.isfinite(ratio) & (ratio > 0)]))
        if out["metric_ratio_spread"] > 3.0 or (lr.size and float(np.max(lr)) > math.log(30.0)):
            out["warnings"].append(
                "the seeded metric and the adapted one disagree (ratio spread "
                f"{out['metric_ratio_spread']:.3g}, range {out['metric_ratio_min']:.3g}…"
                f"{out['metric_ratio_max']:.3g}): the curvature at the start does not describe the posterior "
                "(a funnel or strongly non-Gaussian shape); the MAP is a poor start"
            )
    if zmax > 4.0:
        out["warnings"].append(
            f"the start θ* lies {zmax:.3g} posterior sd from the posterior mean in "
            f"{names(out['start_argmax_z']) if callable(names) else 'coordinate ' + str(out['start_argmax_z'])}: "
            "a start far in the tails"
        )
    return out
