r"""The compiled sampler loop: BlackJAX NUTS/HMC steps of all chains in chunks, warmup adaptation inside.

One chunk is a ``lax.scan`` over ``chunk_size`` steps; each step advances every chain (``vmap``) with the
current step size :math:`\epsilon` and inverse mass matrix :math:`M^{-1}` and, during warmup, feeds the
chains' positions and acceptance rates to the pooled adaptation of :mod:`gnomon.engines.warmup`. A chunk
whose schedule is shorter than ``chunk_size`` masks the tail (``active``), so every chunk has one shape and
the program compiles once per objective and :class:`SamplerSettings` (a weak per-objective cache); Python
only runs between chunks (progress bar, warmup extension).

Per step and chain the chunk records ``theta``, ``log_prob`` and the kernel's statistics: ``acceptance_rate``,
``diverging``, ``energy``, ``n_steps`` (leapfrog steps = gradient evaluations), ``step_size`` and, for NUTS,
``tree_depth``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.engines.warmup import AdaptState, window_adaptation
from gnomon.objective.objective import Objective


class SamplerSettings(NamedTuple):
    """Everything that changes the compiled program (the compile-cache key)."""

    algorithm: str
    max_num_doublings: int
    num_integration_steps: int
    target_acceptance_rate: float
    divergence_threshold: float
    factor_dense: bool
    adapt: str
    chunk: int


def _kernel_fn(st: SamplerSettings, logdensity):
    from blackjax.mcmc import hmc, nuts

    if st.algorithm == "nuts":
        kernel = nuts.build_kernel(divergence_threshold=st.divergence_threshold)

        def step(key, state, step_size, imm):
            return kernel(key, state, logdensity, step_size, imm, max_num_doublings=st.max_num_doublings)
    else:
        kernel = hmc.build_kernel(divergence_threshold=st.divergence_threshold)

        def step(key, state, step_size, imm):
            return kernel(key, state, logdensity, step_size, imm, num_integration_steps=st.num_integration_steps)

    return step


def _stats(st: SamplerSettings, info, step_size, num_chains: int) -> dict[str, Any]:
    out = {
        "acceptance_rate": info.acceptance_rate,
        "diverging": info.is_divergent,
        "energy": info.energy,
        "n_steps": jnp.asarray(info.num_integration_steps, jnp.int32) * jnp.ones((num_chains,), jnp.int32),
        "step_size": jnp.broadcast_to(step_size, (num_chains,)),
    }
    if st.algorithm == "nuts":
        out["tree_depth"] = jnp.asarray(info.num_trajectory_expansions, jnp.int32)
    return out


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled(obj: Objective, st: SamplerSettings) -> dict[str, Any]:
    """The jitted functions for ``obj`` and ``st`` (cached): ``init`` (chain states at positions (C, D)),
    ``adapt_init``, ``chunk`` and ``adapt_final`` (the adapted step size and inverse mass matrix)."""
    per = _CACHE.setdefault(obj, {})
    hit = per.get(st)
    if hit is not None:
        return hit
    from blackjax.mcmc import hmc

    wa = window_adaptation(st.adapt, st.factor_dense, st.target_acceptance_rate)

    def init(positions, data):
        logdensity = lambda th: obj.log_prob(th, data)  # noqa: E731
        return jax.vmap(lambda p: hmc.init(p, logdensity))(positions)

    def chunk(states, ad: AdaptState, key, t0, sched, active, adapting, data, factor, factor_inv, shrink):
        """``len(active)`` steps; with ``adapting`` (warmup) the step size and the metric adapt."""
        logdensity = lambda th: obj.log_prob(th, data)  # noqa: E731
        step = _kernel_fn(st, logdensity)
        num_chains = states.position.shape[0]

        def body(carry, xs):
            t, (stage, is_end), act = xs

            def run(carry):
                states, ad = carry
                keys = jax.random.split(jax.random.fold_in(key, t), num_chains)
                new, info = jax.vmap(lambda k, s: step(k, s, ad.step_size, ad.imm))(keys, states)
                out = _stats(st, info, ad.step_size, num_chains)
                out["log_prob"] = new.logdensity
                out["theta"] = new.position
                ad = jax.lax.cond(
                    adapting,
                    lambda a: wa.update(
                        a, stage, is_end, new.position, info.acceptance_rate, factor, factor_inv, shrink
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

    hit = {
        "init": jax.jit(init),
        "adapt_init": jax.jit(wa.init),
        "chunk": jax.jit(chunk),
        "adapt_final": jax.jit(wa.final),
    }
    per[st] = hit
    return hit


def run_chunks(
    chunk: Callable,
    states: Any,
    ad: AdaptState,
    key: Any,
    t0: int,
    rows: np.ndarray,
    adapting: bool,
    args: tuple,
    chunk_size: int,
    on_chunk: Callable[[dict[str, np.ndarray], AdaptState], None],
) -> tuple[Any, AdaptState]:
    """Run the schedule ``rows`` (steps × (slow?, window end?)) in compiled chunks from step ``t0``.

    ``args`` are the chunk's trailing arguments ``(data, factor, factor_inv, shrink)``; ``on_chunk`` gets
    each chunk's outputs (steps, chains, ...) on the host, trimmed to the active steps, and the adaptation
    state after it."""
    for c0 in range(0, len(rows), chunk_size):
        n = min(chunk_size, len(rows) - c0)
        sch = np.zeros((chunk_size, 2), np.int32)
        sch[:n] = rows[c0 : c0 + n]
        active = np.arange(chunk_size) < n
        states, ad, outs = chunk(
            states, ad, key, jnp.int32(t0 + c0), jnp.asarray(sch), jnp.asarray(active), adapting, *args
        )
        outs = jax.device_get(outs)
        on_chunk({k: v[:n] for k, v in outs.items()}, ad)
    return states, ad


def stack(chunks: list[dict]) -> dict[str, np.ndarray]:
    """Concatenate chunk outputs (steps, chains, ...) and move chains first: (chains, steps, ...)."""
    out = {}
    for k in chunks[0]:
        a = np.concatenate([c[k] for c in chunks], axis=0)
        out[k] = np.swapaxes(a, 0, 1)
    return out


def shard(states: Any, num_chains: int) -> Any:
    """Spread the chain axis over the available devices (when there are several and they divide C)."""
    devices = jax.devices()
    if len(devices) < 2 or num_chains % len(devices):
        return states
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("chain",))
    sharding = NamedSharding(mesh, PartitionSpec("chain"))
    return jax.device_put(states, sharding)
