r"""Step lengths for a preconditioned direction, as optax transformations (each flips the sign, as
``optax.scale_by_learning_rate`` does).

:func:`scale_by_lr_vector`
    a wrapper around a diagonal preconditioner P (:func:`~gnomon.optim.scale_by_curvature`):
    :math:`g ↦ -\mathrm{clip}(η_t P,\ \mathrm{lr\_min},\ \mathrm{lr\_max}) ⊙ g` with the learning rate (or schedule)
    η bounded by :math:`1/λ_\max(P^{1/2} ∇^2 f P^{1/2})` — the step rule that needs P itself;
:func:`scale_by_bb`
    chained after a preconditioner: :math:`d ↦ -α_t d`, the Barzilai–Borwein step length in d's own metric.

A plain learning rate needs neither: ``optax.chain(gn.optim.scale_by_curvature(c),
optax.scale_by_learning_rate(lr))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.objective.objective import Objective
from gnomon.optim.precondition import check_bounds, lambda_max_bound, learning_rate_vector
from gnomon.optim.preconditioners import ScaleByCurvatureState
from gnomon.util.validate import as_key, positive_int

BB_CLAMP = (1e-6, 1e6)  # range of the Barzilai–Borwein multiplier α
_UNSET = object()


# ----------------------------------------------------------------------------------------- scale_by_lr_vector
class LrVectorInfo(NamedTuple):
    """What :func:`scale_by_lr_vector` reports (never read by its ``update``)."""

    learning_rate: Any  # η used by the last update (η_0 × schedule(count)); η_0 before any update
    lambda_max: Any  # λ_max(P^½ H P^½) at the last bound (NaN without the bound)
    num_grad_evals: Any  # gradient evaluations spent on the bound (cumulative, init included)
    lr_vec0: Any  # the learning-rate vector of the first update
    lr_bounds: Any  # (lr_min, lr_max); 0 and ∞ when open


class ScaleByLrVectorState(NamedTuple):
    """State of :func:`scale_by_lr_vector`."""

    count: Any  # updates applied (the schedule's argument)
    base: Any  # η_0: the learning rate after the λ_max bound (1 × schedule when one is given)
    inner_state: Any  # the preconditioner's state (None for P = 1)
    info: LrVectorInfo


def scale_by_lr_vector(
    preconditioner: optax.GradientTransformation | None = None,
    learning_rate: float | Callable = 1.0,
    *,
    lr_min: float | None = None,
    lr_max: float | None = None,
    power_iters: int | None = None,
    objective: Objective | None = None,
    data: Any = _UNSET,
    key: Any = None,
    flip_sign: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""The learning-rate vector of a diagonal preconditioner: :math:`g ↦ -\mathrm{lr}_t ⊙ g`,

    .. math:: \mathrm{lr}_t = \mathrm{clip}(η_t · P,\ \mathrm{lr\_min},\ \mathrm{lr\_max}),\qquad
       η_t = η_0 · \mathrm{schedule}(t),\qquad
       η_0 = \min\big(\text{learning\_rate},\ 1/λ_\max(P^{1/2} ∇^2 f P^{1/2})\big)

    (:func:`gnomon.optim.precondition.learning_rate_vector`), P read from the state of ``preconditioner`` (a
    :func:`~gnomon.optim.scale_by_curvature`, which this wraps: its refreshes are this rule's too; None: P = 1).
    A wrapper, not a link of a chain, because the clip and the bound need P itself, not only P ⊙ g.

    ``power_iters = n`` bounds η_0 at θ_0 and after each refresh of P (n power iterations on Hessian-vector
    products of ``objective``'s loss, 2n gradient evaluations: :func:`gnomon.optim.precondition.lambda_max_bound`;
    a bound that is not finite leaves η_0 = learning_rate, 1 when that is ∞); ``learning_rate = ∞`` with it gives
    :math:`η_0 = 1/λ_\max`. On a convex quadratic :math:`η ≤ 1/λ_\max` makes the step a contraction (Jacobi
    iteration; stability needs :math:`< 2/λ_\max`). ``learning_rate`` may be an optax schedule of the update count,
    multiplying :math:`η_0 = \min(1, 1/λ_\max)` (1 without the bound). ``data``: the loss's data for the bound
    (default the objective's; the ``data`` extra argument of ``update`` at refreshes). ``key``: the power
    iteration's start at θ_0 (give the preconditioner's key: refreshes draw from its stream).
    ``flip_sign=False`` returns :math:`+\mathrm{lr}_t ⊙ g` (for :func:`scale_by_bb` chained after it).
    Parameters are one array.
    """
    schedule = learning_rate if callable(learning_rate) else None
    if schedule is None and (isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float))
                             or not learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number or an optax schedule, got {learning_rate!r}")
    base_lr = 1.0 if schedule is not None else float(learning_rate)
    check_bounds(lr_min, lr_max)
    iters = None if power_iters is None else positive_int(power_iters, "power_iters")
    if iters is None and not np.isfinite(base_lr):
        raise ValueError("learning_rate=inf means η_0 = 1/λ_max: it needs the bound (power_iters=n, objective=obj)")
    if iters is not None and objective is None:
        raise ValueError("the λ_max bound (power_iters) needs objective= (its loss's Hessian-vector products)")
    if data is _UNSET:
        data = objective.data if objective is not None else None
    inner = None if preconditioner is None else optax.with_extra_args_support(preconditioner)
    sign = -1.0 if flip_sign else 1.0
    lo = 0.0 if lr_min is None else float(lr_min)
    hi = np.inf if lr_max is None else float(lr_max)
    key0 = as_key(key, optional=True)

    def eta_at(base, count):
        return base * schedule(count) if schedule is not None else base

    def bound(theta, d, shape, k):
        return lambda_max_bound(lambda th: objective.loss(th, d), theta, shape, base_lr, num_iters=iters, key=k)

    def init_fn(params):
        params = jnp.asarray(params)
        dt = params.dtype
        inner_state = None if inner is None else inner.init(params)
        shape = preconditioner_of(inner_state, params)
        if iters is None:
            base, lam, cost = jnp.asarray(base_lr, dt), jnp.full((), jnp.nan, dt), 0
        else:
            (base, lam), cost = bound(params, data, shape, jax.random.split(key0, 3)[1]), 2 * iters
        eta0 = jnp.asarray(eta_at(base, 0), dt)
        bounds = jnp.asarray([lo, hi], dt)
        info = LrVectorInfo(eta0, lam, jnp.asarray(cost, jnp.int32), _lr_vec(eta0, shape, bounds), bounds)
        return ScaleByLrVectorState(jnp.zeros((), jnp.int32), base, inner_state, info)

    def update_fn(updates, state, params=None, **extra):
        inner_state, base, info = state.inner_state, state.base, state.info
        if inner is not None:
            _, inner_state = inner.update(updates, state.inner_state, params, **extra)
            if iters is not None and refreshes(state.inner_state):
                base, lam, spent = _rebound(state, inner_state, params, extra.get("data", data), bound, iters)
                info = info._replace(lambda_max=lam, num_grad_evals=spent)
        shape = preconditioner_of(inner_state, updates)
        eta = jnp.asarray(eta_at(base, state.count), info.learning_rate.dtype)
        out = (sign * _lr_vec(eta, shape, info.lr_bounds) * updates).astype(updates.dtype)
        return out, ScaleByLrVectorState(state.count + 1, base, inner_state, info._replace(learning_rate=eta))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _rebound(state: ScaleByLrVectorState, inner_state: ScaleByCurvatureState, params: Any, data: Any,
             bound: Callable, iters: int) -> tuple[Any, Any, Any]:
    """η_0, λ_max and the cost after an update that may have refreshed P: the bound again when it did (a refresh
    draws a new key; the bound takes the third of the keys the refresh split)."""
    if params is None:
        raise ValueError("scale_by_lr_vector with the λ_max bound needs params in update() when P is refreshed")
    old = state.inner_state.key
    refreshed = jnp.any(inner_state.key != old)

    def again(_):
        return bound(params, data, inner_state.shape, jax.random.split(jax.random.wrap_key_data(old), 3)[2])

    base, lam = jax.lax.cond(refreshed, again, lambda _: (state.base, state.info.lambda_max), None)
    spent = state.info.num_grad_evals + jnp.where(refreshed, 2 * iters, 0).astype(jnp.int32)
    return base, lam, spent


def preconditioner_of(inner_state: Any, like: Any) -> Any:
    """P of a preconditioner's state (:class:`~gnomon.optim.ScaleByCurvatureState`), 1 for none."""
    if inner_state is None:
        return jnp.ones_like(like)
    if isinstance(inner_state, ScaleByCurvatureState):
        return inner_state.shape
    raise ValueError("scale_by_lr_vector wraps a diagonal preconditioner (gn.optim.scale_by_curvature) or None, got "
                     f"a transformation whose state is {type(inner_state).__name__}")


def refreshes(inner_state: Any) -> bool:
    """Whether a preconditioner's state can be refreshed (P may change between updates)."""
    return isinstance(inner_state, ScaleByCurvatureState) and inner_state.key is not None


def learning_rate_of(state: ScaleByLrVectorState) -> Any:
    """The learning-rate vector the last update of a :func:`scale_by_lr_vector` state applied (numpy in, numpy
    out; a batched state's leading axis broadcasts)."""
    eta = np.asarray(state.info.learning_rate)
    inner = state.inner_state
    vec0 = np.asarray(state.info.lr_vec0)
    shape = np.ones(vec0.shape, vec0.dtype) if inner is None else np.asarray(preconditioner_of(inner, None))
    bounds = np.asarray(state.info.lr_bounds)
    lo, hi = bounds[..., 0], bounds[..., 1]
    return np.clip(eta[..., None] * shape, lo[..., None], hi[..., None])


def _lr_vec(eta, shape, bounds):
    return learning_rate_vector(eta, shape, bounds[0], bounds[1])


# --------------------------------------------------------------------------------------------- scale_by_bb
class ScaleByBBState(NamedTuple):
    """State of :func:`scale_by_bb`."""

    count: jnp.ndarray  # updates seen
    learning_rate: jnp.ndarray  # α: the multiplier of the received step used by the last update
    fresh: jnp.ndarray  # the last update computed a new α from a usable secant pair
    params: jnp.ndarray  # θ at the last update
    grad: jnp.ndarray  # ∇f at the last update
    direction: jnp.ndarray  # the step received at the last update


def scale_by_bb(*, clamp: tuple[float, float] = BB_CLAMP, flip_sign: bool = True
                ) -> optax.GradientTransformationExtraArgs:
    r"""Barzilai–Borwein step lengths in the metric of the direction it is given: :math:`d_t ↦ -α_t d_t`.

    It receives a preconditioned gradient :math:`d_t = M g_t` (e.g. from :func:`~gnomon.optim.scale_by_curvature`,
    M = P) and, like ``optax.scale_by_learning_rate``, returns the descent step :math:`-α_t d_t`. With
    :math:`s = θ_t - θ_{t-1}` and :math:`y = g_t - g_{t-1}` (the ``grad`` extra argument) the BB step in the
    metric :math:`M^{-1}` (Barzilai & Borwein 1988, "Two-point step size gradient methods") is

    .. math:: α_t = \frac{s^T M^{-1} s}{s^T y}, \qquad s^T M^{-1} s = τ^2\, d_{t-1}^T g_{t-1},
       \quad τ = \frac{s^T d_{t-1}}{d_{t-1}^T d_{t-1}},

    since every step is a multiple :math:`s = τ d_{t-1}` of the direction received (so M itself is never needed):
    a scalar secant estimate of the curvature that M leaves, at no extra evaluation. α is kept when
    :math:`s^T y ≤ 0` (or before the first pair) and clamped to ``clamp``; the first step is :math:`-d_0`.
    ``fresh`` in the state says whether α was renewed (:func:`~gnomon.optim.nonmonotone_backtracking` then resets
    its shrink factor). Wrapped in it, it sees accepted points only. ``flip_sign=False``: it receives a descent
    step :math:`d_t = -M g_t` instead and returns :math:`+α_t d_t`.
    """
    lo, hi = clamp
    m = -1.0 if flip_sign else 1.0

    def init_fn(params):
        z = jnp.zeros_like(params)
        return ScaleByBBState(jnp.zeros((), jnp.int32), jnp.ones((), params.dtype), jnp.zeros((), bool), z, z, z)

    def update_fn(updates, state, params=None, *, grad=None, **extra):
        if params is None or grad is None:
            raise ValueError("scale_by_bb needs params and the raw gradient (the grad= extra argument)")
        s = params - state.params
        y = grad - state.grad
        dprev = state.direction
        tau = jnp.vdot(s, dprev) / jnp.where(state.count > 0, jnp.vdot(dprev, dprev), 1.0)
        sms = (-m * (tau * tau)) * jnp.vdot(dprev, state.grad)  # s^T M^-1 s (d = -m M g)
        sy = jnp.vdot(s, y)
        cand = sms / jnp.where(sy > 0, sy, 1.0)
        ok = (state.count > 0) & (sy > 0) & jnp.isfinite(cand) & (cand > 0)
        alpha = jnp.where(ok, jnp.clip(cand, lo, hi), state.learning_rate).astype(state.learning_rate.dtype)
        out = (m * alpha * updates).astype(updates.dtype)
        return out, ScaleByBBState(state.count + 1, alpha, ok, params, grad.astype(state.grad.dtype), updates)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
