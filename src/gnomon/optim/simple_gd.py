"""`run_simple_gd`: the baseline optimizer — one global learning rate, θ ← θ − lr · ∇loss(θ)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from gnomon.objective.objective import Objective
from gnomon.optim.loop import run_loop
from gnomon.optim.methods import Program, gd
from gnomon.trace.trace import Trace


def as_objective(loss_fn: Callable | Objective, dim: int) -> Objective:
    """``loss_fn`` itself if it is an Objective, else ``Objective.from_loss(loss_fn, dim)`` (built on each call:
    its compile key is the function's identity, so repeated calls reuse the compiled loop)."""
    if isinstance(loss_fn, Objective):
        if loss_fn.dim != dim:
            raise ValueError(f"θ0 has length {dim} but the objective has dim {loss_fn.dim}")
        return loss_fn
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable or a gnomon.Objective, got {loss_fn!r}")
    return Objective.from_loss(loss_fn, dim)


def gd_program(obj: Objective, learning_rate: float) -> Program:
    """Plain gradient descent at a fixed learning rate (``gn.optim.gd(learning_rate)``'s program)."""
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    return gd(learning_rate=float(learning_rate)).program(obj, None, None)


def run_simple_gd(
    loss_fn: Callable | Objective,
    theta0: Any,
    learning_rate: float,
    num_steps: int,
    record_every: int = 1,
    *,
    tol: float | None = None,
    ftol: float | None = None,
    progress: bool | None = None,
    channels: str | tuple[str, ...] | None = None,
) -> Trace:
    """Gradient descent with one global learning rate: ``θ_{t+1} = θ_t − lr · ∇loss(θ_t)``.

    Args:
      loss_fn: ``loss(θ) -> scalar`` over flat θ, or a :class:`gnomon.Objective`.
      theta0: starting θ, shape ``(D,)``; or a previous optimization :class:`Trace` to continue from its
        final point (the result is the joined trace).
      learning_rate: the global step size.
      num_steps: maximum number of updates.
      record_every: keep every k-th row (the final point is always kept).
      tol: stop when |∇loss(θ_t)| ≤ tol (status ``'converged'``).
      ftol: stop when the relative loss change |f_{t-1} − f_t| / max(|f_{t-1}|, |f_t|, 1) ≤ ftol.
      progress: progress bar on stderr (default: on a terminal, for runs of 2,000 steps or more).
      channels: extra per-step channels (``"all"`` or a subset of grad_norm, step_norm, learning_rate,
        accepted; default the free ones), as :func:`gnomon.optimize`.

    Returns:
      an optimization :class:`Trace` whose ``loss[t]`` is the loss at ``theta[t]``. A non-finite loss or
      gradient ends the run with ``status="diverged at step t: ..."``, keeping the finite rows before it.
    """
    previous = theta0 if isinstance(theta0, Trace) else None
    start = previous.coords_in(getattr(loss_fn, "thetamap", None), "final") if previous is not None else theta0
    start = jnp.asarray(start)
    if start.ndim != 1:
        raise ValueError(f"θ0 must be a flat vector (D,), got shape {tuple(start.shape)}")
    obj = as_objective(loss_fn, int(start.shape[0]))
    trace = run_loop(
        obj, start, gd_program(obj, learning_rate), num_steps=num_steps, record_every=record_every,
        tol=tol, ftol=ftol, data=obj.data, progress=progress, channels=channels,
    ).trace
    return previous.concatenate(trace) if previous is not None else trace
