r"""Step-size rules and safeguards of gnomon's gradient descent (``gd``, ``sgd``, ``preconditioned_gd``).

From an accepted point :math:`θ_a` the update is :math:`u = -η\, P ⊙ ∇f(θ_a)` with the scalar
:math:`η = η_0 · α · \text{factor}` (times an optax schedule's value, if one is given); P is the
preconditioner (P = 1 for ``gd``/``sgd``). The rules below set the three factors; only the λ_max bound costs
gradient evaluations.

λ_max bound (``safeguard="lambda_max"``)
    :math:`η_0 = \min(η_\text{base}, 1/λ_\max(P^{1/2} ∇^2 f(θ) P^{1/2}))`, λ_max by power iteration on
    Hessian-vector products (2 gradient evaluations per iteration, counted) at θ_0 and at each curvature
    refresh; η_0 = η_base when the estimate is not finite and positive. ``gd``/``sgd`` without a learning rate
    use :math:`η_\text{base} = ∞`, i.e. :math:`η = 1/λ_\max`.
Barzilai–Borwein steps (``step_size="bb"``)
    after each accepted step, with s the last accepted step and y the gradient change across it,
    :math:`α η_0 = s^T P^{-1} s / s^T y` — the BB step in the metric :math:`P^{-1}`, a scalar secant estimate
    of the curvature the preconditioner leaves, at no extra evaluation. α is kept when :math:`s^T y ≤ 0` (or
    before the first accepted step) and clamped to :data:`BB_CLAMP`. ``preconditioned_gd`` without a
    learning rate starts from η_0 = 1, the diagonal Newton step.
Nonmonotone backtracking (``safeguard="backtrack"``)
    a new point is rejected when :math:`f > \max(\text{last } M \text{ accepted losses}) + c\, u^T ∇f(θ_a)`
    (Armijo, c = :data:`ARMIJO`; M = ``window``: 10 for BB steps, 1 — monotone — for fixed steps). The loop
    evaluates f at every point anyway, so the test is free (a rejected point stays in the trace as its own
    row). The next update returns along u to :math:`t^* u`, :math:`t^*` the minimiser of the quadratic
    :math:`φ(t) = f_a + t\,φ'(0) + t^2 (f - f_a - φ'(0))` through :math:`f_a`, the slope
    :math:`φ'(0) = u^T ∇f(θ_a)` and the rejected value f, clipped to :data:`BACKTRACK_CLIP` (½ when φ is not
    convex), and η's factor is multiplied by :math:`t^*`; an accepted BB step resets it to 1.

``safeguard="auto"`` (:func:`choose_step_rules`): backtracking for ``preconditioned_gd`` (plus the λ_max bound
with fixed steps) and for ``gd``/``sgd`` without a learning rate (with the λ_max bound), nothing otherwise.
Backtracking and BB steps are not combined with momentum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from gnomon.curvature.precondition import preconditioned_lambda_max

SAFEGUARDS = ("auto", "lambda_max", "backtrack", "both", "none")
ARMIJO = 1e-4  # sufficient-decrease constant c of the backtracking test
BB_CLAMP = (1e-6, 1e6)  # α = η_BB / η_0 stays in this range
BACKTRACK_CLIP = (0.1, 0.5)  # range of the interpolated return fraction t*


class StepRules(NamedTuple):
    """Which step-size rules a gradient-descent run uses (static; part of the compile key)."""

    step_size: str  # "bb" | "fixed"
    bb: bool  # Barzilai–Borwein steps
    bound: bool  # η_0 ≤ 1/λ_max
    backtrack: bool  # nonmonotone Armijo backtracking
    window: int  # M of the backtracking test (1 with fixed steps)
    base_lr: float | Callable  # η_base (∞: η_0 = 1/λ_max), or a schedule


def choose_step_rules(
    method: str,
    safeguard: str,
    *,
    learning_rate: Any,
    momentum: float | None,
    step_size: str | None,
    window: int,
) -> StepRules:
    """Resolve ``step_size=None`` and ``safeguard="auto"`` for ``method`` (see the module docstring)."""
    lr = learning_rate
    if method == "preconditioned_gd":
        if step_size is None:
            step_size = "fixed" if (momentum is not None or lr is not None) else "bb"
        bb = step_size == "bb"
        bound = safeguard in ("lambda_max", "both") or (safeguard == "auto" and not bb)
        backtrack = safeguard in ("backtrack", "both") or (safeguard == "auto" and momentum is None)
        base_lr = 1.0 if lr is None else lr
    else:
        auto = lr is None
        step_size = step_size or "fixed"
        bb = step_size == "bb"
        bound = safeguard in ("lambda_max", "both") or (safeguard == "auto" and auto)
        backtrack = safeguard in ("backtrack", "both") or (safeguard == "auto" and (auto or bb) and momentum is None)
        if lr is None and not bound and not bb:
            raise ValueError(f"{method} without a learning_rate needs the lambda_max safeguard (safeguard='auto')")
        base_lr = (np.inf if bound else 1.0) if lr is None else lr  # with the bound: η = 1/λ_max
    if backtrack and momentum is not None:
        raise ValueError("the backtracking safeguard cannot be combined with momentum; use safeguard='lambda_max'")
    if bb and momentum is not None:
        raise ValueError("step_size='bb' cannot be combined with momentum; use step_size='fixed'")
    if not bb:
        window = 1  # fixed steps: monotone backtracking
    return StepRules(step_size, bb, bound, backtrack, window, base_lr)


def lambda_max_bound(loss: Callable, theta: Any, shape: Any, base0: float, *, num_iters: int, key: Any):
    r"""``(η_0, λ_max)``: :math:`η_0 = \min(\text{base0}, 1/λ_\max(P^{1/2} ∇^2 \text{loss}(θ) P^{1/2}))`,
    ``P = diag(shape)``; base0 when λ_max is not finite and positive. Costs ``2 · num_iters`` gradient
    evaluations."""
    lam = preconditioned_lambda_max(loss, theta, shape, num_iters=num_iters, key=key)
    ok = jnp.isfinite(lam) & (lam > 0)
    inv = 1.0 / jnp.where(ok, lam, 1.0)
    return jnp.where(ok, jnp.minimum(base0, inv), base0).astype(theta.dtype), lam


def backtrack_test(value: Any, recent: Any, prev_value: Any, slope: Any, dtype: Any):
    r"""``(rejected, t*)`` for the point :math:`θ_a + u` with loss ``value``.

    ``recent``: the last M accepted losses (−inf = empty slot); ``prev_value`` = :math:`f_a`; ``slope`` =
    :math:`u^T ∇f(θ_a)`. Rejected when ``value`` exceeds ``max(recent) + ARMIJO · slope`` (NaN counts as exceeding);
    :math:`t^*` is the safeguarded minimiser of the interpolating quadratic (module docstring)."""
    ref = jnp.max(recent)
    rejected = jnp.isfinite(ref) & ~(value <= ref + ARMIJO * slope)
    # safeguarded quadratic interpolation along u: φ(t) = f_a + t·slope + t²·(f − f_a − slope)
    curv2 = value - prev_value - slope
    t_star = jnp.clip(-slope / (2 * jnp.where(curv2 > 0, curv2, 1.0)), *BACKTRACK_CLIP)
    t_back = jnp.where((curv2 > 0) & jnp.isfinite(t_star), t_star, 0.5).astype(dtype)
    return rejected, t_back


def barzilai_borwein(step: Any, grad_change: Any, shape: Any, base: Any, num_accepted: Any):
    r"""``(α, ok)``: the BB multiplier :math:`α = s^T P^{-1} s / (s^T y\, η_0)` clamped to :data:`BB_CLAMP`
    (s = ``step``, y = ``grad_change``, P = ``shape``, η_0 = ``base``), and whether it is usable (an accepted
    step exists, :math:`s^T y > 0`, α finite and positive)."""
    sy = jnp.vdot(step, grad_change)
    sps = jnp.vdot(step, step / shape)
    cand = sps / jnp.where(sy > 0, sy, 1.0) / base
    ok = (num_accepted > 0) & (sy > 0) & jnp.isfinite(cand) & (cand > 0)
    return jnp.clip(cand, *BB_CLAMP), ok
