"""What :func:`gnomon.sample` checks besides its phases: an improper direction before the warmup, the regions
the chains did not share after sampling, and the likely cause of a rejected seed or a missing mode.

The pieces are in :mod:`gnomon.sampler.diagnosis` (what the evidence supports) and
:mod:`gnomon.sampler.modes` (separate modes, the probe, an unentered neck); this module runs them with the
compiled program and the chains of one call.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.sampler import diagnosis as dg
from gnomon.sampler import modes as md
from gnomon.sampler import phases as ph
from gnomon.sampler.starts import Start


def check_proper(states: Any, positions: Any, center: Any, imm0: Any, program: Any, data: Any,
                 names: Any) -> int:
    """Refuse an improper posterior before the warmup (:func:`gnomon.sampler.diagnosis.improper_directions`:
    a coordinate whose gradient is the same at every chain's start, followed out along a ray with the compiled
    program's ``init``, C points per call); returns the gradient evaluations spent."""
    grads = np.asarray(states.logdensity_grad)
    positions = np.asarray(positions)
    num_chains, dtype = positions.shape[0], positions.dtype
    spent = [0]

    def evaluate(points: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(points), num_chains):
            part = points[i : i + num_chains]
            pad = np.concatenate([part, np.repeat(part[-1:], num_chains - len(part), axis=0)])
            out.append(np.asarray(program.init(jnp.asarray(pad, dtype), data).logdensity)[: len(part)])
            spent[0] += num_chains
        return np.concatenate(out)

    scales = np.sqrt(np.asarray(imm0.variances, np.float64))
    found = dg.improper_directions(grads, positions, np.asarray(center), scales, evaluate)
    if found:
        raise ValueError(dg.improper_message(found, names))
    return spent[0]


def probe_origin(start: Start) -> np.ndarray | None:
    """Where a cold start would begin, for the mode probe: the optimizer's first point, or the θ given; None
    for a continuation (a hand-off, a sampling trace) or per-chain starts."""
    if start.source == "optimization trace" and start.map is not None and start.map.first_theta is not None:
        return np.asarray(start.map.first_theta)
    if start.source == "theta":
        return np.asarray(start.center)
    return None


def findings(ctx, chains, ledger, draws, rejected, origin, key, names) -> list[dict]:
    """Regions the chains did not share (:mod:`gnomon.sampler.modes`): separate modes among the chains, else
    a probe from around ``origin``; and after a rejected seed, a region of the seed check the draws never
    entered."""
    found = []
    split = md.chain_modes(draws.theta, draws.log_prob, names)
    if split is not None:
        found.append(split)
    elif origin is not None and np.all(np.isfinite(origin)):
        starts = md.probe_starts(origin, key, draws.theta.shape[0])
        run = ph.probe(ctx, chains, jax.random.fold_in(key, 1), starts, md.PROBE_STEPS)
        if run is not None:
            out, cost = run
            ledger.check_grads += math.ceil(cost * ledger.z_grad_cost)  # (a run in a conditional map's z)
            found += md.probe_modes(out.theta, out.log_prob, out.diverging, draws.theta, draws.log_prob, names)
    if rejected is not None and rejected.log_prob is not None:
        neck = md.unentered_region(rejected.theta, rejected.log_prob, draws.theta, draws.log_prob, names)
        if neck is not None:
            found.append(neck)
    return found


def explain(obj, center_np, draws, step_size, imm, diag, names, optimizer_end: str | None) -> str:
    """The likely cause of a rejected seed or a missing mode (``optimizer_end``: what the optimizer's end
    shows), claimed only on evidence (:mod:`gnomon.sampler.diagnosis`); otherwise what was seen."""
    said = [capital(optimizer_end)] if optimizer_end else []
    coarse = dg.precision_limit(draws.theta, step_size, imm, names)
    sites = [] if coarse else dg.loc_scale_sites(obj, center_np)
    funnel = None if (coarse or sites) else dg.funnel_signature(draws.theta, names)
    boundary = None if (coarse or sites or funnel) else dg.boundary_start(obj, center_np, draws.theta, names)
    cause = (coarse or (dg.loc_scale_message(sites) if sites else None) or (funnel["message"] if funnel else None)
             or boundary)
    if cause:
        said.append(capital(cause))
    elif not said:
        said.append(f"The draws show no funnel, no centred loc-scale site and no float precision limit; what was "
                    f"seen: the adapted metric differs from the seed by {diag['metric_ratio_min']:.3g}…"
                    f"{diag['metric_ratio_max']:.3g}× in variance — the curvature at the start did not describe the "
                    "posterior the chains found")
    return ". ".join(said)


def capital(text: str) -> str:
    return text[0].upper() + text[1:] if text[:1].isascii() else text


