r"""Stuck chains: a chain that a warmup window left somewhere the others are not, found and moved.

After a rejected seed or without a mode, a recovery restarts the chains from wherever it could
(:mod:`gnomon.sampler.phases`). On a funnel-shaped posterior one of them can land in the neck, where the
step size the others need is far too large: it stays there, every draw runs to the tree-depth cap, and since
the step size is pooled, the whole run pays for it (measured on the centred eight schools: 1.6 million
gradients instead of 60 thousand). The other chains have already found the bulk, so the cure is to move the
stuck one to where one of them is (Stan's and nutpie's users do this by hand by re-initialising).

A chain :math:`c` is *stuck* after a window when, in the window's draws :math:`θ_{t,c}`,

* its mean lies far from the others': :math:`\max_i |\bar θ_{c,i} - \mathrm{med}_{c'}\,\bar θ_{c',i}| /
  s_i > 4`, with :math:`s_i` the median over chains of the within-chain sd (robust to the stuck chain itself),
  **or** its leapfrog cost is far above the others': mean leapfrog steps per draw above 10× the chains' median
  (and above 8 steps). A chain that explores a narrower region than the others (a funnel's neck) legitimately
  pays a few times their cost — 4–6× measured on Neal's funnel, where moving such chains out of the neck cost
  30 % of the effective samples per gradient over five keys and biased the adaptation against the neck — while a
  stuck chain runs to the tree-depth cap at 30–70× the others' cost;

and only when at most half the chains are stuck (with fewer than 3 chains there is no majority to trust).
A stuck chain restarts at the current position of a chain that is not (chosen at random).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MEAN_LIMIT = 4.0  # pooled within-chain sds
COST_LIMIT = 10.0  # × the median chain's leapfrog steps per draw
MIN_CHAINS = 3


class Stuck(NamedTuple):
    """Which chains are stuck (indices), the chain each moves to, and why (one phrase per stuck chain)."""

    chains: tuple[int, ...]
    donors: tuple[int, ...]
    reasons: tuple[str, ...]


def find_stuck(theta: np.ndarray, n_steps: np.ndarray, rng: np.random.Generator) -> Stuck:
    """Stuck chains in a window's draws ``theta`` (steps, chains, D) with leapfrog steps ``n_steps``
    (steps, chains); see the module docstring."""
    theta = np.asarray(theta, np.float64)
    steps, num_chains, _ = theta.shape
    if num_chains < MIN_CHAINS or steps < 5:
        return Stuck((), (), ())
    means = theta.mean(axis=0)  # (C, D)
    sds = theta.std(axis=0)  # (C, D)
    scale = np.median(sds, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.inf)
    dist = np.max(np.abs(means - np.median(means, axis=0)[None, :]) / scale[None, :], axis=1)  # (C,)
    cost = np.asarray(n_steps, np.float64).mean(axis=0)  # (C,)
    typical = float(np.median(cost))
    far = np.isfinite(dist) & (dist > MEAN_LIMIT)
    dear = cost > max(COST_LIMIT * typical, 8.0)
    bad = far | dear | ~np.all(np.isfinite(theta), axis=(0, 2))
    if not bad.any() or bad.sum() > num_chains // 2:
        return Stuck((), (), ())
    good = np.flatnonzero(~bad)
    chains, donors, reasons = [], [], []
    for c in np.flatnonzero(bad):
        why = []
        if far[c]:
            why.append(f"its mean is {dist[c]:.3g} within-chain sd from the others'")
        if dear[c]:
            why.append(f"{cost[c]:.0f} leapfrog steps per draw vs {typical:.0f} for the median chain")
        chains.append(int(c))
        donors.append(int(rng.choice(good)))
        reasons.append(" and ".join(why) or "non-finite draws")
    return Stuck(tuple(chains), tuple(donors), tuple(reasons))
