r"""Curvature estimators for the optimizers: which diagonal c a preconditioner uses, and what it costs.

Two ways to run one:

* :func:`curvature_at_start` — what ``gn.optimize`` does: the estimate at θ_0 on the host, before the loop is
  compiled, with the fallback chain of :mod:`gnomon.curvature.choice` (a non-finite estimate is never used:
  Fisher/Gauss–Newton → Hessian → finite differences of the gradient → identity, with a warning and a record in
  ``trace.info["curvature"]["fallback"]``). The loop gets the diagonal as an argument, so the same compiled
  program serves every start and every curvature.
* :func:`curvature_estimator` plans an estimator on the host (validation, output counts, cost) and returns a
  :class:`CurvatureEstimator`, a pure ``estimate(θ, data, key, previous)`` that
  :func:`gnomon.optim.scale_by_curvature` calls inside the compiled program (at θ_0 in ``init`` when no
  starting diagonal is given, and at each refresh), so that it runs per member of a batch. Inside a compiled
  program nothing can fall back: a refresh keeps the previous entries where the new estimate is not finite.

``method=None`` (auto) is the one rule of :func:`gnomon.curvature.choice.auto_method`:

* the expected Fisher ``"fisher"`` of a likelihood objective (:meth:`gnomon.Objective.from_likelihood`);
* else the Gauss–Newton diagonal :math:`\operatorname{diag}(J^T W J)` when it has residuals;
* else the exact Hessian diagonal while it costs no more than the Hutchinson budget (D ≤
  :data:`EXACT_MAX_DIM`: 2D gradient evaluations ≤ 2 · 16);
* else variance-reduced Hutchinson with :data:`OPTIMIZER_PROBES` = 16 probes (32 gradient evaluations).
  16 probes (median relative error ≈ 0.3 on the hard 200-d test matrix) are plenty for a preconditioner
  whose global scale is then set by Barzilai–Borwein steps; :func:`gnomon.estimate_curvature`'s own default
  (32 probes) targets accuracy instead.

Every estimate is cleaned (:func:`gnomon.curvature.estimate.clean_diagonal`): negatives → |c| or the floor,
floor :math:`\max(\text{floor} · \operatorname{median}|c|, \text{prior\_precision})` (``floor=None``: the
method's default, :func:`gnomon.curvature.estimate.default_floor`); the counts of what the cleaning did travel
with the estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from gnomon.curvature.choice import OPTIMIZER_EXACT_MAX_DIM, auto_method, choose_curvatures
from gnomon.curvature.estimate import METHODS as CURVATURE_METHODS
from gnomon.curvature.estimate import clean_diagonal, curvature_fn, default_floor, plan_curvature
from gnomon.objective.objective import Objective

OPTIMIZER_PROBES = 16  # Hutchinson probes of the auto choice
EXACT_MAX_DIM = OPTIMIZER_EXACT_MAX_DIM  # auto: the exact diagonal up to this dimension (= OPTIMIZER_PROBES)
NEGATIVE = ("abs", "floor")
_UNSET = object()


class CurvatureEstimator(NamedTuple):
    """A planned curvature estimator: ``estimate(θ, data, key, previous) -> (diag, counts)``.

    ``diag`` is the cleaned ``(D,)`` diagonal (its non-finite entries left NaN: inside a compiled program the
    consumer decides what to use there) and ``counts`` an int32 ``(3,)`` array (non-finite, negative, floored
    entries); ``previous`` (a diagonal or None) seeds variance-reduced Hutchinson at a refresh.
    ``cost`` is its price in gradient evaluations, ``data`` the data it uses when none is passed (the
    objective's bound data), ``describe`` its JSON description (→ ``trace.info["curvature"]``). Any pure,
    jittable function with that signature can be wrapped in one (``CurvatureEstimator(fn, cost, ...)``)."""

    estimate: Callable[[Any, Any, Any, Any], tuple[Any, Any]]
    cost: int
    method: str
    objective: Objective | None = None
    data: Any = None
    describe: Mapping[str, Any] = {}


def curvature_estimator(
    objective: Objective,
    method: str | None = None,
    *,
    data: Any = _UNSET,
    num_probes: int | None = None,
    hutchinson_mode: str = "variance_reduced",
    floor: float | None = None,
    prior_precision: Any = None,
    negative: str = "abs",
    batch_size: int | None = None,
) -> CurvatureEstimator:
    """Plan a curvature estimator of ``objective`` (see the module docstring for ``method=None``).

    Args:
      objective: the :class:`gnomon.Objective`.
      method: ``"exact"``, ``"hutchinson"``, ``"gauss_newton"``, ``"empirical_fisher"`` or None (auto).
      data: data for objectives taking ``(θ, data)`` (default: the objective's bound data); the optimizer
        loop passes each member's data instead.
      num_probes: Hutchinson probes (default 16 here); hutchinson_mode: ``"variance_reduced"`` or ``"plain"``.
      floor: relative floor (a fraction of the median |c|; None: the method's default); prior_precision: an
        absolute floor (scalar or (D,)); negative: ``"abs"`` or ``"floor"`` for negative entries; batch_size:
        HVPs per batch.
    """
    if not isinstance(objective, Objective):
        raise ValueError(f"curvature_estimator needs a gnomon.Objective, got {type(objective).__name__}")
    if negative not in NEGATIVE:
        raise ValueError(f"negative must be one of {NEGATIVE}, got {negative!r}")
    if floor is not None and (isinstance(floor, bool) or not (isinstance(floor, (int, float)) and 0 <= floor < 1)):
        raise ValueError(f"floor must be a fraction of the median in [0, 1) or None, got {floor!r}")
    d = objective.data if data is _UNSET else data
    chosen = "user"
    if method is None:
        method = auto_method(objective, exact_max_dim=EXACT_MAX_DIM)
        chosen = "auto"
    if method == "ema_grad2":
        raise ValueError(
            "ema_grad2 is a running statistic of the optimizer's gradients, not an estimate at a point; use "
            "gn.optim.preconditioned_gd(curvature='ema_grad2')"
        )
    if not isinstance(method, str) or method not in CURVATURE_METHODS:
        raise ValueError(f"unknown curvature method {method!r}; expected one of {CURVATURE_METHODS} or None")
    if method == "hutchinson" and num_probes is None:
        num_probes = OPTIMIZER_PROBES
    probe = jnp.zeros((objective.dim,), jnp.result_type(float))
    plan, cost, config = plan_curvature(
        objective, probe, d, method, num_probes=num_probes, hutchinson_mode=hutchinson_mode, batch_size=batch_size
    )
    raw = curvature_fn(objective, plan)
    vr = plan.is_variance_reduced_hutchinson
    fl = float(default_floor(method) if floor is None else floor)

    def estimate(theta, data, key, previous):
        diag, _ = raw(theta, data, key, previous if (vr and previous is not None) else None)
        diag = diag.astype(theta.dtype)
        clean, c = clean_diagonal(diag, floor=fl, prior_precision=prior_precision, negative=negative)
        clean = jnp.where(jnp.isfinite(diag), clean, jnp.nan)  # the consumer decides (keep the previous, ...)
        return clean, jnp.stack([c["num_nonfinite"], c["num_negative"], c["num_floored"]]).astype(jnp.int32)

    describe = {
        "method": method,
        "chosen": chosen,
        "num_grad_evals": int(cost),
        "floor": fl,
        "negative": negative,
        "prior_precision": None if prior_precision is None else float(np.max(prior_precision)),
        **config,
    }
    return CurvatureEstimator(estimate, int(cost), method, objective, d, describe)


class StartCurvature(NamedTuple):
    """The curvature diagonal at θ_0 that ``gn.optimize`` chose on the host (:func:`curvature_at_start`)."""

    diag: np.ndarray  # (B, D): one row per start
    method: str  # the link used (the requested one unless it fell back)
    info: dict  # → trace.info["curvature"]
    cost: int  # gradient evaluations per member, the links that were not used included


def curvature_at_start(
    objective: Objective,
    method: str | None,
    thetas: Any,
    datas: Any,
    *,
    key: Any = None,
    num_probes: int | None = None,
    hutchinson_mode: str = "variance_reduced",
    floor: float | None = None,
    prior_precision: Any = None,
    negative: str = "abs",
    batch_size: int | None = None,
    stacklevel: int = 2,
    first_raw: Any = None,
) -> StartCurvature:
    """The curvature diagonal at each start (``thetas`` (B, D), ``datas`` one data per member, None for the bound
    data), chosen by :func:`gnomon.curvature.choice.choose_curvatures` (the auto rule for ``method=None``, the
    fallback chain when an estimate is not finite) and cleaned as :func:`curvature_estimator`'s. Hutchinson links
    use :data:`OPTIMIZER_PROBES` probes unless ``num_probes`` is given. ``first_raw``: the first link's raw
    diagonals (B, D), already computed by the optimizer loop's own program (:mod:`gnomon.optim.start_estimate`)."""
    curvs = choose_curvatures(
        objective, list(thetas), list(datas), method, exact_max_dim=EXACT_MAX_DIM, how_to_choose="curvature=",
        stacklevel=stacklevel + 1, key=key, num_probes=num_probes, hutchinson_probes=OPTIMIZER_PROBES,
        hutchinson_mode=hutchinson_mode, floor=floor, prior_precision=prior_precision, negative=negative,
        batch_size=batch_size, first_raw=None if first_raw is None else list(first_raw),
    )
    first = curvs[0]
    diag = np.stack([np.asarray(c.diag) for c in curvs])
    config = dict(first.config)
    for name in ("num_nonfinite", "num_negative", "num_floored"):  # a batch: the most any member had
        config[name] = max(int(c.config.get(name, 0)) for c in curvs)
    for name in ("median", "floor_value", "num_nonfinite_matrix"):
        config.pop(name, None)
    info = {"method": first.method, "chosen": config.pop("chosen"), "requested": config.pop("requested"),
            "fallback": config.pop("fallback"), "num_grad_evals": int(first.num_grad_evals),
            "estimated": "at θ0, before the loop" if first_raw is None or first.config["fallback"] is not None
            else "at θ0, by the loop's own program", **config}
    return StartCurvature(diag, first.method, info, int(first.num_grad_evals))
