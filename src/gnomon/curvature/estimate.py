r"""Curvature estimators: diagonal (and optionally dense) second-order information at a point θ.

Every estimator returns a :class:`Curvature` — the diagonal ``diag`` (D,), optionally the dense ``matrix``
(D, D), the ``method`` name, its cost ``num_grad_evals`` in gradient-evaluation equivalents and a JSON-able
``config`` (method parameters and what the safeguards did). One curvature feeds both per-index learning
rates (:mod:`gnomon.curvature.precondition`) and HMC/NUTS inverse mass matrices.

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
never to the maximum, which would cap the correction on stiff problems (``num_floored``). The dense matrix
is symmetrised and otherwise returned as computed.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.curvature.fisher import expected_fisher, fisher_cost, fisher_mode
from gnomon.objective.objective import Objective

METHODS = ("exact", "hutchinson", "gauss_newton", "empirical_fisher", "fisher", "ema_grad2")
HUTCHINSON_MODES = ("variance_reduced", "plain")
_UNSET = object()

# Learning-rate exponent by what a curvature measures: 1 for Hessian-like (loss/θ²), ½ for g² statistics.
POWERS = {
    "exact": 1.0,
    "hutchinson": 1.0,
    "gauss_newton": 1.0,
    "empirical_fisher": 1.0,
    "fisher": 1.0,
    "blend": 1.0,
    "user": 1.0,
    "ema_grad2": 0.5,
}


def default_power(method: str) -> float:
    """1 for Hessian/Gauss–Newton/Fisher curvature, ½ for squared-gradient statistics (``ema_grad2``)."""
    return POWERS.get(method, 1.0)


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


class _Config(dict):
    """A JSON-able dict that hashes and compares by its JSON text (usable as pytree aux data)."""

    def _text(self) -> str:
        return json.dumps(self, sort_keys=True, default=str)

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self._text())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and json.dumps(other, sort_keys=True, default=str) == self._text()

    def __ne__(self, other: object) -> bool:
        return not self == other


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class Curvature:
    """A curvature estimate at one θ.

    Attributes:
      diag: ``(D,)`` positive diagonal (after the safeguards described in the module docstring).
      matrix: ``(D, D)`` symmetric dense matrix when asked for (``dense=True``), else None.
      method: the estimator (``"exact"``, ``"hutchinson"``, ``"gauss_newton"``, ``"empirical_fisher"``,
        ``"ema_grad2"``, ``"blend"``, or ``"user"`` for a curvature built from arrays).
      num_grad_evals: its cost in gradient-evaluation equivalents (an HVP counts 2).
      config: JSON-able parameters and safeguard counts (``num_negative``, ``num_nonfinite``,
        ``num_floored``, ``floor``, ...), written to ``meta.json`` by the engines.

    A registered pytree: ``diag`` and ``matrix`` are leaves; ``method``, ``num_grad_evals`` and ``config``
    are static (hashable by value).
    """

    diag: Any
    matrix: Any = None
    method: str = "user"
    num_grad_evals: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.config, _Config):
            object.__setattr__(self, "config", _Config(self.config or {}))

    def tree_flatten(self):
        return (self.diag, self.matrix), (self.method, int(self.num_grad_evals), self.config)

    @classmethod
    def tree_unflatten(cls, aux, children):
        diag, matrix = children
        method, nge, config = aux
        obj = object.__new__(cls)
        object.__setattr__(obj, "diag", diag)
        object.__setattr__(obj, "matrix", matrix)
        object.__setattr__(obj, "method", method)
        object.__setattr__(obj, "num_grad_evals", nge)
        object.__setattr__(obj, "config", config)
        return obj

    @classmethod
    def from_diag(cls, diag: Any, method: str = "user", **config: Any) -> Curvature:
        """A curvature from a given positive diagonal (e.g. a prior precision or a saved estimate)."""
        d = jnp.asarray(diag)
        if d.ndim != 1:
            raise ValueError(f"a curvature diagonal must be a vector (D,), got shape {tuple(d.shape)}")
        _check_finite_positive(np.asarray(d), "diag")
        return cls(diag=d, method=method, config=config)

    @classmethod
    def from_matrix(cls, matrix: Any, method: str = "user", **config: Any) -> Curvature:
        """A curvature from a given symmetric matrix (its diagonal becomes ``diag``)."""
        m = jnp.asarray(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"a curvature matrix must be square (D, D), got shape {tuple(m.shape)}")
        if not np.all(np.isfinite(np.asarray(m))):
            raise ValueError("the curvature matrix has non-finite entries")
        d = jnp.diagonal(m)
        _check_finite_positive(np.asarray(d), "matrix diagonal")
        return cls(diag=d, matrix=0.5 * (m + m.T), method=method, config=config)

    @property
    def dim(self) -> int:
        return int(np.shape(self.diag)[-1])

    @property
    def power(self) -> float:
        """The learning-rate exponent this curvature calls for (1 for Hessian-like, ½ for g²)."""
        return default_power(self.method)

    def describe(self) -> dict[str, Any]:
        """JSON-able description for ``meta.json``: method, cost and configuration."""
        return {
            "method": self.method,
            "num_grad_evals": int(self.num_grad_evals),
            "dim": self.dim,
            "dense": self.matrix is not None,
            **dict(self.config),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``curvature.npz``: ``diag`` and, when present, ``matrix``."""
        out = {"diag": np.asarray(self.diag)}
        if self.matrix is not None:
            out["matrix"] = np.asarray(self.matrix)
        return out

    def __repr__(self) -> str:
        d = np.asarray(self.diag)
        rng = f"{d.min():.3g}…{d.max():.3g}" if d.size else "empty"
        dense = ", dense" if self.matrix is not None else ""
        return f"Curvature({self.method}, D={d.size}, diag {rng}{dense}, {self.num_grad_evals} grad evals)"


def _check_finite_positive(d: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(d)):
        raise ValueError(f"curvature {what} has {int(np.sum(~np.isfinite(d)))} non-finite entries")
    if np.any(d <= 0):
        raise ValueError(f"curvature {what} must be positive, got min {float(np.min(d))!r}")


# ---------------------------------------------------------------------------------------------- numerics
def hvp(f: Callable, theta: Any, v: Any) -> jnp.ndarray:
    """Hessian-vector product ``∇²f(θ) v`` by forward-over-reverse differentiation (cost: 2 gradients)."""
    return jax.jvp(jax.grad(f), (theta,), (v,))[1]


def _default_batch(dim: int) -> int:
    return dim if dim <= 512 else 128


def exact_diag(f: Callable, theta: Any, batch_size: int | None = None) -> jnp.ndarray:
    """``diag ∇²f(θ)`` from D HVPs with basis vectors (jittable; cost 2D)."""
    d = theta.shape[-1]

    def one(i):
        e = jnp.zeros_like(theta).at[i].set(1)
        return hvp(f, theta, e)[i]

    return jax.lax.map(one, jnp.arange(d), batch_size=batch_size or _default_batch(d))


def exact_matrix(f: Callable, theta: Any, batch_size: int | None = None) -> jnp.ndarray:
    """The Hessian ``∇²f(θ)`` from D HVPs (symmetrised; cost 2D)."""
    d = theta.shape[-1]
    cols = jax.lax.map(
        lambda e: hvp(f, theta, e), jnp.eye(d, dtype=theta.dtype), batch_size=batch_size or _default_batch(d)
    )
    return 0.5 * (cols + cols.T)


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype=dtype)


def hutchinson_plain(f: Callable, theta: Any, key: Any, num_probes: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Plain Hutchinson: mean and standard error of ``z ⊙ Hz`` over Rademacher probes (cost 2k)."""
    z = _rademacher(key, (num_probes, theta.shape[-1]), theta.dtype)
    s = z * jax.vmap(lambda v: hvp(f, theta, v))(z)
    return s.mean(0), _stderr(s)


def _stderr(samples: jnp.ndarray) -> jnp.ndarray:
    k = samples.shape[0]
    if k < 2:
        return jnp.abs(samples[0])
    return jnp.std(samples, axis=0, ddof=1) / math.sqrt(k)


def hutchinson_scaled(
    f: Callable, theta: Any, key: Any, num_probes: int, scale: Any
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Hutchinson with probes ``v = z / √scale``: unbiased, relative variance ≈ Σ_j C_ij²/k when
    ``scale ≈ diag H`` (C = correlation matrix of H). Returns mean and standard error (cost 2k)."""
    p = jax.lax.rsqrt(scale)
    z = _rademacher(key, (num_probes, theta.shape[-1]), theta.dtype) * p
    s = z * jax.vmap(lambda v: hvp(f, theta, v))(z) / (p * p)
    return s.mean(0), _stderr(s)


def hutchinson_rounds(num_probes: int) -> tuple[int, ...]:
    """Probe counts per round of the variance-reduced estimator (¼, ¼, ½; at least 2 each)."""
    if num_probes < 6:
        return (num_probes,)
    q = max(2, num_probes // 4)
    return (q, q, num_probes - 2 * q)


def hutchinson_variance_reduced(
    f: Callable, theta: Any, key: Any, num_probes: int, scale: Any = None
) -> jnp.ndarray:
    """Variance-reduced Hutchinson: rounds of probes rescaled by the previous round's estimate.

    The first round is plain (or scaled by ``scale`` when a previous estimate is given); each later round
    scales its probes by ``max(|estimate|, stderr)`` of the round before and the last round is returned."""
    rounds = hutchinson_rounds(num_probes)
    keys = jax.random.split(key, len(rounds))
    if scale is None:
        est, se = hutchinson_plain(f, theta, keys[0], rounds[0])
    else:
        est, se = hutchinson_scaled(f, theta, keys[0], rounds[0], scale)
    for k, kk in zip(rounds[1:], keys[1:], strict=True):
        s = jnp.maximum(jnp.abs(est), se)
        ref = jnp.median(s)
        s = jnp.maximum(s, jnp.maximum(ref, jnp.finfo(theta.dtype).tiny) * 1e-12)
        est, se = hutchinson_scaled(f, theta, kk, k, s)
    return est


def _jacobian_mode(n: int, d: int) -> str:
    return "forward" if n >= d else "reverse"


def weighted_jacobian(r: Callable, theta: Any, weights: Any, n: int) -> jnp.ndarray:
    """``√w ⊙ J`` (N, D) for the flattened residuals, J by the cheaper AD mode (cost min(N, D))."""
    d = theta.shape[-1]
    flat = lambda th: jnp.ravel(r(th))  # noqa: E731
    jac = jax.jacfwd(flat)(theta) if _jacobian_mode(n, d) == "forward" else jax.jacrev(flat)(theta)
    if weights is None:
        return jac
    w = jnp.ravel(jnp.broadcast_to(weights, jax.eval_shape(r, theta).shape)).astype(jac.dtype)
    return jnp.sqrt(w)[:, None] * jac


def clean_diagonal(diag: jnp.ndarray, *, floor: float, prior_precision: Any, negative: str):
    """Clean a raw diagonal (non-finite, negative, floor; module docstring); returns (diag, counts of 0-d arrays)."""
    finite = jnp.isfinite(diag)
    num_nonfinite = jnp.sum(~finite)
    num_negative = jnp.sum(finite & (diag < 0))
    absd = jnp.where(finite, jnp.abs(diag), jnp.nan)
    med = jnp.nanmedian(absd)
    big = jnp.nanmax(absd)
    d = jnp.where(finite, diag, big)
    if negative == "abs":
        d = jnp.abs(d)
    lo = floor * med
    if prior_precision is not None:
        lo = jnp.maximum(lo, jnp.asarray(prior_precision, d.dtype))
    lo = jnp.maximum(lo, jnp.finfo(d.dtype).tiny)
    num_floored = jnp.sum(d < lo)
    d = jnp.maximum(d, lo)
    return d, {
        "num_nonfinite": num_nonfinite,
        "num_negative": num_negative,
        "num_floored": num_floored,
        "floor_value": lo,
        "median": med,
    }


# ---------------------------------------------------------------------------------------------- driver
_CACHE: OrderedDict = OrderedDict()  # (obj.compile_key, plan) -> jitted estimator; least recently used dropped
_CACHE_SIZE = 64


def _compiled(obj: Objective, settings: CurvaturePlan) -> Callable:
    key = (getattr(obj, "compile_key", obj), settings)
    fn = _CACHE.get(key)
    if fn is None:
        fn = jax.jit(_raw_fn(obj, settings))
        _CACHE[key] = fn
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
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
                m = wj.T @ wj
                return jnp.diagonal(m), m
            return jnp.sum(wj * wj, axis=0), None
    elif method == "empirical_fisher":

        def fn(theta, data, key, extra):
            g = weighted_jacobian(lambda th: obj.per_observation_fn(th, data), theta, None, n_res)
            if dense:
                m = g.T @ g
                return jnp.diagonal(m), m
            return jnp.sum(g * g, axis=0), None
    elif method == "fisher":
        lik = obj.likelihood

        def fn(theta, data, key, extra):
            return expected_fisher(
                lik.mean, lambda mu: lik.fisher_weights(mu, data), lik.neg_log_prior, theta, mode=fmode,
                dense=dense, key=key, num_probes=num_probes or None, batch_size=batch_size,
                include_prior=include_prior,
            )
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


def ema_of_squares(grads: Any, beta: float) -> jnp.ndarray:
    """Bias-corrected EMA of g² over the rows of ``grads`` (K, D): ``v_K / (1 − β^K)``."""

    def step(v, g):
        return beta * v + (1 - beta) * g * g, None

    v, _ = jax.lax.scan(step, jnp.zeros_like(grads[0]), grads)
    return v / (1 - beta ** grads.shape[0])


def _count_outputs(obj: Objective, theta: Any, data: Any, fn_name: str) -> int:
    f = obj.residual_fn if fn_name == "residuals" else obj.per_observation_fn
    return int(np.prod(jax.eval_shape(lambda th: f(th, data), theta).shape))


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
        config.update(
            num_data=n_res, jacobian_mode=fmode, family=lik.family.name,
            prior_included=bool(include_prior and lik.neg_log_prior is not None),
        )
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
    elif method == "exact":
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
            num_residuals=n_res, jacobian_mode=_jacobian_mode(n_res, dim), weighted=obj.weights is not None
        )
    elif method == "empirical_fisher":
        if not obj.has_per_observation:
            raise ValueError(
                f"method 'empirical_fisher' needs per-observation loss terms but {obj!r} has none; pass "
                "per_observation= to Objective.from_loss (or use from_residuals / from_numpyro)"
            )
        n_res = _count_outputs(obj, theta, data, "per_observation")
        cost = min(n_res, dim)
        config.update(num_observations=n_res, jacobian_mode=_jacobian_mode(n_res, dim))
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
    floor: float = 1e-6,
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
      method: ``"exact"``, ``"hutchinson"``, ``"gauss_newton"``, ``"empirical_fisher"``, ``"fisher"`` or
        ``"ema_grad2"``.
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
      floor: relative floor, a fraction of the median of |diag|.
      prior_precision: an absolute floor (scalar or (D,)), e.g. the prior precision.
      negative: ``"abs"`` (default) or ``"floor"`` for negative entries.
      batch_size: HVPs/columns evaluated together (memory vs speed).
      previous: a previous Curvature to smooth with: ``diag = ema · previous + (1 − ema) · new``.
      ema: smoothing weight of ``previous`` (0 = no smoothing).
      include_prior: ``"fisher"`` only: add the exact Hessian of the objective's negative log prior (default);
        False gives the likelihood's Fisher alone (the Cramér–Rao bound's).

    Returns:
      a :class:`Curvature` with its cost in ``num_grad_evals`` and everything above in ``config``.
    """
    if not isinstance(obj, Objective):
        raise ValueError(f"estimate_curvature needs a gnomon.Objective, got {type(obj).__name__}")
    if negative not in ("abs", "floor"):
        raise ValueError(f"negative must be 'abs' or 'floor', got {negative!r}")
    if not (isinstance(floor, (int, float)) and 0 <= floor < 1):
        raise ValueError(f"floor must be a fraction of the median in [0, 1), got {floor!r}")
    if not (isinstance(ema, (int, float)) and 0 <= ema < 1):
        raise ValueError(f"ema must be in [0, 1), got {ema!r}")
    theta = jnp.asarray(theta)
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        theta = theta.astype(jnp.result_type(float))
    if theta.ndim != 1 or theta.shape[0] != obj.dim:
        raise ValueError(f"θ has shape {tuple(theta.shape)}, expected ({obj.dim},) for {obj!r}")
    if not bool(jnp.all(jnp.isfinite(theta))):
        raise ValueError("θ has non-finite entries; cannot estimate curvature there")
    data = obj.data if data is _UNSET else data
    dim = obj.dim
    extra = None
    mode = hutchinson_mode
    if method == "hutchinson" and mode == "variance_reduced" and scale is not None:
        extra = jnp.asarray(scale, theta.dtype)
        if extra.shape != (dim,):
            raise ValueError(f"scale must have shape ({dim},), got {tuple(extra.shape)}")
        extra = jnp.maximum(jnp.abs(extra), jnp.finfo(theta.dtype).tiny)
    if method == "ema_grad2" and grads is not None:
        extra = jnp.asarray(grads, theta.dtype)
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
        key = jax.random.key(0)
    raw, matrix = _compiled(obj, settings)(theta, data, key, extra)
    diag, counts = clean_diagonal(raw, floor=float(floor), prior_precision=prior_precision, negative=negative)
    counts = {k: (int(v) if k.startswith("num_") else float(v)) for k, v in jax.device_get(counts).items()}
    if counts["num_nonfinite"] == dim:
        raise ValueError(
            f"every entry of the {method} curvature is non-finite at θ (is the loss finite there?)"
        )
    if previous is not None and ema > 0:
        if previous.dim != dim:
            raise ValueError(f"previous curvature has dim {previous.dim}, expected {dim}")
        diag = ema * jnp.asarray(previous.diag, diag.dtype) + (1 - ema) * diag
        cost += 0  # the previous estimate's cost was paid when it was made
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
        matrix = 0.5 * (matrix + matrix.T)
    return Curvature(diag=diag, matrix=matrix, method=method, num_grad_evals=int(cost), config=config)


def _jsonable(x: Any) -> Any:
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else "array"


def blend_curvature(a: Curvature, b: Curvature, weight: float = 0.5) -> Curvature:
    """``weight · a + (1 − weight) · b`` (diagonals, and matrices when both have one); costs add."""
    if not (isinstance(weight, (int, float)) and 0 <= weight <= 1):
        raise ValueError(f"weight must be in [0, 1], got {weight!r}")
    if a.dim != b.dim:
        raise ValueError(f"cannot blend curvatures of dims {a.dim} and {b.dim}")
    diag = weight * jnp.asarray(a.diag) + (1 - weight) * jnp.asarray(b.diag)
    matrix = None
    if a.matrix is not None and b.matrix is not None:
        matrix = weight * jnp.asarray(a.matrix) + (1 - weight) * jnp.asarray(b.matrix)
    return Curvature(
        diag=diag,
        matrix=matrix,
        method="blend",
        num_grad_evals=a.num_grad_evals + b.num_grad_evals,
        config={"weight": float(weight), "a": a.describe(), "b": b.describe()},
    )
