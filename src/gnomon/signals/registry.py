"""The registry of named Signals transforms: names → callables, resolved lazily.

A transform is a callable ``Signals -> {name: Signal} | Signals`` (:mod:`gnomon.signals.transforms` builds
them). Registering one under a name (:func:`register_transform`) makes it usable as
``Signals.apply("name")`` / ``Signals.from_trace(..., transforms=["name"])``. A name may be registered
lazily as a string ``"package.module:attribute"`` (or ``"package.module"`` when importing the module registers
the name): the module is imported on first use. A package that declares transform names (e.g.
:mod:`gnomon.recipes`, which declares ``"astrometry"`` when imported) can be imported on demand the first time
a name is unknown by :func:`add_transform_provider`. This module imports no other part of gnomon, so the
layers above it (recipes, your own packages) register into it and it never imports them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

Transform = Callable[[Any], Any]

# name -> callable, or a lazy "module:attribute" / "module" string resolved (and replaced) on first use
_REGISTRY: dict[str, Transform | str] = {}
# modules imported once, on the first unknown name, so that they can register (lazily) their transform names
_PROVIDERS: list[str] = []
_LOADED_PROVIDERS: set[str] = set()


def register_transform(name: str, transform: Transform | str | None = None, *, overwrite: bool = False):
    """Register ``transform`` under ``name`` (usable as a decorator).

    ``transform`` is a callable ``Signals -> {name: Signal} | Signals``, or a lazy import path
    ``"package.module:attribute"`` (or ``"package.module"`` when importing that module registers ``name``
    itself) resolved on first use. A lazy entry is replaced by the callable its module registers, without
    ``overwrite``."""

    def _add(fn: Transform | str) -> Transform | str:
        if isinstance(fn, str):
            if not fn or fn.count(":") > 1 or not fn.split(":")[0] or fn.endswith(":"):
                raise ValueError(
                    f"lazy transform {name!r} must be 'package.module' or 'package.module:attribute', got {fn!r}"
                )
        elif not callable(fn):
            raise ValueError(f"transform {name!r} must be callable, got {fn!r}")
        old = _REGISTRY.get(name)
        if old is None or overwrite or old is fn:
            _REGISTRY[name] = fn
        elif isinstance(old, str) and callable(fn):
            _REGISTRY[name] = fn  # a lazy entry replaced by the callable its module registers
        elif isinstance(fn, str) and callable(old):
            pass  # declared lazily after its module was imported: keep the resolved callable
        elif old != fn:
            raise ValueError(f"a transform named {name!r} is already registered (pass overwrite=True)")
        return fn

    return _add if transform is None else _add(transform)


def add_transform_provider(module: str) -> None:
    """Import ``module`` (once) when a transform name is unknown, before reporting it as unknown.

    A provider declares its names with :func:`register_transform` (lazily, as import paths, to stay cheap)."""
    if not isinstance(module, str) or not module:
        raise ValueError(f"a transform provider must be a module name, got {module!r}")
    if module not in _PROVIDERS:
        _PROVIDERS.append(module)


def _load_providers() -> None:
    for mod in list(_PROVIDERS):
        if mod not in _LOADED_PROVIDERS:
            _LOADED_PROVIDERS.add(mod)
            importlib.import_module(mod)


def available_transforms() -> list[str]:
    """Registered transform names, including those the providers declare (not yet imported)."""
    _load_providers()
    return sorted(_REGISTRY)


def _resolve(name: str) -> Transform:
    entry = _REGISTRY[name]
    if not isinstance(entry, str):
        return entry
    mod, _, attr = entry.partition(":")
    module = importlib.import_module(mod)
    now = _REGISTRY.get(name)
    if callable(now):  # the module registered the name when imported
        return now
    if not attr:
        raise ValueError(f"importing {mod!r} did not register the transform {name!r}")
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"lazy transform {name!r}: module {mod!r} has no attribute {attr!r}") from None
    if not callable(fn):
        raise ValueError(f"lazy transform {name!r}: {entry!r} is not callable")
    _REGISTRY[name] = fn
    return fn


def get_transform(spec: str | Transform) -> Transform:
    """A callable transform from a registered name or the callable itself.

    An unknown name first imports the transform providers (:func:`add_transform_provider`), then a lazy
    entry imports its module."""
    if isinstance(spec, str):
        if spec not in _REGISTRY:
            _load_providers()
        if spec not in _REGISTRY:
            raise ValueError(
                f"unknown transform {spec!r}; registered transforms are {available_transforms()}. A recipe's "
                "transforms are registered when its package is imported (import gnomon.recipes, or use gn.recipes); "
                "add_transform_provider('pkg') imports a package on demand"
            )
        return _resolve(spec)
    if callable(spec):
        return spec
    raise ValueError(f"a transform must be a registered name or a callable Signals -> signals, got {spec!r}")


__all__ = [
    "Transform",
    "register_transform",
    "add_transform_provider",
    "available_transforms",
    "get_transform",
]
