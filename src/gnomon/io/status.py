"""What state a run directory is in — one classification shared by every reader.

:func:`check_run` is the single judge used by :func:`gnomon.load_run`, :meth:`gnomon.Experiment.aggregate`
(with or without meta keys), :meth:`gnomon.Experiment.run_states` and ``gnomon show``, so that they never
disagree about a run. It reads ``summary.json`` and ``meta.json`` (two small files) and looks at the other
files' sizes, never at the arrays:

==================  ===========================================================================================
state               when
==================  ===========================================================================================
``complete``        ``summary.json`` and ``meta.json`` are readable gnomon artifacts, ``meta.json`` has the keys
                    a reader needs, its layout matches its stored hash, and every data file recorded in
                    ``summary.json`` (``files``: name → size in bytes) is present with that size
``incomplete``      no ``summary.json`` (written last): in progress, crashed or failed
``corrupt``         anything else wrong; :attr:`RunState.file` names the file and :attr:`RunState.reason` says
                    what (not valid JSON, no schema_version, a missing required key, a layout edited after the
                    run was written, a data file missing or of another size than recorded)
``newer_schema``    written by a newer gnomon (``schema_version`` above what this one reads)
==================  ===========================================================================================

A data file damaged *in place* at its recorded size is found only by :func:`gnomon.load_run`, which reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gnomon.io.jsonio import ArtifactError, NewerSchemaError, from_jsonable, read_json_raw

SUMMARY_FILE, META_FILE, TRACE_FILE = "summary.json", "meta.json", "trace.npz"
STATES = ("complete", "incomplete", "corrupt", "newer_schema")
#: summary.json key recording the size in bytes of every data file of the run
FILES_KEY = "files"
#: summary.json key listing the keys the user passed to ``save_run(summary=...)``
USER_KEYS_KEY = "user_keys"


@dataclass(frozen=True)
class RunState:
    """The state of one run directory (see the module docstring).

    Attributes:
      run_id: the directory name.
      state: ``"complete"``, ``"incomplete"``, ``"corrupt"`` or ``"newer_schema"``.
      file: the file at fault (None when complete).
      reason: one line naming the file and what is wrong ('' when complete).
      summary: the parsed summary.json (non-finite numbers still as strings) when readable.
      meta: the parsed meta.json when readable.
    """

    run_id: str
    state: str
    file: str | None = None
    reason: str = ""
    summary: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    meta: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.state == "complete"


def _hash_of_blocks(blocks: Any) -> str:
    payload = json.dumps(blocks, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def layout_problem(theta_doc: Mapping[str, Any]) -> str | None:
    """Why the layout stored in ``meta.json`` ``theta`` cannot be trusted, or None when it matches its hash.

    The stored ``layout_hash`` must equal the hash of the stored blocks (the formula of
    :attr:`gnomon.Layout.hash`) or, for runs written by another gnomon version whose index map had other
    keys, the hash of the layout decoded from them."""
    doc = theta_doc.get("layout")
    stored = theta_doc.get("layout_hash")
    if not doc:
        return None if stored is None else f"theta.layout_hash is {stored!r} but theta.layout is missing"
    blocks = doc.get("blocks") if isinstance(doc, Mapping) else doc
    if not isinstance(blocks, list) or not all(isinstance(b, Mapping) and "name" in b for b in blocks):
        return "theta.layout has no list of named blocks"
    inner = doc.get("hash") if isinstance(doc, Mapping) else None
    if stored is None:
        stored = inner
    elif inner is not None and inner != stored:
        return f"theta.layout.hash {inner!r} differs from theta.layout_hash {stored!r}"
    if stored is None:
        return None  # nothing to check against (a hand-written layout)
    if _hash_of_blocks(blocks) == stored:  # as stored (finite numbers): the common case, no decoding
        return None
    blocks = from_jsonable(blocks)  # "Infinity" markers back to floats, as the layout hashed them
    if _hash_of_blocks(blocks) == stored:
        return None
    try:
        from gnomon.thetaspace.layout import Layout

        decoded = Layout.from_dict(doc).hash
    except (KeyError, TypeError, ValueError) as exc:
        return f"unreadable layout ({exc})"
    if decoded == stored:
        return None
    names = [b.get("name") for b in blocks]
    return (
        f"the layout's blocks {names} do not match its stored hash {stored} (they hash to {decoded}): the "
        "layout was edited or corrupted after the run was written"
    )


def _problem(run_id: str, state: str, path: str | os.PathLike, reason: str, summary=None, meta=None) -> RunState:
    return RunState(run_id, state, str(path), reason, summary, meta)


def check_meta(path: str | os.PathLike, meta: Mapping[str, Any]) -> str | None:
    """Why a parsed ``meta.json`` cannot be used (naming ``path``), or None."""
    for key in ("kind", "theta"):
        if key not in meta:
            return f"{path}: missing required key {key!r}"
    if not isinstance(meta["theta"], Mapping):
        return f"{path}: 'theta' must be an object, found {type(meta['theta']).__name__}"
    why = layout_problem(meta["theta"])
    return None if why is None else f"{path}: {why}"


def check_files(run_dir: str | os.PathLike, summary: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(path, reason)`` of the first data file that is missing or not of its recorded size, else None.

    Runs written before sizes were recorded are only checked for ``trace.npz``."""
    recorded = summary.get(FILES_KEY)
    if not isinstance(recorded, Mapping):
        recorded = {TRACE_FILE: None}
    base = os.fspath(run_dir)
    for name, size in recorded.items():
        p = os.path.join(base, str(name))
        try:
            actual = os.stat(p).st_size
        except FileNotFoundError:
            return p, f"{p}: file is missing"
        except OSError as exc:
            return p, f"{p}: cannot read ({exc.strerror})"
        if isinstance(size, int) and actual != size:
            return p, (
                f"{p}: {actual} bytes, but summary.json recorded {size} (truncated, corrupt or replaced after the run "
                "was written)"
            )
    return None


def check_run(run_dir: str | os.PathLike) -> RunState:
    """Classify the run directory ``run_dir`` (see the module docstring)."""
    run_dir = os.fspath(run_dir)
    rid = os.path.basename(os.path.normpath(run_dir))
    spath, mpath = os.path.join(run_dir, SUMMARY_FILE), os.path.join(run_dir, META_FILE)
    try:
        summary = read_json_raw(spath)
    except FileNotFoundError:
        return _problem(rid, "incomplete", spath, f"{spath}: missing (the run is in progress, crashed or failed)")
    except NewerSchemaError as exc:
        return _problem(rid, "newer_schema", spath, str(exc))
    except ArtifactError as exc:
        return _problem(rid, "corrupt", spath, str(exc))
    try:
        meta = read_json_raw(mpath)
    except FileNotFoundError:
        return _problem(rid, "corrupt", mpath, f"{mpath}: file is missing", summary)
    except NewerSchemaError as exc:
        return _problem(rid, "newer_schema", mpath, str(exc), summary)
    except ArtifactError as exc:
        return _problem(rid, "corrupt", mpath, str(exc), summary)
    why = check_meta(mpath, meta)
    if why is not None:
        return _problem(rid, "corrupt", mpath, why, summary, meta)
    bad = check_files(run_dir, summary)
    if bad is not None:
        return _problem(rid, "corrupt", bad[0], bad[1], summary, meta)
    return RunState(rid, "complete", None, "", summary, meta)


__all__ = ["RunState", "STATES", "check_run", "check_meta", "check_files", "layout_problem"]
