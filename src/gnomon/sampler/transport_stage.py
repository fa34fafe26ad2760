r"""The transport stage as a phase of :func:`gnomon.sample`: learn θ = T(z) from the draws and gradients the
warmup already has, keep it only when it helps, and run the rest of the warmup and the sampling in z.

Where it runs
-------------
* **In a recovery** (the seed was rejected, or the optimizer found no mode): after the recovery window that
  brings the draws since the restart to :data:`TRY_AFTER` steps, and once more at the next window end when the
  first map was refused. These are the targets where one metric cannot fit — a funnel, a centred hierarchical
  model, a latent series with an unknown scale — and where the recovery in θ pays in leapfrog steps, divergences
  and wrong answers.
* **After a kept seed whose draws are far from Gaussian** (:func:`far_from_gaussian`): the seeded warmup's
  draws show a funnel (:func:`gnomon.sampler.diagnosis.funnel_signature`: one coordinate sets the spread of
  others) *and* the adapted metric disagrees with the seed (variance-ratio spread above
  :data:`DISAGREE`). A Gaussian — rotated, ill-conditioned or not — has neither; a banana has no funnel
  (and an affine map cannot straighten it), so neither fires the stage.

A numpyro model's own non-centring
----------------------------------
For an ``Objective.from_numpyro`` whose location-scale sites take their scale from other latent sites, the stage
first takes the model's own non-centring as the map (:func:`gnomon.sampler.noncentring.structural_map`: no
training, exact in the neck by construction; declined where the affine family cannot hold it, and then the map is
fitted as below).

Any log density's conditionally Gaussian groups
-----------------------------------------------
Otherwise — a hand-written log density has no sites — the stage reads the structure from the log density's
derivatives (:func:`gnomon.sampler.conditional_map.conditional_map`): coordinates that are, given the others,
independent Gaussians whose precision varies over the draws (a neck) are non-centred exactly by their conditional
moments, θ_G = m(θ_R) + p(θ_R)^{-1/2} z_G, computed at every evaluation from one Hessian–vector product. No
training, exact in the neck; each gradient in z costs ``grad_cost`` gradients of the log density and is counted so
(:func:`grad_cost`). Declined where the structure is affine (the fitted map holds it at one gradient per gradient),
has no neck, or leaves most coordinates outside the groups; then the map is fitted as below.

What it trains on
-----------------
The latest draws since the last restart (:func:`pool`: the later half, at least :data:`MIN_DRAWS` pooled over
the chains; the early recovery steps are a transient from dispersed starts) and their gradients —
``ChunkOut.grad``, which the kernel computed anyway: **no new log-density evaluation**. The map
(:func:`gnomon.sampler.transport.fit_transport`) caps its log-scales to the range the training draws span,
so it does not extrapolate into a neck it never saw; it is kept only when its held-out Fisher divergence beats
the best linear map's (the decision, ``"transport kept"`` / ``"transport refused"``, goes to the ledger).

The run in z
------------
The objective in z (:func:`gnomon.sampler.transport.transported`: the map's arrays are data, so every map of
the same dimension shares one compiled program) gets the chains' positions mapped to z (C new states, one
gradient each), the identity as its metric seed (a dense one, so a later hand-off's dense metric reuses the
same program), and a seeded warmup of :data:`Z_WARMUP` steps: the seed check judges the map (in z a right map
looks like N(0, I)), then windows, extension while unsettled, the final buffer. **Fall-back**: when the check
in z rejects the map, a window's cost or step size fails, or more than :data:`DIVERGENCE_LIMIT` of the
warmup transitions in z diverge, the stage is abandoned (``"transport abandoned"``, with the reason) and the
recovery continues in θ from where it was; the gradients spent in z stay counted. Every gradient of the stage
(the new states, the warmup in z) counts under ``info["grad_evals"]["transport"]``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.sampler import conditional_map as cm
from gnomon.sampler import phases as ph
from gnomon.sampler import transport as tp
from gnomon.sampler import warmup as wu
from gnomon.sampler.decisions import Action, Ledger
from gnomon.sampler.loop import ChunkOut, cat, compiled, shard
from gnomon.sampler.noncentring import structural_map
from gnomon.sampler.seed_check import CHECK_STEPS

MIN_DRAWS = 400  # pooled draws the map needs at least
TRAIN_DRAWS = 600  # the subset it trains on (a fixed size: one compile of the training per dimension)
TRY_AFTER = 120  # recovery steps after the restart before the first try (the recovery's third window end)
MAX_TRIES = 2  # a refused map is tried once more, with the next window's draws
Z_WARMUP = 300  # warmup steps in z (a seeded schedule)
MIN_Z_WARMUP = 150  # fewer left in the warmup budget: not tried
PROBE_STEPS = 100  # after the warmup in z, transitions with the final step size and metric (the probe)
DIVERGENCE_LIMIT = 0.02  # of the probe's transitions: above, the probe again at half the step size ...
PROBE_RETRIES = 2  # ... at most this many times; then fall back to θ
WARMUP_DIVERGENCE_LIMIT = 0.1  # of the adapting warmup's transitions in z (step sizes still explored): a disaster
DISAGREE = 3.0  # a kept seed: the adapted / seeded variance-ratio spread above which the metric disagrees
Z_SD_RANGE = (0.75, 1.33)  # the sampled z's marginal sds outside this: the map does not normalise the posterior
Z_MAX_SKEW = 0.5  # |skewness| of a sampled z marginal above this: likewise (≈ 4.5 standard errors at ESS 500)


class InZ(NamedTuple):
    """A run in the map's coordinates: the map, the objective and data in θ, and whether it came from a
    hand-off (reused) or was trained in this run."""

    tmap: tp.TransportMap
    base: Objective
    base_data: Any
    reused: bool = False


class Options(NamedTuple):
    """What the stage needs of the call: the warmup's metric and its dense limit, the kernel's first step size."""

    metric: str
    max_dense_dim: int
    step0: float


def in_theta(tmap: tp.TransportMap, out: ChunkOut) -> ChunkOut:
    """Outputs of a run in z with base θ = T(z) and θ's log density (the map's log-Jacobian taken off)."""
    z = np.asarray(out.theta)
    theta = np.asarray(tmap.to_theta(z))
    lp = np.asarray(out.log_prob) - np.asarray(tmap.log_det_jacobian(z))
    return out._replace(theta=theta.astype(z.dtype), log_prob=lp.astype(np.asarray(out.log_prob).dtype))


def in_z(tmap: tp.TransportMap, out: ChunkOut) -> ChunkOut:
    """Outputs of a run in θ with z = T⁻¹(θ) and z's log density (the map's log-Jacobian added)."""
    th = np.asarray(out.theta)
    z = np.asarray(tmap.to_z(th))
    lp = np.asarray(out.log_prob) + np.asarray(tmap.log_det_jacobian(z))
    return out._replace(theta=z.astype(th.dtype), log_prob=lp.astype(np.asarray(out.log_prob).dtype))


def z_names(names: Any) -> Any:
    """Coordinate names in a transport map's z: ``z[i] (with <θ's name>)`` (z_i is paired with θ_i)."""
    return lambda i: f"z[{i}] (the transport map's coordinate paired with {names(i)})"


def normality(z: Any, names: Any, parents: Any = ()) -> list[dict]:
    """Findings (for the health check) where the draws in z, ``(chains, draws, D)``, are far from N(0, I) in a
    marginal: an sd outside :data:`Z_SD_RANGE` or a skewness above :data:`Z_MAX_SKEW`. A map that normalises the
    posterior gives z ≈ N(0, I); one that does not (the affine family's ceiling: a scale whose effect on the
    others changes slope, as in a regression whose group scale reaches below the noise) leaves the draws of that
    coordinate's tail unreached by the run in z — measured on the hierarchical regression: z sd 1.37, skewness
    −0.67 in log τ, whose sd came out 40 % low with R̂ 1.007 and nothing else flagged. The map standardises its
    scale ``parents`` (θ indices, paired with the same z) linearly, so their z keeps the posterior's own shape:
    for them only the sd is judged (the stochastic volatility's atanh φ is skewed +1.06 in z of an accurate run)."""
    x = np.asarray(z, np.float64).reshape(-1, np.shape(z)[-1])
    x = x[np.all(np.isfinite(x), axis=1)]
    if x.shape[0] < 100:
        return []
    sd = x.std(0)
    c = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    skew = np.mean(c**3, axis=0)
    skewed = np.abs(skew) > Z_MAX_SKEW
    skewed[np.asarray(parents, np.int64)] = False  # a scale parent's z is its own marginal, linearly standardised
    bad = np.flatnonzero((sd < Z_SD_RANGE[0]) | (sd > Z_SD_RANGE[1]) | skewed)
    if not len(bad):
        return []
    listed = "; ".join(f"z[{i}], paired with {names(int(i))}: sd {sd[i]:.2f}, skewness {skew[i]:+.2f}"
                       for i in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return [{"kind": "transport", "coordinates": [int(i) for i in bad],
             "message": f"the transport map does not normalise the posterior ({listed}{more}: far from N(0, 1)); "
                        "the draws there may miss a tail the map does not reach (the affine family's "
                        "ceiling — reparameterise that scale by hand, or compare with a non-centred model)"}]


def pool(ledger: Ledger, since: int) -> tuple[np.ndarray, np.ndarray]:
    """The draws and gradients to train on, (N, D) each: the later half of the warmup steps since step
    ``since`` (at least :data:`MIN_DRAWS` pooled draws where there are that many)."""
    if not ledger.recent:
        return np.zeros((0, 0)), np.zeros((0, 0))
    out = cat(ledger.recent)
    steps, chains = out.theta.shape[:2]
    fresh = max(min(ledger.steps - since, steps), 0)
    keep = min(fresh, max(fresh // 2, math.ceil(MIN_DRAWS / chains)))
    th = np.asarray(out.theta[steps - keep :]).reshape(-1, out.theta.shape[-1])
    g = np.asarray(out.grad[steps - keep :]).reshape(-1, out.theta.shape[-1])
    return th, g


def tries(ledger: Ledger) -> int:
    return sum(d.action in (Action.TRANSPORT_KEPT, Action.TRANSPORT_REFUSED, Action.TRANSPORT_ABANDONED)
               for d in ledger.decisions)


def may_try(ledger: Ledger, budget: int) -> bool:
    """Whether the stage may still be tried: not abandoned before, fewer than :data:`MAX_TRIES`, and room for
    a warmup in z within ``budget`` warmup steps."""
    return (ledger.transport is None and not ledger.any(Action.TRANSPORT_ABANDONED)
            and tries(ledger) < MAX_TRIES and budget - ledger.steps >= MIN_Z_WARMUP)


def far_from_gaussian(theta: np.ndarray, seed_variances: np.ndarray, adapted: np.ndarray) -> str | None:
    """Why the draws of a kept seed's warmup call for the stage, or None: a funnel in the draws
    (:func:`gnomon.sampler.diagnosis.funnel_signature`) and the adapted metric ``adapted`` (its diagonal)
    disagreeing with the seed's variances by a ratio spread above :data:`DISAGREE`."""
    from gnomon.sampler import diagnosis as dg
    from gnomon.sampler.metric import spread

    ratio = np.asarray(adapted, np.float64) / np.asarray(seed_variances, np.float64)
    if not np.all(np.isfinite(ratio)) or spread(ratio) <= DISAGREE:
        return None
    funnel = dg.funnel_signature(theta)
    if funnel is None:
        return None
    return (f"the seeded warmup's metric moved {spread(ratio):.3g}× in spread from the seed and the draws show a "
            f"funnel (the spread of {len(funnel['affected'])} coordinates changes {funnel['ratio']:.2g}-fold with "
            f"θ[{funnel['scale']}])")


def attempt(ctx: ph.Context, chains: ph.Chains, ledger: Ledger, opts: Options, budget: int, *, since: int,
            why: str) -> tuple[ph.Context, ph.Chains] | None:
    """Train a map on the draws since warmup step ``since``, judge it and, when kept, run the warmup in z.
    Returns the context and chains in z, or None (refused, or abandoned: the caller goes on in θ with its own
    ``ctx``/``chains``, which this does not change)."""
    theta, grad = pool(ledger, since)
    if theta.shape[0] < MIN_DRAWS:
        return None
    abandoned = ledger.any(Action.TRANSPORT_ABANDONED)  # a map from the structure is not tried again after one
    if not abandoned:  # a numpyro model's own non-centring, where it has one
        smap, msg, sites = structural_map(ctx.obj, theta, ctx.data)
        if smap is not None:
            ledger.decide(Action.TRANSPORT_KEPT, f"{why}: transport map kept: {msg} (from the model, no training)",
                          transport={"structural": True, "sites": sites, "draws": int(theta.shape[0]),
                                     "grad_evals": 0})
            return run_in_z(ctx, chains, ledger, InZ(smap, ctx.obj, ctx.data), opts, budget)
    found = cm.analyse(ctx.obj, theta, ctx.data)  # any log density's, from its derivatives (and scale parents)
    ledger.transport_grads += found.spent
    if found.map is not None and not abandoned:
        ledger.decide(Action.TRANSPORT_KEPT, f"{why}: transport map kept: {found.message} (no training)",
                      transport={**found.map.describe(), "grad_evals": found.spent})
        return run_in_z(ctx, chains, ledger, InZ(found.map, ctx.obj, ctx.data), opts, budget)
    tmap, dec = tp.fit_transport(theta, grad, seed=ledger.steps, scale_parents=found.parents,
                                 settings=tp.TransportSettings(max_draws=TRAIN_DRAWS))
    dec.details["conditional_map"] = found.message if found.map is None else "not used after an abandoned map"
    action = Action.TRANSPORT_KEPT if tmap is not None else Action.TRANSPORT_REFUSED
    ledger.decide(action, f"{why}: {dec.message}", transport=dec.details)
    if tmap is None:
        return None
    return run_in_z(ctx, chains, ledger, InZ(tmap, ctx.obj, ctx.data), opts, budget)


def enter(ctx: ph.Context, positions: Any, ledger: Ledger, inz: InZ, opts: Options) -> tuple[ph.Context, ph.Chains]:
    """The context over z (the transported objective, its compiled program) and chains at ``positions`` (base
    θ, (C, D)) mapped to z, with the identity as a dense whitening factor and the adaptation restarted; the new
    states cost one gradient each (``ledger.transport_grads``). Raises ValueError when a mapped start is not
    finite."""
    tobj = objective_in_z(inz.base, inz.tmap)
    dtype = jnp.asarray(positions).dtype
    data = (inz.tmap.arrays(dtype), inz.base_data)
    est = ph.estimator_for(opts.metric, ctx.dim, opts.max_dense_dim, recovering=True)
    dense = est in wu.DENSE_ESTIMATORS
    adapt = ctx.settings.adapt._replace(factor_dense=dense, scale_dense=dense, moments_dense=dense)
    settings = ctx.settings._replace(adapt=adapt)
    program = compiled(tobj, settings)
    z = jnp.asarray(inz.tmap.to_z(jnp.asarray(positions)), dtype)
    states = program.init(z, data)
    ledger.transport_grads += math.ceil(z.shape[0] * grad_cost(inz.tmap))
    ok = np.isfinite(np.asarray(states.logdensity)) & np.all(np.isfinite(np.asarray(states.logdensity_grad)), axis=1)
    if not ok.all():
        raise ValueError(f"chain {int(np.flatnonzero(~ok)[0])} maps to a point in z where the log density or its "
                         "gradient is not finite")
    factor = jnp.eye(ctx.dim, dtype=dtype) if dense else jnp.ones(ctx.dim, dtype)
    ad = program.adapt_init(z, jnp.asarray(opts.step0, dtype), factor)
    zctx = ctx._replace(obj=tobj, settings=settings, program=program, data=data)
    ledger.estimator = est
    return zctx, ph.Chains(shard(states, z.shape[0]), ad, factor, factor)


def run_in_z(ctx: ph.Context, chains: ph.Chains, ledger: Ledger, inz: InZ, opts: Options,
             budget: int) -> tuple[ph.Context, ph.Chains] | None:
    """Enter z and warm up there (:func:`warm`); on failure record ``"transport abandoned"`` and return None
    (the chains in θ are as they were)."""
    grads0 = ledger.grads
    ledger.kept_z_from = len(ledger.kept)
    try:
        zctx, zchains = enter(ctx, np.asarray(chains.states.position), ledger, inz, opts)
        zchains, failure = warm(zctx, zchains, ledger, min(Z_WARMUP, budget - ledger.steps), budget)
    except ValueError as exc:
        failure = str(exc)
    spent = math.ceil((ledger.grads - grads0) * grad_cost(inz.tmap))
    ledger.transport_grads += spent
    ledger.grads = grads0
    ledger.recent.clear()
    if failure is not None:
        first = ledger.kept_z_from
        ledger.kept[first:] = [in_theta(inz.tmap, o) for o in ledger.kept[first:]]
        ledger.kept_z_from = None
        ledger.decide(Action.TRANSPORT_ABANDONED, f"transport map abandoned at warmup step {ledger.steps}: "
                      f"{failure}; the warmup goes on in θ ({spent} gradient evaluations spent in z)",
                      grad_evals=spent, map=inz.tmap.hash)
        return None
    ledger.transport = inz
    ledger.z_grad_cost, ledger.z_grads_from = grad_cost(inz.tmap), ledger.grads
    return zctx, zchains


def grad_cost(tmap: Any) -> float:
    """Gradients of the log density one gradient in the map's z costs (1 for a fitted or a model's map; a
    :class:`~gnomon.sampler.conditional_map.ConditionalMap` differentiates through a Hessian–vector product)."""
    return float(getattr(tmap, "grad_cost", 1.0))


def objective_in_z(base: Objective, tmap: Any) -> Objective:
    """The objective over the map's z (:func:`gnomon.sampler.transport.transported`, or
    :func:`gnomon.sampler.conditional_map.conditioned` for a conditional map)."""
    if isinstance(tmap, cm.ConditionalMap):
        return cm.conditioned(base, tmap)
    return tp.transported(base, tmap)


def map_from_arrays(arrays: dict, meta: dict | None, obj: Objective, data: Any) -> Any:
    """A saved map (a hand-off's) rebuilt: a conditional map for ``obj`` and ``data``, or a fitted one."""
    if cm.is_conditional(meta):
        return cm.ConditionalMap.from_arrays(arrays, meta, obj, data)
    return tp.TransportMap.from_arrays(arrays, meta)


def warm(ctx: ph.Context, chains: ph.Chains, ledger: Ledger, num_steps: int,
         budget: int) -> tuple[ph.Chains, str | None]:
    """The seeded warmup in z: the seed check (the identity: is the target in z close to N(0, I)?), the
    windows with their checks, extension while unsettled, the final buffer. Returns the chains and the reason
    to abandon the map (None: it held)."""
    est = ledger.estimator
    head, tail = wu.schedule(num_steps, True, True)
    last = wu.last_window(head)
    n_check = min(CHECK_STEPS, len(head))
    chains, v, _ = ph.check_seed(ctx, chains, ledger, head[:n_check], np.zeros(ctx.dim), what="map")
    if v.rejected:
        return chains, f"in z the target is not close to N(0, I) ({v.message})"
    div0, steps0 = ledger.divergences, ledger.steps
    num_chains = chains.states.position.shape[0]

    def diverged() -> str | None:  # judged after each window once 50 steps are in
        steps = ledger.steps - steps0
        frac = (ledger.divergences - div0) / max(steps * num_chains, 1)
        if steps >= 50 and frac > WARMUP_DIVERGENCE_LIMIT:
            return (f"{100 * frac:.1f} % of the warmup transitions in z diverged (limit "
                    f"{100 * WARMUP_DIVERGENCE_LIMIT:g} %, after {steps} steps)")
        return None

    for piece in ph.window_rows(head[n_check:]):
        chains, v, _ = ph.seeded_warmup(ctx, chains, ledger, piece, estimator=est, check=True, what="map")
        if v is not None:
            return chains, v.message
        if (why := diverged()) is not None:
            return chains, why
    chains = ph.extend(ctx, chains, ledger, last, len(tail), budget, estimator=est, phase="transport window")
    if len(tail):
        chains, _ = ph.advance(ctx, chains, ledger, tail, phase="transport final buffer", estimator=est)
    return probe(ctx, chains, ledger)


def probe(ctx: ph.Context, chains: ph.Chains, ledger: Ledger) -> tuple[ph.Chains, str | None]:
    """:data:`PROBE_STEPS` transitions in z with the warmup's final step size and metric — what sampling will
    do — counted as warmup steps of the stage; more than :data:`DIVERGENCE_LIMIT` of them divergent: the probe is
    run again at half the step size, up to :data:`PROBE_RETRIES` times, and the first that passes sets the step
    size sampling uses (``"transport step reduced"``); when none passes the map is abandoned. (During the warmup,
    dual averaging tries step sizes that diverge; these do not.) The chains continue from where the last probe
    leaves them.

    Why retry rather than abandon at once: the map was kept because it beats every linear map, and going back to
    θ is the recovery that failed — on the 100-d funnel a probe at 2.8 % divergences sent a run back to θ, where it
    ended at R̂ 1.25 with v's sd 45 % low; the smaller step costs leapfrog steps, not correctness."""
    import jax

    step, imm = ctx.program.adapt_final(chains.adapt)
    first = None
    for attempt in range(PROBE_RETRIES + 1):
        trial = step * 0.5**attempt
        fixed = ph.replace_adapt(chains, trial, imm)
        key = jax.random.fold_in(ctx.key, 2**30 + ledger.steps)
        if attempt:  # (a retry's own draws: the probe does not advance ledger.steps)
            key = jax.random.fold_in(key, attempt)
        moved, outs = ph.draw(ctx, fixed, key, PROBE_STEPS, ledger.steps)
        out = cat(outs)
        ledger.grads += int(np.sum(out.n_steps))
        div = int(np.sum(out.diverging))
        n = int(np.size(out.diverging))
        chains = chains._replace(states=moved.states)
        if div <= DIVERGENCE_LIMIT * n:
            if attempt:
                chains = _with_step_size(chains, trial)
                ledger.decide(Action.TRANSPORT_STEP_REDUCED,
                              f"transport probe: {first}; at {0.5**attempt:g} × that step size ({float(trial):.3g}) "
                              f"{div} of {n} diverged: sampling in z uses it", step_size=float(trial))
            return chains, None
        if first is None:
            first = (f"{div} of {n} transitions in z with the final step size diverged ({100 * div / n:.1f} %, "
                     f"limit {100 * DIVERGENCE_LIMIT:g} %)")
    return chains, f"{first}, and at {PROBE_RETRIES} smaller step sizes down to {float(trial):.3g}"


def _with_step_size(chains: ph.Chains, step: Any) -> ph.Chains:
    """The chains with the adaptation's final step size set to ``step`` (the dual-averaging state read by the
    program's ``adapt_final``)."""
    ad = chains.adapt
    step = float(step)  # (on the host: an eager log compiled a program of its own)
    log_step = jnp.asarray(np.asarray(math.log(step), np.asarray(ad.da.log_step_size).dtype))
    da = ad.da._replace(log_step_size=log_step, log_step_size_avg=log_step)
    return chains._replace(adapt=ad._replace(da=da, step_size=jnp.asarray(np.asarray(step, ad.step_size.dtype))))
