"""Helpers shared by the history, grid and loss figures.

* :func:`check_signals` and :func:`select_names` validate what a figure is asked to draw;
* :func:`final_rows` is the final value per component (the posterior mean for sampler chains), used in
  titles and to pick the largest components of a hybrid panel;
* :func:`log_auto` is the ``logy="auto"`` rule: log when every value is positive and they span more than
  two decades; :func:`band_swamped` the rule that puts a residual on a symlog axis (linear within its 1σ
  bound) when a linear axis would shrink the bound's band to a line;
* :func:`rejected_rows` and :func:`mark_rejected`: rows a backtracking rule rejected are left out of the
  lines and axis limits and drawn faintly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gnomon.plot._mpl import fmt
from gnomon.signals.signals import Signals


def check_signals(sig: Any) -> Signals:
    """``sig`` if it is a non-empty :class:`~gnomon.Signals`, else a ValueError saying what is expected."""
    if not isinstance(sig, Signals):
        raise ValueError(f"plotting takes gnomon.Signals (Signals.from_trace(trace, layout)), got {type(sig).__name__}")
    if sig.num_rows == 0:
        raise ValueError("these Signals have no rows to plot")
    return sig


def select_names(sig: Signals, names: str | Sequence[str] | None) -> list[str]:
    """``names`` (one name or several; None: all of ``sig``) as a list, each checked to be a signal of ``sig``."""
    if names is None:
        return list(sig.names)
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("no signal names given")
    unknown = [n for n in names if n not in sig]
    if unknown:
        raise ValueError(f"unknown signal(s) {unknown}; signals are {list(sig.names)}")
    return names


def final_rows(a: np.ndarray, chains: bool) -> np.ndarray:
    """Final value per component of a ``(C, T, K)`` array (posterior mean for chains)."""
    if chains:
        with np.errstate(all="ignore"):
            return np.nanmean(a.reshape(-1, a.shape[-1]), axis=0)
    rows = a[0]
    ok = np.flatnonzero(np.isfinite(rows).all(axis=-1))
    return rows[ok[-1]] if ok.size else rows[-1]


def log_auto(arrays: list[np.ndarray]) -> bool:
    """True when the finite values of ``arrays`` are all positive and ``max / min > 100``."""
    vals = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    return bool(vals.size and np.all(vals > 0) and vals.max() / vals.min() > 100.0)


def band_swamped(arrays: list[np.ndarray], sigma: float | None, ratio: float = 20.0) -> bool:
    """True when the finite values of ``arrays`` (residuals about zero) span more than ``ratio`` times the
    1σ bound ``sigma``: on a linear axis its ±1σ band would fill less than a tenth of the height (a ±38 µas band
    against a 2000 µas start is a line)."""
    if sigma is None or not (np.isfinite(sigma) and sigma > 0):
        return False
    vals = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return False
    span = max(float(vals.max()), 0.0) - min(float(vals.min()), 0.0)
    return span > ratio * sigma


def rejected_of(accepted: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """``(C, T)`` True where a backtracking rule rejected the row (``accepted == 0``; NaN — the final row, or
    no verdict — counts as accepted); None when no row was rejected."""
    if accepted is None:
        return None
    a = np.asarray(accepted, dtype=float).reshape(shape)
    rej = a == 0
    return rej if rej.any() else None


def rejected_rows(sig: Signals) -> np.ndarray | None:
    """``(C, T)`` mask of the rows of ``sig`` a backtracking rule rejected (its ``accepted`` channel is 0 there:
    a trial point the optimizer stepped back from, e.g. an overshoot to 1e220), or None when there are none.
    Figures draw such rows faintly and scale their axes to the accepted rows."""
    for n in ("accepted", "trace.accepted"):
        if n in sig and sig[n].role == "diagnostic":
            s = sig[n]
            return rejected_of(s.data[..., 0], s.data.shape[:2])
    return None


def limits(vals: np.ndarray) -> tuple[float, float] | None:
    """Linear y limits holding ``vals`` with a 5% margin (None when there is nothing finite)."""
    v = vals[np.isfinite(vals)]
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 1e-3, 1e-12)
    return lo - pad, hi + pad


def mark_rejected(ax: Any, points: list[tuple[np.ndarray, np.ndarray]], name: str) -> int:
    """Draw rejected trial points faintly: inside the y limits as grey crosses, beyond them as a grey triangle
    on the edge (▲ above, ▼ below; never clipped away). Returns how many lie beyond the limits."""
    x = np.concatenate([p[0] for p in points]) if points else np.zeros(0)
    y = np.concatenate([p[1] for p in points]) if points else np.zeros(0)
    if x.size == 0:
        return 0
    lo, hi = ax.get_ylim()
    finite = np.isfinite(y)
    above = ~finite | (y > hi)
    below = finite & (y < lo)
    inside = finite & ~above & ~below
    style = dict(ls="none", color="0.45", alpha=0.6, gid=f"rejected:{name}")
    off = int(above.sum() + below.sum())
    with np.errstate(invalid="ignore"):
        top = np.nanmax(np.where(finite, y, np.nan)) if finite.any() else float("nan")
    if inside.any():
        ax.plot(x[inside], y[inside], marker="x", ms=4, label="rejected trial", **style)
    if above.any():
        text = "rejected trial above the axis" + (f" (up to {fmt(float(top))})" if np.isfinite(top) and top > hi
                                                   else "")
        ax.plot(x[above], np.full(above.sum(), hi), marker="^", ms=5, clip_on=False,
                label=text, **style)
    if below.any():
        ax.plot(x[below], np.full(below.sum(), lo), marker="v", ms=5, clip_on=False,
                label="rejected trial below the axis", **style)
    ax.set_ylim(lo, hi)
    return off


