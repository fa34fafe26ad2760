"""θ-maps inside a trace: when two maps are the same (:func:`same_map`, and :class:`MapKey`, a map as pytree
aux data) and the base θ of rows in a map's coordinates z (:func:`decode_z`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.thetaspace.eigenmap import EigenMap


class MapKey:
    """A θ-map as aux data: equal by ``(type, content hash)`` when the map has a string ``hash``, else by
    identity (the map object is kept alive by the key)."""

    __slots__ = ("map", "key")

    def __init__(self, thetamap: Any):
        self.map = thetamap
        h = getattr(thetamap, "hash", None)
        self.key = (type(thetamap).__qualname__, h) if isinstance(h, str) else ("id", id(thetamap))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MapKey) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


def same_map(a: Any, b: Any) -> bool:
    """True when two θ-maps are the same map (identity, or equal type and content hash); None is the
    identity map (base θ)."""
    if a is None or b is None:
        return a is None and b is None
    return a is b or MapKey(a) == MapKey(b)


def decode_z(thetamap: Any, z: Any) -> Any:
    """``thetamap.to_theta`` applied to every row of ``z`` ``(..., K)`` -> ``(..., D)`` (numpy in, numpy
    out; jax arrays and tracers stay jax)."""
    host = isinstance(z, np.ndarray)
    z = np.asarray(z) if host else z  # a ZArray's tag must not pass to θ
    if host and isinstance(thetamap, EigenMap) and z.shape[-1] == thetamap.z_dim:  # linear: no device round trip
        dt = z.dtype if np.issubdtype(z.dtype, np.floating) else np.result_type(float)
        return np.asarray(thetamap.theta_ref, dt) + z.astype(dt, copy=False) @ np.asarray(thetamap.basis.T, dt)
    zj = jnp.asarray(z)
    lead, k = zj.shape[:-1], zj.shape[-1]
    flat = zj.reshape(-1, k)
    if flat.shape[0] == 0:
        d = getattr(thetamap, "dim", None)
        d = int(d) if d is not None else int(jnp.shape(thetamap.to_theta(jnp.zeros(k, zj.dtype)))[-1])
        out = jnp.zeros((0, d), zj.dtype)
    else:
        out = jax.vmap(thetamap.to_theta)(flat)
    out = out.reshape(lead + out.shape[-1:])
    return np.asarray(out) if host else out
