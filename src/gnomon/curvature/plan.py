"""Planning a curvature estimate on the host: which method, its static settings (:class:`CurvaturePlan`, the
compile-cache key of its program), its cost in gradient evaluations and its JSON description.

Costs (``f = loss``, D parameters, N residuals / observations / data): ``exact`` and ``finite_difference`` 2D;
``hutchinson`` 2 per probe; ``gauss_newton`` and ``empirical_fisher`` min(N, D) (forward-mode Jacobian columns or
reverse-mode rows); ``fisher`` D JVPs, N VJPs or k VJP probes (:func:`gnomon.curvature.fisher.fisher_cost`);
``ema_grad2`` 1 (or 0 from given gradients). The methods themselves are described in
:mod:`gnomon.curvature.estimate`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import numpy as np

from gnomon.curvature.fisher import fisher_cost, fisher_mode
from gnomon.curvature.numerics import hutchinson_rounds, jacobian_mode
from gnomon.objective.objective import Objective
from gnomon.util.programs import ProgramCache
from gnomon.util.validate import positive_int

METHODS = ("exact", "hutchinson", "gauss_newton", "empirical_fisher", "fisher", "finite_difference", "ema_grad2")
HUTCHINSON_MODES = ("variance_reduced", "plain")
FLOORS = {"fisher": 1e-12, "gauss_newton": 1e-12, "empirical_fisher": 1e-12}

class CurvaturePlan(NamedTuple):
    """Static settings of one curvature estimator (hashable: the compile-cache key of :func:`curvature_fn`)."""

    method: str
    dense: bool
    num_probes: int  # Hutchinson probes, or Fisher diagonal probes (0 otherwise)
    mode: str  # Hutchinson mode
    batch_size: int | None
    num_outputs: int  # residuals / observations / data (Gauss–Newton, empirical Fisher, Fisher; 0 otherwise)
    beta: float  # ema_grad2 decay
    fisher_mode: str = ""  # "forward" | "reverse" | "probes" (method "fisher")
    include_prior: bool = True  # method "fisher": add the prior's Hessian

    @property
    def is_variance_reduced_hutchinson(self) -> bool:
        return self.method == "hutchinson" and self.mode != "plain"



# (obj.compile_key, residuals | per_observation, θ and data shapes) -> their number (planning traces the model)
_OUTPUTS: ProgramCache = ProgramCache("curvature output counts", maxsize=256)


def default_floor(method: str) -> float:
    """Default relative floor of a method's diagonal (module docstring): 1e-12 for noise-free information
    matrices (``fisher``, ``gauss_newton``, ``empirical_fisher``), 1e-6 otherwise."""
    return FLOORS.get(method, 1e-6)


def default_num_probes(dim: int) -> int:
    """Default Hutchinson probe count: 32 (the budget the variance-reduced mode is tuned for)."""
    return 32


def _count_outputs(obj: Objective, theta: Any, data: Any, fn_name: str) -> int:
    key = (getattr(obj, "compile_key", obj), fn_name, _shapes(theta), _shapes(data))
    n = _OUTPUTS.get(key)
    if n is None:
        f = obj.residual_fn if fn_name == "residuals" else obj.per_observation_fn
        n = _OUTPUTS.put(key, int(np.prod(jax.eval_shape(lambda th: f(th, data), theta).shape)))
    return n


def _shapes(tree: Any) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)


class _Planned(NamedTuple):
    """What a method's planner found: its cost, JSON config and the static settings it fixes."""

    cost: int
    config: dict
    num_outputs: int = 0
    probes: int = 0
    fisher_mode: str = ""
    include_prior: bool = True


def plan_curvature(
    obj: Objective,
    theta: Any,
    data: Any,
    method: str,
    *,
    num_probes: int | None = None,
    hutchinson_mode: str = "variance_reduced",
    dense: bool = False,
    beta: float = 0.999,
    batch_size: int | None = None,
    scaled_start: bool = False,
    num_grads: int | None = None,
    include_prior: bool = True,
) -> tuple[CurvaturePlan, int, dict]:
    """Validate a curvature request and return ``(plan, cost, config)``.

    ``plan`` is the hashable key of :func:`gnomon.curvature.estimate.curvature_fn`; ``cost`` its gradient-evaluation
    count; ``config`` the JSON-able parameters. ``theta``/``data`` are only used for shapes (one member's)."""
    if method not in METHODS:
        raise ValueError(f"unknown curvature method {method!r}; expected one of {METHODS}")
    if hutchinson_mode not in HUTCHINSON_MODES:
        raise ValueError(f"unknown Hutchinson mode {hutchinson_mode!r}; expected one of {HUTCHINSON_MODES}")
    if method == "fisher":
        p = _plan_fisher(obj, num_probes, dense, include_prior)
    elif method == "hutchinson":
        p = _plan_hutchinson(obj.dim, num_probes, hutchinson_mode, scaled_start)
    elif method in ("exact", "finite_difference"):
        p = _Planned(2 * obj.dim, {})
    elif method in ("gauss_newton", "empirical_fisher"):
        p = _plan_jacobian(obj, theta, data, method)
    else:
        p = _plan_ema_grad2(beta, dense, num_grads)
    if batch_size is not None:
        positive_int(batch_size, "batch_size")
    plan = CurvaturePlan(method, bool(dense), p.probes, hutchinson_mode, batch_size, p.num_outputs, float(beta),
                         p.fisher_mode, bool(p.include_prior))
    return plan, int(p.cost), p.config


def _plan_fisher(obj: Objective, num_probes: int | None, dense: bool, include_prior: bool) -> _Planned:
    lik = getattr(obj, "likelihood", None)
    if lik is None:
        raise ValueError(
            f"method 'fisher' needs a likelihood but {obj!r} has none; build the objective with "
            "Objective.from_likelihood(predict, data, family, layout), or use 'gauss_newton' / 'exact'"
        )
    if num_probes is not None:
        positive_int(num_probes, "num_probes")
    n = int(math.prod(lik.data_shape))
    mode = fisher_mode(n, obj.dim, num_probes, dense)
    probes = int(num_probes) if mode == "probes" else 0
    # without a prior (or a log-Jacobian in the loss), include_prior changes nothing: one compiled program for
    # both (cramer_rao asks False)
    jac = obj.loss_includes_jacobian and obj.log_jacobian is not None
    include_prior = bool(include_prior and (lik.neg_log_prior is not None or jac))
    config: dict[str, Any] = dict(num_data=n, jacobian_mode=mode, family=lik.family.name,
                                  prior_included=bool(include_prior and lik.neg_log_prior is not None))
    if include_prior and jac:
        config["log_jacobian_included"] = True
    if probes:
        config["num_probes"] = probes
    return _Planned(fisher_cost(mode, n, obj.dim, probes), config, n, probes, mode, include_prior)


def _plan_hutchinson(dim: int, num_probes: int | None, mode: str, scaled_start: bool) -> _Planned:
    probes = positive_int(default_num_probes(dim) if num_probes is None else num_probes, "num_probes")
    config: dict[str, Any] = dict(num_probes=probes, hutchinson_mode=mode, scaled_start=bool(scaled_start))
    if mode == "variance_reduced":
        config["rounds"] = list(hutchinson_rounds(probes))
    return _Planned(2 * probes, config, probes=probes)


def _plan_jacobian(obj: Objective, theta: Any, data: Any, method: str) -> _Planned:
    """Gauss–Newton (residuals) or the empirical Fisher (per-observation terms): a Jacobian, min(N, D)."""
    if method == "gauss_newton":
        if not obj.has_residuals:
            raise ValueError(
                f"method 'gauss_newton' needs residuals but {obj!r} has none; build the objective with "
                "Objective.from_residuals, or use method='exact' or 'hutchinson'"
            )
        n = _count_outputs(obj, theta, data, "residuals")
        config = dict(num_residuals=n, jacobian_mode=jacobian_mode(n, obj.dim), weighted=obj.weights is not None)
    else:
        if not obj.has_per_observation:
            raise ValueError(
                f"method 'empirical_fisher' needs per-observation loss terms but {obj!r} has none; pass "
                "per_observation= to Objective.from_loss (or use from_residuals / from_numpyro)"
            )
        n = _count_outputs(obj, theta, data, "per_observation")
        config = dict(num_observations=n, jacobian_mode=jacobian_mode(n, obj.dim))
    return _Planned(min(n, obj.dim), config, n)


def _plan_ema_grad2(beta: float, dense: bool, num_grads: int | None) -> _Planned:
    if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    if dense:
        raise ValueError("ema_grad2 is a diagonal statistic; dense=True is not available for it")
    if num_grads is not None:
        config: dict[str, Any] = dict(num_grads=int(num_grads), init="zeros, bias-corrected")
        cost = 0
    else:
        config, cost = dict(num_grads=1, init="g(θ)²"), 1
    config["beta"] = float(beta)
    return _Planned(cost, config)
