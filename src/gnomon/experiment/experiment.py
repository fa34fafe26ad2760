"""Experiments: a manifest plus many run directories, written safely by many processes at once.

Layout on disk (schema in ``docs/artifacts.md``)::

    <experiment>/
      manifest.json          schema_version, description, sweep / time-series settings, dataset ids,
                             created time, gnomon version (written once, atomically; never rewritten)
      runs/<run_id>/         one run directory per fit (``gnomon.io.run.save_run``)
        trace.npz meta.json summary.json       the default artifacts; summary.json is written last
        .claim.json                            while a writer holds the run (host, pid, start time)
        error.json                             when a campaign item failed (message and traceback)
        diag_steps.jsonl grads.npz ...         optional diagnostics (:class:`DiagnosticsConfig`)

A run is *complete* iff ``summary.json`` exists. Everything else is incomplete: listed by
:meth:`Experiment.incomplete_runs`, skipped (and reported) by :meth:`Experiment.aggregate`, redone by
:meth:`Experiment.run_many` on resume, removable with :meth:`Experiment.sweep_incomplete`.

Concurrency: run directories are created with an atomic ``mkdir`` and owned through an exclusive claim
file (:mod:`gnomon.io.runids`), the manifest is created with an atomic ``link`` (first creator wins,
others read it), and every file is written through a temporary file and ``os.replace``.

This module is the :class:`Experiment` façade; the work is done by :mod:`gnomon.experiment.manifest`
(the manifest), :mod:`gnomon.experiment.run_writer` (taking and writing one run),
:mod:`gnomon.experiment.batch_writer` (a batched trace as B runs) and :mod:`gnomon.experiment.incomplete`
(states of incomplete runs, sweeping).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gnomon.experiment.batch_writer import save_batch
from gnomon.experiment.incomplete import incomplete_state, sweep_runs, sweep_staging_dirs, sweep_temp_files
from gnomon.experiment.manifest import (
    MANIFEST_FILE,
    MANIFEST_SCHEMA_VERSION,
    check_manifest_agrees,
    create_manifest,
    manifest_doc,
    read_manifest,
)
from gnomon.experiment.run_writer import UNCLAIMED_GRACE_S, acquire_run, write_run
from gnomon.io.diagnostics import DIAG_STEPS_FILE, DiagnosticsConfig, read_diag_steps
from gnomon.io.jsonio import ArtifactError
from gnomon.io.run import SUMMARY_FILE, Run, load_run
from gnomon.io.runids import (
    check_run_id,
    claim_state,
    describe_claim,
    generate_run_id,
    read_claim,
    write_claim,
)
from gnomon.io.status import RunState, check_run
from gnomon.trace.trace import Trace

__all__ = ["Experiment", "DiagnosticsConfig", "MANIFEST_SCHEMA_VERSION"]

RUNS_DIR = "runs"


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
                check_manifest_agrees(mpath, self.manifest, manifest)
            return
        doc = manifest_doc(manifest)  # validate before touching the disk
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        if not mpath.exists():
            create_manifest(mpath, doc)
        self.manifest = read_manifest(mpath)
        if manifest is not None:
            check_manifest_agrees(mpath, self.manifest, manifest)

    def __repr__(self) -> str:
        return f"Experiment({str(self.path)!r})"

    # ------------------------------------------------------------------ run directories
    def run_dir(self, run_id: str) -> Path:
        """Path of run ``run_id`` (validated; it may not exist yet)."""
        return self.runs_dir / check_run_id(run_id)

    def new_run(self, run_id: str | None = None) -> Path:
        """Create and claim a new run directory; return its path.

        ``run_id=None`` generates a unique id (``YYYYmmddTHHMMSS-<12 hex>``). A given id must be a safe name
        (:func:`gnomon.io.runids.check_run_id`); if it exists already — or another process creates
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
            raise FileExistsError(f"run id {run_id!r} in {self.path} was claimed by {describe_claim(read_claim(d))}")
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
        go to :func:`gnomon.save_run` (``summary``, ``crlb``, ``truth``, ``extra_arrays``, ``extra_meta``,
        ``arviz``, ``compress``, ``fsync``)."""
        if not isinstance(trace, Trace):
            raise ValueError(f"save expects a gnomon.Trace, got {type(trace).__name__}")
        if trace.is_batched:
            raise ValueError(
                "save writes one fit; a batched trace is B runs: use Experiment.save_batch or save trace[i]"
            )
        if run_id is None:
            # a generated id (48 random bits) is free: the staged run is renamed onto it, atomically, and that
            # rename fails if another writer took the name meanwhile (nothing is reserved beforehand)
            d = self.runs_dir / generate_run_id()
            state, msg, token = "absent", "", None
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
          crlb, truth (keywords): one for every member (as :func:`gnomon.save_run` takes them) or a sequence of
            B, one per member (``crlb=[cr_0, cr_1, ...]``, ``truth=[t_0, ...]`` or a ``(B, D)`` array of base θ).
        Other keywords go to :func:`gnomon.save_run`. All B directories are created (atomically) before anything
        is written; if any id is taken, none is written and a FileExistsError lists the taken ids. If writing
        member i fails, members before it stay complete and the directories of i and later are removed. Each
        member's meta.json records ``batch: {batch_id, index, size}``."""
        return save_batch(
            self,
            trace,
            run_ids,
            layout,
            meta,
            summary=summary,
            prefix=prefix,
            diagnostics=diagnostics,
            **save_run_kwargs,
        )

    # ------------------------------------------------------------------ listing and loading
    def _entries(self) -> list[os.DirEntry]:
        try:
            it = os.scandir(self.runs_dir)
        except FileNotFoundError:
            return []
        with it:
            return [e for e in it if not e.name.startswith(".") and e.is_dir()]

    def runs(self) -> list[str]:
        """Ids of the runs with summary.json, sorted (a quick listing; :meth:`run_states` also tells complete
        runs from corrupt ones, as :meth:`aggregate` and :func:`gnomon.load_run` do)."""
        return sorted(e.name for e in self._entries() if os.path.exists(os.path.join(e.path, SUMMARY_FILE)))

    def run_states(self, *, workers: int | None = None) -> list[RunState]:
        """The state of every run, sorted by id: a :class:`~gnomon.io.status.RunState` with ``state``
        ``"complete"``, ``"incomplete"``, ``"corrupt"`` or ``"newer_schema"`` and, when not complete, the
        ``file`` at fault and the ``reason`` — the classification :func:`gnomon.load_run`,
        :meth:`aggregate` and ``gnomon show`` share (:func:`gnomon.io.status.check_run`)."""
        names = sorted(e.name for e in self._entries())
        paths = [self.runs_dir / n for n in names]
        if len(paths) < 256 or workers == 1:
            return [check_run(p) for p in paths]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, int(workers or 8))) as pool:
            return list(pool.map(check_run, paths))

    def incomplete_runs(self, detail: bool = False) -> list[str] | list[dict[str, Any]]:
        """Ids of the runs without summary.json (in progress, crashed or failed), sorted.

        ``detail=True`` gives dicts ``{run_id, state, claim, error}``: ``state`` is ``"in_progress"`` (a live
        writer holds it), ``"foreign"`` (held from another host), ``"failed"`` (a campaign recorded
        error.json) or ``"abandoned"``; ``error`` the recorded message."""
        ids = sorted(e.name for e in self._entries() if not os.path.exists(os.path.join(e.path, SUMMARY_FILE)))
        if not detail:
            return ids
        return [incomplete_state(self.runs_dir / rid) for rid in ids]

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
        crash can leave inside complete runs, and staging directories (``runs/.<id>.tmp-*``) of writers that
        crashed before installing their run. ``dry_run`` only lists what would go."""
        now = time.time()
        removed = sweep_runs(
            self.runs_dir, self.incomplete_runs(), now=now, min_age_s=min_age_s, force=force, dry_run=dry_run
        )
        if temp_files and not dry_run:
            sweep_temp_files([e.path for e in self._entries()], now - min_age_s)
            sweep_staging_dirs(self.runs_dir, now - min_age_s)
        return removed

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
        params: bool | str | Sequence[str] | None = None,
    ):
        """One row per complete run, as a pandas DataFrame (:func:`gnomon.experiment.aggregate.aggregate`).

        ``params=`` adds per-parameter columns ``estimate.<label>``, ``sd.<label>``, ``crlb.<label>``,
        ``truth.<label>``, ``z.<label>`` (True or ``"all"``, or a list of parameter names / labels)."""
        from gnomon.experiment.aggregate import aggregate

        return aggregate(
            self.runs_dir, meta_keys=meta_keys, output=output, on_problem=on_problem, workers=workers, params=params
        )

    def run_many(self, fn: Callable[[Any], Any], items: Sequence[Any], executor: Any = None, **kwargs: Any):
        """One fit per item, skipping complete runs; see :func:`gnomon.experiment.campaign.run_many`."""
        from gnomon.experiment.campaign import run_many

        kwargs.setdefault("diagnostics", self.diagnostics)
        return run_many(self, fn, items, executor=executor, **kwargs)
