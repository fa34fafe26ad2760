"""Writing a batched trace (``theta`` ``(B, T, D)``, e.g. from ``gn.optimize_batch``) as B runs of an experiment.

All B run directories are created (atomic ``mkdir``) before anything is written, so a batch either gets all
its ids or none; creating a directory makes it the batch's own, so no claim file is written. Member ``i`` is
``trace[i]`` with the per-member engine outputs in ``extras`` cut to that member, and its ``meta.json``
records ``batch: {batch_id, index, size}``. ``crlb=`` and ``truth=`` take one value for every member or a
sequence of B (one per member: per-epoch bounds and truths, :func:`per_member_values`). This is the body
of :meth:`gnomon.Experiment.save_batch`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gnomon.experiment.run_writer import write_run
from gnomon.io.diagnostics import DiagnosticsConfig
from gnomon.io.install import discard_run_dir
from gnomon.io.run import member_info
from gnomon.io.runids import check_run_id, generate_run_id
from gnomon.trace.trace import Trace

__all__ = ["save_batch", "per_member_values"]


def save_batch(
    experiment: Any,
    trace: Trace,
    run_ids: Sequence[str] | None = None,
    layout: Any = None,
    meta: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    summary: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    prefix: str | None = None,
    diagnostics: DiagnosticsConfig | None = None,
    **save_run_kwargs: Any,
) -> list[Path]:
    """Write ``trace`` as B runs of ``experiment`` (a :class:`gnomon.Experiment`: its ``runs_dir``, ``path`` and
    ``diagnostics`` are used); see :meth:`gnomon.Experiment.save_batch`."""
    if not isinstance(trace, Trace) or not trace.is_batched:
        raise ValueError("save_batch expects a batched optimization Trace (theta of shape (B, T, D))")
    b = trace.batch_size
    batch_id = check_run_id(prefix) if prefix is not None else generate_run_id()
    if run_ids is None:
        width = max(3, len(str(b - 1)))
        run_ids = [f"{batch_id}-{i:0{width}d}" for i in range(b)]
    else:
        run_ids = [check_run_id(r) for r in run_ids]
        if len(run_ids) != b:
            raise ValueError(f"save_batch: {len(run_ids)} run ids for a batch of {b}")
        if len(set(run_ids)) != b:
            raise ValueError("save_batch: run ids must be distinct")
    metas = _per_member("meta", meta, b)
    summaries = _per_member("summary", summary, b)
    per_value = {k: per_member_values(k, save_run_kwargs.pop(k), b, "member")
                 for k in ("crlb", "truth") if k in save_run_kwargs}
    dirs = [experiment.runs_dir / r for r in run_ids]
    # Creating a directory (atomic mkdir) makes it ours; no claim file is needed while we write it
    # (other writers treat a fresh unclaimed run as busy).
    made: list[Path] = []
    taken: list[str] = []
    for d in dirs:
        try:
            os.mkdir(d)
        except FileExistsError:
            taken.append(d.name)
            continue
        made.append(d)
    if taken:
        for d in made:
            discard_run_dir(d)
        raise FileExistsError(
            f"save_batch: run ids already taken in {experiment.path}: {taken[:10]}"
            + (f" and {len(taken) - 10} more" if len(taken) > 10 else "")
        )
    host = trace.to_numpy()
    cfg = diagnostics if diagnostics is not None else experiment.diagnostics
    extra_meta = dict(save_run_kwargs.pop("extra_meta", None) or {})
    layout = layout if layout is not None else trace.layout
    for i, d in enumerate(dirs):
        try:
            write_run(
                d,
                d.name,
                _member(host, i, b),
                layout=layout,
                meta=metas[i],
                diagnostics=cfg,
                summary=summaries[i],
                extra_meta={**extra_meta, "batch": {"batch_id": batch_id, "index": i, "size": b}},
                fresh=True,
                **{k: v[i] for k, v in per_value.items()},
                **save_run_kwargs,
            )
        except BaseException:
            for rest in dirs[i + 1 :]:  # created for this batch, still empty
                discard_run_dir(rest)
            raise
    return dirs


def _member(batch: Trace, i: int, b: int) -> Trace:
    """Member ``i`` of a batch, with the per-member engine outputs in ``extras`` (arrays with a leading
    axis of size B, e.g. the curvature and lr_vec of ``gn.optimize_batch``) cut to that member."""
    member = batch[i]
    cut = {k: v[i] for k, v in member.extras.items() if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == b}
    member = dataclasses.replace(member, extras={**member.extras, **cut}) if cut else member
    return member_info(member)  # info["goodness_of_fit"]: the member's own


def per_member_values(name: str, value: Any, n: int, what: str = "member") -> list[Any]:
    """A ``crlb``/``truth`` argument as a list of ``n``: one value for all (a mapping, a CRLB object, a flat θ
    vector or list of numbers, None) or one per member (a sequence of ``n`` such values, or a ``(n, D)``
    array); ValueError naming the count otherwise."""
    if value is None or isinstance(value, Mapping) or hasattr(value, "to_summary"):
        return [value] * n
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, (list, tuple)):
        arr = np.asarray(value)
        if arr.ndim <= 1:
            return [value] * n
        if arr.ndim == 2:
            if arr.shape[0] != n:
                raise ValueError(f"{name}: a ({arr.shape[0]}, {arr.shape[1]}) array has one row per {what}, but "
                                 f"there are {n} {what}s")
            return list(arr)
        raise ValueError(f"{name}: expected one value or one per {what}, got an array of shape {arr.shape}")
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value):
            return [value] * n  # a flat θ written as a list of numbers
        if len(value) != n:
            raise ValueError(f"{name}: {len(value)} values for {n} {what}s (give one for all, or one per {what})")
        return list(value)
    raise ValueError(f"{name}: expected a mapping, a CRLB result, a flat θ or a sequence of {n} of them; "
                     f"got {type(value).__name__}")


def _per_member(name: str, value: Any, b: int) -> list[Mapping[str, Any] | None]:
    """``value`` (one mapping for every member, or a sequence of B mappings) as a list of B."""
    if value is None or isinstance(value, Mapping):
        return [value] * b
    seq = list(value)
    if len(seq) != b:
        raise ValueError(f"save_batch: {name} must be one mapping or {b} mappings, got {len(seq)}")
    return seq
