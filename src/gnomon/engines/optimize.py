r"""`gn.optimize` / `gn.optimize_batch`: gradient-based optimizers over an :class:`~gnomon.Objective`.

Every method runs in the shared compiled loop (:mod:`gnomon.engines.loop`): chunks of a
``lax.while_loop``, a compile cache per (objective, settings), vmap for batches, recording
``θ_t, loss(θ_t), |∇loss(θ_t)|, |θ_{t+1}−θ_t|`` and the (scalar) learning rate of each row.

Methods
-------
``gd``
    :math:`θ_{t+1} = θ_t - η ∇f(θ_t)`. Without ``learning_rate``: :math:`η = 1/λ_\max(∇^2 f(θ_0))`
    from power iteration on HVPs, with the loss-increase backtracking safeguard.
``preconditioned_gd``
    :math:`θ_{t+1} = θ_t - η_t\, P ⊙ ∇f(θ_t)`, :math:`P = c^{-p}` from a curvature diagonal c (power p by
    method, see :mod:`gnomon.curvature.precondition`), estimated at θ_0 inside the compiled program and
    optionally refreshed every K steps with EMA smoothing. Default curvature: Gauss–Newton when the
    objective has residuals, the exact diagonal for D ≤ 16, variance-reduced Hutchinson (16 probes, 32
    gradient evaluations) otherwise.
    Step size (``step_size=``): ``"bb"`` (the default without ``learning_rate``) starts with η_0 = 1 (the
    diagonal Newton step) and then takes Barzilai–Borwein steps in the metric :math:`P^{-1}`,
    :math:`η_t = s^T P^{-1} s / s^T y` (s, y the last accepted step and gradient change) — a scalar
    secant estimate of the remaining curvature that costs no extra evaluations; ``"fixed"`` (the default
    when a ``learning_rate`` is given, or momentum) keeps
    :math:`η = \min(\text{learning\_rate}, 1/λ_\max(P^{1/2} H P^{1/2}))` (``safeguard="none"``: exactly
    ``learning_rate``, the classical per-index learning-rate model).
    ``curvature="ema_grad2"`` is the optimizer-side EMA of g² (power ½, ``optax.scale_by_rms``).
``adam``, ``rmsprop``
    optax's, default learning rate 1e-3.
``sgd``
    optax's with ``momentum`` (default 0.9) and ``nesterov``; without ``learning_rate``,
    :math:`η = 1/λ_\max` as for ``gd``.
``lbfgs``
    ``optax.lbfgs`` (zoom line search); the line search's evaluations are counted and its value and
    gradient at the accepted point are reused (so each step costs its line-search evaluations only).
an optax ``GradientTransformation``
    run as given.

Safeguards (``safeguard=``): ``"lambda_max"`` bounds η by :math:`1/λ_\max` of the (preconditioned)
Hessian at θ_0 and at each refresh (power iteration, 2 gradient evaluations per iteration, counted);
``"backtrack"`` rejects a point whose loss exceeds the largest of the last M accepted losses plus an
Armijo term (M = ``window``: 10 for BB steps, 1 — monotone — for fixed steps); the next update returns
along the step to the minimiser of the quadratic through f, its slope and the rejected value (clipped
to ½ … ⅒ of the step) and shrinks η accordingly. This costs nothing extra: the loop evaluates the loss
at every point anyway (a rejected point stays in the trace as its own row). ``"both"``; ``"none"``;
``"auto"``: backtracking for ``preconditioned_gd`` (plus the λ_max bound with fixed steps) and for
``gd``/``sgd`` without a learning rate (with the λ_max bound), nothing otherwise. A step to a non-finite
loss still ends the run.

Curvature artifacts: ``trace.extras["curvature"]`` (the diagonal used at θ_0) and
``trace.extras["lr_vec"]`` (the learning-rate vector at θ_0) are numpy arrays; the method, its parameters,
cost and safeguard counts are in ``trace.info["curvature"]`` (→ meta.json). Save them with
:func:`precond_arrays`: ``gn.save_run(dir, trace, extra_arrays=precond_arrays(trace))``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.curvature.estimate import (
    METHODS as CURVATURE_METHODS,
)
from gnomon.curvature.estimate import (
    Curvature,
    curvature_fn,
    plan_curvature,
    safeguard,
)
from gnomon.curvature.precondition import (
    block_scales,
    default_power,
    preconditioned_lambda_max,
)
from gnomon.engines.loop import Built, OptimizerSpec, run_loop
from gnomon.engines.simple_gd import as_objective
from gnomon.objective.objective import Objective
from gnomon.trace.trace import Trace

METHODS = ("gd", "preconditioned_gd", "adam", "rmsprop", "sgd", "lbfgs")
SAFEGUARDS = ("auto", "lambda_max", "backtrack", "both", "none")
# Auto curvature: the exact diagonal while it costs no more than the default Hutchinson budget (2D ≤ 2·16).
# 16 variance-reduced probes (median relative error ≈ 0.3 on the hard 200-d test matrix) are plenty for a
# preconditioner whose global scale is then set by Barzilai–Borwein steps; estimate_curvature's own
# default (32 probes) targets accuracy instead.
OPTIMIZER_PROBES = 16
EXACT_MAX_DIM = OPTIMIZER_PROBES
_UNSET = object()


# ---------------------------------------------------------------------------------------------- the transform
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


class _Curv(NamedTuple):
    """Static description of where the curvature comes from."""

    source: str  # "estimate" | "given" | "given_then_estimate" (refreshes) | "identity"
    settings: tuple | None
    cost: int
    given: Any  # (D,) numpy for "given"
    floor: float
    prior_precision: Any
    negative: str


def _precond_transform(
    obj: Objective,
    curv: _Curv,
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

    Update from an accepted point: :math:`u = -η\, P ∇f`, :math:`η = η_0 · α · \text{factor}`. With
    ``bb``, after each accepted step :math:`α η_0 = s^T P^{-1} s / s^T y` (Barzilai–Borwein in the metric
    :math:`P^{-1}`; kept when :math:`s^T y ≤ 0`), clamped to [1e-6, 1e6]·η0. With ``backtrack`` a point is
    rejected when :math:`f > \max(\text{last } M \text{ accepted}) + 10^{-4}\, u^T ∇f_\text{acc}`
    (nonmonotone Armijo; M = ``window``): the next update returns halfway, :math:`-u/2`, and halves η."""
    cfn = curvature_fn(obj, curv.settings) if curv.settings is not None else None
    is_vr_hutch = cfn is not None and curv.settings[0] == "hutchinson" and curv.settings[3] != "plain"
    schedule = base_lr if callable(base_lr) else None
    base0 = 1.0 if callable(base_lr) else float(base_lr)

    def estimate(theta, data, k, previous, at_init):
        if curv.source == "identity":
            return jnp.ones_like(theta), jnp.zeros((3,), jnp.int32)
        if curv.source == "given" or (curv.source == "given_then_estimate" and at_init):
            return jnp.asarray(curv.given, theta.dtype), jnp.zeros((3,), jnp.int32)
        raw, _ = cfn(theta, data, k, previous if (is_vr_hutch and previous is not None) else None)
        d, c = safeguard(
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
        f = lambda th: obj.loss(th, data)  # noqa: E731
        lam = preconditioned_lambda_max(f, theta, shape, num_iters=power_iters, key=k)
        ok = jnp.isfinite(lam) & (lam > 0)
        inv = 1.0 / jnp.where(ok, lam, 1.0)
        return jnp.where(ok, jnp.minimum(base0, inv), base0).astype(theta.dtype), lam

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
            ref = jnp.max(state.recent)
            rose = jnp.isfinite(ref) & ~(value <= ref + 1e-4 * slope)
            # safeguarded quadratic interpolation along u: φ(t) = f_a + t·slope + t²·(f − f_a − slope)
            curv2 = value - state.prev_value - slope
            t_star = jnp.clip(-slope / (2 * jnp.where(curv2 > 0, curv2, 1.0)), 0.1, 0.5)
            t_back = jnp.where((curv2 > 0) & jnp.isfinite(t_star), t_star, 0.5).astype(grad.dtype)
        else:
            rose = jnp.zeros((), bool)
            t_back = jnp.asarray(0.5, grad.dtype)

        alpha = state.alpha
        if bb:
            s = state.prev_update
            yv = grad - state.prev_grad
            sy = jnp.vdot(s, yv)
            sps = jnp.vdot(s, s / state.shape)
            cand = sps / jnp.where(sy > 0, sy, 1.0) / state.base
            ok = (state.num_accepted > 0) & (sy > 0) & jnp.isfinite(cand) & (cand > 0)
            alpha = jnp.where(ok & ~rose, jnp.clip(cand, 1e-6, 1e6), alpha).astype(alpha.dtype)
            factor = jnp.where(
                rose, t_back * state.factor, jnp.where(ok, jnp.ones_like(state.factor), state.factor)
            )
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


# ---------------------------------------------------------------------------------------------- specs
def _hashable(x: Any) -> Any:
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if callable(x):
        return ("callable", x)
    a = np.asarray(x)
    return ("array", a.shape, str(a.dtype), hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())


def _key_tuple(key: Any) -> tuple:
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _check_lr(lr: Any, name: str = "learning_rate") -> None:
    if lr is None or callable(lr):
        return
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"{name} must be a positive number or an optax schedule, got {lr!r}")


def _resolve_curvature(
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
) -> tuple[_Curv, str, dict]:
    """(_Curv, method name, JSON config) for preconditioned GD."""
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
            _Curv("given", None, 0, d, floor, prior_precision, negative),
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
            return _resolve_curvature(
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
            f"curvature must be None, a method name {CURVATURE_METHODS}, a Curvature or a (D,) "
            f"array, got {curvature!r}"
        )
    if curvature not in CURVATURE_METHODS:
        raise ValueError(
            f"unknown curvature {curvature!r}; expected one of {CURVATURE_METHODS}, a Curvature or None"
        )
    if curvature == "hutchinson" and num_probes is None:
        num_probes = OPTIMIZER_PROBES
    settings, cost, config = plan_curvature(
        obj, theta, data, curvature, num_probes=num_probes, mode=hutchinson_mode, batch_size=batch_size
    )
    return (
        _Curv("estimate", settings, cost, None, floor, _hashable_prior(prior_precision), negative),
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


def _curv_kwargs(opts: dict) -> dict:
    return dict(
        num_probes=opts["num_probes"],
        hutchinson_mode=opts["hutchinson_mode"],
        floor=opts["floor"],
        prior_precision=opts["prior_precision"],
        negative=opts["negative"],
        batch_size=opts["batch_size"],
    )


def _hashable_prior(p: Any) -> Any:
    return None if p is None else (float(p) if np.ndim(p) == 0 else tuple(np.asarray(p, float).tolist()))


class _Settings(NamedTuple):
    spec: OptimizerSpec
    curvature_info: dict | None


def _build_spec(obj: Objective, method: Any, theta_probe: Any, data_probe: Any, opts: dict) -> _Settings:
    lr = opts["learning_rate"]
    _check_lr(lr)
    sg = opts["safeguard"]
    if sg not in SAFEGUARDS:
        raise ValueError(f"unknown safeguard {sg!r}; expected one of {SAFEGUARDS}")
    key = opts["key"]
    key_t = _key_tuple(key)

    if isinstance(method, (optax.GradientTransformation, optax.GradientTransformationExtraArgs)):
        tx = method
        return _Settings(
            OptimizerSpec(
                name="optax",
                key=("optax", tx),
                build=lambda: (tx, None, None),
                info={"method": "optax", "transform": repr(type(tx).__name__)},
            ),
            None,
        )
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"unknown optimizer method {method!r}; expected one of {METHODS} or an optax "
            "GradientTransformation"
        )

    if method in ("adam", "rmsprop"):
        rate = 1e-3 if lr is None else lr
        fn = optax.adam if method == "adam" else optax.rmsprop
        info = {"method": method, "learning_rate": _jsonable_lr(rate)}

        def build():
            tx = fn(rate)
            return tx, (lambda st, t: rate(t) if callable(rate) else rate), None

        return _Settings(OptimizerSpec(method, (method, _hashable(rate)), build, info), None)

    if method == "lbfgs":
        mem = opts["memory_size"]
        if isinstance(mem, bool) or not isinstance(mem, int) or mem < 1:
            raise ValueError(f"memory_size must be a positive int, got {mem!r}")
        info = {
            "method": "lbfgs",
            "memory_size": mem,
            "learning_rate": _jsonable_lr(lr),
            "linesearch": "zoom",
        }

        def build():
            tx = optax.lbfgs(learning_rate=lr, memory_size=mem)

            def extra(old, new):
                return optax.tree.get(new, "num_linesearch_steps")

            def reuse(state):
                return optax.tree.get(state, "value"), optax.tree.get(state, "grad")

            def lr_fn(state, t):
                return optax.tree.get(state, "learning_rate")

            return Built(tx, lr_fn, extra, None, reuse, None)

        return _Settings(OptimizerSpec("lbfgs", ("lbfgs", mem, _hashable(lr)), build, info), None)

    # gd / sgd / preconditioned_gd: the safeguarded transformation (identity curvature for gd/sgd)
    momentum = opts["momentum"]
    if method == "sgd" and momentum is None:
        momentum = 0.9
    if momentum is not None and not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    nesterov = bool(opts["nesterov"])
    if method == "gd" and lr is not None and sg in ("auto", "none") and momentum is None:
        rate = lr  # plain gradient descent, exactly optax.sgd
        info = {"method": "gd", "learning_rate": _jsonable_lr(rate)}

        def build():
            return optax.sgd(rate), (lambda st, t: rate(t) if callable(rate) else rate), None

        return _Settings(OptimizerSpec("gd", ("gd", _hashable(rate)), build, info), None)

    refresh_every = opts["refresh_every"]
    if refresh_every is not None and (
        isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1
    ):
        raise ValueError(f"refresh_every must be a positive int or None, got {refresh_every!r}")
    ema = opts["ema"]
    if not (isinstance(ema, (int, float)) and 0 <= ema < 1):
        raise ValueError(f"ema must be in [0, 1), got {ema!r}")
    power_iters = opts["power_iters"]
    if isinstance(power_iters, bool) or not isinstance(power_iters, int) or power_iters < 1:
        raise ValueError(f"power_iters must be a positive int, got {power_iters!r}")
    eps = opts["eps"]
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")

    step_size = opts["step_size"]
    if step_size not in (None, "fixed", "bb"):
        raise ValueError(f"step_size must be 'fixed', 'bb' or None (default by method), got {step_size!r}")
    window = opts["window"]
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    curvature_info = None
    if method == "preconditioned_gd":
        if opts["curvature"] == "ema_grad2":
            return _ema_grad2_spec(opts, lr, key_t)
        curv, cmethod, curvature_info = _resolve_curvature(
            obj, opts["curvature"], theta_probe, data_probe, **_curv_kwargs(opts)
        )
        if refresh_every is not None and curv.source == "given":
            if cmethod not in CURVATURE_METHODS or cmethod == "ema_grad2":
                raise ValueError(
                    f"refresh_every needs a curvature method to re-run; the given Curvature is {cmethod!r}"
                )
            curv2, _, _ = _resolve_curvature(obj, cmethod, theta_probe, data_probe, **_curv_kwargs(opts))
            curv = curv._replace(settings=curv2.settings, cost=curv2.cost, source="given_then_estimate")
            curvature_info["refresh_cost"] = curv2.cost
        power = default_power(cmethod) if opts["power"] is None else opts["power"]
        if not (isinstance(power, (int, float)) and power > 0):
            raise ValueError(f"power must be a positive number, got {power!r}")
        if step_size is None:
            step_size = "fixed" if (momentum is not None or lr is not None) else "bb"
        bb = step_size == "bb"
        bound = sg in ("lambda_max", "both") or (sg == "auto" and not bb)
        backtrack = sg in ("backtrack", "both") or (sg == "auto" and momentum is None)
        base_lr = 1.0 if lr is None else lr
    else:
        if refresh_every is not None:
            raise ValueError(f"refresh_every applies to preconditioned_gd, not {method!r}")
        curv = _Curv("identity", None, 0, None, 0.0, None, "abs")
        power = 1.0
        auto = lr is None
        step_size = step_size or "fixed"
        bb = step_size == "bb"
        bound = sg in ("lambda_max", "both") or (sg == "auto" and auto)
        backtrack = sg in ("backtrack", "both") or (sg == "auto" and (auto or bb) and momentum is None)
        if lr is None and not bound and not bb:
            raise ValueError(
                f"{method} without a learning_rate needs the lambda_max safeguard (safeguard='auto')"
            )
        base_lr = (np.inf if bound else 1.0) if lr is None else lr  # with the bound: η = 1/λ_max
    if backtrack and momentum is not None:
        raise ValueError(
            "the backtracking safeguard cannot be combined with momentum; use safeguard='lambda_max'"
        )
    if bb and momentum is not None:
        raise ValueError("step_size='bb' cannot be combined with momentum; use step_size='fixed'")
    if not bb:
        window = 1  # fixed steps: monotone backtracking
    scales = block_scales(obj.dim, opts["layout"], opts["block_scale"])
    lr_min, lr_max = opts["lr_min"], opts["lr_max"]
    settings_key = (
        method,
        curv.source,
        curv.settings,
        _hashable(curv.given),
        curv.floor,
        curv.prior_precision,
        curv.negative,
        _hashable(base_lr),
        float(power),
        float(eps),
        lr_min,
        lr_max,
        _hashable(scales),
        bound,
        backtrack,
        bb,
        window,
        refresh_every,
        float(ema),
        power_iters,
        momentum,
        nesterov,
        key_t,
    )
    info = {
        "method": method,
        "learning_rate": _jsonable_lr(lr),
        "step_size": step_size,
        "safeguard": sg,
        "lambda_max_bound": bound,
        "backtracking": backtrack,
        "window": window if backtrack else None,
        "power_iters": power_iters if bound else None,
    }
    if method == "preconditioned_gd":
        info.update(
            power=float(power),
            eps=float(eps),
            lr_min=lr_min,
            lr_max=lr_max,
            refresh_every=refresh_every,
            ema=float(ema),
            curvature_fixed=refresh_every is None,
            block_scale=dict(opts["block_scale"]) if opts["block_scale"] else None,
        )
    if momentum is not None:
        info.update(momentum=float(momentum), nesterov=nesterov)

    def build():
        ptx, init_p, lr_scalar, lr_vector = _precond_transform(
            obj,
            curv,
            base_lr=base_lr,
            power=float(power),
            eps=float(eps),
            lr_min=lr_min,
            lr_max=lr_max,
            scales=scales,
            bound=bound,
            backtrack=backtrack,
            bb=bb,
            window=window,
            refresh_every=refresh_every,
            ema=float(ema),
            power_iters=power_iters,
            key=jax.random.wrap_key_data(jnp.asarray(key_t, jnp.uint32)),
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

        if momentum is None:
            return Built(ptx, lambda st, t: lr_scalar(st), extra, init_p, None, final_extras, pass_data=True)
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
        )

    return _Settings(OptimizerSpec(method, settings_key, build, info), curvature_info)


def _ema_grad2_spec(opts: dict, lr: Any, key_t: tuple) -> _Settings:
    beta = opts["beta"]
    if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    rate = 1e-2 if lr is None else lr
    eps = opts["eps"] or 1e-8
    info = {"method": "preconditioned_gd", "learning_rate": _jsonable_lr(rate)}
    cinfo = {
        "method": "ema_grad2",
        "beta": float(beta),
        "eps": float(eps),
        "power": 0.5,
        "init": "zeros, bias-corrected (first step: g0²)",
        "num_grad_evals": 0,
        "updated": "every step",
    }

    def build():
        tx = optax.chain(
            optax.scale_by_rms(decay=beta, eps=eps, eps_in_sqrt=False, bias_correction=True),
            optax.scale_by_learning_rate(rate),
        )
        return tx, (lambda st, t: rate(t) if callable(rate) else rate), None

    return _Settings(
        OptimizerSpec(
            "preconditioned_gd", ("ema_grad2", float(beta), float(eps), _hashable(rate)), build, info
        ),
        cinfo,
    )


def _jsonable_lr(lr: Any) -> Any:
    if lr is None or isinstance(lr, (int, float)):
        return lr
    return "schedule"


# ---------------------------------------------------------------------------------------------- public API
def optimize(
    obj: Objective | Callable,
    theta0: Any,
    method: Any = "gd",
    *,
    num_steps: int = 1000,
    learning_rate: float | Callable | None = None,
    curvature: Any = None,
    key: Any = None,
    tol: float | None = None,
    ftol: float | None = None,
    record_every: int = 1,
    refresh_every: int | None = None,
    progress: bool | None = None,
    data: Any = _UNSET,
    momentum: float | None = None,
    nesterov: bool = False,
    power: float | None = None,
    eps: float = 0.0,
    lr_min: float | None = None,
    lr_max: float | None = None,
    block_scale: dict | None = None,
    safeguard: str = "auto",
    num_probes: int | None = None,
    hutchinson_mode: str = "variance_reduced",
    floor: float = 1e-6,
    prior_precision: Any = None,
    negative: str = "abs",
    ema: float = 0.0,
    beta: float = 0.999,
    memory_size: int = 10,
    power_iters: int = 20,
    batch_size: int | None = None,
    step_size: str | None = None,
    window: int = 10,
) -> Trace:
    """Minimise ``obj.loss`` from ``theta0`` (see the module docstring for methods and safeguards).

    Args:
      obj: a :class:`gnomon.Objective` or a loss function of flat θ.
      theta0: ``(D,)`` start, or a previous optimization :class:`Trace` to continue from its final point
        (the result is the joined trace, :meth:`Trace.concatenate`).
      method: ``"gd"``, ``"preconditioned_gd"``, ``"adam"``, ``"rmsprop"``, ``"sgd"``, ``"lbfgs"`` or an optax
        ``GradientTransformation``.
      num_steps: maximum number of updates.
      learning_rate: float or optax schedule; for ``preconditioned_gd`` the base_lr of a fixed step (bounded
        by 1/λ_max unless ``safeguard="none"``; without it: BB steps from η_0 = 1, the diagonal Newton step);
        for ``gd``/``sgd`` default 1/λ_max of the Hessian at θ0.
      curvature: for ``preconditioned_gd``: None (auto), a method name, a :class:`Curvature` or a (D,) array.
      key: PRNG key (Hutchinson probes, power iteration); default ``jax.random.key(0)``.
      tol: stop when |∇loss| ≤ tol; ftol: stop when the relative loss change ≤ ftol.
      record_every: keep every k-th row (the final point is always kept).
      refresh_every: re-estimate the curvature every K steps (``ema`` smooths old and new).
      progress: progress bar between chunks (default: on a terminal for runs ≥ 2,000 steps).
      data: data for objectives taking ``(θ, data)`` (default the objective's bound data).
      momentum, nesterov: heavy-ball/Nesterov momentum (``sgd``; also ``gd`` and ``preconditioned_gd``).
      power, eps, lr_min, lr_max, block_scale: learning-rate vector
        ``clip(η · s · (c + eps)^(-power), lr_min, lr_max)`` (:func:`gnomon.learning_rates`); ``block_scale``
        maps layout parameter or group names to multipliers s.
      safeguard: ``"auto"``, ``"lambda_max"``, ``"backtrack"``, ``"both"`` or ``"none"``.
      num_probes, hutchinson_mode, floor, prior_precision, negative, batch_size: curvature estimation
        (:func:`gnomon.estimate_curvature`; here Hutchinson defaults to 16 probes).
      beta: EMA decay of ``curvature="ema_grad2"``.
      memory_size: L-BFGS memory.
      power_iters: power iterations for the λ_max bound (2 gradient evaluations each).
      step_size: ``"bb"`` (Barzilai–Borwein; default for ``preconditioned_gd`` without a learning_rate) or
        ``"fixed"`` (default for ``gd``/``sgd``, and whenever a learning_rate or momentum is given).
      window: M of the nonmonotone backtracking test with BB steps.

    Returns:
      an optimization :class:`Trace` (``info`` holds the settings and, for preconditioned GD, the
      curvature description under ``"curvature"``; ``extras`` the curvature and lr_vec arrays).
    """
    previous = theta0 if isinstance(theta0, Trace) else None
    if previous is not None:
        if previous.kind != "optimization" or previous.is_batched:
            raise ValueError(
                "optimize continues from a single optimization Trace; got a "
                f"{'batched ' if previous.is_batched else ''}{previous.kind} trace"
            )
        start = previous.final_theta
    else:
        start = theta0
    start = jnp.asarray(start)
    if start.ndim != 1:
        raise ValueError(f"θ0 must be a flat vector (D,), got shape {tuple(start.shape)}")
    obj = as_objective(obj, int(start.shape[0]))
    if obj.dim != start.shape[0]:
        raise ValueError(f"θ0 has length {start.shape[0]} but the objective has dim {obj.dim}")
    d = obj.data if data is _UNSET else data
    opts = _opts(locals())
    st = _build_spec(obj, method, start, d, opts)
    trace = run_loop(
        obj,
        start,
        st.spec,
        num_steps=num_steps,
        record_every=record_every,
        gtol=tol,
        ftol=ftol,
        data=d,
        progress=progress,
    )
    trace = _finish(trace, st, batched=False)
    return previous.concatenate(trace) if previous is not None else trace


def optimize_batch(obj: Objective | Callable, theta0s: Any, data: Any = None, **kwargs: Any) -> Trace:
    """B fits in one compiled program (vmap): ``theta0s`` is ``(B, D)``; ``data`` (optional) is batched on
    its leading axis (objectives taking ``(θ, data)``); without it the objective's own data is shared.
    Other arguments as :func:`optimize`. Returns a batched Trace ``(B, T, D)`` (shorter members padded
    with their final row; ``extras["num_rows"]`` gives their lengths).

    Note: under vmap a curvature refresh (``refresh_every``) is evaluated at every step and selected, so it
    costs its full price each step in time (not in the counted gradient evaluations); prefer fixed curvature.
    """
    if isinstance(theta0s, Trace):
        raise ValueError("optimize_batch starts from a (B, D) array; continue single fits with optimize")
    th = jnp.asarray(theta0s)
    if th.ndim != 2:
        raise ValueError(f"theta0s must be (B, D), got shape {tuple(th.shape)}")
    b = int(th.shape[0])
    obj = as_objective(obj, int(th.shape[1]))
    if obj.dim != th.shape[1]:
        raise ValueError(f"theta0s have dimension {th.shape[1]} but the objective has dim {obj.dim}")
    if data is None:
        if obj.data is not None:
            data = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (b, *jnp.shape(a))), obj.data)
    else:
        if not obj.takes_data:
            raise ValueError(
                "data= needs an objective whose functions take (θ, data) (build it with "
                "takes_data=True or data=)"
            )
        leading = {int(jnp.shape(a)[0]) if jnp.ndim(a) else -1 for a in jax.tree.leaves(data)}
        if leading != {b}:
            raise ValueError(
                f"every data leaf must have leading axis B={b}; got leading sizes {sorted(leading)}"
            )
    probe_data = None if data is None else jax.tree.map(lambda a: a[0], data)
    opts = _opts({**_DEFAULTS, **kwargs, "obj": obj})
    unknown = (
        set(kwargs) - set(_DEFAULTS) - {"num_steps", "record_every", "tol", "ftol", "progress", "method"}
    )
    if unknown:
        raise ValueError(f"optimize_batch got unknown arguments {sorted(unknown)}")
    method = kwargs.get("method", "gd")
    st = _build_spec(obj, method, th[0], probe_data, opts)
    trace = run_loop(
        obj,
        th,
        st.spec,
        num_steps=kwargs.get("num_steps", 1000),
        record_every=kwargs.get("record_every", 1),
        gtol=kwargs.get("tol"),
        ftol=kwargs.get("ftol"),
        data=data,
        batched=True,
        progress=kwargs.get("progress"),
    )
    return _finish(trace, st, batched=True)


_DEFAULTS = dict(
    learning_rate=None,
    curvature=None,
    key=None,
    refresh_every=None,
    momentum=None,
    nesterov=False,
    power=None,
    eps=0.0,
    lr_min=None,
    lr_max=None,
    block_scale=None,
    safeguard="auto",
    num_probes=None,
    hutchinson_mode="variance_reduced",
    floor=1e-6,
    prior_precision=None,
    negative="abs",
    ema=0.0,
    beta=0.999,
    memory_size=10,
    power_iters=20,
    batch_size=None,
    layout=None,
    step_size=None,
    window=10,
)


def _opts(values: dict) -> dict:
    opts = {k: values.get(k, v) for k, v in _DEFAULTS.items()}
    if opts["key"] is None:
        opts["key"] = jax.random.key(0)
    obj = values.get("obj")
    if opts["layout"] is None and isinstance(obj, Objective):
        opts["layout"] = obj.base_layout if obj.thetamap is None else None
    if opts["negative"] not in ("abs", "floor"):
        raise ValueError(f"negative must be 'abs' or 'floor', got {opts['negative']!r}")
    if not (isinstance(opts["floor"], (int, float)) and 0 <= opts["floor"] < 1):
        raise ValueError(f"floor must be a fraction of the median in [0, 1), got {opts['floor']!r}")
    for name in ("lr_min", "lr_max"):
        v = opts[name]
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"{name} must be a non-negative number or None, got {v!r}")
    return opts


def _finish(trace: Trace, st: _Settings, *, batched: bool) -> Trace:
    from dataclasses import replace

    info = dict(trace.info)
    extras = dict(trace.extras)
    if st.curvature_info is not None:
        cinfo = dict(st.curvature_info)
        if "curvature" in extras and not batched:
            for k in ("num_nonfinite", "num_negative", "num_floored"):
                if cinfo.get("source") != "given":
                    cinfo[k] = int(extras[k])
        info["curvature"] = cinfo
    if "lambda_max" in extras:
        lam = np.asarray(extras.pop("lambda_max"))
        base = np.asarray(extras.pop("base_lr_used"))
        nb = np.asarray(extras.pop("num_backtracks"))
        fac = np.asarray(extras.pop("backtrack_factor"))
        if not batched:
            info["lambda_max"] = None if not np.isfinite(lam) else float(lam)
            info["base_lr_used"] = float(base)
            info["num_backtracks"] = int(nb)
            info["backtrack_factor"] = float(fac)
        else:
            extras.update(lambda_max=lam, base_lr_used=base, num_backtracks=nb)
        for k in ("num_nonfinite", "num_negative", "num_floored"):
            extras.pop(k, None)
        if st.curvature_info is None:  # gd/sgd: the identity "curvature" is not an artifact
            for k in ("curvature", "lr_vec", "curvature_final", "lr_vec_final"):
                extras.pop(k, None)
        elif st.curvature_info.get("method") is not None and info.get("refresh_every") is None:
            extras.pop("curvature_final", None)
            extras.pop("lr_vec_final", None)
    extras = {
        k: np.asarray(v) if not isinstance(v, (str, int, float, bool)) else v for k, v in extras.items()
    }
    return replace(trace, info=info, extras=extras)


def precond_arrays(trace: Trace) -> dict[str, dict[str, np.ndarray]]:
    """``extra_arrays`` for :func:`gnomon.save_run`:
    ``{"curvature": {"diag": ...}, "precond": {"lr_vec": ...}}``
    from a preconditioned-GD trace (refreshed runs add the final ones); ``{}`` when there are none."""
    ex = trace.extras
    out: dict[str, dict[str, np.ndarray]] = {}
    if "curvature" in ex:
        out["curvature"] = {"diag": np.asarray(ex["curvature"])}
        if "curvature_final" in ex:
            out["curvature"]["diag_final"] = np.asarray(ex["curvature_final"])
    if "lr_vec" in ex:
        out["precond"] = {"lr_vec": np.asarray(ex["lr_vec"])}
        if "lr_vec_final" in ex:
            out["precond"]["lr_vec_final"] = np.asarray(ex["lr_vec_final"])
    return out
