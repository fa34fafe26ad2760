"""What a pair plot draws (:func:`gnomon.plot.pair`): the points of its source — posterior draws or an
ensemble of estimates — with their names, units and truth (:func:`points_of`), the truth per plotted
variable (:func:`truth_vector`) and the bound's covariance in the plotted units (:func:`covariance`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gnomon.plot._table_data import column, column_labels, experiment_table
from gnomon.signals.signals import Signals
from gnomon.thetaspace import units as U


@dataclass
class Points:
    """What a pair plot draws: ``values[n, k]`` of the variables ``labels[k]`` in ``units[k]``."""

    labels: list[str]
    units: list[str]
    values: np.ndarray
    kind: str  # "posterior" or "estimates"
    truth: np.ndarray | None = None  # (K,) NaN where unknown
    marginal: np.ndarray | None = None  # (K,) bounds found with the source (a table's crlb.<label>)
    residual: bool = False  # values are estimate − truth, run by run
    what: str = ""
    index: list[int] | None = None  # each variable's component index within its block (Signals sources)


def _expand(sig: Signals, names: Sequence[str] | None) -> list[tuple[str, int]]:
    """``(signal name, component)`` of each plotted variable: a signal name stands for all its components,
    a component label for that one."""
    if names is None:
        names = list(sig.names_by_role("parameter", "derived"))
    names = [names] if isinstance(names, str) else list(names)
    out = []
    for n in names:
        if n in sig:
            out += [(n, k) for k in range(sig[n].num_components)]
            continue
        hit = [(m, s.labels.index(n)) for m, s in sig.items() if n in s.labels]
        if not hit:
            raise ValueError(f"pair: no signal or component {n!r}; signals are {list(sig.names)}")
        out.append(hit[0])
    return out


def _from_signals(sig: Signals, names: Sequence[str] | None, kind: str) -> Points:
    chosen = _expand(sig, names)
    cols, labels, units, truth, index, sigma = [], [], [], [], [], []
    for n, k in chosen:
        index.append(k)
        sigma.append(float(sig[n].sigma[k]) if sig[n].sigma is not None and sig[n].sigma_source == "CRLB"
                     else np.nan)
        s = sig[n]
        cols.append(np.asarray(s.data[..., k], dtype=np.float64).reshape(-1))
        labels.append(s.labels[k])
        units.append(s.units)
        truth.append(float(s.truth[k]) if s.truth is not None else np.nan)
    t = np.asarray(truth, dtype=float)
    what = f"{sig.num_chains} × {sig.num_rows} posterior draws" if kind == "posterior" else ""
    m = np.asarray(sigma, dtype=float)
    return Points(labels, units, np.stack(cols, axis=-1), kind, t if np.isfinite(t).any() else None, what=what,
                   index=index, marginal=m if np.isfinite(m).any() else None)


def _from_datatree(dt: Any, names: Sequence[str] | None) -> Points:
    ds = dt["posterior"].to_dataset()
    want = None if names is None else ([names] if isinstance(names, str) else list(names))
    cols, labels, units = [], [], []
    for v in ds.data_vars:
        var = ds[v]
        a = np.asarray(var.values, dtype=np.float64)
        rest = [d for d in var.dims if d not in ("chain", "draw")]
        a = a.reshape(a.shape[0] * a.shape[1], -1) if a.ndim >= 2 else a.reshape(-1, 1)
        if rest:
            dim = rest[0]
            lab_coord = f"{dim}_label"
            comps = ([str(x) for x in var.coords[lab_coord].values] if lab_coord in var.coords else
                     [f"{v}[{x}]" for x in var.coords[dim].values] if dim in var.coords else
                     [f"{v}[{i}]" for i in range(a.shape[1])])
        else:
            comps = [str(v)]
        for k, lab in enumerate(comps[: a.shape[1]]):
            if want is None or v in want or lab in want:
                cols.append(a[:, k])
                labels.append(lab)
                units.append(str(var.attrs.get("units", "") or ""))
    if want is not None:
        missing = [w for w in want if w not in labels and w not in ds.data_vars]
        if missing:
            raise ValueError(f"pair: no posterior variable {missing}; variables are {list(ds.data_vars)}")
    if not cols:
        raise ValueError("pair: the DataTree's posterior has no variables to plot")
    n = ds.sizes.get("chain", 1) * ds.sizes.get("draw", len(cols[0]))
    return Points(labels, units, np.stack(cols, axis=-1), "posterior", what=f"{n} posterior draws")


def _from_traces(traces: Sequence[Any], names: Sequence[str] | None) -> Points:
    """Each optimization trace's best θ (a batch: each member's), decoded by its layout."""
    from gnomon.trace.trace import Trace

    rows, layout = [], None
    for t in traces:
        t = t.trace if hasattr(t, "trace") and isinstance(t.trace, Trace) else t
        if not isinstance(t, Trace) or t.kind != "optimization":
            raise ValueError(f"pair: an ensemble is made of optimization traces or runs, got {type(t).__name__}")
        if t.layout is None:
            raise ValueError("pair: an ensemble of fits needs traces with a layout (names and units)")
        if layout is None:
            layout = t.layout
        elif t.layout != layout:
            raise ValueError("pair: the fits of an ensemble must share one layout")
        best = np.asarray(t.best_theta, dtype=np.float64)
        rows.append(best.reshape(-1, best.shape[-1]))
    theta = np.concatenate(rows, axis=0)
    pseudo = Trace(kind="optimization", theta=theta, loss=np.zeros(theta.shape[0]), layout=layout)
    sig = Signals.from_trace(pseudo, layout, diagnostics=False)
    pts = _from_signals(sig, names, "estimates")
    pts.what = f"best estimates of {theta.shape[0]} fits"
    return pts


def _from_table(df: Any, names: Sequence[str] | None, units: Mapping[str, str]) -> Points:
    labels = column_labels(df, "estimate")
    if names is not None:
        want = [names] if isinstance(names, str) else list(names)
        chosen = []
        for w in want:
            hit = [lab for lab in labels if lab == w or lab.startswith(w + "[")]
            if not hit:
                raise ValueError(f"pair: no estimate.<label> column for {w!r}; the table has {labels[:12]}")
            chosen += [h for h in hit if h not in chosen]
        labels = chosen
    if not labels:
        raise ValueError("pair: the table has no estimate.<label> columns (aggregate with params=True)")

    def col(name: str) -> np.ndarray:
        c = column(df, name)
        return np.full(len(df), np.nan) if c is None else c

    est = np.stack([col(f"estimate.{lab}") for lab in labels], axis=-1)
    tru = np.stack([col(f"truth.{lab}") for lab in labels], axis=-1)
    crl = np.stack([col(f"crlb.{lab}") for lab in labels], axis=-1)
    with np.errstate(all="ignore"):
        marginal = np.nanmedian(crl, axis=0) if np.isfinite(crl).any() else None
    pts = Points(labels, [units.get(lab, "") for lab in labels], est, "estimates", marginal=marginal,
                  what=f"estimates of {len(df)} runs")
    known = np.isfinite(tru).all(axis=0)
    if known.all() and len(df):
        const = np.all(np.abs(tru - tru[0]) <= 1e-12 * np.maximum(np.abs(tru[0]), 1.0), axis=0)
        if const.all():
            pts.truth = tru[0].copy()
        else:  # a truth that moves (an epoch series): each estimate about its own truth
            pts.values, pts.truth, pts.residual = est - tru, np.zeros(len(labels)), True
            pts.what += ", each minus its own truth"
    elif known.any():
        pts.truth = np.where(known, tru[0], np.nan)
    return pts


def points_of(source: Any, names: Sequence[str] | None) -> Points:
    from gnomon.trace.trace import Trace

    if isinstance(source, Signals):
        if source.kind != "sampling":
            raise ValueError("pair: draws posterior draws or an ensemble of estimates; these Signals are an "
                             "optimizer path (use gn.plot.history), or pass a batch trace of many fits")
        return _from_signals(source, names, "posterior")
    run_trace = getattr(source, "trace", None)
    if isinstance(run_trace, Trace) and run_trace.kind == "sampling" and hasattr(source, "summary"):
        # a Run of a sampler: its Signals carry the truth and the marginal CRLB it was saved with
        sig = Signals.from_run(source)
        return _from_signals(sig, names if names is not None else sig.names_by_role("parameter"), "posterior")
    if isinstance(source, Trace):
        if source.kind == "sampling":
            if source.layout is None:
                raise ValueError("pair: a sampling trace without a layout has no names; pass Signals or a layout")
            return _from_signals(Signals.from_trace(source, diagnostics=False), names, "posterior")
        return _from_traces([source], names)
    if isinstance(source, (list, tuple)) and source:
        return _from_traces(source, names)
    if hasattr(source, "columns") and hasattr(source, "iterrows"):
        return _from_table(source, names, {})
    if hasattr(source, "children") and "posterior" in getattr(source, "children", {}):
        return _from_datatree(source, names)
    from gnomon.experiment.experiment import Experiment

    if isinstance(source, (Experiment, str, os.PathLike)):
        df, units = experiment_table(source, names if names is not None else True, None)
        return _from_table(df, names, units)
    raise ValueError(
        "pair: expected sampler Signals, a sampling Trace, an ArviZ DataTree, a batch Trace (optimize_batch), a "
        f"list of fits, an Experiment or a table; got {type(source).__name__}"
    )


def truth_vector(pts: Points, truth: Any) -> np.ndarray | None:
    """``(K,)`` truth per plotted label from ``{label: value}`` or ``{name: value(s)}`` (NaN where unknown)."""
    if pts.residual:  # estimates are already about their own truths
        if truth is not None:
            warnings.warn("pair: the runs' truths differ, so each estimate is drawn minus its own truth; truth= "
                          "is not used", stacklevel=3)
        return np.zeros(len(pts.labels))
    if truth is None:
        return pts.truth
    if not isinstance(truth, Mapping):
        raise ValueError(f"truth must be a mapping name or label -> value, got {type(truth).__name__}")
    out = np.full(len(pts.labels), np.nan)
    for i, lab in enumerate(pts.labels):
        if lab in truth:
            out[i] = float(np.asarray(truth[lab], dtype=float).reshape(()))
            continue
        base, _, comp = lab.partition("[")
        if base not in truth:
            continue
        v = np.asarray(truth[base], dtype=float).reshape(-1)
        if not comp:
            out[i] = float(v[0]) if v.size == 1 else np.nan
        else:
            idx = pts.index[i] if pts.index is not None else _component_index(
                lab, [m for m in pts.labels if m.startswith(base + "[")], v.size)
            idx = idx if idx is not None and 0 <= idx < v.size else None
            out[i] = float(v[idx]) if idx is not None else np.nan
    if not np.isfinite(out).any():
        raise ValueError(f"truth names none of the plotted variables {pts.labels}; it has {sorted(truth)[:8]}")
    return out


def _component_index(lab: str, siblings: list[str], size: int) -> int | None:
    inner = lab.partition("[")[2].rstrip("]")
    if inner.isdigit() and int(inner) < size:
        return int(inner)
    return siblings.index(lab) if len(siblings) == size else None


def covariance(pts: Points, crlb: Any) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, str]:
    """``(covariance (K, K) with NaN rows for unbounded labels, marginal (K,), centre (K,), what)`` in the
    plotted units, from a CRLB result (``.labels``, ``.covariance``, ``.units``, ``.value``), a ``(K, K)``
    array, or a mapping label → marginal bound (no correlations: no ellipses)."""
    k = len(pts.labels)
    if crlb is None:
        what = "marginal CRLB" + (" (median over runs)" if pts.kind == "estimates" else "")
        return None, pts.marginal, None, what if pts.marginal is not None else ""
    if isinstance(crlb, Mapping):
        m = np.array([float(crlb[lab]) if lab in crlb else np.nan for lab in pts.labels])
        if not np.isfinite(m).any():
            raise ValueError(f"crlb names none of the plotted variables {pts.labels}")
        return None, m, None, "marginal bound"
    if hasattr(crlb, "covariance") and hasattr(crlb, "labels"):
        labels = [str(x) for x in crlb.labels]
        full = np.asarray(crlb.covariance, dtype=np.float64)
        cunits = list(getattr(crlb, "units", [""] * len(labels)))
        value = np.asarray(getattr(crlb, "value", np.full(len(labels), np.nan)), dtype=np.float64)
        idx = [labels.index(lab) if lab in labels else -1 for lab in pts.labels]
        if all(i < 0 for i in idx):
            raise ValueError(f"the CRLB bounds {labels[:8]}, none of the plotted variables {pts.labels}")
        missing = [lab for lab, i in zip(pts.labels, idx, strict=True) if i < 0]
        if missing:
            warnings.warn(f"pair: the CRLB has no bound for {missing}: no ellipses for them", stacklevel=3)
        f = np.ones(k)
        for j, i in enumerate(idx):
            if i >= 0 and U.normalize_unit(cunits[i]) != U.normalize_unit(pts.units[j]):
                try:
                    f[j] = U.conversion_factor(cunits[i], pts.units[j])
                except ValueError:
                    raise ValueError(f"pair: the CRLB of {pts.labels[j]!r} is in {cunits[i]!r}, the plot in "
                                     f"{pts.units[j]!r}; they do not convert") from None
        cov = np.full((k, k), np.nan)
        centre = np.full(k, np.nan)
        for a, ia in enumerate(idx):
            if ia < 0:
                continue
            centre[a] = value[ia] * f[a]
            for b, ib in enumerate(idx):
                if ib >= 0:
                    cov[a, b] = full[ia, ib] * f[a] * f[b]
        what = "van Trees bound" if getattr(crlb, "bayesian", False) else "CRLB"
        return cov, np.sqrt(np.diag(cov)), centre, what
    arr = np.asarray(crlb, dtype=np.float64)
    if arr.shape != (k, k):
        raise ValueError(f"crlb must be a CRLB result (gn.cramer_rao), a ({k}, {k}) covariance of the plotted "
                         f"variables {pts.labels} or a mapping label -> bound; got shape {arr.shape}")
    return arr, np.sqrt(np.diag(arr)), None, "covariance"
