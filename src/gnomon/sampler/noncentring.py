r"""The non-centring a numpyro model's own structure gives, as a transport map (no training).

Why
---
A fitted transport map (:mod:`gnomon.sampler.transport`) learns the posterior from its draws. Where the data pull
a centred hierarchical model's children away from their prior mean, the map's neck limit is an extrapolation:
any error δ in the mean it extrapolates to a small group scale τ is multiplied by 1/τ in z. On a hierarchical
regression the reference draws below log τ = −4 mapped to z with sds near 2000, so the run in z never went
there, and log τ's sd came out 24–28 % low (docs/sampling.md). A **non-centring** of the model's own
location-scale sites, :math:`θ_j = \mathrm{loc}(θ_P) + \mathrm{scale}(θ_P)\, z_j`, is exact in the neck by
construction: there :math:`θ_j - \mathrm{loc}` shrinks with the scale, whatever the data say. It is what a user
writes by hand (``numpyro.infer.reparam.LocScaleReparam(centered=0)``).

What it builds
--------------
For a numpyro objective (``Objective.from_numpyro``) whose latent location-scale sites take their loc and scale
from other latent sites (:meth:`gnomon.objective.numpyro_model.NumpyroModel.loc_scale_sites`), it writes the
non-centring as an affine autoregressive :class:`~gnomon.sampler.transport_map.TransportMap`: the other
coordinates first (standardised by the draws' median and scaled median absolute deviation), then the sites',
each with the shift and log-scale of its loc and log-scale in the parents. Because it is a ``TransportMap``, the
run in z, the hand-off and the Trace (θ stays base θ) are the stage's own.

It declines (None, with the reason) unless the structure is one this family holds exactly:

* each site's block is unconstrained as the model sees it (real support, no transform, no unit map);
* loc and log-scale are **affine** in θ: their Jacobians at the draws' median predict them at two other points
  (± 2 robust sd) to :data:`LINEAR_TOL`;
* one level: no site's loc or scale depends on a site that is itself non-centred.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from gnomon.sampler import transport as tp

LINEAR_TOL = 1e-4  # loc and log-scale predicted by their Jacobian to this, relative (evaluated in θ's dtype)


def structural_map(obj: Any, theta: np.ndarray, data: Any) -> tuple[tp.TransportMap | None, str, list[str]]:
    """The model's non-centring of its location-scale sites as a :class:`~gnomon.sampler.transport_map.TransportMap`
    for a numpyro objective ``obj``, built around the draws ``theta`` (N, D) (their median and scaled median absolute
    deviation: where the affinity is checked, and the standardisation of the other coordinates), with the model's
    ``data``.

    Returns ``(map, message, sites)``; the map is None where the model has no such sites or its structure is not
    one the affine family holds exactly (the message says why)."""
    from gnomon.sampler import diagnosis as dg

    th = np.asarray(theta, np.float64)
    if th.ndim == 2:
        th = th[np.all(np.isfinite(th), axis=1)]
    if th.ndim != 2 or th.shape[0] < 2:
        return None, "fewer than two finite draws", []
    model = getattr(obj, "model", None)
    layout = getattr(model, "layout", None)
    # robust: a chain stuck far out (seen: one at log τ = −18 with log density −3·10²⁰) must not set the scale the
    # run in z starts from (its seed check expects N(0, I) there)
    centre = np.median(th, axis=0)
    sd = np.maximum(1.4826 * np.median(np.abs(th - centre), axis=0), 1e-6)
    sites = dg.loc_scale_sites(obj, centre.astype(np.asarray(theta).dtype))
    if not sites or layout is None:
        return None, "no location-scale site takes its scale from another latent site", []
    names = [s for s, _ in sites]
    blocks = [layout[n] for n in names]
    odd = [b.name for b in blocks if not b.is_identity or getattr(b, "affine", None) is not None]
    if odd:
        return None, f"site(s) {odd} are transformed in θ (not their model value): not non-centred", names
    d = th.shape[1]
    site_idx = np.concatenate([np.arange(b.start, b.stop) for b in blocks])
    is_site = np.zeros(d, bool)
    is_site[site_idx] = True

    dtype = np.asarray(theta).dtype
    try:
        at, jac = model.loc_log_scale(tuple(names))  # (compiled once per model and sites)
        x0 = jnp.asarray(centre, dtype)
        (l0, s0), (jl, js) = at(x0, data), jac(x0, data)
        l0, s0, jl, js = (np.asarray(v, np.float64) for v in (l0, s0, jl, js))
        for sign in (-2.0, 2.0):
            x1 = centre + sign * sd
            l1, s1 = (np.asarray(v, np.float64) for v in at(jnp.asarray(x1, dtype), data))
            for got, base, j in ((l1, l0, jl), (s1, s0, js)):
                if not np.all(np.abs(got - (base + j @ (x1 - centre))) <= LINEAR_TOL * (1 + np.abs(got))):
                    return None, "a site's loc or log-scale is not affine in θ: not in the family", names
    except Exception as exc:  # a model the trace cannot run this way: decline, the fitted map remains  # noqa: BLE001
        return None, f"the model's loc and scale could not be read ({type(exc).__name__})", names
    if np.any(jl[:, is_site] != 0) or np.any(js[:, is_site] != 0):
        return None, "a site's loc or scale depends on another non-centred site (more than one level)", names
    order = np.concatenate([np.flatnonzero(~is_site), site_idx]).astype(np.int64)
    pos = np.empty(d, np.int64)
    pos[order] = np.arange(d)
    loc = np.where(is_site, 0.0, centre)
    scale = np.where(is_site, 1.0, sd)
    a, c = np.zeros(d), np.zeros(d)
    aw, bw = np.zeros((d, d)), np.zeros((d, d))
    rows = pos[site_idx]
    # θ_k = loc_k + scale_k u_k for the others: loc_j(θ) = l0_j + Σ_k J_jk (θ_k − centre_k)
    a[rows] = l0 + jl @ (loc - centre)
    c[rows] = s0 + js @ (loc - centre)
    aw[np.ix_(rows, pos)] = jl * scale
    bw[np.ix_(rows, pos)] = js * scale
    params = tp.TransportParams(*(np.asarray(v, dtype) for v in (a, c, aw, bw)))
    tmap = tp.TransportMap(np.asarray(loc, dtype), np.asarray(scale, dtype), order, params,
                           info={"structural": True, "sites": names})
    msg = (f"the model's own non-centring of {len(names)} location-scale site(s) "
           f"({', '.join(repr(n) for n in names[:4])}{' …' if len(names) > 4 else ''}): θ_j = loc + scale·z_j")
    return tmap, msg, names
