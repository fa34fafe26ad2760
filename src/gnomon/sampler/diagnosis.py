r"""Why a seed failed or a run went wrong — said only as far as the evidence goes.

When the seed is rejected, or the optimizer found no mode, :func:`gnomon.sample` names a likely cause. Each
cause is claimed only on evidence of it:

* **float32 rounding** (:func:`precision_limit`) only when the adapted leapfrog step in some coordinate,
  :math:`\epsilon\sqrt{M^{-1}_{ii}}`, is within :data:`PRECISION_FACTOR` float spacings of the values the draws
  hold there: the sampler then moves on a staircase. (The seed's scales are no evidence: a mode in a funnel's
  neck has tiny seeded scales in any precision.)
* **a centred loc-scale structure** (non-centring advised) only when it is seen: in a numpyro model, a latent
  site of a location-scale family whose scale depends on other latent sites (:func:`loc_scale_sites`);
  otherwise a funnel signature in the draws (:func:`funnel_signature`): the spread of two other coordinates
  changes :data:`FUNNEL_RATIO`-fold — or that of half the others :data:`FUNNEL_BROAD`-fold — in the same
  direction between the lowest and the highest fifth of one coordinate's draws (for any Gaussian, correlated
  or not, the conditional spread is the same everywhere; a symmetric dependence such as a multivariate t
  changes it alike at both ends). Draws that miss the neck of a centred eight schools show 2–2.9× in all
  eight group effects.
* **no mode** — the density of θ unbounded — only when ``log_prob`` of θ (Jacobian included) at the
  optimizer's end exceeds every draw's (:func:`optimizer_end`); an optimizer that ran off along the loss
  *without* the Jacobian while ``log_prob`` there is lower than the draws' has found that the constrained
  density has no maximum, not that the posterior of θ has none (a proper posterior whose MAP loss is
  unbounded).
* **an improper direction** (:func:`improper_directions`): before the warmup, a coordinate whose gradient is
  the same at every chain's start is followed out along a ray of up to 1024 scales; when ``log_prob`` never
  falls along it (flat, or growing), the posterior is improper there (a flat prior on a site the likelihood
  never sees) and :func:`gnomon.sample` refuses at once rather than spend millions of gradients on
  trajectories that never turn.

Otherwise the message says what was seen (the seed's verdict and how the adapted metric differs from it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

PRECISION_FACTOR = 20.0
FUNNEL_RATIO = 3.0  # two coordinates this many-fold, or
FUNNEL_BROAD = 1.6  # half of the others this many-fold, in the same direction
RAY = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)  # multiples of a coordinate's scale along the improper-direction ray
MAX_SUSPECTS = 8


def coordinate_names(layout: Any, dim: int) -> Callable[[int], str]:
    """``names(i)``: the layout's label of θ coordinate ``i`` (``"mu"``, ``"theta[3]"``; a transformed block's
    coordinate is marked, its θ being unconstrained: ``"tau (unconstrained)"``), or ``"θ[i]"``."""
    if layout is None or getattr(layout, "size", None) != dim:
        return lambda i: f"θ[{i}]"
    labels = layout.index_labels()
    for b in layout.blocks:
        if not b.is_identity:
            for i in range(b.start, b.stop):
                labels[i] = f"{labels[i]} (unconstrained)"
    return lambda i: labels[i]


def precision_limit(theta: Any, step_size: float, imm: Any, names: Callable[[int], str] | None = None) -> str | None:
    """A sentence when θ's float type cannot resolve the sampler's steps: in some coordinate ``i`` the adapted
    leapfrog step ``step_size · √imm_ii`` is within :data:`PRECISION_FACTOR` float spacings of the draws'
    median ``|θ_i|`` (float32 near 10⁵ with an sd of 0.005: a staircase); None otherwise (or in float64)."""
    th = np.asarray(theta)
    if not np.issubdtype(th.dtype, np.floating) or th.dtype.itemsize >= 8:
        return None
    flat = th.reshape(-1, th.shape[-1]).astype(np.float64)
    m = np.asarray(imm, np.float64)
    var = np.diagonal(m) if m.ndim == 2 else m
    step = float(step_size) * np.sqrt(np.maximum(var, 0.0))
    where = np.median(np.abs(flat), axis=0)
    spacing = np.spacing(where.astype(th.dtype)).astype(np.float64)
    ratio = np.where(step > 0, spacing / np.where(step > 0, step, 1.0), np.inf)
    i = int(np.argmax(ratio))
    if not ratio[i] > 1.0 / PRECISION_FACTOR:
        return None
    name = names(i) if names else f"coordinate {i}"
    return (f"θ is {th.dtype} and {name} (≈ {float(where[i]):.6g}) is resolved only to {spacing[i]:.2g}, while the "
            f"adapted leapfrog step there is {step[i]:.2g} (the draws' sd {float(flat[:, i].std()):.2g}): rounding is "
            "the likely cause; use float64 (jax_enable_x64) or centre that parameter (an offset or Affine in the "
            "layout)")


def funnel_signature(theta: Any, names: Callable[[int], str] | None = None, max_dim: int = 200) -> dict | None:
    """A coordinate ``v`` of the draws ``(..., D)`` that sets the spread of others: the sd of two of them
    differs :data:`FUNNEL_RATIO`-fold (or of half of them :data:`FUNNEL_BROAD`-fold), in the same direction,
    between the lowest and the highest fifth of ``v``'s draws. Returns ``{"scale": v, "affected": [...],
    "ratio": r, "message": ...}`` or None (also for D < 3 or D > ``max_dim``)."""
    th = np.asarray(theta, np.float64)
    flat = th.reshape(-1, th.shape[-1])
    n, d = flat.shape
    if d < 3 or d > max_dim or n < 50 or not np.all(np.isfinite(flat)):
        return None
    k = max(n // 5, 10)
    best = None
    for v in range(d):
        order = np.argsort(flat[:, v], kind="stable")
        lo, hi = flat[order[:k]], flat[order[-k:]]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.std(hi, axis=0) / np.std(lo, axis=0)
        r[v] = 1.0
        r = np.where(np.isfinite(r) & (r > 0), r, 1.0)
        for sign in (1.0, -1.0):
            lr = sign * np.log(r)
            strong = np.flatnonzero(lr > math.log(FUNNEL_RATIO))
            broad = np.flatnonzero(lr > math.log(FUNNEL_BROAD))
            hit = strong if len(strong) >= 2 else (broad if len(broad) >= max(2, (d - 1) / 2) else None)
            if hit is not None:
                score = float(np.median(lr[hit])) * len(hit)
                if best is None or score > best[0]:
                    best = (score, v, hit, float(np.exp(np.median(lr[hit]))), sign)
    if best is None:
        return None
    _, v, hit, ratio, sign = best
    nm = names or (lambda i: f"θ[{i}]")
    shown = ", ".join(nm(int(i)) for i in hit[:4]) + (", …" if len(hit) > 4 else "")
    grows = "grows" if sign > 0 else "shrinks"
    msg = (f"the draws show a funnel: the spread of {shown} {grows} {ratio:.2g}-fold from the lowest to the highest "
           f"fifth of {nm(v)} — a scale parameter with the values it scales, typical of a hierarchical model in "
           "its centred form (θ_j ~ N(μ, τ²) with τ sampled): a non-centred parameterisation (θ_j = μ + τ·z_j, "
           "z_j ~ N(0, 1)) usually removes the funnel and lets the curvature seed work")
    return {"scale": int(v), "affected": [int(i) for i in hit], "ratio": ratio, "message": msg}


def loc_scale_sites(obj: Any, theta: Any) -> list[tuple[str, list[str]]]:
    """``[(site, [scale parents])]`` of a numpyro objective (``obj.model``): latent location-scale sites whose
    scale depends on other latent sites, at θ; [] for other objectives or when it cannot be told."""
    model = getattr(obj, "model", None)
    find = getattr(model, "loc_scale_sites", None)
    if find is None or getattr(obj, "thetamap", None) is not None:
        return []
    try:
        return list(find(theta))
    except Exception:  # a diagnosis never breaks a finished run  # noqa: BLE001
        return []


def loc_scale_message(sites: list[tuple[str, list[str]]]) -> str:
    shown = "; ".join(f"site {s!r} has its scale from {', '.join(repr(p) for p in parents)}"
                      for s, parents in sites[:4])
    return (f"the model is centred: {shown} — a location-scale site whose scale is sampled makes a funnel; a "
            "non-centred parameterisation (numpyro.infer.reparam.LocScaleReparam(centered=0), or "
            "θ = μ + τ·z with z ~ N(0, 1)) usually removes it and lets the curvature seed work")


def optimizer_end(lp_end: float | None, draws_lp: Any, loss_includes_jacobian: bool, has_jacobian: bool) -> str:
    """What the optimizer's end says, for a start judged to have no mode: ``lp_end`` is ``log_prob`` (Jacobian
    included) at its best point, ``draws_lp`` the draws' log densities."""
    lp = np.asarray(draws_lp, np.float64)
    top = float(np.max(lp[np.isfinite(lp)])) if np.isfinite(lp).any() else math.nan
    if lp_end is not None and (math.isinf(lp_end) and lp_end > 0 or (math.isfinite(top) and lp_end > top + 1.0)):
        return (f"the density of θ is unbounded where the optimizer went (log_prob {lp_end:.4g} there, at most "
                f"{top:.4g} in the draws): there is no mode to start from — an improper posterior (e.g. a flat prior "
                "on a log scale; give the parameters that run off a proper prior), or a proper one whose density "
                "grows without bound into a funnel's neck (a centred hierarchical model)")
    if has_jacobian and not loss_includes_jacobian:
        return (f"the optimizer's loss (the constrained density, without the log-Jacobian) has no minimum where it "
                f"went, but the density of θ there is lower than the draws' (log_prob {_g(lp_end)} vs at most "
                f"{top:.4g}): the posterior of θ has a mode the loss does not show — optimise "
                "obj.with_jacobian_in_loss(True) for a start at it")
    return (f"the optimizer's end is not a mode, but nothing shows the density of θ unbounded (log_prob there "
            f"{_g(lp_end)}, at most {top:.4g} in the draws)")


def mode_above_draws(lp_mode: float | None, draws_lp: Any, dim: int) -> str | None:
    """For a rejected seed: a sentence when ``log_prob`` at the optimizer's end exceeds every draw's by more
    than ``max(D, 10)`` nats (near a mode, the typical set lies within about D/2 nats below it), else None."""
    lp = np.asarray(draws_lp, np.float64)
    if lp_mode is None or not np.isfinite(lp).any() or not math.isfinite(lp_mode):
        return None
    gap = lp_mode - float(np.max(lp[np.isfinite(lp)]))
    if gap <= max(dim, 10):
        return None
    return (f"the optimizer's end has log density {lp_mode:.4g}, {gap:.3g} nats above every draw: the density of θ "
            "peaks, or grows without bound, in a region the draws never reach — the neck of a centred model, or "
            "an improper posterior (e.g. a flat prior on a log scale)")


def _g(x: float | None) -> str:
    return "not computed" if x is None else f"{x:.4g}"


def improper_directions(
    grads: Any, positions: Any, center: Any, scales: Any, evaluate: Callable[[np.ndarray], np.ndarray]
) -> list[dict]:
    """Coordinates along which ``log_prob`` never falls: a coordinate is a suspect when its gradient is the
    same at every chain's start (``grads`` (C, D), C ≥ 2) although the starts (``positions`` (C, D)) differ
    there; for up to :data:`MAX_SUSPECTS` suspects,
    ``evaluate(points (K, D)) -> log_prob (K,)`` at ``center ± s·scale_i·e_i`` for s in :data:`RAY`. A side
    on which ``log_prob`` stays within 1 nat of the centre's (or above it) all the way out is improper. Returns
    ``[{"coordinate", "side", "log_prob": [...], "slope"}]``."""
    g = np.asarray(grads, np.float64)
    if g.ndim != 2 or g.shape[0] < 2 or not np.all(np.isfinite(g)):
        return []
    pos = np.asarray(positions, np.float64)
    same = np.all(np.abs(g - g[:1]) <= 1e-6 * (1.0 + np.abs(g[:1])), axis=0) & (np.ptp(pos, axis=0) > 0)
    suspects = np.flatnonzero(same)[:MAX_SUSPECTS]
    if not len(suspects):
        return []
    c = np.asarray(center)
    sc = np.asarray(scales, np.float64)
    sc = np.where(np.isfinite(sc) & (sc > 0), sc, 1.0)
    rows, index = [c.copy()], []
    for i in suspects:
        for side in (1.0, -1.0):
            for s in RAY:
                p = c.copy()
                p[i] = c[i] + side * s * sc[i]
                rows.append(p)
                index.append((int(i), side))
    lp = np.asarray(evaluate(np.stack(rows)), np.float64)
    lp0, lp = lp[0], lp[1:].reshape(len(suspects), 2, len(RAY))
    found = []
    for k, i in enumerate(suspects):
        for j, side in enumerate((1.0, -1.0)):
            vals = lp[k, j]
            if math.isfinite(lp0) and np.all(np.isfinite(vals) | (vals == np.inf)) and np.all(vals >= lp0 - 1.0):
                slope = float((vals[-1] - lp0) / (RAY[-1] * sc[i])) if np.isfinite(vals[-1]) else math.inf
                found.append({"coordinate": int(i), "side": "+" if side > 0 else "-",
                              "log_prob": [float(lp0), *map(float, vals)], "slope": slope,
                              "distance": float(RAY[-1] * sc[i])})
                break
    return found


def improper_message(found: list[dict], names: Callable[[int], str]) -> str:
    parts = []
    for f in found[:4]:
        how = "stays constant" if abs(f["slope"]) * f["distance"] < 1.0 else "keeps growing"
        parts.append(f"along {names(f['coordinate'])} ({f['side']} side) log_prob {how} out to "
                     f"{f['distance']:.3g} from the start ({f['log_prob'][0]:.4g} → {f['log_prob'][-1]:.4g})")
    return ("gn.sample: the posterior is improper: " + "; ".join(parts) + " — its gradient is the same at every "
            "chain's start, so nothing there (no likelihood term, no proper prior) holds the chains: give that "
            "parameter a proper prior, fix it, or remove it (NUTS trajectories would never turn: millions of "
            "gradients for no sample)")


def boundary_start(obj: Any, center: Any, draws: Any, names: Callable[[int], str] | None) -> str | None:
    """The start is the optimum of a loss *without* the log-Jacobian (the constrained density's mode, the default
    of ``from_numpyro`` and ``from_log_density``) and lies far in the draws' tail along a transformed coordinate
    — e.g. a non-centred eight schools' τ → 0, where that density peaks at the boundary while the density of θ
    the sampler samples has its mass elsewhere. None unless the evidence says so (more than 4 posterior sd)."""
    layout = getattr(obj, "layout", None)
    if getattr(obj, "loss_includes_jacobian", True) or getattr(obj, "log_jacobian", None) is None or layout is None:
        return None
    transformed = [i for b in layout.blocks if not b.is_identity for i in range(b.start, b.stop)]
    if not transformed or getattr(layout, "size", None) != np.shape(center)[-1]:
        return None
    th = np.asarray(draws, np.float64).reshape(-1, np.shape(center)[-1])
    mean, sd = th.mean(axis=0), th.std(axis=0)
    c = np.asarray(center, np.float64)
    z = {i: abs(c[i] - mean[i]) / sd[i] for i in transformed if sd[i] > 0 and np.isfinite(c[i])}
    if not z:
        return None
    i = max(z, key=z.get)
    if z[i] <= 4.0:
        return None
    name = names(i) if callable(names) else f"θ[{i}]"
    return (f"the start is the optimum of the loss without the log-Jacobian (the mode of the constrained density), "
            f"which for {name} lies {z[i]:.3g} posterior sd from the draws (θ = {c[i]:.3g} against "
            f"{mean[i]:.3g} ± {sd[i]:.2g}): a mode at the boundary of a transformed parameter — fit "
            "obj.with_jacobian_in_loss(True) (the mode of θ's density, which the sampler samples) and start from that")
