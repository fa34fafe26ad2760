"""Histories of signals on one axis: :func:`history` (a figure) and :func:`draw` (into a given axis).

Both consume :class:`~gnomon.Signals` (named arrays + units + optional truth and 1σ scale) and know nothing
about engines or domains; :func:`draw` also draws each panel of :func:`gnomon.plot.grid`. For every named
signal a panel draws, per chain (one line per chain for sampler runs):

* ``mode="components"`` — one line per component ``values[t, k]`` (a scalar signal is one line);
* ``mode="summary"`` — one line: RMS ``sqrt(mean_k v_k²)``, norm ``sqrt(Σ_k v_k²)`` or mean-abs
  ``mean_k |v_k|`` (``summary=``) of the vector at each row;
* ``mode="hybrid"`` — the summary line plus the ``top`` components of largest final ``|value|``.

What is drawn (``residual=``):

* ``"auto"`` (default): the residual ``values − truth`` when the truth is known, else the values;
* ``False``: the values, with dashed truth lines;
* ``True``: the residual (NaN, with a note on the axis, when the truth is unknown);
* ``"sigma"``: the residual in units of its 1σ scale, ``(values − truth) / σ`` — σ is the signal's CRLB
  (``Signals.from_trace(..., crlb=...)``, :meth:`~gnomon.Signals.with_sigma`, or ``sigma=`` here) or, for
  sampler chains without one, the posterior sd.

A signal that is already an error (``Signal.is_error``, made by an error transform) is drawn as it is and
labelled by its name, never as a "residual" of itself. Units are shown exactly as the signals carry them
(``units=`` converts to another unit of the same family, per signal or for all; ``auto_units=True`` picks
the largest unit in which the values are at least 1). With a 1σ scale, ``bands`` shades ±1σ (and ±2σ) around
the truth (values), zero (residuals) or ±1, ±2 (residuals in σ). ``logy=True`` uses a log axis (symlog when
values cross zero, or — for a residual or error with a σ — when every value lies above σ; linear within ±σ)
whose limits hold every point, the starting values included. ``logy="auto"`` is log when the values are
positive over more than two decades, and symlog linear within ±σ when a residual or error with a known σ spans
more than 20 σ (a linear axis would shrink its band to a line).

Rows a backtracking rule rejected (the ``accepted`` diagnostic signal is 0 there) are left out of the lines
and of the axis limits and drawn faintly (``gid="rejected:<name>"``).

Data lines carry ``gid="data:<signal name>"``, bands ``gid="band:<signal name>"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gnomon.plot._history_data import (
    MAX_BANDS,
    MODES,
    SUMMARIES,
    Entry,
    Series,
    attach_sigma,
    check_options,
    display_units,
    entry,
    final_text,
    has_sigma,
    series_of,
)
from gnomon.plot._mpl import axis_title, bracket, colors, ensure_backend, finish, one_axis, set_log_y, symlog_x
from gnomon.plot._panel_data import (
    band_swamped,
    check_signals,
    limits,
    log_auto,
    mark_rejected,
    rejected_rows,
    select_names,
)
from gnomon.signals.signals import Signals


@dataclass
class PanelInfo:
    """What :func:`draw` put on an axis (used for titles and by tests)."""

    title: str
    ylabel: str
    units: dict[str, str] = field(default_factory=dict)  # signal name -> display unit
    residual: dict[str, bool | str] = field(default_factory=dict)  # False, True or "sigma"
    num_lines: int = 0
    num_bands: int = 0


@dataclass
class _Drawn:
    """What :func:`_draw_series` put on the axis."""

    by_chain: bool
    num_lines: int = 0
    num_bands: int = 0
    plotted: list = field(default_factory=list)  # (C, T) per series, rejected rows NaN
    rejected: list = field(default_factory=list)  # (x, y) of rejected rows


def _draw_series(ax: Any, sig: Signals, names: list[str], entries: list[Entry], series: list[Series],
                 mode: str, with_bands: bool, truth_lines: bool) -> _Drawn:
    """Draw each series (one line per chain; rows a backtracking rule rejected left out and collected), its
    ±1σ / ±2σ band and its truth line."""
    x, num_chains, single = sig.x, sig.num_chains, len(names) == 1
    rej = rejected_rows(sig) if sig.kind == "optimization" else None
    rej_row = None if rej is None else rej[0]
    out = _Drawn(by_chain=num_chains > 1 and len(series) == 1)
    palette = colors(num_chains if out.by_chain else max(len(series), 1))
    ensure_backend()
    if with_bands and any(e.what == "sigma" for e in entries):  # residuals in σ: the same bands for every series
        ax.axhspan(-2.0, 2.0, color="0.5", alpha=0.08, lw=0, gid="band:σ")
        ax.axhspan(-1.0, 1.0, color="0.5", alpha=0.12, lw=0, gid="band:σ")
        out.num_bands += 1
    n_bands = sum(1 for se in series if has_sigma(se.sigma))
    what_of = {e.signal.name: e.what for e in entries}
    for i, se in enumerate(series):
        hybrid_summary = se.style == "summary" and mode == "hybrid"
        col = "k" if hybrid_summary else palette[0 if out.by_chain else i]
        lw = 2.0 if hybrid_summary else 1.2
        alpha = 0.7 if num_chains > 1 else 1.0
        gid = f"data:{names[0] if single else se.label}"
        for c in range(num_chains):
            if out.by_chain:
                col, clab = palette[c], f"chain {c}"
            else:
                clab = se.label if c == 0 else "_nolegend_"
            if rej_row is not None:  # rejected trial rows: out of the line, drawn faintly after the limits
                out.rejected.append((x[rej_row], se.y[c][rej_row]))
                ax.plot(x[~rej_row], se.y[c][~rej_row], color=col, lw=lw, alpha=alpha, label=clab, gid=gid)
            else:
                ax.plot(x, se.y[c], color=col, lw=lw, alpha=alpha, label=clab, gid=gid)
            out.num_lines += 1
        out.plotted.append(se.y if rej_row is None else np.where(rej_row, np.nan, se.y))
        what = what_of[se.owner]
        centre = 0.0 if what is not False else se.ref
        if with_bands and has_sigma(se.sigma) and what != "sigma" and centre is not None and np.isfinite(centre):
            # one band: the series' colour; several: grey, each fainter (their overlap is as dark as one band)
            sg, bc, a = se.sigma, "0.5" if out.by_chain or n_bands > 1 else col, 1.0 / max(n_bands, 1)
            ax.axhspan(centre - 2 * sg, centre + 2 * sg, color=bc, alpha=0.07 * a, lw=0, gid=f"band:{se.owner}")
            ax.axhspan(centre - sg, centre + sg, color=bc, alpha=0.14 * a, lw=0, gid=f"band:{se.owner}")
            out.num_bands += 1
        if se.ref is not None and truth_lines and np.isfinite(se.ref):
            ax.axhline(se.ref, color=col, ls="--", lw=0.8, alpha=0.8)
    return out


def _notes(ax: Any, entries: list[Entry]) -> None:
    """The zero line of residuals, and a note where a residual has no truth or no σ to be measured in."""
    if any(e.what is not False for e in entries):
        ax.axhline(0.0, color="0.5", lw=0.6, zorder=0)
    notes = []
    if any(e.what is not False and e.signal.truth is None and not e.signal.is_error for e in entries):
        notes.append("no truth: residual unknown")
    if any(e.what == "sigma" and (e.sigma is None or not np.isfinite(e.sigma).any()) for e in entries):
        notes.append("no σ: pass sigma= or a CRLB")
    if notes:
        ax.text(0.5, 0.5, "\n".join(notes), transform=ax.transAxes, ha="center", va="center", color="0.4",
                fontsize=9)


def _y_scale(ax: Any, logy: bool | str, drawn: _Drawn, entries: list[Entry], series: list[Series],
             with_bands: bool) -> None:
    """The y axis: log or symlog (``logy``, ``"auto"`` decided here), else limits that leave out rejected
    rows but keep the truth lines and the ±2σ band."""
    plotted = drawn.plotted
    bounds = [float(se.sigma) for se in series if has_sigma(se.sigma)]
    # residuals and errors sit about zero: with a bound, a symlog axis linear within ±σ keeps its band visible
    centred = all(e.what is not False or e.signal.is_error for e in entries)
    if logy == "auto":
        logy = log_auto(plotted) or (centred and bool(bounds) and band_swamped(plotted, min(bounds)))
    if logy:
        # a positive error (an RMS) on a log axis shows its band from the bottom up to σ, unless every value
        # lies above σ: then symlog, so that the band (and zero) stay on the axis
        pooled = np.concatenate([np.ravel(p) for p in plotted]) if plotted else np.zeros(0)
        pooled = pooled[np.isfinite(pooled)]
        above = bool(bounds) and pooled.size > 0 and float(pooled.min()) > min(bounds)
        set_log_y(ax, plotted, linthresh=min(bounds) if bounds else None, symlog=centred and above)
    elif drawn.rejected:
        extra = [np.array([se.ref for se in series if se.ref is not None], dtype=float)]
        if bounds and with_bands and centred:
            extra.append(np.array([-2.0 * max(bounds), 2.0 * max(bounds)]))
        lim = limits(np.concatenate([np.ravel(p) for p in plotted] + extra))
        if lim is not None:
            ax.set_ylim(*lim)


def _ylabel(entries: list[Entry], names: list[str], unit_of: Mapping[str, tuple[str, float]], mode: str,
            summary: str, ylabel: str | None) -> str:
    """The y label: the given text, the signal's name or what the signals are (residual, error, value), with
    the display unit when the panel has one."""
    disp = {u for u, _ in unit_of.values()}
    ulab = bracket(next(iter(disp))) if len(disp) == 1 else ""
    whats = {e.what for e in entries}
    prefix = f"{summary} of " if mode == "summary" and any(not e.signal.scalar for e in entries) else ""
    if ylabel is not None:
        return f"{ylabel}{ulab}"
    if len(names) == 1:
        word = {True: " residual", "sigma": " residual"}.get(entries[0].what, "")
        return f"{prefix}{names[0]}{word}{ulab}"
    word = "residual" if whats <= {True, "sigma"} else ("error" if all(e.signal.is_error for e in entries)
                                                        else "value")
    return f"{prefix}{word}{ulab}"


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
    auto_units: bool = False,
    logy: bool | str = "auto",
    logx: bool = False,
    truth_lines: bool = True,
    legend: bool | str = "auto",
    max_legend: int = 12,
    ylabel: str | None = None,
    sigma: Any = None,
    bands: bool | str = "auto",
) -> PanelInfo:
    """Draw ``names`` on ``ax`` (see the module docstring) and return a :class:`PanelInfo`.

    ``sigma`` overrides the signals' 1σ scales: one value (or ``(K,)`` array) for all signals of the panel,
    a mapping signal name → value(s), or a CRLB result (applied through :meth:`Signals.with_sigma`).
    ``bands``: True, False or ``"auto"`` (±1σ / ±2σ bands where σ is known, for at most
    :data:`MAX_BANDS` series)."""
    sig = check_signals(signals)
    names = select_names(sig, names)
    top = check_options(mode, summary, top, bands)
    sig, sigma = attach_sigma(sig, sigma, names)
    entries = [entry(sig[n], residual, sigma) for n in names]
    unit_of = display_units(entries, units, auto_units)
    series = series_of(entries, unit_of, mode, summary, top, len(names) == 1)
    with_bands = bands is True or (bands == "auto" and len(series) <= MAX_BANDS)
    drawn = _draw_series(ax, sig, names, entries, series, mode, with_bands, truth_lines)
    _notes(ax, entries)
    _y_scale(ax, logy, drawn, entries, series, with_bands)
    if drawn.rejected:
        mark_rejected(ax, drawn.rejected, names[0] if len(names) == 1 else "panel")
    if logx:
        symlog_x(ax, sig.x)
    ylabel = _ylabel(entries, names, unit_of, mode, summary, ylabel)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(sig.x_label)
    labelled = len(series) if not drawn.by_chain else sig.num_chains
    if legend is True or (legend == "auto" and 1 < labelled <= max_legend):
        ax.legend(fontsize="small", loc="best", ncol=1 if labelled <= 6 else 2)
    title = "\n".join(
        final_text(e.signal, e.data, e.what, *unit_of[e.signal.name], mode, summary, e.sigma, e.source)
        for e in entries
    )
    return PanelInfo(title=title, ylabel=ylabel, units={n: u for n, (u, _) in unit_of.items()},
                     residual={e.signal.name: e.what for e in entries}, num_lines=drawn.num_lines,
                     num_bands=drawn.num_bands)


def history(
    signals: Signals,
    names: str | Sequence[str] | None = None,
    mode: str = "components",
    *,
    residual: bool | str = "auto",
    summary: str = "rms",
    top: int = 3,
    units: str | Mapping[str, str] | None = None,
    auto_units: bool = False,
    logy: bool | str = "auto",
    logx: bool = False,
    title: str | bool | None = None,
    legend: bool | str = "auto",
    ylabel: str | None = None,
    sigma: Any = None,
    bands: bool | str = "auto",
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
      residual: ``"auto"`` (residual when the truth is known), True, False, or ``"sigma"`` (residual in units
        of the CRLB or posterior sd).
      summary: ``"rms"``, ``"norm"`` or ``"meanabs"`` for summary/hybrid modes.
      top: number of components added to the summary in hybrid mode.
      units: display unit(s): one for all signals or ``{name: unit}``; the signals' own units otherwise.
      auto_units: pick the largest unit of the family in which the values are at least 1.
      logy: True (log, or symlog when values cross zero; every point, the start included, stays inside the
        limits), False, or ``"auto"`` (the default: log when all values are positive and span more than two
        decades, symlog when a residual's CRLB band would shrink to a line).
        ``logx``: log step axis (symlog when it starts at 0).
      title: None for the final value(s)/residual(s) of each signal, a string, or False for none.
      ylabel: axis label text (the display unit is appended); default from the names.
      sigma: 1σ scale(s) overriding the signals' own (a value, ``{name: value(s)}`` or a CRLB result).
      bands: shade ±1σ and ±2σ where σ is known (True, False, ``"auto"``).
      ax: draw into this axis instead of a new figure; ``figsize`` for a new one.
      save: file to write (format from the suffix); ``show``: display with pyplot (never by default).
    """
    sig = check_signals(signals)
    fig, ax = one_axis(ax, figsize, show)
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
        sigma=sigma,
        bands=bands,
    )
    axis_title(ax, title, info.title)
    return finish(fig, save=save, show=show, dpi=dpi)


__all__ = ["draw", "history", "PanelInfo", "MODES", "SUMMARIES"]
