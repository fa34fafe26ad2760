r"""The phases of one :func:`gnomon.sample` call, as functions over typed state.

A run is a sequence of phases over the same compiled program (:mod:`gnomon.sampler.loop`):

1. **seed check** (:func:`check_seed`): the first warmup steps around a seed (NUTS: depth capped), judged
   by :mod:`gnomon.sampler.seed_check` against the kernel family's behaviour on :math:`N(0, I)`;
2. **warmup windows** (:func:`seeded_warmup`): the rest of the seeded schedule, window by window, each
   window's cost and step size judged again; then further doubling windows while the metric is unsettled
   (:func:`extend`) — or, for a family tuned by its own stage (MCLMC), that stage
   (:mod:`gnomon.sampler.own_tuning`);
3. **recovery** (:func:`gnomon.sampler.recovery.recover`) when the seed is rejected — or straight away when
   the optimizer found no mode: the adaptation restarts where a cold start would, with a gradient-based
   estimator and a cold window schedule that is extended while unsettled; after each window, stuck chains
   are moved to the others (:func:`rescue`);
4. **sampling** (:func:`draw`).

The phases speak the kernel protocol's common statistics (:mod:`gnomon.sampler.protocol`): gradient
evaluations per draw, acceptance, divergences; nothing here knows which kernel runs.

State: :class:`Context` (what a call fixes), :class:`Chains` (the chains, the adaptation and the whitening
between phases, on the device) and :class:`gnomon.sampler.decisions.Ledger` (what has been spent and decided,
on the host). Every decision — seed kept or rejected, recovery, extension, tuning — is a typed
:class:`gnomon.sampler.decisions.Decision` in ``trace.info``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.sampler import seed_check as sc
from gnomon.sampler import warmup as wu
from gnomon.sampler.decisions import Action, Ledger
from gnomon.sampler.diagnosis import coordinate_names
from gnomon.sampler.loop import ChunkArgs, ChunkOut, SamplerProgram, SamplerSettings, cat, run_chunks, shard
from gnomon.sampler.stuck_chains import find_stuck
from gnomon.sampler.warmup import Estimator

# the estimator by the warmup's metric (a frozen metric, "none", that was rejected adapts like "auto")
RECENT_STEPS = 600  # warmup steps kept in ledger.recent (what a transport stage trains on)

ESTIMATORS = {"auto": Estimator.LOW_RANK, "low_rank": Estimator.LOW_RANK, "dense": Estimator.COVARIANCE,
              "diag": Estimator.VARIANCE, "none": Estimator.NONE}


def estimator_for(metric: str, dim: int, max_dense_dim: int, *, recovering: bool = False) -> Estimator:
    """The adaptation's estimator for the warmup's ``metric``: ``"auto"`` is nutpie's low-rank metric
    (measured ≥ the whitened variances on every near-Gaussian benchmark target, 1.6× on the banana); dense
    estimators fall back to the whitened variances beyond ``max_dense_dim``, where dense moments are not
    formed; a recovery never keeps a frozen metric."""
    est = ESTIMATORS["auto" if recovering and metric == "none" else metric]
    if est in wu.DENSE_ESTIMATORS and dim > max_dense_dim:
        return Estimator.VARIANCE
    return est


class Context(NamedTuple):
    """What one call fixes."""

    obj: Objective
    settings: SamplerSettings
    program: SamplerProgram
    data: Any
    key: Any  # the warmup's key; step t uses fold_in(key, t)
    dim: int
    max_depth: int  # the kernel's depth cap (NUTS' max_tree_depth; 0 for a kernel without one)
    reference: Any  # the kernel's (step size, gradient evaluations per draw | None) on N(0, I_D), or None
    keep_warmup: bool
    num_samples: int
    bar: Any  # a Progress
    shrink: Any
    target: Any  # the kernel's target acceptance rate (an argument of the compiled program)


class Chains(NamedTuple):
    """The chains between phases: their states, the adaptation and the whitening ``u = L⁻¹θ``."""

    states: Any
    adapt: Any  # warmup.AdaptState
    factor: Any  # L
    factor_inv: Any  # L⁻¹


def _args(ctx: Context, chains: Chains) -> ChunkArgs:
    return ChunkArgs(ctx.data, chains.factor, chains.factor_inv, ctx.shrink, ctx.target)


def advance(
    ctx: Context,
    chains: Chains,
    ledger: Ledger,
    rows: np.ndarray,
    *,
    phase: str,
    estimator: Estimator,
    depth: int | None = None,
) -> tuple[Chains, list[ChunkOut]]:
    """Run the warmup rows ``rows`` (steps × (slow?, window end?)); count, show and keep their outputs."""
    outs: list[ChunkOut] = []
    states, ad = chains.states, chains.adapt
    for ch in run_chunks(
        ctx.program,
        ctx.settings,
        states,
        ad,
        ctx.key,
        ledger.steps,
        rows,
        adapting=True,
        depth=ctx.max_depth if depth is None else depth,
        estimator=int(estimator),
        args=_args(ctx, chains),
    ):
        states, ad, out = ch.states, ch.adapt, ch.out
        outs.append(out)
        remember(ledger, out)
        ledger.steps += out.n_steps.shape[0]
        ledger.grads += int(np.sum(out.n_steps))
        ledger.divergences += int(np.sum(out.diverging))
        if ctx.keep_warmup:
            ledger.kept.append(out)
        ctx.bar.update(
            ledger.steps,
            phase=phase,
            steps_per_draw=round(float(np.mean(out.n_steps)), 1),
            step_size=float(ad.step_size),
            divergences=ledger.divergences,
        )
    return chains._replace(states=states, adapt=ad), outs


def remember(ledger: Ledger, out: ChunkOut) -> None:
    """Keep a warmup chunk's outputs in ``ledger.recent`` (the latest :data:`RECENT_STEPS` steps; a restart
    clears them)."""
    ledger.recent.append(out)
    total = sum(o.theta.shape[0] for o in ledger.recent)
    while len(ledger.recent) > 1 and total - ledger.recent[0].theta.shape[0] >= RECENT_STEPS:
        total -= ledger.recent.pop(0).theta.shape[0]


def window_rows(rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` cut after each window end (the last piece may hold no window end)."""
    ends = list(np.flatnonzero(rows[:, 1]) + 1)
    cuts = [0, *ends] + ([len(rows)] if not ends or ends[-1] != len(rows) else [])
    return [rows[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


# ------------------------------------------------------------------------------------------------ seed check
def check_seed(
    ctx: Context, chains: Chains, ledger: Ledger, rows: np.ndarray, center: Any, *, what: str = "seed"
) -> tuple[Chains, sc.Verdict, ChunkOut]:
    """The first warmup steps ``rows`` around the seed (a depth cap lowered where the kernel has one and an
    expected cost), and their verdict; a seed that fails grossly within the first
    :data:`~gnomon.sampler.seed_check.EARLY_STEPS` is rejected there. The verdict is a ``"seed kept"`` /
    ``"seed rejected"`` decision when ``what`` is ``"seed"``; otherwise (a transport map judged in z) the
    caller records its own."""
    cost = ctx.reference[1] if ctx.reference is not None else None
    depth = sc.check_depth(cost, ctx.max_depth) if (ctx.max_depth and cost is not None) else None
    outs: list[ChunkOut] = []
    v = None
    for part in (rows[: sc.EARLY_STEPS], rows[sc.EARLY_STEPS :]):
        if not len(part):
            continue
        chains, more = advance(ctx, chains, ledger, part, phase="seed check", estimator=Estimator.VARIANCE,
                               depth=depth)
        outs += more
        out = cat(outs)
        v = sc.verdict(
            out.n_steps,
            out.extras.get("tree_depth"),
            out.theta,
            float(chains.adapt.step_size),
            dim=ctx.dim,
            depth_cap=depth,
            reference=ctx.reference,
            center=np.asarray(center),
            factor_inv=np.asarray(chains.factor_inv),
            what=what,
            when=ledger.steps,
            names=coordinate_names(ctx.obj.layout, ctx.dim) if what == "seed" else None,
        )
        if ledger.steps < len(rows) and not sc.gross(v):
            continue
        break
    if what == "seed":
        ledger.decide(Action.SEED_REJECTED if v.rejected else Action.SEED_KEPT, v.message, check=v.as_info())
    return chains, v, out


def seeded_warmup(
    ctx: Context, chains: Chains, ledger: Ledger, rows: np.ndarray, *, estimator: Estimator, check: bool,
    what: str = "seed",
) -> tuple[Chains, sc.Verdict | None, ChunkOut | None]:
    """The seeded schedule's windows ``rows``, each judged for cost and step size when ``check``; returns
    the chains, the verdict that rejected the seed (or None) and the outputs of the rejected window (a
    ``"seed rejected"`` decision when ``what`` is ``"seed"``)."""
    for piece in window_rows(rows):
        ledger.windows += 1
        chains, outs = advance(ctx, chains, ledger, piece, phase=f"warmup window {ledger.windows}", estimator=estimator)
        if not outs:
            continue
        out = cat(outs)
        window_rhat(ledger, out.theta)
        if not check:
            continue
        v = sc.verdict(
            out.n_steps,
            out.extras.get("tree_depth"),
            None,
            float(chains.adapt.step_size),
            dim=ctx.dim,
            depth_cap=None,
            reference=ctx.reference,
            what=f"{what} (warmup window {ledger.windows})",
            when=ledger.steps,
        )
        if v.rejected:
            if what == "seed":
                ledger.decide(Action.SEED_REJECTED, v.message, check=v.as_info())
            return chains, v, out
    return chains, None, None


# ------------------------------------------------------------------------------------------------ extension
def extend(
    ctx: Context,
    chains: Chains,
    ledger: Ledger,
    last: int,
    tail: int,
    budget: int,
    *,
    estimator: Estimator,
    phase: str,
) -> Chains:
    """Insert doubling windows (``2 × last`` steps each) while the metric is unsettled and ``budget``
    allows (counting the final buffer ``tail``)."""
    while last:
        s = wu.unsettled(chains.adapt, ctx.dim)
        if not s.unsettled:
            break
        if ledger.steps + 2 * last + tail > budget:
            ledger.decide(Action.BUDGET, f"warmup not extended at step {ledger.steps}: {s.reason}, but the warmup "
                          f"budget (max_steps={budget}) is spent")
            break
        last *= 2
        ledger.extended.append(last)
        ledger.windows += 1
        ctx.bar.total += last
        ledger.decide(Action.WARMUP_EXTENDED, f"warmup extended by a window of {last} steps: {s.reason}")
        chains, outs = advance(ctx, chains, ledger, wu.extra_window(last), phase=f"{phase} {ledger.windows}",
                               estimator=estimator)
        chains = rescue(ctx, chains, ledger, outs)
    return chains


def rescue(ctx: Context, chains: Chains, ledger: Ledger, outs: list[ChunkOut]) -> Chains:
    """Move the chains that the window ``outs`` left stuck (:mod:`gnomon.sampler.stuck_chains`: only chains
    that cannot sample where they are — never a chain that samples another mode) to the current positions of
    chains that are not; each move costs one gradient evaluation per chain (the new states) and is recorded
    with where the chain was. Also records the window's R̂ (:func:`window_rhat`)."""
    if not outs:
        return chains
    out = cat(outs)
    window_rhat(ledger, out.theta)
    stuck = find_stuck(out.theta, out.n_steps, np.random.default_rng(ledger.steps), out.log_prob)
    if not stuck.chains:
        return chains
    pos = np.array(chains.states.position)
    for c, d in zip(stuck.chains, stuck.donors, strict=True):
        pos[c] = pos[d]
    states = shard(ctx.program.init(jnp.asarray(pos), ctx.data), pos.shape[0])
    ledger.restart_grads += pos.shape[0]
    moved = "; ".join(
        f"chain {c} ({why}; it was at θ ≈ {_short(mean)}, log density {lp:.4g}) to chain {d}'s position"
        for c, d, why, (mean, lp) in zip(stuck.chains, stuck.donors, stuck.reasons, stuck.where, strict=True)
    )
    ledger.decide(Action.CHAINS_MOVED, f"stuck chains moved at warmup step {ledger.steps}: {moved}",
                  chains=list(stuck.chains), donors=list(stuck.donors),
                  was_at=[np.asarray(m, np.float64).tolist() for m, _ in stuck.where],
                  was_log_prob=[lp for _, lp in stuck.where])
    return chains._replace(states=states)


def _short(x: np.ndarray, n: int = 4) -> str:
    x = np.asarray(x, np.float64).ravel()
    body = ", ".join(f"{v:.3g}" for v in x[:n])
    return f"[{body}{', …' if x.size > n else ''}]"


def window_rhat(ledger: Ledger, theta: np.ndarray) -> None:
    """Record the largest R̂ (arviz-stats, rank-normalised split) of one warmup window's draws ``theta``
    (steps, chains, D) in ``ledger.rhat`` as ``(warmup step, R̂, coordinate)`` — what the chains said while
    they adapted, kept even when a later move or window hides it."""
    th = np.asarray(theta, np.float64)
    if th.shape[0] < 8 or th.shape[1] < 2 or not np.all(np.isfinite(th)):
        return
    from gnomon.sampler.health import max_rhat

    r = max_rhat(np.swapaxes(th, 0, 1))
    if r is not None:
        ledger.rhat.append((ledger.steps, r[0], r[1]))


# ------------------------------------------------------------------------------------------------ sampling
def draw(ctx: Context, chains: Chains, key: Any, num_samples: int, t_offset: int) -> tuple[Chains, list[ChunkOut]]:
    """``num_samples`` draws with the adapted step size and metric fixed."""
    outs: list[ChunkOut] = []
    states, ad = chains.states, chains.adapt
    done, div = 0, 0
    for ch in run_chunks(
        ctx.program,
        ctx.settings,
        states,
        ad,
        key,
        0,
        np.zeros((num_samples, 2), np.int32),
        adapting=False,
        depth=ctx.max_depth,
        estimator=int(Estimator.NONE),
        args=_args(ctx, chains),
    ):
        states, ad, out = ch.states, ch.adapt, ch.out
        outs.append(out)
        done += out.n_steps.shape[0]
        div += int(np.sum(out.diverging))
        ctx.bar.update(
            t_offset + done,
            force=done == num_samples,
            phase="sampling",
            steps_per_draw=round(float(np.mean(out.n_steps)), 1),
            step_size=float(ad.step_size),
            divergences=div,
        )
    return chains._replace(states=states, adapt=ad), outs


def probe(ctx: Context, chains: Chains, key: Any, starts: np.ndarray, num_steps: int) -> tuple[ChunkOut, int] | None:
    """``num_steps`` steps of the sampler with the adapted step size and metric fixed (no adaptation) from
    ``starts`` (C, D) — :mod:`gnomon.sampler.modes`' probe; the sampling chains are not touched. Returns the
    outputs (steps, C, ...) and their cost in gradient evaluations, or None when no start is finite."""
    dtype = chains.states.position.dtype
    states = ctx.program.init(jnp.asarray(starts, dtype), ctx.data)
    ok = np.isfinite(np.asarray(states.logdensity)) & np.all(np.isfinite(np.asarray(states.logdensity_grad)), axis=1)
    cost = int(starts.shape[0])
    if not ok.any():
        return None
    if not ok.all():  # a start outside the support takes the place of one inside it
        fill = np.asarray(starts)[np.flatnonzero(ok)[np.arange(len(ok)) % int(ok.sum())]]
        states = ctx.program.init(jnp.asarray(np.where(ok[:, None], starts, fill), dtype), ctx.data)
        cost += int(starts.shape[0])
    states = shard(states, starts.shape[0])
    outs = [ch.out for ch in run_chunks(ctx.program, ctx.settings, states, chains.adapt, key, 0,
                                        np.zeros((num_steps, 2), np.int32), adapting=False, depth=ctx.max_depth,
                                        estimator=int(Estimator.NONE), args=_args(ctx, chains))]
    out = cat(outs)
    return out, cost + int(np.sum(out.n_steps))


def finite_step_size(step: Any) -> float:
    s = float(np.asarray(step))
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"warmup ended with an unusable step size {s!r}")
    return s


def replace_adapt(chains: Chains, step_size: Any, imm: Any) -> Chains:
    """The chains with the adaptation's step size and metric set (for sampling)."""
    dtype = chains.states.position.dtype
    ad = chains.adapt._replace(step_size=jnp.asarray(step_size, dtype), imm=jnp.asarray(imm, dtype))
    return chains._replace(adapt=ad)
