"""Putting a run directory in place: never into unrelated files, never two runs' files mixed.

:func:`staged_run` is how :func:`gnomon.save_run` (and the experiment writers) write a run: every file goes
into a fresh *staging* directory beside the target (``.<name>.tmp-<pid>-<random>``), and only a fully
written run is installed:

* a target that does not exist or is empty (and unclaimed) is replaced by the staging directory with one
  ``rename`` — the run appears complete, all at once; if another writer filled the target meanwhile, the
  rename fails and nothing of ours is left behind (FileExistsError);
* a target that holds a run (being rewritten with ``overwrite=True``, an incomplete earlier attempt of this
  run, or a run directory claimed through :meth:`gnomon.Experiment.new_run`) is emptied first —
  ``summary.json`` first, so that it is incomplete from the first change — and then the staged files are
  moved in with ``summary.json`` last. At every moment the directory holds files of one run only.

What a target holds decides whether it may be written (:func:`target_state`): a complete run needs
``overwrite=True``, and so does an incomplete run of another run id; a directory holding anything that is not
a gnomon run file is always refused (gnomon never deletes files it did not write); a run being written by
another live writer is always refused.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from gnomon.io.jsonio import ArtifactError, read_json
from gnomon.io.runids import CLAIM_FILE, claim_state, describe_claim, read_claim

SUMMARY_FILE, META_FILE = "summary.json", "meta.json"
#: names a run directory may hold besides ``<identifier>.npz`` diagnostics files
RUN_FILES = frozenset(
    {"trace.npz", META_FILE, SUMMARY_FILE, "thetamap.npz", "posterior.nc", "error.json", "diag_steps.jsonl"}
)
_NPZ = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}\.npz$")


def _is_control(name: str) -> bool:
    """Claim files and temporary files of gnomon's atomic writes."""
    return name == CLAIM_FILE or (name.startswith(".") and (".tmp-" in name or name.startswith(".claim.stale-")))


def _is_run_file(entry: os.DirEntry) -> bool:
    if _is_control(entry.name):
        return True
    if entry.is_dir(follow_symlinks=False):
        return False
    return entry.name in RUN_FILES or bool(_NPZ.fullmatch(entry.name))


def target_state(run_dir: Path, run_id: str) -> tuple[str, list[str]]:
    """``(state, names)``: what ``run_dir`` holds before run ``run_id`` is written into it.

    ``state`` is ``"absent"``, ``"empty"`` (nothing but claim or temporary files), ``"complete"`` (a run with
    summary.json), ``"incomplete"`` (run files only, of this run id or of none) or ``"foreign"`` (files that
    are not gnomon run files, or an incomplete run of another run id); ``names`` lists the offending entries of
    a foreign directory (a few)."""
    try:
        with os.scandir(run_dir) as it:
            entries = list(it)
    except FileNotFoundError:
        return "absent", []
    except NotADirectoryError:
        raise NotADirectoryError(f"{run_dir}: exists and is not a directory") from None
    if not any(not _is_control(e.name) for e in entries):
        return "empty", []
    if (run_dir / SUMMARY_FILE).exists():
        return "complete", []
    others = sorted(e.name for e in entries if not _is_run_file(e))
    if others:
        return "foreign", others
    if (run_dir / META_FILE).exists():
        try:
            other_id = read_json(run_dir / META_FILE).get("run_id")
        except ArtifactError:
            other_id = None  # a torn meta.json of a crashed attempt: nobody's run
        if isinstance(other_id, str) and other_id != run_id:
            return "foreign", [f"{META_FILE} of run {other_id!r}"]
    return "incomplete", []


def check_target(run_dir: Path, run_id: str, *, overwrite: bool, claim_token: str | None = None) -> str:
    """The :func:`target_state` of ``run_dir`` if run ``run_id`` may be written there, else FileExistsError."""
    state, names = target_state(run_dir, run_id)
    if state == "absent":
        return state
    rec = read_claim(run_dir)
    if rec is not None:
        who = claim_state(run_dir, rec, token=claim_token)
        if who in ("live", "foreign"):
            raise FileExistsError(f"{run_dir}: is being written by {describe_claim(rec)}")
    if state == "complete" and not overwrite:
        raise FileExistsError(f"{run_dir}: already holds a complete run (summary.json); pass overwrite=True")
    other_run = state == "foreign" and all(n.startswith(f"{META_FILE} of run ") for n in names)
    if state == "foreign" and not (overwrite and other_run):
        # files that are not run files are never deleted, overwrite or not (save_run(".", overwrite=True) must
        # not empty a working directory); an incomplete run of another run id may be replaced with overwrite
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        fix = "pass overwrite=True to replace it" if other_run else "gnomon never deletes files it did not write"
        raise FileExistsError(
            f"{run_dir}: is not empty and is not this run's directory (it holds {shown}); choose another "
            f"directory ({fix})"
        )
    return state


def _remove_entry(path: str, is_dir: bool) -> None:
    try:
        if is_dir:
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _empty_in_place(run_dir: Path) -> None:
    """Remove everything but the claim from ``run_dir``, summary.json first."""
    try:
        os.unlink(run_dir / SUMMARY_FILE)  # incomplete from the first change on
    except FileNotFoundError:
        pass
    with os.scandir(run_dir) as it:
        entries = [(e.path, e.is_dir(follow_symlinks=False)) for e in it if e.name != CLAIM_FILE]
    for path, is_dir in entries:
        _remove_entry(path, is_dir)


def install(staging: Path, run_dir: Path, state: str) -> None:
    """Install the fully written ``staging`` directory as ``run_dir`` (module docstring)."""
    claimed = state != "fresh" and (run_dir / CLAIM_FILE).exists()
    is_cwd = state == "empty" and str(run_dir) == os.getcwd()  # renaming over the cwd would orphan it
    if state in ("absent", "empty", "fresh") and not claimed and not is_cwd:
        try:
            os.rename(staging, run_dir)  # atomic; replaces an empty directory
            return
        except OSError:
            if target_state(run_dir, "")[0] != "empty" or (run_dir / CLAIM_FILE).exists():
                raise FileExistsError(
                    f"{run_dir}: another writer wrote into it while this run was being written; nothing was "
                    "changed"
                ) from None
            # only leftover temporary files in the way: install in place
    _empty_in_place(run_dir)
    names = sorted(os.listdir(staging), key=lambda n: n == SUMMARY_FILE)  # summary.json last
    for name in names:
        os.replace(staging / name, run_dir / name)
    os.rmdir(staging)


@contextlib.contextmanager
def staged_run(
    run_dir: str | os.PathLike,
    run_id: str,
    *,
    overwrite: bool = False,
    claim_token: str | None = None,
    fresh: bool = False,
) -> Iterator[Path]:
    """Yield an empty staging directory for run ``run_id``; install it as ``run_dir`` when the block ends
    without an exception, remove it otherwise. Raises FileExistsError before anything is written when the
    target may not be written (:func:`check_target`). ``fresh``: the caller has just created ``run_dir``
    (empty and unclaimed, its own by the atomic ``mkdir``), so it is not inspected."""
    run_dir = Path(run_dir).absolute()  # "." or "runs/x/.." name a real directory with a parent
    state = "fresh" if fresh else check_target(run_dir, run_id, overwrite=overwrite, claim_token=claim_token)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = run_dir.parent / f".{run_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    os.mkdir(staging)
    try:
        yield staging
        install(staging, run_dir, state)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def is_staging_dir(name: str) -> bool:
    """True for the name of a staging directory (or any gnomon temporary file) left by a crashed writer."""
    return name.startswith(".") and ".tmp-" in name


__all__ = ["RUN_FILES", "target_state", "check_target", "install", "staged_run", "is_staging_dir"]
