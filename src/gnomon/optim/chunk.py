"""One chunk of the compiled optimizer loop: a ``lax.while_loop`` over at most ``rows · record_every`` steps of
the body (:mod:`gnomon.optim.body`), writing the recorded rows into buffers the host copies after the chunk.

Single runs write row t at ``k // record_every``, an unrecorded finite row at the scratch index ``rows`` and a
non-finite one at ``rows + 1``. A batch steps in lockstep under the shared counter k and writes one shared index
(a ``dynamic_update_slice``, not a per-member scatter); its final points come from the carry's ``last``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gnomon.optim import readout, runoff
from gnomon.optim.carry import Carry, LoopSettings, Rows, Summary
from gnomon.optim.status import RUNNING


def make_chunk(step_fn: Callable, settings: LoopSettings, channels: tuple[str, ...], reuse: bool) -> Callable:
    """``chunk(carry, data, key, arrays, num_steps, first_chunk) -> (carry, rows, summary)``."""
    rows, record_every, batched = settings.rows, settings.record_every, settings.batched
    chunk_steps = rows * record_every

    def chunk(carry: Carry, data, key, arrays, num_steps, first_chunk):
        lead = carry.prev_loss.shape
        dtype = carry.theta.dtype
        dim = carry.theta.shape[-1]
        bufs = Rows(jnp.zeros((rows + 2, *lead, dim), dtype), jnp.full((rows + 2, *lead, 1 + len(channels)),
                    jnp.nan, dtype), jnp.full((rows + 2, *lead), -1, jnp.int32) if batched else None)
        put = jax.lax.dynamic_update_index_in_dim

        def cond(state):
            c, _, k = state
            return jnp.any(c.status == RUNNING) & (k < chunk_steps)

        def body(state):
            c, b, k = state
            record_now = k % record_every == 0
            first = first_chunk & (k == 0)
            c_next, (th, scal), finite = step_fn(c, data, key, arrays, num_steps, first, record_now)
            if batched:
                active = c.status == RUNNING  # a member that stopped keeps its carry
                moved = active & (c_next.status == RUNNING)  # ... and its optimizer state the step it stopped at
                keep = jax.vmap(lambda a, n, o: jnp.where(a, n, o))
                masks = Carry(*(jax.tree.map(lambda _, m=(moved if f == "opt_state" else active): m, getattr(c, f))
                                for f in c._fields))
                c_next = jax.tree.map(keep, masks, c_next, c)
                step = jnp.where(active & finite & record_now, c.t, -1).astype(jnp.int32)
                idx = jnp.where(record_now, k // record_every, rows)
                b = Rows(put(b.theta, th, idx, 0), put(b.scalars, scal, idx, 0), put(b.step, step, idx, 0))
            else:  # a single run's row t is at a known slot (its step is implied): no step buffer
                idx = jnp.where(finite, jnp.where(record_now, k // record_every, rows), rows + 1)
                b = Rows(put(b.theta, th, idx, 0), put(b.scalars, scal, idx, 0), None)
            return c_next, b, k + 1

        c, b, _ = jax.lax.while_loop(cond, body, (carry, bufs, jnp.zeros((), jnp.int32)))
        members = jax.vmap if batched else (lambda fn: fn)
        own = members(readout.own_grad_evals)(c.opt_state)
        gnorm = jnp.linalg.norm(c.grad, axis=-1)
        if batched:  # members first, as the trace holds them (a transpose on the device is cheaper than on the host)
            b = Rows(jnp.swapaxes(b.theta, 0, 1), jnp.swapaxes(b.scalars, 0, 1), jnp.swapaxes(b.step, 0, 1))
        evals = c.n_evals if reuse else c.t + 1
        found = None if c.runoff is None else members(runoff.finding)(c.runoff)
        summary = Summary(c.status, c.t, c.prev_loss, evals + own, gnorm, c.last, found)
        return c, b, summary

    return chunk
