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

from gnomon.plot._mpl import bracket, colors, ensure_backend, finish, fmt, new_figure, set_log_y, symlog_x, unit_text
from gnomon.plot._panel_data import (
    band_swamped,
    check_signals,
    final_rows,
    limits,
    log_auto,
    mark_rejected,
    rejected_rows,
    select_names,
)
from gnomon.signals.signals import Signal, Signals
from gnomon.signals.transforms import summarize
from gnomon.thetaspace import units as U
from gnomon.util.format import format_uncertain

MODES = ("components", "summary", "hybrid")
SUMMARIES = ("rms", "norm", "meanabs")
RESIDUALS = ("auto", True, False, "sigma")
#: bands are drawn for at most this many series of a panel
MAX_BANDS = 12


@dataclass
class PanelInfo:
    """What :func:`draw` put on an axis (used for titles and by tests)."""

    title: str
    ylabel: str
    units: dict[str, str] = field(default_factory=dict)  # signal name -> display unit
    residual: dict[str, bool | str] = field(default_factory=dict)  # False, True or "sigma"
    num_lines: int = 0
    num_bands: int = 0


def _what(s: Signal, residual: bool | str) -> bool | str:
    """False (values), True (residual) or "sigma" for signal ``s``."""
    if residual not in RESIDUALS or (isinstance(residual, str) and residual not in ("auto", "sigma")):
        raise ValueError(f"residual must be True, False, 'auto' or 'sigma', got {residual!r}")
    if residual == "sigma":
        return "sigma"
    if residual == "auto":
        return s.has_truth and s.role != "diagnostic" and not s.is_error
    return bool(residual) and not s.is_error


def _short(label: str, name: str, single: bool) -> str:
    """Legend text of a component: its label without the signal's name when the panel has one signal
    (``name[Z4]`` → ``Z4``, ``name[3]`` → ``[3]``)."""
    if single and label.startswith(name) and label != name:
        rest = label[len(name) :]
        inner = rest[1:-1] if rest.startswith("[") and rest.endswith("]") else None
        return inner if inner and not inner.replace(",", "").isdigit() else rest
    return label


def _sigma_of(s: Signal, override: Any, what: bool | str) -> tuple[np.ndarray | None, str]:
    """``((K,) σ or None, source)``: the override or the signal's own σ (a CRLB); for residuals in σ of
    sampler chains without one, the posterior sd."""
    if override is not None:
        return np.broadcast_to(np.asarray(override, dtype=float).reshape(-1), (s.num_components,)), "given"
    if s.sigma is not None:
        return s.sigma, s.sigma_source
    if s.chains and what == "sigma":
        return s.spread(), "posterior sd"
    return None, ""


def _data(s: Signal, what: bool | str, sigma: np.ndarray | None) -> np.ndarray:
    """The ``(C, T, K)`` array to draw."""
    if what is False:
        return np.asarray(s.data, dtype=float)
    if s.is_error:
        r = np.asarray(s.data, dtype=float)
    elif s.truth is None:
        r = np.full(s.data.shape, np.nan)
    else:
        r = np.asarray(s.data - s.truth, dtype=float)
    if what == "sigma":
        sg = np.full(s.num_components, np.nan) if sigma is None else np.where(sigma > 0, sigma, np.nan)
        with np.errstate(all="ignore"):
            r = r / sg
    return r


def _fmt_unit(unit: str) -> str:
    u = unit_text(unit)
    return f" {u}" if u else ""


def _final_text(s: Signal, data: np.ndarray, what: bool | str, unit: str, factor: float, mode: str,
                how: str, sigma: np.ndarray | None, sigma_src: str) -> str:
    """The panel title line of one signal: what is plotted, at its end (optimization) or over the chains."""
    res_word = " residual" if what is True else (" residual / σ" if what == "sigma" else "")
    what_text = f"{s.name}{res_word}"
    ulab = "σ" if what == "sigma" else _fmt_unit(unit).strip()
    ulab = f" {ulab}" if ulab else ""
    if what is not False and s.truth is None and not s.is_error:
        return f"{what_text}: no truth"
    if what == "sigma" and (sigma is None or not np.isfinite(sigma).any()):
        return f"{what_text}: no σ (pass sigma= or a CRLB)"
    d = data * (1.0 if what == "sigma" else factor)
    signed = what is not False or s.is_error
    bound = ""
    if what != "sigma" and sigma is not None and np.isfinite(sigma).any() and s.num_components == 1:
        bound = f" ({sigma_src or 'σ'} {fmt(float(sigma[0]) * factor)}{ulab})"
    if s.scalar or s.num_components == 1:
        if s.chains:
            flat = d[..., 0].ravel()
            with np.errstate(all="ignore"):
                m, sd = float(np.nanmean(flat)), float(np.nanstd(flat, ddof=1)) if flat.size > 1 else np.nan
            return f"{what_text}: {format_uncertain(m, sd)}{ulab} (mean ± sd){bound}"
        v = float(final_rows(d, False)[0])
        return f"{what_text}: final {fmt(v, signed=signed)}{ulab}{bound}"
    if mode == "summary":  # the plotted curve is the per-row summary: report its end / its mean over draws
        curve = summarize(d, how)
        if s.chains:
            with np.errstate(all="ignore"):
                m, sd = float(np.nanmean(curve)), float(np.nanstd(curve, ddof=1)) if curve.size > 1 else np.nan
            return f"{what_text}: {how} per draw {format_uncertain(m, sd)}{ulab} (mean ± sd)"
        ok = np.flatnonzero(np.isfinite(curve[0]))
        v = float(curve[0][ok[-1]]) if ok.size else float("nan")
        return f"{what_text}: final {how} {fmt(v)}{ulab}"
    if s.chains:  # components: one line per component and chain; say what the means and spreads are
        flat = d.reshape(-1, d.shape[-1])
        with np.errstate(all="ignore"):
            means = np.nanmean(flat, axis=0)
            sds = np.nanstd(flat, axis=0, ddof=1) if flat.shape[0] > 1 else np.full(flat.shape[-1], np.nan)
        return (f"{what_text}: posterior means rms {fmt(float(summarize(means, 'rms')))}{ulab}, "
                f"sds rms {fmt(float(summarize(sds, 'rms')))}{ulab}")
    fin = final_rows(d, False)
    return f"{what_text}: final rms over components {fmt(float(summarize(fin, 'rms')))}{ulab}"


def _sigma_override(sigma: Any, name: str) -> Any:
    if sigma is None:
        return None
    if isinstance(sigma, Mapping):
        return sigma.get(name)
    return sigma


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
    logy: bool | str = False,
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
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")
    if not isinstance(top, int) or top < 0:
        raise ValueError(f"top must be a non-negative int, got {top!r}")
    if bands not in (True, False, "auto"):
        raise ValueError(f"bands must be True, False or 'auto', got {bands!r}")
    crlb_like = sigma is not None and not isinstance(sigma, Mapping) and (
        hasattr(sigma, "marginal") or callable(getattr(sigma, "to_summary", None))
    )
    if crlb_like:  # a CRLB result: matched to the signals' component labels
        sig, sigma = sig.with_sigma(sigma, "CRLB"), None
    elif isinstance(sigma, Mapping) and not set(sigma) <= set(names):  # keyed by labels or other signals
        sig, sigma = sig.with_sigma(sigma, "given", strict=False), None
    single = len(names) == 1
    x = sig.x

    entries = []  # (signal, what, (C, T, K) data, σ (K,) or None, σ source)
    for n in names:
        s = sig[n]
        what = _what(s, residual)
        sg, src = _sigma_of(s, _sigma_override(sigma, n), what)
        entries.append((s, what, _data(s, what, sg), sg, src))

    # display units: the signals' own units, exactly as given, unless converted on request
    unit_of: dict[str, tuple[str, float]] = {}
    stored = {U.normalize_unit(s.units) for s, w, *_ in entries if w != "sigma"}
    joint = None
    if auto_units and len(stored) == 1 and not any(U.unit_override(units, s.name) for s, *_ in entries):
        pooled = np.concatenate([d.ravel() for s, w, d, *_ in entries if w != "sigma"] or [np.zeros(0)])
        joint = U.resolve_unit(next(iter(stored)), pooled, auto=True)
    for s, what, d, *_ in entries:
        if what == "sigma":
            unit_of[s.name] = ("σ", 1.0)
        else:
            unit_of[s.name] = joint or U.resolve_unit(
                s.units, d, override=U.unit_override(units, s.name), auto=auto_units
            )

    # series: (y (C, T), label, truth line or None, σ (scalar) or None, style)
    series = []
    for s, what, d, sg, _src in entries:
        unit, factor = unit_of[s.name]
        truth = None if (what is not False or s.truth is None) else s.truth * factor
        sgs = None if sg is None else (np.ones_like(sg) if what == "sigma" else sg * factor)
        if s.scalar or s.num_components == 1:
            series.append((d[..., 0] * factor, s.name, None if truth is None else truth[0],
                           None if sgs is None else sgs[0], "plain", s.name))
            continue
        if mode in ("summary", "hybrid"):
            ref = None if truth is None else float(summarize(truth, summary))
            series.append((summarize(d, summary) * factor, f"{summary}({s.name})" if not single else summary,
                           ref, None, "summary", s.name))
        if mode == "components":
            ks = range(s.num_components)
        elif mode == "hybrid":
            fin = np.abs(final_rows(d, s.chains))
            order = np.argsort(np.where(np.isfinite(fin), -fin, np.inf), kind="stable")
            ks = sorted(order[: min(top, s.num_components)].tolist())
        else:
            ks = []
        for k in ks:
            series.append((d[..., k] * factor, _short(s.labels[k], s.name, single),
                           None if truth is None else truth[k], None if sgs is None else sgs[k], "component",
                           s.name))

    num_chains = sig.num_chains
    rej = rejected_rows(sig) if sig.kind == "optimization" else None
    rej_row = None if rej is None else rej[0]
    rejected_points: list[tuple[np.ndarray, np.ndarray]] = []
    by_chain = num_chains > 1 and len(series) == 1
    palette = colors(num_chains if by_chain else max(len(series), 1))
    drawn = banded = 0
    plotted = []
    ensure_backend()
    with_bands = bands is True or (bands == "auto" and len(series) <= MAX_BANDS)
    any_sigma = any(w == "sigma" for _, w, *_ in entries)
    if any_sigma and with_bands:  # residuals in σ: the same ±1σ, ±2σ bands for every series
        ax.axhspan(-2.0, 2.0, color="0.5", alpha=0.08, lw=0, gid="band:σ")
        ax.axhspan(-1.0, 1.0, color="0.5", alpha=0.12, lw=0, gid="band:σ")
        banded += 1
    n_bands = sum(1 for *_, sg, _, _ in series if sg is not None and np.isfinite(sg) and sg > 0)
    for i, (y, lab, ref, sg, style, owner) in enumerate(series):
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
            if rej_row is not None:  # rejected trial rows: out of the line, drawn faintly after the limits
                rejected_points.append((x[rej_row], y[c][rej_row]))
                ax.plot(x[~rej_row], y[c][~rej_row], color=col, lw=lw, alpha=alpha, label=clab, gid=gid)
            else:
                ax.plot(x, y[c], color=col, lw=lw, alpha=alpha, label=clab, gid=gid)
            drawn += 1
        plotted.append(y if rej_row is None else np.where(rej_row, np.nan, y))
        what = next(w for s, w, *_ in entries if s.name == owner)
        centre = 0.0 if what is not False else ref
        if with_bands and sg is not None and np.isfinite(sg) and sg > 0 and what != "sigma" and centre is not None \
                and np.isfinite(centre):
            # one band: the series' colour; several: grey, each fainter (their overlap is as dark as one band)
            bc = "0.5" if by_chain or n_bands > 1 else col
            a = 1.0 / max(n_bands, 1)
            ax.axhspan(centre - 2 * sg, centre + 2 * sg, color=bc, alpha=0.07 * a, lw=0, gid=f"band:{owner}")
            ax.axhspan(centre - sg, centre + sg, color=bc, alpha=0.14 * a, lw=0, gid=f"band:{owner}")
            banded += 1
        if ref is not None and truth_lines and np.isfinite(ref):
            ax.axhline(ref, color=col, ls="--", lw=0.8, alpha=0.8)
    if any(w is not False for _, w, *_ in entries):
        ax.axhline(0.0, color="0.5", lw=0.6, zorder=0)
    notes = []
    if any(w is not False and s.truth is None and not s.is_error for s, w, *_ in entries):
        notes.append("no truth: residual unknown")
    if any(w == "sigma" and (sg is None or not np.isfinite(sg).any()) for _, w, _, sg, _ in entries):
        notes.append("no σ: pass sigma= or a CRLB")
    if notes:
        ax.text(0.5, 0.5, "\n".join(notes), transform=ax.transAxes, ha="center", va="center", color="0.4",
                fontsize=9)

    bounds = [float(sg) for *_, sg, _, _ in series if sg is not None and np.isfinite(sg) and sg > 0]
    # residuals and errors sit about zero: with a bound, a symlog axis linear within ±σ keeps its band visible
    centred = all(w is not False or s.is_error for s, w, *_ in entries)
    if logy == "auto":
        logy = log_auto(plotted) or (centred and bool(bounds) and band_swamped(plotted, min(bounds)))
    if logy:
        # a positive error (an RMS) on a log axis shows its band from the bottom up to σ, unless every value
        # lies above σ: then symlog, so that the band (and zero) stay on the axis
        pooled = np.concatenate([np.ravel(p) for p in plotted]) if plotted else np.zeros(0)
        pooled = pooled[np.isfinite(pooled)]
        above = bool(bounds) and pooled.size > 0 and float(pooled.min()) > min(bounds)
        set_log_y(ax, plotted, linthresh=min(bounds) if bounds else None, symlog=centred and above)
    elif rejected_points:
        extra = [np.array([r for *_, r, _, _, _ in series if r is not None], dtype=float)]
        if bounds and with_bands and centred:
            extra.append(np.array([-2.0 * max(bounds), 2.0 * max(bounds)]))
        lim = limits(np.concatenate([np.ravel(p) for p in plotted] + extra))
        if lim is not None:
            ax.set_ylim(*lim)
    if rejected_points:
        mark_rejected(ax, rejected_points, names[0] if single else "panel")
    if logx:
        symlog_x(ax, x)

    disp = {u for u, _ in unit_of.values()}
    ulab = bracket(next(iter(disp))) if len(disp) == 1 else ""
    whats = {w for _, w, *_ in entries}
    prefix = f"{summary} of " if mode == "summary" and any(not s.scalar for s, *_ in entries) else ""
    if ylabel is not None:
        ylabel = f"{ylabel}{ulab}"
    elif single:
        word = {True: " residual", "sigma": " residual"}.get(entries[0][1], "")
        ylabel = f"{prefix}{names[0]}{word}{ulab}"
    else:
        word = "residual" if whats <= {True, "sigma"} else ("error" if all(s.is_error for s, *_ in entries)
                                                            else "value")
        ylabel = f"{prefix}{word}{ulab}"
    ax.set_ylabel(ylabel)
    ax.set_xlabel(sig.x_label)
    labelled = len(series) if not by_chain else num_chains
    if legend is True or (legend == "auto" and 1 < labelled <= max_legend):
        ax.legend(fontsize="small", loc="best", ncol=1 if labelled <= 6 else 2)

    title = "\n".join(
        _final_text(s, d, w, unit_of[s.name][0], unit_of[s.name][1], mode, summary, sg, src)
        for s, w, d, sg, src in entries
    )
    return PanelInfo(
        title=title,
        ylabel=ylabel,
        units={n: u for n, (u, _) in unit_of.items()},
        residual={s.name: w for s, w, *_ in entries},
        num_lines=drawn,
        num_bands=banded,
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
    auto_units: bool = False,
    logy: bool | str = False,
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
        limits), False, or ``"auto"`` (log when all values are positive and span more than two decades).
        ``logx``: log step axis (symlog when it starts at 0).
      title: None for the final value(s)/residual(s) of each signal, a string, or False for none.
      ylabel: axis label text (the display unit is appended); default from the names.
      sigma: 1σ scale(s) overriding the signals' own (a value, ``{name: value(s)}`` or a CRLB result).
      bands: shade ±1σ and ±2σ where σ is known (True, False, ``"auto"``).
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
        sigma=sigma,
        bands=bands,
    )
    if title is None:
        ax.set_title(info.title, fontsize=9)
    elif title:
        ax.set_title(str(title))
    return finish(fig, save=save, show=show, dpi=dpi)


__all__ = ["draw", "history", "PanelInfo", "MODES", "SUMMARIES"]
