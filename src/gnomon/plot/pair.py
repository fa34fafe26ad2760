r"""Pair (corner) plots of posterior draws or of an ensemble of estimates, with truth markers and Cramér–Rao
ellipses: :func:`pair`.

For K variables a K × K lower-triangular grid: on the diagonal the marginal density of each variable (a
histogram, labelled ``density``) with the Gaussian of its marginal bound :math:`N(c_i, σ_i^2)`; below it, for
each pair, the points with — for posterior draws — contours holding 39.3 % and 86.5 % of them (the "1σ" and
"2σ" regions of a two-dimensional Gaussian, :math:`1 - e^{-k^2/2}`), and the bound's ellipses

.. math:: \{x : (x - c)^T Σ_{ij}^{-1} (x - c) = k^2\},\quad k = 1, 2

where :math:`Σ_{ij}` is the 2 × 2 block of the CRLB covariance (``gn.cramer_rao(...).covariance``, user units)
and :math:`c` the truth (else the point the bound was computed at). A posterior whose contours lie on the
ellipses reaches the bound; an ensemble of estimates (MAPs of many fits) should scatter inside them as a
Gaussian of that covariance. Truth markers are drawn where a truth is known.

Sources: posterior draws — sampler :class:`~gnomon.Signals`, a sampling Trace (named by its layout) or an
ArviZ DataTree (a run's ``posterior.nc``) —, or an ensemble of estimates — a batched Trace from
``gn.optimize_batch`` (each member's best θ), a list of optimization Traces or Runs, an
:class:`~gnomon.Experiment` or its directory, or a table from ``exp.aggregate(params=True)`` (its
``estimate.<label>`` columns; a truth that differs between runs, as in an epoch series, is subtracted run by
run and the estimates are drawn as residuals about zero).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gnomon.plot._mpl import bracket, colors, finish, new_figure
from gnomon.signals.signals import Signals
from gnomon.thetaspace import units as U

#: variables a pair plot draws at most (K² panels)
MAX_VARIABLES = 12
#: points drawn per panel at most (a random subset beyond; contours use every point)
MAX_POINTS = 4000


@dataclass
class _Points:
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


# ---------------------------------------------------------------------------------------------- sources
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


def _from_signals(sig: Signals, names: Sequence[str] | None, kind: str) -> _Points:
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
    return _Points(labels, units, np.stack(cols, axis=-1), kind, t if np.isfinite(t).any() else None, what=what,
                   index=index, marginal=m if np.isfinite(m).any() else None)


def _from_datatree(dt: Any, names: Sequence[str] | None) -> _Points:
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
    return _Points(labels, units, np.stack(cols, axis=-1), "posterior", what=f"{n} posterior draws")


def _from_traces(traces: Sequence[Any], names: Sequence[str] | None) -> _Points:
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


def _from_table(df: Any, names: Sequence[str] | None, units: Mapping[str, str]) -> _Points:
    labels = []
    for c in df.columns:
        head, sep, rest = str(c).partition(".")
        if sep and head == "estimate" and rest not in labels:
            labels.append(rest)
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
        if name not in df.columns:
            return np.full(len(df), np.nan)
        return np.asarray(df[name].astype("float64").to_numpy(na_value=np.nan), dtype=float)

    est = np.stack([col(f"estimate.{lab}") for lab in labels], axis=-1)
    tru = np.stack([col(f"truth.{lab}") for lab in labels], axis=-1)
    crl = np.stack([col(f"crlb.{lab}") for lab in labels], axis=-1)
    with np.errstate(all="ignore"):
        marginal = np.nanmedian(crl, axis=0) if np.isfinite(crl).any() else None
    pts = _Points(labels, [units.get(lab, "") for lab in labels], est, "estimates", marginal=marginal,
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


def _points(source: Any, names: Sequence[str] | None) -> _Points:
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
        from gnomon.plot.campaign import _table

        df, units = _table(source, names if names is not None else True, None)
        return _from_table(df, names, units)
    raise ValueError(
        "pair: expected sampler Signals, a sampling Trace, an ArviZ DataTree, a batch Trace (optimize_batch), a "
        f"list of fits, an Experiment or a table; got {type(source).__name__}"
    )


# ---------------------------------------------------------------------------------------------- bounds
def _truth_vector(pts: _Points, truth: Any) -> np.ndarray | None:
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


def _covariance(pts: _Points, crlb: Any) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, str]:
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


def ellipse(centre: Sequence[float], cov: np.ndarray, k: float, **kwargs: Any):
    """The matplotlib Ellipse ``{x : (x − c)ᵀ Σ⁻¹ (x − c) = k²}`` of a 2 × 2 covariance ``cov``."""
    from matplotlib.patches import Ellipse

    lam, vec = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    lam = np.maximum(lam, 0.0)
    angle = math.degrees(math.atan2(vec[1, 1], vec[0, 1]))  # the major axis (largest eigenvalue)
    return Ellipse(tuple(centre), width=2 * k * math.sqrt(lam[1]), height=2 * k * math.sqrt(lam[0]),
                   angle=angle, **kwargs)


def mass_levels(x: np.ndarray, y: np.ndarray, masses: Sequence[float], xlim: tuple[float, float],
                ylim: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """A smoothed 2-d histogram ``(xc, yc, H)`` of the points and, per fraction ``m`` of ``masses``, the density
    level whose region ``{H ≥ level}`` holds that fraction of the points: the ``1 − m`` quantile of ``H``
    interpolated at the points (highest-density regions counted on the draws themselves, so a smoothing
    that widens the histogram does not widen the regions)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    n = x.size
    bins = int(np.clip(math.sqrt(n) / 2.5, 12, 50))
    h, xe, ye = np.histogram2d(x, y, bins=bins, range=[xlim, ylim])
    h = gaussian_filter(h, 1.0)
    xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
    fx = (x - xc[0]) / (xc[1] - xc[0])  # fractional index of each point between bin centres
    fy = (y - yc[0]) / (yc[1] - yc[0])
    at = map_coordinates(h, np.vstack([fx, fy]), order=1, mode="nearest")
    levels = [float(np.quantile(at, 1.0 - m)) for m in masses]
    return xc, yc, h, levels


# ---------------------------------------------------------------------------------------------- figure
def _range(vals: np.ndarray, extra: list[float]) -> tuple[float, float]:
    v = vals[np.isfinite(vals)]
    pts = np.concatenate([v, np.asarray([e for e in extra if np.isfinite(e)], dtype=float)])
    if pts.size == 0:
        return -1.0, 1.0
    lo, hi = float(pts.min()), float(pts.max())
    pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi) * 1e-6, 1e-12)
    return lo - pad, hi + pad


def pair(
    source: Any,
    names: str | Sequence[str] | None = None,
    *,
    truth: Mapping[str, Any] | None = None,
    crlb: Any = None,
    levels: Sequence[float] = (1.0, 2.0),
    contours: bool | str = "auto",
    title: str | bool | None = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """A corner plot of posterior draws or of an ensemble of estimates; returns the Figure.

    Args:
      source: sampler Signals, a sampling Trace or Run, an ArviZ DataTree (posterior draws); a batched Trace
        from ``gn.optimize_batch``, a list of optimization Traces / Runs, an Experiment (or its directory) or a
        table from ``exp.aggregate(params=True)`` (an ensemble of estimates). See the module docstring.
      names: signal / block names (all their components) or component labels (``"zern[Z4]"``); default every
        parameter.
      truth: ``{name or label: value}`` in the plotted units; default the signals' own truth (a table: its
        ``truth.<label>`` columns). Drawn as lines on the diagonal and stars in the pair panels.
      crlb: the Cramér–Rao bound: a ``gn.cramer_rao(...)`` result (its ``covariance``, ``labels`` and
        ``units``; converted to the plotted units), a ``(K, K)`` covariance of the plotted variables, or a
        mapping label → marginal bound (the diagonal's Gaussians only: marginals carry no correlation, so no
        ellipses). Ellipses at ``levels`` σ (Mahalanobis distance k) about the truth, else about the point the
        bound was computed at.
      levels: the k of the ellipses and of the posterior contours (which hold ``1 − exp(−k²/2)`` of the
        draws: 39 % and 86 % for 1σ and 2σ).
      contours: draw posterior contours (``"auto"``: for posterior draws, at least 200 of them).
      title: None for a description of what is drawn, a string, or False.

    Every axis is labelled: the bottom row and left column ``name [unit]``, the diagonal's y axis
    ``density``. Ellipses carry ``gid="crlb:<k>σ"``, truth markers ``gid="truth"``, points ``gid="data"``.
    """
    pts = _points(source, names)
    good = np.isfinite(pts.values).all(axis=1)
    values = pts.values[good]
    k = len(pts.labels)
    if k > MAX_VARIABLES:
        raise ValueError(f"pair: {k} variables make {k * k} panels; choose at most {MAX_VARIABLES} with names=")
    if values.shape[0] < 2:
        raise ValueError(f"pair: {values.shape[0]} complete point(s) to draw; need at least 2")
    levels = [float(x) for x in levels]
    if not levels or any(not (x > 0) for x in levels):
        raise ValueError(f"levels must be positive numbers of σ, got {levels!r}")
    tv = _truth_vector(pts, truth)
    cov, marginal, centre_b, bound_what = _covariance(pts, crlb)
    has_truth = tv is not None and np.isfinite(tv).any()
    centre = np.where(np.isfinite(tv), tv, np.nan) if has_truth else np.full(k, np.nan)
    about = "the truth"
    if centre_b is not None and not np.isfinite(centre).all():
        about = "the truth" if has_truth else "the point it was computed at"
        centre = np.where(np.isfinite(centre), centre, centre_b)
    if marginal is not None and not np.isfinite(centre).all():
        mean = values.mean(axis=0)
        if not has_truth and centre_b is None:
            about = "the mean"
        centre = np.where(np.isfinite(centre), centre, mean)
    posterior = pts.kind == "posterior"
    draw_contours = contours is True or (contours == "auto" and posterior and values.shape[0] >= 200)

    # ranges: the points, the truth and the outermost ellipse
    kmax = max(levels)
    ranges = []
    for i in range(k):
        extra = [tv[i]] if has_truth else []
        if marginal is not None and np.isfinite(marginal[i]) and np.isfinite(centre[i]):
            extra += [centre[i] - 1.05 * kmax * marginal[i], centre[i] + 1.05 * kmax * marginal[i]]
        ranges.append(_range(values[:, i], extra))

    fig = new_figure(figsize or (2.3 * k + 1.0, 2.3 * k + 0.4), show=show)
    axes = fig.subplots(k, k, squeeze=False)
    pal = colors(3)
    rng = np.random.default_rng(0)
    shown = values if values.shape[0] <= MAX_POINTS else values[rng.choice(values.shape[0], MAX_POINTS, False)]
    masses = [1.0 - math.exp(-0.5 * lv * lv) for lv in sorted(levels, reverse=True)]
    names_u = [f"{lab}{' − truth' if pts.residual else ''}{bracket(u)}" for lab, u in zip(pts.labels, pts.units,
                                                                                         strict=True)]
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            ax.set_xlim(*ranges[j])
            if i == j:
                _diagonal(ax, values[:, i], ranges[i], tv[i] if has_truth else np.nan,
                          None if marginal is None else marginal[i], centre[i], pal, posterior)
            else:
                ax.set_ylim(*ranges[i])
                _off_diagonal(ax, values[:, [j, i]], shown[:, [j, i]], (ranges[j], ranges[i]), posterior,
                              masses if draw_contours else None,
                              None if cov is None else cov[np.ix_([j, i], [j, i])], centre[[j, i]], levels,
                              tv[[j, i]] if has_truth else None, pal)
            # labels: the bottom row names its x variable, the left column its y variable
            if i == k - 1:
                ax.set_xlabel(names_u[j])
            else:
                ax.tick_params(labelbottom=False)
            if i != j:
                if j == 0:
                    ax.set_ylabel(names_u[i])
                else:
                    ax.tick_params(labelleft=False)
    _legend(fig, axes, k, pal, posterior, draw_contours, cov is not None, marginal is not None, has_truth,
            bound_what, about, levels, pts)
    if title is None:
        text = pts.what or ("posterior draws" if posterior else "estimates")
        if cov is not None or marginal is not None:
            text += f"; {bound_what} about {about}"
        fig.suptitle(text, fontsize=10)
    elif title:
        fig.suptitle(str(title))
    for ax in axes.ravel():
        if ax.get_visible():
            ax.tick_params(axis="x", labelrotation=30)
    return finish(fig, save=save, show=show, dpi=dpi)


def _off_diagonal(ax: Any, xy: np.ndarray, shown: np.ndarray, ranges: tuple, posterior: bool,
                  masses: list[float] | None, cov: np.ndarray | None, centre: np.ndarray, levels: list[float],
                  truth: np.ndarray | None, pal: list[Any]) -> None:
    """One pair panel: the points, the posterior contours (``masses``), the bound's ellipses, the truth."""
    ax.scatter(shown[:, 0], shown[:, 1], s=3 if posterior else 9, alpha=0.25 if posterior else 0.7,
               color=pal[0], lw=0, gid="data", rasterized=shown.shape[0] > 1000)
    if masses is not None:
        xc, yc, h, lv = mass_levels(xy[:, 0], xy[:, 1], masses, ranges[0], ranges[1])
        lv = sorted(set(lv))
        if len(lv) == len(masses) and lv[0] < lv[-1] or len(lv) == 1:
            cs = ax.contour(xc, yc, h.T, levels=lv, colors=[pal[0]], linewidths=1.1)
            cs.set_gid("contours")
    if cov is not None and np.isfinite(cov).all() and np.isfinite(centre).all():
        for lvl in levels:
            ax.add_patch(ellipse(tuple(centre), cov, lvl, fill=False, color=pal[1], lw=1.3,
                                 ls="--" if lvl > 1 else "-", gid=f"crlb:{lvl:g}σ"))
    if truth is not None and np.isfinite(truth).all():
        ax.plot(truth[0], truth[1], marker="*", ms=9, color="k", mec="w", mew=0.6, ls="none", gid="truth",
                zorder=5)


def _diagonal(ax: Any, v: np.ndarray, rng: tuple[float, float], t: float, sigma: float | None, c: float,
              pal: list[Any], posterior: bool) -> None:
    bins = int(np.clip(math.sqrt(v.size), 8, 40))
    ax.hist(v, bins=bins, range=rng, density=True, histtype="stepfilled", color=pal[0], alpha=0.35, gid="data")
    ax.hist(v, bins=bins, range=rng, density=True, histtype="step", color=pal[0], lw=1.0)
    if sigma is not None and np.isfinite(sigma) and sigma > 0 and np.isfinite(c):
        x = np.linspace(*rng, 200)
        ax.plot(x, np.exp(-0.5 * ((x - c) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)), color=pal[1],
                lw=1.3, gid="crlb:marginal")
    if np.isfinite(t):
        ax.axvline(t, color="k", lw=1.0, gid="truth")
    ax.set_yticks([])
    ax.set_ylim(bottom=0)
    ax.yaxis.set_label_position("right")
    ax.set_ylabel("density")


def _legend(fig: Any, axes: Any, k: int, pal: list[Any], posterior: bool, contours: bool, ellipses: bool,
            marginal: bool, truth: bool, bound_what: str, about: str, levels: list[float], pts: _Points) -> None:
    from matplotlib.lines import Line2D

    lv = ", ".join(f"{x:g}σ" for x in levels)
    handles = [Line2D([], [], ls="none", marker="o", ms=4, color=pal[0],
                      label="posterior draws" if posterior else ("estimate − truth" if pts.residual else
                                                                 "estimates"))]
    if contours:
        pct = ", ".join(f"{100 * (1 - math.exp(-0.5 * x * x)):.0f}%" for x in levels)
        handles.append(Line2D([], [], color=pal[0], label=f"posterior {lv} ({pct})"))
    if ellipses:
        handles.append(Line2D([], [], color=pal[1], label=f"{bound_what} {lv} ellipses"))
    elif marginal:
        handles.append(Line2D([], [], color=pal[1], label=f"{bound_what} (diagonal)"))
    if truth:
        handles.append(Line2D([], [], ls="none", marker="*", ms=9, color="k", label="truth"))
    holder = axes[0, k - 1] if k > 1 else axes[0, 0]
    if k > 1:
        holder.set_visible(True)
        holder.axis("off")
    holder.legend(handles=handles, loc="upper right", fontsize="small", frameon=k == 1)


__all__ = ["pair", "ellipse", "mass_levels"]
