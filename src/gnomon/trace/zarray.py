"""`ZArray`: rows in a θ-map's coordinates z, tagged with their map so that they cannot pass for θ.

An engine run on ``obj.reparameterize(thetamap)`` works in coordinates z with ``θ = thetamap.to_theta(z)``.
A trace keeps those rows under names that say z (``trace.z``, ``best_z``, ``final_z``, ``warmup["z"]``) and
returns them as a :class:`ZArray`: a plain numpy array (slicing, arithmetic and reductions keep the tag)
whose ``z_of`` attribute is the map. :meth:`gnomon.Layout.unpack` refuses an array with a ``z_of`` tag, so
``layout.unpack(trace.best_z)`` raises instead of returning nonsense; ``np.asarray(z)`` drops the tag (the
caller then says explicitly that it knows what the numbers are).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ZArray(np.ndarray):
    """A numpy array of coordinates z of the θ-map ``z_of`` (not base θ; decode with ``z_of.to_theta``)."""

    z_of: Any

    def __new__(cls, rows: Any, thetamap: Any) -> ZArray:
        out = np.asarray(rows).view(cls)
        out.z_of = thetamap
        return out

    def __array_finalize__(self, obj: Any) -> None:
        self.z_of = getattr(obj, "z_of", None)

    def __reduce__(self):  # copy / deepcopy / pickle keep the tag
        fn, args, state = super().__reduce__()
        return fn, args, (state, self.z_of)

    def __setstate__(self, state):
        base, self.z_of = state
        super().__setstate__(base)


def tag_z(rows: Any, thetamap: Any) -> Any:
    """``rows`` as a :class:`ZArray` of ``thetamap`` when they are a host numpy array; otherwise unchanged
    (jax arrays and tracers cannot carry a tag)."""
    if isinstance(rows, np.ndarray) and thetamap is not None:
        return rows if isinstance(rows, ZArray) and rows.z_of is thetamap else ZArray(rows, thetamap)
    return rows
