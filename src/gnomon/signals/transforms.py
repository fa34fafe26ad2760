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
* :func:`residual_in_sigma` — ``(v − t) / σ``, the residual in units of its Cramér–Rao bound or posterior
  sd, truth 0;
* :func:`component` — one component of a vector signal as a scalar signal.

The 1σ scale of a signal (``Signal.sigma``: a CRLB or a posterior sd) follows the values: an error in
another unit carries σ in that unit, a fractional error ``σ / |t|``, a component its own σ, an RMS error
``sqrt(mean_k σ_k²)`` (the RMS error expected at the bound). Error transforms mark their output
``is_error`` (already a deviation from the truth).

Named transforms live in :mod:`gnomon.signals.registry` (re-exported here): :func:`register_transform`,
:func:`get_transform`, :func:`available_transforms`, :func:`add_transform_provider`. A recipe package
registers its transforms when imported (``gnomon.recipes`` declares ``"astrometry"``); this module imports
no recipe and names no domain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gnomon.signals.registry import (
    Transform,
    add_transform_provider,
    available_transforms,
    get_transform,
    register_transform,
)
from gnomon.signals.signals import Signal, Signals
from gnomon.thetaspace import units as U


def _new(
    sig: Signals,
    name: str,
    values: Any,
    *,
    units: str,
    truth: Any,
    labels: Sequence[str] | None,
    role: str = "derived",
    sigma: Any = None,
    sigma_source: str = "",
    is_error: bool = False,
) -> Signal:
    return sig._make(name, values, units=units, truth=truth, labels=labels, role=role, sigma=sigma,
                     sigma_source=sigma_source, is_error=is_error)


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
    """``name = source − truth`` expressed in ``units`` exactly as given (default: the source's units). Truth 0
    when the source has a truth; NaN values (same shape) otherwise. The output is an error signal
    (``is_error``) and carries the source's σ in ``units``."""

    def transform(sig: Signals) -> dict[str, Signal]:
        s = _source(sig, source, "error")
        out_units = U.normalize_unit(units) if units is not None else s.units
        factor = U.conversion_factor(s.units, out_units) if units is not None else 1.0
        vals = (s.values if s.is_error else s.residual) * factor
        truth = None if s.truth is None else np.zeros(s.values.shape[sig._lead_ndim() :])
        out = name or f"{source}_error"
        sg = None if s.sigma is None else s.sigma * abs(factor)
        return {out: _new(sig, out, vals, units=out_units, truth=truth, labels=s.labels, sigma=sg,
                          sigma_source=s.sigma_source, is_error=True)}

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
        sg = None
        if s.truth is None:
            vals, truth = s.residual, None
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                vals = s.residual / s.truth_value * factor
                if s.sigma is not None:
                    sg = s.sigma / np.abs(s.truth) * factor
            truth = np.zeros(s.values.shape[sig._lead_ndim() :])
        out = name or f"{source}_error_{U.normalize_unit(units)}"
        return {out: _new(sig, out, vals, units=U.normalize_unit(units), truth=truth, labels=s.labels, sigma=sg,
                          sigma_source=s.sigma_source, is_error=True)}

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
    """``name = sqrt(mean_k (v_k − t_k)²)`` in ``units`` (default the source's); NaN without truth. Its σ is
    ``sqrt(mean_k σ_k²)``, the RMS error expected when every component errs at its bound."""

    def transform(sig: Signals) -> dict[str, Signal]:
        s = _source(sig, source, "rms_error")
        out_units = U.normalize_unit(units) if units is not None else s.units
        factor = U.conversion_factor(s.units, out_units) if units is not None else 1.0
        r = s.data - s.truth if s.truth is not None else np.full(s.data.shape, np.nan)
        vals = summarize(r, "rms") * factor
        vals = vals if s.chains else vals[0]
        truth = None if s.truth is None else 0.0
        out = name or f"{source}_rms_error"
        sg = None if s.sigma is None else float(np.sqrt(np.mean(np.square(s.sigma)))) * abs(factor)
        return {out: _new(sig, out, vals, units=out_units, truth=truth, labels=None, sigma=sg,
                          sigma_source=s.sigma_source, is_error=True)}

    transform.__name__ = f"rms_error[{source}]"
    return transform


def residual_in_sigma(source: str, sigma: Any = None, name: str | None = None) -> Transform:
    """``name = (source − truth) / σ``: the residual in units of its 1σ scale (unit ``"σ"``, truth 0).

    σ is ``sigma`` when given (one value, or one per component), else the source's ``Signal.sigma`` (a
    Cramér–Rao bound set by ``Signals.from_trace(..., crlb=...)`` or :meth:`Signals.with_sigma`), else for
    sampler chains the posterior sd of the source. Values are NaN where the truth or σ is unknown. Default
    name ``<source>_z``."""

    def transform(sig: Signals) -> dict[str, Signal]:
        s = _source(sig, source, "residual_in_sigma")
        if sigma is not None:
            sg, src = np.broadcast_to(np.asarray(sigma, dtype=float).reshape(-1), (s.num_components,)), "given"
        elif s.sigma is not None:
            sg, src = s.sigma, s.sigma_source
        elif s.chains:
            sg, src = s.spread(), "posterior sd"
        else:
            sg, src = np.full(s.num_components, np.nan), ""
        r = s.data if s.is_error else (s.data - s.truth if s.truth is not None else np.full(s.data.shape, np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = r / np.where(np.asarray(sg) > 0, sg, np.nan)
        vals = vals if s.chains else vals[0]
        vals = vals[..., 0] if s.scalar else vals
        truth = None if s.truth is None else np.zeros(s.values.shape[sig._lead_ndim() :])
        out = name or f"{source}_z"
        return {out: _new(sig, out, vals, units="σ", truth=truth, labels=s.labels, sigma=1.0,
                          sigma_source=src, is_error=True)}

    transform.__name__ = f"residual_in_sigma[{source}]"
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
        sg = None if s.sigma is None else s.sigma[index]
        return {out: _new(sig, out, vals, units=s.units, truth=truth, labels=None, sigma=sg,
                          sigma_source=s.sigma_source, is_error=s.is_error)}

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
    "residual_in_sigma",
    "component",
    "relabel",
]
