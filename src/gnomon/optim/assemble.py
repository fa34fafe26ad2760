"""The optimization :class:`~gnomon.Trace` from the rows the compiled loop buffered (one fit, or a batch of them).

Row t holds θ_t and loss(θ_t); the final row is the final point (the latest finite one). The status is the loop's
code (:mod:`gnomon.optim.status`): the sentence in ``trace.status`` and the :class:`StatusCode` in
``info["status_code"]`` (one per member for a batch).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gnomon.objective.objective import Objective
from gnomon.optim.carry import Rows, Summary
from gnomon.optim.status import LOOP_CODES, NONFINITE, RAN_OFF, sentence
from gnomon.trace.trace import Trace


def coordinate_labels(obj: Any, d: int) -> list[str]:
    """The names of θ's coordinates: the layout's labels, else ``θ[j]`` (``z[j]`` for a reparameterised one)."""
    layout = getattr(obj, "base_layout", None)
    if getattr(obj, "thetamap", None) is None and layout is not None and layout.size == d:
        return list(layout.index_labels())
    return [f"{'z' if getattr(obj, 'thetamap', None) is not None else 'θ'}[{j}]" for j in range(d)]


def _status(code: int, t: int, loss: float, dtype: Any, found: Any, member: Any, obj: Any, d: int) -> str:
    runoff = None
    if code == RAN_OFF and found is not None:
        i, distance, fall, points = (np.asarray(x)[member] for x in found)
        runoff = (coordinate_labels(obj, d)[int(i)], float(distance), float(fall), int(points))
    return sentence(code, t, loss, dtype, runoff)


def _named(scalars: np.ndarray, channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {name: np.array(scalars[..., j]) for j, name in enumerate(("loss", *channels))}  # writable copies


def assemble(rows: Rows, pieces: list[Rows], summary: Summary, obj: Objective, info: dict, runtime: float,
              channels: tuple[str, ...], theta0: Any = None) -> Trace:
    """The trace of one fit: each chunk's recorded prefix, then the latest scratch row when it is the final
    point (thinned runs), or the non-finite start when nothing finite was evaluated."""
    n = len(pieces)
    size = np.asarray(pieces[0].theta).shape[0]
    per = size - 2
    every = int(info["record_every"])
    code, t = int(summary.status), int(summary.t)
    final_t = t - 1 if code == NONFINITE else t  # the latest finite point
    if final_t < 0:  # nothing finite: the start, with its non-finite loss
        theta = np.asarray(theta0)[None]
        named = {"loss": np.asarray([summary.loss], np.asarray(rows.scalars).dtype)}
        named.update({c: np.full(1, np.nan, named["loss"].dtype) for c in channels})
        idx, step = None, np.zeros(1, np.int32)
    else:
        # row t of a single run sits at chunk t // (per · every), slot (t mod per · every) / every (recorded steps
        # are the multiples of every); the latest unrecorded finite row is in its chunk's scratch slot `per`
        recorded = np.arange(0, final_t + 1, every)
        idx = (recorded // (per * every)) * size + (recorded % (per * every)) // every
        step = recorded
        if final_t % every:
            idx = np.append(idx, (final_t // (per * every)) * size + per)
            step = np.append(step, final_t)
        if n == 1 and not final_t % every:
            idx = slice(0, len(recorded))  # the common case: a recorded prefix (views, no gather)
    if idx is not None:
        theta = np.asarray(rows.theta)[idx]
        named = _named(np.asarray(rows.scalars)[idx], channels)
    for name in ("step_norm", "learning_rate", "accepted"):
        if name in named:
            named[name][-1] = np.nan  # no step was taken from the final point (named holds copies)
    stats = {name: named[name] for name in channels if name in ("grad_norm", "step_norm")
             or not np.all(np.isnan(named[name]))}
    loss_now = float(summary.loss)
    info = {**info, "status_code": LOOP_CODES[code]}
    return Trace(
        kind="optimization",
        z=theta,  # the engine's coordinates; Trace derives base θ when obj has a θ-map
        loss=named["loss"],
        stats=stats,
        step=np.asarray(step, np.int32),
        status=_status(code, t, loss_now, np.asarray(theta).dtype, summary.runoff, (), obj, np.shape(theta)[-1]),
        num_grad_evals=int(summary.num_grad_evals),
        runtime_s=runtime,
        info=info,
        layout=obj.base_layout,
        thetamap=obj.thetamap,
    )


def assemble_batch(rows: Rows, pieces: list[Rows], summary: Summary, obj: Objective, info: dict,
                    runtime: float, channels: tuple[str, ...], theta0: Any = None) -> Trace:
    """The (B, T, D) trace of a batch, vectorised over members (same rows as :func:`assemble` per member).

    Each member's recorded rows are a prefix of the joined recorded slots (a stopped fit records nothing
    more); its final point (``summary.last``) is appended where it was not recorded, and shorter members are
    padded by repeating their final row (``extras["num_rows"]`` says how many rows are real)."""
    n = len(pieces)
    size = np.asarray(pieces[0].step).shape[1]
    per = size - 2
    slots = slice(0, per) if n == 1 else np.concatenate([np.arange(c * size, c * size + per) for c in range(n)])
    step_all = np.asarray(rows.step)[:, slots]  # (B, R); the recorded rows of every member are a prefix
    R = int(np.count_nonzero(np.any(step_all >= 0, axis=0)))
    step_rows = step_all[:, :R]
    theta_rows = np.asarray(rows.theta)[:, slots][:, :R]  # (B, R, D)
    scal_rows = np.asarray(rows.scalars)[:, slots][:, :R]
    B = step_all.shape[0]
    nrec = np.count_nonzero(step_rows >= 0, axis=1)
    last_gnorm = np.asarray(summary.grad_norm)
    status = np.asarray(summary.status)
    t = np.asarray(summary.t)
    members = np.arange(B)
    prev = np.maximum(nrec - 1, 0)
    last_step = np.where(nrec > 0, step_rows[members, prev] if R else -1, -1)
    if summary.last is not None:
        last_theta, last_loss, last_t = (np.asarray(x) for x in summary.last)
    else:  # every finite point was recorded: the final point is the last recorded row (or a non-finite start)
        last_theta, last_loss = np.asarray(theta0), np.asarray(summary.loss)
        last_t = np.where(nrec > 0, last_step, 0)
    append = last_step != last_t
    length = nrec + append
    T = int(max(length.max(), 1))
    dtype = scal_rows.dtype
    # the final row of each member: the appended point, or its last recorded row
    fin_theta = np.where(append[:, None], last_theta, theta_rows[members, prev] if R else last_theta)
    fin_scal = np.full((B, 1 + len(channels)), np.nan, dtype)
    if R:
        fin_scal = np.where(append[:, None], fin_scal, scal_rows[members, prev])
    fin_scal[:, 0] = np.where(append, last_loss, fin_scal[:, 0])
    if "grad_norm" in channels:
        j = 1 + channels.index("grad_norm")
        fin_scal[:, j] = np.where(append, last_gnorm, fin_scal[:, j])
    fin_step = np.where(append, last_t, last_step).astype(np.int32)
    if T <= R:  # views of the recorded rows, padded in place below (copies: the host buffers are read-only)
        theta, scalars, steps = theta_rows[:, :T].copy(), scal_rows[:, :T].copy(), step_rows[:, :T].copy()
    else:
        theta = np.concatenate([theta_rows, np.empty((B, T - R, theta_rows.shape[2]), theta_rows.dtype)], axis=1)
        scalars = np.concatenate([scal_rows, np.empty((B, T - R, scal_rows.shape[2]), dtype)], axis=1)
        steps = np.concatenate([step_rows, np.empty((B, T - R), np.int32)], axis=1)
    pad = np.arange(T)[None, :] >= nrec[:, None]  # (B, T): the final row (appended point or repeat) from here
    who = np.nonzero(pad)[0]
    theta[pad] = fin_theta[who]
    scalars[pad] = fin_scal[who]
    steps[pad] = fin_step[who]
    named = _named(scalars, channels)
    at_or_after_final = np.arange(T)[None, :] >= (length - 1)[:, None]
    stats = {}
    for name in channels:
        if name in ("step_norm", "learning_rate", "accepted"):
            named[name][at_or_after_final] = np.nan
        if name in ("grad_norm", "step_norm") or not np.all(np.isnan(named[name])):
            stats[name] = named[name]
    statuses = tuple(_status(int(status[i]), int(t[i]), float(np.asarray(summary.loss)[i]), theta.dtype,
                             summary.runoff, i, obj, theta.shape[-1]) for i in range(B))
    info = {**info, "status_code": [LOOP_CODES[int(s)] for s in status]}
    return Trace(
        kind="optimization",
        z=theta,  # the engine's coordinates; Trace derives base θ when obj has a θ-map
        loss=named["loss"],
        stats=stats,
        step=steps,
        status=statuses,
        num_grad_evals=np.asarray(summary.num_grad_evals, dtype=np.int64),
        runtime_s=runtime,
        info=info,
        layout=obj.base_layout,
        thetamap=obj.thetamap,
        extras={"num_rows": length.astype(np.int64), "final_grad_norm": last_gnorm.astype(np.float64)},
    )
