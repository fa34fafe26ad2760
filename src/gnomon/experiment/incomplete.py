"""Incomplete runs of an experiment (no ``summary.json``): what state each is in, and sweeping them away.

* :func:`incomplete_state` classifies one: ``"in_progress"`` (a live writer holds its claim, or an
  unclaimed writer changed it within the grace of :func:`gnomon.experiment.run_writer.unclaimed_grace`),
  ``"foreign"`` (claimed from another host), ``"failed"`` (a campaign recorded ``error.json``) or
  ``"abandoned"``.
* :func:`sweep_runs` deletes those whose writer is gone: it holds each run's claim while renaming it away
  and removing it, so that a resuming writer cannot start on it meanwhile.
* :func:`sweep_temp_files` deletes orphan temporary files a crash can leave inside complete runs.

These are the bodies of :meth:`gnomon.Experiment.incomplete_runs` and
:meth:`gnomon.Experiment.sweep_incomplete`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gnomon.experiment.run_writer import ERROR_FILE, unclaimed_grace
from gnomon.io.install import split_entries
from gnomon.io.jsonio import ArtifactError, read_json
from gnomon.io.runids import claim_state, read_claim, take_over_claim, write_claim

__all__ = ["incomplete_state", "sweep_runs", "sweep_staging_dirs", "sweep_temp_files"]


def incomplete_state(run_dir: Path) -> dict[str, Any]:
    """``{run_id, state, claim, error}`` of the incomplete run ``run_dir`` (see the module docstring);
    ``claim`` is its claim record (or None), ``error`` the message recorded in ``error.json`` (or None)."""
    rec = read_claim(run_dir)
    state = claim_state(run_dir, rec)
    err = None
    if (run_dir / ERROR_FILE).exists():
        try:
            err = read_json(run_dir / ERROR_FILE).get("error")
        except ArtifactError as exc:
            err = str(exc)
    words = {"live": "in_progress", "mine": "in_progress", "foreign": "foreign"}.get(state)
    if words is None:
        quiet, limit = unclaimed_grace(run_dir) if state == "none" else (0.0, 0.0)
        if err:
            words = "failed"
        elif quiet < limit:
            words = "in_progress"  # an unclaimed writer (save / save_batch) changed it just now
        else:
            words = "abandoned"
    return {"run_id": run_dir.name, "state": words, "claim": rec, "error": err}


def sweep_runs(
    runs_dir: Path,
    run_ids: Iterable[str],
    *,
    now: float,
    min_age_s: float,
    force: bool,
    dry_run: bool,
) -> list[str]:
    """Delete the incomplete runs ``run_ids`` of ``runs_dir`` whose writer is gone; return their ids.

    Claimed runs go when the claiming process is gone (same host), or with ``force`` when claimed from
    another host; runs held by a live writer are never touched. Unclaimed runs go only when nothing in them
    changed for ``min_age_s`` seconds before ``now``. A run that holds files or folders gnomon did not write
    (:func:`gnomon.io.install.split_entries`) is left alone, with a warning naming them. ``dry_run`` only lists
    what would go."""
    removed = []
    kept: dict[str, list[str]] = {}
    for rid in run_ids:
        d = runs_dir / rid
        rec = read_claim(d)
        state = claim_state(d, rec)
        if state in ("live", "mine") or (state == "foreign" and not force):
            continue
        try:
            theirs = split_entries(d)[1]
        except OSError:
            continue
        if theirs:  # a user's files or folders in it: never deleted
            kept[rid] = theirs
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
        grave = runs_dir / f".swept-{rid}-{secrets.token_hex(4)}"
        try:
            os.rename(d, grave)
        except OSError:
            continue
        shutil.rmtree(grave, ignore_errors=True)
        removed.append(rid)
    if kept:
        shown = "; ".join(f"{rid}: {', '.join(names[:3])}" for rid, names in list(kept.items())[:5])
        warnings.warn(
            f"sweep_incomplete left {len(kept)} incomplete run(s) alone because they hold files gnomon did not "
            f"write ({shown}{' …' if len(kept) > 5 else ''}); move those files and sweep again",
            stacklevel=3,
        )
    return removed


def sweep_staging_dirs(runs_dir: str | os.PathLike, before: float) -> list[str]:
    """Delete the staging directories (``.<run>.tmp-*``) a crashed :func:`gnomon.save_run` left in
    ``runs_dir``, last changed at or before time ``before``; return their names."""
    removed = []
    try:
        with os.scandir(runs_dir) as it:
            stale = [e for e in it if e.name.startswith(".") and ".tmp-" in e.name and e.is_dir()]
    except OSError:
        return removed
    for e in stale:
        try:
            if e.stat().st_mtime <= before:
                shutil.rmtree(e.path, ignore_errors=True)
                removed.append(e.name)
        except OSError:
            continue
    return removed


def sweep_temp_files(run_dirs: Iterable[str | os.PathLike], before: float) -> None:
    """Delete the temporary files (``.*.tmp-*``) and renamed-away stale claims (``.claim.stale-*``) in
    ``run_dirs`` last changed at or before time ``before``."""
    for path in run_dirs:
        try:
            with os.scandir(path) as it:
                for f in it:
                    if f.name.startswith(".") and (".tmp-" in f.name or f.name.startswith(".claim.stale-")):
                        if f.stat().st_mtime <= before:
                            os.unlink(f.path)
        except OSError:
            continue
