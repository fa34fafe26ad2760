"""Experiments: a manifest plus many run directories, written safely by many processes at once.

Layout on disk (schema in ``docs/artifacts.md``)::

    <experiment>/
      manifest.json          schema_version, description, sweep / time-series settings, dataset ids,
                             created time, gnomon version (written once, atomically; never rewritten)
      runs/<run_id>/         one run directory per fit (``gnomon.artifacts.run.save_run``)
        trace.npz meta.json summary.json       the default artifacts; summary.json is written last
        .claim.json                            while a writer holds the run (host, pid, start time)
        error.json                             when a campaign item failed (message and traceback)
        diag_steps.jsonl grads.npz ...         optional diagnostics (:class:`DiagnosticsConfig`)

A run is *complete* iff ``summary.json`` exists. Everything else is incomplete: listed by
:meth:`Experiment.incomplete_runs`, skipped (and reported) by :meth:`Experiment.aggregate`, redone by
:meth:`Experiment.run_many` on resume, removable with :meth:`Experiment.sweep_incomplete`.

Concurrency: run directories are created with an atomic ``mkdir`` and owned through an exclusive claim
file (:mod:`gnomon.artifacts.runids`), the manifest is created with an atomic ``link`` (first creator wins,
others read it), and every file is written through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gnomon.artifacts.diagnostics import (
    DIAG_STEPS_FILE,
    DiagnosticsConfig,
    build_diagnostics,
    read_diag_steps,
)
from gnomon.artifacts.jsonio import ArtifactError, read_json, to_jsonable, write_json
from gnomon.artifacts.provenance import package_versions
from gnomon.artifacts.run import SUMMARY_FILE, Run, load_run, save_run
from gnomon.artifacts.runids import (
    CLAIM_FILE,
    check_run_id,
    claim_state,
    describe_claim,
    generate_run_id,
    read_claim,
    release_claim,
    take_over_claim,
    write_claim,
)
from gnomon.trace.trace import Trace

__all__ = ["Experiment", "DiagnosticsConfig", "MANIFEST_SCHEMA_VERSION"]

MANIFEST_FILE = "manifest.json"
RUNS_DIR = "runs"
ERROR_FILE = "error.json"
#: an incomplete run with no claim counts as being written while it changed less than this long ago
UNCLAIMED_GRACE_S = 60.0
#: ... and an empty one (no file, no claim yet) while it was created less than this long ago
EMPTY_GRACE_S = 2.0
MANIFEST_SCHEMA_VERSION = 1
MANIFEST_KIND = "gnomon.experiment"
# Upgrades of older manifests, applied in order on read: {old_version: fn(doc) -> doc of old_version + 1}.
_MANIFEST_UPGRADES: dict[int, Callable[[dict], dict]] = {}
_MANIFEST_RESERVED = ("schema_version", "kind", "created_utc", "gnomon_version")
_MANIFEST_STANDARD = ("description", "sweep", "time_series", "datasets")


# ---------------------------------------------------------------------------------------------- manifest
def _manifest_doc(manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    manifest = dict(manifest or {})
    bad = [k for k in manifest if k in _MANIFEST_RESERVED]
    if bad:
        raise ValueError(f"manifest keys {bad} are set by gnomon; leave them out")
    try:
        user = to_jsonable(manifest)
    except TypeError as exc:
        raise ValueError(f"manifest must be JSON-able: {exc}") from None
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "kind": MANIFEST_KIND,
        **{k: user.pop(k, None) for k in _MANIFEST_STANDARD},
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "gnomon_version": package_versions().get("gnomon"),
        **user,
    }


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` iff it does not exist, atomically; True if this call created it."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # readable like any file (umask applies)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            os.link(tmp, path)  # atomic: fails if path exists; readers never see a partial file
            return True
        except FileExistsError:
            return False
        except OSError:  # filesystems without hard links: exclusive create (readers retry a partial read)
            try:
                fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd2, "w", encoding="utf-8") as fh:
                fh.write(text)
            return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def read_manifest(path: str | os.PathLike, *, retries: int = 5) -> dict[str, Any]:
    """Read ``manifest.json``: older schema versions are upgraded, newer ones refused (ArtifactError)."""
    path = Path(path)
    for attempt in range(retries + 1):
        try:
            doc = read_json(path, max_schema=MANIFEST_SCHEMA_VERSION)
            break
        except ArtifactError as exc:
            if "newer" in str(exc) or "missing" in str(exc) or attempt == retries:
                raise
            time.sleep(0.02 * (attempt + 1))  # a creator without hard links may be mid-write
    if doc.get("kind", MANIFEST_KIND) != MANIFEST_KIND:
        raise ArtifactError(f"{path}: not a gnomon experiment manifest (kind {doc.get('kind')!r})")
    version = doc["schema_version"]
    while version < MANIFEST_SCHEMA_VERSION:
        upgrade = _MANIFEST_UPGRADES.get(version)
        if upgrade is not None:
            doc = upgrade(doc)
        version += 1
    doc["schema_version"] = MANIFEST_SCHEMA_VERSION
    return doc


# ---------------------------------------------------------------------------------------------- run claims
def acquire_run(
    run_dir: Path,
    *,
    reclaim: bool = False,
    stale_after_s: float | None = None,
    overwrite: bool = False,
    claim_fresh: bool = True,
    unclaimed_grace_s: float | None = None,
) -> tuple[str, str, str | None]:
    """Take ``run_dir`` for writing: ``(state, message, claim token)``, state one of ``"acquired"`` (we hold
    its claim), ``"fresh"`` (we created it and, as ``claim_fresh=False`` asked, wrote no claim: creating it
    is ownership enough), ``"complete"`` or ``"busy"``.

    * A complete run is left alone unless ``overwrite``.
    * A claim held by another live writer (another process, or another task of this one) or from another
      host (unless ``reclaim``) makes the run busy; a run this process holds for the user
      (:meth:`Experiment.new_run`) is acquired; a stale claim (its process is gone) is taken over.
    * An incomplete run without a claim (its writer created the directory and claimed nothing) counts as
      being written while anything in it changed less than ``unclaimed_grace_s`` seconds ago (default
      :data:`UNCLAIMED_GRACE_S`); after that it is taken over (``overwrite`` takes it at once).
    * What a crashed writer left in a run that is taken over is cleared first."""
    grace = UNCLAIMED_GRACE_S if unclaimed_grace_s is None else unclaimed_grace_s
    try:
        os.mkdir(run_dir)
        created = True
    except FileExistsError:
        if not run_dir.is_dir():
            raise NotADirectoryError(f"{run_dir}: exists and is not a directory") from None
        created = False
    if created and not claim_fresh:
        return "fresh", "", None
    # Even a directory we just created may have been claimed (and finished) by another writer between our
    # mkdir and our claim: the general path below re-checks after claiming.
    took_over = False
    for _ in range(5):
        if not overwrite and (run_dir / SUMMARY_FILE).exists():
            return "complete", f"{run_dir.name}: already complete", None
        if not created and read_claim(run_dir) is None:
            # unclaimed and incomplete: a failed attempt (error.json) is free; else give its writer a grace
            quiet, limit = _unclaimed_grace(run_dir, grace)
            if quiet < limit and not overwrite and not (run_dir / ERROR_FILE).exists():
                return (
                    "busy",
                    (
                        f"run {run_dir.name!r} is being written without a claim (last change {quiet:.1f} s "
                        f"ago); if its writer is gone, it is free after {limit:g} s (or sweep_incomplete())"
                    ),
                    None,
                )
            took_over = True
        mine = write_claim(run_dir)
        if mine is not None:
            break
        took_over = False
        rec = read_claim(run_dir)
        if rec is None:
            continue  # released meanwhile: look again
        state = claim_state(run_dir, rec, stale_after_s=stale_after_s)
        if state == "mine":
            mine = rec
            break
        if state == "stale" or (reclaim and state == "foreign"):
            mine = take_over_claim(run_dir)
            if mine is None:
                continue  # another writer took it over first
            took_over = True
            break
        return "busy", f"run {run_dir.name!r} is being written by {describe_claim(rec)}", None
    else:
        return "busy", f"run {run_dir.name!r} is contended by other writers", None
    token = mine["token"]
    if not overwrite and (run_dir / SUMMARY_FILE).exists():  # completed while we were claiming it
        release_claim(run_dir, token)
        return "complete", f"{run_dir.name}: already complete", None
    if took_over and not overwrite:
        _clear_partial(run_dir)
    return "acquired", "", token


def _quiet_for(run_dir: Path) -> tuple[float, int]:
    """``(seconds since anything in run_dir last changed, number of entries other than temporary files)``."""
    n = 0
    try:
        newest = os.stat(run_dir).st_mtime
        with os.scandir(run_dir) as it:
            for e in it:
                if not (e.name.startswith(".") and ".tmp-" in e.name):  # temporary files do not count
                    n += 1
                try:
                    newest = max(newest, e.stat(follow_symlinks=False).st_mtime)
                except FileNotFoundError:
                    pass
    except FileNotFoundError:
        return 0.0, 0
    return max(0.0, time.time() - newest), n


def _unclaimed_grace(run_dir: Path, grace: float) -> tuple[float, float]:
    """``(quiet seconds, grace)`` of an unclaimed incomplete run: an *empty* one (nothing but temporary
    files: its writer died between creating it and finishing its first file or claim) gets
    :data:`EMPTY_GRACE_S`, one with files :data:`UNCLAIMED_GRACE_S` (or ``grace``)."""
    quiet, n = _quiet_for(run_dir)
    return quiet, (min(grace, EMPTY_GRACE_S) if n == 0 else grace)


def _clear_partial(run_dir: Path) -> None:
    """Remove what a crashed attempt left in an incomplete run (everything but our claim)."""
    for entry in os.scandir(run_dir):
        if entry.name == CLAIM_FILE:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            pass


def write_run(
    run_dir: Path,
    run_id: str,
    trace: Trace,
    *,
    layout: Any = None,
    meta: Mapping[str, Any] | None = None,
    diagnostics: DiagnosticsConfig | None = None,
    objective: Any = None,
    curvature: Any = None,
    precond: Any = None,
    signals: Any = None,
    handoff: Any = None,
    extra_arrays: Mapping[str, Mapping[str, Any]] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    release: bool = True,
    fresh: bool = False,
    token: str | None = None,
    **save_kwargs: Any,
) -> Path:
    """Write a claimed run directory (diagnostics, then the artifacts, summary.json last) and release the
    claim.

    ``fresh=True``: the caller just created ``run_dir`` (empty, unclaimed); else ``token`` is the claim's
    (from :func:`acquire_run`). On an exception a fresh directory is removed again; a claimed run stays
    incomplete and its claim is released (unless ``release=False``: the caller then records the error
    first)."""
    try:
        if not fresh:
            try:
                os.unlink(run_dir / ERROR_FILE)
            except FileNotFoundError:
                pass
        cfg = diagnostics if diagnostics is not None else DiagnosticsConfig()
        if not isinstance(cfg, DiagnosticsConfig):
            raise ValueError(f"diagnostics must be a DiagnosticsConfig, got {type(cfg).__name__}")
        extra_arrays = dict(extra_arrays or {})
        extra_meta = dict(extra_meta or {})
        if cfg.enabled:
            if not isinstance(trace, Trace) or trace.is_batched:
                raise ValueError("diagnostics are written for one (unbatched) Trace per run")
            arrays, diag_meta = build_diagnostics(
                run_dir,
                trace,
                cfg,
                layout=layout if layout is not None else trace.layout,
                objective=objective,
                curvature=curvature,
                precond=precond,
                signals=signals,
                handoff=handoff,
            )
            clash = sorted(set(arrays) & set(extra_arrays))
            if clash:
                raise ValueError(f"extra_arrays {clash} clash with diagnostics files of the same name")
            extra_arrays.update(arrays)
            extra_meta["diagnostics"] = diag_meta
        save_run(
            run_dir,
            trace,
            layout,
            meta,
            run_id=run_id,
            extra_arrays=extra_arrays or None,
            extra_meta=extra_meta or None,
            **save_kwargs,
        )
    except BaseException:
        if fresh:  # we created it and nobody else writes into an unclaimed fresh run: leave no trace
            shutil.rmtree(run_dir, ignore_errors=True)
        elif release:
            release_claim(run_dir, token)
        raise
    if not fresh:
        release_claim(run_dir, token)
    return run_dir


def write_error(run_dir: Path, run_id: str, exc: BaseException) -> None:
    """Record why a run failed (``error.json``); best effort, never raises."""
    try:
        write_json(
            run_dir / ERROR_FILE,
            {
                "run_id": run_id,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": "".join(traceback.format_exception(exc)),
                "written_utc_unix": time.time(),
            },
        )
    except Exception:  # noqa: BLE001 - reporting must not mask the original error
        pass


# ---------------------------------------------------------------------------------------------- Experiment
class Experiment:
    """A directory of runs with a manifest: create, write, list, load, aggregate, run campaigns.

    Args:
      path: experiment directory; created (with ``runs/``) if missing unless ``create=False``.
      manifest: settings recorded once in ``manifest.json`` when the experiment is created:
        ``description``, ``sweep`` (the swept settings), ``time_series`` (epochs, cadence, ...),
        ``datasets`` (identifiers), and any other JSON-able keys. Opening an existing experiment never
        rewrites its manifest; keys given here must then agree with the stored ones (ValueError otherwise).
      diagnostics: default :class:`DiagnosticsConfig` of runs written through this object.
      create: False to open an existing experiment only (FileNotFoundError if there is none).

    Safe with many writers at once: the first creator writes the manifest, the others read it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        manifest: Mapping[str, Any] | None = None,
        *,
        diagnostics: DiagnosticsConfig | None = None,
        create: bool = True,
    ):
        self.path = Path(path)
        self.runs_dir = self.path / RUNS_DIR
        if diagnostics is not None and not isinstance(diagnostics, DiagnosticsConfig):
            raise ValueError(f"diagnostics must be a DiagnosticsConfig, got {type(diagnostics).__name__}")
        self.diagnostics = diagnostics or DiagnosticsConfig()
        mpath = self.path / MANIFEST_FILE
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.path}: exists and is not a directory")
        if not create:
            if not self.path.is_dir() or not (mpath.exists() or self.runs_dir.is_dir()):
                raise FileNotFoundError(f"{self.path}: no gnomon experiment here (no manifest.json or runs/)")
            self.manifest = read_manifest(mpath) if mpath.exists() else None
            if manifest is not None:
                self._check_manifest_agrees(manifest)
            return
        doc = _manifest_doc(manifest)  # validate before touching the disk
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        if not mpath.exists():
            _create_exclusive(mpath, json.dumps(doc, indent=1, allow_nan=False) + "\n")
        self.manifest = read_manifest(mpath)
        if manifest is not None:
            self._check_manifest_agrees(manifest)

    def _check_manifest_agrees(self, manifest: Mapping[str, Any]) -> None:
        stored = self.manifest or {}
        for key, value in to_jsonable(dict(manifest)).items():
            if stored.get(key) != value:
                raise ValueError(
                    f"{self.path / MANIFEST_FILE}: this experiment already exists with "
                    f"{key}={stored.get(key)!r}, "
                    f"not {value!r}; open it with manifest=None or use another directory"
                )

    def __repr__(self) -> str:
        return f"Experiment({str(self.path)!r})"

    # ------------------------------------------------------------------ run directories
    def run_dir(self, run_id: str) -> Path:
        """Path of run ``run_id`` (validated; it may not exist yet)."""
        return self.runs_dir / check_run_id(run_id)

    def new_run(self, run_id: str | None = None) -> Path:
        """Create and claim a new run directory; return its path.

        ``run_id=None`` generates a unique id (``YYYYmmddTHHMMSS-<12 hex>``). A given id must be a safe name
        (:func:`gnomon.artifacts.runids.check_run_id`); if it exists already — or another process creates
        it at the same moment — a FileExistsError says so (exactly one creator wins)."""
        if run_id is None:
            for _ in range(16):
                d = self.runs_dir / generate_run_id()
                try:
                    os.mkdir(d)
                except FileExistsError:
                    continue
                if write_claim(d, hold=True) is not None:
                    return d
            raise RuntimeError(f"{self.runs_dir}: could not create a fresh run id")  # pragma: no cover
        d = self.run_dir(run_id)
        try:
            os.mkdir(d)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.runs_dir}: experiment runs directory is missing") from None
        except FileExistsError:
            raise FileExistsError(
                f"run id {run_id!r} is already taken in {self.path} ({self._state_words(d)})"
            ) from None
        if write_claim(d, hold=True) is None:
            raise FileExistsError(
                f"run id {run_id!r} in {self.path} was claimed by {describe_claim(read_claim(d))}"
            )
        return d

    def _state_words(self, d: Path) -> str:
        if (d / SUMMARY_FILE).exists():
            return "a complete run"
        rec = read_claim(d)
        state = claim_state(d, rec)
        if state in ("live", "foreign", "mine"):
            return f"being written by {describe_claim(rec)}"
        return "an incomplete run; sweep_incomplete() removes it"

    def save(
        self,
        run_id: str | None,
        trace: Trace,
        layout: Any = None,
        meta: Mapping[str, Any] | None = None,
        *,
        diagnostics: DiagnosticsConfig | None = None,
        objective: Any = None,
        curvature: Any = None,
        precond: Any = None,
        signals: Any = None,
        handoff: Any = None,
        overwrite: bool = False,
        **save_run_kwargs: Any,
    ) -> Path:
        """Write ``trace`` as run ``run_id`` (``None``: a new generated id) and return the run directory.

        The run may be new, or one this process created with :meth:`new_run`, or an incomplete run whose
        writer is gone; a complete run is refused unless ``overwrite=True``, a run held by another live
        writer always. ``diagnostics`` (default: the experiment's) selects optional files; ``objective``,
        ``curvature``, ``precond``, ``signals`` and ``handoff`` are their sources. Other keyword arguments
        go to :func:`gnomon.save_run` (``summary``, ``extra_arrays``, ``extra_meta``, ``arviz``,
        ``compress``, ``fsync``)."""
        if not isinstance(trace, Trace):
            raise ValueError(f"save expects a gnomon.Trace, got {type(trace).__name__}")
        if trace.is_batched:
            raise ValueError(
                "save writes one fit; a batched trace is B runs: use Experiment.save_batch or save trace[i]"
            )
        if not isinstance(trace, Trace):
            raise ValueError(f"save expects a gnomon.Trace, got {type(trace).__name__}")
        if trace.is_batched:
            raise ValueError(
                "save writes one fit; a batched trace is B runs: use Experiment.save_batch or save trace[i]"
            )
        if run_id is None:
            for _ in range(16):
                d = self.runs_dir / generate_run_id()
                state, msg, token = acquire_run(d, claim_fresh=False)
                if state == "fresh":
                    break
            else:  # pragma: no cover
                raise RuntimeError(f"{self.runs_dir}: could not create a fresh run id")
        else:
            d = self.run_dir(run_id)
            state, msg, token = acquire_run(d, overwrite=overwrite, claim_fresh=False)
        run_id = d.name
        if state == "complete":
            raise FileExistsError(f"run {run_id!r} in {self.path} is already complete; pass overwrite=True")
        if state == "busy":
            raise FileExistsError(msg)
        return write_run(
            d,
            run_id,
            trace,
            layout=layout,
            meta=meta,
            diagnostics=diagnostics if diagnostics is not None else self.diagnostics,
            objective=objective,
            curvature=curvature,
            precond=precond,
            signals=signals,
            handoff=handoff,
            overwrite=overwrite,
            fresh=state == "fresh",
            token=token,
            **save_run_kwargs,
        )

    def save_batch(
        self,
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
        """Write a batched trace (``theta`` ``(B, T, D)``, e.g. from ``gn.optimize_batch``) as B runs.

        Args:
          trace: a batched optimization Trace; member ``i`` is ``trace[i]`` (trimmed to its own rows).
          run_ids: B safe ids; default ``<prefix or generated batch id>-<i>`` (zero-padded).
          meta, summary: one mapping for every member, or a sequence of B mappings.
          prefix: batch id used in generated run ids (itself validated); default a fresh generated id.
        All B directories are created (atomically) before anything is written; if any id is taken, none is
        written and a FileExistsError lists the taken ids. If writing member i fails, members before it stay
        complete and the directories of i and later are removed. Each member's meta.json records
        ``batch: {batch_id, index, size}``."""
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
        dirs = [self.runs_dir / r for r in run_ids]
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
                shutil.rmtree(d, ignore_errors=True)
            raise FileExistsError(
                f"save_batch: run ids already taken in {self.path}: {taken[:10]}"
                + (f" and {len(taken) - 10} more" if len(taken) > 10 else "")
            )
        host = trace.to_numpy()
        cfg = diagnostics if diagnostics is not None else self.diagnostics
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
                    **save_run_kwargs,
                )
            except BaseException:
                for rest in dirs[i + 1 :]:  # created for this batch, still empty
                    shutil.rmtree(rest, ignore_errors=True)
                raise
        return dirs

    # ------------------------------------------------------------------ listing and loading
    def _entries(self) -> list[os.DirEntry]:
        try:
            it = os.scandir(self.runs_dir)
        except FileNotFoundError:
            return []
        with it:
            return [e for e in it if not e.name.startswith(".") and e.is_dir()]

    def runs(self) -> list[str]:
        """Ids of the complete runs (those with summary.json), sorted."""
        return sorted(e.name for e in self._entries() if os.path.exists(os.path.join(e.path, SUMMARY_FILE)))

    def incomplete_runs(self, detail: bool = False) -> list[str] | list[dict[str, Any]]:
        """Ids of the runs without summary.json (in progress, crashed or failed), sorted.

        ``detail=True`` gives dicts ``{run_id, state, claim, error}``: ``state`` is ``"in_progress"`` (a live
        writer holds it), ``"foreign"`` (held from another host), ``"failed"`` (a campaign recorded
        error.json) or ``"abandoned"``; ``error`` the recorded message."""
        ids = sorted(
            e.name for e in self._entries() if not os.path.exists(os.path.join(e.path, SUMMARY_FILE))
        )
        if not detail:
            return ids
        out = []
        for rid in ids:
            d = self.runs_dir / rid
            rec = read_claim(d)
            state = claim_state(d, rec)
            err = None
            if (d / ERROR_FILE).exists():
                try:
                    err = read_json(d / ERROR_FILE).get("error")
                except ArtifactError as exc:
                    err = str(exc)
            words = {"live": "in_progress", "mine": "in_progress", "foreign": "foreign"}.get(state)
            if words is None:
                quiet, limit = _unclaimed_grace(d, UNCLAIMED_GRACE_S) if state == "none" else (0.0, 0.0)
                if err:
                    words = "failed"
                elif quiet < limit:
                    words = "in_progress"  # an unclaimed writer (save / save_batch) changed it just now
                else:
                    words = "abandoned"
            out.append({"run_id": rid, "state": words, "claim": rec, "error": err})
        return out

    def sweep_incomplete(
        self,
        *,
        min_age_s: float = UNCLAIMED_GRACE_S,
        force: bool = False,
        dry_run: bool = False,
        temp_files: bool = True,
    ) -> list[str]:
        """Delete incomplete runs whose writer is gone; return their ids.

        * claimed runs (:meth:`new_run`, :meth:`run_many`): removed when the claiming process is gone
          (same host); runs held by a live writer are never touched; runs held from another host only with
          ``force=True``;
        * unclaimed runs (:meth:`save` / :meth:`save_batch` own a fresh directory by creating it and write
          no claim; plain ``save_run``): removed only when untouched for ``min_age_s`` seconds.

        ``temp_files`` also removes orphan temporary files (``.*.tmp-*``) older than ``min_age_s`` that a
        crash can leave inside complete runs. ``dry_run`` only lists what would go."""
        now = time.time()
        removed = []
        for rid in self.incomplete_runs():
            d = self.runs_dir / rid
            rec = read_claim(d)
            state = claim_state(d, rec)
            if state in ("live", "mine") or (state == "foreign" and not force):
                continue
            if state == "none":
                try:
                    newest = max([os.stat(d).st_mtime] + [e.stat().st_mtime for e in os.scandir(d)])
                except FileNotFoundError:
                    continue
                if now - newest < min_age_s:
                    continue
            if dry_run:
                removed.append(rid)
                continue
            # hold the run while removing it, so that a resuming writer cannot start on it meanwhile
            if (write_claim(d) if state == "none" else take_over_claim(d)) is None:
                continue
            grave = self.runs_dir / f".swept-{rid}-{secrets.token_hex(4)}"
            try:
                os.rename(d, grave)
            except OSError:
                continue
            shutil.rmtree(grave, ignore_errors=True)
            removed.append(rid)
        if temp_files and not dry_run:
            self._sweep_temp_files(now - min_age_s)
        return removed

    def _sweep_temp_files(self, before: float) -> None:
        for e in self._entries():
            try:
                with os.scandir(e.path) as it:
                    for f in it:
                        if f.name.startswith(".") and (
                            ".tmp-" in f.name or f.name.startswith(".claim.stale-")
                        ):
                            if f.stat().st_mtime <= before:
                                os.unlink(f.path)
            except OSError:
                continue

    def load(self, run_id: str, **kwargs: Any) -> Run:
        """Load run ``run_id`` (:func:`gnomon.load_run`)."""
        return load_run(self.run_dir(run_id), **kwargs)

    def load_diag_steps(self, run_id: str) -> list[dict[str, Any]]:
        """Records of a run's ``diag_steps.jsonl`` (a torn last line is skipped)."""
        path = self.run_dir(run_id) / DIAG_STEPS_FILE
        if not path.exists():
            raise ArtifactError(f"{path}: file is missing (diagnostics were off for this run?)")
        return read_diag_steps(path)

    def __contains__(self, run_id: object) -> bool:
        return isinstance(run_id, str) and (self.runs_dir / run_id / SUMMARY_FILE).exists()

    # ------------------------------------------------------------------ tables and campaigns
    def aggregate(
        self,
        meta_keys: Sequence[str] = (),
        output: str | os.PathLike | None = None,
        *,
        on_problem: str = "warn",
        workers: int | None = None,
    ):
        """One row per complete run, as a pandas DataFrame (:func:`gnomon.artifacts.aggregate.aggregate`)."""
        from gnomon.artifacts.aggregate import aggregate

        return aggregate(
            self.runs_dir, meta_keys=meta_keys, output=output, on_problem=on_problem, workers=workers
        )

    def run_many(self, fn: Callable[[Any], Any], items: Sequence[Any], executor: Any = None, **kwargs: Any):
        """One fit per item, skipping complete runs; see :func:`gnomon.artifacts.campaign.run_many`."""
        from gnomon.artifacts.campaign import run_many

        kwargs.setdefault("diagnostics", self.diagnostics)
        return run_many(self, fn, items, executor=executor, **kwargs)


def _member(batch: Trace, i: int, b: int) -> Trace:
    """Member ``i`` of a batch, with the per-member engine outputs in ``extras`` (arrays with a leading
    axis of size B, e.g. the curvature and lr_vec of ``gn.optimize_batch``) cut to that member."""
    member = batch[i]
    cut = {
        k: v[i] for k, v in member.extras.items() if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == b
    }
    return dataclasses.replace(member, extras={**member.extras, **cut}) if cut else member


def _per_member(name: str, value: Any, b: int) -> list[Mapping[str, Any] | None]:
    if value is None or isinstance(value, Mapping):
        return [value] * b
    seq = list(value)
    if len(seq) != b:
        raise ValueError(f"save_batch: {name} must be one mapping or {b} mappings, got {len(seq)}")
    return seq
