"""The record of one :func:`gnomon.sample` call: its diagnosis, health, status, info and extras, as a Trace.

:func:`trace` turns what the phases left (:class:`Run`: the draws, the ledger of decisions and costs, the
seed, the adapted metric) into the sampling :class:`~gnomon.Trace`:

* the **statistics** the kernel family reports (:func:`gnomon.sampler.loop.stat_names`: the protocol's
  common ones, ``energy`` for Hamiltonian kernels, the family's extras) — not the per-draw gradients, which
  stay in the loop's ``ChunkOut``;
* the **hand-off diagnostics** and, when the seed failed, the **diagnosis** of why
  (:mod:`gnomon.sampler.diagnostics`, :mod:`gnomon.sampler.checks`);
* the **health** of the draws (:mod:`gnomon.sampler.health`), warned about when anything is wrong;
* the **status**: a sentence (``"sampled"``, ``"sampled after a recovery: ..."``, ``"sampled with 2 health
  problems: ..."``) with its code in ``info["status_code"]`` (:class:`gnomon.sampler.decisions.SampleStatus`);
* the **cost** breakdown and the settings in ``info``; what the next run reuses in ``extras``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any, NamedTuple

import jax
import numpy as np

from gnomon.objective.objective import Objective, data_digest
from gnomon.sampler import checks as ck
from gnomon.sampler import diagnosis as dg
from gnomon.sampler.decisions import FAILED_SEED, Action, Ledger, MapEnd, SampleStatus
from gnomon.sampler.diagnostics import handoff_diagnostics
from gnomon.sampler.health import chain_health, mode_note
from gnomon.sampler.loop import ChunkOut, stack, stat_names, stats_of
from gnomon.sampler.transport_stage import in_theta
from gnomon.sampler.warmup import Estimator
from gnomon.trace.trace import Trace


class Run(NamedTuple):
    """What one call leaves for its record."""

    obj: Objective
    kern: Any
    wcfg: Any
    start: Any
    seed: Any
    imm0: Any
    center: np.ndarray
    chains: Any
    draws: ChunkOut  # (chains, steps, ...)
    ledger: Ledger
    messages: list[str]
    num_chains: int
    num_samples: int
    step0: float
    step_size: float
    imm: np.ndarray
    init_cost: int
    jitter: float | None
    est: Estimator
    key: Any
    findings: list
    names: Any
    lp_best: float | None
    data: Any
    transport: Any = None  # transport_stage.InZ when the run ended in a transport map's z (draws are z)


def _warn(messages: list[str], msg: str) -> None:
    messages.append(msg)
    warnings.warn(msg, UserWarning, stacklevel=6)


def _key_data(key) -> np.ndarray:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def trace(run: Run, *, t_start: float, compile_s: float) -> Trace:
    """The sampling :class:`Trace` of ``run`` (see the module docstring). A run that ended in a transport
    map's coordinates z is recorded in base θ: its draws (and kept warmup draws) are mapped back with the map,
    ``log_prob`` is the density of θ (the map's log-Jacobian taken off), and the diagnosis and health read the
    θ draws; the map itself is in ``info["transport"]`` and ``extras["transport"]`` (for the hand-off)."""
    names = stat_names(run.kern)
    stats = stats_of(run.draws, names)
    z_draws = run.draws
    if run.transport is not None:
        run = run._replace(draws=in_theta(run.transport.tmap, run.draws))
    warmup = None
    if run.ledger.kept:
        kept, first_z = run.ledger.kept, run.ledger.kept_z_from
        if run.transport is not None and first_z is not None:
            kept = kept[:first_z] + [in_theta(run.transport.tmap, o) for o in kept[first_z:]]
        w = stack(kept)
        warmup = {"z": w.theta, "log_prob": w.log_prob, "stats": stats_of(w, names)}
    diag = _diagnosis(run)
    health = _health(run)
    grad_evals = _grad_evals(run)
    status, code = _status(run, health)
    runtime = time.perf_counter() - t_start
    info = _info(run, diag, health, grad_evals, code, compile_s, runtime, z_draws)
    in_z = run.transport is not None
    return Trace(
        kind="sampling",
        z=run.draws.theta,  # the engine's coordinates; Trace derives base θ when obj has a θ-map
        log_prob=run.draws.log_prob,
        stats=stats,
        warmup=warmup,
        status=status,
        num_grad_evals=int(sum(v for k, v in grad_evals.items() if k != "map")),
        runtime_s=runtime,
        info=info,
        layout=run.obj.base_layout,
        thetamap=None if in_z else run.obj.thetamap,
        extras=_extras(run),
    ).validate()


def _diagnosis(run: Run) -> dict[str, Any]:
    """The hand-off diagnostics, and when the seed failed, why (``diag["diagnosis"]``, warned)."""
    ledger, draws, obj, messages = run.ledger, run.draws, run.obj, run.messages
    div_samp = int(np.sum(draws.diverging))
    imm = _theta_metric(run)
    diag = handoff_diagnostics(run.center, run.imm0, imm, draws.theta, div_samp, names=run.names)
    failed = ledger.first(*FAILED_SEED)
    seed_notes = diag.pop("warnings")
    if failed is not None:  # they describe the seed that was rejected and acted on: recorded, not repeated
        diag["seed_notes"] = seed_notes
    else:
        for m in seed_notes:
            _warn(messages, m)
    recovery = ledger.first(Action.RECOVERY)
    has_jac = obj.log_jacobian is not None and obj.thetamap is None
    if failed is not None:
        what = failed.message + (f"; {recovery.message}" if recovery is not None else "")
        end = None
        if failed.action is Action.NO_MODE and run.start.map is not None:
            end = dg.optimizer_end(run.lp_best, draws.log_prob, obj.loss_includes_jacobian, has_jac)
        elif failed.action is Action.SEED_REJECTED:
            end = dg.mode_above_draws(run.lp_best, draws.log_prob, obj.dim)
        diag["diagnosis"] = ck.explain(obj, run.center, draws, run.step_size, imm, diag, run.names, end)
        _warn(messages, f"{what}. {diag['diagnosis']}")
    for d in ledger.decisions:
        if d.action is Action.CHAINS_MOVED:  # never silent: where the chain was is in the message and the decision
            _warn(messages, f"warmup: {d.message}")
    said = [d.message for d in ledger.decisions if d.action not in (Action.BUDGET, Action.KERNEL_TUNED)]
    diag["decision"] = "; ".join(said) or None
    return diag


def _theta_metric(run: Run) -> np.ndarray:
    """The adapted metric in θ: the run's, or after a run in z (whose metric is z's) the draws' variances."""
    if run.transport is None:
        return run.imm
    th = np.asarray(run.draws.theta, np.float64).reshape(-1, run.draws.theta.shape[-1])
    return np.var(th, axis=0)


def _health(run: Run) -> dict[str, Any]:
    """The health of the draws (warned when anything is wrong)."""
    obj, draws, start = run.obj, run.draws, run.start
    note = None
    if start.map is not None:
        judged = run.ledger.any(Action.NO_MODE)
        note = mode_note(start.map.status, run.center, judged)
        if note is not None:
            has_jac = obj.log_jacobian is not None and obj.thetamap is None
            note = f"{note}: " + dg.optimizer_end(run.lp_best, draws.log_prob, obj.loss_includes_jacobian, has_jac)
    energy = draws.energy if run.kern.has_energy else None  # E-BFMI only for a Hamiltonian energy
    health = chain_health(draws.theta, draws.diverging, note, energy=energy, warmup_rhat=run.ledger.rhat,
                          names=run.names, findings=run.findings)
    if not run.kern.has_energy:
        health["ebfmi_note"] = f"not applicable: {run.kern.name} reports no Hamiltonian energy"
    if health["problems"]:
        _warn(run.messages, "sampling: " + "; ".join(health["problems"]))
    return health


def _status(run: Run, health: dict) -> tuple[str, SampleStatus]:
    """The sentence and its code."""
    problems = health["problems"]
    if problems:
        n = len(problems)
        return f"sampled with {n} health problem{'s' if n > 1 else ''}: {problems[0]}", SampleStatus.UNHEALTHY
    failed = run.ledger.first(*FAILED_SEED)
    if failed is not None and run.ledger.any(Action.RECOVERY):
        return f"sampled after a recovery: {failed.message}", SampleStatus.RECOVERED
    return "sampled", SampleStatus.SAMPLED


def _grad_evals(run: Run) -> dict[str, int]:
    ledger, seed = run.ledger, run.seed
    cost = ledger.z_grad_cost if run.transport is not None else 1.0  # gradients in z, in gradients of θ's density
    out = {
        "curvature": int(seed.curvature.num_grad_evals) if seed.curvature is not None else 0,
        "init": run.init_cost,
        "warmup": ledger.z_grads_from + math.ceil((ledger.grads - ledger.z_grads_from) * cost),
        "restart": ledger.restart_grads,
        "sampling": math.ceil(int(np.sum(run.draws.n_steps)) * cost),
        "checks": ledger.check_grads,
        "transport": ledger.transport_grads,
    }
    if run.start.map is not None:
        out["map"] = run.start.map.num_grad_evals
    return out


def _kernel_info(kern: Any) -> dict[str, Any]:
    """The family's name, tuning and its scalar settings (a user family's other fields are named only)."""
    fields = dataclasses.fields(kern) if dataclasses.is_dataclass(kern) else ()
    plain = (bool, int, float, str, type(None))
    settings = {f.name: (v if isinstance(v, plain) else type(v).__name__)
                for f in fields for v in [getattr(kern, f.name)]}
    return {"name": kern.name, "tuning": kern.tuning.value, **settings}


def _transport_info(run: Run, z_draws: ChunkOut) -> dict[str, Any] | None:
    """``info["transport"]``: the map's description, where it came from and how N(0, I)-like z was (the
    adapted metric in z: its variance spread and range; 1 for a perfect map), or None without a map."""
    if run.transport is None:
        return None
    from gnomon.sampler.metric import spread

    var = np.diagonal(run.imm) if np.ndim(run.imm) == 2 else np.asarray(run.imm)
    var = np.asarray(var, np.float64)
    return {**run.transport.tmap.describe(), "reused": bool(run.transport.reused),
            "z_metric_spread": float(spread(var)), "z_metric_min": float(np.min(var)),
            "z_metric_max": float(np.max(var)), "z_steps_per_draw": float(np.mean(z_draws.n_steps))}


def _info(run: Run, diag, health, grad_evals, code: SampleStatus, compile_s: float, runtime: float,
          z_draws: ChunkOut) -> dict:
    ledger, kern, wcfg, seed, start, obj = run.ledger, run.kern, run.wcfg, run.seed, run.start, run.obj
    adapted = bool(ledger.steps) and run.est != Estimator.NONE
    return {
        "engine": kern.name,
        "kernel": _kernel_info(kern),
        "objective": dict(obj.info),
        "num_chains": run.num_chains,
        "num_warmup": ledger.steps,
        "warmup_extended_by": ledger.extended,
        "num_samples": run.num_samples,
        "step_size": run.step_size,
        "initial_step_size": float(run.step0),
        "target_acceptance_rate": float(kern.target_acceptance_rate),
        "max_tree_depth": kern.max_tree_depth,
        "num_integration_steps": getattr(kern, "num_integration_steps", None),
        "init": start.source,
        "jitter": float(run.jitter) if (start.starts is None and run.jitter is not None) else None,
        "metric": {
            "seed": seed.kind,
            "dense": bool(np.ndim(run.imm) == 2),
            "adapt": wcfg.metric,
            "estimator": _estimator(run, adapted),
            "shrinkage": float(wcfg.shrinkage),
            "pooled_chains": True,
            **run.imm0.info,
        },
        "seed_check": wcfg.check,
        "decisions": [d.as_info() for d in ledger.decisions],
        "recovered": ledger.any(Action.RECOVERY),
        "rejected_grad_evals": ledger.rejected_grads,
        "curvature": seed.curvature.describe() if seed.curvature is not None else None,
        "grad_evals": grad_evals,
        "handoff": diag,
        "health": health,
        "warnings": run.messages,
        "status_code": code,
        "transport": _transport_info(run, z_draws),
        "map_status": start.map.status if start.map is not None else None,
        "map_end": MapEnd.of(start.map.status, start.map.code) if start.map is not None else None,
        "data_digest": data_digest(run.data) if obj.takes_data else None,
        "compile_s": compile_s,
        "run_s": max(runtime - compile_s, 0.0),
    }


def _estimator(run: Run, adapted: bool) -> str | None:
    """What adapted the metric last: the recovery's estimator, the family's own tuning, or the windows'."""
    if run.ledger.any(Action.KERNEL_TUNED):
        return f"{run.kern.name} tuning"
    return (run.ledger.estimator or Estimator(run.est)).name.lower() if adapted else None


def _positions(run: Run) -> np.ndarray:
    """The chains' last positions in base θ (mapped back from z after a run in a transport map's coordinates)."""
    pos = np.asarray(run.chains.states.position)
    return pos if run.transport is None else np.asarray(run.transport.tmap.to_theta(pos)).astype(pos.dtype)


def _extras(run: Run) -> dict[str, Any]:
    seed = run.seed
    extras = {
        "step_size": run.step_size,
        "inverse_mass_matrix": run.imm,
        "seed_inverse_mass_matrix": np.asarray(run.imm0.matrix),
        "theta_star": run.center,
        "positions": _positions(run),
        "key": _key_data(run.key),
    }
    if run.transport is not None:
        extras["transport"] = run.transport.tmap.to_arrays()
    if seed.curvature is not None:
        extras["curvature_diag"] = np.asarray(seed.curvature.diag)
        if getattr(seed.curvature, "matrix", None) is not None:
            extras["curvature_matrix"] = np.asarray(seed.curvature.matrix)
    return extras
