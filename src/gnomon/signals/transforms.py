"""Derived-signal transforms: callables ``Signals -> {name: Signal}`` and a registry of named ones.

Every transform maps the truth through the same function as the values, so derived signals keep a truth
(and a residual) exactly when their inputs have one. Error-type transforms (:func:`error`,
:func:`fractional_error`, :func:`rms_error`) are NaN-filled with a stable shape when the truth is missing.

Generic building blocks (domain recipes compose them, e.g. :mod:`gnomon.recipes.astrometry`):

* :func:`derive` — ``out = fn(in_1, …, in_n)`` elementwise over rows (chains), truth ``fn(t_1, …, t_n)``;
* :func:`error` — ``v − t`` in a chosen unit (``"µas"`` for arcsec parameters), truth 0;
* :func:`fractional_error` — ``(v − t) / t`` in ``"ppm"`` (or ``"%"``, ``"frac"``), truth 0;
* :func:`summary` — RMS ``sqrt(mean_k v_k²)``, norm ``sqrt(Σ_k v_k²)`` or mean-abs ``mean_k |v_k|`` of a
  vector signal, truth the same summary of the truth;
* :func:`rms_error` — ``sqrt(mean_k (v_k − t_k)²)`` (NaN without truth), truth 0;
* :func:`component` — one component of a vector signal as a scalar signal.

Register a transform under a name with :func:`register_transform` to refer to it by that name in
``Signals.from_trace(..., transforms=["name"])``. A name may also be registered lazily as a string
``"package.module:attribute"`` (or ``"package.module"`` when importing the module registers the name): the
module is imported on first use. When a name is unknown, the *transform providers*
(:func:`add_transform_provider`; by default the package ``gnomon.recipes``, which declares its recipes'
transform names lazily) are imported once and the lookup retried, so ``transforms=["astrometry"]`` works
without importing the recipe first. This module imports no provider at import time and names no domain.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gnomon.signals.signals import Signal, Signals
from gnomon.thetaspace import units as U

Transform = Callable[[Signals], Any]

# name -> callable, or a lazy "module:attribute" / "module" string resolved (and replaced) on first use
_REGISTRY: dict[str, Transform | str] = {}
# modules imported once, on the first unknown name, so that they can register (lazily) their transform names
_PROVIDERS: list[str] = ["gnomon.recipes"]
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
                f"unknown transform {spec!r}; registered transforms are {available_transforms()} "
                f"(providers imported on demand: {_PROVIDERS}; add one with add_transform_provider)"
            )
        return _resolve(spec)
    if callable(spec):
        return spec
    raise ValueError(f"a transform must be a registered name or a callable Signals -> signals, got {spec!r}")


def _new(
    sig: Signals,
    name: str,
    values: Any,
    *,
    units: str,
    truth: Any,
    labels: Sequence[str] | None,
    role: str = "derived",
) -> Signal:
    return sig._make(name, values, units=units, truth=truth, labels=labels, role=role)


def derive(
    name: str,
    fn: Callable[..., Any],
    inputs: Sequence[str],
    units: str = "",
    labels: Sequence[str] | None = None,
) -> Transform:
    """``name = fn(*inputs)`` applied to the natural-shape values (leading row/chain axes kept, so ``fn``
    must act on the trailing component axis only) and to the inputs' truths when all of them are known."""
    inputs = list(inputs)

    def transform(sig: Signals) -> dict[str, Signal]:
        missing = [n for n in inputs if n not in sig]
        if missing:
            raise ValueError(f"transform {name!r} needs signal(s) {missing}; signals are {list(sig.names)}")
        vals = fn(*[sig[n].values for n in inputs])
        truths = [sig[n].truth_value for n in inputs]
        truth = fn(*truths) if all(t is not None for t in truths) else None
        return {name: _new(sig, name, np.asarray(vals), units=units, truth=truth, labels=labels)}

    transform.__name__ = f"derive[{name}]"
    return transform


def _source(sig: Signals, source: str, what: str) -> Signal:
    if source not in sig:
        raise ValueError(f"{what}: no signal {source!r}; signals are {list(sig.names)}")
    return sig[source]


def error(source: str, name: str | None = None, units: str | None = None) -> Transform:
    """``name = source − truth`` expressed in ``units`` (default: the source's units). Truth 0 when the source
    has a truth; NaN values (same shape) otherwise."""

    def transform(sig: Signals) -> dict[str, Signal]:
        s = _source(sig, source, "error")
        out_units = U.normalize_unit(units) if units is not None else s.units
        factor = U.conversion_factor(s.units, out_units) if units is not None else 1.0
        vals = s.residual * factor
        truth = None if s.truth is None else np.zeros(s.values.shape[sig._lead_ndim() :])
        out = name or f"{source}_error"
        return {out: _new(sig, out, vals, units=out_units, truth=truth, labels=s.labels)}

    transform.__name__ = f"error[{source}]"
    return transform


def fractional_error(source: str, name: str | None = None, units: str = "ppm") -> Transform:
    """``name = (source − truth) / truth`` in ``units`` (``"ppm"`` → ×1e6, ``"%"``, ``"frac"``). Truth 0 when
    the source has a truth; NaN values otherwise."""
    if U.family(units) != "fraction":
        raise ValueError(f"fractional_error units must be a fraction unit (frac, %, ppm, ppb), got {units!r}")

    def transform(sig: Signals) -> dict[str, Signal]:
        s = _source(sig, source, "fractional_error")
        factor = U.conversion_factor("frac", units)
        if s.truth is None:
            vals, truth = s.residual, None
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                vals = s.residual / s.truth_value * factor
            truth = np.zeros(s.values.shape[sig._lead_ndim() :])
        out = name or f"{source}_error_{U.normalize_unit(units)}"
        return {out: _new(sig, out, vals, units=U.normalize_unit(units), truth=truth, labels=s.labels)}

    transform.__name__ = f"fractional_error[{source}]"
    return transform


_SUMMARIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "rms": lambda a: np.sqrt(np.mean(np.square(a), axis=-1)),
    "norm": lambda a: np.sqrt(np.sum(np.square(a), axis=-1)),
    "meanabs": lambda a: np.mean(np.abs(a), axis=-1),
}


def summarize(a: np.ndarray, how: str = "rms") -> np.ndarray:
    """RMS, Euclidean norm or mean-abs over the last axis."""
    try:
        return _SUMMARIES[how](np.asarray(a, dtype=float))
    except KeyError:
        raise ValueError(f"summary must be one of {sorted(_SUMMARIES)}, got {how!r}") from None


def summary(source: str, how: str = "rms", name: str | None = None) -> Transform:
    """``name = how(source)`` over the component axis (``"rms"``, ``"norm"``, ``"meanabs"``)."""
    summarize(np.zeros(1), how)  # validate early

    def transform(sig: Signals) -> dict[str, Signal]:
        s = _source(sig, source, "summary")
        vals = summarize(s.data, how)
        vals = vals if s.chains else vals[0]
        truth = None if s.truth is None else summarize(s.truth, how)
        out = name or f"{source}_{how}"
        return {out: _new(sig, out, vals, units=s.units, truth=truth, labels=None)}

    transform.__name__ = f"summary[{source},{how}]"
    return transform


def rms_error(source: str, name: str | None = None, units: str | None = None) -> Transform:
    """``name = sqrt(mean_k (v_k − t_k)²)`` in ``units`` (default the source's); NaN without truth."""

    def transform(sig: Signals) -> dict[str, Signal]:
        s = _source(sig, source, "rms_error")
        out_units = U.normalize_unit(units) if units is not None else s.units
        factor = U.conversion_factor(s.units, out_units) if units is not None else 1.0
        r = s.data - s.truth if s.truth is not None else np.full(s.data.shape, np.nan)
        vals = summarize(r, "rms") * factor
        vals = vals if s.chains else vals[0]
        truth = None if s.truth is None else 0.0
        out = name or f"{source}_rms_error"
        return {out: _new(sig, out, vals, units=out_units, truth=truth, labels=None)}

    transform.__name__ = f"rms_error[{source}]"
    return transform


def component(source: str, index: int, name: str | None = None) -> Transform:
    """Component ``index`` of a vector signal as a scalar signal."""

    def transform(sig: Signals) -> dict[str, Signal]:
        s = _source(sig, source, "component")
        k = s.num_components
        if not -k <= index < k:
            raise ValueError(f"component: index {index} out of range for {source!r} with {k} components")
        vals = s.data[..., index]
        vals = vals if s.chains else vals[0]
        truth = None if s.truth is None else s.truth[index]
        out = name or s.labels[index]
        return {out: _new(sig, out, vals, units=s.units, truth=truth, labels=None)}

    transform.__name__ = f"component[{source},{index}]"
    return transform


def relabel(source: str, labels: Sequence[str]) -> Transform:
    """Replace the component labels of ``source`` (e.g. Noll indices ``Z4 … Z11`` for a Zernike block)."""

    def transform(sig: Signals) -> Signals:
        from dataclasses import replace

        s = _source(sig, source, "relabel")
        if len(labels) != s.num_components:
            raise ValueError(
                f"relabel: {len(labels)} labels for {source!r} with {s.num_components} components"
            )
        return sig.with_signals([replace(s, labels=tuple(str(x) for x in labels))], replace_existing=True)

    return transform


__all__ = [
    "Transform",
    "register_transform",
    "add_transform_provider",
    "available_transforms",
    "get_transform",
    "derive",
    "error",
    "fractional_error",
    "summary",
    "summarize",
    "rms_error",
    "component",
    "relabel",
]
