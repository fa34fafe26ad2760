"""What gnomon's optimizer loop reads from an optax state: by the state's type, never by a field's name alone.

Each of gnomon's states has a :class:`Reader` (registered here; a user's own transformation can register one with
:func:`register_reader`) that says what it contributes per step — inside the compiled loop, so any chain, assembled
by hand or by a method, records the same:

* :func:`step_learning_rate`: the product of the learning rates the chain's states report (η of
  :func:`~gnomon.optim.scale_by_lr_vector`, α of :func:`~gnomon.optim.scale_by_bb`, the shrink factor of
  :func:`~gnomon.optim.nonmonotone_backtracking`), or None when none does;
* :func:`step_accepted`: the verdict of the one backtracking rule, or None;
* :func:`own_grad_evals`: the gradient evaluations the transformations spent themselves (curvature estimates,
  power iterations; cumulative since ``init``) — plus, per step, the line search's ``num_linesearch_steps``
  (:func:`linesearch_state`), whose value and gradient at the accepted point the loop reuses.

States of transformations outside gnomon (optax's ``inject_hyperparams``, its line searches, ...) are read by
optax's own field names: a scalar ``learning_rate`` (or ``hyperparams["learning_rate"]``), ``accepted`` and
``num_grad_evals``.

After the run, :func:`report` (the one call the engine makes) turns the final state into a typed
:class:`OptimizerReport`, from the states' ``info`` fields and P.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from gnomon.optim.backtracking import BacktrackingInfo, BacktrackingState
from gnomon.optim.preconditioners import CurvatureInfo, PreconditionState, ScaleByCurvatureState
from gnomon.optim.step_sizes import LrVectorInfo, ScaleByBBState, ScaleByLrVectorState, learning_rate_of


class Reader(NamedTuple):
    """What one state type contributes per step (each a function of the state, or None for nothing)."""

    learning_rate: Callable[[Any], Any] | None = None  # a scalar multiplier of the step
    accepted: Callable[[Any], Any] | None = None  # a backtracking verdict on the point of the last update
    grad_evals: Callable[[Any], Any] | None = None  # gradient evaluations spent (cumulative)


_READERS: dict[type, Reader] = {
    ScaleByCurvatureState: Reader(grad_evals=lambda s: s.info.num_grad_evals),
    PreconditionState: Reader(grad_evals=lambda s: s.info.num_grad_evals),
    ScaleByLrVectorState: Reader(learning_rate=lambda s: s.info.learning_rate,
                                 grad_evals=lambda s: s.info.num_grad_evals),
    ScaleByBBState: Reader(learning_rate=lambda s: s.learning_rate),
    BacktrackingState: Reader(learning_rate=lambda s: s.learning_rate, accepted=lambda s: s.info.accepted),
    # the reports inside them: read through their states only
    CurvatureInfo: Reader(),
    LrVectorInfo: Reader(),
    BacktrackingInfo: Reader(),
}
_CHANNELS = {"learning_rate": "learning_rate", "accepted": "accepted", "num_grad_evals": "grad_evals"}


def register_reader(state_type: type, reader: Reader) -> None:
    """Tell the loop what a state type of one's own transformation contributes (:class:`Reader`); its fields are
    then read through ``reader`` only."""
    if not isinstance(state_type, type) or not isinstance(reader, Reader):
        raise ValueError(f"register_reader(state_type, Reader(...)), got {state_type!r}, {reader!r}")
    _READERS[state_type] = reader


def scalar_fields(state: Any, name: str) -> list:
    """The scalars that ``state``'s transformations report for the channel ``name`` (``"learning_rate"``,
    ``"accepted"``, ``"num_grad_evals"``), outermost first; works on shapes (``jax.ShapeDtypeStruct``) too."""
    if name not in _CHANNELS:
        raise ValueError(f"unknown channel {name!r}; expected one of {tuple(_CHANNELS)}")
    out = []
    for node in _walk(state):
        reader = _READERS.get(type(node))
        if reader is not None:
            fn = getattr(reader, _CHANNELS[name])
            found = [] if fn is None else [fn(node)]
        else:  # a state from outside gnomon: optax's field names
            found = _foreign(node, name)
        out += [v for v in found if jnp.ndim(v) == 0]
    return out


def step_learning_rate(state: Any) -> Any:
    """Product of the learning rates ``state`` reports (None if none does)."""
    found = scalar_fields(state, "learning_rate")
    if not found:
        return None
    out = found[0]
    for v in found[1:]:
        out = out * v
    return out


def step_accepted(state: Any) -> Any:
    """The verdict of the one backtracking rule in ``state`` (None without one)."""
    found = scalar_fields(state, "accepted")
    return found[0] if len(found) == 1 else None


def own_grad_evals(state: Any) -> Any:
    """Gradient evaluations the transformations of ``state`` spent themselves (0 if none)."""
    found = scalar_fields(state, "num_grad_evals")
    return sum(jnp.asarray(v, jnp.int32) for v in found) if found else jnp.zeros((), jnp.int32)


def linesearch_state(state: Any) -> Any:
    """The one ``optax.ScaleByZoomLinesearchState`` in ``state`` (its value and gradient at the new point can be
    reused), or None."""
    found = [s for s in _walk(state) if type(s).__name__ == "ScaleByZoomLinesearchState"]
    return found[0] if len(found) == 1 else None


def _walk(node: Any) -> Iterator[Any]:
    """Every NamedTuple node of a state and every dict in it (containers are descended), outermost first."""
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        yield node
        for child in node:
            yield from _walk(child)
    elif isinstance(node, (tuple, list)):
        for child in node:
            yield from _walk(child)
    elif isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _walk(child)


def _foreign(node: Any, name: str) -> list:
    """A state of a transformation outside gnomon: its own field (or dict key) ``name``."""
    if isinstance(node, dict):
        return [node[name]] if name in node else []
    return [getattr(node, name)] if name in node._fields else []


class OptimizerReport(NamedTuple):
    """Typed results of a run, read from its final optimizer state (numpy; None where not applicable).

    ``curvature``/``lr_vec``: the curvature diagonal at θ_0 and the learning-rate vector of the first update
    (``lr_vec``: where the chain's step rule is gnomon's — :func:`~gnomon.optim.scale_by_lr_vector`, or
    :func:`~gnomon.optim.scale_by_bb`, whose first step is P itself); ``curvature_final``/``lr_vec_final`` the ones
    in use at the end; ``lambda_max`` and ``base_lr_used`` (η_0 after the bound) of a
    :func:`~gnomon.optim.scale_by_lr_vector`; ``counts`` the cleaning counts of the estimate at θ_0 (non-finite,
    negative, floored); ``num_backtracks``/``backtrack_factor`` of the backtracking safeguard; ``scale`` the
    coordinate scale S = c^(-1/2) of a preconditioned L-BFGS."""

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


_REPORTED = (ScaleByCurvatureState, ScaleByLrVectorState, BacktrackingState, PreconditionState)


def report_nodes(state: Any) -> list:
    """The nodes of ``state`` that :func:`report` reads."""
    return [n for n in _walk(state) if isinstance(n, _REPORTED)]


def report(state: Any, batched: bool = False) -> OptimizerReport:
    """The :class:`OptimizerReport` of a final optimizer state (numpy; ``batched``: leading member axis)."""
    nodes = [] if state is None else report_nodes(state)

    def first(kind: type) -> Any:
        return next((n for n in nodes if isinstance(n, kind)), None)

    out: dict[str, Any] = {}
    curv, step, bt, pre = (first(k) for k in _REPORTED)
    if curv is not None:
        info = curv.info
        out.update(curvature=info.diag0, counts=info.counts,
                   curvature_final=info.diag0 if curv.diag is None else curv.diag)
    if step is not None:
        out.update(lr_vec=step.info.lr_vec0, lr_vec_final=learning_rate_of(step), lambda_max=step.info.lambda_max,
                   base_lr_used=step.base)
    elif curv is not None and (bb := next((n for n in _walk(state) if isinstance(n, ScaleByBBState)), None)):
        # BB steps straight after P: η_0 = 1 (no bound), the first step is P ⊙ g (α_0 = 1), the vector in use P
        one = np.ones_like(np.asarray(bb.learning_rate))
        out.update(lr_vec=curv.shape if curv.info.shape0 is None else curv.info.shape0, lr_vec_final=curv.shape,
                   lambda_max=np.full_like(one, np.nan), base_lr_used=one)
    if bt is not None:
        out.update(num_backtracks=bt.info.num_backtracks, backtrack_factor=bt.learning_rate)
    if pre is not None and "curvature" not in out:
        out.update(curvature=pre.info.diag0, scale=pre.scale, counts=pre.info.counts)
    return OptimizerReport(**{k: np.asarray(v) for k, v in out.items()})
