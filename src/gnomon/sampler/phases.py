r"""The phases of one :func:`gnomon.sample` call, as functions over typed state.

A run is a sequence of phases over the same compiled program (:mod:`gnomon.sampler.loop`):

1. **seed check** (:func:`check_seed`): the first warmup steps around a seed, NUTS depth capped, judged by
   :mod:`gnomon.sampler.seed_check`;
2. **warmup windows** (:func:`seeded_warmup`): the rest of the seeded schedule, window by window, each
   window's cost and step size judged again; then further doubling windows while the metric is unsettled
   (:func:`extend`);
3. **recovery** (:func:`recover`) when the seed is rejected — or straight away when the optimizer found no
   mode: the adaptation restarts where a cold start would (:func:`choose_restart`) with a gradient-based
   estimator (nutpie's low-rank metric, :class:`gnomon.sampler.warmup.Estimator`) and a cold window schedule
   that is extended while unsettled; after each window, stuck chains are moved to the others
   (:func:`rescue`);
4. **sampling** (:func:`draw`).

State: :class:`Context` (what a call fixes), :class:`Chains` (the chains, the adaptation and the whitening
between phases, on the device) and :class:`Ledger` (what has been spent and decided, on the host). Every
decision — seed kept or rejected, recovery, extension — is a :class:`Decision` in ``trace.info``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.sampler import seed_check as sc
from gnomon.sampler import warmup as wu
from gnomon.sampler.loop import ChunkArgs, ChunkOut, SamplerProgram, SamplerSettings, compiled, run_chunks, shard
from gnomon.sampler.stuck_chains import find_stuck
from gnomon.sampler.warmup import Estimator

# the recovery's schedule: with the gradient-based low-rank estimator a short fast buffer and short first
# windows (it is exact for a Gaussian from a few dozen draws, and every chain's draws are pooled), doubling
# after that; with the draws' (co)variances Stan's buffers (75, 25, 50)
RECOVERY_STEPS = 600
RECOVERY_BUFFERS = {"gradient": (15, 15, 50), "draws": (75, 25, 50)}
# the estimator by the warmup's metric (a frozen metric, "none", that was rejected adapts like "auto")
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
    max_depth: int  # the kernel's NUTS depth (0 for HMC)
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


class Decision(NamedTuple):
    """One thing the sampler decided, when (warmup step) and why."""

    step: int
    action: str  # "seed kept" | "seed rejected" | "no mode" | "recovery" | "warmup extended" | "chains moved"
    #              | "budget"
    message: str
    details: dict

    def as_info(self) -> dict[str, Any]:
        return {"step": self.step, "action": self.action, "message": self.message, **self.details}


@dataclass
class Ledger:
    """What the run has spent and decided so far (host side)."""

    steps: int = 0  # warmup steps
    grads: int = 0  # warmup gradient evaluations
    divergences: int = 0  # warmup divergences
    rejected_grads: int = 0  # of which spent around a seed that was then rejected
    restart_grads: int = 0  # new chain states: the recovery's restart, moved chains
    check_grads: int = 0  # the improper-direction check and the mode probe
    windows: int = 0
    kept: list[ChunkOut] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    extended: list[int] = field(default_factory=list)
    estimator: Estimator | None = None  # the recovery's, once there is one
    rhat: list[tuple[int, float, int]] = field(default_factory=list)  # per window: (step, max R̂, coordinate)

    def decide(self, action: str, message: str, **details: Any) -> Decision:
        d = Decision(self.steps, action, message, details)
        self.decisions.append(d)
        return d


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


def _cat(outs: list[ChunkOut]) -> ChunkOut:
    return ChunkOut(*(np.concatenate(parts, axis=0) for parts in zip(*outs, strict=True)))


def _window_rows(rows: np.ndarray) -> list[np.ndarray]:
    """``rows`` cut after each window end (the last piece may hold no window end)."""
    ends = list(np.flatnonzero(rows[:, 1]) + 1)
    cuts = [0, *ends] + ([len(rows)] if not ends or ends[-1] != len(rows) else [])
    return [rows[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


# ------------------------------------------------------------------------------------------------ seed check
def check_seed(
    ctx: Context, chains: Chains, ledger: Ledger, rows: np.ndarray, center: Any
) -> tuple[Chains, sc.Verdict, ChunkOut]:
    """The first warmup steps ``rows`` around the seed with the NUTS depth capped, and their verdict; a seed
    that fails grossly within the first :data:`~gnomon.sampler.seed_check.EARLY_STEPS` is rejected there."""
    depth = sc.check_depth(ctx.dim, ctx.max_depth) if ctx.max_depth else None
    outs: list[ChunkOut] = []
    v = None
    for part in (rows[: sc.EARLY_STEPS], rows[sc.EARLY_STEPS :]):
        if not len(part):
            continue
        chains, more = advance(ctx, chains, ledger, part, phase="seed check", estimator=Estimator.VARIANCE,
                               depth=depth)
        outs += more
        out = _cat(outs)
        v = sc.verdict(
            out.n_steps,
            out.tree_depth,
            out.theta,
            float(chains.adapt.step_size),
            dim=ctx.dim,
            depth_cap=depth,
            center=np.asarray(center),
            factor_inv=np.asarray(chains.factor_inv),
            when=ledger.steps,
            nuts=bool(ctx.max_depth),
        )
        if ledger.steps < len(rows) and not sc.gross(v):
            continue
        break
    ledger.decide("seed rejected" if v.rejected else "seed kept", v.message, check=v.as_info())
    return chains, v, out


def seeded_warmup(
    ctx: Context, chains: Chains, ledger: Ledger, rows: np.ndarray, *, estimator: Estimator, check: bool
) -> tuple[Chains, sc.Verdict | None, ChunkOut | None]:
    """The seeded schedule's windows ``rows``, each judged for cost and step size when ``check``; returns
    the chains, the verdict that rejected the seed (or None) and the outputs of the rejected window."""
    for piece in _window_rows(rows):
        ledger.windows += 1
        chains, outs = advance(ctx, chains, ledger, piece, phase=f"warmup window {ledger.windows}", estimator=estimator)
        if not outs:
            continue
        out = _cat(outs)
        window_rhat(ledger, out.theta)
        if not check:
            continue
        v = sc.verdict(
            out.n_steps,
            out.tree_depth,
            None,
            float(chains.adapt.step_size),
            dim=ctx.dim,
            depth_cap=None,
            what=f"seed (warmup window {ledger.windows})",
            when=ledger.steps,
            nuts=bool(ctx.max_depth),
        )
        if v.rejected:
            ledger.decide("seed rejected", v.message, check=v.as_info())
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
            ledger.decide("budget", f"warmup not extended at step {ledger.steps}: {s.reason}, but the warmup "
                          f"budget (max_steps={budget}) is spent")
            break
        last *= 2
        ledger.extended.append(last)
        ledger.windows += 1
        ctx.bar.total += last
        ledger.decide("warmup extended", f"warmup extended by a window of {last} steps: {s.reason}")
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
    out = _cat(outs)
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
    ledger.decide("chains moved", f"stuck chains moved at warmup step {ledger.steps}: {moved}",
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


# ------------------------------------------------------------------------------------------------ recovery
class RecoveryPlan(NamedTuple):
    """How a recovery adapts: the estimator, the program's static shape and the schedule."""

    estimator: Estimator
    settings: SamplerSettings
    head: np.ndarray
    tail: np.ndarray


def recovery_plan(ctx: Context, metric: str, max_dense_dim: int, num_steps: int) -> RecoveryPlan:
    """The estimator for the warmup's ``metric`` after a recovery (``"auto"``: nutpie's low-rank metric where
    dense moments fit, ``D ≤ max_dense_dim``, else the draws' variances) and a cold schedule of ``num_steps``."""
    est = estimator_for(metric, ctx.dim, max_dense_dim, recovering=True)
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
    ctx: Context,
    chains: Chains,
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
    ctx: Context,
    chains: Chains,
    ledger: Ledger,
    plan: RecoveryPlan,
    restart: Restart,
    budget: int,
    *,
    step_size: float = 1.0,
) -> tuple[Context, Chains]:
    """Restart the adaptation from ``restart`` with the plan's estimator and schedule (extended while
    unsettled, within ``budget`` warmup steps)."""
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
    chains = Chains(states, ad, factor, factor_inv)
    ledger.restart_grads += restart.cost
    ctx.bar.total = ledger.steps + len(plan.head) + len(plan.tail) + ctx.num_samples
    ledger.estimator = plan.estimator
    ledger.decide(
        "recovery",
        f"recovery at warmup step {ledger.steps}: {restart.source}; {plan.estimator.name.lower().replace('_', '-')} "
        f"metric, {len(plan.head) + len(plan.tail)} steps",
        estimator=plan.estimator.name.lower(),
        restart_cost=restart.cost,
    )
    for piece in _window_rows(plan.head):
        ledger.windows += 1
        chains, outs = advance(ctx, chains, ledger, piece, phase=f"recovery window {ledger.windows}",
                               estimator=plan.estimator)
        chains = rescue(ctx, chains, ledger, outs)
    chains = extend(ctx, chains, ledger, wu.last_window(plan.head), len(plan.tail), budget,
                    estimator=plan.estimator, phase="recovery window")
    if len(plan.tail):
        chains, _ = advance(ctx, chains, ledger, plan.tail, phase="warmup final buffer", estimator=plan.estimator)
    return ctx, chains


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
    out = _cat(outs)
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
