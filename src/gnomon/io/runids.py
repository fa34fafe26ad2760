"""Run ids and run claims: who may write a run directory.

* A run id is a safe directory name: 1–128 characters from ``[A-Za-z0-9._-]``, starting with a letter or
  digit, no ``..``, no path separators, not a reserved device name. :func:`check_run_id` raises a
  ValueError naming the id and the rule it breaks.
* Generated ids (:func:`generate_run_id`) are ``YYYYmmddTHHMMSS-<12 hex>``: sortable by creation time, with
  48 random bits from ``os.urandom`` (fork-safe). They are created with an atomic ``mkdir``, so even the
  astronomically unlikely collision is detected and retried, never shared.
* A *claim* is a file ``.claim.json`` created exclusively and complete (a hard link of a written
  temporary file: ``link`` fails if the target exists, atomically on local and NFS filesystems) that
  records the writer's host, pid and process start time. Exactly one writer holds the claim of a run; a
  crashed writer's claim is *stale* (same host, process gone) and is taken over by renaming it away first
  (only one renamer can succeed) and then creating a fresh claim (only one creator can succeed). Claims on
  another host cannot be checked and count as live unless older than ``stale_after_s`` or taken over
  explicitly.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CLAIM_FILE = ".claim.json"
MAX_RUN_ID_LENGTH = 128
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def check_run_id(run_id: Any) -> str:
    """Return ``run_id`` if it is a safe run-directory name, else raise ValueError saying why."""
    if not isinstance(run_id, str):
        raise ValueError(f"run id must be a str, got {type(run_id).__name__} {run_id!r}")
    if not run_id:
        raise ValueError("run id must not be empty")
    if len(run_id) > MAX_RUN_ID_LENGTH:
        raise ValueError(
            f"run id {run_id[:40]!r}... has {len(run_id)} characters; at most {MAX_RUN_ID_LENGTH}"
        )
    if "/" in run_id or "\\" in run_id or (os.altsep and os.altsep in run_id) or "\0" in run_id:
        raise ValueError(f"run id {run_id!r} must not contain a path separator")
    if ".." in run_id:
        raise ValueError(f"run id {run_id!r} must not contain '..'")
    if not _SAFE.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} may contain only letters, digits, '.', '_' and '-', and must start with a "
            "letter or digit"
        )
    if run_id.split(".")[0].lower() in _RESERVED:
        raise ValueError(f"run id {run_id!r} is a reserved device name on some systems")
    return run_id


def generate_run_id(prefix: str | None = None) -> str:
    """``[prefix-]YYYYmmddTHHMMSS-<12 hex>`` (UTC), unique with overwhelming probability across processes
    and machines; callers still create it with an atomic mkdir and retry on a clash."""
    rid = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(6)
    return check_run_id(f"{prefix}-{rid}" if prefix else rid)


# ---------------------------------------------------------------------------------------------- claims
def _proc_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    try:
        if fields[0] == "Z":  # zombie: dead, not yet reaped
            return -1
        return int(fields[19])
    except (IndexError, ValueError):
        return None


_HOST = socket.gethostname()
# Claims this process took on the user's behalf (Experiment.new_run): the user's code may write those runs
# from any thread. Claims taken by campaign tasks are *not* listed here: a second thread of the same
# process must see them as held by another writer.
_HELD: dict[str, str] = {}


_SELF: tuple[int, int | None] | None = None


def claim_record() -> dict[str, Any]:
    global _SELF
    pid = os.getpid()
    if _SELF is None or _SELF[0] != pid:  # our own start time, read once per process
        _SELF = (pid, _proc_start(pid))
    return {
        "host": _HOST,
        "pid": pid,
        "start": _SELF[1],
        "created_unix": time.time(),
        "token": secrets.token_hex(8),
    }


def write_claim(run_dir: Path, *, hold: bool = False) -> dict[str, Any] | None:
    """Create ``run_dir/.claim.json`` exclusively; the record on success, None if a claim exists.

    The record is written to a temporary file first and hard-linked into place (``link`` fails if the
    target exists), so a claim is never seen half-written. ``hold=True`` registers it as held by this
    process for the user (see :data:`_HELD`)."""
    rec = claim_record()
    target = run_dir / CLAIM_FILE
    tmp = run_dir / f".claim.tmp-{rec['token']}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, json.dumps(rec).encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, target)
    except FileExistsError:
        return None
    except OSError:  # no hard links here: exclusive create (a reader may briefly see it empty)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(rec))
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    if hold:
        _HELD[str(run_dir)] = rec["token"]
    return rec


def read_claim(run_dir: Path) -> dict[str, Any] | None:
    """The claim record of ``run_dir``; None if there is none; ``{}`` if it is unreadable (being written,
    or its writer died between creating and filling it)."""
    try:
        with open(run_dir / CLAIM_FILE, "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        rec = json.loads(text)
    except ValueError:
        return {}
    return rec if isinstance(rec, dict) else {}


def claim_state(
    run_dir: Path,
    rec: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    stale_after_s: float | None = None,
    _unreadable_grace_s: float = 30.0,
) -> str:
    """State of the claim of ``run_dir``: ``"none"``; ``"mine"`` (its token is ``token`` or one this
    process holds for the user); ``"live"`` (another writer on this host that still runs — possibly
    another thread of this process); ``"foreign"`` (another host: cannot be checked); or ``"stale"`` (its
    process is gone, or it is older than ``stale_after_s``)."""
    if rec is None:
        rec = read_claim(run_dir)
    if rec is None:
        return "none"
    if not rec:  # unreadable: give its creator a moment to fill it in
        try:
            age = time.time() - os.stat(run_dir / CLAIM_FILE).st_mtime
        except OSError:
            return "none"
        return "stale" if age > _unreadable_grace_s else "live"
    tok = rec.get("token")
    if tok is not None and (tok == token or tok == _HELD.get(str(run_dir))):
        return "mine"
    if stale_after_s is not None and time.time() - float(rec.get("created_unix", 0.0)) > stale_after_s:
        return "stale"
    if rec.get("host") != _HOST:
        return "foreign"
    return "live" if _alive(rec.get("pid"), rec.get("start")) else "stale"


def _alive(pid: Any, start: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now_start = _proc_start(pid)
    if now_start == -1:
        return False  # zombie
    if start is not None and now_start is not None and now_start != start:
        return False  # the pid was reused by another process
    return True


def take_over_claim(run_dir: Path) -> dict[str, Any] | None:
    """Replace a stale claim by ours. Atomic against other take-overs: the stale file is first renamed to a
    unique name (only one process can rename it), then a fresh claim is created exclusively."""
    grave = run_dir / f".claim.stale-{secrets.token_hex(6)}"
    try:
        os.rename(run_dir / CLAIM_FILE, grave)
    except FileNotFoundError:
        pass  # someone released or took it over meanwhile; the exclusive create below decides
    else:
        try:
            os.unlink(grave)
        except OSError:
            pass
    return write_claim(run_dir)


def release_claim(run_dir: Path, token: str | None = None) -> None:
    """Remove the claim of ``run_dir`` if it is ours (``token``, or held by this process for the user)."""
    rec = read_claim(run_dir)
    if rec and claim_state(run_dir, rec, token=token) == "mine":
        try:
            os.unlink(run_dir / CLAIM_FILE)
        except FileNotFoundError:
            pass
    _HELD.pop(str(run_dir), None)


def describe_claim(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "an unknown writer"
    when = datetime.fromtimestamp(float(rec.get("created_unix", 0.0)), UTC).isoformat(timespec="seconds")
    return f"pid {rec.get('pid')} on host {rec.get('host')!r} (since {when})"
