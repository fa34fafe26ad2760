r"""Safeguards and directions for a loop that evaluates every point: non-monotone backtracking, and L-BFGS
that works with it.

:func:`nonmonotone_backtracking`
    a wrapper: rejects a point whose loss rose above the last M accepted losses and steps back along the last
    step, else lets the inner transformation step (it never sees a rejected point);
:func:`restart_lbfgs`
    ``optax.scale_by_lbfgs`` with the parts of a Wolfe line search that Armijo backtracking lacks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.util.validate import positive_int

ARMIJO = 1e-4  # sufficient-decrease constant c of the backtracking test
BACKTRACK_CLIP = (0.1, 0.5)  # range of the interpolated return fraction t*


# -------------------------------------------------------------------------------- nonmonotone_backtracking
class BacktrackingInfo(NamedTuple):
    """What :func:`nonmonotone_backtracking` reports (never read by its ``update``)."""

    accepted: jnp.ndarray  # whether the point of the last update was accepted
    num_backtracks: jnp.ndarray  # rejected points so far


class BacktrackingState(NamedTuple):
    """State of :func:`nonmonotone_backtracking`."""

    learning_rate: jnp.ndarray  # shrink factor applied to the inner steps (1, t*, t*², ...)
    pending: jnp.ndarray  # u: the current point is θ_a + u
    grad: jnp.ndarray  # ∇f(θ_a)
    value: jnp.ndarray  # f(θ_a)
    recent: jnp.ndarray  # (M,) last M accepted losses (−∞: empty)
    num_accepted: jnp.ndarray  # accepted points so far (the slot of the next accepted loss in ``recent``)
    inner_state: Any
    info: BacktrackingInfo


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
    (a field ``fresh``, as :func:`~gnomon.optim.scale_by_bb` and :func:`restart_lbfgs` have), which resets it to 1.
    Needs the ``value`` extra argument (and uses ``grad`` when given, else the incoming updates, as ∇f). What it
    reports (``accepted``, ``num_backtracks``) is in the state's ``info``, which ``update`` never reads.
    """
    window = positive_int(window, "window")
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        dt = params.dtype
        z = jnp.zeros_like(params)
        return BacktrackingState(
            learning_rate=jnp.ones((), dt), pending=z, grad=z, value=jnp.full((), jnp.inf, dt),
            recent=jnp.full((window,), -jnp.inf, dt), num_accepted=jnp.zeros((), jnp.int32),
            inner_state=inner.init(params),
            info=BacktrackingInfo(accepted=jnp.ones((), bool), num_backtracks=jnp.zeros((), jnp.int32)),
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
            pending=jnp.where(rejected, t_back * state.pending, step),
            grad=jnp.where(rejected, state.grad, g.astype(state.grad.dtype)),
            value=jnp.where(rejected, state.value, value).astype(dt),
            recent=jnp.where(rejected, state.recent, state.recent.at[slot].set(value)),
            num_accepted=state.num_accepted + (~rejected).astype(jnp.int32),
            inner_state=keep,
            info=BacktrackingInfo(accepted=~rejected,
                                  num_backtracks=state.info.num_backtracks + rejected.astype(jnp.int32)),
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
