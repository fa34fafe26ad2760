r"""The recovery: when the metric seed fails — or there is none — the adaptation restarts as a cold start would.

After a rejected seed, or when the optimizer found no mode, :func:`recover` restarts the adaptation where a
cold start would (:func:`choose_restart`: dispersed starts around the optimizer's first point, or where the
chains are with their pooled scales) with a gradient-based estimator (nutpie's low-rank metric,
:class:`gnomon.sampler.warmup.Estimator`) and a cold window schedule (:func:`recovery_plan`) that is
extended while unsettled; after each window, stuck chains are moved to the others
(:func:`gnomon.sampler.phases.rescue`). The windows run any kernel family whose step size dual averaging can
tune on its acceptance rate (all of gnomon's); a family with its own tuning stage (MCLMC) runs it afterwards.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.sampler import phases as ph
from gnomon.sampler import transport_stage as ts
from gnomon.sampler import warmup as wu
from gnomon.sampler.decisions import Action, Ledger
from gnomon.sampler.loop import SamplerSettings, compiled, shard
from gnomon.sampler.warmup import Estimator

# the recovery's schedule: with the gradient-based low-rank estimator a short fast buffer and short first
# windows (it is exact for a Gaussian from a few dozen draws, and every chain's draws are pooled), doubling
# after that; with the draws' (co)variances Stan's buffers (75, 25, 50)
RECOVERY_STEPS = 600
RECOVERY_BUFFERS = {"gradient": (15, 15, 50), "draws": (75, 25, 50)}


class RecoveryPlan(NamedTuple):
    """How a recovery adapts: the estimator, the program's static shape and the schedule."""

    estimator: Estimator
    settings: SamplerSettings
    head: np.ndarray
    tail: np.ndarray


def recovery_plan(ctx: ph.Context, metric: str, max_dense_dim: int, num_steps: int) -> RecoveryPlan:
    """The estimator for the warmup's ``metric`` after a recovery (``"auto"``: nutpie's low-rank metric where
    dense moments fit, ``D ≤ max_dense_dim``, else the draws' variances) and a cold schedule of ``num_steps``."""
    est = ph.estimator_for(metric, ctx.dim, max_dense_dim, recovering=True)
    scale_dense = est in wu.DENSE_ESTIMATORS
    adapt = ctx.settings.adapt._replace(factor_dense=False, scale_dense=scale_dense, moments_dense=scale_dense)
    settings = ctx.settings._replace(adapt=adapt)
    initial, first, final = RECOVERY_BUFFERS["gradient" if est == Estimator.LOW_RANK else "draws"]
    rows = wu.windows(
        num_steps, min(initial, num_steps // 4), max(5, min(first, num_steps // 8)), min(final, num_steps // 4)
    )
    head, tail = wu.split_final(rows)
    return RecoveryPlan(est, settings, head, tail)


class Restart(NamedTuple):
    """Where a recovery restarts: new chain positions (None: where the chains are), the whitening factor ``L``
    (``(D,)`` or ``(D, D)``; None: :func:`gradient_scales` at the restart positions), a phrase saying where it
    came from, and its cost in gradient evaluations."""

    positions: Any
    factor: np.ndarray | None
    source: str
    cost: int


def pooled_scales(theta: np.ndarray | None, dim: int, dtype: Any) -> np.ndarray:
    """σ₀: the sd of the pooled draws ``theta`` (steps, chains, D) per coordinate (1 without draws);
    coordinates that did not move get the median of the others."""
    if theta is None or np.size(theta) == 0:
        return np.ones(dim, dtype)
    sd = np.std(np.asarray(theta, np.float64).reshape(-1, dim), axis=0)
    ok = np.isfinite(sd) & (sd > 0)
    fill = float(np.median(sd[ok])) if ok.any() else 1.0
    return np.where(ok, sd, fill).astype(dtype)


def gradient_scales(grads: Any, dtype: Any) -> np.ndarray:
    r"""σ₀ from the gradients ``grads`` (C, D) at the chains' starts, as nutpie begins its adaptation:
    :math:`σ_i = 1/\sqrt{\overline{|g_i|}}` (for a Gaussian coordinate of sd σ started about σ from its mean,
    :math:`|g| ≈ 1/σ`, so this lands between 1 and σ: a first metric a fast window can tighten). Coordinates
    whose gradient is zero or not finite get the median of the others; the scales stay within 10⁴ of it.

    Measured on the centred eight schools from dispersed starts: the first 30 recovery steps cost 35–383
    leapfrog steps per draw with unit scales (a third of the whole run's gradients)."""
    g = np.mean(np.abs(np.asarray(grads, np.float64)), axis=0)
    ok = np.isfinite(g) & (g > 0)
    if not ok.any():
        return np.ones(g.shape[-1], dtype)
    med = float(np.median(g[ok]))
    g = np.clip(np.where(ok, g, med), med * 1e-8, med * 1e8)
    return (1.0 / np.sqrt(g)).astype(dtype)


def choose_restart(
    ctx: ph.Context,
    chains: ph.Chains,
    key: Any,
    *,
    first: np.ndarray | None,
    drawn: np.ndarray | None,
) -> Restart:
    """Where to restart after a rejected seed or without a mode:

    * with the optimizer's ``first`` point: Stan's dispersed starts around it — the places a cold start
      would begin, away from the neck the mode sits in — with scales from the gradients there
      (:func:`gradient_scales`; ``factor=None`` tells :func:`recover` to compute them);
    * else (a θ or per-chain starts were given): where the chains are, with the pooled scales of what they
      have ``drawn`` (without draws — no mode — the scales from the gradients where they are).

    Measured alternative (not used): Laplace draws from the largest-ELBO Gaussian along the optimizer's path
    (Pathfinder's choice) cost 1.3× a cold start per effective sample on the centred eight schools — in 2 of
    10 runs its pick lay in the neck and a chain stayed there — against 0.70× for the dispersed starts."""
    from gnomon.sampler.starts import dispersed_starts

    dtype = np.asarray(chains.states.position).dtype
    num_chains = chains.states.position.shape[0]
    if first is not None:
        positions = dispersed_starts(jnp.asarray(first, dtype), jax.random.fold_in(key, 2), num_chains)
        return Restart(positions, None, "dispersed starts around the optimizer's start, scales from their "
                       "gradients", num_chains)
    if drawn is None:
        return Restart(None, None, "the chains' starts, scales from their gradients (no seed)", 0)
    return Restart(None, pooled_scales(drawn, ctx.dim, dtype),
                   "the chains' current positions with the pooled scales of their draws", 0)


def recover(
    ctx: ph.Context,
    chains: ph.Chains,
    ledger: Ledger,
    plan: RecoveryPlan,
    restart: Restart,
    budget: int,
    *,
    step_size: float = 1.0,
    transport: Any = None,
) -> tuple[ph.Context, ph.Chains]:
    """Restart the adaptation from ``restart`` with the plan's estimator and schedule (extended while
    unsettled, within ``budget`` warmup steps). With ``transport`` (:class:`gnomon.sampler.transport_stage.
    Options`) the transport stage is tried after the windows that bring the draws since the restart to
    :data:`~gnomon.sampler.transport_stage.TRY_AFTER` steps; when its map is kept, the warmup has been finished
    in z and the context and chains returned are z's (``ledger.transport`` says so)."""
    dtype = chains.states.position.dtype
    states = chains.states
    if restart.positions is not None:
        states = shard(ctx.program.init(jnp.asarray(restart.positions, dtype), ctx.data), len(restart.positions))
    restart_factor = restart.factor
    if restart_factor is None:
        restart_factor = gradient_scales(states.logdensity_grad, dtype)
    reuse = plan.settings._replace(adapt=plan.settings.adapt._replace(factor_dense=True))
    if np.ndim(restart_factor) == 1 and ctx.settings.adapt.factor_dense and reuse == ctx.settings:
        # the seeded phase compiled a program with a dense factor: a diagonal restart factor as a dense matrix
        # reuses it (the model is inlined into every program; a second compile costs as much as the first)
        restart_factor = np.diag(np.asarray(restart_factor))
    factor_dense = np.ndim(restart_factor) == 2
    settings = plan.settings._replace(adapt=plan.settings.adapt._replace(factor_dense=factor_dense))
    program = compiled(ctx.obj, settings)
    ctx = ctx._replace(settings=settings, program=program)
    factor = jnp.asarray(restart_factor, dtype)
    factor_inv = jnp.linalg.inv(factor) if factor_dense else 1.0 / factor
    ad = program.adapt_init(states.position, jnp.asarray(step_size, dtype), factor)
    chains = ph.Chains(states, ad, factor, factor_inv)
    ledger.restart_grads += restart.cost
    ctx.bar.total = ledger.steps + len(plan.head) + len(plan.tail) + ctx.num_samples
    ledger.estimator = plan.estimator
    ledger.decide(
        Action.RECOVERY,
        f"recovery at warmup step {ledger.steps}: {restart.source}; {plan.estimator.name.lower().replace('_', '-')} "
        f"metric, {len(plan.head) + len(plan.tail)} steps",
        estimator=plan.estimator.name.lower(),
        restart_cost=restart.cost,
    )
    ledger.recent.clear()
    since = ledger.steps
    for piece in ph.window_rows(plan.head):
        ledger.windows += 1
        chains, outs = ph.advance(ctx, chains, ledger, piece, phase=f"recovery window {ledger.windows}",
                               estimator=plan.estimator)
        chains = ph.rescue(ctx, chains, ledger, outs)
        if transport is not None and ledger.steps - since >= ts.TRY_AFTER and ts.may_try(ledger, budget):
            found = ts.attempt(ctx, chains, ledger, transport, budget, since=since,
                               why=f"transport stage after {ledger.steps - since} recovery steps")
            if found is not None:
                return found
    chains = ph.extend(ctx, chains, ledger, wu.last_window(plan.head), len(plan.tail), budget,
                    estimator=plan.estimator, phase="recovery window")
    if len(plan.tail):
        chains, _ = ph.advance(ctx, chains, ledger, plan.tail, phase="warmup final buffer", estimator=plan.estimator)
    return ctx, chains
