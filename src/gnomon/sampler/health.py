r"""After sampling: do the chains agree, did the integrator hold, and is anything hidden?

A problem found here is said — one ``UserWarning`` starting with ``sampling:`` and ``trace.info["health"]`` —
never left for the user to find in a table (thresholds as in docs/sampling.md):

* **R̂** (rank-normalised split :math:`\hat R`, arviz-stats) above :data:`RHAT_LIMIT` = 1.01 in any
  coordinate — the bar for reporting results; above :data:`RHAT_DISAGREE` = 1.05 the chains plainly disagree;
* **divergent transitions**: any (their count and fraction; above :data:`DIVERGENCE_LIMIT` of the draws the
  step size is too large for some region, which the draws then miss), counted per chain; a chain whose
  transitions diverge far more often than the others' (:func:`divergent_chains`) is named, with the coordinate
  where it sat apart from them — a region the step size cannot pass (a funnel's neck), where that chain's draws
  are not the posterior's and the other chains rarely go;
* **E-BFMI** (energy Bayesian fraction of missing information, per chain) below :data:`EBFMI_LIMIT` = 0.3: the
  momentum resampling cannot move the chain through the energy levels of the posterior (heavy tails, a funnel);
* **non-finite draws**;
* **separate modes** (:mod:`gnomon.sampler.modes`): chains that sit in regions apart from each other, a
  region found by the mode probe that no chain sampled, or a region the seed check saw that the draws never
  entered (a neck) — with the coordinates and the locations;

plus the R̂ of each warmup window (``warmup_rhat``), so what the chains said while adapting is kept.

When the optimizer that gave the start found no mode (it diverged, the sampler judged its end no mode, or it
ran off to :math:`|θ| > 10^{10}`) the caller adds a sentence that says what the evidence shows (the density of
θ unbounded, or only the loss without its Jacobian: :mod:`gnomon.sampler.diagnosis`).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from gnomon.sampler.decisions import MapEnd

RHAT_LIMIT = 1.01  # warn above: the bar for reporting results
RHAT_DISAGREE = 1.05  # above: the chains plainly disagree
DIVERGENCE_LIMIT = 0.01  # fraction of the kept draws above which the divergences bias the draws
CHAIN_DIVERGENCE = 0.10  # a chain diverging in more than this fraction of its transitions ...
CHAIN_DIVERGENCE_RATIO = 10.0  # ... and this many times the other chains' median fraction is named
EBFMI_LIMIT = 0.3  # per chain, warn below


RUNAWAY = 1e10  # an optimizer's best |θ| beyond this ran off rather than found a mode


def mode_note(map_status: str | None, best_theta: Any, judged_no_mode: bool) -> str | None:
    """Why the optimizer's end may not be a mode (for :func:`chain_health`), or None when nothing says so."""
    if map_status is None:
        return None
    status = map_status.split(":")[0]
    if judged_no_mode or MapEnd.of(map_status).found_no_mode:
        return f"the optimizer that gave the start found no mode ({status})"
    size = float(np.max(np.abs(np.asarray(best_theta, np.float64)))) if np.size(best_theta) else 0.0
    if not np.isfinite(size) or size > RUNAWAY:
        return f"the optimizer that gave the start ran off to |θ| = {size:.2g} ({status})"
    return None


def max_rhat(theta: Any) -> tuple[float, int] | None:
    """``(largest R̂, its coordinate)`` of draws ``(chains, draws, D)``, or None (one chain, too few draws,
    non-finite draws, or constant coordinates only)."""
    th = np.asarray(theta, np.float64)
    if th.ndim != 3 or th.shape[0] < 2 or th.shape[1] < 4 or not np.all(np.isfinite(th)):
        return None
    import arviz_stats as azs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant coordinates give NaN R̂ with a RuntimeWarning
        rhat = np.asarray(azs.rhat(th, chain_axis=0, draw_axis=1), np.float64).reshape(-1)
    if not np.isfinite(rhat).any():
        return None
    worst = int(np.nanargmax(rhat))
    return float(rhat[worst]), worst


def ebfmi(energy: Any) -> list[float] | None:
    r"""E-BFMI per chain of the Hamiltonian energies ``(chains, draws)``:
    :math:`\sum_t (E_t - E_{t-1})^2 / \sum_t (E_t - \bar E)^2` (Betancourt 2016; about 1 for a Gaussian,
    below 0.3 the momentum resampling explores the energy levels too slowly)."""
    e = np.asarray(energy, np.float64)
    if e.ndim != 2 or e.shape[1] < 4:
        return None
    out = []
    for row in e:
        var = float(np.sum((row - row.mean()) ** 2))
        out.append(float(np.sum(np.diff(row) ** 2) / var) if var > 0 and np.isfinite(var) else float("nan"))
    return out


def divergent_chains(theta: Any, diverging: Any) -> list[dict[str, Any]]:
    """The chains whose transitions diverged far more often than the others': a fraction above
    :data:`CHAIN_DIVERGENCE` and at least :data:`CHAIN_DIVERGENCE_RATIO` × the median of the other chains'
    fractions, at most half of the chains (else the divergences are the posterior's, not one chain's). Each is
    ``{"chain", "divergences", "fraction", "coordinate", "chain_mean", "others_mean", "others_sd"}``: the
    coordinate where the chain's mean lies furthest from the other chains' pooled draws, in their sd — where it
    sat. ``theta`` ``(chains, draws, D)``, ``diverging`` ``(chains, draws)``."""
    th = np.asarray(theta, np.float64)
    div = np.asarray(diverging, bool)
    if th.ndim != 3 or div.shape != th.shape[:2] or th.shape[0] < 2 or not div.any():
        return []
    frac = div.mean(axis=1)
    out = []
    for c in range(th.shape[0]):
        rest = np.delete(np.arange(th.shape[0]), c)
        if frac[c] <= CHAIN_DIVERGENCE or frac[c] < CHAIN_DIVERGENCE_RATIO * float(np.median(frac[rest])):
            continue
        others = th[rest].reshape(-1, th.shape[2])
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_o, sd_o = np.nanmean(others, axis=0), np.nanstd(others, axis=0)
            mean_c = np.nanmean(th[c], axis=0)
            gap = np.abs(mean_c - mean_o) / np.where(sd_o > 0, sd_o, np.inf)
        j = int(np.nanargmax(np.where(np.isfinite(gap), gap, -1.0)))
        out.append({"chain": c, "divergences": int(div[c].sum()), "fraction": float(frac[c]), "coordinate": j,
                    "chain_mean": float(mean_c[j]), "others_mean": float(mean_o[j]), "others_sd": float(sd_o[j])})
    return out if len(out) <= th.shape[0] // 2 else []


def _divergent_chain_sentence(found: list[dict[str, Any]], names: Any) -> str:
    parts = [f"{f['divergences']} of them in chain {f['chain']}, {100 * f['fraction']:.0f} % of its transitions, "
             f"which sat at {_name(names, f['coordinate'])} ≈ {f['chain_mean']:.3g} where the other chains are at "
             f"{f['others_mean']:.3g} ± {f['others_sd']:.2g}" for f in found]
    return ("; ".join(parts) + ": a region the step size cannot pass (often a funnel's neck) — that chain's draws "
            "there are not the posterior's, and the other chains rarely go there")


def _name(names: Any, i: int) -> str:
    return names(i) if callable(names) else f"coordinate {i}"


def chain_health(
    theta: Any,
    diverging: Any,
    map_note: str | None = None,
    *,
    energy: Any = None,
    warmup_rhat: list | None = None,
    names: Any = None,
    findings: list[dict] | None = None,
) -> dict[str, Any]:
    """``{"max_rhat", "worst_coordinate", "divergences", "divergence_fraction", "divergences_per_chain",
    "divergent_chains", "ebfmi", "nonfinite_draws", "warmup_rhat", "modes", "problems"}`` of draws ``theta``
    ``(chains, draws, D)``, ``diverging`` and ``energy`` ``(chains, draws)``; ``problems`` holds one sentence per
    problem found (empty when the chains look healthy). ``map_note`` (the caller's sentence about the optimizer's end)
    is added when there is a problem; ``warmup_rhat`` is the warmup windows' ``(step, R̂, coordinate)``; ``names(i)``
    names coordinate ``i``; ``findings`` are :mod:`gnomon.sampler.modes` findings (each with a ``message``)."""
    theta = np.asarray(theta, np.float64)
    finite = np.isfinite(theta)
    div = np.asarray(diverging, bool)
    out: dict[str, Any] = {
        "max_rhat": None,
        "worst_coordinate": None,
        "rhat_limit": RHAT_LIMIT,
        "divergences": int(np.sum(div)),
        "divergence_fraction": float(np.mean(div)) if div.size else 0.0,
        "divergences_per_chain": div.sum(axis=1).astype(int).tolist() if div.ndim == 2 else None,
        "divergent_chains": divergent_chains(theta, div),
        "ebfmi": ebfmi(energy) if energy is not None else None,
        "nonfinite_draws": int(np.sum(~np.all(finite, axis=-1))),
        "warmup_rhat": [{"step": int(s), "max_rhat": float(r), "coordinate": int(c)} for s, r, c in warmup_rhat or []],
        "modes": [f for f in findings or []],
        "problems": [],
    }
    r = max_rhat(theta)
    if r is not None:
        out["max_rhat"], out["worst_coordinate"] = r
    problems = out["problems"]
    if out["max_rhat"] is not None and out["max_rhat"] > RHAT_LIMIT:
        where = _name(names, out["worst_coordinate"])
        if out["max_rhat"] > RHAT_DISAGREE:
            problems.append(f"the chains disagree: R̂ = {out['max_rhat']:.3f} in {where} (> {RHAT_DISAGREE}); the "
                            "draws do not represent the posterior")
        else:
            problems.append(f"R̂ = {out['max_rhat']:.3f} in {where} is above {RHAT_LIMIT}, the bar for reporting "
                            "results: run longer (more draws or warmup) or look for a region the chains mix "
                            "through slowly")
    if out["divergences"]:
        frac = out["divergence_fraction"]
        tail = ("the step size is too large for some region of the posterior (often a funnel), which the draws "
                "then miss" if frac > DIVERGENCE_LIMIT else "some region of the posterior (often a funnel's neck) "
                "is too curved for the step size; the draws may miss it")
        chains = f"; {_divergent_chain_sentence(out['divergent_chains'], names)}" if out["divergent_chains"] else ""
        plural = "s" if out["divergences"] != 1 else ""
        problems.append(f"{out['divergences']} divergent transition{plural} ({100 * frac:.2g} % of the draws{chains}): "
                        f"{tail}; a non-centred parameterisation or a higher target acceptance rate "
                        "(kernel=gn.nuts(target_acceptance_rate=0.9)) may help")
    low = [(c, v) for c, v in enumerate(out["ebfmi"] or []) if np.isfinite(v) and v < EBFMI_LIMIT]
    if low:
        listed = ", ".join(f"chain {c}: {v:.2f}" for c, v in low)
        problems.append(f"E-BFMI below {EBFMI_LIMIT} ({listed}): the momentum resampling moves these chains "
                        "through the posterior's energy levels too slowly (heavy tails or a funnel); the draws may "
                        "not reach the tails — reparameterise the scale parameters")
    if out["nonfinite_draws"]:
        problems.append(f"{out['nonfinite_draws']} draws hold non-finite values")
    peak = max(out["warmup_rhat"], key=lambda w: w["max_rhat"], default=None)
    for f in out["modes"]:
        msg = f["message"]
        if peak is not None and peak["max_rhat"] > RHAT_DISAGREE and f.get("kind") == "chains":
            msg += f" (R̂ during the warmup reached {peak['max_rhat']:.3g} at step {peak['step']})"
        problems.append(msg)
    if problems and map_note:
        problems.append(map_note)
    return out


__all__ = ["chain_health", "divergent_chains", "ebfmi", "max_rhat", "mode_note", "RHAT_LIMIT", "RHAT_DISAGREE",
           "DIVERGENCE_LIMIT", "EBFMI_LIMIT", "RUNAWAY", "CHAIN_DIVERGENCE", "CHAIN_DIVERGENCE_RATIO"]
