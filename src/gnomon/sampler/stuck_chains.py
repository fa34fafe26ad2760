r"""Stuck chains: a chain that a warmup window left where it cannot sample, found and moved — and only that.

After a rejected seed or without a mode, a recovery restarts the chains from wherever it could
(:mod:`gnomon.sampler.phases`). On a funnel-shaped posterior one of them can land in the neck, where the
step size the others need is far too large: it stays there, every draw runs to the tree-depth cap, and since
the step size is pooled, the whole run pays for it (measured on the centred eight schools: 1.6 million
gradients instead of 60 thousand). The other chains have already found the bulk, so the cure is to move the
stuck one to where one of them is (Stan's and nutpie's users do this by hand by re-initialising).

But a chain that sits far from the others *and samples normally there* is evidence — another mode — and
moving it would destroy the evidence and return :math:`\hat R \approx 1` over one mode (seen on a symmetric
two-mode posterior and a label-switching mixture before this rule). So distance alone never moves a chain:
a chain :math:`c` is *stuck* after a window only when its region is not a mode it can sample:

* **it cannot move there**: its mean gradient evaluations per draw exceed 10× the chains' median (and 8) — the
  integrator runs to the tree-depth cap at the pooled step size. A chain that explores a narrower region
  than the others (a funnel's neck) legitimately pays a few times their cost — 4–6× measured on Neal's
  funnel, where moving such chains out of the neck cost 30 % of the effective samples per gradient over five
  keys and biased the adaptation against the neck — while a stuck chain runs to the cap at 30–70× the
  others' cost; or
* **it does not move and its log density is far below the others'**: fewer than 10 % of its transitions
  changed its position, and its median log density lies more than :math:`\max(10, 5\sqrt{D/2})` nats below
  the median of every other chain (a typical set's log density spreads by about :math:`\sqrt{D/2}`) — a
  plateau or a start outside the posterior's mass, not a mode; or
* its draws are not finite;

and only when at most half the chains are stuck (with fewer than 3 chains there is no majority to trust).
A stuck chain restarts at the current position of a chain that is not (chosen at random); the move is a
``"chains moved"`` decision with where the chain was (its mean, its log density) and a warning
(:mod:`gnomon.sampler.api`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

COST_LIMIT = 10.0  # × the median chain's gradient evaluations per draw
MOVING = 0.10  # a chain whose position changed in fewer than this fraction of its transitions does not move
MIN_CHAINS = 3


class Stuck(NamedTuple):
    """Which chains are stuck (indices), the chain each moves to, why (one phrase per stuck chain) and where
    each was: ``(mean θ (D,), median log density)``."""

    chains: tuple[int, ...]
    donors: tuple[int, ...]
    reasons: tuple[str, ...]
    where: tuple[tuple[np.ndarray, float], ...] = ()


def lp_gap(dim: int) -> float:
    """How far (nats) below the others a chain's median log density must lie to be 'far below'."""
    return max(10.0, 5.0 * math.sqrt(dim / 2.0))


def find_stuck(
    theta: np.ndarray, n_steps: np.ndarray, rng: np.random.Generator, log_prob: np.ndarray | None = None
) -> Stuck:
    """Stuck chains in a window's draws ``theta`` (steps, chains, D) with gradient evaluations ``n_steps`` and log
    densities ``log_prob`` (steps, chains); see the module docstring. Without ``log_prob`` only the cost and
    non-finite draws can make a chain stuck."""
    theta = np.asarray(theta, np.float64)
    steps, num_chains, dim = theta.shape
    if num_chains < MIN_CHAINS or steps < 5:
        return Stuck((), (), ())
    finite = np.all(np.isfinite(theta), axis=(0, 2))
    cost = np.asarray(n_steps, np.float64).mean(axis=0)  # (C,)
    typical = float(np.median(cost))
    dear = cost > max(COST_LIMIT * typical, 8.0)
    moved = np.mean(np.any(theta[1:] != theta[:-1], axis=2), axis=0)  # (C,) fraction of transitions that moved
    frozen = moved < MOVING
    below = np.zeros(num_chains, bool)
    lp_med = np.full(num_chains, np.nan)
    if log_prob is not None:
        lp = np.asarray(log_prob, np.float64)
        lp_med = np.median(np.where(np.isfinite(lp), lp, -np.inf), axis=0)
        for c in range(num_chains):
            others = np.delete(lp_med, c)
            below[c] = bool(np.all(lp_med[c] < others - lp_gap(dim)))
    bad = dear | (frozen & below) | ~finite
    if not bad.any() or bad.sum() > num_chains // 2:
        return Stuck((), (), ())
    good = np.flatnonzero(~bad)
    means = np.nanmean(np.where(np.isfinite(theta), theta, np.nan), axis=0)  # (C, D)
    chains, donors, reasons, where = [], [], [], []
    for c in np.flatnonzero(bad):
        why = []
        if dear[c]:
            why.append(f"{cost[c]:.0f} gradient evaluations per draw vs {typical:.0f} for the median chain")
        if frozen[c] and below[c]:
            why.append(
                f"it moved in {100 * moved[c]:.0f} % of its transitions and its log density "
                f"{lp_med[c]:.4g} lies far below the others' ({float(np.median(np.delete(lp_med, c))):.4g})"
            )
        if not finite[c]:
            why.append("non-finite draws")
        chains.append(int(c))
        donors.append(int(rng.choice(good)))
        reasons.append(" and ".join(why))
        where.append((means[c], float(lp_med[c])))
    return Stuck(tuple(chains), tuple(donors), tuple(reasons), tuple(where))
