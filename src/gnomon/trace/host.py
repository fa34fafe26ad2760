"""The host record of a :class:`~gnomon.Trace` as pytree aux data: ``status``, ``num_grad_evals``,
``runtime_s``, ``info`` and ``extras``, compared by value (a canonical form of mappings, arrays and floats), so
that they survive ``jit``, ``vmap`` and tree maps and a compiled function is reused only for traces whose
record is the same (see "Pytree semantics" in :mod:`gnomon.trace.trace`)."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np


class Host(NamedTuple):
    """The host-only facts of a trace (see :mod:`gnomon.trace.trace`)."""

    status: Any
    num_grad_evals: Any
    runtime_s: float
    info: Mapping[str, Any]
    extras: Mapping[str, Any]


class HostRecord:
    """Carries :class:`Host` through pytree aux data, compared by value: two records are equal when their
    canonical forms (:func:`canonical`) are, so a compiled function is reused only for traces whose record is
    the same, and hands that record back unchanged. The canonical form is computed once per record."""

    __slots__ = ("_hash", "_key", "host")

    def __init__(self, host: Host):
        self.host = host
        self._key: Any = None
        self._hash: int | None = None

    @property
    def key(self) -> Any:
        if self._key is None:
            self._key = canonical(tuple(self.host))
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostRecord) and (other is self or other.key == self.key)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self.key)
        return self._hash


def canonical(x: Any) -> Hashable:
    """A hashable form of a host value that is equal for equal values, each part tagged with its type: mappings
    by their sorted items, sequences item by item, arrays by dtype, shape and a digest of their bytes, floats by
    their exact bits (NaN equal to NaN, −0.0 apart from 0.0), other hashable objects as they are, and anything
    else (a tracer, an unhashable object) by identity."""
    kind = type(x).__qualname__
    if isinstance(x, Mapping):
        items = sorted(((canonical(k), canonical(v)) for k, v in x.items()), key=repr)
        return ("map", kind, tuple(items))
    if isinstance(x, (list, tuple)):
        return ("seq", kind, tuple(canonical(v) for v in x))
    if isinstance(x, (float, np.floating)):
        return ("float", kind, float(x).hex())
    if isinstance(x, (np.ndarray, jax.Array)) and not isinstance(x, jax.core.Tracer):
        a = np.ascontiguousarray(np.asarray(x))
        if a.dtype != object:
            return ("array", kind, a.dtype.str, a.shape, hashlib.sha1(a.view(np.uint8).reshape(-1)).hexdigest())
    try:
        hash(x)
    except TypeError:
        return ("id", kind, id(x))
    return ("value", kind, x)
