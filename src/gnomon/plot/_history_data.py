"""What a history panel draws (:func:`gnomon.plot.history.draw`), computed without matplotlib: per signal an
entry (values, residual or residual in σ, and its σ), the display units, the series (one line per chain each)
and the title line of each signal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from gnomon.plot._mpl import fmt, unit_text
from gnomon.plot._panel_data import final_rows
from gnomon.signals.signals import Signal, Signals
from gnomon.signals.transforms import summarize
from gnomon.thetaspace import units as U
from gnomon.util.format import format_uncertain
from gnomon.util.validate import positive_int

MODES = ("components", "summary", "hybrid")
SUMMARIES = ("rms", "norm", "meanabs")
RESIDUALS = ("auto", True, False, "sigma")
#: bands are drawn for at most this many series of a panel
MAX_BANDS = 12


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


def final_text(s: Signal, data: np.ndarray, what: bool | str, unit: str, factor: float, mode: str,
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


def has_sigma(sg: float | None) -> bool:
    """True for a usable 1σ scale of one series (finite and positive)."""
    return sg is not None and bool(np.isfinite(sg)) and sg > 0


class Entry(NamedTuple):
    """One signal of a panel: what is drawn of it (values, residual or residual in σ) and its σ."""

    signal: Signal
    what: bool | str
    data: np.ndarray  # (C, T, K), in the signal's units (or in σ)
    sigma: np.ndarray | None  # (K,)
    source: str  # what σ is


class Series(NamedTuple):
    """One line of a panel per chain: a scalar signal, a summary of a vector signal or one component."""

    y: np.ndarray  # (C, T) in display units
    label: str
    ref: float | None  # the truth line (values only)
    sigma: float | None  # its 1σ scale in display units
    style: str  # "plain", "summary" or "component"
    owner: str  # the signal's name


def check_options(mode: str, summary: str, top: int, bands: bool | str) -> int:
    """Refuse an unknown ``mode``, ``summary`` or ``bands`` and a ``top`` that is not an int ≥ 0."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {SUMMARIES}, got {summary!r}")
    top = positive_int(top, "top", minimum=0)
    if bands not in (True, False, "auto"):
        raise ValueError(f"bands must be True, False or 'auto', got {bands!r}")
    return top


def attach_sigma(sig: Signals, sigma: Any, names: list[str]) -> tuple[Signals, Any]:
    """``(signals, per-panel override)``: a CRLB result, or a mapping keyed by labels or other signals, is set
    on the signals (:meth:`Signals.with_sigma`); a value or a mapping of the panel's names stays an override."""
    crlb_like = sigma is not None and not isinstance(sigma, Mapping) and (
        hasattr(sigma, "marginal") or callable(getattr(sigma, "to_summary", None))
    )
    if crlb_like:  # a CRLB result: matched to the signals' component labels
        return sig.with_sigma(sigma, "CRLB"), None
    if isinstance(sigma, Mapping) and not set(sigma) <= set(names):  # keyed by labels or other signals
        return sig.with_sigma(sigma, "given", strict=False), None
    return sig, sigma


def entry(s: Signal, residual: bool | str, sigma: Any) -> Entry:
    what = _what(s, residual)
    sg, src = _sigma_of(s, _sigma_override(sigma, s.name), what)
    return Entry(s, what, _data(s, what, sg), sg, src)


def display_units(entries: list[Entry], units: Any, auto_units: bool) -> dict[str, tuple[str, float]]:
    """``{name: (display unit, factor)}``: the signals' own units, exactly as given, unless converted on
    request (``units=``; ``auto_units``: one unit for the panel when its signals share one)."""
    unit_of: dict[str, tuple[str, float]] = {}
    stored = {U.normalize_unit(e.signal.units) for e in entries if e.what != "sigma"}
    joint = None
    if auto_units and len(stored) == 1 and not any(U.unit_override(units, e.signal.name) for e in entries):
        pooled = np.concatenate([e.data.ravel() for e in entries if e.what != "sigma"] or [np.zeros(0)])
        joint = U.resolve_unit(next(iter(stored)), pooled, auto=True)
    for e in entries:
        if e.what == "sigma":
            unit_of[e.signal.name] = ("σ", 1.0)
        else:
            unit_of[e.signal.name] = joint or U.resolve_unit(
                e.signal.units, e.data, override=U.unit_override(units, e.signal.name), auto=auto_units
            )
    return unit_of


def series_of(entries: list[Entry], unit_of: Mapping[str, tuple[str, float]], mode: str, summary: str, top: int,
            single: bool) -> list[Series]:
    """The series of a panel in display units: a scalar signal is one; a vector signal its summary
    (``summary``/``hybrid``) and its components (all, or the ``top`` largest at the end for ``hybrid``)."""
    series = []
    for s, what, d, sg, _src in entries:
        _, factor = unit_of[s.name]
        truth = None if (what is not False or s.truth is None) else s.truth * factor
        sgs = None if sg is None else (np.ones_like(sg) if what == "sigma" else sg * factor)
        if s.scalar or s.num_components == 1:
            series.append(Series(d[..., 0] * factor, s.name, None if truth is None else truth[0],
                                  None if sgs is None else sgs[0], "plain", s.name))
            continue
        if mode in ("summary", "hybrid"):
            ref = None if truth is None else float(summarize(truth, summary))
            series.append(Series(summarize(d, summary) * factor, f"{summary}({s.name})" if not single else summary,
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
            series.append(Series(d[..., k] * factor, _short(s.labels[k], s.name, single),
                                  None if truth is None else truth[k], None if sgs is None else sgs[k], "component",
                                  s.name))
    return series
