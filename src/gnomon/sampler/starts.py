r"""Where the chains start: the start θ*, the metric seed and the initial positions around θ*.

The MAP → NUTS hand-off
-----------------------
A posterior that is locally Gaussian around its mode θ* with precision :math:`H` has covariance
:math:`\Sigma \approx H^{-1}`. The start uses that twice:

* the **metric seed** :math:`M^{-1}_0 = LL^T` comes from the curvature at θ* (marginal variances
  :math:`\mathrm{diag}(H^{-1})`, the dense :math:`H^{-1}`, or :math:`1/\mathrm{diag}\,H` for large D; see
  :mod:`gnomon.sampler.metric`), from an earlier run's hand-off, an array, or the identity
  (:func:`seed_metric`), and
* the **chains start** from "Laplace draws" :math:`θ^* + j\,L\varepsilon_c`, :math:`\varepsilon_c \sim N(0, I)`
  with jitter :math:`j` (:func:`start_positions`), so they begin inside the typical set rather than at the
  mode. A jittered start where the target or its gradient is not finite is pulled towards θ*
  (:math:`θ \leftarrow θ^* + (θ - θ^*)/4`, at most 6 times).

θ* itself is resolved from the ``init`` forms of :func:`gnomon.sample` (:func:`resolve_init`): a θ, per-chain
starts, an optimization Trace (its best θ, the MAP; a batch of fits gives one start per chain), a sampling
Trace (its last draws) or a :class:`gnomon.HandOff`. An optimization that diverged, stopped at a saddle point
or made no progress has no usable mode: its chains then start from dispersed points around its first point (for
a saddle reached from there, around the saddle) and the warmup adapts without a seed (:func:`no_mode`,
:func:`dispersed_starts`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.optim.status import status_code
from gnomon.sampler import metric as mmx
from gnomon.sampler.config import Warmup
from gnomon.sampler.decisions import MapEnd
from gnomon.sampler.handoff import HandOffBundle
from gnomon.sampler.health import RUNAWAY
from gnomon.trace.trace import Trace
from gnomon.util.validate import host_rng


class MapInfo(NamedTuple):
    """What the optimization trace behind a start reports."""

    num_grad_evals: int
    status: str | None
    loss: float
    first_theta: Any  # (D,) the optimizer's first point, or None
    losses: Any = None  # (T,) the optimizer's recorded losses (of the best member of a batch)
    code: Any = None  # the optimizer's StatusCode (trace.info["status_code"]; None for a trace without one)


class Start(NamedTuple):
    center: Any  # (D,) or None
    starts: Any  # (C, D) or None
    source: str
    map: MapInfo | None = None


class Seed(NamedTuple):
    """The metric seed: the inverse mass matrix, where it came from (``"curvature"``, ``"handoff"``,
    ``"array"`` or ``"identity"``) and the curvature it was computed from (or None)."""

    imm: mmx.InverseMassMatrix
    kind: str
    curvature: Any


def map_theta(init: Trace, which: str, obj: Objective):
    """Rows ``which`` (``"theta"``, ``"best"``, ``"final"``) of a trace, in ``obj``'s coordinates."""
    return jnp.asarray(init.coords_in(obj.thetamap, which))


def resolve_init(obj: Objective, init: Any, num_chains: int) -> Start:
    """The start θ* (``center``) and/or per-chain starts of one of the ``init`` forms of :func:`gnomon.sample`."""
    d = obj.dim
    if isinstance(init, HandOffBundle):
        if init.dim != d:
            raise ValueError(f"the hand-off is for θ of dimension {init.dim}, but the objective has dim {d}")
        pos = init.positions
        starts = jnp.asarray(pos) if pos is not None and np.shape(pos)[0] == num_chains else None
        return Start(jnp.asarray(init.theta), starts, "handoff")
    if isinstance(init, Trace):
        if init.kind == "sampling":
            last = map_theta(init, "theta", obj)[:, -1]
            if last.shape[0] == num_chains:
                return Start(map_theta(init, "best", obj), last, "sampling trace")
            return Start(map_theta(init, "best", obj), None, "sampling trace")
        cost = int(np.sum(np.asarray(init.num_grad_evals)))
        if init.is_batched:
            best = np.asarray(init.best_theta)
            losses = np.asarray(init.best_loss, dtype=float)
            order = np.argsort(np.where(np.isfinite(losses), losses, np.inf))
            status = init.status[int(order[0])] if isinstance(init.status, (tuple, list)) else init.status
            member = int(order[0])
            first = np.asarray(map_theta(init, "theta", obj)[member, 0])
            codes = status_code(init)
            code = codes[member] if isinstance(codes, tuple) else codes
            info = MapInfo(cost, status, float(losses[member]), first, np.asarray(init.loss)[member], code)
            best_z = map_theta(init, "best", obj)
            center = best_z[member]
            starts = best_z if best.shape[0] == num_chains else None
            return Start(center, starts, "optimization trace", info)
        first = np.asarray(map_theta(init, "theta", obj)[0])
        info = MapInfo(
            cost, init.status, float(np.asarray(init.best_loss)), first, np.asarray(init.loss), status_code(init)
        )
        return Start(map_theta(init, "best", obj), None, "optimization trace", info)
    try:
        arr = jnp.asarray(init)
    except (TypeError, ValueError):  # e.g. None, a string
        raise ValueError(
            f"init must be a θ ({d},), per-chain starts ({num_chains}, {d}), a Trace or a HandOff; got "
            f"{type(init).__name__}"
        ) from None
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    if arr.ndim == 1 and arr.shape[0] == d:
        return Start(arr, None, "theta")
    if arr.ndim == 2 and arr.shape == (num_chains, d):
        return Start(None, arr, "per-chain starts")
    raise ValueError(
        f"init has shape {tuple(arr.shape)}; expected a θ of shape ({d},) or per-chain starts of shape "
        f"({num_chains}, {d}) (num_chains={num_chains})"
    )


def no_mode(start: Start, dim: int, log_prob_at_best: float | None = None) -> str | None:
    """Why the optimization behind ``start`` has no usable mode, or None: it went non-finite (the density
    grows without bound, or the optimizer ran off to a boundary), it stopped at a saddle point (a stationary point
    with negative curvature: the chains then start dispersed around it, so they leave it) or made no progress,
    it ran off along a coordinate (status code ``ran_off``: the loss kept falling at a steady rate — a neck),
    its best point has a non-finite log density (``log_prob_at_best``), or it stopped at its step limit while
    still gaining more than ``max(D, 10)`` nats of log density over its last tenth — running away rather than
    converging (near a mode, the whole typical set lies within about D/2 nats of it) — or its best point lies
    beyond ``|θ| = RUNAWAY`` (1e10: an improper density's optimizer stalls out there, in float32 at the precision
    limit, rather than stopping as diverged)."""
    m = start.map
    if start.source != "optimization trace" or m is None or not isinstance(m.status, str):
        return None
    size = float(np.max(np.abs(np.asarray(start.center, np.float64)))) if start.center is not None else 0.0
    if not math.isfinite(size) or size > RUNAWAY:  # (also when it then overflowed: the run-off is the finding)
        return f"the optimization ran off to |θ| = {size:.2g} ({m.status.split(':')[0]}) instead of reaching a mode"
    end = MapEnd.of(m.status, m.code)
    if end.found_no_mode:  # diverged, or ran off: the loss kept falling steadily (a neck)
        return f"the optimization did not reach a mode ({m.status})"
    if end in (MapEnd.SADDLE_POINT, MapEnd.NO_PROGRESS):
        # a stationary point with negative curvature (or a start the optimizer never left) is no mode: the chains
        # start dispersed around it and leave it (a Laplace draw from |H| there would sit on the saddle's ridge)
        return f"the optimization did not reach a mode ({m.status.split(':')[0]}: {m.status.split(':', 1)[-1].strip()})"
    if log_prob_at_best is not None and not math.isfinite(log_prob_at_best):
        return f"the optimization's best point has log_prob = {log_prob_at_best} (status {m.status})"
    if end is MapEnd.MAX_STEPS and m.losses is not None and len(m.losses) >= 10:
        loss = np.asarray(m.losses, np.float64)
        cut = int(0.9 * len(loss))
        head, tail = loss[:cut], loss[cut:]
        head, tail = head[np.isfinite(head)], tail[np.isfinite(tail)]
        if head.size and tail.size and float(np.min(head) - np.min(tail)) > max(dim, 10):
            gain = float(np.min(head) - np.min(tail))
            return (
                f"the optimization did not reach a mode (it stopped at its step limit still gaining {gain:.3g} "
                "nats of log density over its last tenth)"
            )
    return None


def dispersed_starts(center: Any, key: Any, num_chains: int, radius: float = 2.0):
    """Starts without a seed: ``center + uniform(−radius, radius)`` per coordinate (Stan's initialisation
    around the given point)."""
    u = host_rng(key).uniform(-radius, radius, (num_chains, center.shape[0]))  # host draws: nothing to compile
    return center[None, :] + jnp.asarray(np.asarray(u, center.dtype))  # (converted on the host)


def start_center(start: Start, obj: Objective, num_chains: int):
    """θ* (per-chain starts: the first chain's start, where the curvature is taken), checked."""
    center = start.center
    if center is None:
        center = start.starts[0]
    if center.shape != (obj.dim,):
        raise ValueError(f"the start θ has shape {tuple(center.shape)}, expected ({obj.dim},) for {obj!r}")
    if start.starts is not None and tuple(start.starts.shape) != (num_chains, obj.dim):
        raise ValueError(f"per-chain starts have shape {tuple(start.starts.shape)}, expected ({num_chains}, {obj.dim})")
    if center.dtype == jnp.float32 and jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64:
        # BlackJAX's NUTS then mixes float64 (step size, energies) with float32 θ and fails deep in a lax.cond
        raise ValueError(
            "the start θ is float32 but jax_enable_x64 is on: pass it as float64 — init=jnp.asarray(θ, "
            "jnp.float64); for an optimizer Trace that ran in float32 (its θ0 was float32), refit from a float64 "
            "θ0 and pass that fit, or pass init=jnp.asarray(fit.best_theta, jnp.float64) (the curvature at the "
            "start is then estimated again) — or sample with x64 off"
        )
    center_np = np.asarray(center)
    if not np.all(np.isfinite(center_np)):
        raise ValueError(f"the start θ has non-finite entries: {center_np[~np.isfinite(center_np)][:3].tolist()}")
    return center


def seed_metric(
    obj: Objective,
    center: Any,
    inverse_mass_matrix: Any,
    handoff: HandOffBundle | None,
    warmup: Warmup,
    *,
    key: Any,
    data: Any,
) -> Seed:
    """The metric seed of :func:`gnomon.sample`'s ``inverse_mass_matrix``/``handoff`` and the warmup's
    ``curvature``/``dense``/``max_dense_dim``; ``data`` None for the bound data."""
    dtype = center.dtype
    dense_identity = warmup.metric == "dense"
    curvature = warmup.curvature if not isinstance(warmup.curvature, str) else None
    method = warmup.curvature if isinstance(warmup.curvature, str) else None
    is_curv = isinstance(inverse_mass_matrix, str) and inverse_mass_matrix == "curvature"
    if curvature is not None and not (hasattr(curvature, "diag") and hasattr(curvature, "method")):
        prec = np.asarray(curvature, dtype=np.float64)  # an array: the precision's diagonal or the precision
        if prec.shape not in ((obj.dim,), (obj.dim, obj.dim)):
            raise ValueError(f"gn.warmup(curvature=array) has shape {prec.shape}, expected ({obj.dim},) or "
                             f"({obj.dim}, {obj.dim}) for {obj!r}")
        if is_curv:
            imm = (mmx.from_precision_diag(prec, dtype=dtype) if prec.ndim == 1
                   else mmx.from_precision_matrix(prec, dense=warmup.dense, dtype=dtype))
            return Seed(imm, "curvature", None)
    if curvature is not None and not is_curv:
        raise ValueError(
            "gn.warmup(curvature=<Curvature>) seeds the metric only with inverse_mass_matrix='curvature' "
            f"(got inverse_mass_matrix={type(inverse_mass_matrix).__name__})"
        )
    if handoff is not None and is_curv:
        if handoff.dim != obj.dim:
            raise ValueError(f"the hand-off is for θ of dimension {handoff.dim}, but the objective has dim {obj.dim}")
        imm = mmx.from_array(np.asarray(handoff.inverse_mass_matrix, dtype=dtype), source="handoff")
        seed = Seed(imm, "handoff", None)
    elif is_curv and curvature is not None:
        imm = mmx.from_curvature(curvature, dense=warmup.dense, max_dense_dim=warmup.max_dense_dim, dtype=dtype)
        seed = Seed(imm, "curvature", curvature)
    elif is_curv:
        imm, curv = mmx.curvature_metric(
            obj, center, method=method, dense=warmup.dense, max_dense_dim=warmup.max_dense_dim, key=key, data=data,
            num_probes=warmup.num_probes, hutchinson_mode=warmup.hutchinson_mode,
        )
        seed = Seed(imm, "curvature", curv)
    elif isinstance(inverse_mass_matrix, str) and inverse_mass_matrix == "identity" or inverse_mass_matrix is None:
        seed = Seed(mmx.identity(obj.dim, dense=dense_identity, dtype=dtype), "identity", None)
    elif isinstance(inverse_mass_matrix, str):
        raise ValueError(
            f"unknown inverse_mass_matrix {inverse_mass_matrix!r}; expected 'curvature', 'identity', "
            "None, an array (D,) or (D, D), or a gnomon.Curvature"
        )
    elif isinstance(inverse_mass_matrix, mmx.InverseMassMatrix):
        seed = Seed(inverse_mass_matrix, "array", None)
    elif hasattr(inverse_mass_matrix, "diag") and hasattr(inverse_mass_matrix, "method"):
        imm = mmx.from_curvature(
            inverse_mass_matrix, dense=warmup.dense, max_dense_dim=warmup.max_dense_dim, dtype=dtype
        )
        seed = Seed(imm, "curvature", inverse_mass_matrix)
    else:
        seed = Seed(mmx.from_array(np.asarray(inverse_mass_matrix, dtype=dtype)), "array", None)
    if seed.imm.dim != obj.dim:
        raise ValueError(f"the inverse mass matrix has dimension {seed.imm.dim}, but the objective has dim {obj.dim}")
    return seed


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
        eps = jnp.asarray(np.asarray(host_rng(key).standard_normal((num_chains, center.shape[0])), dtype))
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
