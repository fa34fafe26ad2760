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
it). The run is cut into **segments** of :data:`SEGMENT` units of :math:`θ_i`; a segment is *steady* when the
loss fell at least :data:`MIN_SLOPE` per unit of it and at least :data:`STEADY` × the rate of the first steady
segment of the run (a bowl, however far, slows down: its slope is proportional to the distance left, so it
loses 30 % of its rate after covering 30 % of the way). The run **has run off** when its last
:data:`SEGMENTS` segments were steady (it moved ≥ 3 units) over at least :data:`MIN_POINTS` improving points.

Measured (default L-BFGS, backtracking L-BFGS and preconditioned GD, 500 steps, on the targets of
``benchmarks/bench_transport.py --runoff`` and the ``bench_optimizers.py --defaults`` problems): it fires on
every target without a mode (eight schools with a half-Cauchy τ after 10–66 points, a hierarchical regression with
an unknown group scale 10–31, a centred stochastic volatility 14–106) and, in 100 dimensions, on Neal's funnel,
whose mode lies at v = −445 (beyond float32's range); it never fires on the 10-d funnel, the log-normal eight
schools (centred or not: a real mode), the banana, a rotated Gaussian, the logistic regressions, the quadratics,
a numpyro hierarchical model or a dLux binary — including under plain ``gd``.

The test is a heuristic on a finite stretch of path: a bowl whose minimum is more than about ten units away
along a coordinate, approached by a method that creeps (fixed small steps), looks the same for a while. It is
on by default where the loss is a negative log density that may have no lower bound (``from_log_prob``,
``from_log_density``, ``from_numpyro``) and off where the loss is bounded below or in units of its own
(``from_likelihood``, ``from_residuals``, ``from_loss``); ``gn.optimize(..., runoff=True/False)`` decides.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp

SEGMENT = 1.0  # units of θ_i per segment (log-scales and standardised coordinates move by units)
SEGMENTS = 3  # steady segments in a row that make a run-off
MIN_SLOPE = 1.0  # loss fall per unit of θ_i: a nat per unit of a log-scale
STEADY = 0.7  # each steady segment falls at ≥ this × the first one's rate
MIN_POINTS = 10  # improving points in the run ("many iterations")
RETREAT = 0.25  # a move back by more than this from the run's furthest point restarts it

#: the objective constructors whose loss is a negative log density without a known lower bound (run-off on)
ON_BY_DEFAULT = ("from_log_prob", "from_log_density", "from_numpyro")


class RunOffState(NamedTuple):
    """Per coordinate (D,) unless noted; carried by the compiled loop."""

    best: Any  # () the lowest loss so far (+inf before the first finite point)
    seg_x: Any  # where the current segment started
    seg_f: Any  # the loss there
    ext: Any  # the furthest point of the run in its direction
    dir: Any  # the run's direction: −1, +1, or 0 before it moved
    points: Any  # improving points in the run
    steady: Any  # steady segments in a row
    rate: Any  # the first of them's fall per unit
    moved: Any  # distance covered by the steady segments
    fell: Any  # the loss fall over them


def enabled(obj: Any, runoff: bool | None) -> bool:
    """``runoff`` when given, else on for the constructors of :data:`ON_BY_DEFAULT`."""
    if runoff is not None:
        if not isinstance(runoff, bool):
            raise ValueError(f"runoff must be True, False or None (auto), got {runoff!r}")
        return runoff
    return (getattr(obj, "info", None) or {}).get("constructor") in ON_BY_DEFAULT


def init(theta: Any) -> RunOffState:
    """The state before any point (the first improving point starts every run)."""
    dtype = theta.dtype
    zeros = jnp.zeros_like(theta)
    count = jnp.zeros(theta.shape, jnp.int32)
    return RunOffState(jnp.full((), jnp.inf, dtype), theta, zeros, theta, zeros, count, count, zeros, zeros, zeros)


def update(s: RunOffState, x: Any, f: Any, finite: Any) -> RunOffState:
    """The state after the evaluated point (θ = ``x``, loss ``f``; ``finite``: both it and its gradient are)."""
    improving = finite & (f < s.best)
    first = ~jnp.isfinite(s.best)
    retreat = (s.ext - x) * s.dir
    restart = first | ((s.dir != 0) & (retreat > RETREAT))
    seg_x = jnp.where(restart, x, s.seg_x)
    seg_f = jnp.where(restart, f, s.seg_f)
    ext = jnp.where(restart, x, s.ext)
    points = jnp.where(restart, 0, s.points + 1)
    steady = jnp.where(restart, 0, s.steady)
    rate, moved, fell = (jnp.where(restart, 0, v) for v in (s.rate, s.moved, s.fell))
    direction = jnp.where(restart, 0, s.dir)
    direction = jnp.where(direction == 0, jnp.sign(x - seg_x), direction)
    ext = jnp.where(direction > 0, jnp.maximum(ext, x), jnp.where(direction < 0, jnp.minimum(ext, x), x))
    progress = (x - seg_x) * direction
    close = progress >= SEGMENT
    drop = seg_f - f
    slope = drop / jnp.maximum(progress, jnp.finfo(x.dtype).tiny)
    ok = close & (slope >= MIN_SLOPE) & ((steady == 0) | (slope >= STEADY * rate))
    rate = jnp.where(close, jnp.where(ok & (steady == 0), slope, jnp.where(ok, rate, 0)), rate)
    moved = jnp.where(close, jnp.where(ok, moved + progress, 0), moved)
    fell = jnp.where(close, jnp.where(ok, fell + drop, 0), fell)
    steady = jnp.where(close, jnp.where(ok, steady + 1, 0), steady)
    seg_x = jnp.where(close, x, seg_x)
    seg_f = jnp.where(close, f, seg_f)
    new = RunOffState(jnp.minimum(s.best, f), seg_x, seg_f, ext, direction, points, steady, rate, moved, fell)
    return RunOffState(*(jnp.where(improving, n, o) for n, o in zip(new, s, strict=True)))


def fired(s: RunOffState) -> Any:
    """Per coordinate: has it run off?"""
    return (s.steady >= SEGMENTS) & (s.points >= MIN_POINTS)


def finding(s: RunOffState) -> tuple[Any, Any, Any, Any]:
    """``(coordinate, distance, fall, points)`` of the coordinate that ran off furthest (scalars; meaningful only
    where :func:`fired` holds somewhere)."""
    hit = fired(s)
    i = jnp.argmax(jnp.where(hit, s.moved, -jnp.inf))
    return i.astype(jnp.int32), s.moved[i], s.fell[i], s.points[i]
