"""Checks of data before anything is compiled: NaN or inf in data or weights is an error, not a diverged run.

:func:`check_finite_data` walks a pytree of data (an array, a mapping ``{"y": ..., "sigma": ...}``, a tuple ...)
and raises a ValueError naming the array (``data['sigma']``) and the first bad index. Objective constructors
call it on bound data and weights; engines call it on per-call data at start. Traced values (inside ``jit``)
and non-float leaves are skipped.

:func:`data_signature` is the hashable structure of data (tree structure, shapes, dtypes): what a compiled
program depends on, so objectives that differ only in the *values* of their data can share one.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def _concrete(leaf: Any) -> np.ndarray | None:
    if isinstance(leaf, jax.core.Tracer):
        return None
    if isinstance(leaf, (bool, str, bytes)) or leaf is None:
        return None
    try:
        a = np.asarray(leaf)
    except Exception:
        return None
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating)):
        return None
    return a


def check_finite_data(data: Any, name: str = "data") -> None:
    """Raise ValueError when a float leaf of ``data`` has a NaN or ±inf entry.

    The message names the leaf (``name`` plus its key path, e.g. ``data['sigma']``), the first bad index
    and what it holds, and how many entries are bad. Returns None when everything is finite."""
    leaves = jax.tree_util.tree_flatten_with_path(data)[0]
    for path, leaf in leaves:
        a = _concrete(leaf)
        if a is None:
            continue
        bad = ~np.isfinite(a)
        if not bad.any():
            continue
        where = name + jax.tree_util.keystr(path)
        count = int(bad.sum())
        if a.ndim == 0:
            raise ValueError(f"{where} is {a.item()!r}; data and weights must be finite")
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{where} has {a[first].item()!r} at index {first} ({count} of {a.size} entries non-finite); "
            "data and weights must be finite (mask bad pixels out of the data instead)"
        )


def data_signature(data: Any) -> tuple:
    """Hashable ``(treedef, ((shape, dtype), ...))`` of ``data``: equal for data a compiled program accepts
    alike (values may differ)."""
    leaves, treedef = jax.tree_util.tree_flatten(data)
    sig = []
    for leaf in leaves:
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            sig.append((tuple(leaf.shape), str(leaf.dtype)))
        elif isinstance(leaf, (bool, int, float, complex)):
            sig.append(((), type(leaf).__name__))
        else:
            sig.append(("static", leaf if _hashable(leaf) else id(leaf)))
    return (treedef, tuple(sig))


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def check_batch_data(obj: Any, data: Any, b: int) -> None:
    """Check the data of a batch of ``b`` fits (every leaf batched on its leading axis) as one fit's data is
    checked — finite, and for a ``from_likelihood`` objective the predicted shape and the family's domain
    (no negative Poisson count, σ > 0) — and name the first bad member: ``ValueError("data of batch member 3:
    ...")``. The leaves go to the host once; each member is then a NumPy view."""
    leaves = jax.tree.leaves(data)
    leading = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in leaves}
    if leading != {b}:
        raise ValueError(f"every data leaf must have leading axis B={b}; got leading sizes {sorted(leading)}")
    host = jax.tree.map(lambda a: a if isinstance(a, jax.core.Tracer) else np.asarray(a), data)
    likelihood = getattr(obj, "likelihood", None)
    for i in range(b):
        member = jax.tree.map(lambda a, i=i: a[i], host)
        where = f"data of batch member {i}"
        try:
            check_finite_data(member, where)
            if likelihood is not None:
                obj.with_data(member)  # the predicted shape and the family's domain, as gn.optimize checks
        except ValueError as exc:
            msg = str(exc)
            if msg.startswith("data: "):  # with_data names the data "data": this is the member's
                msg = msg[len("data: "):]
            raise ValueError(msg if msg.startswith(where) else f"{where}: {msg}") from None
