r"""`sample`: chains of any kernel family (NUTS, HMC, MCLMC or one's own) with a curvature seed that is checked
and recovered from.

The MAP → sampler hand-off
--------------------------
A posterior that is locally Gaussian around its mode θ* with precision :math:`H` has covariance
:math:`\Sigma \approx H^{-1}`. :func:`sample` uses that twice: the **metric** :math:`M^{-1}` is seeded from
the curvature at the start, and the **chains start** from "Laplace draws" :math:`θ^* + L\varepsilon_c`,
:math:`LL^T \approx H^{-1}`, inside the typical set rather than at the mode
(:mod:`gnomon.sampler.starts`). The warmup then *keeps adapting* in the seed's whitened coordinates
:math:`u = L^{-1}θ` (:mod:`gnomon.sampler.warmup`: Stan's windows, dual averaging, every chain's draws
pooled) and needs far fewer steps. A kernel family tuned by its own stage (MCLMC) runs it in the same
whitened coordinates (:mod:`gnomon.sampler.mclmc`).

The seed is a hypothesis
------------------------
Where the curvature at the mode does not describe the posterior — a funnel, a centred hierarchical model
whose mode sits in the neck, a latent time series whose scales collapse at the mode — the seed is wrong and
trusting it costs 10–1000× in gradients. So the first warmup steps check it (:mod:`gnomon.sampler.seed_check`)
and every later window is judged again; a rejected seed, or an optimizer that found no mode at all, leads to
a **recovery** (:mod:`gnomon.sampler.recovery`, :mod:`gnomon.sampler.stuck_chains`). What was decided, when
and why is in ``trace.info["decisions"]`` (typed: :mod:`gnomon.sampler.decisions`).

This module is the driver: it checks the arguments (each value has one home: :mod:`gnomon.sampler.config`),
resolves the start, the seed and the compiled program, runs the phases (:mod:`gnomon.sampler.phases`) and
hands the draws to :mod:`gnomon.sampler.record`, which assembles the :class:`Trace`.

Cost accounting: every log-density gradient counts one — the start of each chain, each gradient a kernel
step reports (NUTS' leapfrog steps, MCLMC's two per integration step) in warmup (the rejected part included)
and sampling, plus the curvature's own cost. Timing: ``info["compile_s"]`` (lowering and compiling the
sampler's programs) and ``info["run_s"]`` (everything else); ``runtime_s`` is their sum.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.sampler import checks as ck
from gnomon.sampler import diagnosis as dg
from gnomon.sampler import metric as mmx
from gnomon.sampler import own_tuning as ot
from gnomon.sampler import phases as ph
from gnomon.sampler import record
from gnomon.sampler import recovery as rc
from gnomon.sampler import transport_stage as ts
from gnomon.sampler import warmup as wu
from gnomon.sampler.config import Warmup, as_warmup, misplaced
from gnomon.sampler.decisions import Action, Ledger, SeedKind, StartSource
from gnomon.sampler.families import as_kernel
from gnomon.sampler.handoff import HandOffBundle
from gnomon.sampler.loop import SamplerSettings, compile_seconds, compiled, shard, stack
from gnomon.sampler.protocol import Tuning
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
from gnomon.util.validate import as_key, positive_int

DEFAULT_WARMUP = {"identity": 1000, "curvature": 300, "array": 300, "handoff": 150, "frozen": 150}
_DEFAULT = object()


def _warn(messages: list[str], msg: str) -> None:
    messages.append(msg)
    warnings.warn(msg, UserWarning, stacklevel=4)


class Call(NamedTuple):
    """One call's arguments, checked, each value in its one home."""

    obj: Objective
    kern: Any  # a kernel family
    wcfg: Warmup
    num_chains: int
    num_samples: int
    keep_warmup: bool
    key: Any
    data: Any
    start: Start
    handoff: HandOffBundle | None  # the hand-off whose adaptation seeds the run
    seed_arg: Any  # what the metric seed comes from ("curvature", an array, None, ...)
    inz: ts.InZ | None = None  # a hand-off's transport map: the run is in its z (obj, data and start are z's)


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
    inverse_mass_matrix: Any = _DEFAULT,
    keep_warmup: bool = False,
    data: Any = _DEFAULT,
    progress: bool | None = None,
    **misplaced_options: Any,
) -> Trace:
    r"""Draw ``num_samples`` per chain from ``exp(obj.log_prob)`` with NUTS, HMC, MCLMC or a kernel of one's own.

    Args:
      obj: the :class:`gnomon.Objective`; its ``log_prob`` (Jacobian included) is the target.
      init: a θ ``(D,)`` (each chain starts from a jittered copy), per-chain starts ``(C, D)``, an
        optimization :class:`Trace` (its best θ — the MAP hand-off; a batch of ``C`` fits gives one start
        per chain), a sampling Trace (continue from its last draws) or a :class:`gnomon.HandOff` (its chains'
        last positions, and — its one home — its adapted metric and step size seed the run).
      key: a ``jax.random.key`` (or an int seed).
      num_chains: chains ``C`` (vmapped; sharded over devices when there are several).
      num_warmup: an alias of ``gn.warmup(num_steps=...)`` (the warmup's length; default by the seed).
      num_samples: draws kept per chain.
      kernel: ``"nuts"`` (default), ``"hmc"``, ``"mclmc"``, :func:`gnomon.nuts`, :func:`gnomon.hmc`,
        :func:`gnomon.mclmc`, or a kernel family of one's own (:mod:`gnomon.sampler.protocol`).
      warmup: :func:`gnomon.warmup` (warmup length and budget, the metric seed and the curvature behind it,
        the adapted metric, dense or diagonal seed, jitter, the seed check), a metric name, or None.
      inverse_mass_matrix: an alias of ``gn.warmup(inverse_mass_matrix=...)``, the metric seed:
        ``"curvature"``, an array ``(D,)``/``(D, D)``, a :class:`gnomon.Curvature`, an
        ``InverseMassMatrix``, a :class:`gnomon.HandOff`, or None / ``"identity"``.
      keep_warmup: also return the warmup draws (``trace.warmup``; a family's own tuning stage returns none).
      data: data for objectives that take it (default: the objective's bound data).
      progress: progress bar on stderr (default: on a terminal, for runs of at least 2000 chain-steps); it
        names the phase and shows the gradient evaluations per draw.

    Returns:
      a sampling :class:`Trace`: ``theta`` ``(C, N, D)`` unconstrained draws, ``log_prob`` ``(C, N)``,
      ``stats`` (the kernel protocol's common statistics ``acceptance_rate``, ``diverging``, ``n_steps``
      — gradient evaluations —, ``step_size``, ``energy`` for Hamiltonian kernels, and the family's own:
      NUTS ``tree_depth``, MCLMC ``num_integration_steps``), ``warmup`` when kept, ``num_grad_evals``
      (curvature + starts + warmup + sampling), ``status`` (a sentence; its code in
      ``info["status_code"]``), ``info`` (settings, adapted step size, cost breakdown,
      ``compile_s``/``run_s``, the sampler's typed ``decisions``, hand-off diagnostics and its ``diagnosis``
      of a failed seed, ``health``, warnings) and ``extras`` (the adapted and seeded inverse mass matrices,
      θ*, last positions, key) from which :meth:`gnomon.HandOff.from_trace` builds the hand-off bundle.

    Raises:
      ValueError: for bad input, naming the value; for an option that belongs elsewhere (e.g.
        ``max_tree_depth=`` belongs to ``kernel=gn.nuts(...)``, ``handoff=`` to ``init=``), naming where; for
        an improper direction, naming the coordinate, before the warmup.
    """
    t_start = time.perf_counter()
    compiled_before = compile_seconds()
    call = _arguments(obj, init, key, num_chains, num_warmup, num_samples, kernel, warmup, inverse_mass_matrix,
                      keep_warmup, data, misplaced_options)
    return _run(call, progress, t_start, compiled_before)


def _arguments(obj, init, key, num_chains, num_warmup, num_samples, kernel, warmup, inverse_mass_matrix,
               keep_warmup, data, misplaced_options) -> Call:
    """Check the arguments and put each value in its one home (the aliases fill it; see
    :mod:`gnomon.sampler.config`)."""
    misplaced("gn.sample", misplaced_options)
    if not isinstance(obj, Objective):
        raise ValueError(f"sample needs a gnomon.Objective, got {type(obj).__name__}")
    kern = as_kernel(kernel)
    wcfg = as_warmup(warmup)
    num_chains = positive_int(num_chains, "num_chains")
    num_samples = positive_int(num_samples, "num_samples")
    if num_warmup is not None:  # the alias of gn.warmup(num_steps=...)
        num_warmup = positive_int(num_warmup, "num_warmup", minimum=0)
        if wcfg.num_steps is not None and wcfg.num_steps != num_warmup:
            raise ValueError(f"num_warmup={num_warmup} and warmup=gn.warmup(num_steps={wcfg.num_steps}) disagree; "
                             "give one (the home is gn.warmup(num_steps=...); num_warmup= is its alias)")
        wcfg = wcfg.replace(num_steps=num_warmup)
    if inverse_mass_matrix is not _DEFAULT:  # the alias of gn.warmup(inverse_mass_matrix=...)
        wcfg = _seed_alias(wcfg, inverse_mass_matrix)
    seed_value = wcfg.inverse_mass_matrix
    if isinstance(seed_value, str) and seed_value == "auto":
        seed_value = init if isinstance(init, HandOffBundle) else "curvature"
    handoff = seed_value if isinstance(seed_value, HandOffBundle) else None
    if handoff is not None and wcfg.curvature is not None:
        raise ValueError("gn.warmup(curvature=...) and a hand-off's adapted metric both seed the metric; give one")
    call = Call(obj, kern, wcfg, num_chains, num_samples, bool(keep_warmup), as_key(key),
                obj.data if data is _DEFAULT else data, resolve_init(obj, init, num_chains), handoff,
                "curvature" if handoff is not None else seed_value)
    return _in_handoff_map(call)


def _in_handoff_map(call: Call) -> Call:
    """A hand-off that carries a transport map runs in its z: the transported objective (the compiled program
    of the run that trained the map is reused: the map is data), its data, and the start mapped to z. Its
    metric and step size are z's already."""
    bundle = call.handoff
    arrays = getattr(bundle, "transport", None)
    if bundle is None or arrays is None:
        return call
    tmap = ts.map_from_arrays(arrays, (bundle.info or {}).get("transport"), call.obj, call.data)
    if tmap.dim != call.obj.dim:
        raise ValueError(f"the hand-off's transport map has dimension {tmap.dim}, the objective {call.obj.dim}")
    st = call.start
    dtype = (st.center if st.center is not None else st.starts).dtype

    def to_z(x):
        return None if x is None else jnp.asarray(tmap.to_z(jnp.asarray(x, dtype)), dtype)

    mp = st.map._replace(first_theta=np.asarray(to_z(st.map.first_theta))) if (
        st.map is not None and st.map.first_theta is not None) else st.map
    start = st._replace(center=to_z(st.center), starts=to_z(st.starts), map=mp)
    inz = ts.InZ(tmap, call.obj, call.data, reused=True)
    return call._replace(obj=ts.objective_in_z(call.obj, tmap), data=(tmap.arrays(dtype), call.data), start=start,
                         inz=inz)


def _seed_alias(wcfg: Warmup, value: Any) -> Warmup:
    """``gn.sample(inverse_mass_matrix=value)`` into the warmup's home (a Curvature into ``curvature=``)."""
    home = wcfg.inverse_mass_matrix
    is_curv = hasattr(value, "diag") and hasattr(value, "method")
    if is_curv:
        if wcfg.curvature is not None and wcfg.curvature is not value:
            raise ValueError("inverse_mass_matrix=<Curvature> and warmup=gn.warmup(curvature=...) disagree; give one "
                             "(the home of a curvature is gn.warmup(curvature=...))")
        value, wcfg = "curvature", wcfg.replace(curvature=value)
    if not (isinstance(home, str) and home == "auto") and home is not value:
        raise ValueError("inverse_mass_matrix= and warmup=gn.warmup(inverse_mass_matrix=...) both give the metric "
                         "seed; give one (the home is gn.warmup(inverse_mass_matrix=...); the argument is its alias)")
    return wcfg.replace(inverse_mass_matrix=value)


def _run(call: Call, progress: bool | None, t_start: float, compiled_before: float) -> Trace:
    obj, kern, wcfg, start, data = call.obj, call.kern, call.wcfg, call.start, call.data
    messages: list[str] = []
    k_curv, k_jit, k_warm, k_samp = jax.random.split(call.key, 4)
    ledger = Ledger()
    if call.inz is not None:
        ledger.transport, ledger.kept_z_from = call.inz, 0
        ledger.z_grad_cost = ts.grad_cost(call.inz.tmap)
        ledger.decide(Action.TRANSPORT_REUSED, f"the hand-off's transport map ({call.inz.tmap.hash}) reused: the run "
                      "is in its coordinates z from the start (no training; the compiled program is shared by every "
                      "map of this dimension)", map=call.inz.tmap.hash)

    # --- no mode: no seed, no seed check -------------------------------------------------------------------
    lp_best = None
    origin = ck.probe_origin(start)  # where a cold start would begin: the probe for modes starts around it
    if start.source == StartSource.OPTIMIZATION and start.center is not None:
        lp_best = float(obj.log_prob(start.center) if data is obj.data else obj.log_prob(start.center, data))
    mode_problem = no_mode(start, obj.dim, lp_best)
    if mode_problem is not None and not wcfg.check:
        _warn(messages, f"{mode_problem}: its best point is a poor start (warmup check=False: used anyway)")
    # --- the seed, the settings, the program, the starts -------------------------------------------------
    try:
        prep = _prepare(call, unseeded=mode_problem is not None and wcfg.check, keys=(k_curv, k_jit))
    except _NoUsableStart as exc:
        mode_problem, ledger.restart_grads = exc.args[0], exc.args[1]
        prep = _prepare(call, unseeded=True, keys=(k_curv, k_jit))
    if mode_problem is not None and prep.unseeded:
        ledger.decide(Action.NO_MODE, f"{mode_problem}: no seed to check; the warmup starts as a recovery")
    names = dg.coordinate_names(obj.layout, obj.dim)
    ledger.check_grads += ck.check_proper(prep.states, prep.positions, prep.center, prep.imm0, prep.program, data,
                                          names)
    num_warmup, auto = _warmup_length(wcfg, prep)
    step0 = _first_step_size(kern, call.handoff, obj.dim, ledger)
    ctx, chains = _context(call, prep, num_warmup, step0, progress, k_warm)

    # --- warmup ----------------------------------------------------------------------------------------------
    ctx, chains, rejected = _warmup(ctx, chains, ledger, call, prep, num_warmup, auto, step0, k_warm)
    if num_warmup > 0 and kern.tuning is Tuning.OWN:
        chains, step_final, imm = ot.run(ctx, chains, ledger, wcfg.max_steps, num_warmup, auto, k_warm)
    elif num_warmup > 0:
        step_final, imm = ctx.program.adapt_final(chains.adapt)
    else:
        step_final, imm = jnp.asarray(step0, prep.center.dtype), chains.adapt.imm  # the seed, in the program's shape
    step_size = ph.finite_step_size(step_final)
    chains = ph.replace_adapt(chains, step_final, imm)

    # --- sampling ----------------------------------------------------------------------------------------------
    chains, outs = ph.draw(ctx, chains, k_samp, call.num_samples, ledger.steps)
    draws = stack(outs)
    ctx.bar.close(f"{int(np.sum(draws.diverging))} divergences")
    inz = ledger.transport
    if inz is not None and not inz.reused:  # the run ended in z: what the findings compare goes to z too
        rejected = None if rejected is None else ts.in_z(inz.tmap, rejected)
        origin = None if origin is None else np.asarray(inz.tmap.to_z(jnp.asarray(origin)))
    findings = ck.findings(ctx, chains, ledger, draws, rejected, origin, jax.random.fold_in(k_samp, 1),
                           names if inz is None else ts.z_names(names))
    if inz is not None and not inz.tmap.info.get("structural"):
        # draws are in z here: a fitted map that does not normalise the posterior is a health problem (a model's
        # own non-centring is exact in the neck; its z keeps the parents' own shape, which is no fault)
        findings = [*findings, *ts.normality(draws.theta, names, inz.tmap.info.get("scale_parents", ()))]
    run = record.Run(
        obj=obj if inz is None else inz.base, kern=kern, wcfg=wcfg, start=prep.start, seed=prep.seed,
        imm0=prep.imm0, center=np.asarray(prep.center),
        chains=chains, draws=draws, ledger=ledger, messages=messages, num_chains=call.num_chains,
        num_samples=call.num_samples, step0=step0, step_size=step_size, imm=np.asarray(imm),
        init_cost=prep.init_cost, jitter=prep.jitter, est=prep.est, key=call.key, findings=findings, names=names,
        lp_best=lp_best, data=data if inz is None else inz.base_data, transport=inz,
    )
    return record.trace(run, t_start=t_start, compile_s=compile_seconds() - compiled_before)


def _transport_options(call: Call, ledger: Ledger) -> ts.Options | None:
    """The transport stage's options, or None where it is not used (``gn.warmup(transport=False)``, a kernel
    family with its own tuning stage, a run already in z)."""
    if not call.wcfg.transport or call.kern.tuning is not Tuning.WINDOWS or ledger.transport is not None:
        return None
    return ts.Options(call.wcfg.metric, call.wcfg.max_dense_dim, float(call.kern.initial_step_size(call.obj.dim)))


def _given(curvature: Any) -> bool:
    """A curvature the user gave (a Curvature or an array), rather than a method gnomon computes."""
    return curvature is not None and not isinstance(curvature, str)


def _diagonal(imm: Any) -> np.ndarray:
    m = np.asarray(imm)
    return np.diagonal(m) if m.ndim == 2 else m


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


def _program_kernel(kern: Any) -> Any:
    """The kernel as the compiled program sees it: the first step size and (for a family tuned by the windows)
    the target acceptance rate are arguments, not compiled in."""
    if not dataclasses.is_dataclass(kern):
        return kern
    changes = {"step_size": None}
    if kern.tuning is Tuning.WINDOWS:
        changes["target_acceptance_rate"] = 0.8
    names = {f.name for f in dataclasses.fields(kern)}
    return dataclasses.replace(kern, **{k: v for k, v in changes.items() if k in names})


def _prepare(call: Call, *, unseeded: bool, keys: tuple) -> _Prepared:
    """The seed, the adaptation's shape, the compiled program and the chains' starts. Unseeded (no mode, or no
    seed with a gradient-based metric): the identity, and starts around the optimizer's first point."""
    obj, wcfg, num_chains, data = call.obj, call.wcfg, call.num_chains, call.data
    k_curv, k_jit = keys
    start = call.start._replace(source=StartSource.parse(call.start.source))
    if unseeded and start.source == StartSource.OPTIMIZATION:
        first = start.map.first_theta if start.map is not None else None
        start = Start(jnp.asarray(first) if first is not None else start.center, None, StartSource.NO_MODE, start.map)
    center = start_center(start, obj, num_chains)
    dtype = center.dtype
    if unseeded:
        seed = Seed(mmx.identity(obj.dim, dtype=dtype), SeedKind.IDENTITY, None)
    else:
        try:
            seed = seed_metric(obj, center, call.seed_arg, call.handoff, wcfg, key=k_curv,
                               data=None if data is obj.data else data)
        except ValueError as exc:
            computed = isinstance(call.seed_arg, str) and call.seed_arg == "curvature" and not _given(wcfg.curvature)
            if start.source == StartSource.OPTIMIZATION and wcfg.check and computed and "finite" in str(exc):
                # e.g. a funnel's mode deep in the neck, where e^{-v} overflows float32: that is no usable mode
                raise _NoUsableStart(f"the curvature at the optimizer's best point is not finite ({exc})", 0) from None
            raise
        seed = seed._replace(kind=SeedKind.parse(seed.kind))
    seeded = seed.kind != SeedKind.IDENTITY
    unseeded = unseeded or (not seeded and wcfg.metric in ("auto", "low_rank") and obj.dim <= wcfg.max_dense_dim)
    est = ph.estimator_for(wcfg.metric, obj.dim, wcfg.max_dense_dim)
    if call.kern.tuning is Tuning.OWN and est != Estimator.NONE:
        est = Estimator.VARIANCE  # the windows only check the seed; the family's own stage adapts the metric
    imm0 = seed.imm.as_dense() if (est == Estimator.COVARIANCE and not seed.imm.dense) else seed.imm
    moments_dense = est in wu.DENSE_ESTIMATORS
    settings = SamplerSettings(
        kernel=_program_kernel(call.kern),
        adapt=AdaptSettings(factor_dense=imm0.dense, scale_dense=moments_dense, moments_dense=moments_dense),
    )
    program = compiled(obj, settings)
    jitter = wcfg.jitter if wcfg.jitter is not None else (1.0 if seeded else 0.1)
    if start.source == StartSource.NO_MODE:
        start = start._replace(starts=dispersed_starts(center, k_jit, num_chains))
        jitter = None
    factor = jnp.asarray(imm0.factor, dtype)
    draw_factor = factor if imm0.draw_factor is None else jnp.asarray(imm0.draw_factor, dtype)
    try:
        states, positions, tries = start_positions(
            program.init, data, start, center, draw_factor, jitter or 0.0, k_jit, num_chains
        )
    except ValueError as exc:
        if start.source == StartSource.OPTIMIZATION and wcfg.check:
            spent = (int(seed.curvature.num_grad_evals) if seed.curvature is not None else 0) + 7 * num_chains
            msg = f"the Laplace draws around the optimizer's best point leave the support ({exc})"
            raise _NoUsableStart(msg, spent) from None
        raise
    return _Prepared(start, center, seed, imm0, est, settings, program, unseeded, shard(states, num_chains), positions,
                     num_chains * (1 + tries), jitter)


def _warmup_length(wcfg: Warmup, prep: _Prepared) -> tuple[int, bool]:
    """``(warmup steps, automatic?)``: the warmup's own, or by the seed."""
    if wcfg.num_steps is not None:
        return wcfg.num_steps, False
    if prep.unseeded:
        return rc.RECOVERY_STEPS, True
    frozen = wcfg.metric == "none" and prep.seed.kind != SeedKind.IDENTITY
    return DEFAULT_WARMUP["frozen" if frozen else prep.seed.kind.value], True


def _first_step_size(kern: Any, handoff: HandOffBundle | None, dim: int, ledger: Ledger) -> float:
    """The kernel's own first step size, else the hand-off's when it came from the same kernel family (another
    family's step size measures something else: reset, and said), else the family's default."""
    if kern.step_size is not None:
        return float(kern.step_size)
    if handoff is not None:
        engine = (handoff.info or {}).get("engine") or "nuts"  # bundles before v0.3 came from NUTS or HMC
        same = engine == kern.name or {engine, kern.name} <= {"nuts", "hmc"}  # both leapfrog step sizes
        if same:
            return float(handoff.step_size)
        ledger.decide(Action.STEP_SIZE_RESET, f"the hand-off's step size ({float(handoff.step_size):.3g}, from "
                      f"{engine}) is not a {kern.name} step size: its metric is reused, the step size starts from "
                      f"{kern.initial_step_size(dim):.3g}", handoff_engine=engine)
    return float(kern.initial_step_size(dim))


def _context(call: Call, prep: _Prepared, num_warmup: int, step0: float, progress: bool | None,
             key: Any) -> tuple[ph.Context, ph.Chains]:
    """What the phases share, and the chains with the adaptation started at the seed."""
    kern, dtype = call.kern, prep.center.dtype
    big = (num_warmup + call.num_samples) * call.num_chains >= 2000
    bar = Progress(num_warmup + call.num_samples, f"{kern.name} ×{call.num_chains}",
                   enabled=progress if progress is not None else (None if big else False))
    ctx = ph.Context(
        obj=call.obj,
        settings=prep.settings,
        program=prep.program,
        data=call.data,
        key=key,
        dim=call.obj.dim,
        max_depth=int(kern.max_tree_depth or 0),
        reference=kern.expected(call.obj.dim),
        keep_warmup=call.keep_warmup,
        num_samples=call.num_samples,
        bar=bar,
        shrink=jnp.asarray(call.wcfg.shrinkage, dtype),
        target=jnp.asarray(kern.target_acceptance_rate, dtype),
    )
    factor = jnp.asarray(prep.imm0.factor, dtype)
    ad = prep.program.adapt_init(prep.positions, jnp.asarray(step0, dtype), factor)
    return ctx, ph.Chains(prep.states, ad, factor, jnp.asarray(prep.imm0.factor_inv, dtype))


def _warmup(ctx, chains, ledger, call: Call, prep: _Prepared, num_warmup: int, auto: bool, step0: float, key):
    """The seeded warmup, then — when the seed was rejected or there was none — the recovery; returns
    ``(ctx, chains, the outputs that got the seed rejected or None)``."""
    wcfg, start = call.wcfg, prep.start
    budget = max(wcfg.max_steps, num_warmup)
    rejected = None
    if num_warmup > 0 and not prep.unseeded:
        ctx, chains, rejected = _seeded(ctx, chains, ledger, call, prep, num_warmup, auto, budget)
    if num_warmup > 0 and (prep.unseeded or rejected is not None):
        left = (budget if auto else num_warmup) - ledger.steps
        steps = min(num_warmup if prep.unseeded else rc.RECOVERY_STEPS, left) if auto else left
        if steps < 20:
            if steps > 0:  # too short to adapt a metric: the step size only
                chains, _ = ph.advance(ctx, chains, ledger, np.zeros((steps, 2), np.int32), phase="warmup",
                                       estimator=Estimator.NONE)
            ledger.decide(Action.BUDGET, f"no metric adaptation: only {max(steps, 0)} warmup steps left of the "
                          "budget (step size adapted only)")
        else:
            ledger.rejected_grads = ledger.grads
            plan = rc.recovery_plan(ctx, wcfg.metric, wcfg.max_dense_dim, steps)
            # a rejected seed restarts where a cold start would (around the optimizer's first point); without a
            # mode the chains already start there
            restart = rc.choose_restart(
                ctx,
                chains,
                jax.random.fold_in(key, 7),
                first=start.map.first_theta if (start.map is not None and rejected is not None) else None,
                drawn=rejected.theta if rejected is not None else None,
            )
            ctx, chains = rc.recover(ctx, chains, ledger, plan, restart,
                                     budget if auto else ledger.steps + steps, step_size=step0,
                                     transport=_transport_options(call, ledger))
    return ctx, chains, rejected


def _seeded(ctx, chains, ledger, call: Call, prep: _Prepared, num_warmup: int, auto: bool, budget: int):
    """The warmup around a seed: the check, the windows (each judged), the extension and the final buffer — or,
    for a family tuned by its own stage, the check alone; returns ``(ctx, chains, rejected)`` with the outputs
    that got the seed rejected (None when kept)."""
    wcfg, est = call.wcfg, prep.est
    seeded = prep.seed.kind != SeedKind.IDENTITY
    own = call.kern.tuning is Tuning.OWN
    head, tail = wu.schedule(num_warmup, seeded, est != Estimator.NONE)
    if own:  # the check's steps adapt the step size only; the family's own stage does the rest
        head, tail = np.zeros((min(CHECK_STEPS, num_warmup), 2), np.int32), head[:0]
    last = wu.last_window(head)
    check = wcfg.check and seeded and (est != Estimator.NONE or own)
    if check:
        n_check = min(CHECK_STEPS, len(head))
        chains, verdict, out = ph.check_seed(ctx, chains, ledger, head[:n_check], prep.center)
        head = head[n_check:]
        if verdict.rejected:
            return ctx, chains, out
    if own:
        return ctx, chains, None
    chains, verdict, out = ph.seeded_warmup(ctx, chains, ledger, head, estimator=est, check=check)
    if verdict is not None:
        return ctx, chains, out
    if auto and seeded and est != Estimator.NONE:
        chains = ph.extend(ctx, chains, ledger, last, len(tail), budget, estimator=est, phase="warmup window")
    opts = _transport_options(call, ledger)
    if opts is not None and est != Estimator.NONE and ts.may_try(ledger, budget):
        why = ts.far_from_gaussian(ts.pool(ledger, 0)[0], prep.imm0.variances,
                                   _diagonal(ctx.program.adapt_final(chains.adapt)[1]))
        found = None if why is None else ts.attempt(ctx, chains, ledger, opts, budget, since=0,
                                                    why=f"transport stage after a kept seed: {why}")
        if found is not None:
            return (*found, None)
    if len(tail):
        chains, _ = ph.advance(ctx, chains, ledger, tail, phase="warmup final buffer", estimator=est)
    return ctx, chains, None
