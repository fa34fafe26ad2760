"""What gnomon's optimizer loop reads from an optax state, by the conventions of :mod:`gnomon.optim.transforms`.

Per step (inside the compiled loop, so any chain — assembled by hand or by a method — records the same):

* :func:`step_learning_rate`: the product of the scalar fields named ``learning_rate`` (gnomon's transforms,
  ``optax.inject_hyperparams``, line searches), or None when there is none;
* :func:`step_accepted`: the field ``accepted`` (:func:`~gnomon.optim.nonmonotone_backtracking`), or None;
* :func:`own_grad_evals`: the sum of the fields ``num_grad_evals`` (evaluations a transformation spent itself,
  cumulative since ``init``) — plus, per step, the line search's ``num_linesearch_steps``
  (:func:`linesearch_state`), whose value and gradient at the accepted point the loop reuses.

After the run, :func:`report` turns the final state into a typed :class:`OptimizerReport`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.optim.transforms import (
    BacktrackingState,
    PreconditionState,
    ScaleByCurvatureState,
    learning_rate_of,
)


def scalar_fields(state: Any, name: str) -> list:
    """The scalar leaves of ``state`` at fields (or dict keys) named ``name``."""
    return [v for _, v in optax.tree.get_all_with_path(state, name) if jnp.ndim(v) == 0]


def step_learning_rate(state: Any) -> Any:
    """Product of the scalar ``learning_rate`` fields of ``state`` (None if it has none)."""
    found = scalar_fields(state, "learning_rate")
    if not found:
        return None
    out = found[0]
    for v in found[1:]:
        out = out * v
    return out


def step_accepted(state: Any) -> Any:
    """The ``accepted`` field of ``state`` (None if absent)."""
    found = scalar_fields(state, "accepted")
    return found[0] if len(found) == 1 else None


def own_grad_evals(state: Any) -> Any:
    """Sum of the ``num_grad_evals`` fields of ``state`` (0 if none)."""
    found = [v for _, v in optax.tree.get_all_with_path(state, "num_grad_evals")]
    return sum(jnp.asarray(v, jnp.int32) for v in found) if found else jnp.zeros((), jnp.int32)


def linesearch_state(state: Any) -> Any:
    """The one ``optax.ScaleByZoomLinesearchState`` in ``state`` (its value and gradient at the new point can be
    reused), or None."""
    found = [s for s in _walk(state) if type(s).__name__ == "ScaleByZoomLinesearchState"]
    return found[0] if len(found) == 1 else None


def _walk(node: Any):
    """Every NamedTuple node of a state (containers are descended), outermost first."""
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        yield node
        for child in node:
            yield from _walk(child)
    elif isinstance(node, (tuple, list)):
        for child in node:
            yield from _walk(child)
    elif isinstance(node, dict):
        for child in node.values():
            yield from _walk(child)


class OptimizerReport(NamedTuple):
    """Typed results of a run, read from its final optimizer state (numpy; None where not applicable).

    ``curvature``/``lr_vec``: the curvature diagonal at θ_0 and the learning-rate vector of the first update;
    ``curvature_final``/``lr_vec_final`` the ones in use at the end; ``lambda_max`` and ``base_lr_used`` (η_0
    after the bound); ``counts`` the cleaning counts of the initial estimate (non-finite, negative, floored);
    ``num_backtracks``/``backtrack_factor`` of the backtracking safeguard; ``scale`` the coordinate scale
    S = c^(-1/2) of a preconditioned L-BFGS."""

    curvature: Any = None
    lr_vec: Any = None
    curvature_final: Any = None
    lr_vec_final: Any = None
    lambda_max: Any = None
    base_lr_used: Any = None
    counts: Any = None
    num_backtracks: Any = None
    backtrack_factor: Any = None
    scale: Any = None


_REPORTED = (ScaleByCurvatureState, BacktrackingState, PreconditionState)


def report_nodes(state: Any) -> list:
    """The nodes of ``state`` that :func:`report` reads."""
    return [n for n in _walk(state) if isinstance(n, _REPORTED)]


def report(state: Any, batched: bool = False) -> OptimizerReport:
    """The :class:`OptimizerReport` of a final optimizer state (``batched``: leading member axis)."""
    nodes = [] if state is None else report_nodes(state)
    out: dict[str, Any] = {}
    for node in nodes:
        if isinstance(node, ScaleByCurvatureState) and "curvature" not in out:
            lr_final = (jax.vmap(learning_rate_of) if batched else learning_rate_of)(node)
            out.update(curvature=node.diag0, lr_vec=node.lr_vec0, curvature_final=node.diag, lr_vec_final=lr_final,
                       lambda_max=node.lambda_max, base_lr_used=node.base, counts=node.counts)
        elif isinstance(node, BacktrackingState) and "num_backtracks" not in out:
            out.update(num_backtracks=node.num_backtracks, backtrack_factor=node.learning_rate)
        elif isinstance(node, PreconditionState) and "scale" not in out:
            out.update(curvature=node.diag, scale=node.scale, counts=node.counts)
    return OptimizerReport(**{k: np.asarray(v) for k, v in out.items()})
