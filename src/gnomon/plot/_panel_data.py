"""Helpers shared by the history, grid and loss figures.

* :func:`check_signals` and :func:`select_names` validate what a figure is asked to draw;
* :func:`final_rows` is the final value per component (the posterior mean for sampler chains), used in
  titles and to pick the largest components of a hybrid panel;
* :func:`log_auto` is the ``logy="auto"`` rule: log when every value is positive and they span more than
  two decades.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

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
