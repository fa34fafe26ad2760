"""The one NPZ reader/writer of gnomon artifacts (implemented in :mod:`gnomon.util.files`, re-exported here).

Arrays are written through a file object (``np.savez`` on a path silently appends ``.npz``) into a temporary
file, then ``os.replace``-d. Object arrays are refused; bfloat16 and other non-numpy dtypes are upcast to
float32 (the loader would otherwise see raw bytes). Loading uses ``allow_pickle=False``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from gnomon.util.files import _portable, read_npz, write_npz


def npz_bytes(arrays: Mapping[str, Any], *, compress: bool = False) -> bytes:
    """The bytes of an NPZ file of ``{name: array}`` (what :func:`write_npz` writes; for files written whole into
    a private staging directory, :func:`gnomon.io.install.write_staged`)."""
    buf = io.BytesIO()
    clean = {k: _portable(k, v) for k, v in arrays.items() if v is not None}
    (np.savez_compressed if compress else np.savez)(buf, **clean)
    return buf.getvalue()


__all__ = ["read_npz", "write_npz", "npz_bytes"]
