r"""Per-index learning rates from a curvature, and the optax transformation that applies them.

.. math::

    \mathrm{lr}_i(t) = \mathrm{clip}\big(\mathrm{base\_lr}(t)\cdot s_i\cdot(c_i + \varepsilon)^{-p},
    \ \mathrm{lr\_min},\ \mathrm{lr\_max}\big), \qquad θ_{t+1} = θ_t - \mathrm{lr}(t) \odot \nabla f(θ_t)

with :math:`c` the curvature diagonal, :math:`s_i` an optional per-block scale and the power :math:`p`
chosen by what :math:`c` measures:

* :math:`p = 1` for Hessian, Gauss–Newton and Fisher diagonals (units loss/θ²): ``base_lr = 1`` is a
  diagonal Newton step, unit-consistent (∇f has units loss/θ, so ∇f / c has units of θ); on an
  axis-aligned quadratic it lands on the minimum in one step.
* :math:`p = ½` for squared-gradient statistics (``ema_grad2``, units (loss/θ)²): the Adam/RMSProp
  convention, :math:`∇f/\sqrt{v}` is dimensionless and ``base_lr`` carries the units of θ. Applied to a
  Hessian diagonal, power ½ only reduces the condition number from κ to √κ.

Diagonal Newton is the Jacobi iteration: on strongly correlated problems ``base_lr = 1`` diverges. The
engines therefore bound ``base_lr`` by :math:`1/λ_\max` of the preconditioned Hessian
:math:`P^{1/2} H P^{1/2}` (:func:`preconditioned_lambda_max`, power iteration with HVPs) by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.curvature.estimate import POWERS, Curvature, default_power, hvp  # noqa: F401 (re-exported)


def _diag_and_power(curvature: Any, power: float | None) -> tuple[jnp.ndarray, float, str]:
    if isinstance(curvature, Curvature):
        d, method = jnp.asarray(curvature.diag), curvature.method
    else:
        d, method = jnp.asarray(curvature), "user"
    if d.ndim != 1:
        raise ValueError(f"curvature must be a Curvature or a vector (D,), got shape {tuple(d.shape)}")
    p = default_power(method) if power is None else power
    if not (isinstance(p, (int, float)) and p > 0):
        raise ValueError(f"power must be a positive number (1 for Hessian-like, 0.5 for g²), got {p!r}")
    return d, float(p), method


def block_scales(dim: int, layout: Any = None, block_scale: Mapping[str, float] | None = None) -> np.ndarray:
    """Per-index multipliers of ``base_lr`` from ``{block name or group label: factor}`` (default 1)."""
    s = np.ones(dim)
    if not block_scale:
        return s
    if layout is None:
        raise ValueError("block_scale needs a layout naming the blocks")
    if layout.size != dim:
        raise ValueError(f"layout has size {layout.size} but the curvature has dim {dim}")
    groups = layout.group_indices()
    for name, factor in block_scale.items():
        if not (isinstance(factor, (int, float)) and factor > 0):
            raise ValueError(f"block_scale[{name!r}] must be a positive number, got {factor!r}")
        if name in layout:
            b = layout[name]
            s[b.start : b.stop] = factor
        elif name in groups:
            s[groups[name]] = factor
        else:
            raise ValueError(
                f"block_scale names {name!r}, which is neither a parameter nor a group of the layout; "
                f"parameters are {list(layout.names)}"
            )
    return s


def _check_bounds(lr_min: float | None, lr_max: float | None) -> None:
    for name, v in (("lr_min", lr_min), ("lr_max", lr_max)):
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"{name} must be a non-negative number or None, got {v!r}")
    if lr_min is not None and lr_max is not None and lr_min > lr_max:
        raise ValueError(f"lr_min ({lr_min}) exceeds lr_max ({lr_max})")


def inverse_curvature(
    curvature: Any,
    *,
    power: float | None = None,
    eps: float = 0.0,
    layout: Any = None,
    block_scale: Mapping[str, float] | None = None,
) -> jnp.ndarray:
    """The learning-rate *shape* ``s_i (c_i + eps)^(-p)``: :func:`learning_rates` at base_lr 1, unclipped."""
    d, p, _ = _diag_and_power(curvature, power)
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    dn = np.asarray(d)
    if not np.all(np.isfinite(dn)):
        raise ValueError(
            f"curvature has {int(np.sum(~np.isfinite(dn)))} non-finite entries; "
            "estimate_curvature replaces them, a user-given diagonal must be finite"
        )
    if np.any(dn + eps <= 0):
        raise ValueError(
            f"curvature + eps must be positive, got min {float(np.min(dn + eps))!r}; "
            "floor the curvature or pass eps > 0"
        )
    s = jnp.asarray(block_scales(d.shape[0], layout, block_scale), d.dtype)
    return s * (d + eps) ** (-p)


def learning_rates(
    curvature: Any,
    base_lr: float = 1.0,
    *,
    power: float | None = None,
    eps: float = 0.0,
    lr_min: float | None = None,
    lr_max: float | None = None,
    layout: Any = None,
    block_scale: Mapping[str, float] | None = None,
) -> jnp.ndarray:
    """``lr_vec = clip(base_lr · s · (curv + eps)^(-power), lr_min, lr_max)`` (see the module docstring).

    Args:
      curvature: a :class:`Curvature` or a positive vector (treated as Hessian-like, power 1).
      base_lr: the global factor (1 = diagonal Newton step for power 1).
      power: exponent; default by method: 1 for exact/hutchinson/gauss_newton/empirical_fisher, ½ for
        ``ema_grad2``.
      eps: added to the curvature before the power.
      lr_min, lr_max: clip bounds (None = unbounded).
      layout, block_scale: per-block multipliers of ``base_lr``, ``{parameter or group name: factor}``.
    """
    if not (isinstance(base_lr, (int, float)) and base_lr > 0):
        raise ValueError(f"base_lr must be a positive number, got {base_lr!r}")
    _check_bounds(lr_min, lr_max)
    lr = base_lr * inverse_curvature(curvature, power=power, eps=eps, layout=layout, block_scale=block_scale)
    if lr_min is not None or lr_max is not None:
        lr = jnp.clip(lr, lr_min, lr_max)
    return lr


class ScaleByCurvatureState(NamedTuple):
    """State of :func:`scale_by_curvature`: step count, the curvature diagonal in use, the learning-rate
    shape derived from it, a PRNG key for refreshes and the gradient evaluations spent on refreshes."""

    count: jnp.ndarray
    diag: jnp.ndarray
    shape: jnp.ndarray
    key: jnp.ndarray
    num_grad_evals: jnp.ndarray


def scale_by_curvature(
    curvature: Any,
    base_lr: float | Callable = 1.0,
    *,
    power: float | None = None,
    eps: float = 0.0,
    lr_min: float | None = None,
    lr_max: float | None = None,
    layout: Any = None,
    block_scale: Mapping[str, float] | None = None,
    flip_sign: bool = True,
    refresh_fn: Callable | None = None,
    refresh_every: int | None = None,
    refresh_cost: int = 0,
    ema: float = 0.0,
    key: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Optax transformation ``g ↦ −lr(t) ⊙ g`` with ``lr(t) = clip(base_lr(t) · s ⊙ (c + eps)^(-p), …)``.

    Composes with ``optax.chain`` (clipping, momentum via ``optax.trace``, …); ``base_lr`` may be an optax
    schedule of the step count. With ``flip_sign=False`` it returns ``+lr ⊙ g`` (to put a sign-flipping
    transform later in a chain).

    Refresh: with ``refresh_fn(params, data, key, diag) -> new_diag`` and ``refresh_every = K`` the
    curvature is re-estimated every K updates at the current parameters and smoothed,
    :math:`c \leftarrow \mathrm{ema}\, c + (1-\mathrm{ema})\, c_\mathrm{new}`; ``refresh_cost`` gradient
    evaluations are added to the state's counter per refresh. ``data`` is passed as an extra argument by
    gnomon's optimizer loop.
    """
    d0, p, _ = _diag_and_power(curvature, power)
    shape0 = inverse_curvature(curvature, power=p, eps=eps, layout=layout, block_scale=block_scale)
    _check_bounds(lr_min, lr_max)
    if not callable(base_lr) and not (isinstance(base_lr, (int, float)) and base_lr > 0):
        raise ValueError(f"base_lr must be a positive number or an optax schedule, got {base_lr!r}")
    if refresh_every is not None and (
        isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1
    ):
        raise ValueError(f"refresh_every must be a positive int or None, got {refresh_every!r}")
    if refresh_every is not None and refresh_fn is None:
        raise ValueError("refresh_every needs a refresh_fn")
    if not (isinstance(ema, (int, float)) and 0 <= ema < 1):
        raise ValueError(f"ema must be in [0, 1), got {ema!r}")
    scales = jnp.asarray(block_scales(d0.shape[0], layout, block_scale))
    key0 = jax.random.key(0) if key is None else key
    sign = -1.0 if flip_sign else 1.0

    def make_shape(diag):
        return scales.astype(diag.dtype) * (jnp.maximum(diag, jnp.finfo(diag.dtype).tiny) + eps) ** (-p)

    def lr_at(count, shape):
        b = base_lr(count) if callable(base_lr) else base_lr
        lr = b * shape
        if lr_min is not None or lr_max is not None:
            lr = jnp.clip(lr, lr_min, lr_max)
        return lr

    def init_fn(params):
        dt = jnp.result_type(params)
        if params.shape != d0.shape:
            raise ValueError(
                f"params have shape {tuple(params.shape)} but the curvature has shape {tuple(d0.shape)}"
            )
        return ScaleByCurvatureState(
            count=jnp.zeros((), jnp.int32),
            diag=d0.astype(dt),
            shape=shape0.astype(dt),
            key=key0,
            num_grad_evals=jnp.zeros((), jnp.int32),
        )

    def update_fn(updates, state, params=None, **extra):
        diag, shape, key, nge = state.diag, state.shape, state.key, state.num_grad_evals
        if refresh_every is not None:
            if params is None:
                raise ValueError("scale_by_curvature with refresh needs params in update()")
            data = extra.get("data")

            def refresh(args):
                diag, key = args
                key, sub = jax.random.split(key)
                new = refresh_fn(params, data, sub, diag).astype(diag.dtype)
                diag = ema * diag + (1 - ema) * new
                return diag, make_shape(diag), key, nge + refresh_cost

            due = (state.count > 0) & (state.count % refresh_every == 0)
            diag, shape, key, nge = jax.lax.cond(
                due, refresh, lambda a: (a[0], shape, a[1], nge), (diag, key)
            )
        lr = lr_at(state.count, shape)
        new_updates = (sign * lr * updates).astype(updates.dtype)
        return new_updates, ScaleByCurvatureState(state.count + 1, diag, shape, key, nge)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def current_learning_rates(
    state: ScaleByCurvatureState,
    base_lr: float | Callable = 1.0,
    *,
    lr_min: float | None = None,
    lr_max: float | None = None,
) -> jnp.ndarray:
    """The learning-rate vector a :func:`scale_by_curvature` state applies at its next update."""
    b = base_lr(state.count) if callable(base_lr) else base_lr
    lr = b * state.shape
    if lr_min is not None or lr_max is not None:
        lr = jnp.clip(lr, lr_min, lr_max)
    return lr


def preconditioned_lambda_max(f: Callable, theta: Any, shape: Any, *, num_iters: int = 20, key: Any = None):
    r"""Largest eigenvalue of :math:`P^{1/2} H P^{1/2}` (``P = diag(shape)``, H = ∇²f(θ)) by power iteration.

    ``base_lr ≤ 1/λ_max`` makes preconditioned gradient descent a contraction on a convex quadratic
    (stability needs ``< 2/λ_max``; power iteration approaches λ_max from below, so the factor 2 is the
    margin). Cost: 2 gradient evaluations per iteration. Jittable; returns |λ| of the dominant eigenvalue.
    """
    key = jax.random.key(1) if key is None else key
    sq = jnp.sqrt(shape)
    v = jax.random.normal(key, theta.shape, theta.dtype)
    v = v / jnp.linalg.norm(v)

    def body(_, carry):
        v, _lam = carry
        w = sq * hvp(f, theta, sq * v)
        lam = jnp.vdot(v, w)
        nrm = jnp.linalg.norm(w)
        v = jnp.where(nrm > 0, w / jnp.where(nrm > 0, nrm, 1), v)
        return v, jnp.where(jnp.isfinite(nrm), nrm, jnp.inf) + 0 * lam

    _, lam = jax.lax.fori_loop(0, num_iters, body, (v, jnp.zeros((), theta.dtype)))
    return lam
