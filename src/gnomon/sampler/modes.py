r"""Regions the chains did not share: separate modes, a mode no chain sampled, a neck the draws never entered.

R̂ compares chains; it can only see a second mode when some chain sits in it, and it says nothing about a
region no chain entered. Three findings, each a dict with ``kind``, the coordinates, the locations and a
``message`` that :func:`gnomon.sampler.health.chain_health` turns into a problem:

``"chains"`` (:func:`chain_modes`)
    the chains split into groups whose means lie more than :data:`SEPARATION` within-chain sd apart (median
    over chains, per coordinate): separate modes — or a region some chains cannot leave. The chains are left
    where they are (:mod:`gnomon.sampler.stuck_chains` never moves a chain that samples normally), so the
    draws keep the evidence; the message names the coordinates that separate the groups, each group's chains,
    location and median log density, and says when the locations are the same values in another order (label
    switching in a mixture).
``"probe"`` (:func:`probe_modes`)
    after sampling, a few steps of the sampler (the adapted step size and metric, no adaptation) from
    dispersed points around the optimizer's start — antithetic pairs :math:`θ_0 \pm r`, :math:`|r_i| \in
    [1, 2]` (where a cold start would begin: Stan's inits are uniform in :math:`θ_0 \pm 2`), so that in each
    coordinate one of a pair lies on either side of :math:`θ_0` (:func:`probe_starts`). A probe chain that
    ends more than :data:`PROBE_DISTANCE` within-chain sd from every chain's draws, still moving, with a log
    density at least that of the draws' lower tail, has found a region of posterior mass no chain sampled.
``"neck"`` (:func:`unentered_region`)
    after a rejected seed, the seed check's chains sat near the optimizer's mode; when their log density is
    above nearly every draw's and their region lies outside the range of the draws, the adapted step size
    never entered a region of high density the check saw — a funnel's neck, which the draws then likely
    miss (seen: a centred funnel with P(τ < 0.5) = 0.000 against 0.093, R̂ 1.04 and no divergence).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gnomon.util.validate import host_rng

SEPARATION = 4.0  # group chains whose means differ by at most this many within-chain sd
PROBE_DISTANCE = 6.0  # a probe chain this many within-chain sd from every chain's mean is elsewhere
PROBE_STEPS = 20
MAX_NAMED = 3  # coordinates named in a message


def _name(names: Any, i: int) -> str:
    return names(int(i)) if callable(names) else f"θ[{int(i)}]"


def _scales(theta: np.ndarray) -> np.ndarray:
    """Median over chains of the within-chain sd per coordinate (robust to one chain stuck), floored."""
    sd = np.median(np.std(theta, axis=1), axis=0)
    ok = np.isfinite(sd) & (sd > 0)
    fill = float(np.median(sd[ok])) if ok.any() else 1.0
    return np.where(ok, sd, fill * 1e-6 if fill > 0 else 1.0)


def _groups(means: np.ndarray, scale: np.ndarray) -> list[list[int]]:
    """Connected components of chains whose means lie within :data:`SEPARATION` sd of each other."""
    c = means.shape[0]
    parent = list(range(c))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a in range(c):
        for b in range(a + 1, c):
            if np.max(np.abs(means[a] - means[b]) / scale) <= SEPARATION:
                parent[find(a)] = find(b)
    out: dict[int, list[int]] = {}
    for a in range(c):
        out.setdefault(find(a), []).append(a)
    return sorted(out.values())


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def chain_modes(theta: Any, log_prob: Any, names: Any = None) -> dict | None:
    """The ``"chains"`` finding of draws ``theta`` (C, N, D) and ``log_prob`` (C, N), or None when the chains
    share one region (or there are fewer than 2 chains or 4 draws)."""
    th = np.asarray(theta, np.float64)
    if th.ndim != 3 or th.shape[0] < 2 or th.shape[1] < 4 or not np.all(np.isfinite(th)):
        return None
    means = th.mean(axis=1)
    scale = _scales(th)
    groups = _groups(means, scale)
    if len(groups) < 2:
        return None
    gmeans = np.stack([th[g].reshape(-1, th.shape[2]).mean(axis=0) for g in groups])  # (G, D)
    sep = np.max(np.abs(gmeans[:, None, :] - gmeans[None, :, :]), axis=(0, 1)) / scale  # (D,)
    coords = [int(i) for i in np.argsort(-sep)[:MAX_NAMED] if sep[i] > SEPARATION]
    lp = np.asarray(log_prob, np.float64) if log_prob is not None else None
    parts = []
    for g, m in zip(groups, gmeans, strict=True):
        at = ", ".join(f"{_name(names, i)} ≈ {_fmt(m[i])}" for i in coords)
        dens = f", log density {_fmt(float(np.median(lp[g])))}" if lp is not None else ""
        parts.append(f"chain{'s' if len(g) > 1 else ''} {', '.join(map(str, g))} at {at}{dens}")
    switched = _label_switching(gmeans, scale)
    msg = (f"the chains sit in {len(groups)} separate regions — {'; '.join(parts)}: separate modes (or a region "
           "some chains cannot leave); each chain stayed in its own, so the draws do not weigh them against each "
           "other")
    if switched:
        over = ", ".join(_name(names, i) for i in switched)
        msg += (f"; the regions hold the same values in another order over {over}"
                " (label switching): order them (e.g. an ordered transform) or report quantities that do not "
                "depend on the labels")
    else:
        msg += "; report each mode separately, or use a sampler made for several modes (tempering, SMC)"
    return {
        "kind": "chains",
        "groups": [list(map(int, g)) for g in groups],
        "coordinates": coords,
        "locations": [[float(m[i]) for i in coords] for m in gmeans],
        "log_prob": [float(np.median(lp[g])) for g in groups] if lp is not None else None,
        "label_switching": bool(switched),
        "message": msg,
    }


def _label_switching(gmeans: np.ndarray, scale: np.ndarray) -> list[int]:
    """The coordinates permuted between two groups (label switching), or [] — two groups only."""
    if gmeans.shape[0] != 2:
        return []
    a, b = gmeans
    moved = np.flatnonzero(np.abs(a - b) / scale > SEPARATION)
    if len(moved) < 2:
        return []
    tol = 2.0 * np.max(scale[moved])
    if np.all(np.abs(np.sort(a[moved]) - np.sort(b[moved])) <= tol):
        return [int(i) for i in moved]
    return []


def probe_starts(center: Any, key: Any, num_chains: int) -> np.ndarray:
    """Antithetic probe starts around ``center``: ``center ± r`` with ``|r_i|`` uniform in [1, 2] and random
    signs (C of them; an odd C leaves the last one unpaired)."""
    center = np.asarray(center)
    d = center.shape[0]
    rng = host_rng(key)  # host draws: no program compiled for them
    mag = rng.uniform(1.0, 2.0, ((num_chains + 1) // 2, d))
    sign = np.where(rng.random(((num_chains + 1) // 2, d)) < 0.5, 1.0, -1.0)
    r = mag * sign
    both = np.concatenate([r, -r], axis=0)
    order = np.stack([np.arange(len(r)), np.arange(len(r)) + len(r)], axis=1).reshape(-1)[:num_chains]
    return (center[None, :] + both[order]).astype(center.dtype)


def probe_modes(probe_theta: Any, probe_lp: Any, probe_div: Any, theta: Any, log_prob: Any,
                names: Any = None) -> list[dict]:
    """The ``"probe"`` findings: probe chains (``probe_theta`` (steps, C, D), ``probe_lp``/``probe_div``
    (steps, C)) whose second half lies more than :data:`PROBE_DISTANCE` within-chain sd from every chain's
    draws (``theta`` (C, N, D)), still moving and not mostly divergent, with a median log density at least the
    draws' 1 % quantile."""
    pt = np.asarray(probe_theta, np.float64)
    th = np.asarray(theta, np.float64)
    if pt.ndim != 3 or pt.shape[0] < 4 or th.ndim != 3 or not np.all(np.isfinite(th)):
        return []
    half = pt[pt.shape[0] // 2 :]
    lp_half = np.asarray(probe_lp, np.float64)[pt.shape[0] // 2 :]
    div_half = np.asarray(probe_div, bool)[pt.shape[0] // 2 :]
    scale = _scales(th)
    means = th.mean(axis=1)  # (C, D)
    lp = np.asarray(log_prob, np.float64)
    floor = float(np.quantile(lp, 0.01))
    found = []
    for c in range(half.shape[1]):
        x = half[:, c]
        if not np.all(np.isfinite(x)):
            continue
        p = x.mean(axis=0)
        dist = np.min(np.max(np.abs(p[None, :] - means) / scale, axis=1))
        moving = np.mean(np.any(x[1:] != x[:-1], axis=1)) >= 0.5
        dense = float(np.median(lp_half[:, c])) >= floor
        if dist > PROBE_DISTANCE and moving and dense and np.mean(div_half[:, c]) < 0.5:
            if any(np.max(np.abs(p - f["_at"]) / scale) <= SEPARATION for f in found):
                continue  # the same region as an earlier probe chain
            near = int(np.argmin(np.max(np.abs(p[None, :] - means) / scale, axis=1)))
            coords = [int(i) for i in np.argsort(-np.abs(p - means[near]) / scale)[:MAX_NAMED]]
            found.append({"_at": p, "kind": "probe", "coordinates": coords,
                          "location": [float(p[i]) for i in coords],
                          "log_prob": float(np.median(lp_half[:, c])), "draws_log_prob": float(np.median(lp))})
    for f in found:
        at = ", ".join(f"{_name(names, i)} ≈ {_fmt(v)}" for i, v in zip(f["coordinates"], f["location"], strict=True))
        ranges = ", ".join(f"{_name(names, i)} ∈ [{_fmt(th[..., i].min())}, {_fmt(th[..., i].max())}]"
                           for i in f["coordinates"])
        f["message"] = (f"a probe from dispersed starts around the optimizer's start found a region no chain sampled: "
                        f"{at} (log density {_fmt(f['log_prob'])}, the draws' median {_fmt(f['draws_log_prob'])}; "
                        f"the draws: {ranges}) — another mode: the draws cover only part of the posterior; start "
                        "chains in every mode (e.g. init=gn.optimize_batch(...) from several starts) to see them")
        del f["_at"]
    return found


def unentered_region(check_theta: Any, check_lp: Any, theta: Any, log_prob: Any, names: Any = None) -> dict | None:
    """The ``"neck"`` finding: the second half of the seed check's draws (``check_theta`` (steps, C, D),
    ``check_lp`` (steps, C)) had a median log density above the draws' 99 % quantile and lay, in some
    coordinate, outside the whole range of the draws ``theta`` (C, N, D) by more than half a within-chain sd."""
    ct = np.asarray(check_theta, np.float64)
    th = np.asarray(theta, np.float64)
    if ct.ndim != 3 or ct.shape[0] < 2 or th.ndim != 3 or not np.all(np.isfinite(th)):
        return None
    half = ct[ct.shape[0] // 2 :].reshape(-1, ct.shape[2])
    hlp = np.asarray(check_lp, np.float64)[ct.shape[0] // 2 :].reshape(-1)
    ok = np.all(np.isfinite(half), axis=1) & np.isfinite(hlp)
    if not ok.any():
        return None
    half, hlp = half[ok], hlp[ok]
    lp = np.asarray(log_prob, np.float64)
    if not float(np.median(hlp)) > float(np.quantile(lp, 0.99)):
        return None
    flat = th.reshape(-1, th.shape[2])
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    med = np.median(half, axis=0)
    scale = _scales(th)
    outside = np.maximum(lo - med, med - hi) / scale
    coords = [int(i) for i in np.argsort(-outside)[:MAX_NAMED] if outside[i] > 0.5]
    if not coords:
        return None
    at = ", ".join(f"{_name(names, i)} ≈ {_fmt(med[i])}" for i in coords)
    ranges = ", ".join(f"{_name(names, i)} ∈ [{_fmt(lo[i])}, {_fmt(hi[i])}]" for i in coords)
    msg = (f"the seed check's chains sat at {at} with log density {_fmt(float(np.median(hlp)))}, above nearly every "
           f"draw's (99 % below {_fmt(float(np.quantile(lp, 0.99)))}), where no draw went ({ranges}): the adapted "
           "step size never entered a region of high density — a funnel's neck — so the draws likely miss part of "
           "the posterior there (whatever R̂ and the divergences say)")
    return {"kind": "neck", "coordinates": coords, "location": [float(med[i]) for i in coords],
            "log_prob": float(np.median(hlp)), "draws_range": [[float(lo[i]), float(hi[i])] for i in coords],
            "message": msg}
