r"""A kernel family's own tuning stage (``Tuning.OWN``; MCLMC: BlackJAX's step size and L tuning).

After the seed check (and a recovery when the seed fails), :func:`run` gives the rest of the warmup to the
family's ``build_tune(num_steps)`` (:mod:`gnomon.sampler.protocol`), run as one compiled program on every
chain in the whitened coordinates :math:`u = L^{-1}θ` of the metric the windows left (:func:`whitening`):
where that metric is right the target there is close to :math:`N(0, I)`. The stage returns the tuned step
size and the diagonal metric :math:`S` of u, pooled over chains; the metric becomes
:math:`M^{-1} = L\,\mathrm{diag}(S)\,L^T`, and the run is a ``kernel tuned`` decision.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.sampler import phases as ph
from gnomon.sampler.decisions import Action, Ledger
from gnomon.sampler.loop import shard

MIN_STEPS = 150  # the least the stage gets of an automatic warmup


def whitening(imm: Any) -> tuple[Any, Any]:
    """``(L, L⁻¹)`` with ``L Lᵀ = imm``: the Cholesky factor of a dense metric, the square root of a diagonal."""
    imm = jnp.asarray(imm)
    if imm.ndim == 1:
        root = jnp.sqrt(imm)
        return root, 1.0 / root
    chol = jnp.linalg.cholesky(imm)
    return chol, jax.scipy.linalg.solve_triangular(chol, jnp.eye(imm.shape[0], dtype=imm.dtype), lower=True)


class Tuned(NamedTuple):
    """What a family's own tuning stage left: the chains, the step size, the metric ``M⁻¹ = L diag(S) Lᵀ`` and
    the whitened variances ``S`` (all 1 when the metric it started from was right)."""

    chains: ph.Chains
    step_size: Any
    imm: Any
    scale: np.ndarray


def stage(ctx: ph.Context, chains: ph.Chains, ledger: Ledger, num_steps: int, key: Any,
          start: tuple[Any, Any] | None = None) -> Tuned:
    """A kernel family's own tuning stage (``Tuning.OWN``; MCLMC: BlackJAX's step size and L) for
    ``num_steps`` steps of every chain, in the whitened coordinates of ``start = (step size, metric)`` —
    by default the metric the windows left (the seed's after the seed check; the recovery's after a
    recovery) and their dual-averaging step size. Counts the steps and gradients and records a
    ``kernel tuned`` decision with every chain's tuned values."""
    step0, imm = start if start is not None else ctx.program.adapt_final(chains.adapt)
    imm = jnp.asarray(imm)
    factor, factor_inv = whitening(imm)
    num_chains = chains.states.position.shape[0]
    keys = jax.random.split(key, num_chains)
    states, res = ctx.program.tune(num_steps)(keys, chains.states, step0, factor, factor_inv, ctx.data)
    grads = np.asarray(res.grad_evals)
    ledger.steps += num_steps
    ledger.grads += int(np.sum(grads))
    scale = jnp.asarray(res.scale, imm.dtype)
    tuned = factor * factor * scale if imm.ndim == 1 else (factor * scale[None, :]) @ factor.T
    eps = float(res.step_size)
    chain_eps = np.asarray(res.info["step_size"], np.float64)
    sc_np = np.asarray(scale, np.float64)
    name = ctx.settings.kernel.name
    ledger.decide(
        Action.KERNEL_TUNED,
        f"{name} tuned by its own stage over {num_steps} steps from step size {float(step0):.3g}: step size "
        f"{eps:.3g} (chains {chain_eps.min():.3g}…{chain_eps.max():.3g}), whitened variances "
        f"{sc_np.min():.3g}…{sc_np.max():.3g}",
        step_size=eps,
        initial_step_size=float(step0),
        grad_evals=int(np.sum(grads)),
        **{f"chain_{k}": np.asarray(v).tolist() for k, v in res.info.items()},
    )
    per_draw = round(float(np.sum(grads)) / num_steps / num_chains, 1)
    ctx.bar.update(ledger.steps, phase=f"{name} tuning", steps_per_draw=per_draw, step_size=eps,
                   divergences=ledger.divergences)
    return Tuned(chains._replace(states=shard(states, num_chains)), jnp.asarray(eps, imm.dtype), tuned, sc_np)


def run(ctx: ph.Context, chains: ph.Chains, ledger: Ledger, max_steps: int, num_warmup: int, auto: bool,
        key: Any) -> tuple[ph.Chains, Any, Any]:
    """The family's own tuning stage for the rest of the warmup (an automatic warmup gives it at least
    :data:`MIN_STEPS`, within the budget); returns ``(chains, step size, inverse mass matrix)``.

    Measured and not kept: running the stage again over twice the steps while it still moved a whitened
    variance by more than 4× (the windows' extension) cost 1.6× the gradients on the non-centred hierarchical
    regression for R̂ 1.012–1.019 instead of 1.016–1.026, and did not rescue the 10-d funnel (R̂ > 2 either
    way; 3 keys each, ``benchmarks/bench_sampling.py``)."""
    total = max(max_steps, num_warmup) if auto else num_warmup
    left = total - ledger.steps
    steps = min(max(num_warmup - ledger.steps, MIN_STEPS), left) if auto else left
    if steps < 30:
        ledger.decide(Action.BUDGET, f"{ctx.settings.kernel.name}'s own tuning not run: only {max(steps, 0)} warmup "
                      "steps left (the step size of the windows' dual averaging is used)")
        step, imm = ctx.program.adapt_final(chains.adapt)
        return chains, step, imm
    tuned = stage(ctx, chains, ledger, steps, jax.random.fold_in(key, 11))
    return tuned.chains, tuned.step_size, tuned.imm
