"""Domain figure recipes: functions ``Signals -> Figure`` built on :mod:`gnomon.plot`.

The plotting core knows nothing of any domain; a recipe names the signals it needs, adds its derived
signals through :mod:`gnomon.signals.transforms` and lays them out with :func:`gnomon.plot.grid`.

Recipes are looked up by name (``gnomon plot RUN --recipe astrometry``) with :func:`get_recipe`; register
your own with :func:`register_recipe`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from gnomon.signals.transforms import register_transform

# name -> callable, or "module:function" imported on first use
_RECIPES: dict[str, Any] = {"astrometry": "gnomon.recipes.astrometry:astrometry"}

# the derived-signal transforms the recipes define, declared lazily: once this package is imported (gn.recipes),
# Signals.from_trace(..., transforms=["astrometry"]) works before gnomon.recipes.astrometry is imported
# (gnomon.signals sits below the recipes and imports none of them)
register_transform("astrometry", "gnomon.recipes.astrometry:add_signals")


def register_recipe(name: str, fn: Callable[..., Any], *, overwrite: bool = False) -> None:
    """Register ``fn(signals, **kwargs) -> Figure`` (or ``{name: Figure}``) under ``name``."""
    if not callable(fn):
        raise ValueError(f"recipe {name!r} must be callable, got {fn!r}")
    if name in _RECIPES and not overwrite:
        raise ValueError(f"a recipe named {name!r} is already registered (pass overwrite=True)")
    _RECIPES[name] = fn


def available_recipes() -> list[str]:
    """Names of the registered figure recipes (e.g. ``"astrometry"``)."""
    return sorted(_RECIPES)


def get_recipe(name: str) -> Callable[..., Any]:
    """The recipe registered under ``name``; ValueError listing the known ones otherwise."""
    try:
        fn = _RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {available_recipes()}") from None
    if isinstance(fn, str):
        mod, attr = fn.split(":")
        fn = getattr(importlib.import_module(mod), attr)
        _RECIPES[name] = fn
    return fn


def __getattr__(name: str) -> Any:
    if name == "astrometry":
        return importlib.import_module("gnomon.recipes.astrometry")
    raise AttributeError(f"module 'gnomon.recipes' has no attribute {name!r}")


__all__ = ["register_recipe", "available_recipes", "get_recipe", "astrometry"]
