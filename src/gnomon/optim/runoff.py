r"""The run-off stop: a loss that keeps falling at a steady rate along one coordinate has no mode within reach.

A centred hierarchical model without a mode (eight schools with a half-Cauchy τ) has a log density that grows
without bound as log τ → −∞ with the group effects collapsing onto their mean: the loss falls by a constant
:math:`k = J - 1` nats per unit of log τ, for ever. An optimizer follows it — L-BFGS spent 2.5–9k gradients
chasing such a neck before every hand-off (issue 20) — and a MAP found there is no mode. This test stops it
within a bounded number of gradients, inside the compiled loop (a few (D,) vectors in the carry, no host round
trip), with status code ``ran_off`` and a sentence naming the coordinate.

It looks at the *improving* points only (a loss below every earlier one: rejected trial points and a
non-monotone search's detours do not count). Per coordinate i it follows a **run**: the improving points over
which :math:`θ_i` kept moving one way (a retreat of more than :data:`RETREAT` from the furthest point restarts
it). The run is cut into **segments** of :data:`SEGMENT` units of :math:`θ_i`; a **streak** is the segments in a
row over which the loss fell by at least :data:`MIN_SLOPE` per unit. The run **has run off** when its streak is
:data:`SEGMENTS` long, *steady* — the rate over its last two segments at least :data:`STEADY` × the rate over its
first two, and the last segment's own at least :data:`STEADY_ONE` × (a bowl, however far, slows down: its slope is
proportional to the distance left) — and the run has at least :data:`MIN_POINTS` improving points.

Measured (docs/optimizers.md, "The run-off stop"): it stopped every target without a mode it was tried on within
44–215 gradient evaluations under ``lbfgs`` (either line search) and ``preconditioned_gd`` (eight schools with a
half-Cauchy τ, a hierarchical regression with an unknown group scale, a centred stochastic volatility, eight
schools with a flat prior on log τ; and Neal's funnel in 100 dimensions, whose mode lies beyond float32's range),
and fired on none of the targets with a mode (the 10-d funnel, the log-normal eight schools, the banana, a rotated
Gaussian, the ``bench_optimizers.py --defaults`` problems, distant Gaussians). A mode more than about five units
deep along a scale direction looks the same over the distance the test watches and is stopped as a run-off too.

It is on by default where the loss is a negative log density that may have no lower bound (:data:`ON_BY_DEFAULT`)
and the method chooses its own step lengths (:data:`SELF_STEPPING`, no ``learning_rate``): a fixed learning rate
creeps towards a distant mode at a steady rate, which looks like a run-off. ``gn.optimize(..., runoff=True/False)``
decides.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

SEGMENT = 1.0  # units of θ_i per segment (log-scales and standardised coordinates move by units)
SEGMENTS = 3  # segments in a row falling at ≥ MIN_SLOPE that make a run-off (when steady)
MIN_SLOPE = 1.0  # loss fall per unit of θ_i: a nat per unit of a log-scale
STEADY = 0.7  # the rate over the last two segments ≥ this × the rate over the first two
STEADY_ONE = 0.5  # ... and the last segment's own ≥ this × (a single segment is noisy: collapses come in bursts)
MIN_POINTS = 10  # improving points in the run ("many iterations")
RETREAT = 0.25  # a move back by more than this from the run's furthest point restarts it

#: the objective constructors whose loss is a negative log density without a known lower bound (run-off on)
ON_BY_DEFAULT = ("from_log_prob", "from_log_density", "from_numpyro")
#: the methods that choose their own step lengths (without a learning_rate): line search, BB, 1/λ_max
SELF_STEPPING = ("lbfgs", "preconditioned_gd", "gd")


class RunOffState(NamedTuple):
    """Per coordinate (D,) unless noted; carried by the compiled loop."""

    best: Any  # () the lowest loss so far (+inf before the first finite point)
    seg_x: Any  # where the current segment started
    seg_f: Any  # the loss there
    ext: Any  # the furthest point of the run in its direction
    dir: Any  # the run's direction: −1, +1, or 0 before it moved
    points: Any  # improving points in the run
    streak: Any  # segments in a row that fell at ≥ MIN_SLOPE per unit
    first: Any  # (distance, fall) over the streak's first two segments
    prev: Any  # (distance, fall) over its latest segment
    total: Any  # (distance, fall) over the whole streak
    steady: Any  # bool: at the latest segment's end the streak was long and steady enough


def enabled(obj: Any, runoff: bool | None, program: Any = None) -> bool:
    """``runoff`` when given, else on for an objective of :data:`ON_BY_DEFAULT` optimised by a method that chooses
    its own step lengths (:data:`SELF_STEPPING` without a ``learning_rate``): a fixed learning rate creeps towards
    a distant mode at a steady rate, which over a few units looks like a run-off."""
    if runoff is not None:
        if not isinstance(runoff, bool):
            raise ValueError(f"runoff must be True, False or None (auto), got {runoff!r}")
        return runoff
    if (getattr(obj, "info", None) or {}).get("constructor") not in ON_BY_DEFAULT:
        return False
    if program is None:
        return True
    return program.name in SELF_STEPPING and (program.info or {}).get("learning_rate") is None


def init(theta: Any) -> RunOffState:
    """The state before any point (the first improving point starts every run)."""
    zeros = jnp.zeros_like(theta)
    count = jnp.zeros(theta.shape, jnp.int32)
    return RunOffState(jnp.full((), jnp.inf, theta.dtype), theta, zeros, theta, zeros, count, count, (zeros, zeros),
                       (zeros, zeros), (zeros, zeros), jnp.zeros(theta.shape, bool))


def update(s: RunOffState, x: Any, f: Any, finite: Any) -> RunOffState:
    """The state after the evaluated point (θ = ``x``, loss ``f``; ``finite``: both it and its gradient are)."""
    improving = finite & (f < s.best)
    retreat = (s.ext - x) * s.dir
    restart = ~jnp.isfinite(s.best) | ((s.dir != 0) & (retreat > RETREAT))

    def fresh(v, start):
        return jnp.where(restart, start, v)

    seg_x, seg_f, ext = fresh(s.seg_x, x), fresh(s.seg_f, f), fresh(s.ext, x)
    points, streak = fresh(s.points + 1, 0), fresh(s.streak, 0)
    first, prev, total = (tuple(fresh(v, 0) for v in pair) for pair in (s.first, s.prev, s.total))
    steady = fresh(s.steady, False)
    direction = fresh(s.dir, 0)
    direction = jnp.where(direction == 0, jnp.sign(x - seg_x), direction)
    ext = jnp.where(direction > 0, jnp.maximum(ext, x), jnp.where(direction < 0, jnp.minimum(ext, x), x))
    # a segment ends once the coordinate has covered SEGMENT since it began
    progress = (x - seg_x) * direction
    drop = seg_f - f
    close = progress >= SEGMENT
    tiny = jnp.finfo(x.dtype).tiny
    ok = close & (drop >= MIN_SLOPE * progress)
    n = jnp.where(close, jnp.where(ok, streak + 1, 0), streak)

    def add(pair, keep):  # (distance, fall) plus this segment where ``keep``, else from scratch / zero
        return tuple(jnp.where(close, jnp.where(ok, jnp.where(keep, a, 0) + b, 0), a)
                     for a, b in zip(pair, (progress, drop), strict=True))

    last_rate = (prev[1] + drop) / jnp.maximum(prev[0] + progress, tiny)
    first_rate = first[1] / jnp.maximum(first[0], tiny)
    first = tuple(jnp.where(close & ok & (n > 2), a, b) for a, b in zip(first, add(first, n == 2), strict=True))
    slope = drop / jnp.maximum(progress, tiny)
    steady = jnp.where(close, ok & (n >= SEGMENTS) & (last_rate >= STEADY * first_rate)
                       & (slope >= STEADY_ONE * first_rate), steady)
    prev, total = add(prev, False), add(total, True)
    seg_x, seg_f = jnp.where(close, x, seg_x), jnp.where(close, f, seg_f)
    new = RunOffState(jnp.minimum(s.best, f), seg_x, seg_f, ext, direction, points, n, first, prev, total, steady)
    return jax.tree.map(lambda a, b: jnp.where(improving, a, b), new, s)


def fired(s: RunOffState) -> Any:
    """Per coordinate: has it run off?"""
    return s.steady & (s.points >= MIN_POINTS)


def finding(s: RunOffState) -> tuple[Any, Any, Any, Any]:
    """``(coordinate, distance, fall, points)`` of the coordinate that ran off furthest (scalars; meaningful only
    where :func:`fired` holds somewhere)."""
    hit = fired(s)
    i = jnp.argmax(jnp.where(hit, s.total[0], -jnp.inf))
    return i.astype(jnp.int32), s.total[0][i], s.total[1][i], s.points[i]
