"""The compiled optimizer loop's data: its static settings, the carry of one fit, the row buffers of a chunk and
the summary the host reads after each chunk (the loop itself: :mod:`gnomon.optim.loop`)."""

from __future__ import annotations

from typing import Any, NamedTuple

CHANNELS = ("grad_norm", "step_norm", "learning_rate", "accepted")


class LoopSettings(NamedTuple):
    """Static recording and stopping settings (part of the compile key)."""

    rows: int
    record_every: int
    tol: float | None
    ftol: float | None
    batched: bool
    channels: tuple[str, ...]
    runoff: bool = False  # the run-off stop (gnomon.optim.runoff)
    output: bool = False  # keep the model's mean / residuals at the best point (goodness of fit)
    start_curvature: str | None = None  # the loop can estimate this curvature at θ0 (gnomon.optim.start_estimate)


class Carry(NamedTuple):
    """The state of one fit between iterations of the loop body."""

    theta: Any  # θ_t, not yet evaluated
    opt_state: Any
    t: Any
    status: Any  # a loop code of gnomon.optim.status (RUNNING until a stop rule fires)
    prev_loss: Any  # f_{t-1} (ftol)
    n_evals: Any  # evaluations when a line search reuses its own (else unused: t + 1, one per evaluated point)
    grad: Any  # ∇loss at the latest finite point (its norm is the final gradient norm)
    last: Any  # thinned batched runs: (θ, f, t) of the latest finite point; else None
    still: Any  # updates in a row that left θ bit-for-bit unchanged (STALL_STEPS of them stop the run)
    runoff: Any = None  # gnomon.optim.runoff.RunOffState where the run-off stop is on
    best: Any = None  # (f, θ, output) at the lowest loss evaluated so far, where the model's output is kept
    start_diag: Any = None  # the raw curvature diagonal of an estimating call (gnomon.optim.start_estimate)


class Summary(NamedTuple):
    """The small part of the carry the host reads after each chunk."""

    status: Any
    t: Any
    loss: Any  # the loss at the last evaluated point
    num_grad_evals: Any  # the loop's evaluations plus the optimizer's own (num_grad_evals fields)
    grad_norm: Any  # |∇loss| at the final point (the latest finite one)
    last: Any  # thinned batches: (θ, f, t) of the latest finite point (else the last recorded row is final)
    runoff: Any = None  # (coordinate, distance, fall, points) of the run-off test, where it is on


class Rows(NamedTuple):
    theta: Any
    scalars: Any  # (rows, [B,] 1 + channels): loss and channels in one buffer, one write per step
    step: Any  # batched runs: (rows, B) step of each member's row (−1: none); None for a single run
