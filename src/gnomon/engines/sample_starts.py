r"""Where the chains start: the start θ*, the metric seed and the initial positions around θ*.

The MAP → NUTS hand-off
-----------------------
A posterior that is locally Gaussian around its mode θ* with precision :math:`H` has covariance
:math:`\Sigma \approx H^{-1}`. The start uses that twice:

* the **metric seed** :math:`M^{-1}_0 = LL^T` comes from the curvature at θ* (marginal variances
  :math:`\mathrm{diag}(H^{-1})`, the dense :math:`H^{-1}`, or :math:`1/\mathrm{diag}\,H` for large D; see
  :mod:`gnomon.curvature.mass_matrix`), from an earlier run's hand-off, an array, or the identity
  (:func:`seed_metric`), and
* the **chains start** from "Laplace draws" :math:`θ^* + j\,L\varepsilon_c`, :math:`\varepsilon_c \sim N(0, I)`
  with jitter :math:`j` (:func:`start_positions`), so they begin inside the typical set rather than at the
  mode. A jittered start where the target or its gradient is not finite is pulled towards θ*
  (:math:`θ \leftarrow θ^* + (θ - θ^*)/4`, at most 6 times).

θ* itself is resolved from the ``init`` forms of :func:`gnomon.sample` (:func:`resolve_init`): a θ, per-chain
starts, an optimization Trace (its best θ, the MAP; a batch of fits gives one start per chain), a sampling
Trace (its last draws) or a :class:`gnomon.HandOff`. An optimization that diverged has no usable mode: its
first point with the identity metric is the fallback (:func:`cold_start`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.curvature import mass_matrix as mmx
from gnomon.engines.handoff import HandOff
from gnomon.objective.objective import Objective
from gnomon.trace.trace import Trace


class Start(NamedTuple):
    center: Any  # (D,) or None
    starts: Any  # (C, D) or None
    source: str
    map_info: dict


def map_theta(init: Trace, which: str, obj: Objective):
    """Rows ``which`` (``"theta"``, ``"best"``, ``"final"``) of a trace, in ``obj``'s coordinates."""
    return jnp.asarray(init.coords_in(obj.thetamap, which))


def resolve_init(obj: Objective, init: Any, num_chains: int) -> Start:
    """The start θ* (``center``) and/or per-chain starts of one of the ``init`` forms of :func:`gnomon.sample`."""
    d = obj.dim
    if isinstance(init, HandOff):
        if init.dim != d:
            raise ValueError(f"the hand-off is for θ of dimension {init.dim}, but the objective has dim {d}")
        pos = init.positions
        starts = jnp.asarray(pos) if pos is not None and np.shape(pos)[0] == num_chains else None
        return Start(jnp.asarray(init.theta), starts, "handoff", {})
    if isinstance(init, Trace):
        if init.kind == "sampling":
            last = map_theta(init, "theta", obj)[:, -1]
            if last.shape[0] == num_chains:
                return Start(map_theta(init, "best", obj), last, "sampling trace", {})
            return Start(map_theta(init, "best", obj), None, "sampling trace", {})
        info = {"map_num_grad_evals": int(np.sum(np.asarray(init.num_grad_evals)))}
        if init.is_batched:
            best = np.asarray(init.best_theta)
            losses = np.asarray(init.best_loss, dtype=float)
            order = np.argsort(np.where(np.isfinite(losses), losses, np.inf))
            status = init.status[int(order[0])] if isinstance(init.status, (tuple, list)) else init.status
            info.update(map_status=status, map_loss=float(losses[order[0]]))
            center = map_theta(init, "best", obj)[order[0]]
            starts = map_theta(init, "best", obj) if best.shape[0] == num_chains else None
            return Start(center, starts, "optimization trace", info)
        info.update(
            map_status=init.status,
            map_loss=float(np.asarray(init.best_loss)),
            map_first_theta=np.asarray(map_theta(init, "theta", obj)[0]),
        )
        return Start(map_theta(init, "best", obj), None, "optimization trace", info)
    try:
        arr = jnp.asarray(init)
    except TypeError:
        raise ValueError(
            f"init must be a θ ({d},), per-chain starts ({num_chains}, {d}), a Trace or a HandOff; got "
            f"{type(init).__name__}"
        ) from None
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    if arr.ndim == 1 and arr.shape[0] == d:
        return Start(arr, None, "theta", {})
    if arr.ndim == 2 and arr.shape == (num_chains, d):
        return Start(None, arr, "per-chain starts", {})
    raise ValueError(
        f"init has shape {tuple(arr.shape)}; expected a θ of shape ({d},) or per-chain starts of shape "
        f"({num_chains}, {d}) (num_chains={num_chains})"
    )


def cold_start(start: Start) -> tuple[Start, str] | None:
    """For an optimization that diverged (no usable mode): a start from its first point, and why; else None.

    The caller also drops a curvature seed for the identity metric and the full warmup."""
    status = start.map_info.get("map_status")
    if not (start.source == "optimization trace" and isinstance(status, str) and status.startswith("diverged")):
        return None
    first = start.map_info.get("map_first_theta")
    msg = (
        f"the optimization did not reach a mode ({status}); its best point is a poor start, so sampling starts "
        "from the optimizer's first point with the identity metric and a full warmup"
    )
    return Start(jnp.asarray(first) if first is not None else start.center, None, "fallback", start.map_info), msg


def start_center(start: Start, obj: Objective, num_chains: int):
    """θ* (per-chain starts: the first chain's start, where the curvature is taken), checked."""
    center = start.center
    if center is None:
        center = start.starts[0]
    if center.shape != (obj.dim,):
        raise ValueError(f"the start θ has shape {tuple(center.shape)}, expected ({obj.dim},) for {obj!r}")
    if start.starts is not None and tuple(start.starts.shape) != (num_chains, obj.dim):
        raise ValueError(f"per-chain starts have shape {tuple(start.starts.shape)}, expected ({num_chains}, {obj.dim})")
    center_np = np.asarray(center)
    if not np.all(np.isfinite(center_np)):
        raise ValueError(f"the start θ has non-finite entries: {center_np[~np.isfinite(center_np)][:3].tolist()}")
    return center


def seed_metric(
    obj: Objective,
    center: Any,
    inverse_mass_matrix: Any,
    handoff: HandOff | None,
    *,
    dense: bool | str,
    adapt_metric: str | None,
    curvature_method: str | None,
    max_dense_dim: int,
    key: Any,
    data: Any,
) -> tuple[mmx.InverseMassMatrix, str, Any]:
    """The metric seed, its kind (``"handoff"``, ``"curvature"``, ``"identity"`` or ``"array"``) and the
    curvature it came from (or None); arguments as in :func:`gnomon.sample`, ``data`` None for the bound data."""
    dtype = center.dtype
    curvature = None
    if handoff is not None and isinstance(inverse_mass_matrix, str) and inverse_mass_matrix == "curvature":
        if handoff.dim != obj.dim:
            raise ValueError(f"the hand-off is for θ of dimension {handoff.dim}, but the objective has dim {obj.dim}")
        seed = mmx.from_array(np.asarray(handoff.inverse_mass_matrix, dtype=dtype), source="handoff")
        seed_kind = "handoff"
    elif isinstance(inverse_mass_matrix, str):
        if inverse_mass_matrix == "curvature":
            seed, curvature = mmx.curvature_metric(
                obj, center, method=curvature_method, dense=dense, max_dense_dim=max_dense_dim, key=key, data=data
            )
            seed_kind = "curvature"
        elif inverse_mass_matrix == "identity":
            seed, seed_kind = mmx.identity(obj.dim, dense=adapt_metric == "dense", dtype=dtype), "identity"
        else:
            raise ValueError(
                f"unknown inverse_mass_matrix {inverse_mass_matrix!r}; expected 'curvature', 'identity', "
                "None, an array (D,) or (D, D), or a gnomon.Curvature"
            )
    elif inverse_mass_matrix is None:
        seed, seed_kind = mmx.identity(obj.dim, dense=adapt_metric == "dense", dtype=dtype), "identity"
    elif isinstance(inverse_mass_matrix, mmx.InverseMassMatrix):
        seed, seed_kind = inverse_mass_matrix, "array"
    elif hasattr(inverse_mass_matrix, "diag") and hasattr(inverse_mass_matrix, "method"):
        curvature = inverse_mass_matrix
        seed = mmx.from_curvature(curvature, dense=dense, max_dense_dim=max_dense_dim, dtype=dtype)
        seed_kind = "curvature"
    else:
        seed, seed_kind = mmx.from_array(np.asarray(inverse_mass_matrix, dtype=dtype)), "array"
    if seed.dim != obj.dim:
        raise ValueError(f"the inverse mass matrix has dimension {seed.dim}, but the objective has dim {obj.dim}")
    return seed, seed_kind, curvature


def _bad_chains(states: Any) -> np.ndarray:
    return ~(
        np.isfinite(np.asarray(states.logdensity)) & np.all(np.isfinite(np.asarray(states.logdensity_grad)), axis=1)
    )


def start_positions(
    init_fn: Any, data: Any, start: Start, center: Any, draw_factor: Any, jitter: float, key: Any, num_chains: int
) -> tuple[Any, Any, int]:
    """The chains' initial states ``init_fn(positions, data)``, their positions and the number of times
    non-finite jittered starts were pulled towards θ*; a chain that stays non-finite raises."""
    dtype = center.dtype
    if start.starts is not None:
        positions = jnp.asarray(start.starts, dtype)
        jittered = False
    else:
        eps = jax.random.normal(key, (num_chains, center.shape[0]), dtype)
        offsets = eps @ draw_factor.T if draw_factor.ndim == 2 else eps * draw_factor
        positions = center[None, :] + jitter * offsets
        jittered = jitter > 0
    states = init_fn(positions, data)
    bad = _bad_chains(states)
    shrink_tries = 0
    while jittered and bad.any() and shrink_tries < 6:  # pull jittered starts towards the centre
        shrink_tries += 1
        positions = jnp.where(
            jnp.asarray(bad)[:, None], center[None, :] + (positions - center[None, :]) * 0.25, positions
        )
        states = init_fn(positions, data)
        bad = _bad_chains(states)
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        lp = float(np.asarray(states.logdensity)[c])
        what = f"log_prob = {lp}" if not math.isfinite(lp) else "a non-finite gradient"
        raise ValueError(
            f"chain {c} starts where the target has {what} (start θ[:5] = "
            f"{np.asarray(positions[c])[:5].tolist()}); give a start inside the support"
        )
    return states, positions, shrink_tries
