"""Campaigns: one fit per item, resumable, on any ``concurrent.futures`` executor.

``run_many(exp, fn, items, executor)`` maps every item to a run id, skips items whose run is complete,
and runs the rest as tasks. A task (in whatever process or machine the executor picks) claims its run
directory (:func:`gnomon.experiment.run_writer.acquire_run`), calls ``fn(item)``, writes the result with
summary.json last, and returns a small status record — traces never travel back through the executor.

Crash safety follows from three rules: a run is complete iff summary.json exists; a claim names its
writer, so after a crash (SIGKILL, lost machine) the resuming campaign knows the run is abandoned and redoes
it from scratch; a claim is exclusive, so two campaigns over the same items never write the same run.
Resuming therefore loses nothing and does nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gnomon.io.diagnostics import DiagnosticsConfig
from gnomon.io.jsonio import ArtifactError, read_json, to_jsonable
from gnomon.io.run import META_FILE, SUMMARY_FILE
from gnomon.io.runids import CLAIM_FILE, check_run_id
from gnomon.trace.trace import Trace
from gnomon.util.validate import positive_int

_RESULT_KEYS = (
    "layout",
    "meta",
    "summary",
    "extra_arrays",
    "extra_meta",
    "objective",
    "curvature",
    "precond",
    "signals",
    "handoff",
    "crlb",
    "truth",
)


@dataclass
class CampaignResult:
    """What :func:`run_many` did. ``ok`` is True when every item's run is complete."""

    total: int
    completed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    busy: dict[str, str] = field(default_factory=dict)
    runtime_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.busy and len(self.completed) + len(self.skipped) == self.total

    def __repr__(self) -> str:
        return (
            f"CampaignResult(total={self.total}, completed={len(self.completed)}, "
            f"skipped={len(self.skipped)}, "
            f"failed={len(self.failed)}, busy={len(self.busy)}, runtime_s={self.runtime_s:.3g})"
        )


def item_fingerprint(item: Any) -> tuple[Any, str | None]:
    """``(JSON form, sha256 prefix)`` of an item, or ``(None, None)`` if it is not JSON-able."""
    try:
        doc = to_jsonable(item)
    except TypeError:
        return None, None
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return doc, hashlib.sha256(text.encode()).hexdigest()[:16]


def _normalize(out: Any) -> tuple[Trace, dict[str, Any]]:
    if isinstance(out, Trace):
        return out, {}
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Trace) and isinstance(out[1], Mapping):
        return out[0], {"meta": dict(out[1])}
    if isinstance(out, Mapping) and isinstance(out.get("trace"), Trace):
        kw = {k: v for k, v in out.items() if k != "trace"}
        unknown = sorted(set(kw) - set(_RESULT_KEYS))
        if unknown:
            raise ValueError(
                f"run_many: fn returned unknown keys {unknown}; allowed: trace, {', '.join(_RESULT_KEYS)}"
            )
        return out["trace"], kw
    raise ValueError(
        "run_many: fn(item) must return a Trace, (Trace, meta dict) or a dict with 'trace' (and optionally "
        f"{', '.join(_RESULT_KEYS)}); got {type(out).__name__}"
    )


def run_item(
    runs_dir: str,
    run_id: str,
    index: int,
    item: Any,
    fn: Callable[[Any], Any],
    diagnostics: dict[str, Any] | None,
    save_kwargs: dict[str, Any] | None,
    reclaim: bool,
    stale_after_s: float | None,
) -> dict[str, Any]:
    """One campaign task: claim the run, fit, write; a small status record. Runs in the executor's worker."""
    from gnomon.experiment.run_writer import acquire_run, write_error, write_run
    from gnomon.io.runids import release_claim

    t0 = time.perf_counter()
    d = Path(runs_dir) / run_id
    try:
        state, msg, token = acquire_run(d, reclaim=reclaim, stale_after_s=stale_after_s)
    except OSError as exc:
        return {"run_id": run_id, "state": "failed", "message": f"cannot claim the run: {exc}"}
    if state == "complete":
        return {"run_id": run_id, "state": "skipped", "message": msg}
    if state == "busy":
        return {"run_id": run_id, "state": "busy", "message": msg}
    try:  # state "acquired": the run is ours (claimed), fresh or taken over from a crashed writer
        trace, kw = _normalize(fn(item))
        item_doc, item_hash = item_fingerprint(item)
        extra_meta = dict(kw.pop("extra_meta", None) or {})
        extra_meta["campaign"] = {"index": index, "item": item_doc, "item_hash": item_hash}
        cfg = DiagnosticsConfig.from_dict(diagnostics) if diagnostics else None
        write_run(
            d,
            run_id,
            trace,
            diagnostics=cfg,
            extra_meta=extra_meta,
            release=False,
            token=token,
            **{**(save_kwargs or {}), **kw},  # what fn returned for this item wins over the campaign's defaults
        )
    except Exception as exc:  # noqa: BLE001 - one failed item must not stop the campaign
        write_error(d, run_id, exc)
        release_claim(d, token)
        return {
            "run_id": run_id,
            "state": "failed",
            "message": f"{type(exc).__name__}: {exc}",
            "runtime_s": time.perf_counter() - t0,
        }
    except BaseException as exc:  # Ctrl-C, SystemExit: free the run for the next attempt (even here)
        write_error(d, run_id, exc)
        release_claim(d, token)
        raise
    return {"run_id": run_id, "state": "done", "runtime_s": time.perf_counter() - t0}


def _ids_for(items: Sequence[Any], run_id: Any) -> list[str]:
    n = len(items)
    if run_id is None:
        width = max(6, len(str(max(n - 1, 0))))
        ids = [f"item-{i:0{width}d}" for i in range(n)]
    elif isinstance(run_id, str):
        ids = [run_id.format(index=i, item=item) for i, item in enumerate(items)]
    elif callable(run_id):
        ids = [run_id(item) for item in items]
    else:
        raise ValueError(f"run_id must be None, a format string or a callable item -> id, got {run_id!r}")
    ids = [check_run_id(r) for r in ids]
    if len(set(ids)) != n:
        seen: set[str] = set()
        dup = sorted({r for r in ids if r in seen or seen.add(r)})
        raise ValueError(f"run_many: items map to duplicate run ids {dup[:5]}; make run_id give distinct ids")
    return ids


def run_many(
    exp: Any,
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    executor: Any = None,
    *,
    run_id: str | Callable[[Any], str] | None = None,
    diagnostics: DiagnosticsConfig | None = None,
    save_kwargs: Mapping[str, Any] | None = None,
    progress: bool | Callable[[int, int, dict], None] | None = None,
    reclaim: bool = False,
    stale_after_s: float | None = None,
    check_items: bool = True,
    max_in_flight: int | None = None,
    raise_on_error: bool = False,
) -> CampaignResult:
    """Run ``fn(item)`` for every item whose run is not complete yet, writing one run per item.

    Args:
      exp: the :class:`~gnomon.Experiment`.
      fn: ``fn(item) -> Trace | (Trace, meta) | dict``; the dict has ``"trace"`` and optionally ``"layout"``,
        ``"meta"``, ``"summary"``, ``"crlb"``, ``"truth"``, ``"extra_arrays"``, ``"extra_meta"`` (keywords of
        :func:`gnomon.save_run`: ``crlb`` and ``truth`` give the per-parameter summary keys) and the diagnostics
        sources ``"objective"``, ``"curvature"``, ``"precond"``, ``"signals"``, ``"handoff"`` (docs/experiments.md);
        another key is an error naming the allowed ones. With a process pool or Dask it must be picklable (a
        module-level function); its result is written in the worker, so traces never travel back.
      items: the campaign's items (settings, seeds, epochs...). JSON-able items are recorded in meta.json
        (``campaign.item``) with a fingerprint, so a resume can check they did not change.
      executor: None (run here, one by one) or any ``concurrent.futures.Executor``: a
        ``ProcessPoolExecutor`` (use ``mp_context=multiprocessing.get_context("spawn")`` with JAX), a
        ``ThreadPoolExecutor``, or a Dask ``Client(...).get_executor()`` for many machines.
      run_id: ids of the runs: None gives ``item-000000``, ``item-000001``... by position; a format string
        with ``{index}`` and ``{item}`` (``"seed{item[seed]}"``); or a callable ``item -> id``.
      diagnostics: :class:`DiagnosticsConfig` of every run (default: the experiment's).
      save_kwargs: more keyword arguments of :func:`gnomon.save_run` (``compress``, ``fsync``, ...);
        ``crlb`` and ``truth`` there may be one for every item or a sequence with one per item (``None`` where
        an item has none). What ``fn`` returns for an item wins over them.
      progress: a bar on stderr (True; None: only on a terminal) or a callable
        ``progress(done, total, record)`` called as each item finishes.
      reclaim: take over incomplete runs held from *another host* (whose writer cannot be checked: use
        after a machine was lost). Runs held by live local processes are never taken.
      stale_after_s: treat any claim older than this as abandoned.
      check_items: verify that complete runs were made from the same items (their recorded fingerprints);
        a mismatch (items reordered or changed with positional ids) raises before anything runs.
      max_in_flight: tasks submitted at once (default 64).
      raise_on_error: raise a RuntimeError after the campaign if any item failed.

    Returns:
      a :class:`CampaignResult` (completed, skipped, failed with messages, busy).
    """
    start = time.perf_counter()
    items = list(items)
    ids = _ids_for(items, run_id)
    runs_dir = Path(exp.runs_dir)
    result = CampaignResult(total=len(items))
    todo = _todo(runs_dir, ids, items, result, check_items)
    diag, skw, per_item = _task_settings(diagnostics, save_kwargs, len(items))
    limit = 64 if max_in_flight is None else positive_int(max_in_flight, "max_in_flight")
    recorder = _Recorder(result, len(todo), progress)

    def args(i, rid, item):
        kw = {**skw, **{k: v[i] for k, v in per_item.items() if v[i] is not None}} if per_item else skw
        return (str(runs_dir), rid, i, item, fn, diag, kw, reclaim, stale_after_s)

    try:
        if executor is None:
            for i, rid, item in todo:
                recorder(run_item(*args(i, rid, item)))
        else:
            _run_on(executor, todo, args, recorder, limit)
    finally:
        recorder.close()
    result.runtime_s = time.perf_counter() - start
    if raise_on_error and (result.failed or result.busy):
        first = next(iter({**result.failed, **result.busy}.items()))
        raise RuntimeError(f"run_many: {len(result.failed)} failed, {len(result.busy)} busy; first: {first}")
    return result


def _todo(runs_dir: Path, ids: list[str], items: list[Any], result: CampaignResult,
          check_items: bool) -> list[tuple[int, str, Any]]:
    """``[(index, run id, item)]`` of the items whose run is not complete; complete ones go to
    ``result.skipped`` (a dead writer's claim left beside summary.json is dropped). With ``check_items``, a
    complete run made from another item (a recorded fingerprint that differs) raises before anything runs."""
    todo = []
    mismatched = []
    for i, (rid, item) in enumerate(zip(ids, items)):
        d = runs_dir / rid
        if (d / SUMMARY_FILE).exists():
            result.skipped.append(rid)
            if (d / CLAIM_FILE).exists():  # its writer died between summary.json and releasing the claim
                from gnomon.experiment.run_writer import drop_dead_claim

                drop_dead_claim(d)
            if check_items and _other_item(d, item):
                mismatched.append(rid)
        else:
            todo.append((i, rid, item))
    if mismatched:
        raise ValueError(
            f"run_many: {len(mismatched)} complete run(s) were made from different items than given now "
            f"(e.g. {mismatched[:3]}): the items changed or were reordered. Use run_id= to tie ids to items, "
            "another experiment, or check_items=False"
        )
    return todo


def _other_item(run_dir: Path, item: Any) -> bool:
    """True when the complete run in ``run_dir`` recorded the fingerprint of another item than ``item`` (an item
    that is not JSON-able, or a run without a readable record, is not judged)."""
    _, h = item_fingerprint(item)
    if h is None:
        return False
    try:
        recorded = (read_json(run_dir / META_FILE).get("campaign") or {}).get("item_hash")
    except ArtifactError:
        recorded = None
    return recorded is not None and recorded != h


def _task_settings(diagnostics: Any, save_kwargs: Mapping[str, Any] | None,
                   n: int) -> tuple[dict[str, Any] | None, dict[str, Any], dict[str, list]]:
    """``(diagnostics as a dict or None, save_run keywords, {"crlb" / "truth": one per item})`` that travel to
    every task; keywords run_many sets itself are refused."""
    if diagnostics is not None and not isinstance(diagnostics, DiagnosticsConfig):
        raise ValueError(f"diagnostics must be a DiagnosticsConfig, got {type(diagnostics).__name__}")
    diag = diagnostics.to_dict() if diagnostics is not None and diagnostics.enabled else None
    skw = dict(save_kwargs or {})
    bad = sorted(set(skw) & {"overwrite", "run_id", "extra_meta"})
    if bad:
        raise ValueError(f"save_kwargs {bad} are set by run_many")
    from gnomon.experiment.batch_writer import per_member_values

    per_item = {k: per_member_values(f"save_kwargs[{k!r}]", skw.pop(k), n, "item")
                for k in ("crlb", "truth") if k in skw}
    return diag, skw, per_item


class _Recorder:
    """Files each task's status record in the :class:`CampaignResult` and reports progress (a bar on stderr,
    or the user's ``progress(done, total, record)``)."""

    def __init__(self, result: CampaignResult, total: int, progress: Any):
        from gnomon.util.progress import Progress

        self.result, self.total, self.progress, self.done = result, total, progress, 0
        self.bar = None if callable(progress) else Progress(total, "campaign", enabled=progress)

    def __call__(self, rec: dict[str, Any]) -> None:
        result = self.result
        self.done += 1
        state, rid = rec["state"], rec["run_id"]
        if state == "done":
            result.completed.append(rid)
        elif state == "skipped":
            result.skipped.append(rid)
        elif state == "busy":
            result.busy[rid] = rec.get("message", "")
        else:
            result.failed[rid] = rec.get("message", "")
        if callable(self.progress):
            self.progress(self.done, self.total, rec)
        elif self.bar is not None:
            self.bar.update(self.done, ok=len(result.completed), failed=len(result.failed))

    def close(self) -> None:
        if self.bar is not None:
            r = self.result
            self.bar.close(f"{len(r.completed)} done, {len(r.skipped)} skipped, {len(r.failed)} failed")


def _run_on(executor: Any, todo: list[tuple[int, str, Any]], args: Callable, record: Callable,
            limit: int) -> None:
    """Run the tasks on a ``concurrent.futures`` executor, at most ``limit`` in flight; a task the executor
    cannot take (a broken pool) and every one after it is recorded as failed, as is a task that failed in
    the executor (a dead worker, an unpicklable ``fn``)."""
    queue = list(reversed(todo))
    in_flight: dict[Any, str] = {}
    broken: str | None = None
    while queue or in_flight:
        while queue and len(in_flight) < limit and broken is None:
            i, rid, item = queue.pop()
            try:
                in_flight[executor.submit(run_item, *args(i, rid, item))] = rid
            except Exception as exc:  # noqa: BLE001 - a broken pool: report the rest as failed
                broken = f"executor could not take the task: {type(exc).__name__}: {exc}"
                queue.append((i, rid, item))
        if broken is not None and not in_flight:
            for _, rid, _ in queue:
                record({"run_id": rid, "state": "failed", "message": broken})
            queue.clear()
            break
        finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for fut in finished:
            rid = in_flight.pop(fut)
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - worker died, unpicklable fn, ...
                rec = {
                    "run_id": rid,
                    "state": "failed",
                    "message": f"task failed in the executor: {type(exc).__name__}: {exc}",
                }
            record(rec)
