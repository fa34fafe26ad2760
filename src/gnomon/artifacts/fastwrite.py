"""A lean writer of the default run artifacts for experiments and batches (same files as ``save_run``).

:func:`gnomon.artifacts.run.save_run` is the reference writer. Writing thousands of runs (ensembles from
``optimize_batch``, campaigns) pays its per-call overhead thousands of times: rebuilding and re-encoding the
provenance and layout sections of meta.json and a ``tempfile.mkstemp`` per file. This module writes the
*same* files with the same content (checked by ``tests/test_experiment.py`` against ``save_run``) but
computes the shared parts once (:class:`SharedMeta`) and writes each file through a per-process temporary
name and ``os.replace`` — still atomic, summary.json still last. Anything unusual (a θ-map, a netCDF export)
goes through ``save_run`` itself.
"""

from __future__ import annotations

import functools
import io
import json
import os
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gnomon.artifacts.jsonio import SCHEMA_VERSION, to_jsonable
from gnomon.artifacts.npzio import _portable, write_npz
from gnomon.artifacts.provenance import git_hash, package_versions, platform_info
from gnomon.artifacts.run import (
    _EXTRA_NAME,
    _RESERVED,
    META_FILE,
    SUMMARY_FILE,
    TRACE_FILE,
    _trace_arrays,
    save_run,
)
from gnomon.trace.trace import Trace

_FAST_KWARGS = {"summary", "extra_arrays", "extra_meta", "compress", "fsync", "overwrite", "run_id"}
_token: tuple[int, str] | None = None


def _tmp_suffix() -> str:
    """``<pid>-<random>``, refreshed after a fork, so temporary names never clash across processes."""
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:
        _token = (pid, f"{pid}-{secrets.token_hex(4)}")
    return _token[1]


def put_bytes(path: Path, data: bytes, fsync: bool = False) -> None:
    """Atomic write: ``.<name>.tmp-<pid>-<rand>`` in the same folder, then ``os.replace``."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{_tmp_suffix()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def _json_bytes(doc: Mapping[str, Any]) -> bytes:
    body = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in doc.items() if k != "schema_version"}}
    return (json.dumps(body, indent=1, allow_nan=False) + "\n").encode()


@functools.lru_cache(maxsize=64)
def _layout_doc(layout: Any) -> tuple[str, dict]:
    return layout.hash, to_jsonable(layout.to_dict())


class SharedMeta:
    """The parts of meta.json that are the same for every run of a batch or a process: computed once."""

    def __init__(self, layout: Any = None, engine: Mapping[str, Any] | None = None):
        self.provenance = {
            "gnomon_version": package_versions().get("gnomon"),
            "git_hash": git_hash(),
            "packages": to_jsonable(package_versions()),
            "platform": to_jsonable(platform_info()),
        }
        self.layout = layout
        self.layout_hash, self.layout_doc = _layout_doc(layout) if layout is not None else (None, None)
        self._engine_src = engine
        self.engine = to_jsonable(dict(engine)) if engine is not None else None

    def engine_for(self, info: Mapping[str, Any]) -> dict:
        if self.engine is not None and info is self._engine_src:
            return self.engine
        return to_jsonable(dict(info))


def can_write_fast(trace: Any, save_kwargs: Mapping[str, Any]) -> bool:
    return (
        isinstance(trace, Trace)
        and trace.thetamap is None
        and not trace.is_batched
        and set(save_kwargs) <= _FAST_KWARGS
    )


def write_run_files(
    run_dir: Path,
    trace: Trace,
    layout: Any = None,
    meta: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    summary: Mapping[str, Any] | None = None,
    extra_arrays: Mapping[str, Mapping[str, Any]] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    compress: bool = False,
    fsync: bool = False,
    overwrite: bool = False,
    shared: SharedMeta | None = None,
    fresh: bool = False,
    **other: Any,
) -> Path:
    """Write ``trace`` into ``run_dir`` exactly as :func:`gnomon.save_run` would (falls back to it for
    θ-maps, netCDF export and other options). ``fresh=True`` promises that ``run_dir`` was just created
    empty by the caller (skips the existence checks)."""
    if not can_write_fast(trace, {**other, "run_id": run_id}):
        return save_run(
            run_dir,
            trace,
            layout,
            meta,
            run_id=run_id,
            summary=summary,
            extra_arrays=extra_arrays,
            extra_meta=extra_meta,
            compress=compress,
            fsync=fsync,
            overwrite=overwrite,
            **other,
        )
    trace.validate()
    run_dir = Path(run_dir)
    if not fresh:
        run_dir.mkdir(parents=True, exist_ok=True)
        if (run_dir / SUMMARY_FILE).exists():
            if not overwrite:
                raise FileExistsError(
                    f"{run_dir}: already holds a complete run (summary.json); pass overwrite=True"
                )
            (run_dir / SUMMARY_FILE).unlink(missing_ok=True)
    layout = layout if layout is not None else trace.layout
    if layout is not None and layout.size != trace.dim:
        raise ValueError(f"layout has size {layout.size} but the trace's θ has dimension {trace.dim}")
    if shared is None or shared.layout is not layout:
        shared = SharedMeta(layout)
    run_id = run_id or run_dir.name
    trace = trace.to_numpy()

    buf = io.BytesIO()
    arrays = {k: _portable(k, v) for k, v in _trace_arrays(trace).items()}
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    put_bytes(run_dir / TRACE_FILE, buf.getbuffer(), fsync)
    files = [TRACE_FILE]
    for name, arrs in (extra_arrays or {}).items():
        if not _EXTRA_NAME.fullmatch(name) or name in _RESERVED:
            raise ValueError(
                f"extra_arrays name {name!r} must be a plain identifier other than {sorted(_RESERVED)}"
            )
        write_npz(run_dir / f"{name}.npz", arrs, fsync=fsync)
        files.append(f"{name}.npz")

    meta_doc: dict[str, Any] = {
        "run_id": run_id,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": trace.kind,
        **shared.provenance,
        "theta": {
            "theta_space": trace.theta_space,
            "dim": trace.dim,
            "dtype": str(np.asarray(trace.theta).dtype),
            "layout_hash": shared.layout_hash,
            "layout": shared.layout_doc,
            "thetamap": None,
        },
        "engine": shared.engine_for(trace.info),
        "extras": to_jsonable(
            {k: v for k, v in trace.extras.items() if isinstance(v, (str, int, float, bool)) or v is None}
        ),
        "files": files,
        "user": to_jsonable(dict(meta or {})),
        **to_jsonable(dict(extra_meta or {})),
    }
    put_bytes(run_dir / META_FILE, _json_bytes(meta_doc), fsync)
    summary_doc = {"run_id": run_id, **trace.summary(), **dict(summary or {})}
    summary_doc["written_utc_unix"] = time.time()
    put_bytes(run_dir / SUMMARY_FILE, _json_bytes(to_jsonable(summary_doc)), fsync)  # last: complete
    return run_dir
