"""Files written whole or not at all: the atomic writes, the NPZ reader/writer and the artifact error.

The bottom layer's file helpers, shared by every layer that writes (:mod:`gnomon.artifacts` re-exports them
from :mod:`gnomon.io.jsonio` and :mod:`gnomon.io.npzio`; ``Signals.save`` uses them too):

* :func:`atomic_write_bytes` writes through ``.<name>.tmp-<pid>-<random>`` in the same folder and
  ``os.replace``-s it over the target, so a crash never leaves a half-written file (orphan temporary files
  may remain; readers skip them); :func:`atomic_path` does the same for libraries that write to a file name;
* :func:`write_npz` / :func:`read_npz`: arrays through a file object (``np.savez`` on a path silently
  appends ``.npz``), no pickle (object arrays are refused, loading uses ``allow_pickle=False``), bfloat16
  and other non-numpy dtypes upcast to float32;
* :class:`ArtifactError`: a file is missing, partial, corrupt or from a newer gnomon; the message names it.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class ArtifactError(ValueError):
    """A run artifact is missing, partial, corrupt or from a newer gnomon; the message names the file."""


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


def _portable(name: str, a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == object:
        raise TypeError(f"array {name!r} has dtype object; only numeric arrays are stored (no pickle)")
    if arr.dtype.kind == "V" or arr.dtype.name not in np.sctypeDict:  # e.g. bfloat16 from ml_dtypes
        arr = arr.astype(np.float32)
    return arr


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any], *, compress: bool = False,
              fsync: bool = False) -> None:
    """Atomically write ``{name: array}`` to ``path``."""
    buf = io.BytesIO()
    clean = {k: _portable(k, v) for k, v in arrays.items() if v is not None}
    (np.savez_compressed if compress else np.savez)(buf, **clean)
    atomic_write_bytes(path, buf.getvalue(), fsync=fsync)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an NPZ file eagerly; :class:`ArtifactError` naming the file on failure."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file is missing") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{path}: not a readable NPZ file (truncated or corrupt: {exc})") from None


__all__ = ["ArtifactError", "atomic_write_bytes", "atomic_path", "write_npz", "read_npz"]
