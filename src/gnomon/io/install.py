"""Putting a run directory in place: never into unrelated files, never two runs' files mixed, never a user's
file deleted.

:func:`staged_run` is how :func:`gnomon.save_run` (and the experiment writers) write a run: every file goes
into a fresh *staging* directory beside the target (``.<name>.tmp-<pid>-<random>``), and only a fully
written run is installed:

* a target that does not exist or is empty (and unclaimed) is replaced by the staging directory with one
  ``rename`` — the run appears complete, all at once; if another writer filled the target meanwhile, the
  rename fails and nothing of ours is left behind (FileExistsError);
* a directory the writer has just created for the run (``fresh``: :meth:`gnomon.Experiment.save` with a given
  id and ``save_batch`` reserve their ids that way) is staged file by file: each file is written whole under a
  temporary name beside its final one and renamed into place, ``summary.json`` last, so the directory never
  holds a partial file and the run is complete when ``summary.json`` lands (a staging directory would have to
  be removed again, or renamed over the reserved one: both cost a journal commit, ~3 ms on ext4, against
  ~15 µs for a file rename);
* a target that holds a run (being rewritten with ``overwrite=True``, an incomplete earlier attempt of this
  run, or a run directory claimed through :meth:`gnomon.Experiment.new_run`) has **gnomon's own files** of the
  old run removed — ``summary.json`` first, so that it is incomplete from the first change, ``meta.json``
  (which lists the others) last — and then the staged files are moved in, ``meta.json`` first and
  ``summary.json`` last. At every moment the directory holds files of one run only (plus the user's), and
  its ``meta.json`` names the run files there.

gnomon's own files of a run (:func:`split_entries`) are the names it reserves (``trace.npz``, ``meta.json``,
``summary.json``, ``thetamap.npz``, ``posterior.nc``, ``error.json``, ``diag_steps.jsonl`` and the documented
diagnostics ``grads``/``signals``/``curvature``/``precond``/``handoff.npz``), the files the old run recorded
(``meta.json``'s ``files``, ``summary.json``'s ``files``), claim files and temporary files. **Everything else
— a user's notes, figures, sub-folders, an ``.npz`` the run did not write — stays where it is**, whatever
``overwrite`` says; a new run that would write a file of the same name as one of them is refused, naming it,
before anything changes.

What a target holds decides whether it may be written (:func:`target_state`): a complete run needs
``overwrite=True``, and so does an incomplete run of another run id; a directory that holds no run file at
all, only other files, is refused (it is not a run directory); a run being written by another live writer is
always refused.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from gnomon.io.jsonio import ArtifactError, atomic_write_bytes, read_json
from gnomon.io.runids import CLAIM_FILE, claim_state, describe_claim, read_claim

SUMMARY_FILE, META_FILE = "summary.json", "meta.json"
#: the names gnomon reserves in a run directory: its files whether or not a run recorded them
RUN_FILES = frozenset(
    {"trace.npz", META_FILE, SUMMARY_FILE, "thetamap.npz", "posterior.nc", "error.json", "diag_steps.jsonl",
     "grads.npz", "signals.npz", "curvature.npz", "precond.npz", "handoff.npz"}
)
_FILES_KEY = "files"  # summary.json: {name: size} of the run's data files; meta.json: [name, ...]


def _is_control(name: str) -> bool:
    """Claim files and temporary files of gnomon's atomic writes."""
    return name == CLAIM_FILE or (name.startswith(".") and (".tmp-" in name or name.startswith(".claim.stale-")))


def recorded_files(run_dir: Path) -> set[str]:
    """The file names the run in ``run_dir`` recorded as its own (``meta.json`` and ``summary.json``
    ``files``); unreadable or missing documents record nothing."""
    out: set[str] = set()
    for doc_name in (META_FILE, SUMMARY_FILE):
        try:
            doc = read_json(run_dir / doc_name)
        except (ArtifactError, OSError):
            continue
        files = doc.get(_FILES_KEY)
        if isinstance(files, (list, dict)):
            out.update(n for n in files if isinstance(n, str) and "/" not in n and n not in (".", ".."))
    return out


def split_entries(run_dir: Path, entries: list[os.DirEntry] | None = None) -> tuple[list[os.DirEntry], list[str]]:
    """``(gnomon's entries, the other names)`` of ``run_dir`` (see the module docstring): the first may be
    removed when the run is rewritten, the second never are. Claim and temporary files count as gnomon's;
    a folder is never gnomon's."""
    if entries is None:
        with os.scandir(run_dir) as it:
            entries = list(it)
    recorded = None
    ours, theirs = [], []
    for e in entries:
        if _is_control(e.name):
            ours.append(e)
            continue
        if e.is_dir(follow_symlinks=False):
            theirs.append(e.name)
            continue
        if e.name in RUN_FILES:
            ours.append(e)
            continue
        if recorded is None:
            recorded = recorded_files(run_dir)
        (ours.append(e) if e.name in recorded else theirs.append(e.name))
    return ours, sorted(theirs)


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
    ours, others = split_entries(run_dir, entries)
    if not any(not _is_control(e.name) for e in ours) and not any(e.name == CLAIM_FILE for e in ours):
        return "foreign", others  # no run file and no claim: not a run directory
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
        # a directory with no run file is not a run directory: a run is not written into it, overwrite or not
        # (save_run(".", overwrite=True) must not litter a working directory); an incomplete run of another run
        # id may be replaced with overwrite
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        fix = ("pass overwrite=True to replace it" if other_run else
               "gnomon writes a run only into a new or empty directory or a run's own, and never deletes files it "
               "did not write")
        raise FileExistsError(
            f"{run_dir}: is not empty and is not this run's directory (it holds {shown}); choose another "
            f"directory ({fix})"
        )
    return state


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_run_files(run_dir: Path, keep: frozenset[str] = frozenset({CLAIM_FILE})) -> list[str]:
    """Remove gnomon's own files of the run in ``run_dir`` (:func:`split_entries`) but those in ``keep``:
    ``summary.json`` first (incomplete from the first change), ``meta.json`` (which lists the others) last.
    Returns the names of everything else there, which is left alone."""
    ours, theirs = split_entries(run_dir)
    names = [e.name for e in ours if e.name not in keep]
    order = sorted(names, key=lambda n: (n != SUMMARY_FILE, n == META_FILE))
    for name in order:
        _unlink(run_dir / name)
    return theirs


def discard_run_dir(run_dir: Path) -> None:
    """Remove a run directory a writer created itself and gave up on: gnomon's files, then the directory if
    that left it empty (anything else someone put there meanwhile stays)."""
    try:
        remove_run_files(run_dir, keep=frozenset())
        os.rmdir(run_dir)
    except OSError:
        pass


def install(staging: Path, run_dir: Path, state: str) -> None:
    """Install the fully written ``staging`` directory as ``run_dir`` (module docstring)."""
    if state == "fresh":  # staged file by file in the run directory itself (staged_run): nothing to move
        return
    claimed = (run_dir / CLAIM_FILE).exists()
    is_cwd = state == "empty" and str(run_dir) == os.getcwd()  # renaming over the cwd would orphan it
    if state in ("absent", "empty") and not claimed and not is_cwd:
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
    names = os.listdir(staging)
    _, theirs = split_entries(run_dir)
    clash = sorted(set(names) & set(theirs))
    if clash:
        raise FileExistsError(
            f"{run_dir}: holds {', '.join(clash)}, which this run did not write and the new run would replace; "
            "gnomon never deletes files it did not write: move or rename them (nothing was changed)"
        )
    # the old meta.json stays until the new one replaces it (os.replace): the directory always names its run
    remove_run_files(run_dir, keep=frozenset({CLAIM_FILE, META_FILE}) if META_FILE in names else
                     frozenset({CLAIM_FILE}))
    # meta.json first (it names the run's files from then on), summary.json last (the run is complete)
    for name in sorted(names, key=lambda n: (n != META_FILE, n == SUMMARY_FILE)):
        os.replace(staging / name, run_dir / name)
    os.rmdir(staging)


_SUFFIX: list = [None, None]  # [pid, "<pid>-<random>"], refreshed after a fork


def _reset_suffix() -> None:
    _SUFFIX[0] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_suffix)
_COUNTER = itertools.count()


def _staging_suffix() -> str:
    """``<pid>-<random>-<n>``: unique per process (the random part drawn once per process) and per call."""
    if _SUFFIX[0] is None:
        pid = os.getpid()
        _SUFFIX[:] = [pid, f"{pid}-{secrets.token_hex(4)}"]
    return f"{_SUFFIX[1]}-{next(_COUNTER)}"


def write_staged(path: Path, data: bytes, fsync: bool = False, *, atomic: bool = False) -> int:
    """Write a new file whole and return its size. Into a private staging directory (``atomic=False``) it is
    created in place (``O_EXCL``: the directory is installed as a whole later); into a run directory that is
    being written file by file (``atomic=True``, a fresh directory) through a temporary name and a rename, so
    that it appears complete."""
    if atomic:
        atomic_write_bytes(path, data, fsync=fsync)
        return len(data)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return len(data)


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
    if state == "absent":
        run_dir.parent.mkdir(parents=True, exist_ok=True)
    if state == "fresh":  # the writer's own new directory: files are staged one by one (write_staged, atomic)
        yield run_dir
        return
    staging = run_dir.parent / f".{run_dir.name}.tmp-{_staging_suffix()}"
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


__all__ = ["RUN_FILES", "target_state", "check_target", "install", "staged_run", "is_staging_dir", "split_entries",
           "remove_run_files", "recorded_files", "discard_run_dir", "write_staged"]
