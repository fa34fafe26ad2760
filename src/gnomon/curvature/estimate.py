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

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.curvature.compute import method_fn
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
from gnomon.curvature.plan import (  # noqa: F401 (re-exported: gnomon.curvature.estimate.<name>)
    FLOORS,
    HUTCHINSON_MODES,
    METHODS,
    CurvaturePlan,
    default_floor,
    default_num_probes,
    plan_curvature,
)
from gnomon.curvature.result import (  # noqa: F401 (re-exported: gnomon.curvature.estimate.<name>)
    POWERS,
    Curvature,
    blend_curvature,
    default_power,
)
from gnomon.objective.objective import Objective
from gnomon.util.programs import Live, ProgramCache
from gnomon.util.validate import default_key

_UNSET = object()

# (obj.compile_key, plan) -> (jitted estimator, Live): it traces through the Live, holding no objective
_PROGRAMS: ProgramCache = ProgramCache("curvature estimators", maxsize=64)


def _compiled(obj: Objective, settings: CurvaturePlan) -> Callable:
    key = (getattr(obj, "compile_key", obj), settings)
    hit = _PROGRAMS.get(key)
    if hit is None:
        live = Live()

        def highest(*args: Any, **kwargs: Any) -> Any:
            # the user's model is traced here too (Jacobians, HVPs): on GPUs its matmuls default to TF32, and a
            # curvature feeds inverses and bounds (measured: Gauss–Newton 2e-3 off on an H200, 4e-6 on CPU)
            with jax.default_matmul_precision("highest"):
                return method_fn(live.get(), settings)(*args, **kwargs)

        hit = _PROGRAMS.put(key, (jax.jit(highest), live))
    fn, live = hit
    live.bind(obj)  # what the estimator traces with while this caller runs (weakly held; data is an argument)
    return fn


def curvature_fn(obj: Objective, settings: CurvaturePlan) -> Callable:
    """The pure, jittable ``(θ, data, key, extra) -> (raw_diag, matrix | None)`` for planned settings
    (``extra``: the Hutchinson starting scale or the ``ema_grad2`` gradients, else None)."""
    return method_fn(obj, settings)


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
    given: Any = None,
) -> Curvature:
    """:func:`estimate_curvature` without its verdict on non-finite entries (counted in ``config``: the diagonal's
    ``num_nonfinite``, the matrix's ``num_nonfinite_matrix``). Host-side: θ is concrete; the estimate runs in one
    compiled program (cached per objective and settings) and is cleaned in numpy (nothing else to compile).
    ``given``: the raw ``(D,)`` diagonal of this request already computed by another program (the optimizer loop's,
    :mod:`gnomon.optim.start_estimate`), cleaned and described exactly as one computed here (diagonal only)."""
    theta, data, floor = _checked_request(obj, theta, data, method, floor, negative, ema, where)
    extra = _extra_input(method, hutchinson_mode, scale, grads, obj.dim, np.dtype(theta.dtype))
    settings, cost, config = plan_curvature(
        obj, theta, data, method, num_probes=num_probes, hutchinson_mode=hutchinson_mode, dense=dense, beta=beta,
        batch_size=batch_size, scaled_start=scale is not None,
        num_grads=None if grads is None else int(extra.shape[0]), include_prior=include_prior,
    )
    if given is not None and dense:
        raise ValueError("a raw diagonal computed elsewhere (given=) has no dense matrix; use dense=False")
    if given is not None:  # the raw diagonal was computed elsewhere (the optimizer loop's own program)
        raw, matrix = np.asarray(given, np.asarray(theta).dtype), None
    else:
        key = default_key() if key is None else key
        raw, matrix = jax.device_get(_compiled(obj, settings)(theta, data, key, extra))
    diag, counts = clean_diagonal_host(raw, floor=float(floor), prior_precision=prior_precision, negative=negative)
    if previous is not None and ema > 0:
        if previous.dim != obj.dim:
            raise ValueError(f"previous curvature has dim {previous.dim}, expected {obj.dim}")
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


def _checked_request(obj: Objective, theta: Any, data: Any, method: str, floor: Any, negative: str, ema: Any,
                     where: str) -> tuple[Any, Any, float]:
    """``(θ, data, floor)`` of a request, validated: θ a finite float (D,) vector, data checked like bound data,
    floor resolved by method."""
    if not isinstance(obj, Objective):
        raise ValueError(f"{where} needs a gnomon.Objective, got {type(obj).__name__}")
    if negative not in ("abs", "floor"):
        raise ValueError(f"negative must be 'abs' or 'floor', got {negative!r}")
    if floor is None:
        floor = default_floor(method)
    if isinstance(floor, bool) or not (isinstance(floor, (int, float)) and 0 <= floor < 1):
        raise ValueError(f"floor must be a fraction of the median in [0, 1), got {floor!r}")
    if isinstance(ema, bool) or not (isinstance(ema, (int, float)) and 0 <= ema < 1):
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
    return theta, (obj.data if data is _UNSET else data), float(floor)


def _extra_input(method: str, mode: str, scale: Any, grads: Any, dim: int, dtype: np.dtype) -> Any:
    """The method's extra input: variance-reduced Hutchinson's starting scale, ``ema_grad2``'s gradients, or None."""
    if method == "hutchinson" and mode == "variance_reduced" and scale is not None:
        extra = np.asarray(scale, dtype)
        if extra.shape != (dim,):
            raise ValueError(f"scale must have shape ({dim},), got {tuple(extra.shape)}")
        return np.maximum(np.abs(extra), np.finfo(dtype).tiny)
    if method == "ema_grad2" and grads is not None:
        extra = np.asarray(grads, dtype)
        if extra.ndim != 2 or extra.shape[1] != dim or extra.shape[0] < 1:
            raise ValueError(f"grads must have shape (K, {dim}) with K ≥ 1, got {tuple(extra.shape)}")
        return extra
    return None


def _jsonable(x: Any) -> Any:
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else "array"
