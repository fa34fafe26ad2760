r"""The pieces of gnomon's gradient methods as optax transformations.

``gn.optimize(method="preconditioned_gd")`` runs exactly

.. code-block:: python

    tx = gn.optim.nonmonotone_backtracking(
        optax.chain(gn.optim.scale_by_curvature(estimator), gn.optim.scale_by_bb()), window=10)

(:mod:`gnomon.optim.methods` builds it), and the same chain assembled by hand gives the same trace. Each
piece is a function returning an optax ``GradientTransformationExtraArgs`` with a NamedTuple state:

:func:`scale_by_curvature`
    :math:`g ↦ -\mathrm{clip}(η_t · P,\ \mathrm{lr\_min},\ \mathrm{lr\_max}) ⊙ g`,
    :math:`P = s ⊙ (c + \mathrm{eps})^{-p}`, c a curvature diagonal estimated at θ_0 in ``init`` (and
    every K accepted updates, smoothed by an EMA), η_t the learning rate (or schedule), optionally bounded
    by :math:`1/λ_\max(P^{1/2} ∇^2 f P^{1/2})`.
:func:`scale_by_bb`
    multiplies the step it receives by the Barzilai–Borwein step length in that step's own metric.
:func:`nonmonotone_backtracking`
    a wrapper: rejects a point whose loss rose above the last M accepted losses and steps back along the
    last step, else lets the inner transformation step (it never sees a rejected point).
:func:`precondition_by_curvature`
    a wrapper: runs an inner transformation (L-BFGS) in the coordinates :math:`u = c^{1/2} ⊙ θ`.

State conventions read by gnomon's optimizer loop (so that hand-assembled chains record the same channels):
the ``learning_rate`` channel is the product of the scalar state fields named ``learning_rate``, the
``accepted`` channel the field ``accepted``, and fields named ``num_grad_evals`` count the gradient
evaluations a transformation spent itself (cumulative since ``init``).

Gradient transformations that estimate curvature need the objective (and its data) at ``init``; they take
them through their factory (``objective=``/``data=`` or a :class:`~gnomon.optim.CurvatureEstimator`). The
loop passes ``value`` (the loss at ``params``), ``grad``, ``value_fn`` and ``data`` as extra arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.curvature.estimate import Curvature, default_power
from gnomon.objective.objective import Objective
from gnomon.optim.estimator import CurvatureEstimator, curvature_estimator
from gnomon.optim.precondition import (
    block_scales,
    check_bounds,
    lambda_max_bound,
    learning_rate_vector,
    preconditioner_shape,
)

ARMIJO = 1e-4  # sufficient-decrease constant c of the backtracking test
BB_CLAMP = (1e-6, 1e6)  # range of the Barzilai–Borwein multiplier α
BACKTRACK_CLIP = (0.1, 0.5)  # range of the interpolated return fraction t*
_UNSET = object()


# ---------------------------------------------------------------------------------------- scale_by_curvature
class ScaleByCurvatureState(NamedTuple):
    """State of :func:`scale_by_curvature` (arrays only, so it vmaps and converts to numpy)."""

    count: jnp.ndarray  # updates applied
    diag: jnp.ndarray  # curvature diagonal c in use
    shape: jnp.ndarray  # P = s ⊙ (c + eps)^(-p)
    base: jnp.ndarray  # η_0: the learning rate after the λ_max bound (1 × schedule when one is given)
    learning_rate: jnp.ndarray  # η used by the last update (η_0 × schedule(count)); η_0 before any update
    lr_bounds: jnp.ndarray  # (lr_min, lr_max); 0 and ∞ when open
    lambda_max: jnp.ndarray  # λ_max(P^½ H P^½) at the last estimate (NaN without the bound)
    key: jnp.ndarray  # raw PRNG key data for refreshes
    num_grad_evals: jnp.ndarray  # gradient evaluations spent on estimates (cumulative, init included)
    counts: jnp.ndarray  # (3,) non-finite, negative, floored entries of the initial estimate
    diag0: jnp.ndarray  # c at θ_0
    lr_vec0: jnp.ndarray  # learning-rate vector of the first update


def scale_by_curvature(
    curvature: Any,
    learning_rate: float | Callable = 1.0,
    *,
    objective: Objective | None = None,
    data: Any = _UNSET,
    initial: Any = None,
    power: float | None = None,
    eps: float = 0.0,
    lr_min: float | None = None,
    lr_max: float | None = None,
    layout: Any = None,
    block_scale: Mapping[str, float] | None = None,
    refresh_every: int | None = None,
    ema: float = 0.0,
    lambda_max_iters: int | None = None,
    key: Any = None,
    flip_sign: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Per-index learning rates from a curvature: :math:`g ↦ -\mathrm{lr}_t ⊙ g`,

    .. math:: \mathrm{lr}_t = \mathrm{clip}(η_t · P,\ \mathrm{lr\_min},\ \mathrm{lr\_max}),\qquad
       P = s ⊙ (c + \mathrm{eps})^{-p},\qquad η_t = η_0 · \mathrm{schedule}(t)

    (:func:`gnomon.optim.precondition.learning_rate_vector`). c is the curvature diagonal, p its power
    (1 for Hessian/Gauss–Newton/Fisher diagonals, where η = 1 is the diagonal Newton step; ½ for g²
    statistics), s per-block multipliers (``block_scale`` over the ``layout``'s parameters or groups).

    ``curvature`` is either fixed (a :class:`gnomon.Curvature`, a (D,) array or a scalar) or estimated: a
    :class:`~gnomon.optim.CurvatureEstimator` or a method name with ``objective=``. An estimate is taken at
    θ_0 by ``init`` (inside the compiled program; ``initial=`` starts from a given diagonal instead) and,
    with ``refresh_every = K``, again every K updates at the current parameters, smoothed as
    :math:`c ← \mathrm{ema} · c + (1 - \mathrm{ema}) · c_\mathrm{new}` (variance-reduced Hutchinson then
    restarts from c). Data: ``data=`` (default the estimator's or objective's bound data) at ``init``, the
    ``data`` extra argument of ``update`` at refreshes. Non-finite entries of an estimate cannot fall back inside
    a compiled program: at ``init`` they become the largest finite entry (:func:`finite_diagonal`; all of them:
    the identity), at a refresh they keep the entry in use; the counts report them (``gn.optimize`` estimates
    c at θ_0 on the host instead, with the fallbacks of :mod:`gnomon.curvature.choice`).

    ``lambda_max_iters = n`` bounds :math:`η_0 = \min(\text{learning\_rate}, 1/λ_\max(P^{1/2} ∇^2 f P^{1/2}))`
    at θ_0 and at each refresh (n power iterations on Hessian-vector products, 2n gradient evaluations);
    :math:`\text{learning\_rate} = ∞` gives :math:`η_0 = 1/λ_\max`. ``learning_rate`` may be an optax
    schedule of the update count, multiplying :math:`η_0 = \min(1, 1/λ_\max)` (1 without the bound).

    ``flip_sign=False`` returns :math:`+\mathrm{lr}_t ⊙ g`. The cost of the estimates is counted in the
    state's ``num_grad_evals``; the learning rate η_t in ``learning_rate``.
    """
    estimator, fixed, method = _resolve_curvature(curvature, objective)
    p = default_power(method) if power is None else power
    if isinstance(p, bool) or not (isinstance(p, (int, float)) and p > 0):
        raise ValueError(f"power must be a positive number (1 for Hessian-like, 0.5 for g²), got {p!r}")
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    check_bounds(lr_min, lr_max)
    schedule = learning_rate if callable(learning_rate) else None
    if schedule is None and (
        isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0
    ):
        raise ValueError(f"learning_rate must be a positive number or an optax schedule, got {learning_rate!r}")
    base_lr = 1.0 if schedule is not None else float(learning_rate)
    _check_int("refresh_every", refresh_every)
    _check_int("lambda_max_iters", lambda_max_iters)
    if refresh_every is not None and estimator is None:
        raise ValueError("refresh_every needs a curvature to re-estimate (a method name or a CurvatureEstimator)")
    if isinstance(ema, bool) or not (isinstance(ema, (int, float)) and 0 <= ema < 1):
        raise ValueError(f"ema must be in [0, 1), got {ema!r}")
    if initial is not None and estimator is None:
        raise ValueError("initial= is a starting diagonal for an estimated curvature; give the curvature itself")
    if initial is not None:
        _, initial, _ = _resolve_curvature(initial, None)
    obj = estimator.objective if estimator is not None else objective
    if lambda_max_iters is not None and obj is None:
        raise ValueError("the λ_max bound (lambda_max_iters) needs objective= (or a CurvatureEstimator)")
    if data is _UNSET:
        data = estimator.data if estimator is not None else (obj.data if obj is not None else None)
    scales = None
    if block_scale:
        n = _fixed_dim(fixed) if estimator is None else (obj.dim if obj is not None else None)
        if n is None:
            raise ValueError("block_scale needs the dimension: give a (D,) curvature or an objective")
        scales = block_scales(n, layout, block_scale)
    lo = 0.0 if lr_min is None else float(lr_min)
    hi = np.inf if lr_max is None else float(lr_max)
    key0 = jax.random.key(0) if key is None else key
    sign = -1.0 if flip_sign else 1.0
    iters = lambda_max_iters
    est_cost = estimator.cost if estimator is not None else 0

    def make_shape(diag):
        return preconditioner_shape(diag, p, eps, 1.0 if scales is None else scales)

    def eta_at(base, count):
        return base * schedule(count) if schedule is not None else base

    def bound(theta, data, shape, k):
        if iters is None:
            return jnp.asarray(base_lr, theta.dtype), jnp.full((), jnp.nan, theta.dtype)
        return lambda_max_bound(lambda th: obj.loss(th, data), theta, shape, base_lr, num_iters=iters, key=k)

    def init_fn(params):
        params = jnp.asarray(params)
        dt = params.dtype
        if estimator is not None or iters is not None:
            k0, k1, k2 = jax.random.split(key0, 3)
        else:  # nothing random to estimate: no PRNG in the program (each split is code to compile)
            k0 = k1 = k2 = key0
        cost = 0
        if estimator is not None and initial is None:
            diag, counts = estimator.estimate(params, data, k0, None)
            diag = finite_diagonal(diag)
            cost += est_cost
        else:
            diag = _broadcast(fixed if estimator is None else initial, params)
            counts = jnp.zeros((3,), jnp.int32)
        diag = diag.astype(dt)
        shape = make_shape(diag)
        base, lam = bound(params, data, shape, k1)
        cost += 0 if iters is None else 2 * iters
        eta0 = eta_at(base, 0)
        bounds = jnp.asarray([lo, hi], dt)
        return ScaleByCurvatureState(
            count=jnp.zeros((), jnp.int32),
            diag=diag,
            shape=shape,
            base=base,
            learning_rate=jnp.asarray(eta0, dt),
            lr_bounds=bounds,
            lambda_max=lam,
            key=jax.random.key_data(k2),
            num_grad_evals=jnp.asarray(cost, jnp.int32),
            counts=counts,
            diag0=diag,
            lr_vec0=_lr_vec(eta0, shape, bounds),
        )

    def update_fn(updates, state, params=None, **extra):
        if refresh_every is not None:
            if params is None:
                raise ValueError("scale_by_curvature with refresh_every needs params in update()")
            d = extra.get("data", data)

            def refresh(st):
                k, k0, k1 = jax.random.split(jax.random.wrap_key_data(st.key), 3)
                new, _ = estimator.estimate(params, d, k0, st.diag)
                new = jnp.where(jnp.isfinite(new), new, st.diag)  # a non-finite entry keeps the one in use
                diag = (ema * st.diag + (1 - ema) * new).astype(st.diag.dtype)
                shape = make_shape(diag)
                base, lam = bound(params, d, shape, k1)
                cost = est_cost + (0 if iters is None else 2 * iters)
                return st._replace(diag=diag, shape=shape, base=base, lambda_max=lam, key=jax.random.key_data(k),
                                   num_grad_evals=st.num_grad_evals + cost)

            due = (state.count > 0) & (state.count % refresh_every == 0)
            state = jax.lax.cond(due, refresh, lambda st: st, state)
        eta = jnp.asarray(eta_at(state.base, state.count), state.learning_rate.dtype)
        out = (sign * _lr_vec(eta, state.shape, state.lr_bounds) * updates).astype(updates.dtype)
        return out, state._replace(count=state.count + 1, learning_rate=eta)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def learning_rate_of(state: ScaleByCurvatureState) -> jnp.ndarray:
    """The learning-rate vector the last update of a :func:`scale_by_curvature` state applied (its ``η`` times
    P, clipped)."""
    return _lr_vec(state.learning_rate, state.shape, state.lr_bounds)


def _lr_vec(eta, shape, bounds):
    lo, hi = bounds[0], bounds[1]
    return learning_rate_vector(eta, shape, lo, hi)


def finite_diagonal(diag: Any) -> jnp.ndarray:
    """An estimate's non-finite entries replaced by its largest finite one (the smallest learning rate), or by
    1 (the identity) when none is finite — inside the compiled program an estimate cannot raise, and a NaN
    preconditioner would turn the first step into NaN. The estimate's counts still report them."""
    ok = jnp.isfinite(diag)
    big = jnp.max(jnp.where(ok, diag, -jnp.inf))
    return jnp.where(ok, diag, jnp.where(jnp.any(ok), big, jnp.ones_like(diag)))


def _broadcast(diag: Any, params: Any) -> jnp.ndarray:
    d = jnp.asarray(diag, params.dtype)
    if d.ndim and d.shape != params.shape:
        raise ValueError(f"params have shape {tuple(params.shape)} but the curvature has shape {tuple(d.shape)}")
    return jnp.broadcast_to(d, params.shape)


def _check_int(name: str, v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
        raise ValueError(f"{name} must be a positive int or None, got {v!r}")


def _fixed_dim(fixed: Any) -> int | None:
    return None if np.ndim(fixed) == 0 else int(np.shape(fixed)[-1])


def _resolve_curvature(curvature: Any, objective: Objective | None) -> tuple[CurvatureEstimator | None, Any, str]:
    """(estimator, fixed diagonal, method name) of a ``curvature`` argument."""
    if isinstance(curvature, CurvatureEstimator):
        return curvature, None, curvature.method
    if isinstance(curvature, str):
        if objective is None:
            raise ValueError(f"curvature={curvature!r} is a method to estimate: pass objective= as well")
        est = curvature_estimator(objective, curvature)
        return est, None, est.method
    if isinstance(curvature, Curvature):
        d, method = curvature.diag, curvature.method
    else:
        d, method = curvature, "user"
    if isinstance(d, jax.core.Tracer):
        return None, d, method
    arr = np.asarray(d)
    if arr.ndim > 1 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"curvature must be a Curvature, a vector (D,), a scalar or an estimator, got {curvature!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        finite = np.isfinite(arr)
        low = float(arr[finite].min()) if finite.any() else None
        raise ValueError(
            f"a given curvature must be finite and positive (min finite {low!r}, {int(np.sum(~finite))} non-finite)"
        )
    return None, jnp.asarray(d), method


# --------------------------------------------------------------------------------------------- scale_by_bb
class ScaleByBBState(NamedTuple):
    """State of :func:`scale_by_bb`."""

    count: jnp.ndarray  # updates seen
    learning_rate: jnp.ndarray  # α: the multiplier of the received step used by the last update
    fresh: jnp.ndarray  # the last update computed a new α from a usable secant pair
    params: jnp.ndarray  # θ at the last update
    grad: jnp.ndarray  # ∇f at the last update
    direction: jnp.ndarray  # the step received at the last update


def scale_by_bb(*, clamp: tuple[float, float] = BB_CLAMP) -> optax.GradientTransformationExtraArgs:
    r"""Barzilai–Borwein step lengths in the metric of the step it is given.

    It receives a descent step :math:`d_t = -M g_t` (e.g. from :func:`scale_by_curvature`: M = lr ⊙) and
    returns :math:`α_t d_t`. With :math:`s = θ_t - θ_{t-1}` and :math:`y = g_t - g_{t-1}` (the ``grad``
    extra argument) the BB step in the metric :math:`M^{-1}` is

    .. math:: α_t = \frac{s^T M^{-1} s}{s^T y}, \qquad s^T M^{-1} s = -τ^2\, d_{t-1}^T g_{t-1},
       \quad τ = \frac{s^T d_{t-1}}{d_{t-1}^T d_{t-1}},

    since every step is a multiple :math:`s = τ d_{t-1}` of the step received (so M itself is never needed):
    a scalar secant estimate of the curvature that M leaves, at no extra evaluation. α is kept when
    :math:`s^T y ≤ 0` (or before the first pair) and clamped to ``clamp``; the first step is :math:`d_0`.
    ``fresh`` in the state says whether α was renewed (:func:`nonmonotone_backtracking` then resets its
    shrink factor). Wrapped in :func:`nonmonotone_backtracking` it sees accepted points only.
    """
    lo, hi = clamp

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
        sms = -(tau * tau) * jnp.vdot(dprev, state.grad)
        sy = jnp.vdot(s, y)
        cand = sms / jnp.where(sy > 0, sy, 1.0)
        ok = (state.count > 0) & (sy > 0) & jnp.isfinite(cand) & (cand > 0)
        alpha = jnp.where(ok, jnp.clip(cand, lo, hi), state.learning_rate).astype(state.learning_rate.dtype)
        out = (alpha * updates).astype(updates.dtype)
        return out, ScaleByBBState(state.count + 1, alpha, ok, params, grad.astype(state.grad.dtype), updates)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# -------------------------------------------------------------------------------- nonmonotone_backtracking
class BacktrackingState(NamedTuple):
    """State of :func:`nonmonotone_backtracking`."""

    learning_rate: jnp.ndarray  # shrink factor applied to the inner steps (1, t*, t*², ...)
    accepted: jnp.ndarray  # whether the point of the last update was accepted
    pending: jnp.ndarray  # u: the current point is θ_a + u
    grad: jnp.ndarray  # ∇f(θ_a)
    value: jnp.ndarray  # f(θ_a)
    recent: jnp.ndarray  # (M,) last M accepted losses (−∞: empty)
    num_accepted: jnp.ndarray
    num_backtracks: jnp.ndarray
    inner_state: Any


def nonmonotone_backtracking(inner: optax.GradientTransformation, *, window: int = 10
                             ) -> optax.GradientTransformationExtraArgs:
    r"""Non-monotone Armijo backtracking around ``inner``, free of extra evaluations.

    The loop evaluates the loss at every point anyway (the ``value`` extra argument), so the test costs
    nothing: the point :math:`θ_a + u` reached by the last step u from the last accepted point θ_a is
    rejected when

    .. math:: f(θ_a + u) > \max(\text{last } M \text{ accepted losses}) + c\, u^T ∇f(θ_a)

    (c = :data:`ARMIJO`, M = ``window``; M = 1 is monotone; NaN counts as a rise), unless its loss is within
    :math:`\sqrt{ε}\max(|f(θ_a)|, 1)` of :math:`f(θ_a)` and its gradient is smaller — near an optimum the test
    compares rounding errors (a sum of many terms is not resolved to ε), and the gradient still says which point is
    better (after the approximate Armijo condition of Hager and Zhang). A rejected point stays in
    the trace as its own row; the next update returns along u to :math:`θ_a + t^* u`, :math:`t^*` the
    minimiser of the quadratic :math:`φ(t) = f_a + t\,φ'(0) + t^2 (f - f_a - φ'(0))` through :math:`f_a`, the
    slope :math:`φ'(0) = u^T ∇f(θ_a)` and the rejected value f, clipped to :data:`BACKTRACK_CLIP` (½ when φ is
    not convex), and the shrink factor (``learning_rate`` in the state) is multiplied by :math:`t^*`.

    At an accepted point ``inner`` makes the step (times the shrink factor); it never sees a rejected point,
    so a Barzilai–Borwein secant pair or a curvature refresh is always taken between accepted points. The
    factor persists (monotone shrinking for fixed steps) until the inner state reports a fresh step length
    (a field ``fresh``, as :func:`scale_by_bb` has), which resets it to 1. Needs the ``value`` extra argument
    (and uses ``grad`` when given, else the incoming updates, as ∇f).
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        dt = params.dtype
        z = jnp.zeros_like(params)
        return BacktrackingState(
            learning_rate=jnp.ones((), dt), accepted=jnp.ones((), bool), pending=z, grad=z,
            value=jnp.full((), jnp.inf, dt), recent=jnp.full((window,), -jnp.inf, dt),
            num_accepted=jnp.zeros((), jnp.int32), num_backtracks=jnp.zeros((), jnp.int32),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra):
        if value is None:
            raise ValueError("nonmonotone_backtracking needs the loss at params (the value= extra argument)")
        g = extra.get("grad", updates)
        dt = state.value.dtype
        slope = jnp.vdot(state.pending, state.grad)  # φ'(0): directional derivative along u at θ_a
        ref = jnp.max(state.recent)
        # where the loss equals the accepted one to working precision the Armijo test is rounding noise: a point
        # whose gradient is smaller is accepted (the approximate Armijo condition of Hager and Zhang)
        noise = jnp.sqrt(jnp.finfo(dt).eps) * jnp.maximum(jnp.abs(state.value), 1.0)
        gnorm = jnp.linalg.norm(g)
        flat = (jnp.abs(value - state.value) <= noise) & (gnorm < jnp.linalg.norm(state.grad))
        rejected = jnp.isfinite(ref) & ~(value <= ref + ARMIJO * slope) & ~flat
        curv2 = value - state.value - slope
        t_star = jnp.clip(-slope / (2 * jnp.where(curv2 > 0, curv2, 1.0)), *BACKTRACK_CLIP)
        t_back = jnp.where((curv2 > 0) & jnp.isfinite(t_star), t_star, 0.5).astype(dt)

        step, inner_new = inner.update(updates, state.inner_state, params, value=value, **extra)
        fresh = optax.tree.get(inner_new, "fresh", default=jnp.zeros((), bool))
        factor = jnp.where(rejected, t_back * state.learning_rate,
                           jnp.where(fresh, jnp.ones((), dt), state.learning_rate)).astype(dt)
        step = (factor * step).astype(updates.dtype)
        back = ((t_back - 1) * state.pending).astype(updates.dtype)
        keep = jax.tree.map(lambda old, new: jnp.where(rejected, old, new), state.inner_state, inner_new)
        slot = state.num_accepted % window
        return jnp.where(rejected, back, step), BacktrackingState(
            learning_rate=factor,
            accepted=~rejected,
            pending=jnp.where(rejected, t_back * state.pending, step),
            grad=jnp.where(rejected, state.grad, g.astype(state.grad.dtype)),
            value=jnp.where(rejected, state.value, value).astype(dt),
            recent=jnp.where(rejected, state.recent, state.recent.at[slot].set(value)),
            num_accepted=state.num_accepted + (~rejected).astype(jnp.int32),
            num_backtracks=state.num_backtracks + rejected.astype(jnp.int32),
            inner_state=keep,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------------ restart_lbfgs
class RestartLBFGSState(NamedTuple):
    """State of :func:`restart_lbfgs`."""

    inner_state: Any  # optax.ScaleByLBFGSState
    fresh: jnp.ndarray  # every update proposes a new step length (nonmonotone_backtracking then resets its factor)
    num_restarts: jnp.ndarray
    proposed: jnp.ndarray  # |step| proposed by the last update
    expand: jnp.ndarray  # the multiplier of the quasi-Newton step (1, 2, 4, ... while the steps are too short)


WOLFE = 0.9  # curvature condition: a full step after which the slope is still below WOLFE × the old one was short
EXPAND_MAX = 2.0**20


def restart_lbfgs(memory_size: int = 10, *, eps: float | None = None) -> optax.GradientTransformation:
    r"""``optax.scale_by_lbfgs`` for a backtracking line search in the loop (``gn.optim.lbfgs``'s default).

    A Wolfe line search (optax's zoom) guarantees what L-BFGS needs; Armijo backtracking does not, so two of its
    parts are kept here, each free of extra evaluations:

    * **curvature pairs**: a pair with :math:`s^T y ≤ ε\,|s|\,|y|` (ε = √machine epsilon) would make the
      inverse-Hessian approximation indefinite; it restarts the memory instead (counted in ``num_restarts``;
      the next step is optax's first one, at most unit length, but at least twice the last step taken: on a
      nearly linear stretch the steps grow);
    * **expansion**: when a full step (not shortened by the backtracking) leaves the slope along it steeper than
      :data:`WOLFE` × the slope before it — the curvature condition fails: the step was too short — the next
      quasi-Newton step is doubled (and so on, up to 2²⁰; back to 1 as soon as the condition holds), as a line
      search's expansion phase would.

    The state's ``fresh`` flag tells :func:`nonmonotone_backtracking` that every step is a new proposal of natural
    length (its shrink factor starts again from 1)."""
    inner = optax.scale_by_lbfgs(memory_size=memory_size)

    def init_fn(params):
        z = jnp.zeros((), params.dtype)
        return RestartLBFGSState(inner.init(params), jnp.ones((), bool), jnp.zeros((), jnp.int32), z,
                                 jnp.ones((), params.dtype))

    def update_fn(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("restart_lbfgs needs params")
        ist = state.inner_state
        started = ist.count > 0
        s = params - ist.params
        y = updates - ist.updates
        size = jnp.where(started, jnp.linalg.norm(s), 0.0).astype(state.proposed.dtype)
        tol = float(np.sqrt(np.finfo(np.dtype(params.dtype)).eps)) if eps is None else eps
        bad = started & ~(jnp.vdot(s, y) > tol * jnp.linalg.norm(s) * jnp.linalg.norm(y))
        full = size >= 0.99 * state.proposed
        short = started & full & (jnp.vdot(s, updates) < WOLFE * jnp.vdot(s, ist.updates))
        expand = jnp.where(short, jnp.minimum(2 * state.expand, EXPAND_MAX), 1.0).astype(state.expand.dtype)
        fresh_state = inner.init(params)
        ist = jax.tree.map(lambda new, old: jnp.where(bad, new, old), fresh_state, ist)
        out, ist = inner.update(updates, ist, params)
        length = jnp.linalg.norm(out)
        safe = jnp.where(length > 0, length, 1.0)
        grow = jnp.where(bad & (length > 0), jnp.maximum(1.0, 2 * size / safe), 1.0) * expand
        out = (grow * out).astype(updates.dtype)
        return out, RestartLBFGSState(ist, jnp.ones((), bool), state.num_restarts + bad.astype(jnp.int32),
                                      (grow * length).astype(state.proposed.dtype), expand)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ------------------------------------------------------------------------------- precondition_by_curvature
class PreconditionState(NamedTuple):
    """State of :func:`precondition_by_curvature`."""

    diag: jnp.ndarray  # curvature diagonal c at θ_0
    scale: jnp.ndarray  # S = c^(-1/2): θ = S ⊙ u
    counts: jnp.ndarray  # (3,) safeguard counts of the estimate
    num_grad_evals: jnp.ndarray  # cost of the estimate
    inner_state: Any


def precondition_by_curvature(
    inner: optax.GradientTransformation,
    curvature: Any,
    *,
    objective: Objective | None = None,
    data: Any = _UNSET,
    key: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Run ``inner`` in the coordinates :math:`u = c^{1/2} ⊙ θ` (θ = S ⊙ u, :math:`S = c^{-1/2}`).

    ``inner`` sees the parameters :math:`S^{-1} ⊙ θ` and the gradient :math:`∇_u f = S ⊙ ∇_θ f`; its update
    :math:`Δu` becomes :math:`S ⊙ Δu`. For L-BFGS this is a diagonal initial inverse Hessian
    :math:`H_0 = \mathrm{diag}(1/c)`: where the curvature diagonal spans orders of magnitude the inverse
    Hessian approximation starts at the right scale in every direction instead of one scalar. ``curvature``
    as in :func:`scale_by_curvature` (fixed, or estimated at θ_0 by ``init``; its cost is counted in
    ``num_grad_evals``). Only ``params`` and the updates are mapped: put line searches (which call
    ``value_fn`` in θ) outside the wrapper.
    """
    estimator, fixed, _ = _resolve_curvature(curvature, objective)
    if data is _UNSET:
        data = estimator.data if estimator is not None else None
    key0 = jax.random.key(0) if key is None else key
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        params = jnp.asarray(params)
        if estimator is not None:
            diag, counts = estimator.estimate(params, data, jax.random.split(key0, 3)[0], None)
            diag = finite_diagonal(diag)
            cost = estimator.cost
        else:
            diag, counts, cost = _broadcast(fixed, params), jnp.zeros((3,), jnp.int32), 0
        diag = diag.astype(params.dtype)
        scale = preconditioner_shape(diag, 0.5)
        return PreconditionState(diag, scale, counts, jnp.asarray(cost, jnp.int32), inner.init(params / scale))

    def update_fn(updates, state, params=None, **extra):
        s = state.scale
        u_params = None if params is None else params / s
        if extra.get("grad") is not None:
            extra["grad"] = extra["grad"] * s
        if extra.get("value_fn") is not None:
            fn = extra["value_fn"]
            extra["value_fn"] = lambda u, *a, **kw: fn(s * u, *a, **kw)
        step, inner_new = inner.update(updates * s, state.inner_state, u_params, **extra)
        return (s * step).astype(updates.dtype), state._replace(inner_state=inner_new)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
