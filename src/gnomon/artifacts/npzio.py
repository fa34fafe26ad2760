"""The one NPZ reader/writer of gnomon artifacts: atomic, no pickle, dtypes preserved or recorded.

Arrays are written through a file object (``np.savez`` on a path silently appends ``.npz``) into a temporary
file, then ``os.replace``-d. Object arrays are refused; bfloat16 and other non-numpy dtypes are upcast to
float32 (the loader would otherwise see raw bytes). Loading uses ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gnomon.artifacts.jsonio import ArtifactError, atomic_write_bytes


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
