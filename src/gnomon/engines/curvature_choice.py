r"""Which curvature diagonal c preconditioned gradient descent uses, and what it costs.

The preconditioner is :math:`P = s ⊙ (c + \text{eps})^{-p}` (:mod:`gnomon.engines.safeguarded_gd`), with c
from one of:

``curvature=None`` (auto)
    the Gauss–Newton diagonal :math:`\operatorname{diag}(J^T J)` when the objective has residuals; else the
    exact Hessian diagonal while it costs no more than the default Hutchinson budget (D ≤
    :data:`EXACT_MAX_DIM`, 2D gradient evaluations ≤ 2 · 16); else variance-reduced Hutchinson
    (:mod:`gnomon.curvature.estimate`) with K = :data:`OPTIMIZER_PROBES` probes (2K = 32 gradient
    evaluations). 16 probes (median relative error ≈ 0.3 on the hard 200-d test matrix) are
    plenty for a preconditioner whose global scale is then set by Barzilai–Borwein steps;
    :func:`gnomon.estimate_curvature`'s own default (32 probes) targets accuracy instead.
a method name (:data:`gnomon.curvature.estimate.METHODS`)
    estimated at θ_0 inside the compiled program (and at each refresh), then safeguarded
    (:func:`gnomon.curvature.estimate.safeguard`: non-finite entries → the largest finite |c|, negatives
    → |c| or the floor, floor :math:`\max(\text{floor} · \operatorname{median}|c|, \text{prior\_precision})`).
a :class:`~gnomon.Curvature` or a (D,) array
    used as given (it must be finite and positive; no safeguards, no cost); with ``refresh_every`` the
    Curvature's own method re-estimates it at each refresh.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from gnomon.curvature.estimate import METHODS as CURVATURE_METHODS
from gnomon.curvature.estimate import Curvature, CurvaturePlan, plan_curvature
from gnomon.objective.objective import Objective

OPTIMIZER_PROBES = 16  # Hutchinson probes of the auto choice
EXACT_MAX_DIM = OPTIMIZER_PROBES  # auto: the exact diagonal up to this dimension


class CurvatureSource(NamedTuple):
    """Static description of where the curvature comes from."""

    source: str  # "estimate" | "given" | "given_then_estimate" (refreshes) | "identity"
    settings: CurvaturePlan | None  # the estimator's plan (None: nothing to estimate)
    cost: int  # gradient evaluations of one estimate
    given: Any  # (D,) numpy for "given"
    floor: float
    prior_precision: Any
    negative: str


IDENTITY = CurvatureSource("identity", None, 0, None, 0.0, None, "abs")  # P = 1: plain gd/sgd


def choose_curvature(
    obj: Objective, curvature: Any, theta: Any, data: Any, opts: dict, *, refreshes: bool
) -> tuple[CurvatureSource, str, dict]:
    """``(CurvatureSource, method name, JSON description)`` for preconditioned GD.

    ``theta``/``data``: a probe point for planning the estimator; ``opts``: gn.optimize's options
    (``num_probes``, ``hutchinson_mode``, ``floor``, ``prior_precision``, ``negative``, ``batch_size``);
    ``refreshes``: the curvature is re-estimated during the run (a given Curvature then needs a method)."""
    curv, cmethod, info = _resolve(obj, curvature, theta, data, **_estimator_options(opts))
    if refreshes and curv.source == "given":
        if cmethod not in CURVATURE_METHODS or cmethod == "ema_grad2":
            raise ValueError(f"refresh_every needs a curvature method to re-run; the given Curvature is {cmethod!r}")
        again, _, _ = _resolve(obj, cmethod, theta, data, **_estimator_options(opts))
        curv = curv._replace(settings=again.settings, cost=again.cost, source="given_then_estimate")
        info["refresh_cost"] = again.cost
    return curv, cmethod, info


def _estimator_options(opts: dict) -> dict:
    return dict(
        num_probes=opts["num_probes"],
        hutchinson_mode=opts["hutchinson_mode"],
        floor=opts["floor"],
        prior_precision=opts["prior_precision"],
        negative=opts["negative"],
        batch_size=opts["batch_size"],
    )


def _resolve(
    obj: Objective,
    curvature: Any,
    theta: Any,
    data: Any,
    *,
    num_probes,
    hutchinson_mode,
    floor,
    prior_precision,
    negative,
    batch_size,
) -> tuple[CurvatureSource, str, dict]:
    if isinstance(curvature, Curvature):
        d = np.asarray(curvature.diag)
        if d.shape != (obj.dim,):
            raise ValueError(f"the given Curvature has dim {d.shape}, expected ({obj.dim},)")
        finite = np.isfinite(d)
        if not np.all(finite) or np.any(d <= 0):
            low = float(d[finite].min()) if finite.any() else None
            raise ValueError(
                "the given Curvature's diagonal must be finite and positive "
                f"(min finite {low!r}, {int(np.sum(~finite))} non-finite)"
            )
        return (
            CurvatureSource("given", None, 0, d, floor, prior_precision, negative),
            curvature.method,
            {**curvature.describe(), "source": "given", "estimate_cost": int(curvature.num_grad_evals)},
        )
    if curvature is None:
        if obj.has_residuals:
            curvature = "gauss_newton"
        elif obj.dim <= EXACT_MAX_DIM:
            curvature = "exact"
        else:
            curvature = "hutchinson"
        chosen = "auto"
    elif isinstance(curvature, str):
        chosen = "user"
    else:
        arr = np.asarray(curvature)
        if arr.ndim == 1:
            return _resolve(
                obj,
                Curvature.from_diag(arr),
                theta,
                data,
                num_probes=num_probes,
                hutchinson_mode=hutchinson_mode,
                floor=floor,
                prior_precision=prior_precision,
                negative=negative,
                batch_size=batch_size,
            )
        raise ValueError(
            f"curvature must be None, a method name {CURVATURE_METHODS}, a Curvature or a (D,) array, got {curvature!r}"
        )
    if curvature not in CURVATURE_METHODS:
        raise ValueError(f"unknown curvature {curvature!r}; expected one of {CURVATURE_METHODS}, a Curvature or None")
    if curvature == "hutchinson" and num_probes is None:
        num_probes = OPTIMIZER_PROBES
    settings, cost, config = plan_curvature(
        obj, theta, data, curvature, num_probes=num_probes, hutchinson_mode=hutchinson_mode, batch_size=batch_size
    )
    return (
        CurvatureSource("estimate", settings, cost, None, floor, _hashable_prior(prior_precision), negative),
        curvature,
        {
            "method": curvature,
            "chosen": chosen,
            "num_grad_evals": cost,
            "floor": floor,
            "negative": negative,
            "prior_precision": None if prior_precision is None else float(np.max(prior_precision)),
            **config,
        },
    )


def _hashable_prior(p: Any) -> Any:
    return None if p is None else (float(p) if np.ndim(p) == 0 else tuple(np.asarray(p, float).tolist()))
