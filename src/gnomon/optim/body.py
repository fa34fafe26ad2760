"""One iteration of the compiled optimizer loop for one fit: evaluate θ_t, record its row, test the stop rules,
apply the update (a batch runs it under ``jax.vmap``; :mod:`gnomon.optim.chunk` drives it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gnomon.optim import readout, runoff
from gnomon.optim.carry import Carry, LoopSettings
from gnomon.optim.start_estimate import ESTIMATE
from gnomon.optim.status import CONVERGED, MAX_STEPS, NONFINITE, RAN_OFF, RUNNING, STALL_STEPS, STALLED


class Features(NamedTuple):
    """What the optimizer state provides, read from its shapes when the loop is built."""

    channels: tuple[str, ...]  # the recorded channels the state can give
    reuse: bool  # a line search whose value and gradient at the accepted point the loop reuses
    can_reject: bool  # a backtracking rule: it steps back from a bad (or non-finite) point
    keep_state: bool  # the state is read after the run: keep the one of the step it stopped at
    track_last: bool  # thinned batched runs keep the latest finite point in the carry
    loss_and_output: Any = None  # (θ, data) -> (loss, model output): the output at the best point is kept
    output_dtype: list | None = None  # [dtype] of the model's output, filled while the body is traced
    start_estimator: Any = None  # (θ, data, estimate) -> (loss, output, grad, raw diag): gnomon.optim.start_estimate


def member_step(obj: Any, make: Callable, settings: LoopSettings, feat: Features) -> Callable:
    """``step(carry, data, key, arrays, num_steps, first, record_now) -> (carry, (θ_t, scalars), recorded)``:
    one step of one fit. Branch-free except for reusing a line search's evaluation."""
    tol, ftol, batched = settings.tol, settings.ftol, settings.batched
    channels, reuse, can_reject = feat.channels, feat.reuse, feat.can_reject
    need_gnorm = "grad_norm" in channels or tol is not None

    def step(c: Carry, data, key, arrays, num_steps, first, record_now):
        tx = make(data, key, arrays)
        dtype = c.theta.dtype

        def value_fn(theta, data=data):
            return obj.loss(theta, data)

        estimating = num_steps == ESTIMATE
        f, g, evaluated, out, raw = _evaluate(obj, c, data, first, reuse, feat, estimating)
        f = f.astype(dtype)
        g = g.astype(dtype)
        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
        gnorm = jnp.linalg.norm(g) if need_gnorm else None
        # an exactly zero gradient is a stationary point whatever the tolerances (not a float32 stall)
        converged = jnp.all(g == 0)
        if tol is not None:
            converged = converged | (gnorm <= tol)
        if ftol is not None:
            scale = jnp.maximum(jnp.maximum(jnp.abs(c.prev_loss), jnp.abs(f)), 1.0)
            converged = converged | ((c.t > 0) & (jnp.abs(c.prev_loss - f) <= ftol * scale))
        if tol is None and ftol is None and _has_diagonal(arrays, c.theta):
            converged = converged | (finite & at_precision_limit(f, g, arrays))
        stalled = c.still >= STALL_STEPS
        ro = c.runoff
        ran_off = jnp.zeros((), bool)
        if ro is not None:  # the run-off test looks at θ_t (num_steps < 0: a probe, which must not move it)
            ro = jax.tree.map(lambda n, o: jnp.where(num_steps >= 0, n, o), runoff.update(ro, c.theta, f, finite), ro)
            ran_off = jnp.any(runoff.fired(ro)) & (num_steps >= 0)
        # a backtracking method rejects a non-finite trial point and steps back from it (NaN counts as a rise),
        # so the run goes on; only a non-finite start, or one at the last step, stops it
        backs_off = (~finite & (c.t > 0) & (c.t < num_steps)) if can_reject else jnp.zeros((), bool)
        stop = jnp.select([~finite & ~backs_off, converged, stalled, ran_off, c.t >= num_steps],
                          [NONFINITE, CONVERGED, STALLED, RAN_OFF, MAX_STEPS], RUNNING)
        running = stop == RUNNING

        if can_reject:  # a finite loss with a non-finite gradient is rejected too; the inner state never sees NaN
            f_tx, g_tx = jnp.where(finite, f, jnp.nan).astype(dtype), jnp.where(finite, g, 0).astype(dtype)
        else:
            f_tx, g_tx = f, g

        def update(_):
            return tx.update(g_tx, c.opt_state, c.theta, value=f_tx, grad=g_tx, value_fn=value_fn, data=data)

        if reuse:  # a probe (num_steps < 0) needs f and g only: skip the line search's evaluations
            updates, st = jax.lax.cond(num_steps >= 0, update, lambda _: (jnp.zeros_like(g_tx), c.opt_state), None)
        else:
            updates, st = update(None)
        theta = (c.theta + updates).astype(dtype)
        cols = _columns(channels, f, gnorm, theta, c.theta, st, running, dtype)
        extra = jnp.where(running, readout.linesearch_state(st).info.num_linesearch_steps, 0) if reuse else 0
        if feat.keep_state and not batched:  # the state of the step it stopped at (a batch selects in the chunk)
            st = jax.tree.map(lambda new, old: jnp.where(running, new, old), st, c.opt_state)
        last = c.last
        if feat.track_last:
            last = jax.tree.map(lambda new, old: jnp.where(finite | backs_off, new, old), (c.theta, f, c.t), c.last)
        n_evals = c.n_evals + evaluated + jnp.asarray(extra, jnp.int32) if reuse else c.n_evals
        # a stall: the update left θ unchanged — or, with a curvature diagonal, the Newton step predicts a decrease
        # below the loss's resolution and the loss moved by no more than that (float32's precision limit, where
        # L-BFGS jitters by an ulp instead of standing still); the end check calls a stall at a minimum converged
        still_now = jnp.all(theta == c.theta)
        if tol is None and ftol is None and _has_diagonal(arrays, c.theta, any_precision=True):
            rounding = 8 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(f), 1.0)
            flat = (c.t > 0) & finite & (jnp.abs(f - c.prev_loss) <= rounding)
            still_now = still_now | (flat & at_precision_limit(f, g, arrays))
        still = jnp.where(running & still_now, c.still + 1, 0).astype(jnp.int32)
        best = c.best
        if out is not None:  # the model's output at the lowest loss so far (the trace's best row)
            better = finite & (f < best[0]) & (num_steps >= 0)
            best = jax.tree.map(lambda new, old: jnp.where(better, new, old), (f, c.theta, out.astype(best[2].dtype)),
                                best)
        c_next = Carry(theta, st, c.t + running.astype(jnp.int32), stop.astype(jnp.int32), f, n_evals,
                       jnp.where(finite, g, c.grad), last, still, ro, best, raw)
        row = (c.theta, jnp.stack(cols).astype(dtype))
        return c_next, row, finite | backs_off  # a rejected non-finite trial point is a row like any other

    return step


def _has_diagonal(arrays: Any, theta: Any, any_precision: bool = False) -> bool:
    """The method runs with a curvature diagonal c (``preconditioned_gd``, ``lbfgs``) and θ is float64 (or any
    precision with ``any_precision``) — static."""
    return (isinstance(arrays, jax.Array) and arrays.shape == theta.shape
            and (any_precision or jnp.dtype(theta.dtype).itemsize >= 8))


def at_precision_limit(f: Any, g: Any, c: Any) -> Any:
    r"""A float64 fit with tol and ftol unset has converged when the Newton step with the curvature diagonal predicts
    a decrease below the loss's resolution, :math:`\tfrac12\sum_i g_i^2/c_i \le 8ε\max(|f|, 1)`: nothing further
    is visible in the loss. (With c the curvature at θ0 the prediction may be off by the problem's condition
    number κ; the distance left is then at most :math:`\sqrt{16 ε κ \max(|f|, 1)}` posterior sd — 6·10⁻³ for
    κ = 10⁶ and f = 10⁴ — which is why in float32 it only counts toward a stall, which the end check calls
    converged only when the Hessian's own smallest eigenvalue confirms it: :mod:`gnomon.optim.verdict`.)"""
    dtype = g.dtype
    decrease = 0.5 * jnp.sum(g * g / c.astype(dtype))
    return decrease <= 8 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(f), 1.0)


def _evaluate(obj: Any, c: Carry, data: Any, first: Any, reuse: bool, feat: Features, estimating: Any
              ) -> tuple[Any, Any, Any, Any, Any]:
    """``(f, g, evaluated, output, raw_diag)`` at θ_t: a fresh ``value_and_grad`` — with the model's output from the
    same evaluation where it is kept (else None), and through the model's linearisation where the loop can estimate
    the start curvature (the raw diagonal where ``estimating``, else zeros; None without) — or the line search's own
    at its accepted point."""
    if not reuse:
        if feat.start_estimator is not None:
            f, out, g, raw = feat.start_estimator(c.theta, data, estimating)
            feat.output_dtype[0] = out.dtype
            return f, g, 1, (out if feat.loss_and_output is not None else None), raw
        if feat.loss_and_output is not None:
            (f, out), g = jax.value_and_grad(feat.loss_and_output, has_aux=True)(c.theta, data)
            feat.output_dtype[0] = out.dtype
            return f, g, 1, out, None
        f, g = jax.value_and_grad(obj.loss)(c.theta, data)
        return f, g, 1, None, None

    dtype = c.theta.dtype  # (a loss of another precision than θ: both branches in θ's)

    def fresh(_):
        f, g = jax.value_and_grad(obj.loss)(c.theta, data)
        return f.astype(dtype), g.astype(dtype)

    def reused(_):
        ls = readout.linesearch_state(c.opt_state)
        return ls.value.astype(dtype), ls.grad.astype(dtype)

    f, g = jax.lax.cond(first, fresh, reused, None)
    return f, g, first.astype(jnp.int32), None, None


def _columns(channels: tuple[str, ...], f: Any, gnorm: Any, theta: Any, prev: Any, st: Any, running: Any,
             dtype: Any) -> list:
    """The row's scalars: the loss, then each channel (NaN for a step's channels at the final point)."""
    nan = jnp.full((), jnp.nan, dtype)
    cols = [f]
    for name in channels:
        if name == "grad_norm":
            cols.append(gnorm)
        elif name == "step_norm":
            cols.append(jnp.where(running, jnp.linalg.norm(theta - prev).astype(dtype), nan))
        elif name == "learning_rate":
            cols.append(jnp.where(running, jnp.asarray(readout.step_learning_rate(st), dtype), nan))
        else:
            cols.append(jnp.where(running, jnp.asarray(readout.step_accepted(st), dtype), nan))
    return cols
