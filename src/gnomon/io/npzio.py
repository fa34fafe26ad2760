"""The one NPZ reader/writer of gnomon artifacts (implemented in :mod:`gnomon.util.files`, re-exported here).

Arrays are written through a file object (``np.savez`` on a path silently appends ``.npz``) into a temporary
file, then ``os.replace``-d. Object arrays are refused; bfloat16 and other non-numpy dtypes are upcast to
float32 (the loader would otherwise see raw bytes). Loading uses ``allow_pickle=False``.
"""

from __future__ import annotations

from gnomon.util.files import read_npz, write_npz

__all__ = ["read_npz", "write_npz"]
