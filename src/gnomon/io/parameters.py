"""Per-parameter summary scalars of a run: estimate, sd, CRLB, truth and z per named component.

:func:`parameter_summary` is what :func:`gnomon.save_run` writes into ``summary.json`` so that a table of many
runs (:meth:`gnomon.Experiment.aggregate` with ``params=``) still reads only ``summary.json``. For every
component of every layout block, labelled ``<label>`` (:func:`parameter_labels`: the layout's index labels,
e.g. ``binary.separation_as`` or ``primary.zernike_coeffs_nm[Z7]``, or the component labels the layout
carries), the keys are

==================  =============================================================================================
key                 value (in the block's units, constrained values ``layout.unpack(θ)``)
==================  =============================================================================================
``estimate.<l>``    the MAP — the best row of an optimization run — or the posterior mean of a sampling run
``sd.<l>``          the posterior standard deviation (sampling runs)
``crlb.<l>``        the Cramér–Rao bound given to ``save_run(crlb=...)``
``truth.<l>``       the true value given to ``save_run(truth=...)``
``z.<l>``           ``(estimate − truth) / σ`` with σ the CRLB when given, else the posterior sd
==================  =============================================================================================

A CRLB is a mapping ``label → value`` (or ``block name → array`` of the block's shape) or any object with
``to_summary() -> {"crlb.<label>": value}`` (the forward-model CRLB result); such an object's labels beyond the
layout's are its derived quantities (``gn.cramer_rao(..., derived=...)``). A derived quantity is a parameter
in the outputs: when the object can evaluate it (:meth:`gnomon.curvature.crlb.CramerRao.derived_at`) its
label gets ``estimate`` (at the fit's best point — the estimate whose spread the delta-method bound describes
— or the posterior mean over the draws), ``sd`` (over the draws), ``crlb``, ``truth`` (the function at the
truth given for the parameters) and ``z``, exactly as a named parameter does.
A truth is a mapping ``block name → value`` (constrained, the block's shape), ``label → value``, or a flat
base-θ vector.

Run-level keys from a CRLB object: ``crlb_max_ratio`` (largest marginal/conditional ratio) and, when a
parameter is nearly degenerate, ``crlb_degenerate`` (:func:`gnomon.cramer_rao`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from gnomon.signals.labels import (  # noqa: F401  (re-exported: the labels of summary keys)
    MAX_COMPONENTS,
    block_labels,
    block_size,
    default_component_labels,
    parameter_labels,
)

PREFIXES = ("estimate", "sd", "crlb", "truth", "z")


def base_theta(trace: Any) -> np.ndarray:
    """The trace's rows in base θ (decoded through its θ-map when the rows are the map's coordinates)."""
    if getattr(trace, "thetamap", None) is not None and getattr(trace, "z", None) is None:
        return np.asarray(trace.decoded_theta())
    return np.asarray(trace.theta)


_NUMPY_TRANSFORMS = {  # elementwise transforms evaluated in NumPy (float64 rows keep float64; no JAX dispatch)
    "positive": lambda u, spec: np.exp(u),
    "softplus_positive": lambda u, spec: np.logaddexp(u, 0.0),
    "greater_than": lambda u, spec: spec[1] + np.exp(u),
    "less_than": lambda u, spec: spec[1] - np.exp(u),
}


def constrained(layout: Any, theta: np.ndarray) -> dict[str, np.ndarray]:
    """``{block: (*rows, K)}`` constrained values of θ rows. Identity blocks are sliced and the elementwise
    transforms (positive, softplus, greater/less than) evaluated in NumPy — a float64 trace keeps float64
    precision even when JAX runs in float32, and a run's summary costs no JAX dispatch; other transforms go
    through ``layout.unpack``."""
    theta = np.asarray(theta)
    lead = theta.shape[:-1]
    out: dict[str, np.ndarray] = {}
    unpacked = None
    for b in layout.blocks:
        u = theta[..., b.start : b.stop]
        fast = _NUMPY_TRANSFORMS.get(b.transform[0]) if b.theta_shape == b.shape else None
        if b.is_identity:
            v = u
        elif fast is not None:
            with np.errstate(over="ignore"):
                v = fast(u, b.transform).astype(theta.dtype, copy=False)
        else:
            if unpacked is None:
                unpacked = layout.unpack(theta)
            v = np.asarray(unpacked[b.name], dtype=theta.dtype)
        out[b.name] = v.reshape(lead + (block_size(b.shape),))
    return out


def _crlb_values(crlb: Any, layout: Any, labels: list[tuple[str, int, str]]) -> tuple[dict, dict]:
    """``(bounds by parameter label, bounds of derived quantities)``. Derived quantities come only from a CRLB
    object (``gn.cramer_rao(..., derived=...)``), whose labels past the layout's are its derived names; a mapping
    must name parameters (an unknown key there is more likely a typo than a derived quantity)."""
    if crlb is None:
        return {}, {}
    if hasattr(crlb, "to_summary") and callable(crlb.to_summary):
        raw = {k[len("crlb.") :] if k.startswith("crlb.") else k: v for k, v in crlb.to_summary().items()}
        known = {lab for _, _, lab in labels} | ({b.name for b in layout.blocks} if layout is not None else set())
        derived = {k: float(v) for k, v in raw.items() if k not in known}
        return _by_label("crlb", {k: v for k, v in raw.items() if k in known}, layout, labels), derived
    elif isinstance(crlb, Mapping):
        raw = dict(crlb)
    else:
        raise ValueError(
            "crlb must be a mapping label -> value (or block name -> array) or an object with to_summary(), "
            f"got {type(crlb).__name__}"
        )
    return _by_label("crlb", raw, layout, labels), {}


def _by_label(what: str, raw: Mapping[str, Any], layout: Any, labels: list[tuple[str, int, str]]) -> dict[str, float]:
    """``{label: float}`` from a mapping keyed by labels or by block names (arrays of the block's shape)."""
    by_label = {lab for _, _, lab in labels}
    blocks = {} if layout is None else {b.name: b for b in layout.blocks}
    out: dict[str, float] = {}
    unknown = []
    for key, val in raw.items():
        if key in by_label and (key not in blocks or np.size(val) == 1):
            out[key] = float(np.asarray(val, dtype=float).reshape(()))
        elif key in blocks:
            arr = np.asarray(val, dtype=float).reshape(-1)
            labs = [lab for name, _, lab in labels if name == key]
            if arr.size == 1 and len(labs) > 1:
                arr = np.full(len(labs), arr[0])
            if arr.size != len(labs):
                raise ValueError(
                    f"{what} for {key!r} has {arr.size} values; the block has {len(labs)} components"
                )
            out.update(zip(labs, arr.tolist()))
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{what} given for unknown parameter(s) {sorted(unknown)[:8]}; labels are "
            f"{[lab for _, _, lab in labels][:12]}{' …' if len(labels) > 12 else ''}"
        )
    return out


def _named_keys(crlb: Any) -> list[str]:
    if crlb is None:
        return []
    if hasattr(crlb, "labels"):
        return [str(x) for x in crlb.labels]
    return [str(k) for k in crlb] if isinstance(crlb, Mapping) else []


def _truth_values(truth: Any, layout: Any, labels: list[tuple[str, int, str]]) -> dict[str, float]:
    if truth is None:
        return {}
    if isinstance(truth, Mapping):
        return _by_label("truth", truth, layout, labels)
    vec = np.asarray(truth, dtype=float)
    size = layout.size if layout is not None else len(labels)
    if vec.shape != (size,):
        raise ValueError(
            f"truth must be a mapping name -> value or a flat base θ of shape ({size},), got shape {vec.shape}"
        )
    if layout is None:
        return {lab: float(v) for (_, _, lab), v in zip(labels, vec)}
    vals = constrained(layout, vec)
    return {lab: float(vals[name][k]) for name, k, lab in labels}


def _truth_theta(truth: Any, layout: Any, labels: list[tuple[str, int, str]]) -> np.ndarray | None:
    """The truth as one base-θ vector (for derived quantities), or None when it does not name every parameter."""
    if truth is None:
        return None
    if not isinstance(truth, Mapping):
        return np.asarray(truth, dtype=float)
    if layout is None:
        try:
            return np.asarray([float(truth[lab]) for _, _, lab in labels])
        except KeyError:
            return None
    values: dict[str, Any] = {}
    for b in layout.blocks:
        if b.name in truth:
            arr = np.asarray(truth[b.name], dtype=float)
            values[b.name] = arr.reshape(b.shape) if arr.size == block_size(b.shape) else np.broadcast_to(arr, b.shape)
        else:
            labs = [lab for name, _, lab in labels if name == b.name]
            if not all(lab in truth for lab in labs):
                return None
            values[b.name] = np.asarray([float(truth[lab]) for lab in labs]).reshape(b.shape)
    try:
        return np.asarray(layout.pack(values), dtype=float)
    except ValueError:  # a value outside a transform's support: no θ for it, so no derived truth
        return None


def _derived(crlb: Any, layout: Any, rows: np.ndarray, truth: Any, labels: list, sampling: bool
             ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """``(estimate, sd, truth)`` of the CRLB object's derived quantities by label (empty without them)."""
    at = getattr(crlb, "derived_at", None)
    if at is None or not getattr(crlb, "derived", ()):
        return {}, {}, {}
    if getattr(crlb, "on_layout", False) and layout is None:  # functions of the layout's values, and none here
        return {}, {}, {}
    vals = at(rows, layout)
    est, sd = {}, {}
    for lab, col in vals.items():
        col = np.asarray(col, dtype=np.float64)
        with np.errstate(all="ignore"):
            if sampling:
                est[lab] = float(np.nanmean(col)) if np.isfinite(col).any() else math.nan
                sd[lab] = float(np.nanstd(col, ddof=1)) if np.isfinite(col).sum() > 1 else math.nan
            else:
                est[lab] = float(col[0])
    truths = {}
    t = _truth_theta(truth, layout, labels)
    if t is not None:
        truths = {lab: float(v[0]) for lab, v in at(t[None], layout).items()}
    return est, sd, truths


def _z(est: float, truth: float, sigma: float) -> float:
    with np.errstate(all="ignore"):
        return float((est - truth) / sigma) if sigma and math.isfinite(sigma) else math.nan


def parameter_summary(trace: Any, layout: Any = None, *, crlb: Any = None, truth: Any = None) -> dict[str, Any]:
    """The per-parameter keys of the module docstring for a single (unbatched) trace (plus the run-level CRLB
    scalars of a CRLB object)."""
    layout = layout if layout is not None else getattr(trace, "layout", None)
    theta = base_theta(trace)
    if layout is None:
        labels = full = [("theta", k, f"theta[{k}]") for k in range(theta.shape[-1])]
    else:
        labels = full = parameter_labels(layout)
        named = set(_named_keys(crlb)) | (set(truth) if isinstance(truth, Mapping) else set())
        small = {b.name for b in layout.blocks if block_size(b.shape) <= MAX_COMPONENTS}
        if len(small) < len(layout.blocks):
            labels = [t for t in labels if t[0] in small or t[0] in named or t[2] in named]
    sampling = trace.kind == "sampling"
    if sampling:
        rows = theta.reshape(-1, theta.shape[-1])
    else:
        rows = theta[int(trace.best_index)][None]
    vals = constrained(layout, rows) if layout is not None else {"theta": rows}
    out: dict[str, Any] = {}
    est, sd = {}, {}
    for name, k, lab in labels:
        col = np.asarray(vals[name][:, k], dtype=np.float64)
        if sampling:
            with np.errstate(all="ignore"):
                est[lab] = float(np.nanmean(col)) if np.isfinite(col).any() else math.nan
                sd[lab] = float(np.nanstd(col, ddof=1)) if np.isfinite(col).sum() > 1 else math.nan
        else:
            est[lab] = float(col[0])
    bounds, derived_bounds = _crlb_values(crlb, layout, full)
    truths = _truth_values(truth, layout, full)
    d_est, d_sd, d_truth = _derived(crlb, layout, rows, truth, full, sampling)
    order = [lab for _, _, lab in labels]
    order += [lab for lab in dict.fromkeys([*derived_bounds, *d_est]) if lab not in order]
    est.update(d_est)
    sd.update(d_sd)
    truths.update(d_truth)
    bounds.update(derived_bounds)
    for lab in order:
        if lab in est:
            out[f"estimate.{lab}"] = est[lab]
        if lab in sd:
            out[f"sd.{lab}"] = sd[lab]
        if lab in bounds:
            out[f"crlb.{lab}"] = bounds[lab]
        if lab in truths:
            out[f"truth.{lab}"] = truths[lab]
            if lab in est:
                out[f"z.{lab}"] = _z(est[lab], truths[lab], bounds.get(lab, sd.get(lab, math.nan)))
    scalars = getattr(crlb, "summary_scalars", None)
    if callable(scalars):
        out.update(scalars())
    return out


def split_key(key: str) -> tuple[str, str] | None:
    """``("estimate", label)`` for a per-parameter summary key, None for any other key."""
    head, sep, rest = key.partition(".")
    return (head, rest) if sep and head in PREFIXES and rest else None


__all__ = [
    "PREFIXES",
    "parameter_summary",
    "parameter_labels",
    "block_labels",
    "default_component_labels",
    "constrained",
    "base_theta",
    "split_key",
]
