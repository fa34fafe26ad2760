"""The optimizer loop's two programs, lowered ahead of time, compiled in background threads and cached.

Per (objective compile key, method, settings, argument shapes): ``init`` (the transformation's ``init`` at θ_0 —
power iterations, in-program estimates — and no loss evaluation) and ``chunk`` (:mod:`gnomon.optim.chunk`). Both
are lowered in the caller's thread and compile concurrently in background threads
(:class:`gnomon.optim.background.Pending`); no Python function is kept: the objective's arrays are constants of
the executables, freed with the cache entry. :func:`probe` and :func:`output` evaluate at given points with the
compiled chunk (nothing new to compile).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.objective.objective import Objective
from gnomon.optim import readout
from gnomon.optim import runoff as runoff_test
from gnomon.optim.background import Pending
from gnomon.optim.body import Features, member_step
from gnomon.optim.carry import OUTPUT, Carry, LoopSettings
from gnomon.optim.chunk import make_chunk
from gnomon.optim.methods import Program
from gnomon.optim.status import MAX_STEPS
from gnomon.util.programs import ProgramCache


class Compiled(NamedTuple):
    init: Any  # Pending: compiled in a background thread, waited for at the first call
    chunk: Any
    chunk_steps: int
    channels: tuple[str, ...]
    has_report: bool  # the state holds nodes that readout.report reads (else it is not copied to the host)
    lower_s: float = 0.0  # seconds spent tracing and lowering (in the caller's thread)
    unreported: list = [True]  # [True] until a run has reported this build's compile time


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

    def init(theta0, data, key, arrays):
        st = make(data, key, arrays).init(theta0)
        nan = jnp.full((), jnp.nan, theta0.dtype)
        last = (theta0, nan, jnp.zeros((), jnp.int32)) if track_last else None
        ro = runoff_test.init(theta0) if settings.runoff else None
        zero = jnp.zeros((), jnp.int32)
        return Carry(theta0, st, zero, zero, nan, zero, jnp.full_like(theta0, jnp.nan), last, zero, ro)

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
    feat = Features(channels, readout.linesearch_state(state_shape) is not None,
                    readout.step_accepted(state_shape) is not None, keep_state, track_last)
    init_c = Pending(init_lowered)

    step = member_step(obj, make, settings, feat)
    step_fn = jax.vmap(step, in_axes=(0, 0, None, 0, None, None, None)) if batched else step
    chunk = make_chunk(step_fn, settings, channels, feat.reuse, _output_fn(obj) if settings.output else None)
    n = jax.ShapeDtypeStruct((), jnp.int32)
    flag = jax.ShapeDtypeStruct((), jnp.bool_)
    chunk_c = Pending(jax.jit(chunk).lower(carry_shape, data, key, arrays, n, flag))
    return Compiled(init_c, chunk_c, settings.rows * settings.record_every, channels, has_report,
                    time.perf_counter() - start, [True])


def _output_fn(obj: Objective) -> Any:
    """The model's output the goodness of fit reads: the likelihood's mean, or the residuals."""
    if obj.likelihood is not None:
        return lambda theta, data: obj.likelihood.mean(theta)
    return lambda theta, data: obj.residual_fn(theta, data)


def _stopped(carry: Carry, theta: Any) -> Carry:
    """``carry`` at θ, reset so that one chunk call evaluates it and stops (``num_steps`` −1) — or, with every
    member already stopped, runs no step at all (:func:`output`)."""
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
        out, _, summary, _ = program.chunk(_stopped(carry, theta), data, key, arrays, np.int32(-1), np.bool_(True))
        f, g = jax.device_get((summary.loss, out.grad))
        losses.append(np.asarray(f))
        grads.append(np.asarray(g))
    return np.stack(losses), np.stack(grads)


def output(program: Compiled, carry: Carry, theta: np.ndarray, data: Any, key: Any, arrays: Any) -> Any:
    """The model's output (mean or residuals) at θ (``(B, D)`` for a batch) by the compiled chunk, which runs no
    step (every member marked stopped) and evaluates nothing else."""
    c = _stopped(carry, theta)
    c = c._replace(status=np.full(np.shape(c.status), MAX_STEPS, np.int32))
    _, _, _, out = program.chunk(c, data, key, arrays, np.int32(OUTPUT), np.bool_(False))
    return jax.tree.map(np.asarray, jax.device_get(out))
