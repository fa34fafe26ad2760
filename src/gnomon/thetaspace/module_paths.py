"""Leaves of an equinox module (dLux, zodiax) named by zodiax-style dotted paths; equinox imported lazily.

A path is a dot-separated string (``"source.position"``, ``"aperture.coefficients"``,
``"layers.aperture.coefficients"``). Each part is resolved as zodiax resolves it (``zodiax.Base.get``): an
attribute when the object has one (so dLux's attribute forwarding — ``telescope.aperture`` reaching the
optics' layer of that name — works), else a dict key, else a list/tuple index. The resolved object must be
a floating-point array (or a Python float): gnomon's θ is a float vector.

:func:`set_leaves` returns a *new* module with the leaves replaced (``equinox.tree_at``; the module is not
mutated) and works under ``jit``, ``grad`` and ``vmap`` because it only rearranges the pytree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np


class LeafInfo(NamedTuple):
    """What a path holds: its shape and dtype (as read from the module)."""

    shape: tuple[int, ...]
    dtype: str


def split_path(path: str) -> tuple[str, ...]:
    """``"source.position"`` → ``("source", "position")``; ValueError for empty parts."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"a module path must be a non-empty dotted string, got {path!r}")
    parts = tuple(path.split("."))
    if any(not p for p in parts):
        raise ValueError(f"module path {path!r} has an empty part")
    return parts


def _children(obj: Any) -> list[str]:
    if dataclasses.is_dataclass(obj):
        names = [f.name for f in dataclasses.fields(obj)]
        layers = getattr(obj, "__dict__", {}).get("layers")
        if isinstance(layers, dict):  # dLux layered systems forward their layers' keys
            names += [f"{k} (layer)" for k in layers]
        return names
    if isinstance(obj, dict):
        return [str(k) for k in obj]
    if isinstance(obj, (list, tuple)):
        return [str(i) for i in range(len(obj))]
    return []


def _step(obj: Any, key: str, path: str, done: tuple[str, ...]) -> Any:
    try:
        if hasattr(obj, key):
            return getattr(obj, key)
    except Exception:  # a forwarding __getattr__ that raises something other than AttributeError
        pass
    if isinstance(obj, dict) and key in obj:
        return obj[key]
    if isinstance(obj, (list, tuple)):
        try:
            return obj[int(key)]
        except (ValueError, IndexError):
            pass
    where = ".".join(done) or "the module"
    raise ValueError(
        f"module path {path!r}: {where} ({type(obj).__name__}) has no {key!r}; "
        f"it has {_children(obj) or 'no named children'}"
    )


def resolve(module: Any, path: str) -> Any:
    """The object at ``path`` in ``module`` (zodiax semantics, see the module docstring)."""
    parts = split_path(path)
    obj = module
    for i, key in enumerate(parts):
        obj = _step(obj, key, path, parts[:i])
    return obj


def leaf_info(module: Any, path: str) -> LeafInfo:
    """Shape and dtype of the float leaf at ``path``; ValueError when it is not a float array."""
    leaf = resolve(module, path)
    if isinstance(leaf, bool) or leaf is None:
        raise ValueError(f"module path {path!r} holds {leaf!r}, not a float array")
    if isinstance(leaf, float):
        return LeafInfo((), "float")
    if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
        raise ValueError(
            f"module path {path!r} holds a {type(leaf).__name__} object, not an array leaf; name one of its "
            f"array fields (it has {_children(leaf) or 'none'})"
        )
    if not np.issubdtype(np.dtype(leaf.dtype), np.floating):
        raise ValueError(
            f"module path {path!r} holds a {leaf.dtype} array; only floating-point leaves can be parameters"
        )
    return LeafInfo(tuple(int(s) for s in leaf.shape), str(np.dtype(leaf.dtype)))


def named_paths(paths: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """``name -> path`` from a sequence of paths (names = paths) or a mapping; checked for repeats."""
    if isinstance(paths, str):
        raise ValueError(f"paths must be a list of dotted paths (or a mapping name -> path), got the string {paths!r}")
    if isinstance(paths, Mapping):
        named = {str(k): v for k, v in paths.items()}
    else:
        named = {p: p for p in paths}
        if len(named) != len(list(paths)):
            dup = sorted({p for p in paths if list(paths).count(p) > 1})
            raise ValueError(f"module path(s) {dup} given more than once")
    if not named:
        raise ValueError("Layout.from_module needs at least one module path")
    for p in named.values():
        split_path(p)
    inverse: dict[str, str] = {}
    for name, p in named.items():
        if p in inverse:
            raise ValueError(f"parameters {inverse[p]!r} and {name!r} name the same module path {p!r}")
        inverse[p] = name
    return named


def leaf_infos(module: Any, named: Mapping[str, str]) -> dict[str, LeafInfo]:
    """Shape and dtype of each named path's leaf; ValueError when two paths reach one leaf object."""
    out: dict[str, LeafInfo] = {}
    seen: dict[int, str] = {}
    for name, p in named.items():
        out[name] = leaf_info(module, p)
        leaf = resolve(module, p)
        if not isinstance(leaf, float):
            if id(leaf) in seen:
                raise ValueError(
                    f"module paths {named[seen[id(leaf)]]!r} and {p!r} reach the same leaf; name it once"
                )
            seen[id(leaf)] = name
    return out


def set_leaves(module: Any, paths: Sequence[str], values: Sequence[Any]) -> Any:
    """A new module with the leaf at each path replaced by the matching value (``equinox.tree_at``)."""
    import equinox as eqx

    paths = list(paths)

    def where(m):
        return tuple(resolve(m, p) for p in paths)

    try:
        return eqx.tree_at(where, module, tuple(values), is_leaf=lambda x: x is None)
    except ValueError as exc:
        raise ValueError(
            f"cannot set the leaves at {paths} in the {type(module).__name__} (two paths naming one leaf, or a "
            f"path that is not a leaf of this module?): {exc}"
        ) from None


#: ``model_units={name: SAME}``: the model takes the block in the user's units (no conversion)
SAME = "same"


def needs_model_units(unit: str) -> bool:
    """True for a unit that names a scale a model could read otherwise (µas, nm, deg, ppm, ph, ...); False for
    none (``""``) and for the plain number (``"1"``, ``"frac"``)."""
    from gnomon.thetaspace.units import conversion_factor, family

    if not unit:
        return False
    if family(unit) == "fraction":
        try:
            return conversion_factor(unit, "1") != 1.0
        except ValueError:
            return True
    return True


def check_model_units(named: Mapping[str, str], units: Mapping[str, str] | None,
                      model_units: Mapping[str, str] | None, affine: Mapping[str, Any] | None) -> None:
    """ValueError when a block of :meth:`Layout.from_module` has physical ``units`` but says nothing about the
    units its module leaf takes (neither ``model_units`` nor ``affine``): θ in µas would otherwise reach a model
    that reads radians as if they were radians. The error names each such block, its path and the three ways
    to say it (a unit conversion, any other map, or ``"same"``)."""
    units, model_units, affine = dict(units or {}), dict(model_units or {}), dict(affine or {})
    silent = [name for name in named if needs_model_units(str(units.get(name) or ""))
              and name not in model_units and name not in affine]
    if not silent:
        return
    shown = ", ".join(f"{n!r} in {units[n]!r} (path {named[n]!r})" for n in silent[:6])
    more = f" and {len(silent) - 6} more" if len(silent) > 6 else ""
    first = silent[0]
    raise ValueError(
        f"Layout.from_module: {shown}{more} {'has' if len(silent) == 1 else 'have'} units but no model_units: "
        f"gnomon cannot know what units the module's leaf takes, and would pass θ in {units[first]!r} to the model "
        f"unchanged. Say it: model_units={{{first!r}: 'rad'}} (the model's unit, converted through the unit "
        f"registry), affine={{{first!r}: gn.Affine(...)}} for any other map, or model_units={{{first!r}: 'same'}} "
        f"when the model takes {units[first]!r} itself"
    )
