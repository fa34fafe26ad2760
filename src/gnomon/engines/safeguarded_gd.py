r"""The safeguarded, preconditioned gradient-descent transformation behind ``gd``, ``sgd`` and ``preconditioned_gd``.

One optax ``GradientTransformationExtraArgs`` (run by :mod:`gnomon.engines.loop`, which passes the loss
``value`` at the current point, θ and data):

.. math:: θ_{t+1} = θ_t - λ_t ⊙ ∇f(θ_t), \qquad
   λ_t = \operatorname{clip}(η_t · s ⊙ (c + \text{eps})^{-p},\ \text{lr\_min},\ \text{lr\_max}),

c the curvature diagonal (:mod:`gnomon.engines.curvature_choice`; c = 1, p = 1 for ``gd``/``sgd``), p its
power, s the per-block multipliers (``block_scale``); :math:`P = s ⊙ (c + \text{eps})^{-p}` is the
preconditioner. The scalar :math:`η_t = η_0 · α · \text{factor}` comes from the step-size rules of
:mod:`gnomon.engines.stepsize` (λ_max bound, Barzilai–Borwein steps, nonmonotone backtracking: the update
after a rejected point returns along the step instead).

c is estimated at θ_0 inside the compiled (possibly vmapped) program by ``init_state`` and, with
``refresh_every = K``, re-estimated every K steps and smoothed, :math:`c ← \text{ema} · c + (1 - \text{ema})
· c_\text{new}` (variance-reduced Hutchinson restarts from the current c). Each estimate costs the estimator's
gradient evaluations plus 2 per power iteration of the λ_max bound; refresh costs are reported through the
state (``num_grad_evals``) and counted by the loop. Heavy-ball/Nesterov momentum chains ``optax.trace`` after
the transformation (fixed steps, no backtracking).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.curvature.estimate import clean_diagonal, curvature_fn
from gnomon.engines.curvature_choice import CurvatureSource
from gnomon.engines.loop import Built
from gnomon.engines.stepsize import StepRules, backtrack_test, barzilai_borwein, lambda_max_bound
from gnomon.objective.objective import Objective


class PrecondState(NamedTuple):
    """State of the preconditioned-GD transformation (all arrays, so it vmaps)."""

    count: Any
    diag: Any  # curvature in use
    diag0: Any  # curvature at θ0
    shape: Any  # P = s ⊙ (c + eps)^(-p)
    base: Any  # η0 after the λ_max bound
    lam: Any  # λ_max estimate at the last (re)estimation (nan without the bound)
    alpha: Any  # step multiplier: 1 (fixed) or the Barzilai–Borwein η_BB / η0
    factor: Any  # backtracking factor (1, ½, ¼, ...)
    prev_update: Any  # u: θ_now = θ_accepted + u
    prev_grad: Any  # ∇f(θ_accepted)
    prev_value: Any  # f(θ_accepted)
    recent: Any  # (M,) losses of the last M accepted points (−inf = empty)
    num_accepted: Any
    key: Any  # raw key data (uint32), so that the state converts to numpy
    num_grad_evals: Any  # curvature + power-iteration cost since init (not counting init)
    num_backtracks: Any
    counts: Any  # (num_nonfinite, num_negative, num_floored) of the initial estimate
    lr0: Any  # learning-rate vector at θ0


def safeguarded_transform(
    obj: Objective,
    curv: CurvatureSource,
    *,
    base_lr: float | Callable,
    power: float,
    eps: float,
    lr_min: float | None,
    lr_max: float | None,
    scales: np.ndarray,
    bound: bool,
    backtrack: bool,
    bb: bool,
    window: int,
    refresh_every: int | None,
    ema: float,
    power_iters: int,
    key: Any,
):
    r"""``(tx, init_state, lr_scalar, lr_vector)`` for preconditioned GD (identity curvature = plain GD).

    Update from an accepted point: :math:`u = -η\, P ∇f`, :math:`η = η_0 · α · \text{factor}` (a callable
    ``base_lr`` is a schedule multiplying η_0 = 1). ``bound``, ``bb`` and ``backtrack`` switch the rules of
    :mod:`gnomon.engines.stepsize` (``window`` = M of the backtracking test). A rejected point's update is
    :math:`(t^* - 1)\, u`, back to :math:`θ_a + t^* u`, which then counts as the pending step."""
    cfn = curvature_fn(obj, curv.settings) if curv.settings is not None else None
    is_vr_hutch = cfn is not None and curv.settings.is_variance_reduced_hutchinson
    schedule = base_lr if callable(base_lr) else None
    base0 = 1.0 if callable(base_lr) else float(base_lr)

    def estimate(theta, data, k, previous, at_init):
        if curv.source == "identity":
            return jnp.ones_like(theta), jnp.zeros((3,), jnp.int32)
        if curv.source == "given" or (curv.source == "given_then_estimate" and at_init):
            return jnp.asarray(curv.given, theta.dtype), jnp.zeros((3,), jnp.int32)
        raw, _ = cfn(theta, data, k, previous if (is_vr_hutch and previous is not None) else None)
        d, c = clean_diagonal(
            raw.astype(theta.dtype),
            floor=curv.floor,
            prior_precision=curv.prior_precision,
            negative=curv.negative,
        )
        return d, jnp.stack([c["num_nonfinite"], c["num_negative"], c["num_floored"]]).astype(jnp.int32)

    def make_shape(diag):
        return jnp.asarray(scales, diag.dtype) * (diag + eps) ** (-power)

    def bound_base(theta, data, shape, k):
        if not bound:
            return jnp.asarray(base0, theta.dtype), jnp.asarray(jnp.nan, theta.dtype)
        return lambda_max_bound(lambda th: obj.loss(th, data), theta, shape, base0, num_iters=power_iters, key=k)

    power_cost = 2 * power_iters if bound else 0
    init_cost = (curv.cost if curv.source == "estimate" else 0) + power_cost
    refresh_cost = (curv.cost if cfn is not None else 0) + power_cost

    def lr_scalar(state):
        b = state.base * state.alpha * state.factor
        if schedule is not None:
            b = b * schedule(state.count)
        return b

    def lr_vector(state):
        lr = lr_scalar(state) * state.shape
        if lr_min is not None or lr_max is not None:
            lr = jnp.clip(lr, lr_min, lr_max)
        return lr

    def init_state(theta0, data, loss0, grad0):
        k0, k1, k2 = jax.random.split(key, 3)
        diag, counts = estimate(theta0, data, k0, None, True)
        shape = make_shape(diag)
        base, lam = bound_base(theta0, data, shape, k1)
        dt = theta0.dtype
        one = jnp.ones((), dt)
        state = PrecondState(
            count=jnp.zeros((), jnp.int32),
            diag=diag,
            diag0=diag,
            shape=shape,
            base=base,
            lam=lam,
            alpha=one,
            factor=one,
            prev_update=jnp.zeros_like(theta0),
            prev_grad=jnp.zeros_like(theta0),
            prev_value=jnp.full((), jnp.inf, dt),
            recent=jnp.full((window,), -jnp.inf, dt),
            num_accepted=jnp.zeros((), jnp.int32),
            key=jax.random.key_data(k2),
            num_grad_evals=jnp.zeros((), jnp.int32),
            num_backtracks=jnp.zeros((), jnp.int32),
            counts=counts,
            lr0=jnp.zeros_like(theta0),
        )
        return state._replace(lr0=lr_vector(state)), init_cost

    def update(updates, state, params=None, *, value=None, data=None, **extra):
        grad = updates
        if refresh_every is not None:

            def refresh(st):
                key, k0, k1 = jax.random.split(jax.random.wrap_key_data(st.key), 3)
                new, _ = estimate(params, data, k0, st.diag, False)
                diag = ema * st.diag + (1 - ema) * new
                shape = make_shape(diag)
                base, lam = bound_base(params, data, shape, k1)
                return st._replace(
                    diag=diag,
                    shape=shape,
                    base=base,
                    lam=lam,
                    key=jax.random.key_data(key),
                    num_grad_evals=st.num_grad_evals + refresh_cost,
                )

            due = (state.count > 0) & (state.count % refresh_every == 0)
            state = jax.lax.cond(due, refresh, lambda st: st, state)

        slope = jnp.vdot(state.prev_update, state.prev_grad)  # directional derivative along u at θ_accepted
        if backtrack:
            rose, t_back = backtrack_test(value, state.recent, state.prev_value, slope, grad.dtype)
        else:
            rose = jnp.zeros((), bool)
            t_back = jnp.asarray(0.5, grad.dtype)

        alpha = state.alpha
        if bb:
            cand, ok = barzilai_borwein(
                state.prev_update, grad - state.prev_grad, state.shape, state.base, state.num_accepted
            )
            alpha = jnp.where(ok & ~rose, cand, alpha).astype(alpha.dtype)
            factor = jnp.where(rose, t_back * state.factor, jnp.where(ok, jnp.ones_like(state.factor), state.factor))
        else:
            factor = jnp.where(rose, t_back * state.factor, state.factor)
        st = state._replace(alpha=alpha, factor=factor)
        step = -(lr_vector(st) * grad).astype(grad.dtype)
        back = ((t_back - 1) * state.prev_update).astype(grad.dtype)
        new_update = jnp.where(rose, back, step)
        slot = state.num_accepted % window
        st = st._replace(
            count=state.count + 1,
            prev_update=jnp.where(rose, t_back * state.prev_update, step),
            prev_grad=jnp.where(rose, state.prev_grad, grad),
            prev_value=jnp.where(rose, state.prev_value, value),
            recent=jnp.where(rose, state.recent, state.recent.at[slot].set(value)),
            num_accepted=state.num_accepted + (~rose).astype(jnp.int32),
            num_backtracks=state.num_backtracks + rose.astype(jnp.int32),
        )
        return new_update, st

    def plain_init(params):
        raise ValueError("this transformation is initialised by gnomon's optimizer loop (init_state)")

    return optax.GradientTransformationExtraArgs(plain_init, update), init_state, lr_scalar, lr_vector


def build_safeguarded(
    obj: Objective,
    curv: CurvatureSource,
    rules: StepRules,
    *,
    power: float,
    eps: float,
    lr_min: float | None,
    lr_max: float | None,
    scales: np.ndarray,
    refresh_every: int | None,
    ema: float,
    power_iters: int,
    momentum: float | None,
    nesterov: bool,
    key_data: tuple,
) -> Built:
    """The loop's :class:`~gnomon.engines.loop.Built` for :func:`safeguarded_transform` (chained with
    ``optax.trace`` when ``momentum`` is given); ``key_data``: the raw PRNG key as a tuple of uint32.

    ``final_extras``: the curvature and learning-rate vector at θ_0 and at the end, the λ_max estimate,
    η_0 used, the backtracking factor and count, and the initial estimate's safeguard counts."""
    ptx, init_p, lr_scalar, lr_vector = safeguarded_transform(
        obj,
        curv,
        base_lr=rules.base_lr,
        power=power,
        eps=eps,
        lr_min=lr_min,
        lr_max=lr_max,
        scales=scales,
        bound=rules.bound,
        backtrack=rules.backtrack,
        bb=rules.bb,
        window=rules.window,
        refresh_every=refresh_every,
        ema=ema,
        power_iters=power_iters,
        key=jax.random.wrap_key_data(jnp.asarray(key_data, jnp.uint32)),
    )

    def final_extras(st):
        return {
            "curvature": st.diag0,
            "lr_vec": st.lr0,
            "curvature_final": st.diag,
            "lr_vec_final": lr_vector(st),
            "lambda_max": st.lam,
            "base_lr_used": st.base,
            "backtrack_factor": st.factor,
            "num_backtracks": st.num_backtracks,
            "num_nonfinite": st.counts[0],
            "num_negative": st.counts[1],
            "num_floored": st.counts[2],
        }

    def extra(old, new):
        return new.num_grad_evals - old.num_grad_evals

    def accepted(old, new):  # θ_t was accepted unless the backtracking test rejected it
        return new.num_accepted > old.num_accepted

    accepted_fn = accepted if rules.backtrack else None
    if momentum is None:
        return Built(ptx, lambda st, t: lr_scalar(st), extra, init_p, None, final_extras, pass_data=True,
                     accepted_fn=accepted_fn)
    mtx = optax.trace(decay=momentum, nesterov=nesterov)
    tx = optax.chain(ptx, mtx)  # ptx's update carries the minus sign; trace accumulates it

    def init_chain(theta0, data, loss0, grad0):
        st, cost = init_p(theta0, data, loss0, grad0)
        return (st, mtx.init(theta0)), cost

    return Built(
        tx,
        lambda st, t: lr_scalar(st[0]),
        lambda o, n: extra(o[0], n[0]),
        init_chain,
        None,
        lambda st: final_extras(st[0]),
        pass_data=True,
        accepted_fn=None if accepted_fn is None else (lambda o, n: accepted_fn(o[0], n[0])),
    )
