r"""Per-index learning rates from a curvature (the optax transformations that apply them are in :mod:`gnomon.optim`).

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
:math:`P^{1/2} H P^{1/2}` (:func:`preconditioned_lambda_max`, power iteration with HVPs) or backtrack.

:func:`learning_rate_vector` is the one place the vector :math:`\mathrm{clip}(η · P, \mathrm{lr\_min},
\mathrm{lr\_max})` is computed (:func:`learning_rates` here and :func:`gnomon.optim.scale_by_lr_vector` use it;
:func:`gnomon.optim.scale_by_curvature` applies P alone). ``base_lr`` is :func:`learning_rates`'s own input (the η
of the vector it draws); an optimizer's learning rate lives in its method configuration
(``gn.optim.preconditioned_gd(learning_rate=...)``, aliased by ``gn.optimize(..., learning_rate=...)``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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


def check_bounds(lr_min: float | None, lr_max: float | None) -> None:
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
    return preconditioner_shape(d, p, eps, block_scales(d.shape[0], layout, block_scale))


def preconditioner_shape(diag: Any, power: float, eps: float = 0.0, scales: Any = 1.0) -> jnp.ndarray:
    r"""The preconditioner :math:`P = s ⊙ (\max(c, \text{tiny}) + \text{eps})^{-p}` of a curvature diagonal c
    (jittable; the floor at the dtype's smallest normal keeps a zero entry finite)."""
    diag = jnp.asarray(diag)
    return jnp.asarray(scales, diag.dtype) * (jnp.maximum(diag, jnp.finfo(diag.dtype).tiny) + eps) ** (-power)


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
    check_bounds(lr_min, lr_max)
    shape = inverse_curvature(curvature, power=power, eps=eps, layout=layout, block_scale=block_scale)
    return learning_rate_vector(base_lr, shape, lr_min, lr_max)


def learning_rate_vector(learning_rate: Any, shape: Any, lr_min: Any = None, lr_max: Any = None) -> jnp.ndarray:
    r"""The one formula for a learning-rate vector: :math:`\mathrm{clip}(η · P, \mathrm{lr\_min},
    \mathrm{lr\_max})` with η the scalar learning rate and P the preconditioner's shape
    :math:`s ⊙ (c + \mathrm{eps})^{-p}` (jittable; None bounds are open)."""
    lr = learning_rate * shape
    if lr_min is not None or lr_max is not None:
        # numpy in, numpy out (an optimizer's report on the host: nothing to dispatch or compile)
        clip = np.clip if isinstance(lr, (np.ndarray, np.generic, float, int)) else jnp.clip
        lr = clip(lr, lr_min, lr_max)
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


def lambda_max_bound(loss: Callable, theta: Any, shape: Any, base: Any, *, num_iters: int, key: Any):
    r"""``(η_0, λ_max)`` with :math:`η_0 = \min(\text{base}, 1/λ_\max(P^{1/2} ∇^2 \text{loss}(θ) P^{1/2}))`,
    ``P = diag(shape)`` (:func:`preconditioned_lambda_max`, ``2 · num_iters`` gradient evaluations). When
    λ_max is not finite and positive η_0 is ``base`` (1 when ``base`` is infinite)."""
    lam = preconditioned_lambda_max(loss, theta, shape, num_iters=num_iters, key=key)
    ok = jnp.isfinite(lam) & (lam > 0)
    inv = 1.0 / jnp.where(ok, lam, 1.0)
    fallback = base if np.isfinite(base) else 1.0
    return jnp.where(ok, jnp.minimum(base, inv), fallback).astype(theta.dtype), lam
