r"""`sample`: NUTS/HMC chains (BlackJAX kernels) with a curvature seed that is checked and recovered from.

The MAP → NUTS hand-off
-----------------------
A posterior that is locally Gaussian around its mode θ* with precision :math:`H` has covariance
:math:`\Sigma \approx H^{-1}`. :func:`sample` uses that twice: the **metric** :math:`M^{-1}` is seeded from
the curvature at the start, and the **chains start** from "Laplace draws" :math:`θ^* + L\varepsilon_c`,
:math:`LL^T \approx H^{-1}`, inside the typical set rather than at the mode
(:mod:`gnomon.sampler.starts`). The warmup then *keeps adapting* in the seed's whitened coordinates
:math:`u = L^{-1}θ` (:mod:`gnomon.sampler.warmup`: Stan's windows, dual averaging, every chain's draws
pooled) and needs far fewer steps.

The seed is a hypothesis
------------------------
Where the curvature at the mode does not describe the posterior — a funnel, a centred hierarchical model
whose mode sits in the neck, a latent time series whose scales collapse at the mode — the seed is wrong and
trusting it costs 10–1000× in gradients. So the first warmup steps check it (NUTS depth capped, so a wrong
seed is cheap to find out; :mod:`gnomon.sampler.seed_check`) and every later window is judged again; a
rejected seed, or an optimizer that found no mode at all, leads to a **recovery**: the adaptation restarts
where a cold start would (dispersed around the optimizer's first point; where the chains are, with their
pooled scales, when no optimizer ran) with nutpie's gradient-based low-rank metric and a cold window schedule,
and chains left stuck are moved to the others (:mod:`gnomon.sampler.phases`,
:mod:`gnomon.sampler.stuck_chains`). What was decided, when and why is in ``trace.info["decisions"]`` (one
sentence: ``trace.info["handoff"]["decision"]``).

This module is the driver: it checks the arguments, resolves the start, the seed and the compiled program,
runs the phases and assembles the :class:`Trace` with the hand-off diagnostics
(:mod:`gnomon.sampler.diagnostics`).

Cost accounting: every log-density gradient counts one — the start of each chain, each leapfrog step
(NUTS ``num_integration_steps``) in warmup (the rejected part included) and sampling, plus the curvature's
own cost. Timing: ``info["compile_s"]`` (lowering and compiling the sampler's programs) and
``info["run_s"]`` (everything else: curvature, starts, warmup, sampling); ``runtime_s`` is their sum.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective, data_digest
from gnomon.sampler import checks as ck
from gnomon.sampler import diagnosis as dg
from gnomon.sampler import metric as mmx
from gnomon.sampler import phases as ph
from gnomon.sampler import warmup as wu
from gnomon.sampler.config import NUTS, Warmup, as_kernel, as_warmup, misplaced
from gnomon.sampler.diagnostics import handoff_diagnostics
from gnomon.sampler.handoff import HandOffBundle
from gnomon.sampler.health import chain_health, mode_note
from gnomon.sampler.loop import STAT_NAMES, SamplerSettings, compile_seconds, compiled, shard, stack
from gnomon.sampler.seed_check import CHECK_STEPS
from gnomon.sampler.starts import (
    Seed,
    Start,
    dispersed_starts,
    no_mode,
    resolve_init,
    seed_metric,
    start_center,
    start_positions,
)
from gnomon.sampler.warmup import AdaptSettings, Estimator
from gnomon.trace.trace import Trace
from gnomon.util.progress import Progress
from gnomon.util.validate import as_key

DEFAULT_WARMUP = {"identity": 1000, "curvature": 300, "array": 300, "handoff": 150, "frozen": 150}
_DEFAULT = object()


def _as_key(key: Any):
    """A PRNG key from a typed key, a legacy uint32 (2,) key or an int seed (:func:`gnomon.util.validate.as_key`)."""
    return as_key(key)


def _key_data(key) -> np.ndarray:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an int ≥ {lo}, got {v!r}")
    return int(v)


def _warn(messages: list[str], msg: str) -> None:
    messages.append(msg)
    warnings.warn(msg, UserWarning, stacklevel=3)


def sample(
    obj: Objective,
    init: Any,
    key: Any,
    *,
    num_chains: int = 4,
    num_warmup: int | None = None,
    num_samples: int = 1000,
    kernel: Any = "nuts",
    warmup: Any = None,
    inverse_mass_matrix: Any = "curvature",
    handoff: Any = None,
    keep_warmup: bool = False,
    data: Any = _DEFAULT,
    progress: bool | None = None,
    **misplaced_options: Any,
) -> Trace:
    r"""Draw ``num_samples`` per chain from ``exp(obj.log_prob)`` with NUTS (or HMC).

    Args:
      obj: the :class:`gnomon.Objective`; its ``log_prob`` (Jacobian included) is the target.
      init: a θ ``(D,)`` (each chain starts from a jittered copy), per-chain starts ``(C, D)``, an
        optimization :class:`Trace` (its best θ — the MAP hand-off; a batch of ``C`` fits gives one start
        per chain), a sampling Trace (continue from its last draws) or a :class:`gnomon.HandOff`.
      key: a ``jax.random.key`` (or an int seed).
      num_chains: chains ``C`` (vmapped; sharded over devices when there are several).
      num_warmup: warmup steps (the same as ``gn.warmup(num_steps=...)``; default by the seed, see
        :class:`gnomon.sampler.config.Warmup`).
      num_samples: draws kept per chain.
      kernel: ``"nuts"`` (default), ``"hmc"``, :func:`gnomon.nuts` or :func:`gnomon.hmc` (tree depth, target
        acceptance rate, divergence threshold, initial step size, leapfrog steps).
      warmup: :func:`gnomon.warmup` (warmup length and budget, the adapted metric, the curvature behind the
        seed, dense or diagonal seed, jitter, the seed check), a metric name, or None for the defaults.
      inverse_mass_matrix: the metric seed: ``"curvature"`` (from the curvature of ``−log_prob`` at the
        start, see :mod:`gnomon.sampler.metric`), an array ``(D,)``/``(D, D)``, a
        :class:`gnomon.Curvature`, an ``InverseMassMatrix``, or None / ``"identity"``.
      handoff: a :class:`gnomon.HandOff` from an earlier run: seeds the metric and the step size with its
        adapted ones (and the warmup is short).
      keep_warmup: also return the warmup draws (``trace.warmup``).
      data: data for objectives that take it (default: the objective's bound data).
      progress: progress bar on stderr (default: on a terminal, for runs of at least 2000 chain-steps); it
        names the phase (curvature, seed check, warmup window k, recovery window k, sampling) and shows the
        leapfrog steps per draw.

    Returns:
      a sampling :class:`Trace`: ``theta`` ``(C, N, D)`` unconstrained draws, ``log_prob`` ``(C, N)``,
      ``stats`` (``acceptance_rate``, ``diverging``, ``energy``, ``n_steps``, ``step_size``, ``tree_depth``),
      ``warmup`` when kept, ``num_grad_evals`` (curvature + starts + warmup + sampling), ``info`` (settings,
      adapted step size, cost breakdown, ``compile_s``/``run_s``, the sampler's ``decisions``, hand-off
      diagnostics and its ``diagnosis`` of a failed seed, ``health`` — R̂ against 1.01, divergences, E-BFMI
      per chain, the warmup windows' R̂, separate modes, a mode found by the probe, a neck the draws never
      entered (:mod:`gnomon.sampler.health`, :mod:`gnomon.sampler.modes`) — and warnings) and ``extras``
      (the adapted and seeded inverse mass matrices, θ*, last positions, key) from which
      :meth:`gnomon.HandOff.from_trace` builds the hand-off bundle.

    Raises:
      ValueError: for bad input, naming the value; for an option that belongs elsewhere (e.g.
        ``max_tree_depth=`` belongs to ``kernel=gn.nuts(...)``), naming where; for an improper direction
        (``log_prob`` flat or growing along a coordinate out to 1024 of its scales), naming the coordinate,
        before the warmup (:func:`gnomon.sampler.diagnosis.improper_directions`).
    """
    t_start = time.perf_counter()
    compiled_before = compile_seconds()
    misplaced("gn.sample", misplaced_options)
    if not isinstance(obj, Objective):
        raise ValueError(f"sample needs a gnomon.Objective, got {type(obj).__name__}")
    kern = as_kernel(kernel)
    wcfg = as_warmup(warmup)
    num_chains = _int("num_chains", num_chains, 1)
    num_samples = _int("num_samples", num_samples, 1)
    if num_warmup is not None:
        num_warmup = _int("num_warmup", num_warmup, 0)
        if wcfg.num_steps is not None and wcfg.num_steps != num_warmup:
            raise ValueError(
                f"num_warmup={num_warmup} and warmup=gn.warmup(num_steps={wcfg.num_steps}) disagree; give one"
            )
        wcfg = wcfg.replace(num_steps=num_warmup)
    if handoff is not None and not isinstance(handoff, HandOffBundle):
        raise ValueError(f"handoff must be a gnomon.HandOff, got {type(handoff).__name__}")
    key = _as_key(key)
    data = obj.data if data is _DEFAULT else data
    start = resolve_init(obj, init, num_chains)
    messages: list[str] = []
    k_curv, k_jit, k_warm, k_samp = jax.random.split(key, 4)
    ledger = ph.Ledger()

    # --- no mode: no seed, no seed check ---------------------------------------------------------------
    lp_best = None
    origin = ck.probe_origin(start)  # where a cold start would begin: the probe for modes starts around it
    if start.source == "optimization trace" and start.center is not None:
        lp_best = float(obj.log_prob(start.center) if data is obj.data else obj.log_prob(start.center, data))
    mode_problem = no_mode(start, obj.dim, lp_best)
    if mode_problem is not None and not wcfg.check:
        _warn(messages, f"{mode_problem}: its best point is a poor start (warmup check=False: used anyway)")
    # --- the seed, the settings, the program, the starts ---------------------------------------------------
    try:
        prep = _prepare(obj, start, kern, wcfg, inverse_mass_matrix, handoff, data, num_chains,
                        unseeded=mode_problem is not None and wcfg.check, keys=(k_curv, k_jit))
    except _NoUsableStart as exc:
        mode_problem, ledger.restart_grads = exc.args[0], exc.args[1]
        prep = _prepare(obj, start, kern, wcfg, inverse_mass_matrix, handoff, data, num_chains, unseeded=True,
                        keys=(k_curv, k_jit))
    if mode_problem is not None and prep.unseeded:
        ledger.decide("no mode", f"{mode_problem}: no seed to check; the warmup starts as a recovery")
    names = dg.coordinate_names(obj.layout, obj.dim)
    ledger.check_grads += ck.check_proper(prep.states, prep.positions, prep.center, prep.imm0, prep.program, data,
                                          names)
    start, seed, imm0, est, settings, program = prep.start, prep.seed, prep.imm0, prep.est, prep.settings, prep.program
    unseeded, center = prep.unseeded, prep.center
    dtype = center.dtype
    center_np = np.asarray(center)
    frozen = wcfg.metric == "none"
    seeded = seed.kind != "identity"
    num_warmup = wcfg.num_steps
    auto_warmup = num_warmup is None
    if auto_warmup:
        num_warmup = ph.RECOVERY_STEPS if unseeded else DEFAULT_WARMUP["frozen" if frozen and seeded else seed.kind]
    step0 = kern.step_size if kern.step_size is not None else (float(handoff.step_size) if handoff else 1.0)
    big = (num_warmup + num_samples) * num_chains >= 2000
    bar = Progress(
        num_warmup + num_samples,
        f"{kern.name} ×{num_chains}",
        enabled=progress if progress is not None else (None if big else False),
    )

    states, positions, init_cost = prep.states, prep.positions, prep.init_cost
    factor = jnp.asarray(imm0.factor, dtype)
    factor_inv = jnp.asarray(imm0.factor_inv, dtype)
    jitter = prep.jitter
    ctx = ph.Context(
        obj=obj,
        settings=settings,
        program=program,
        data=data,
        key=k_warm,
        dim=obj.dim,
        max_depth=kern.max_tree_depth if isinstance(kern, NUTS) else 0,
        keep_warmup=keep_warmup,
        num_samples=num_samples,
        bar=bar,
        shrink=jnp.asarray(wcfg.shrinkage, dtype),
        target=jnp.asarray(kern.target_acceptance_rate, dtype),
    )
    ad = program.adapt_init(positions, jnp.asarray(step0, dtype), factor)
    chains = ph.Chains(states, ad, factor, factor_inv)

    # --- warmup -----------------------------------------------------------------------------------------
    budget = max(wcfg.max_steps, num_warmup)
    rejected = None
    if num_warmup > 0 and not unseeded:
        ctx, chains, rejected = _seeded(ctx, chains, ledger, wcfg, seed, center, num_warmup, auto_warmup, budget, est)
    if num_warmup > 0 and (unseeded or rejected is not None):
        left = (budget if auto_warmup else num_warmup) - ledger.steps
        steps = min(num_warmup if unseeded else ph.RECOVERY_STEPS, left) if auto_warmup else left
        if steps < 20:
            if steps > 0:  # too short to adapt a metric: the step size only
                chains, _ = ph.advance(ctx, chains, ledger, np.zeros((steps, 2), np.int32), phase="warmup",
                                       estimator=Estimator.NONE)
            ledger.decide("budget", f"no metric adaptation: only {max(steps, 0)} warmup steps left of the budget "
                          "(step size adapted only)")
        else:
            ledger.rejected_grads = ledger.grads
            plan = ph.recovery_plan(ctx, wcfg.metric, wcfg.max_dense_dim, steps)
            # a rejected seed restarts where a cold start would (around the optimizer's first point); without a
            # mode the chains already start there
            restart = ph.choose_restart(
                ctx,
                chains,
                jax.random.fold_in(k_warm, 7),
                first=start.map.first_theta if (start.map is not None and rejected is not None) else None,
                drawn=rejected.theta if rejected is not None else None,
            )
            ctx, chains = ph.recover(ctx, chains, ledger, plan, restart,
                                     budget if auto_warmup else ledger.steps + steps, step_size=step0)
    if num_warmup > 0:
        step_final, imm = ctx.program.adapt_final(chains.adapt)
    else:
        step_final, imm = jnp.asarray(step0, dtype), chains.adapt.imm  # the seed, in the program's shape
    step_size = ph.finite_step_size(step_final)
    chains = ph.replace_adapt(chains, step_final, imm)

    # --- sampling -------------------------------------------------------------------------------------------
    chains, outs = ph.draw(ctx, chains, k_samp, num_samples, ledger.steps)
    draws = stack(outs)
    div_samp = int(np.sum(draws.diverging))
    bar.close(f"{div_samp} divergences")
    findings = ck.findings(ctx, chains, ledger, draws, rejected, origin, jax.random.fold_in(k_samp, 1), names)

    # --- the trace ------------------------------------------------------------------------------------------
    compile_s = compile_seconds() - compiled_before
    return _trace(
        obj, kern, wcfg, start, seed, imm0, center_np, chains, draws, ledger, messages,
        num_chains=num_chains, num_samples=num_samples, step0=step0, step_size=step_size, imm=np.asarray(imm),
        init_cost=init_cost, jitter=jitter, est=est, key=key, t_start=t_start, compile_s=compile_s,
        findings=findings, names=names, lp_best=lp_best, data=data,
    )


class _NoUsableStart(Exception):
    """The Laplace draws around an optimizer's best point leave the support: treat it as no mode."""


class _Prepared(NamedTuple):
    start: Start
    center: Any
    seed: Seed
    imm0: mmx.InverseMassMatrix
    est: Estimator
    settings: SamplerSettings
    program: Any
    unseeded: bool
    states: Any
    positions: Any
    init_cost: int
    jitter: float | None


def _prepare(obj, start, kern, wcfg, inverse_mass_matrix, handoff, data, num_chains, *, unseeded, keys) -> _Prepared:
    """The seed, the adaptation's shape, the compiled program and the chains' starts. Unseeded (no mode, or no
    seed with a gradient-based metric): the identity, and starts around the optimizer's first point."""
    k_curv, k_jit = keys
    if unseeded and start.source == "optimization trace":
        first = start.map.first_theta if start.map is not None else None
        start = Start(jnp.asarray(first) if first is not None else start.center, None, "no mode", start.map)
    center = start_center(start, obj, num_chains)
    dtype = center.dtype
    if unseeded:
        seed = Seed(mmx.identity(obj.dim, dtype=dtype), "identity", None)
    else:
        seed = seed_metric(obj, center, inverse_mass_matrix, handoff, wcfg, key=k_curv,
                           data=None if data is obj.data else data)
    seeded = seed.kind != "identity"
    unseeded = unseeded or (not seeded and wcfg.metric in ("auto", "low_rank") and obj.dim <= wcfg.max_dense_dim)
    est = ph.estimator_for(wcfg.metric, obj.dim, wcfg.max_dense_dim)
    imm0 = seed.imm.as_dense() if (est == Estimator.COVARIANCE and not seed.imm.dense) else seed.imm
    moments_dense = est in wu.DENSE_ESTIMATORS
    settings = SamplerSettings(
        # the first step size and the target acceptance rate are arguments, not compiled in
        kernel=dataclasses.replace(kern, step_size=None, target_acceptance_rate=0.8),
        adapt=AdaptSettings(factor_dense=imm0.dense, scale_dense=moments_dense, moments_dense=moments_dense),
    )
    program = compiled(obj, settings)
    jitter = wcfg.jitter if wcfg.jitter is not None else (1.0 if seeded else 0.1)
    if start.source == "no mode":
        start = start._replace(starts=dispersed_starts(center, k_jit, num_chains))
        jitter = None
    factor = jnp.asarray(imm0.factor, dtype)
    draw_factor = factor if imm0.draw_factor is None else jnp.asarray(imm0.draw_factor, dtype)
    try:
        states, positions, tries = start_positions(
            program.init, data, start, center, draw_factor, jitter or 0.0, k_jit, num_chains
        )
    except ValueError as exc:
        if start.source == "optimization trace" and wcfg.check:
            spent = (int(seed.curvature.num_grad_evals) if seed.curvature is not None else 0) + 7 * num_chains
            msg = f"the Laplace draws around the optimizer's best point leave the support ({exc})"
            raise _NoUsableStart(msg, spent) from None
        raise
    return _Prepared(start, center, seed, imm0, est, settings, program, unseeded, shard(states, num_chains), positions,
                     num_chains * (1 + tries), jitter)


def _seeded(ctx, chains, ledger, wcfg: Warmup, seed: Seed, center, num_warmup: int, auto: bool, budget: int,
            est: Estimator):
    """The warmup around a seed: the check, the windows (each judged), the extension and the final buffer;
    returns ``(ctx, chains, rejected)`` with the outputs that got the seed rejected (None when kept)."""
    seeded = seed.kind != "identity"
    head, tail = wu.schedule(num_warmup, seeded, est != Estimator.NONE)
    last = wu.last_window(head)
    check = wcfg.check and seeded and est != Estimator.NONE
    if check:
        n_check = min(CHECK_STEPS, len(head))
        chains, verdict, out = ph.check_seed(ctx, chains, ledger, head[:n_check], center)
        head = head[n_check:]
        if verdict.rejected:
            return ctx, chains, out
    chains, verdict, out = ph.seeded_warmup(ctx, chains, ledger, head, estimator=est, check=check)
    if verdict is not None:
        return ctx, chains, out
    if auto and seeded and est != Estimator.NONE:
        chains = ph.extend(ctx, chains, ledger, last, len(tail), budget, estimator=est, phase="warmup window")
    if len(tail):
        chains, _ = ph.advance(ctx, chains, ledger, tail, phase="warmup final buffer", estimator=est)
    return ctx, chains, None


def _trace(obj, kern, wcfg, start, seed, imm0, center_np, chains, draws, ledger, messages, *, num_chains,
           num_samples, step0, step_size, imm, init_cost, jitter, est, key, t_start, compile_s, findings, names,
           lp_best, data) -> Trace:
    sample_steps = int(np.sum(draws.n_steps))
    stats = {name: getattr(draws, name) for name in STAT_NAMES}
    if not isinstance(kern, NUTS):
        stats.pop("tree_depth")
    warmup = None
    if ledger.kept:
        w = stack(ledger.kept)
        wstats = {name: getattr(w, name) for name in STAT_NAMES if name in stats}
        warmup = {"z": w.theta, "log_prob": w.log_prob, "stats": wstats}
    div_samp = int(np.sum(draws.diverging))
    diag = handoff_diagnostics(center_np, imm0, imm, draws.theta, div_samp)
    failed = [d for d in ledger.decisions if d.action in ("seed rejected", "no mode")]
    seed_notes = diag.pop("warnings")
    if failed:  # they describe the seed that was rejected and acted on: recorded, not repeated as warnings
        diag["seed_notes"] = seed_notes
    else:
        for m in seed_notes:
            _warn(messages, m)
    recovery = next((d for d in ledger.decisions if d.action == "recovery"), None)
    has_jac = obj.log_jacobian is not None and obj.thetamap is None
    if failed:
        what = failed[0].message + (f"; {recovery.message}" if recovery is not None else "")
        end = None
        if failed[0].action == "no mode" and start.map is not None:
            end = dg.optimizer_end(lp_best, draws.log_prob, obj.loss_includes_jacobian, has_jac)
        elif failed[0].action == "seed rejected":
            end = dg.mode_above_draws(lp_best, draws.log_prob, obj.dim)
        diag["diagnosis"] = ck.explain(obj, center_np, draws, step_size, imm, diag, names, end)
        _warn(messages, f"{what}. {diag['diagnosis']}")
    for d in ledger.decisions:
        if d.action == "chains moved":  # never silent: where the chain was is in the message and the decision
            _warn(messages, f"warmup: {d.message}")
    diag["decision"] = "; ".join(d.message for d in ledger.decisions if d.action != "budget") or None
    note = None
    if start.map is not None:
        judged = any(d.action == "no mode" for d in ledger.decisions)
        note = mode_note(start.map.status, center_np, judged)
        if note is not None:
            note = f"{note}: " + dg.optimizer_end(lp_best, draws.log_prob, obj.loss_includes_jacobian, has_jac)
    health = chain_health(draws.theta, draws.diverging, note, energy=draws.energy, warmup_rhat=ledger.rhat,
                          names=names, findings=findings)
    if health["problems"]:
        _warn(messages, "sampling: " + "; ".join(health["problems"]))
    grad_evals = {
        "curvature": int(seed.curvature.num_grad_evals) if seed.curvature is not None else 0,
        "init": init_cost,
        "warmup": ledger.grads,
        "restart": ledger.restart_grads,
        "sampling": sample_steps,
        "checks": ledger.check_grads,
    }
    if start.map is not None:
        grad_evals["map"] = start.map.num_grad_evals
    adapted = bool(ledger.steps) and est != Estimator.NONE
    recovered = any(d.action == "recovery" for d in ledger.decisions)
    runtime = time.perf_counter() - t_start
    info = {
        "engine": kern.name,
        "objective": dict(obj.info),
        "num_chains": num_chains,
        "num_warmup": ledger.steps,
        "warmup_extended_by": ledger.extended,
        "num_samples": num_samples,
        "step_size": step_size,
        "initial_step_size": float(step0),
        "target_acceptance_rate": float(kern.target_acceptance_rate),
        "max_tree_depth": kern.max_tree_depth if isinstance(kern, NUTS) else None,
        "num_integration_steps": getattr(kern, "num_integration_steps", None),
        "init": start.source,
        "jitter": float(jitter) if (start.starts is None and jitter is not None) else None,
        "metric": {
            "seed": seed.kind,
            "dense": bool(np.ndim(imm) == 2),
            "adapt": wcfg.metric,
            "estimator": (ledger.estimator or Estimator(est)).name.lower() if adapted else None,
            "shrinkage": float(wcfg.shrinkage),
            "pooled_chains": True,
            **imm0.info,
        },
        "seed_check": wcfg.check,
        "decisions": [d.as_info() for d in ledger.decisions],
        "recovered": recovered,
        "rejected_grad_evals": ledger.rejected_grads,
        "curvature": seed.curvature.describe() if seed.curvature is not None else None,
        "grad_evals": grad_evals,
        "handoff": diag,
        "health": health,
        "warnings": messages,
        "map_status": start.map.status if start.map is not None else None,
        "data_digest": data_digest(data) if obj.takes_data else None,
        "compile_s": compile_s,
        "run_s": max(runtime - compile_s, 0.0),
    }
    extras = {
        "step_size": step_size,
        "inverse_mass_matrix": imm,
        "seed_inverse_mass_matrix": np.asarray(imm0.matrix),
        "theta_star": center_np,
        "positions": np.asarray(chains.states.position),
        "key": _key_data(key),
    }
    if seed.curvature is not None:
        extras["curvature_diag"] = np.asarray(seed.curvature.diag)
        if getattr(seed.curvature, "matrix", None) is not None:
            extras["curvature_matrix"] = np.asarray(seed.curvature.matrix)
    return Trace(
        kind="sampling",
        z=draws.theta,  # the engine's coordinates; Trace derives base θ when obj has a θ-map
        log_prob=draws.log_prob,
        stats=stats,
        warmup=warmup,
        status="sampled",
        num_grad_evals=int(sum(v for k, v in grad_evals.items() if k != "map")),
        runtime_s=runtime,
        info=info,
        layout=obj.base_layout,
        thetamap=obj.thetamap,
        extras=extras,
    ).validate()
