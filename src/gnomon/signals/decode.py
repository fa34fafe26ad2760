"""Decoding a trace into signals: base θ rows through a layout, a θ-map or a callable into named values
(:meth:`gnomon.Signals.from_trace`), plus the trace's diagnostic channels (loss, log_prob, stats)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gnomon.signals.labels import block_labels
from gnomon.signals.signal import Signal, lead_ndim, make_signal


def signals_from_trace(cls: Any, trace: Any, layout_or_decoder: Any, truth: Any, transforms: Sequence[Any],
                       units: Mapping[str, str] | None, diagnostics: bool, crlb: Any) -> Any:
    """The body of :meth:`Signals.from_trace <gnomon.Signals.from_trace>` (``cls`` is the Signals class; the
    arguments are its own)."""
    from gnomon.trace.trace import Trace

    if not isinstance(trace, Trace):
        raise ValueError(f"Signals.from_trace expects a gnomon.Trace, got {type(trace).__name__}")
    if trace.is_batched:
        raise ValueError("Signals.from_trace: a batched trace holds B fits; decode one member (trace[i])")
    kind = trace.kind
    decode, layout = decoder(trace, layout_or_decoder)
    raw = trace.z if trace.z is not None else trace.theta  # a θ-map decodes the engine's rows
    if hasattr(layout_or_decoder, "to_theta"):
        theta = np.asarray(layout_or_decoder.to_theta(raw))
    else:
        theta = np.asarray(trace.decoded_theta())
    unit_map = {b.name: b.units for b in layout.blocks} if layout is not None else {}
    unit_map.update(dict(units or {}))
    if kind == "optimization":
        x = np.asarray(trace.step) if trace.step is not None else np.arange(theta.shape[0])
    else:
        x = np.arange(theta.shape[1])
    out = _parameter_signals(kind, decode(theta), layout, unit_map)
    if diagnostics:
        out += _diagnostic_signals(trace, taken={s.name for s in out})
    sig = cls((), x=x, kind=kind).with_signals(out)
    if truth is not None:
        if not isinstance(truth, Mapping):
            truth = {k: np.asarray(v) for k, v in decode(np.asarray(truth)).items()}
        sig = sig.with_truth(truth)
    if crlb is not None:
        sig = sig.with_sigma(crlb, "CRLB")
    return sig.apply(*transforms) if transforms else sig


def _parameter_signals(kind: str, decoded: Mapping[str, Any], layout: Any, unit_map: Mapping[str, str]) -> list:
    """One ``"parameter"`` signal per decoded name, labelled by the layout's component labels."""
    out: list[Signal] = []
    for name, values in decoded.items():
        arr = np.asarray(values)
        out.append(make_signal(kind, name, arr, units=unit_map.get(name, ""), role="parameter",
                               labels=layout_labels(layout, name, arr.shape[lead_ndim(kind) :])))
    return out


def _diagnostic_signals(trace: Any, taken: set[str]) -> list:
    """``loss`` / ``log_prob`` and the trace's numeric stats channels as ``"diagnostic"`` signals (renamed
    ``trace.<name>`` where a parameter is called the same)."""
    diag: dict[str, Any] = {}
    if trace.loss is not None:
        diag["loss"] = trace.loss
    if trace.log_prob is not None:
        diag["log_prob"] = trace.log_prob
    for k, v in trace.stats.items():
        arr = np.asarray(v)
        if arr.dtype.kind in "biuf":
            diag[k] = arr
    return [make_signal(trace.kind, f"trace.{k}" if k in taken else k, v, role="diagnostic")
            for k, v in diag.items()]


def decoder(trace: Any, spec: Any) -> tuple[Callable[[np.ndarray], Mapping[str, Any]], Any]:
    """``(decode, layout)``: ``decode(θ_base)`` -> ``{name: values}``."""
    from gnomon.thetaspace.layout import Layout

    if spec is None or hasattr(spec, "to_theta"):
        layout = getattr(spec, "layout", None) if spec is not None else None
        layout = layout if isinstance(layout, Layout) else trace.layout
        if layout is None:
            return (lambda th: {"theta": th}), None
        spec = layout
    if isinstance(spec, Layout):
        layout = spec

        def decode(th: np.ndarray) -> dict[str, np.ndarray]:
            # identity blocks are sliced in numpy so that a float64 trace keeps float64 precision even when
            # JAX runs in float32 (an arcsec position near 9.5" would otherwise be quantized to ~1 µas)
            th = np.asarray(th)
            constrained = layout.unpack(th) if not layout.is_identity else {}
            return {
                b.name: th[..., b.start : b.stop].reshape(th.shape[:-1] + b.shape)
                if b.is_identity
                else np.asarray(constrained[b.name], dtype=th.dtype)
                for b in layout.blocks
            }

        return decode, layout
    if callable(spec):

        def decode_fn(th: np.ndarray) -> Mapping[str, Any]:
            out = spec(th)
            if not isinstance(out, Mapping):
                raise ValueError(f"a decoder must return a mapping name -> array, got {type(out).__name__}")
            return {k: np.asarray(v) for k, v in out.items()}

        return decode_fn, trace.layout
    raise ValueError(
        "layout_or_decoder must be a Layout, a θ-map with to_theta, a callable θ -> {name: array} or None; "
        f"got {type(spec).__name__}"
    )


def layout_labels(layout: Any, name: str, comp_shape: tuple[int, ...]) -> list[str] | None:
    """The layout's component labels of block ``name`` when its values have ``comp_shape``, else None."""
    if layout is None or name not in layout or comp_shape == ():
        return None
    b = layout[name]
    labs = block_labels(layout, b)
    return labs if tuple(b.shape) == tuple(comp_shape) and len(labs) == int(np.prod(comp_shape)) else None
