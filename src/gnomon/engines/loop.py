"""The compiled optimizer loop shared by every gradient-based engine.

One driver runs any optax ``GradientTransformation`` over an :class:`~gnomon.Objective`:

* the loop body is a ``lax.while_loop`` over at most one *chunk* of steps, jitted once per
  (objective, optimizer settings, recording settings) and cached, so a second call with the same objective
  and settings does not recompile;
* Python runs only between chunks: it collects the thinned rows, draws the progress bar and stops when
  every fit is done;
* a batch of fits is the same chunk function under ``jax.vmap`` (one compiled program);
* recording follows the Trace invariant: row ``t`` holds θ_t, loss(θ_t), |∇loss(θ_t)|, the step norm
  |θ_{t+1} − θ_t| and the learning rate used from θ_t; the final point is always recorded with its loss.

Stopping: the gradient-norm tolerance ``gtol`` (|∇loss| ≤ gtol), the relative loss change ``ftol``
(|f_{t-1} − f_t| ≤ ftol · max(|f_{t-1}|, |f_t|, 1)), ``num_steps``, or a non-finite loss/gradient (status
names the step; the trace keeps every finite point before it).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.objective.objective import Objective
from gnomon.trace.trace import Trace
from gnomon.util.progress import Progress

RUNNING, CONVERGED, NONFINITE, MAX_STEPS = 0, 1, 2, 3

# Rows buffered on the device per chunk: bounded by memory (≈ 8 MB of θ rows) and by the run length.
_ROW_BYTES_BUDGET = 8 * 2**20
_MAX_ROWS = 1024  # per chunk while a progress bar is drawn
_MAX_ROWS_QUIET = 1 << 16  # without a bar: few chunks (each costs a dispatch and a host copy)


class OptimizerSpec(NamedTuple):
    """How to build an optimizer, plus the hashable key that identifies it for compilation caching.

    ``build()`` returns ``(tx, learning_rate_fn, extra_evals_fn)`` or a :class:`Built` (same first three
    fields plus optional hooks):
      * ``tx``: an optax ``GradientTransformation`` (``...ExtraArgs`` ones receive ``value``, ``grad``,
        ``value_fn`` (and ``data`` when asked), as ``optax.lbfgs`` and gnomon's curvature refresh need);
      * ``learning_rate_fn(opt_state, step) -> scalar`` recorded as the ``learning_rate`` channel, or None;
      * ``extra_evals_fn(old_state, new_state) -> int`` gradient evaluations spent inside ``tx.update``
        (line searches, curvature refreshes), or None for zero.
    """

    name: str
    key: Hashable
    build: Callable[[], tuple[Any, Callable | None, Callable | None]]
    info: dict


class Built(NamedTuple):
    """What ``OptimizerSpec.build()`` may return.

    Hooks beyond the optax transformation:
      * ``init_state(theta0, data, loss0, grad0) -> (opt_state, num_grad_evals)`` replaces ``tx.init``
        (e.g. to estimate a curvature at θ0 inside the compiled, possibly vmapped, program);
      * ``reuse(opt_state) -> (loss, grad)`` at the new θ when ``tx.update`` already evaluated them (line
        searches), saving the loop's own evaluation (the loop then counts only ``extra_evals_fn``);
      * ``final_extras(opt_state) -> {name: array}`` copied into ``trace.extras`` (numpy) after the run;
      * ``pass_data``: also pass ``data=`` to an ``...ExtraArgs`` transformation's update (optax's line
        searches reject arguments their ``value_fn`` does not take, so this is opt-in);
      * ``accepted_fn(old_state, new_state) -> bool``: whether the update from θ_t accepted θ_t (a
        backtracking rule may reject it and step back); recorded as the ``accepted`` channel (1/0, NaN on
        the final row, from which no step was taken).
    """

    tx: Any
    lr_fn: Callable | None = None
    extra_fn: Callable | None = None
    init_state: Callable | None = None
    reuse: Callable | None = None
    final_extras: Callable | None = None
    pass_data: bool = False
    accepted_fn: Callable | None = None


class _Carry(NamedTuple):
    theta: Any
    loss: Any
    grad: Any
    opt_state: Any
    t: Any
    status: Any
    prev_theta: Any
    prev_loss: Any
    prev_grad_norm: Any
    n_evals: Any


class _Rows(NamedTuple):
    theta: Any
    scalars: Any  # (rows, len(_SCALARS)): one buffer, so one write per step
    step: Any


_SCALARS = ("loss", "grad_norm", "step_norm", "learning_rate", "accepted")


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _rows_for(dim: int, itemsize: int, num_steps: int, record_every: int, progress_on: bool = True) -> int:
    most = _MAX_ROWS if progress_on else _MAX_ROWS_QUIET
    cap = max(1, min(most, _ROW_BYTES_BUDGET // max(1, dim * itemsize)))
    need = max(1, math.ceil((num_steps + 1) / record_every))
    return min(cap, 1 << math.ceil(math.log2(need)))  # powers of two: few distinct compilations


def _compiled(obj: Objective, spec: OptimizerSpec, rows: int, record_every: int, gtol, ftol, batched: bool):
    per_obj = _CACHE.setdefault(obj, {})
    key = (spec.name, spec.key, rows, record_every, gtol, ftol, batched)
    hit = per_obj.get(key)
    if hit is not None:
        return hit
    built = spec.build()
    built = built if isinstance(built, Built) else Built(*built)
    tx, lr_fn, extra_fn = built.tx, built.lr_fn, built.extra_fn
    extra_args = isinstance(tx, optax.GradientTransformationExtraArgs)
    chunk_steps = rows * record_every

    def init(theta0, data):
        loss, grad = jax.value_and_grad(obj.loss)(theta0, data)
        nan = jnp.full((), jnp.nan, loss.dtype)
        if built.init_state is not None:
            opt_state, cost = built.init_state(theta0, data, loss, grad)
        else:
            opt_state, cost = tx.init(theta0), 0
        return _Carry(
            theta=theta0, loss=loss, grad=grad, opt_state=opt_state, t=jnp.zeros((), jnp.int32),
            status=jnp.zeros((), jnp.int32), prev_theta=theta0, prev_loss=nan, prev_grad_norm=nan,
            n_evals=1 + jnp.asarray(cost, jnp.int32),
        )

    def member_step(c: _Carry, data, num_steps, record_now):
        """One branch-free step of one fit: the update is always computed and selected with `where` (only
        the final iteration's update is discarded). Returns the next carry and the row for θ_t."""
        dtype = c.loss.dtype
        value_fn = lambda th: obj.loss(th, data)  # noqa: E731
        finite = jnp.isfinite(c.loss) & jnp.all(jnp.isfinite(c.grad))
        gnorm = jnp.linalg.norm(c.grad)
        converged = jnp.zeros((), bool)
        if gtol is not None:
            converged = converged | (gnorm <= gtol)
        if ftol is not None:
            scale = jnp.maximum(jnp.maximum(jnp.abs(c.prev_loss), jnp.abs(c.loss)), 1.0)
            converged = converged | ((c.t > 0) & (jnp.abs(c.prev_loss - c.loss) <= ftol * scale))
        stop = jnp.where(~finite, NONFINITE,
                         jnp.where(converged, CONVERGED, jnp.where(c.t >= num_steps, MAX_STEPS, RUNNING)))
        running = stop == RUNNING

        kwargs = dict(value=c.loss, grad=c.grad, value_fn=value_fn) if extra_args else {}
        if extra_args and built.pass_data:
            kwargs["data"] = data
        updates, opt_state = tx.update(c.grad, c.opt_state, c.theta, **kwargs)
        theta = optax.apply_updates(c.theta, updates).astype(c.theta.dtype)
        if built.reuse is not None:
            loss, grad = built.reuse(opt_state)
            grad = grad.astype(c.grad.dtype)
        else:
            loss, grad = jax.value_and_grad(obj.loss)(theta, data)
        lr = jnp.asarray(lr_fn(c.opt_state, c.t) if lr_fn is not None else jnp.nan, dtype)
        snorm = jnp.linalg.norm(theta - c.theta).astype(dtype)
        acc = (built.accepted_fn(c.opt_state, opt_state) if built.accepted_fn is not None else jnp.nan)
        extra = extra_fn(c.opt_state, opt_state) if extra_fn is not None else 0
        moved = _Carry(
            theta=theta, loss=loss.astype(dtype), grad=grad, opt_state=opt_state, t=c.t + 1,
            status=c.status, prev_theta=c.theta, prev_loss=c.loss, prev_grad_norm=gnorm.astype(dtype),
            n_evals=c.n_evals + (0 if built.reuse is not None else 1) + jnp.asarray(extra, jnp.int32),
        )
        stopped = c._replace(status=stop.astype(jnp.int32))
        c_next = jax.tree.map(lambda m, s: jnp.where(running, m, s), moved, stopped)
        scal = jnp.stack([c.loss.astype(dtype), gnorm.astype(dtype), jnp.where(running, snorm, jnp.nan),
                          jnp.where(running, lr, jnp.nan),
                          jnp.where(running, jnp.asarray(acc, dtype), jnp.nan)]).astype(dtype)
        step = jnp.where(finite & record_now, c.t, -1).astype(jnp.int32)
        return c_next, (c.theta, scal, step)

    # A batch steps its fits in lockstep under one shared iteration counter k, so that every fit writes
    # its row at the same (unbatched) index: a dynamic_update_slice, not a per-member scatter that would
    # copy the whole (rows, B, D) buffer each step. Fits that stopped keep their carry (masked).
    step_fn = jax.vmap(member_step, in_axes=(0, 0, None, None)) if batched else member_step

    def chunk(carry: _Carry, data, num_steps):
        # Rows are written at k // record_every, or into a scratch row `rows` when this step is not recorded
        # (chunks start at multiples of chunk_steps, so k ≡ t mod record_every for running fits).
        lead = carry.loss.shape  # () or (B,)
        dtype = carry.loss.dtype
        dim = carry.theta.shape[-1]
        bufs = _Rows(jnp.zeros((rows + 1, *lead, dim), carry.theta.dtype),
                     jnp.full((rows + 1, *lead, len(_SCALARS)), jnp.nan, dtype),
                     jnp.full((rows + 1, *lead), -1, jnp.int32))
        put = jax.lax.dynamic_update_index_in_dim

        def cond(state):
            c, _, k = state
            return jnp.any(c.status == RUNNING) & (k < chunk_steps)

        def body(state):
            c, b, k = state
            record_now = k % record_every == 0
            idx = jnp.where(record_now, k // record_every, rows)
            c_next, (th, scal, step) = step_fn(c, data, num_steps, record_now)
            if batched:
                active = c.status == RUNNING
                keep = jax.vmap(lambda a, n, o: jnp.where(a, n, o))
                c_next = jax.tree.map(keep, _bcast(active, c), c_next, c)
                step = jnp.where(active, step, -1)
            b = _Rows(theta=put(b.theta, th, idx, 0), scalars=put(b.scalars, scal, idx, 0),
                      step=put(b.step, step, idx, 0))
            return c_next, b, k + 1

        c, b, _ = jax.lax.while_loop(cond, body, (carry, bufs, jnp.zeros((), jnp.int32)))
        return c, b

    if batched:
        init_fn = jax.jit(jax.vmap(init, in_axes=(0, 0)))
    else:
        init_fn = jax.jit(init)
    chunk_fn = jax.jit(chunk)
    per_obj[key] = (init_fn, chunk_fn, chunk_steps, built.final_extras)
    return per_obj[key]


def _bcast(active, tree):
    """``active`` repeated once per leaf of ``tree`` (for a per-member vmapped select)."""
    return jax.tree.map(lambda _: active, tree)


def _status_text(code: int, t: int, loss: float, grad_finite: bool) -> str:
    if code == CONVERGED:
        return "converged"
    if code == MAX_STEPS:
        return "max_steps"
    what = "loss" if not math.isfinite(loss) else ("gradient" if not grad_finite else "value")
    return f"diverged at step {t}: non-finite {what} ({loss if what == 'loss' else 'grad'})"


def run_loop(
    obj: Objective,
    theta0: Any,
    spec: OptimizerSpec,
    *,
    num_steps: int,
    record_every: int = 1,
    gtol: float | None = None,
    ftol: float | None = None,
    data: Any = None,
    batched: bool = False,
    progress: bool | None = None,
    engine_info: dict | None = None,
) -> Trace:
    """Run ``spec``'s optimizer from ``theta0`` (``(D,)``, or ``(B, D)`` with ``batched``) -> Trace."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative int, got {num_steps!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, (int, np.integer)) or record_every < 1:
        raise ValueError(f"record_every must be a positive int, got {record_every!r}")
    for name, tol in (("gtol", gtol), ("ftol", ftol)):
        if tol is not None and not (isinstance(tol, (int, float)) and tol >= 0):
            raise ValueError(f"{name} must be a non-negative number or None, got {tol!r}")
    theta0 = jnp.asarray(theta0)
    if not jnp.issubdtype(theta0.dtype, jnp.floating):
        theta0 = theta0.astype(jnp.result_type(float))
    want = (2 if batched else 1)
    if theta0.ndim != want or theta0.shape[-1] != obj.dim:
        expected = f"(B, {obj.dim})" if batched else f"({obj.dim},)"
        raise ValueError(f"θ0 has shape {tuple(theta0.shape)}, expected {expected} for {obj!r}")

    start = time.perf_counter()
    gtol_f = None if gtol is None else float(gtol)
    ftol_f = None if ftol is None else float(ftol)
    bar = Progress(num_steps, f"{spec.name}",
                   enabled=progress if progress is not None else (None if num_steps >= 2000 else False))
    width = obj.dim * (theta0.shape[0] if batched else 1)
    rows = _rows_for(width, theta0.dtype.itemsize, num_steps, record_every, bar.enabled)
    init_fn, chunk_fn, chunk_steps, final_extras = _compiled(obj, spec, rows, record_every, gtol_f, ftol_f,
                                                             batched)
    carry = init_fn(theta0, data)
    pieces: list[_Rows] = []
    n_steps_arr = jnp.asarray(num_steps, jnp.int32)
    while True:
        carry, bufs = chunk_fn(carry, data, n_steps_arr)
        status = np.asarray(carry.status)
        pieces.append(jax.device_get(bufs))
        t_now = int(np.min(np.asarray(carry.t)))
        losses = np.asarray(carry.loss)
        finite = np.isfinite(losses)
        bar.update(t_now, loss=float(np.mean(losses[finite])) if finite.any() else float("nan"))
        if np.all(status != RUNNING):
            break
    bar.close()
    extras = {}
    if final_extras is not None:
        extras = jax.device_get((jax.vmap(final_extras) if batched else final_extras)(carry.opt_state))
    carry = jax.device_get(carry)
    runtime = time.perf_counter() - start
    info = {"engine": spec.name, **spec.info, "num_steps": int(num_steps), "record_every": int(record_every),
            "gtol": gtol_f, "ftol": ftol_f, "objective": dict(obj.info), **(engine_info or {})}
    if not batched:
        return _assemble(_Rows(*_joined(pieces)), carry, obj, info, runtime, extras)
    return _assemble_batch(_Rows(*_joined(pieces)), carry, obj, info, runtime, extras)


def _joined(pieces: list[_Rows]) -> tuple:
    """Concatenate the chunks' row buffers, keeping only each chunk's recorded prefix (rows are written in
    order; unrecorded steps go to the scratch row at the end; a batch keeps the longest member's prefix)."""
    out = []
    lens = [int(np.max(np.count_nonzero(np.asarray(p.step) >= 0, axis=0), initial=0)) for p in pieces]
    for f in _Rows._fields:
        out.append(np.concatenate([np.asarray(getattr(p, f))[:k] for p, k in zip(pieces, lens, strict=True)]))
    return tuple(out)


def _assemble(rows: _Rows, carry: _Carry, obj: Objective, info: dict, runtime: float,
              extras: dict | None = None) -> Trace:
    """The trace of one fit from its joined row buffers and final carry."""
    step = np.asarray(rows.step)
    keep = step >= 0
    cols = {"theta": np.asarray(rows.theta)[keep], "step": step[keep]}
    scalars = np.asarray(rows.scalars)[keep]
    cols.update({name: np.ascontiguousarray(scalars[:, j]) for j, name in enumerate(_SCALARS)})
    c = _Carry(**{f: (np.asarray(getattr(carry, f)) if f != "opt_state" else None) for f in _Carry._fields})
    code, t = int(c.status), int(c.t)
    loss_now = float(c.loss)
    grad_finite = bool(np.all(np.isfinite(c.grad)))
    if code == NONFINITE and t > 0:
        final = (c.prev_theta, c.prev_loss, c.prev_grad_norm, t - 1)
    else:
        final = (c.theta, c.loss, np.linalg.norm(c.grad), t)
    if cols["step"].size == 0 or cols["step"][-1] != final[3]:
        dtype = cols["loss"].dtype
        last = np.asarray(final[0])[None].astype(cols["theta"].dtype)
        cols["theta"] = np.concatenate([cols["theta"], last])
        cols["loss"] = np.append(cols["loss"], np.asarray(final[1], dtype))
        cols["grad_norm"] = np.append(cols["grad_norm"], np.asarray(final[2], dtype))
        cols["step_norm"] = np.append(cols["step_norm"], np.asarray(np.nan, dtype))
        cols["learning_rate"] = np.append(cols["learning_rate"], np.asarray(np.nan, dtype))
        cols["accepted"] = np.append(cols["accepted"], np.asarray(np.nan, dtype))
        cols["step"] = np.append(cols["step"], np.int32(final[3]))
    else:  # final point recorded in the loop: no step was taken from it
        cols["step_norm"][-1] = np.nan
        cols["learning_rate"][-1] = np.nan
        cols["accepted"][-1] = np.nan
    stats = {"grad_norm": cols["grad_norm"], "step_norm": cols["step_norm"]}
    for optional in ("learning_rate", "accepted"):  # only channels the optimizer provides
        if not np.all(np.isnan(cols[optional])):
            stats[optional] = cols[optional]
    return Trace(
        kind="optimization",
        z=cols["theta"],  # the engine's coordinates; Trace derives base θ when obj has a θ-map
        loss=cols["loss"],
        stats=stats,
        step=cols["step"],
        status=_status_text(code, t, loss_now, grad_finite),
        num_grad_evals=int(c.n_evals),
        runtime_s=runtime,
        info=info,
        layout=obj.base_layout,
        thetamap=obj.thetamap,
        extras={k: np.asarray(v) for k, v in (extras or {}).items()},
    )


def _assemble_batch(rows: _Rows, carry: _Carry, obj: Objective, info: dict, runtime: float,
                    extras: dict) -> Trace:
    """The (B, T, D) trace of a batch, vectorised over members (same rows as :func:`_assemble` per member).

    Each member's recorded rows are a prefix of the joined buffers (a stopped fit records nothing more);
    its final point is appended where it was not recorded, and shorter members are padded by repeating
    their final row (``extras["num_rows"]`` says how many rows are real)."""
    if np.shape(rows.step)[0] == 0:  # nothing recorded at all (every start non-finite): one empty row
        rows = _Rows(np.zeros((1, *np.shape(rows.theta)[1:]), np.asarray(rows.theta).dtype),
                     np.full((1, *np.shape(rows.scalars)[1:]), np.nan, np.asarray(rows.scalars).dtype),
                     np.full((1, *np.shape(rows.step)[1:]), -1, np.int32))
    step = np.asarray(rows.step).T  # (B, R)
    B = step.shape[0]
    n = np.count_nonzero(step >= 0, axis=1)  # recorded rows per member
    status = np.asarray(carry.status)
    t = np.asarray(carry.t)
    back = (status == NONFINITE) & (t > 0)  # a non-finite point: the final point is the one before it
    final_theta = np.where(back[:, None], carry.prev_theta, carry.theta)
    final_loss = np.where(back, carry.prev_loss, carry.loss)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged member's gradient may overflow
        final_gnorm = np.where(back, carry.prev_grad_norm, np.linalg.norm(carry.grad, axis=-1))
    final_t = np.where(back, t - 1, t)
    last_step = np.where(n > 0, step[np.arange(B), np.maximum(n - 1, 0)], -1)
    append = last_step != final_t
    length = n + append
    T = int(length.max())
    cols = np.arange(T)[None, :]
    src = np.minimum(cols, np.maximum(n - 1, 0)[:, None])  # recorded rows, then repeats of the last one
    theta = np.take_along_axis(np.asarray(rows.theta).transpose(1, 0, 2), src[..., None], 1)
    scalars = np.take_along_axis(np.asarray(rows.scalars).transpose(1, 0, 2), src[..., None], 1)
    steps = np.take_along_axis(step, src, 1)
    tail = append[:, None] & (cols >= n[:, None])  # the appended final point and its padding
    theta = np.where(tail[..., None], final_theta[:, None, :].astype(theta.dtype), theta)
    steps = np.where(tail, final_t[:, None], steps).astype(np.int32)
    named = {name: scalars[..., j] for j, name in enumerate(_SCALARS)}
    dtype = named["loss"].dtype
    named["loss"] = np.where(tail, final_loss[:, None], named["loss"]).astype(dtype)
    named["grad_norm"] = np.where(tail, final_gnorm[:, None], named["grad_norm"]).astype(dtype)
    at_or_after_final = cols >= (length - 1)[:, None]  # no step was taken from the final point
    stats = {"grad_norm": named["grad_norm"]}
    for name in ("step_norm", "learning_rate", "accepted"):
        named[name] = np.where(at_or_after_final, np.nan, named[name]).astype(dtype)
        if name == "step_norm" or not np.all(np.isnan(named[name])):
            stats[name] = named[name]
    grads_finite = np.all(np.isfinite(np.asarray(carry.grad)), axis=-1)
    statuses = tuple(_status_text(int(status[i]), int(t[i]), float(np.asarray(carry.loss)[i]),
                                  bool(grads_finite[i])) for i in range(B))
    return Trace(
        kind="optimization",
        z=theta,  # the engine's coordinates; Trace derives base θ when obj has a θ-map
        loss=named["loss"],
        stats=stats,
        step=steps,
        status=statuses,
        num_grad_evals=np.asarray(carry.n_evals, dtype=np.int64),
        runtime_s=runtime,
        info=info,
        layout=obj.base_layout,
        thetamap=obj.thetamap,
        extras={**{k: np.asarray(v) for k, v in extras.items()}, "num_rows": length.astype(np.int64)},
    )
