"""The optimizer loop's two programs, lowered ahead of time, compiled in background threads and cached.

Per (objective compile key, method, settings, argument shapes): ``init`` (the transformation's ``init`` at θ_0 —
power iterations, in-program estimates — and no loss evaluation) and ``chunk`` (:mod:`gnomon.optim.chunk`). Both
are lowered in the caller's thread and compile concurrently in background threads
(:class:`gnomon.optim.background.Pending`); no Python function is kept: the objective's arrays are constants of
the executables, freed with the cache entry. :func:`probe` evaluates at given points with the compiled chunk
(nothing new to compile); :func:`output` reads the model's output at the best point from the final carry.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.objective.goodness import loss_and_output
from gnomon.objective.objective import Objective
from gnomon.optim import readout, start_estimate
from gnomon.optim import runoff as runoff_test
from gnomon.optim.background import Pending
from gnomon.optim.body import Features, member_step
from gnomon.optim.carry import Carry, LoopSettings
from gnomon.optim.chunk import make_chunk
from gnomon.optim.methods import Program
from gnomon.util.programs import ProgramCache


class Compiled(NamedTuple):
    init: Any  # Pending: compiled in a background thread, waited for at the first call
    chunk: Any
    chunk_steps: int
    channels: tuple[str, ...]
    has_report: bool  # the state holds nodes that readout.report reads (else it is not copied to the host)
    lower_s: float = 0.0  # seconds spent tracing and lowering (in the caller's thread)
    unreported: list = [True]  # [True] until a run has reported this build's compile time
    output_dtype: Any = None  # the model output's own dtype where the carry keeps it at the best point


# (compile key, method, settings, argument shapes) -> init and chunk compiled ahead of time (no Python function
# kept: the objective's arrays are constants of the executables, freed with the entry)
_PROGRAMS: ProgramCache = ProgramCache("optimizer loops", maxsize=64)


def compile_key(obj: Objective) -> Hashable:
    """The objective's compile key: ``obj.compile_key`` (shared by objectives that differ only in bound data)
    when it has one, else the objective itself."""
    key = getattr(obj, "compile_key", None)
    return obj if key is None else key


def compiled(obj: Objective, program: Program, settings: LoopSettings, example: tuple) -> Compiled:
    """The cached programs for these arguments (``example``: θ_0, data, key, the program's arrays), built on a
    miss."""
    key = (compile_key(obj), program.name, program.cache_key, settings, _avals(example))
    hit = _PROGRAMS.get(key)
    if hit is not None:
        return hit
    return _PROGRAMS.put(key, _build(obj, program, settings, example))


def _avals(tree: Any) -> Hashable:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)


def _build(obj: Objective, program: Program, settings: LoopSettings, example: tuple) -> Compiled:
    """Lower init and chunk for the example arguments and start compiling them."""
    start = time.perf_counter()
    theta0, data, key, arrays = example
    batched = settings.batched

    def make(data, key, arrays):
        return optax.with_extra_args_support(program.make(data, key, arrays))

    track_last = batched and settings.record_every > 1
    lao = loss_and_output(obj) if settings.output else None
    out_shape = _output_shape(obj, theta0, data, batched) if lao is not None else None

    def init(theta0, data, key, arrays):
        st = make(data, key, arrays).init(theta0)
        nan = jnp.full((), jnp.nan, theta0.dtype)
        last = (theta0, nan, jnp.zeros((), jnp.int32)) if track_last else None
        ro = runoff_test.init(theta0) if settings.runoff else None
        best = None if out_shape is None else (jnp.full((), jnp.inf, theta0.dtype), theta0, jnp.zeros(*out_shape))
        zero = jnp.zeros((), jnp.int32)
        diag = jnp.zeros_like(theta0) if settings.start_curvature else None
        return Carry(theta0, st, zero, zero, nan, zero, jnp.full_like(theta0, jnp.nan), last, zero, ro, best, diag)

    # init first: its lowered output shapes tell which channels the state provides (no separate trace)
    init_v = jax.vmap(init, in_axes=(0, 0, None, 0)) if batched else init  # arrays: one row per member
    init_lowered = jax.jit(init_v).lower(theta0, data, key, arrays)
    carry_shape = init_lowered.out_info
    state_shape = carry_shape.opt_state
    if batched:
        state_shape = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state_shape)
    has = {"learning_rate": bool(readout.scalar_fields(state_shape, "learning_rate")),
           "accepted": readout.step_accepted(state_shape) is not None}
    channels = tuple(c for c in settings.channels if has.get(c, True))
    has_report = any(readout.report_nodes(state_shape))
    # the update computed at the stopping point is discarded; only a state that is read afterwards (a report,
    # evaluation counters) needs the per-step select that keeps it out (on a cheap loss it costs ~25 % a step)
    keep_state = has_report or bool(optax.tree.get_all_with_path(state_shape, "num_grad_evals"))
    reuse = readout.linesearch_state(state_shape) is not None  # (a line search's evaluation: no output kept)
    if settings.start_curvature and reuse:
        raise ValueError("the loop estimates the start curvature only without a line search of the method's own")
    estimator = start_estimate.evaluator(obj, settings.start_curvature) if settings.start_curvature else None
    feat = Features(channels, reuse, readout.step_accepted(state_shape) is not None, keep_state, track_last,
                    lao, [None], estimator)
    init_c = Pending(init_lowered)

    step = member_step(obj, make, settings, feat)
    step_fn = jax.vmap(step, in_axes=(0, 0, None, 0, None, None, None)) if batched else step
    chunk = make_chunk(step_fn, settings, channels, feat.reuse)
    n = jax.ShapeDtypeStruct((), jnp.int32)
    flag = jax.ShapeDtypeStruct((), jnp.bool_)
    chunk_c = Pending(jax.jit(chunk).lower(carry_shape, data, key, arrays, n, flag))
    return Compiled(init_c, chunk_c, settings.rows * settings.record_every, channels, has_report,
                    time.perf_counter() - start, [True], feat.output_dtype[0])


def _output_shape(obj: Objective, theta0: Any, data: Any, batched: bool) -> tuple:
    """``(shape, dtype)`` in which one member's carry keeps the model's output: a likelihood's mean has the data's
    shape (no trace of the model needed), residuals are traced abstractly; kept in the widest float dtype (cast back
    to the output's own after the run: lossless)."""
    if obj.likelihood is not None:
        return tuple(obj.likelihood.data_shape), jnp.result_type(float)
    th = jax.ShapeDtypeStruct(np.shape(theta0)[-1:], theta0.dtype)
    d = None if data is None else jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:] if batched else np.shape(a), a.dtype), data)
    out = jax.eval_shape(obj.residual_fn, th, d)
    return tuple(out.shape), jnp.promote_types(out.dtype, jnp.result_type(float))


def _stopped(carry: Carry, theta: Any) -> Carry:
    """``carry`` at θ, reset so that one chunk call evaluates it and stops (``num_steps`` −1)."""
    running = np.zeros(np.shape(carry.status), np.int32)
    th = jnp.asarray(theta, carry.theta.dtype)
    return carry._replace(theta=th, status=running, t=np.zeros_like(running), still=np.zeros_like(running),
                          prev_loss=jnp.full(np.shape(carry.prev_loss), jnp.nan, carry.prev_loss.dtype),
                          grad=jnp.full(th.shape, jnp.nan, th.dtype))


def probe(program: Compiled, carry: Carry, thetas: np.ndarray, data: Any, key: Any, arrays: Any
          ) -> tuple[np.ndarray, np.ndarray]:
    """Loss and gradient at each of ``thetas`` by one call of the compiled chunk each, from ``carry`` with θ set
    and ``num_steps = −1``: the body evaluates θ, stops before any step and leaves the gradient in the carry
    (a non-finite one as NaN)."""
    losses, grads = [], []
    for theta in thetas:
        out, _, summary = program.chunk(_stopped(carry, theta), data, key, arrays, np.int32(-1), np.bool_(True))
        f, g = jax.device_get((summary.loss, out.grad))
        losses.append(np.asarray(f))
        grads.append(np.asarray(g))
    return np.stack(losses), np.stack(grads)


def output(program: Compiled, carry: Carry, theta: np.ndarray) -> Any:
    """The model's output (mean or residuals) at θ when θ is the point of lowest loss the loop evaluated (kept in the
    carry from the evaluation itself); ``(B, ...)`` for a batch, a member whose best point is not θ (a continued or
    thinned run) as None; None where the loop kept none."""
    if carry.best is None or program.output_dtype is None:
        return None
    _, where, out = jax.device_get(carry.best)
    where, out = np.asarray(where), np.asarray(out).astype(program.output_dtype)
    theta = np.asarray(theta, where.dtype)
    if where.ndim == 1:
        return out if np.array_equal(where, theta) else None
    return [out[i] if np.array_equal(where[i], theta[i]) else None for i in range(where.shape[0])]
