"""Histories of signals on one axis: :func:`history` (a figure) and :func:`draw` (into a given axis).

Both consume :class:`~gnomon.Signals` (named arrays + units + optional truth) and know nothing about engines
or domains; :func:`draw` also draws each panel of :func:`gnomon.plot.grid`. For every named signal a panel
draws, per chain (one line per chain for sampler runs):

* ``mode="components"`` — one line per component ``values[t, k]`` (a scalar signal is one line);
* ``mode="summary"`` — one line: RMS ``sqrt(mean_k v_k²)``, norm ``sqrt(Σ_k v_k²)`` or mean-abs
  ``mean_k |v_k|`` (``summary=``) of the vector at each row;
* ``mode="hybrid"`` — the summary line plus the ``top`` components of largest final ``|value|``.

With a known truth the panel shows the residual ``values − truth`` by default (``residual="auto"``);
``residual=False`` shows values with dashed truth lines, ``residual=True`` forces residuals (NaN, with a
note on the axis, when the truth is unknown). Residuals scale automatically from the unit strings
(:func:`gnomon.thetaspace.units.auto_unit`: arcsec residuals in mas or µas, metres in nm, fractions in ppm);
values are shown in their stored units. ``units=`` overrides either per signal (``{"name": "deg"}``) or
for all (``"µas"``); ``auto_units=False`` keeps the stored units.
Data lines carry ``gid="data:<signal name>"`` so they can be told apart from
reference lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gnomon.plot._mpl import colors, ensure_backend, finish, fmt, new_figure, set_log_y
from gnomon.plot._panel_data import check_signals, final_rows, log_auto, select_names
from gnomon.signals.signals import Signal, Signals
from gnomon.signals.transforms import summarize
from gnomon.thetaspace import units as U

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


def _use_residual(s: Signal, residual: bool | str) -> bool:
    if residual == "auto":
        return s.has_truth and s.role != "diagnostic"
    if isinstance(residual, bool):
        return residual
    raise ValueError(f"residual must be True, False or 'auto', got {residual!r}")


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
    fin = final_rows(data, s.chains) * factor
    if s.scalar or s.num_components == 1:
        v = float(fin[0])
        text = f"{what}: {word} {fmt(v, signed=res)}{ulab}"
        if s.chains:
            sd = float(np.nanstd(data[..., 0] * factor))
            text = f"{what}: {word} {fmt(v, signed=res)} ± {fmt(sd)}{ulab}"
        return text
    agg = how if mode == "summary" else "rms"
    return f"{what}: {word} {agg} {fmt(float(summarize(fin, agg)))}{ulab}"


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
    sig = check_signals(signals)
    names = select_names(sig, names)
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
            fin = np.abs(final_rows(d, s.chains))
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
        logy = log_auto(plotted)
    if logy:
        set_log_y(ax, plotted)
    if logx:
        ax.set_xscale("symlog" if np.nanmin(x) <= 0 else "log", **({"linthresh": 1.0} if np.nanmin(x) <= 0 else {}))

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
    sig = check_signals(signals)
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
