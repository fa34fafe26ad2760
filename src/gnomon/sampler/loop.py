r"""The compiled sampler loop: any kernel family's steps for all chains in chunks, the warmup adaptation inside.

One chunk is a ``lax.scan`` over ``chunk`` steps; each step advances every chain (``vmap``) with the kernel
family's ``step(key, state, logdensity, StepParams)`` (:mod:`gnomon.sampler.protocol`) at the current step
size :math:`\epsilon` and inverse mass matrix :math:`M^{-1}` and, during warmup, feeds the chains' positions,
gradients and acceptance rates to the pooled adaptation of :mod:`gnomon.sampler.warmup`. A chunk whose
schedule is shorter than ``chunk`` masks the tail (``active``), so every chunk has one shape and the program
compiles once per objective compile key and :class:`SamplerSettings` (a small LRU cache). The NUTS depth
cap, the adaptation's estimator and the target acceptance rate are arguments, so the seed check, the warmup,
a recovery and the sampling all run the same program. Python only runs between chunks (progress, the seed
check, warmup extension). A family tuned by its own stage (``Tuning.OWN``, MCLMC) gets one more program,
``SamplerProgram.tune(num_steps)``: its tuning, compiled once per number of steps.

Per step and chain a chunk records a :class:`ChunkOut`: ``theta``, ``log_prob``, ``grad`` (the gradient of
the log density at the draw — the chain state has it; for a later transport stage, not saved in the Trace),
the common statistics ``acceptance_rate``, ``diverging``, ``energy`` (NaN where the kernel has none),
``n_steps`` (gradient evaluations), ``step_size``, and the family's ``extras`` (NUTS: ``tree_depth``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.optim.loop import compile_key
from gnomon.sampler.protocol import StepParams, Tuning
from gnomon.sampler.warmup import AdaptSettings, AdaptState, window_adaptation
from gnomon.util.programs import Live, ProgramCache

CHUNK = 100


class SamplerSettings(NamedTuple):
    """Everything that changes the compiled program (the compile-cache key)."""

    kernel: Any  # a kernel family (gnomon.sampler.protocol)
    adapt: AdaptSettings
    chunk: int = CHUNK


class ChunkOut(NamedTuple):
    """Per step and chain (steps, chains, ...) outputs of a chunk."""

    theta: Any
    log_prob: Any
    grad: Any  # ∇ log p at the draw (steps, chains, D)
    acceptance_rate: Any
    diverging: Any
    energy: Any
    n_steps: Any  # gradient evaluations of the step
    step_size: Any
    extras: dict  # the kernel family's statistics {name: (steps, chains)}


def stat_names(kernel: Any) -> tuple[str, ...]:
    """The statistics a trace keeps for ``kernel``: the common ones (``energy`` only for a Hamiltonian
    energy) and the family's extras."""
    common = ("acceptance_rate", "diverging", *(("energy",) if kernel.has_energy else ()), "n_steps", "step_size")
    return common + tuple(kernel.extra_stats)


def stats_of(out: ChunkOut, names: tuple[str, ...]) -> dict[str, Any]:
    """``{name: array}`` of the statistics ``names`` from outputs ``out``."""
    return {n: (out.extras[n] if n in out.extras else getattr(out, n)) for n in names}


class ChunkArgs(NamedTuple):
    """The chunk's per-call arrays: the objective's data, the whitening factor L, L⁻¹, the shrinkage and the
    target acceptance rate."""

    data: Any
    factor: Any
    factor_inv: Any
    shrink: Any
    target: Any


class SamplerProgram(NamedTuple):
    """The jitted functions of one objective and :class:`SamplerSettings`."""

    init: Callable  # (positions (C, D), data) -> chain states
    adapt_init: Callable  # (positions, step_size, factor) -> AdaptState
    # (states, ad, key, t0, sched, active, adapting, depth, estimator, ChunkArgs) -> (states, ad, ChunkOut)
    chunk: Callable
    adapt_final: Callable  # (AdaptState) -> (step_size, inverse mass matrix)
    # (num_steps) -> (keys, states, step_size, factor, factor_inv, data) -> (states, TuneResult): Tuning.OWN
    tune: Callable | None = None


_COMPILE_TOTAL = [0.0]


def compile_seconds() -> float:
    """Seconds spent compiling sampler programs in this process so far (take differences around a call)."""
    return _COMPILE_TOTAL[0]


class Aot:
    """A function compiled ahead of time once per argument signature (tree, shapes, dtypes, shardings), so
    that compilation and execution are timed apart: ``compile_s`` accumulates the seconds spent lowering and
    compiling."""

    def __init__(self, fn: Callable):
        self.jitted = jax.jit(fn)
        self.executables: dict = {}
        self.compile_s = 0.0

    def __call__(self, *args: Any) -> Any:
        leaves, tree = jax.tree.flatten(args)
        sig = (tree, tuple(_signature(x) for x in leaves))
        exe = self.executables.get(sig)
        if exe is None:
            t0 = time.perf_counter()
            exe = self.jitted.lower(*args).compile()
            dt = time.perf_counter() - t0
            self.compile_s += dt
            _COMPILE_TOTAL[0] += dt
            self.executables[sig] = exe
        return exe(*args)


def _signature(x: Any) -> tuple:
    return (
        tuple(np.shape(x)),
        str(x.dtype) if hasattr(x, "dtype") else type(x).__name__,
        bool(getattr(x, "weak_type", False)),
        str(getattr(x, "sharding", "")),
    )


# (compile key, settings) -> (SamplerProgram, Live): the programs trace through the Live, holding no objective
_PROGRAMS: ProgramCache = ProgramCache("sampler programs", maxsize=16)


def compiled(obj: Objective, st: SamplerSettings) -> SamplerProgram:
    """The (cached) :class:`SamplerProgram` for ``obj`` and ``st``: objectives that share a compile key (differ
    only in bound data, which the programs take as an argument) share their programs, as the optimizer loop's
    do."""
    key = (compile_key(obj), st)
    hit = _PROGRAMS.get(key)
    if hit is None:
        live = Live()
        hit = _PROGRAMS.put(key, (_build(live, st), live))
    program, live = hit
    live.bind(obj)  # the objective the programs trace with while this caller runs (weakly held)
    return program


def _build(live: Live, st: SamplerSettings) -> SamplerProgram:
    """The programs of one compile key: they reach the objective through ``live`` (never closing over one)
    and take its data as an argument."""
    wa = window_adaptation(st.adapt)
    family = st.kernel
    step = family.build_step()

    def init(positions, data):
        obj = live.get()
        logdensity = lambda th: obj.log_prob(th, data)  # noqa: E731
        return jax.vmap(lambda p: family.init(p, logdensity))(positions)

    def chunk(states, ad: AdaptState, key, t0, sched, active, adapting, depth, estimator, args: ChunkArgs):
        """``len(active)`` steps; with ``adapting`` (warmup) the step size and the metric adapt."""
        obj = live.get()
        logdensity = lambda th: obj.log_prob(th, args.data)  # noqa: E731
        num_chains = states.position.shape[0]

        def body(carry, xs):
            t, (stage, is_end), act = xs

            def run(carry):
                states, ad = carry
                keys = jax.random.split(jax.random.fold_in(key, t), num_chains)
                params = StepParams(ad.step_size, ad.imm, depth)
                new, info = jax.vmap(lambda k, s: step(k, s, logdensity, params))(keys, states)
                dtype = new.logdensity.dtype
                out = ChunkOut(
                    theta=new.position,
                    log_prob=new.logdensity,
                    grad=new.logdensity_grad,
                    acceptance_rate=jnp.asarray(info.acceptance_rate, dtype),
                    diverging=jnp.asarray(info.diverging, bool),
                    energy=jnp.asarray(info.energy, dtype),
                    n_steps=jnp.asarray(info.grad_evals, jnp.int32),
                    step_size=jnp.broadcast_to(ad.step_size, (num_chains,)),
                    extras={k: info.extras[k] for k in family.extra_stats},
                )
                ad = jax.lax.cond(
                    adapting,
                    lambda a: wa.update(
                        a,
                        stage,
                        is_end,
                        new.position,
                        new.logdensity_grad,
                        info.acceptance_rate,
                        args.factor,
                        args.factor_inv,
                        args.shrink,
                        estimator,
                        args.target,
                    ),
                    lambda a: a,
                    ad,
                )
                return (new, ad), out

            shapes = jax.eval_shape(run, carry)[1]
            return jax.lax.cond(
                act, run, lambda c: (c, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)), carry
            )

        ts = t0 + jnp.arange(sched.shape[0])
        (states, ad), outs = jax.lax.scan(body, (states, ad), (ts, (sched[:, 0], sched[:, 1].astype(bool)), active))
        return states, ad, outs

    return SamplerProgram(
        init=Aot(init),
        adapt_init=Aot(wa.init),
        chunk=Aot(chunk),
        adapt_final=Aot(wa.final),
        tune=_tuner(live, family) if family.tuning is Tuning.OWN else None,
    )


def _tuner(live: Live, family: Any) -> Callable:
    """``tune(num_steps)``: the family's own tuning stage as a compiled program ``(keys, states, step_size,
    factor, factor_inv, data) -> (states, TuneResult)`` on the target in the whitened coordinates
    ``u = L⁻¹θ`` (``factor`` L: ``(D,)`` or ``(D, D)``); the states go in and come out in θ."""
    programs: dict[int, Aot] = {}

    def get(num_steps: int) -> Aot:
        if num_steps not in programs:
            stage = family.build_tune(num_steps)

            def run(keys, states, step_size, factor, factor_inv, data):
                obj = live.get()
                dense = factor.ndim == 2
                to_u = (lambda x: x @ factor_inv.T) if dense else (lambda x: x * factor_inv)
                to_theta = (lambda u: u @ factor.T) if dense else (lambda u: u * factor)
                grad_to_u = (lambda g: g @ factor) if dense else (lambda g: g * factor)  # g_u = Lᵀ g
                grad_to_theta = (lambda g: g @ factor_inv) if dense else (lambda g: g * factor_inv)
                logdensity_u = lambda u: obj.log_prob(to_theta(u), data)  # noqa: E731
                states_u = states._replace(position=to_u(states.position),
                                           logdensity_grad=grad_to_u(states.logdensity_grad))
                res = stage(keys, states_u, logdensity_u, step_size)
                su = res.states
                back = su._replace(position=to_theta(su.position), logdensity_grad=grad_to_theta(su.logdensity_grad))
                return back, res._replace(states=None)

            programs[num_steps] = Aot(run)
        return programs[num_steps]

    return get


class Chunk(NamedTuple):
    """One finished chunk on the host: the states and adaptation after it and its outputs (trimmed to the
    active steps, ``(steps, chains, ...)``)."""

    states: Any
    adapt: AdaptState
    out: ChunkOut


def run_chunks(
    program: SamplerProgram,
    st: SamplerSettings,
    states: Any,
    ad: AdaptState,
    key: Any,
    t0: int,
    rows: np.ndarray,
    *,
    adapting: bool,
    depth: int,
    estimator: int,
    args: ChunkArgs,
) -> Iterator[Chunk]:
    """Run the schedule ``rows`` (steps × (slow?, window end?)) in compiled chunks from step ``t0``."""
    size = st.chunk
    for c0 in range(0, len(rows), size):
        n = min(size, len(rows) - c0)
        sch = np.zeros((size, 2), np.int32)
        sch[:n] = rows[c0 : c0 + n]
        active = np.arange(size) < n
        states, ad, outs = program.chunk(
            states,
            ad,
            key,
            jnp.int32(t0 + c0),
            jnp.asarray(sch),
            jnp.asarray(active),
            jnp.asarray(adapting),
            jnp.int32(depth),
            jnp.int32(estimator),
            args,
        )
        outs = jax.device_get(outs)
        yield Chunk(states, ad, jax.tree.map(lambda v, n=n: np.asarray(v)[:n], outs))


def cat(chunks: list[ChunkOut]) -> ChunkOut:
    """Concatenate chunk outputs along steps: (steps, chains, ...)."""
    return jax.tree.map(lambda *parts: np.concatenate(parts, axis=0), *chunks)


def stack(chunks: list[ChunkOut]) -> ChunkOut:
    """Concatenate chunk outputs (steps, chains, ...) and move chains first: (chains, steps, ...)."""
    return jax.tree.map(lambda v: np.swapaxes(v, 0, 1), cat(chunks))


def shard(states: Any, num_chains: int) -> Any:
    """Spread the chain axis over the available devices (when there are several and they divide C)."""
    devices = jax.devices()
    if len(devices) < 2 or num_chains % len(devices):
        return states
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("chain",))
    sharding = NamedSharding(mesh, PartitionSpec("chain"))
    return jax.device_put(states, sharding)
