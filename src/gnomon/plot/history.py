"""Histories of signals: ``history`` (one axis), ``grid`` (panels of signals) and ``loss``.

All three consume :class:`~gnomon.Signals` (named arrays + units + optional truth) and know nothing about
engines or domains. For every named signal a panel draws, per chain (one line per chain for sampler runs):

* ``mode="components"`` — one line per component ``values[t, k]`` (a scalar signal is one line);
* ``mode="summary"`` — one line: RMS ``sqrt(mean_k v_k²)``, norm ``sqrt(Σ_k v_k²)`` or mean-abs
  ``mean_k |v_k|`` (``summary=``) of the vector at each row;
* ``mode="hybrid"`` — the summary line plus the ``top`` components of largest final ``|value|``.

With a known truth the panel shows the residual ``values − truth`` by default (``residual="auto"``);
``residual=False`` shows values with dashed truth lines, ``residual=True`` forces residuals (NaN, with a
note on the axis, when the truth is unknown). Residuals scale automatically from the unit strings
(:func:`gnomon.signals.units.auto_unit`: arcsec residuals in mas or µas, metres in nm, fractions in ppm);
values are shown in their stored units. ``units=`` overrides either per signal (``{"name": "deg"}``) or
for all (``"µas"``); ``auto_units=False`` keeps the stored units.
Data lines carry ``gid="data:<signal name>"`` so they can be told apart from
reference lines.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gnomon.plot._mpl import colors, ensure_backend, finish, fmt, new_figure, set_log_y
from gnomon.signals import units as U
from gnomon.signals.signals import Signal, Signals
from gnomon.signals.transforms import summarize

MODES = ("components", "summary", "hybrid")
SUMMARIES = ("rms", "norm", "meanabs")


@dataclass
class PanelInfo:
    """What :func:`draw` put on an axis (used for titles and by tests)."""

    title: str
    ylabel: str
    units: dict[str, str] = field(default_factory=dict)  # signal name -> display unit
    residual: dict[str, bool] = field(default_factory=dict)
    num_lines: int = 0


def _names(sig: Signals, names: str | Sequence[str] | None) -> list[str]:
    if names is None:
        return list(sig.names)
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("no signal names given")
    unknown = [n for n in names if n not in sig]
    if unknown:
        raise ValueError(f"unknown signal(s) {unknown}; signals are {list(sig.names)}")
    return names


def _check_signals(sig: Any) -> Signals:
    if not isinstance(sig, Signals):
        raise ValueError(
            f"plotting takes gnomon.Signals (Signals.from_trace(trace, layout)), got {type(sig).__name__}"
        )
    if sig.num_rows == 0:
        raise ValueError("these Signals have no rows to plot")
    return sig


def _use_residual(s: Signal, residual: bool | str) -> bool:
    if residual == "auto":
        return s.has_truth and s.role != "diagnostic"
    if isinstance(residual, bool):
        return residual
    raise ValueError(f"residual must be True, False or 'auto', got {residual!r}")


def _final_rows(a: np.ndarray, chains: bool) -> np.ndarray:
    """Final value per component of a ``(C, T, K)`` array (posterior mean for chains)."""
    if chains:
        with np.errstate(all="ignore"):
            return np.nanmean(a.reshape(-1, a.shape[-1]), axis=0)
    rows = a[0]
    ok = np.flatnonzero(np.isfinite(rows).all(axis=-1))
    return rows[ok[-1]] if ok.size else rows[-1]


def _short(label: str, name: str, single: bool) -> str:
    if single and label.startswith(name) and label != name:
        return label[len(name) :]
    return label


def _final_text(s: Signal, data: np.ndarray, res: bool, unit: str, factor: float, mode: str, how: str) -> str:
    word = "mean" if s.chains else "final"
    what = f"{s.name} residual" if res else s.name
    ulab = f" {unit}" if unit and unit != "frac" else ""
    if res and s.truth is None:
        return f"{what}: no truth"
    fin = _final_rows(data, s.chains) * factor
    if s.scalar or s.num_components == 1:
        v = float(fin[0])
        text = f"{what}: {word} {fmt(v, signed=res)}{ulab}"
        if s.chains:
            sd = float(np.nanstd(data[..., 0] * factor))
            text = f"{what}: {word} {fmt(v, signed=res)} ± {fmt(sd)}{ulab}"
        return text
    agg = how if mode == "summary" else "rms"
    return f"{what}: {word} {agg} {fmt(float(summarize(fin, agg)))}{ulab}"


def _log_auto(arrays: list[np.ndarray]) -> bool:
    vals = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    return bool(vals.size and np.all(vals > 0) and vals.max() / vals.min() > 100.0)


def draw(
    ax: Any,
    signals: Signals,
    names: str | Sequence[str],
    mode: str = "components",
    *,
    residual: bool | str = "auto",
    summary: str = "rms",
    top: int = 3,
    units: str | Mapping[str, str] | None = None,
    auto_units: bool = True,
    logy: bool | str = False,
    logx: bool = False,
    truth_lines: bool = True,
    legend: bool | str = "auto",
    max_legend: int = 12,
    ylabel: str | None = None,
) -> PanelInfo:
    """Draw ``names`` on ``ax`` (see the module docstring) and return a :class:`PanelInfo`."""
    sig = _check_signals(signals)
    names = _names(sig, names)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")
    if not isinstance(top, int) or top < 0:
        raise ValueError(f"top must be a non-negative int, got {top!r}")
    single = len(names) == 1
    x = sig.x

    # data to plot, (C, T, K) per name
    entries = []
    for n in names:
        s = sig[n]
        res = _use_residual(s, residual)
        if res:
            data = s.data - s.truth if s.truth is not None else np.full(s.data.shape, np.nan)
        else:
            data = s.data
        entries.append((s, res, np.asarray(data, dtype=float)))

    # display units: shared when every signal of the panel has the same unit
    unit_of: dict[str, tuple[str, float]] = {}
    stored = {U.normalize_unit(s.units) for s, _, _ in entries}
    joint = None
    if len(stored) == 1 and not any(U.unit_override(units, s.name) for s, _, _ in entries):
        pooled = np.concatenate([d.ravel() for _, _, d in entries])
        joint = U.resolve_unit(next(iter(stored)), pooled, auto=auto_units and all(r for _, r, _ in entries))
    for s, res, d in entries:
        unit_of[s.name] = joint or U.resolve_unit(
            s.units, d, override=U.unit_override(units, s.name), auto=auto_units and res
        )

    # series: (y (C, T), label, ref or None, style)
    series = []
    for s, res, d in entries:
        unit, factor = unit_of[s.name]
        truth = None if (res or s.truth is None) else s.truth * factor
        if s.scalar or s.num_components == 1:
            series.append((d[..., 0] * factor, s.name, None if truth is None else truth[0], "plain"))
            continue
        if mode in ("summary", "hybrid"):
            ref = None if truth is None else float(summarize(truth, summary))
            series.append(
                (
                    summarize(d, summary) * factor,
                    f"{summary}({s.name})" if not single else summary,
                    ref,
                    "summary",
                )
            )
        if mode == "components":
            ks = range(s.num_components)
        elif mode == "hybrid":
            fin = np.abs(_final_rows(d, s.chains))
            order = np.argsort(np.where(np.isfinite(fin), -fin, np.inf), kind="stable")
            ks = sorted(order[: min(top, s.num_components)].tolist())
        else:
            ks = []
        for k in ks:
            series.append(
                (
                    d[..., k] * factor,
                    _short(s.labels[k], s.name, single),
                    None if truth is None else truth[k],
                    "component",
                )
            )

    num_chains = sig.num_chains
    by_chain = num_chains > 1 and len(series) == 1
    palette = colors(num_chains if by_chain else max(len(series), 1))
    drawn = 0
    plotted = []
    any_res = any(res for _, res, _ in entries)
    ensure_backend()
    for i, (y, lab, ref, style) in enumerate(series):
        hybrid_summary = style == "summary" and mode == "hybrid"
        col = "k" if hybrid_summary else palette[0 if by_chain else i]
        lw = 2.0 if hybrid_summary else 1.2
        alpha = 0.7 if num_chains > 1 else 1.0
        gid = f"data:{names[0] if single else lab}"
        for c in range(num_chains):
            if by_chain:
                col, clab = palette[c], f"chain {c}"
            else:
                clab = lab if c == 0 else "_nolegend_"
            ax.plot(x, y[c], color=col, lw=lw, alpha=alpha, label=clab, gid=gid)
            drawn += 1
        plotted.append(y)
        if ref is not None and truth_lines and np.isfinite(ref):
            ax.axhline(ref, color=col, ls="--", lw=0.8, alpha=0.8)
    if any_res:
        ax.axhline(0.0, color="0.5", lw=0.6, zorder=0)
    if any(res and s.truth is None for s, res, _ in entries):
        ax.text(
            0.5,
            0.5,
            "no truth: residual unknown",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="0.4",
            fontsize=9,
        )

    if logy == "auto":
        logy = _log_auto(plotted)
    if logy:
        set_log_y(ax, plotted)
    if logx:
        ax.set_xscale(
            "symlog" if np.nanmin(x) <= 0 else "log", **({"linthresh": 1.0} if np.nanmin(x) <= 0 else {})
        )

    disp = {u for u, _ in unit_of.values()}
    ulab = U.label(next(iter(disp))) if len(disp) == 1 else ""
    all_res = all(res for _, res, _ in entries)
    prefix = f"{summary} of " if mode == "summary" and any(not s.scalar for s, _, _ in entries) else ""
    if ylabel is not None:
        ylabel = f"{ylabel}{ulab}"
    elif single:
        ylabel = f"{prefix}{names[0]}{' residual' if all_res else ''}{ulab}"
    else:
        ylabel = f"{prefix}{'residual' if all_res else 'value'}{ulab}"
    ax.set_ylabel(ylabel)
    ax.set_xlabel(sig.x_label)
    labelled = len(series) if not by_chain else num_chains
    if legend is True or (legend == "auto" and 1 < labelled <= max_legend):
        ax.legend(fontsize="small", loc="best", ncol=1 if labelled <= 6 else 2)

    title = "\n".join(
        _final_text(s, d, res, unit_of[s.name][0], unit_of[s.name][1], mode, summary) for s, res, d in entries
    )
    return PanelInfo(
        title=title,
        ylabel=ylabel,
        units={n: u for n, (u, _) in unit_of.items()},
        residual={s.name: res for s, res, _ in entries},
        num_lines=drawn,
    )


def history(
    signals: Signals,
    names: str | Sequence[str] | None = None,
    mode: str = "components",
    *,
    residual: bool | str = "auto",
    summary: str = "rms",
    top: int = 3,
    units: str | Mapping[str, str] | None = None,
    auto_units: bool = True,
    logy: bool | str = False,
    logx: bool = False,
    title: str | bool | None = None,
    legend: bool | str = "auto",
    ylabel: str | None = None,
    ax: Any = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """History of one or more signals on one axis; returns the matplotlib Figure.

    Args:
      signals: a :class:`~gnomon.Signals`.
      names: signal name(s) drawn together (default: all).
      mode: ``"components"``, ``"summary"`` or ``"hybrid"`` (see the module docstring).
      residual: ``"auto"`` (residual when the truth is known), True or False.
      summary: ``"rms"``, ``"norm"`` or ``"meanabs"`` for summary/hybrid modes.
      top: number of components added to the summary in hybrid mode.
      units: display-unit override(s); ``auto_units`` scales automatically otherwise.
      logy: True (log, or symlog when values cross zero), False, or ``"auto"`` (log when all values are
        positive and span more than two decades). ``logx``: log step axis.
      title: None for the final value(s)/residual(s) of each signal, a string, or False for none.
      ylabel: axis label text (the display unit is appended); default from the names.
      ax: draw into this axis instead of a new figure; ``figsize`` for a new one.
      save: file to write (format from the suffix); ``show``: display with pyplot (never by default).
    """
    sig = _check_signals(signals)
    if ax is None:
        fig = new_figure(figsize or (7.0, 4.0), show=show)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    info = draw(
        ax,
        sig,
        names,
        mode,
        residual=residual,
        summary=summary,
        top=top,
        units=units,
        auto_units=auto_units,
        logy=logy,
        logx=logx,
        legend=legend,
        ylabel=ylabel,
    )
    if title is None:
        ax.set_title(info.title, fontsize=9)
    elif title:
        ax.set_title(str(title))
    return finish(fig, save=save, show=show, dpi=dpi)


_PANEL_KEYS = {
    "names",
    "mode",
    "residual",
    "summary",
    "top",
    "units",
    "auto_units",
    "logy",
    "logx",
    "title",
    "legend",
    "ylabel",
}


def _panel_spec(p: Any, i: int) -> dict[str, Any]:
    if isinstance(p, str):
        return {"names": [p]}
    if isinstance(p, Mapping):
        extra = sorted(set(p) - _PANEL_KEYS)
        if extra or "names" not in p:
            raise ValueError(
                f"panel {i}: a panel mapping needs 'names' and may hold {sorted(_PANEL_KEYS - {'names'})}; "
                f"got keys {sorted(p)}"
            )
        spec = dict(p)
        spec["names"] = [spec["names"]] if isinstance(spec["names"], str) else list(spec["names"])
        return spec
    if isinstance(p, Sequence):
        return {"names": list(p)}
    raise ValueError(f"panel {i}: expected a name, a list of names or a mapping, got {p!r}")


def default_panels(signals: Signals) -> list[dict[str, Any]]:
    """One panel per signal: the loss (or log_prob) first, on a log axis when it spans decades, then every
    parameter and derived signal."""
    panels: list[dict[str, Any]] = []
    for n in ("loss", "log_prob"):
        if n in signals:
            panels.append({"names": [n], "logy": "auto" if n == "loss" else False})
            break
    first = {p["names"][0] for p in panels}
    panels += [{"names": [n]} for n in signals.names_by_role("parameter", "derived") if n not in first]
    return panels


def grid(
    signals: Signals,
    panels: Sequence[Any] | None = None,
    mode: str = "components",
    *,
    ncols: int | None = None,
    residual: bool | str = "auto",
    summary: str = "rms",
    top: int = 3,
    units: str | Mapping[str, str] | None = None,
    auto_units: bool = True,
    logy: bool | str = False,
    sharex: bool = True,
    titles: bool = True,
    suptitle: str | None = None,
    fig: Any = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """Panels of signals on a grid with a shared x axis; returns the Figure.

    Args:
      panels: one entry per panel — a signal name, a list of names drawn together, or a mapping
        ``{"names": [...], "mode": ..., "residual": ..., "summary": ..., "top": ..., "units": ...,
        "auto_units": ..., "logy": ..., "title": ..., "ylabel": ...}`` overriding the grid-wide options for
        that panel. Default: one panel per
        signal (:func:`default_panels`).
      ncols: columns (default 1–3 by panel count).
      titles: title each panel with the final value or final residual of its signals (sampler runs: the
        posterior mean ± sd).
      fig: draw into this (empty) Figure; ``figsize`` for a new one (default 4.6 × 3 inches per panel).
      Other arguments as in :func:`history`.
    """
    sig = _check_signals(signals)
    specs = default_panels(sig) if panels is None else [_panel_spec(p, i) for i, p in enumerate(panels)]
    if not specs:
        raise ValueError("grid needs at least one panel")
    for spec in specs:
        _names(sig, spec["names"])  # validate every panel before drawing
    n = len(specs)
    if ncols is None:
        ncols = 1 if n == 1 else 2 if n <= 4 else 3
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    if fig is None:
        fig = new_figure(figsize or (4.6 * ncols, 3.0 * nrows + (0.4 if suptitle else 0.0)), show=show)
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    defaults = dict(
        mode=mode, residual=residual, summary=summary, top=top, units=units, auto_units=auto_units, logy=logy
    )
    flat = axes.ravel()
    for i, spec in enumerate(specs):
        ax = flat[i]
        opts = {**defaults, **{k: v for k, v in spec.items() if k not in ("names", "title")}}
        info = draw(ax, sig, spec["names"], **opts)
        if spec.get("title") is not None:
            ax.set_title(str(spec["title"]) if spec["title"] else "", fontsize=9)
        elif titles:
            ax.set_title(info.title, fontsize=8)
    for ax in flat[n:]:
        fig.delaxes(ax)
    for i in range(n):  # x label and tick labels on the lowest axis of each column
        lowest = i + ncols >= n
        ax = flat[i]
        ax.set_xlabel(sig.x_label if lowest or not sharex else "")
        if lowest:
            ax.xaxis.set_tick_params(labelbottom=True)
    if suptitle:
        fig.suptitle(suptitle)
    return finish(fig, save=save, show=show, dpi=dpi)


def _loss_signals(source: Any) -> tuple[Signals, str]:
    from gnomon.trace.trace import Trace

    if hasattr(source, "trace") and isinstance(source.trace, Trace):  # a Run
        source = source.trace
    if isinstance(source, Trace):
        if source.is_batched:
            raise ValueError("loss: a batched trace holds B fits; plot one member (trace[i])")
        if source.loss is not None:
            x = source.step if source.step is not None else None
            return Signals({"loss": np.asarray(source.loss)}, x=x, kind=source.kind), "loss"
        return Signals({"log_prob": np.asarray(source.log_prob)}, kind=source.kind), "log_prob"
    if isinstance(source, Signals):
        for n in ("loss", "trace.loss", "log_prob", "trace.log_prob"):
            if n in source:
                return source, n
        raise ValueError(
            f"loss: these Signals have no 'loss' or 'log_prob' signal; signals are {list(source)}"
        )
    arr = np.asarray(source, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"loss: an array loss history must be one-dimensional, got shape {arr.shape}")
    return Signals({"loss": arr}), "loss"


def _is_multi(source: Any) -> bool:
    """Several loss sources: a mapping label -> source, or a list/tuple of non-numbers (Traces, Signals, Runs,
    1-d arrays). A Signals (itself a mapping) and a flat list of numbers are one source."""
    if isinstance(source, Signals):
        return False
    if isinstance(source, Mapping):
        return True
    if isinstance(source, (list, tuple)) and source:
        return not any(
            isinstance(e, (numbers.Number, np.number)) or (isinstance(e, np.ndarray) and e.ndim == 0)
            for e in source
        )
    return False


def _source_label(src: Any, i: int) -> str:
    run_id = getattr(src, "run_id", None)
    if isinstance(run_id, str):
        return run_id
    info = getattr(src, "info", None)
    if isinstance(info, Mapping) and isinstance(info.get("method"), str):
        return info["method"]
    return f"#{i}"


def _loss_sources(source: Any) -> list[tuple[str, Signals, str]]:
    """``[(label, signals, loss signal name)]`` of several sources."""
    if isinstance(source, Mapping):
        items = [(str(k), v) for k, v in source.items()]
    else:
        items = [(_source_label(v, i), v) for i, v in enumerate(source)]
        seen = [lab for lab, _ in items]
        items = [(lab if seen.count(lab) == 1 else f"{lab} #{i}", v) for i, (lab, v) in enumerate(items)]
    if not items:
        raise ValueError("loss: no sources given (an empty mapping)")
    out = []
    for lab, v in items:
        try:
            sig, name = _loss_signals(v)
        except ValueError as e:
            raise ValueError(f"loss source {lab!r}: {e}") from None
        out.append((lab, sig, name))
    return out


def _base(name: str) -> str:
    return name.rsplit(".", 1)[-1]  # "trace.loss" -> "loss"


def loss(
    source: Any,
    reference: float | None = None,
    *,
    relative: bool = False,
    relative_to: str | float | None = None,
    floor: float | None = None,
    logy: bool | str = "auto",
    title: str | bool | None = None,
    ax: Any = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """Loss history (log_prob per chain for sampler runs) of one or several runs on one axis.

    Args:
      source: :class:`~gnomon.Signals` (uses ``loss`` or ``log_prob``), a Trace, a Run or a 1-d array; or
        several of them overlaid — a mapping ``{label: source}`` or a list (labels from each Run's id or each
        Trace's ``info["method"]``, else ``#i``). Several sources are one colour each (one line per chain),
        with a legend giving each source's final value (sampler runs: the mean). They must all be losses or
        all log_probs.
      reference: a reference loss (e.g. the loss at the truth) drawn as a dashed line; defaults to the loss
        signal's truth when it has one (several sources: when all those with a truth agree on it).
      relative: plot ``loss − reference`` instead (log axis when positive).
      relative_to: ``"best"`` plots the excess over the best value over all sources,
        ``loss − min_{sources, rows} loss`` (log_prob: ``max log_prob − log_prob``), which is ≥ 0 and 0 where
        the best is reached; a number ``r`` plots ``loss − r`` (as ``reference=r, relative=True``).
      floor: on a log y axis with non-negative values (``relative_to`` or ``floor`` given), values below
        ``floor`` are drawn at ``floor`` (default: the smallest positive value plotted), so the zeros of
        ``relative_to="best"`` stay on the axis; the y label says so.
      logy: True, False or ``"auto"`` (log when positive and spanning more than two decades; with
        ``relative_to``/``floor``, judged on the positive values).
      title: None for a summary (final value, reference), a string, or False for none.
    """
    multi = _is_multi(source)
    entries = _loss_sources(source) if multi else [(None, *_loss_signals(source))]
    bases = sorted({_base(n) for _, _, n in entries})
    if len(bases) > 1:
        raise ValueError(
            f"loss: cannot overlay {' and '.join(bases)} histories on one axis; sources are "
            + ", ".join(f"{lab}: {n}" for lab, _, n in entries)
        )
    name = entries[0][2] if not multi else bases[0]
    maximize = name.endswith("log_prob")
    if floor is not None and not (isinstance(floor, (int, float)) and math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be a positive finite number, got {floor!r}")

    raw = [np.asarray(sig[n].data[..., 0], dtype=float) for _, sig, n in entries]  # (C, T) each
    best_label = None
    if relative_to is not None:
        if relative:
            raise ValueError("loss: pass either relative=True (with a reference) or relative_to, not both")
        if isinstance(relative_to, str):
            if relative_to != "best":
                raise ValueError(f"relative_to must be 'best' or a number, got {relative_to!r}")
            with np.errstate(all="ignore"):
                per = [np.nanmax(r) if maximize else np.nanmin(r) for r in raw]
            finite = [(v, i) for i, v in enumerate(per) if np.isfinite(v)]
            if not finite:
                raise ValueError(f"loss(relative_to='best'): no finite {name} value in any source")
            ref, ibest = max(finite) if maximize else min(finite)
            best_label = entries[ibest][0]
        else:
            ref = float(relative_to)
            if not math.isfinite(ref):
                raise ValueError(f"relative_to must be 'best' or a finite number, got {relative_to!r}")
        rel = True
    else:
        if reference is not None:
            ref = reference
        else:
            truths = {float(sig[n].truth[0]) for _, sig, n in entries if sig[n].truth is not None}
            ref = truths.pop() if len(truths) == 1 else None
        if relative and ref is None:
            raise ValueError("loss(relative=True) needs a reference (or a loss signal with a truth)")
        rel = relative
    flip = relative_to == "best" and maximize  # best log_prob − log_prob ≥ 0
    data = [(ref - r if flip else r - ref) if rel else r for r in raw]

    # y scale, and the floor that keeps zeros (the best run at its best) on a log axis
    use_floor = relative_to is not None or floor is not None
    vals = np.concatenate([d.ravel() for d in data])
    vals = vals[np.isfinite(vals)]
    nonneg = bool(vals.size) and bool(np.all(vals >= 0))
    pos = vals[vals > 0]
    if logy == "auto":
        logy = _log_auto([pos]) if use_floor and nonneg else _log_auto(data)
    floored = None
    if logy and use_floor and nonneg and (floor is not None or pos.size):
        floored = float(floor) if floor is not None else float(pos.min())
        data = [np.maximum(d, floored) for d in data]  # NaN stays NaN

    if ax is None:
        fig = new_figure(figsize or (7.0, 4.0), show=show)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    finals = []
    for _, sig, n in entries:
        s = sig[n]
        fin = float(_final_rows(s.data, s.chains)[0])
        finals.append((ref - fin if flip else fin - ref) if rel else fin)
    if multi:
        palette = colors(len(entries))
        delta = "Δ " if rel else ""
        for i, ((lab, sig, n), d) in enumerate(zip(entries, data, strict=True)):
            word = "mean" if sig[n].chains else "final"
            text = f"{lab} ({word} {delta}{fmt(finals[i], signed=rel and relative_to != "best")})"
            for c in range(d.shape[0]):
                ax.plot(
                    sig.x,
                    d[c],
                    color=palette[i],
                    lw=1.2,
                    alpha=0.7 if d.shape[0] > 1 else 1.0,
                    gid=f"data:{n}",
                    label=text if c == 0 else "_nolegend_",
                )
    else:
        sig = entries[0][1]
        d = data[0]
        palette = colors(d.shape[0])
        for c in range(d.shape[0]):
            ax.plot(
                sig.x,
                d[c],
                color=palette[c],
                lw=1.2,
                gid=f"data:{name}",
                label=f"chain {c}" if d.shape[0] > 1 else name,
            )
    if ref is not None and not rel:
        ax.axhline(ref, color="k", ls="--", lw=0.9, label=f"reference {fmt(ref)}")
    if logy:
        set_log_y(ax, data)
    ax.set_xlabel(entries[0][1].x_label)
    if relative_to == "best":
        ylabel = f"best {name} − {name}" if maximize else f"{name} − best {name}"
    else:
        ylabel = f"{name} − reference" if rel else name
    if floored is not None:
        ylabel += f" (floored at {fmt(floored)})"
    ax.set_ylabel(ylabel)
    if multi or ref is not None or data[0].shape[0] > 1:
        ax.legend(fontsize="small")
    if title is None:
        if multi:
            text = f"{name} of {len(entries)} runs"
            if best_label is not None:
                text += f", relative to the best {fmt(ref)} ({best_label})"
            elif ref is not None:
                text += f", reference {fmt(ref)}"
        else:
            s = entries[0][1][entries[0][2]]
            fin = float(_final_rows(s.data, s.chains)[0])
            word = "mean" if s.chains else "final"
            text = f"{name}: {word} {fmt(fin)}"
            if ref is not None:
                what = "best" if relative_to == "best" else "reference"
                text += f" ({what} {fmt(ref)}, Δ {fmt(fin - ref, signed=True)})"
        ax.set_title(text, fontsize=9)
    elif title:
        ax.set_title(str(title))
    return finish(fig, save=save, show=show, dpi=dpi)
