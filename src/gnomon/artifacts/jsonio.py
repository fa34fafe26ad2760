"""The one JSON reader/writer of gnomon artifacts: atomic, schema-versioned, NaN-safe, no pickle.

* Non-finite floats are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (valid JSON)
  and read back as floats; numpy/jax scalars and arrays become plain numbers and lists.
* Writes go to a temporary file in the same folder, are flushed, then ``os.replace``-d over the target, so
  a crash never leaves a half-written file (orphan ``*.tmp-*`` files may remain; readers ignore them).
* Every artifact carries ``schema_version``; :func:`read_json` refuses a newer one with a clear error.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 2  # 2: trace.npz 'theta' is base θ, 'z' the θ-map rows (1 stored z as theta)
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class ArtifactError(ValueError):
    """A run artifact is missing, partial, corrupt or from a newer gnomon; the message names the file."""


def to_jsonable(x: Any) -> Any:
    """Plain-JSON form of ``x``: dicts, lists, str, int, float (non-finite as strings), bool, None."""
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "Infinity" if f > 0 else "-Infinity"
        return f
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "__array__") or hasattr(x, "shape"):
        arr = np.asarray(x)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return to_jsonable(arr.tolist())
    raise TypeError(f"cannot store {type(x).__name__} {x!r} in JSON")


def from_jsonable(x: Any) -> Any:
    """Inverse of the non-finite encoding of :func:`to_jsonable`."""
    if isinstance(x, dict):
        return {k: from_jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [from_jsonable(v) for v in x]
    if isinstance(x, str) and x in _NONFINITE:
        return _NONFINITE[x]
    return x


_token: tuple[int, str] | None = None


def _tmp_suffix() -> str:
    """``<pid>-<random>``, refreshed after a fork, so temporary names never clash across processes."""
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:
        _token = (pid, f"{pid}-{secrets.token_hex(4)}")
    return _token[1]


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through ``.<name>.tmp-<pid>-<rand>`` in the same folder and ``os.replace``.

    Permissions follow the umask (like any ``open``); a failed write removes its temporary file."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{_tmp_suffix()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary file name beside ``path`` for a library that writes to a name (pandas, netCDF);
    on success it is ``os.replace``-d over ``path``, on failure removed."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{_tmp_suffix()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str | os.PathLike, obj: Mapping[str, Any], *, schema_version: int = SCHEMA_VERSION,
               fsync: bool = False) -> None:
    """Atomically write ``obj`` (with ``schema_version`` first) as indented JSON."""
    body = {"schema_version": schema_version, **{k: v for k, v in obj.items() if k != "schema_version"}}
    text = json.dumps(to_jsonable(body), indent=1, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode(), fsync=fsync)


def read_json(path: str | os.PathLike, *, max_schema: int = SCHEMA_VERSION) -> dict[str, Any]:
    """Read a gnomon JSON artifact; :class:`ArtifactError` naming the file when it cannot be used."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file is missing") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON (truncated or corrupt: {exc.msg} at line {exc.lineno})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    version = obj.get("schema_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{path}: no integer schema_version (found {version!r}); not a gnomon artifact?")
    if version > max_schema:
        raise ArtifactError(
            f"{path}: schema_version {version} is newer than this gnomon reads (≤ {max_schema}); "
            "upgrade gnomon to read it"
        )
    return from_jsonable(obj)
