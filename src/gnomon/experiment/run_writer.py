"""Writing one run directory safely while other processes may write the same experiment.

* :func:`acquire_run` takes a run directory for writing: it creates it (atomic ``mkdir``) or claims it
  (:mod:`gnomon.io.runids`), leaves complete runs and runs of live writers alone, and takes over
  what a crashed writer left behind.
* :func:`write_run` writes a run taken that way: the optional diagnostics files
  (:class:`~gnomon.io.diagnostics.DiagnosticsConfig`), then the artifacts of
  :func:`gnomon.io.run.save_run` with ``summary.json`` last, and releases the claim.
* :func:`write_error` records why a run failed (``error.json``), which frees it for the next attempt.

A run without a claim that is not complete counts as being written while it changed recently
(:data:`UNCLAIMED_GRACE_S`; :data:`EMPTY_GRACE_S` while it is still empty): :func:`unclaimed_grace`.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gnomon.io.diagnostics import DiagnosticsConfig, build_diagnostics
from gnomon.io.install import discard_run_dir, remove_run_files
from gnomon.io.jsonio import write_json
from gnomon.io.run import SUMMARY_FILE, write_run_dir
from gnomon.io.runids import (
    CLAIM_FILE,
    claim_state,
    describe_claim,
    read_claim,
    release_claim,
    take_over_claim,
    write_claim,
)
from gnomon.trace.trace import Trace

__all__ = [
    "EMPTY_GRACE_S",
    "ERROR_FILE",
    "UNCLAIMED_GRACE_S",
    "acquire_run",
    "unclaimed_grace",
    "write_error",
    "write_run",
]

ERROR_FILE = "error.json"
#: an incomplete run with no claim counts as being written while it changed less than this long ago
UNCLAIMED_GRACE_S = 60.0
#: ... and an empty one (no file, no claim yet) while it was created less than this long ago
EMPTY_GRACE_S = 2.0


def drop_dead_claim(run_dir: Path) -> None:
    """Remove the claim a writer left on a complete run when it died between writing summary.json and
    releasing the claim (the run is complete either way; the leftover file would stay forever)."""
    if claim_state(run_dir) == "stale":
        try:
            os.unlink(run_dir / CLAIM_FILE)
        except FileNotFoundError:
            pass


def acquire_run(
    run_dir: Path,
    *,
    reclaim: bool = False,
    stale_after_s: float | None = None,
    overwrite: bool = False,
    claim_fresh: bool = True,
) -> tuple[str, str, str | None]:
    """Take ``run_dir`` for writing: ``(state, message, claim token)``, state one of ``"acquired"`` (we hold
    its claim), ``"fresh"`` (we created it and, as ``claim_fresh=False`` asked, wrote no claim: creating it
    is ownership enough), ``"complete"`` or ``"busy"``.

    * A complete run is left alone unless ``overwrite``.
    * A claim held by another live writer (another process, or another task of this one) or from another
      host (unless ``reclaim``) makes the run busy; a run this process holds for the user
      (:meth:`Experiment.new_run`) is acquired; a stale claim (its process is gone) is taken over.
    * An incomplete run without a claim (its writer created the directory and claimed nothing) counts as
      being written while anything in it changed less than :data:`UNCLAIMED_GRACE_S` seconds ago
      (:data:`EMPTY_GRACE_S` while it is empty); after that it is taken over (``overwrite`` takes it at once).
    * What a crashed writer left in a run that is taken over is cleared first."""
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
            drop_dead_claim(run_dir)
            return "complete", f"{run_dir.name}: already complete", None
        if not created and read_claim(run_dir) is None:
            # unclaimed and incomplete: a failed attempt (error.json) is free; else give its writer a grace
            quiet, limit = unclaimed_grace(run_dir)
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


def unclaimed_grace(run_dir: Path) -> tuple[float, float]:
    """``(quiet seconds, grace)`` of an unclaimed incomplete run: an *empty* one (nothing but temporary
    files: its writer died between creating it and finishing its first file or claim) gets
    :data:`EMPTY_GRACE_S`, one with files :data:`UNCLAIMED_GRACE_S`."""
    quiet, n = _quiet_for(run_dir)
    return quiet, (EMPTY_GRACE_S if n == 0 else UNCLAIMED_GRACE_S)


def _clear_partial(run_dir: Path) -> None:
    """Remove what a crashed attempt left in an incomplete run: gnomon's own files but our claim
    (:func:`gnomon.io.install.remove_run_files`); a user's files and folders stay."""
    remove_run_files(run_dir)


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
    """Write a claimed run directory (diagnostics, then the artifacts, summary.json last; all staged and
    installed at once by :func:`gnomon.io.run.write_run_dir`) and release the claim.

    ``fresh=True``: the caller just created ``run_dir`` (empty, unclaimed); else ``token`` is the claim's
    (from :func:`acquire_run`), or None for a run directory that does not exist yet (a generated id). On an
    exception a fresh directory is removed again; a claimed run stays
    incomplete and its claim is released (unless ``release=False``: the caller then records the error
    first)."""
    new = not fresh and token is None  # a run directory that does not exist yet (Experiment.save(None))
    try:
        if not fresh and not new:
            try:
                os.unlink(run_dir / ERROR_FILE)
            except FileNotFoundError:
                pass
        cfg = diagnostics if diagnostics is not None else DiagnosticsConfig()
        if not isinstance(cfg, DiagnosticsConfig):
            raise ValueError(f"diagnostics must be a DiagnosticsConfig, got {type(cfg).__name__}")
        prepare = None
        if cfg.enabled:
            if not isinstance(trace, Trace) or trace.is_batched:
                raise ValueError("diagnostics are written for one (unbatched) Trace per run")

            def prepare(staging: Path) -> tuple[dict[str, Any], dict[str, Any]]:
                arrays, diag_meta = build_diagnostics(
                    staging,
                    trace,
                    cfg,
                    layout=layout if layout is not None else trace.layout,
                    objective=objective,
                    curvature=curvature,
                    precond=precond,
                    signals=signals,
                    handoff=handoff,
                )
                return arrays, {"diagnostics": diag_meta}

        write_run_dir(
            run_dir,
            trace,
            layout,
            meta,
            run_id=run_id,
            extra_arrays=extra_arrays or None,
            extra_meta=extra_meta or None,
            claim_token=token,
            fresh=fresh,
            prepare=prepare,
            **save_kwargs,
        )
    except BaseException:
        if fresh:  # we created it and nobody else writes into an unclaimed fresh run: leave no trace
            discard_run_dir(run_dir)
        elif release and not new:
            release_claim(run_dir, token)
        raise
    if not fresh and not new:
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
