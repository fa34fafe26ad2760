r"""Curvature estimators: diagonal (and optionally dense) second-order information at a point θ.

Every estimator returns a :class:`Curvature` — the diagonal ``diag`` (D,), optionally the dense ``matrix``
(D, D), the ``method`` name, its cost ``num_grad_evals`` in gradient-evaluation equivalents and a JSON-able
``config`` (method parameters and what the safeguards did). One curvature feeds both per-index learning
rates (:mod:`gnomon.optim.precondition`) and HMC/NUTS inverse mass matrices.

Methods (``f = loss``, ``H = ∇²f``):

``exact``
    :math:`H_{ii} = e_i^T H e_i` from D Hessian-vector products :math:`Hv = \partial_\epsilon \nabla f(θ+εv)`
    (forward-over-reverse, vmapped in batches). Cost 2 per HVP, so 2D. ``dense=True`` returns H itself.
``hutchinson``
    Rademacher probes :math:`z`, :math:`\hat H_{ii} = \frac1k\sum_k z_{k,i}(Hz_k)_i`. Plain Hutchinson is
    unbiased with variance :math:`\sum_{j\ne i} H_{ij}^2/k`: on a badly scaled H the small entries drown.
    The default ``hutchinson_mode="variance_reduced"`` runs rounds of probes rescaled by the previous estimate,
    :math:`v = P z`, :math:`P = \mathrm{diag}(s)^{-1/2}`,
    :math:`\hat H_{ii} = \frac1k\sum z_i(P H P z)_i / p_i^2`,
    whose relative variance :math:`\sum_j (p_j/p_i)^2 H_{ij}^2/(H_{ii}^2k)` becomes
    :math:`\sum_{j} C_{ij}^2/k` (C the correlation matrix of H) once :math:`s ≈ \mathrm{diag}\,H`. Rounds
    use ¼, ¼ and ½ of the probes; the scale of each round is ``max(|estimate|, standard error)`` of the
    last (conservative where the estimate is still noise). Cost 2 per probe.
``gauss_newton``
    :math:`G = J^T W J` for ``loss = ½ Σ w r²`` (residuals and weights of the objective); the diagonal
    :math:`\sum_n w_n J_{nj}^2` is exact and non-negative. J comes from forward mode (D columns, cost D)
    when there are at least as many residuals as parameters, else reverse mode (N rows, cost N).
``empirical_fisher``
    :math:`F = \sum_n g_n g_n^T` with :math:`g_n = \nabla \ell_n` the gradients of the per-observation loss
    terms (cost min(N, D) as above). The squared *full-batch* gradient is not a Fisher (it vanishes at the
    optimum), hence per-observation terms are required.
``fisher``
    The expected Fisher :math:`J^T W(\mu) J` of a likelihood objective (:meth:`gnomon.Objective.from_likelihood`)
    with the family's weights (Poisson :math:`1/\mu`, Gaussian :math:`1/\sigma^2`, Student-t
    :math:`(\nu+1)/((\nu+3)\sigma^2)`), plus the exact Hessian of the negative log prior (``include_prior``).
    J by D JVPs (N ≥ D, cost D) or N VJPs (cost N), never materialised for the diagonal; ``num_probes=k``
    estimates the diagonal from k VJP probes instead (:mod:`gnomon.curvature.fisher`).
``finite_difference``
    Central differences of the gradient, :math:`H e_i ≈ (∇f(θ + h_i e_i) - ∇f(θ - h_i e_i)) / (2 h_i)` with
    :math:`h_i = ε^{1/3} \max(|θ_i|, 1)`: reverse mode only, so it is finite wherever the gradient is, also on
    models whose forward-over-reverse derivatives (``exact``, ``hutchinson``) come out NaN (dLux optics on some
    CPUs). Cost 2D; ``dense=True`` gives the symmetrised matrix. Accurate to a few digits in float64 for θ in
    units where a coordinate's scale is O(1) or its own size; the fallback of :mod:`gnomon.curvature.choice`.
``ema_grad2``
    An exponential moving average of squared gradients :math:`v_t = β v_{t-1} + (1-β) g_t^2` (bias
    corrected), the optimizer-side statistic of RMSProp/Adam. Here from ``grads`` (K, D) if given, else
    the single gradient at θ (its square, the EMA's initialisation). Units: (loss/θ)², hence power ½ in
    :func:`gnomon.learning_rates`.

Safeguards (recorded in ``config``): non-finite entries are replaced by the largest finite entry (the
conservative choice: the smallest learning rate) and counted (``num_nonfinite``); negative entries (a
Hessian diagonal away from a minimum) are counted (``num_negative``) and replaced by their absolute value
(``negative="abs"``, default) or by the floor (``negative="floor"``); finally every entry is raised to the
floor ``max(floor · median(|diag|), prior_precision)`` — relative to the median or to a prior precision,
never to the maximum, which would cap the correction on stiff problems (``num_floored``). The default
fraction depends on the method (:func:`default_floor`): 1e-6 for estimates that are noisy or indefinite
(``exact``, ``hutchinson``, ``ema_grad2``), 1e-12 for the noise-free, positive semi-definite information
matrices (``fisher``, ``gauss_newton``, ``empirical_fisher``), whose small entries are real: in the user's
units a binary's position (σ ≈ 350 µas) has a Fisher diagonal 1e7 below the median, and a 1e-6 floor would
shrink its preconditioned step 20-fold. The dense matrix is symmetrised and otherwise returned as computed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.curvature.fisher import expected_fisher, fisher_cost, fisher_mode
from gnomon.curvature.numerics import (  # noqa: F401 (re-exported: gnomon.curvature.estimate.<name>)
    clean_diagonal,
    clean_diagonal_host,
    ema_of_squares,
    exact_diag,
    exact_matrix,
    finite_difference_hessian,
    hutchinson_plain,
    hutchinson_rounds,
    hutchinson_scaled,
    hutchinson_variance_reduced,
    hvp,
    jacobian_mode,
    weighted_jacobian,
)
from gnomon.curvature.result import (  # noqa: F401 (re-exported: gnomon.curvature.estimate.<name>)
    POWERS,
    Curvature,
    blend_curvature,
    default_power,
)
from gnomon.objective.objective import Objective
from gnomon.util.programs import Live, ProgramCache

METHODS = ("exact", "hutchinson", "gauss_newton", "empirical_fisher", "fisher", "finite_difference", "ema_grad2")
HUTCHINSON_MODES = ("variance_reduced", "plain")
_UNSET = object()

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


# (obj.compile_key, plan) -> (jitted estimator, Live): it traces through the Live, holding no objective
_PROGRAMS: ProgramCache = ProgramCache("curvature estimators", maxsize=64)
# (obj.compile_key, residuals | per_observation, θ and data shapes) -> their number (planning traces the model)
_OUTPUTS: ProgramCache = ProgramCache("curvature output counts", maxsize=256)


def _compiled(obj: Objective, settings: CurvaturePlan) -> Callable:
    key = (getattr(obj, "compile_key", obj), settings)
    hit = _PROGRAMS.get(key)
    if hit is None:
        live = Live()

        def highest(*args: Any, **kwargs: Any) -> Any:
            # the user's model is traced here too (Jacobians, HVPs): on GPUs its matmuls default to TF32, and a
            # curvature feeds inverses and bounds (measured: Gauss–Newton 2e-3 off on an H200, 4e-6 on CPU)
            with jax.default_matmul_precision("highest"):
                return _raw_fn(live.get(), settings)(*args, **kwargs)

        hit = _PROGRAMS.put(key, (jax.jit(highest), live))
    fn, live = hit
    live.bind(obj)  # what the estimator traces with while this caller runs (weakly held; data is an argument)
    return fn


def _raw_fn(obj: Objective, settings: CurvaturePlan) -> Callable:
    """A pure ``(θ, data, key, extra) -> (diag, matrix|None)`` for the given static settings."""
    method, dense, num_probes, mode, batch_size, n_res, beta, fmode, include_prior = settings

    if method == "exact":

        def fn(theta, data, key, extra):
            f = lambda th: obj.loss(th, data)  # noqa: E731
            if dense:
                m = exact_matrix(f, theta, batch_size)
                return jnp.diagonal(m), m
            return exact_diag(f, theta, batch_size), None
    elif method == "hutchinson":

        def fn(theta, data, key, extra):
            f = lambda th: obj.loss(th, data)  # noqa: E731
            if mode == "plain":
                return hutchinson_plain(f, theta, key, num_probes)[0], None
            return hutchinson_variance_reduced(f, theta, key, num_probes, extra), None
    elif method == "gauss_newton":

        def fn(theta, data, key, extra):
            wj = weighted_jacobian(lambda th: obj.residual_fn(th, data), theta, obj.weights, n_res)
            if dense:
                m = jnp.matmul(wj.T, wj, precision=jax.lax.Precision.HIGHEST)
                return jnp.diagonal(m), m
            return jnp.sum(wj * wj, axis=0), None
    elif method == "empirical_fisher":

        def fn(theta, data, key, extra):
            g = weighted_jacobian(lambda th: obj.per_observation_fn(th, data), theta, None, n_res)
            if dense:
                m = jnp.matmul(g.T, g, precision=jax.lax.Precision.HIGHEST)
                return jnp.diagonal(m), m
            return jnp.sum(g * g, axis=0), None
    elif method == "fisher":
        lik = obj.likelihood
        nlp = lik.neg_log_prior
        if include_prior and obj.loss_includes_jacobian and obj.log_jacobian is not None:
            # the loss is −log p(θ) with the layout's log-Jacobian (a sampler's target): its Hessian too, exactly
            # (it never evaluates the model, so it costs no gradient evaluation of it)
            log_jac, prior = obj.log_jacobian, nlp

            def nlp(theta):
                return (0.0 if prior is None else prior(theta)) - log_jac(theta)

        def fn(theta, data, key, extra):
            return expected_fisher(
                lik.mean, lambda mu: lik.fisher_weights(mu, data), nlp, theta, mode=fmode,
                dense=dense, key=key, num_probes=num_probes or None, batch_size=batch_size,
                include_prior=include_prior,
            )
    elif method == "finite_difference":

        def fn(theta, data, key, extra):
            return finite_difference_hessian(jax.grad(lambda th: obj.loss(th, data)), theta, dense, batch_size)
    elif method == "ema_grad2":

        def fn(theta, data, key, extra):
            if extra is None:
                g = jax.grad(obj.loss)(theta, data)
                v = g * g
            else:
                v = ema_of_squares(extra, beta)
            return v, (jnp.outer(jnp.sqrt(v), jnp.sqrt(v)) if dense else None)
    else:  # pragma: no cover - validated earlier
        raise AssertionError(method)
    return fn


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


FLOORS = {"fisher": 1e-12, "gauss_newton": 1e-12, "empirical_fisher": 1e-12}


def default_floor(method: str) -> float:
    """Default relative floor of a method's diagonal (module docstring): 1e-12 for noise-free information
    matrices (``fisher``, ``gauss_newton``, ``empirical_fisher``), 1e-6 otherwise."""
    return FLOORS.get(method, 1e-6)


def default_num_probes(dim: int) -> int:
    """Default Hutchinson probe count: 32 (the budget the variance-reduced mode is tuned for)."""
    return 32


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

    ``plan`` is the hashable key of :func:`curvature_fn`; ``cost`` its gradient-evaluation count;
    ``config`` the JSON-able parameters. ``theta``/``data`` are only used for shapes (one member's)."""
    if method not in METHODS:
        raise ValueError(f"unknown curvature method {method!r}; expected one of {METHODS}")
    mode = hutchinson_mode
    if mode not in HUTCHINSON_MODES:
        raise ValueError(f"unknown Hutchinson mode {mode!r}; expected one of {HUTCHINSON_MODES}")
    dim = obj.dim
    config: dict[str, Any] = {}
    n_res = 0
    probes = 0
    fmode = ""
    if method == "fisher":
        lik = getattr(obj, "likelihood", None)
        if lik is None:
            raise ValueError(
                f"method 'fisher' needs a likelihood but {obj!r} has none; build the objective with "
                "Objective.from_likelihood(predict, data, family, layout), or use 'gauss_newton' / 'exact'"
            )
        if num_probes is not None and (
            isinstance(num_probes, bool) or not isinstance(num_probes, (int, np.integer)) or num_probes < 1
        ):
            raise ValueError(f"num_probes must be a positive int, got {num_probes!r}")
        n_res = int(math.prod(lik.data_shape))
        fmode = fisher_mode(n_res, dim, num_probes, dense)
        probes = int(num_probes) if fmode == "probes" else 0
        cost = fisher_cost(fmode, n_res, dim, probes)
        # without a prior (or a log-Jacobian in the loss), include_prior changes nothing: one compiled program for
        # both (cramer_rao asks False)
        jac = obj.loss_includes_jacobian and obj.log_jacobian is not None
        include_prior = bool(include_prior and (lik.neg_log_prior is not None or jac))
        config.update(num_data=n_res, jacobian_mode=fmode, family=lik.family.name,
                      prior_included=bool(include_prior and lik.neg_log_prior is not None))
        if include_prior and jac:
            config["log_jacobian_included"] = True
        if probes:
            config["num_probes"] = probes
    elif method == "hutchinson":
        probes = default_num_probes(dim) if num_probes is None else num_probes
        if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)) or probes < 1:
            raise ValueError(f"num_probes must be a positive int, got {num_probes!r}")
        probes = int(probes)
        cost = 2 * probes
        config.update(num_probes=probes, hutchinson_mode=mode, scaled_start=bool(scaled_start))
        if mode == "variance_reduced":
            config["rounds"] = list(hutchinson_rounds(probes))
    elif method in ("exact", "finite_difference"):
        cost = 2 * dim
    elif method == "gauss_newton":
        if not obj.has_residuals:
            raise ValueError(
                f"method 'gauss_newton' needs residuals but {obj!r} has none; build the objective with "
                "Objective.from_residuals, or use method='exact' or 'hutchinson'"
            )
        n_res = _count_outputs(obj, theta, data, "residuals")
        cost = min(n_res, dim)
        config.update(
            num_residuals=n_res, jacobian_mode=jacobian_mode(n_res, dim), weighted=obj.weights is not None
        )
    elif method == "empirical_fisher":
        if not obj.has_per_observation:
            raise ValueError(
                f"method 'empirical_fisher' needs per-observation loss terms but {obj!r} has none; pass "
                "per_observation= to Objective.from_loss (or use from_residuals / from_numpyro)"
            )
        n_res = _count_outputs(obj, theta, data, "per_observation")
        cost = min(n_res, dim)
        config.update(num_observations=n_res, jacobian_mode=jacobian_mode(n_res, dim))
    else:  # ema_grad2
        if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        if dense:
            raise ValueError("ema_grad2 is a diagonal statistic; dense=True is not available for it")
        if num_grads is not None:
            cost = 0
            config.update(num_grads=int(num_grads), init="zeros, bias-corrected")
        else:
            cost = 1
            config.update(num_grads=1, init="g(θ)²")
        config["beta"] = float(beta)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    plan = CurvaturePlan(method, bool(dense), probes, mode, batch_size, n_res, float(beta), fmode,
                         bool(include_prior))
    return plan, int(cost), config


def curvature_fn(obj: Objective, settings: CurvaturePlan) -> Callable:
    """The pure, jittable ``(θ, data, key, extra) -> (raw_diag, matrix | None)`` for planned settings
    (``extra``: the Hutchinson starting scale or the ``ema_grad2`` gradients, else None)."""
    return _raw_fn(obj, settings)


def estimate_curvature(
    obj: Objective,
    theta: Any,
    method: str = "exact",
    *,
    key: Any = None,
    num_probes: int | None = None,
    dense: bool = False,
    data: Any = _UNSET,
    hutchinson_mode: str = "variance_reduced",
    scale: Any = None,
    grads: Any = None,
    beta: float = 0.999,
    floor: float | None = None,
    prior_precision: Any = None,
    negative: str = "abs",
    batch_size: int | None = None,
    previous: Curvature | None = None,
    ema: float = 0.0,
    include_prior: bool = True,
) -> Curvature:
    """Estimate the curvature of ``obj.loss`` at ``theta`` (see the module docstring for the methods).

    Args:
      obj: the :class:`gnomon.Objective`.
      theta: the point, shape ``(D,)``.
      method: ``"exact"``, ``"hutchinson"``, ``"gauss_newton"``, ``"empirical_fisher"``, ``"fisher"``,
        ``"finite_difference"`` or ``"ema_grad2"`` (the method asked for is the method used: for the automatic
        choice with its fallbacks, see :func:`gnomon.curvature.choice.choose_curvature`).
      key: PRNG key for ``hutchinson`` and Fisher probes (default ``jax.random.key(0)``).
      num_probes: Hutchinson probes (HVPs), default 32; for ``"fisher"``: estimate the diagonal from this many
        VJP probes instead of the exact D JVPs.
      dense: also return the dense ``(D, D)`` matrix (exact: the Hessian; GN: JᵀWJ; empirical Fisher: GᵀG;
        fisher: the expected Fisher JᵀWJ + prior Hessian).
      data: data for objectives taking ``(θ, data)`` (default the objective's bound data).
      hutchinson_mode: ``"variance_reduced"`` (default) or ``"plain"``.
      scale: a previous diagonal estimate to scale the first Hutchinson round by (e.g. at a refresh).
      grads: ``(K, D)`` gradients for ``ema_grad2`` (default: the gradient at θ).
      beta: EMA decay for ``ema_grad2``.
      floor: relative floor, a fraction of the median of |diag| (default :func:`default_floor` of the method:
        1e-12 for fisher/gauss_newton/empirical_fisher, 1e-6 otherwise).
      prior_precision: an absolute floor (scalar or (D,)), e.g. the prior precision.
      negative: ``"abs"`` (default) or ``"floor"`` for negative entries.
      batch_size: HVPs/columns evaluated together (memory vs speed).
      previous: a previous Curvature to smooth with: ``diag = ema · previous + (1 − ema) · new``.
      ema: smoothing weight of ``previous`` (0 = no smoothing).
      include_prior: ``"fisher"`` only: add the exact Hessian of the objective's negative log prior (default;
        and of its negative log-Jacobian when the loss includes it, as a sampler's target does); False gives the
        likelihood's Fisher alone (the Cramér–Rao bound's).

    Returns:
      a :class:`Curvature` with its cost in ``num_grad_evals`` and everything above in ``config``.

    Raises:
      ValueError: when every diagonal entry is non-finite, naming the likely cause and the methods to use
        instead; some non-finite entries are a ``RuntimeWarning`` (the diagonal's are replaced by its largest
        finite entry and counted in ``config["num_nonfinite"]``; the matrix's in ``num_nonfinite_matrix``).
    """
    curv = _estimate(obj, theta, method, key=key, num_probes=num_probes, dense=dense, data=data,
                     hutchinson_mode=hutchinson_mode, scale=scale, grads=grads, beta=beta, floor=floor,
                     prior_precision=prior_precision, negative=negative, batch_size=batch_size, previous=previous,
                     ema=ema, include_prior=include_prior, where="estimate_curvature")
    bad = nonfinite_count(curv)
    if bad:
        what = f"{bad} of {curv.dim * curv.dim if curv.matrix is not None else curv.dim}"
        entries = "matrix entries" if curv.matrix is not None else "diagonal entries"
        if curv.config["num_nonfinite"] == curv.dim:
            raise ValueError(f"every entry of the {method} curvature is non-finite at θ: {nonfinite_cause(method)}. "
                             f"{nonfinite_fix(obj, method)}")
        warnings.warn(
            f"{what} {entries} of the {method} curvature are non-finite at θ ({nonfinite_cause(method)}); the "
            f"diagonal's were replaced by its largest finite entry. {nonfinite_fix(obj, method)}",
            RuntimeWarning, stacklevel=2,
        )
    return curv


def nonfinite_count(curv: Curvature) -> int:
    """Non-finite entries of an estimate before cleaning: of its dense matrix when it has one, else of its
    diagonal (``config["num_nonfinite"]``)."""
    if curv.matrix is not None:
        return int(curv.config.get("num_nonfinite_matrix", 0))
    return int(curv.config.get("num_nonfinite", 0))


def nonfinite_cause(method: str) -> str:
    """The likely cause of non-finite entries of a method's estimate, in words."""
    if method in ("exact", "hutchinson"):
        return ("Hessian-vector products (forward-over-reverse derivatives) are not finite there; where the loss and "
                "its gradient are finite this is the model's second derivative, e.g. 0·∞ in a dLux optical model "
                "(on some CPUs)")
    if method in ("fisher", "gauss_newton", "empirical_fisher"):
        return "Jacobian-vector products of the model are not finite there (is the model finite at θ?)"
    if method == "finite_difference":
        return "the gradient is not finite at or next to θ (is the loss finite there?)"
    return "the loss or its gradient is not finite there"


def nonfinite_fix(obj: Objective, method: str) -> str:
    """What to use instead of ``method`` for ``obj`` (a sentence)."""
    options = []
    if obj.likelihood is not None and method != "fisher":
        options.append("'fisher'")
    if obj.has_residuals and method != "gauss_newton":
        options.append("'gauss_newton'")
    if method != "finite_difference":
        options.append("'finite_difference' (gradients only)")
    alt = " or ".join(options) if options else "a given Curvature or array"
    return f"Use method={alt}, or let gnomon choose (gnomon.curvature.choice.choose_curvature falls back by itself)"


def _estimate(
    obj: Objective,
    theta: Any,
    method: str,
    *,
    key: Any = None,
    num_probes: int | None = None,
    dense: bool = False,
    data: Any = _UNSET,
    hutchinson_mode: str = "variance_reduced",
    scale: Any = None,
    grads: Any = None,
    beta: float = 0.999,
    floor: float | None = None,
    prior_precision: Any = None,
    negative: str = "abs",
    batch_size: int | None = None,
    previous: Curvature | None = None,
    ema: float = 0.0,
    include_prior: bool = True,
    where: str = "estimate_curvature",
) -> Curvature:
    """:func:`estimate_curvature` without its verdict on non-finite entries (counted in ``config``: the diagonal's
    ``num_nonfinite``, the matrix's ``num_nonfinite_matrix``). Host-side: θ is concrete; the estimate runs in one
    compiled program (cached per objective and settings) and is cleaned in numpy (nothing else to compile)."""
    if not isinstance(obj, Objective):
        raise ValueError(f"{where} needs a gnomon.Objective, got {type(obj).__name__}")
    if negative not in ("abs", "floor"):
        raise ValueError(f"negative must be 'abs' or 'floor', got {negative!r}")
    if floor is None:
        floor = default_floor(method)
    if isinstance(floor, bool) or not (isinstance(floor, (int, float)) and 0 <= floor < 1):
        raise ValueError(f"floor must be a fraction of the median in [0, 1), got {floor!r}")
    if not (isinstance(ema, (int, float)) and 0 <= ema < 1):
        raise ValueError(f"ema must be in [0, 1), got {ema!r}")
    if not isinstance(theta, jax.Array):
        theta = np.asarray(theta)
    if not np.issubdtype(theta.dtype, np.floating):
        theta = np.asarray(theta, jnp.result_type(float))
    if theta.ndim != 1 or theta.shape[0] != obj.dim:
        raise ValueError(f"θ has shape {tuple(theta.shape)}, expected ({obj.dim},) for {obj!r}")
    if not np.all(np.isfinite(np.asarray(theta))):
        raise ValueError("θ has non-finite entries; cannot estimate curvature there")
    if data is not _UNSET and obj.takes_data:  # per-call data checked like bound data (finite, shape, family)
        if obj.likelihood is not None:
            obj.with_data(data)
        else:
            from gnomon.objective.checks import check_finite_data

            check_finite_data(data, "data")
    data = obj.data if data is _UNSET else data
    dim = obj.dim
    dtype = np.dtype(theta.dtype)
    extra = None
    mode = hutchinson_mode
    if method == "hutchinson" and mode == "variance_reduced" and scale is not None:
        extra = np.asarray(scale, dtype)
        if extra.shape != (dim,):
            raise ValueError(f"scale must have shape ({dim},), got {tuple(extra.shape)}")
        extra = np.maximum(np.abs(extra), np.finfo(dtype).tiny)
    if method == "ema_grad2" and grads is not None:
        extra = np.asarray(grads, dtype)
        if extra.ndim != 2 or extra.shape[1] != dim or extra.shape[0] < 1:
            raise ValueError(f"grads must have shape (K, {dim}) with K ≥ 1, got {tuple(extra.shape)}")
    settings, cost, config = plan_curvature(
        obj,
        theta,
        data,
        method,
        num_probes=num_probes,
        hutchinson_mode=mode,
        dense=dense,
        beta=beta,
        batch_size=batch_size,
        scaled_start=scale is not None,
        num_grads=None if grads is None else int(extra.shape[0]),
        include_prior=include_prior,
    )
    if key is None:
        key = _default_key()
    raw, matrix = jax.device_get(_compiled(obj, settings)(theta, data, key, extra))
    diag, counts = clean_diagonal_host(raw, floor=float(floor), prior_precision=prior_precision, negative=negative)
    if previous is not None and ema > 0:
        if previous.dim != dim:
            raise ValueError(f"previous curvature has dim {previous.dim}, expected {dim}")
        diag = (ema * np.asarray(previous.diag, diag.dtype) + (1 - ema) * diag).astype(diag.dtype)
        config["ema"] = float(ema)
        config["previous_method"] = previous.method
    config.update(
        dense=bool(dense),
        floor=float(floor),
        negative=negative,
        prior_precision=None if prior_precision is None else _jsonable(prior_precision),
        **counts,
    )
    if matrix is not None:
        matrix = np.asarray(matrix)
        config["num_nonfinite_matrix"] = int(np.sum(~np.isfinite(matrix)))
        matrix = jnp.asarray(0.5 * (matrix + matrix.T))
    return Curvature(diag=jnp.asarray(diag), matrix=matrix, method=method, num_grad_evals=int(cost), config=config)


_KEY: list = []


def _default_key() -> Any:
    """``jax.random.key(0)``, made once (creating a key costs a dispatch)."""
    if not _KEY:
        _KEY.append(jax.random.key(0))
    return _KEY[0]


def _jsonable(x: Any) -> Any:
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else "array"
