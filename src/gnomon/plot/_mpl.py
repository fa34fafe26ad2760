"""Matplotlib plumbing shared by the plotting functions: lazy import, headless backend, figures, saving.

Figures are created as bare :class:`matplotlib.figure.Figure` objects (not through pyplot) unless
``show=True``: nothing is registered with a GUI, no window opens, and a figure is freed when dropped.
Jupyter still displays a returned Figure. When no display is available (Linux without ``DISPLAY`` or
``WAYLAND_DISPLAY``) and pyplot has not been imported yet, the Agg backend is selected.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def headless() -> bool:
    """True when no display is available (Linux/BSD without DISPLAY or WAYLAND_DISPLAY)."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


def ensure_backend() -> Any:
    """Import matplotlib, selecting Agg when headless and no backend was chosen; return the module."""
    import matplotlib

    if headless() and "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    return matplotlib


def new_figure(figsize: tuple[float, float] | None = None, show: bool = False, **kwargs: Any):
    """A constrained-layout figure: through pyplot when ``show`` (so it can be shown), bare otherwise."""
    ensure_backend()
    kwargs.setdefault("layout", "constrained")
    if show:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize, **kwargs)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, **kwargs)


def finish(
    fig: Any, save: str | os.PathLike | None = None, show: bool = False, dpi: int | None = None
) -> Any:
    """Save ``fig`` (format from the suffix) and/or show it; return it."""
    if save is not None:
        path = Path(save)
        if path.parent and not path.parent.exists():
            raise FileNotFoundError(f"{path.parent}: directory does not exist (cannot save {path.name})")
        fig.savefig(path, dpi=dpi)
    if show:
        import matplotlib.pyplot as plt

        plt.show()
    return fig


def fmt(v: float, signed: bool = False) -> str:
    """Compact number for titles: 4 significant digits, NaN as 'nan'."""
    if v is None or not np.isfinite(v):
        return "nan"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def set_log_y(ax: Any, arrays: list[np.ndarray]) -> None:
    """Log y when every finite plotted value is positive, else symlog with a threshold at the small end."""
    vals = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return
    if np.all(vals > 0):
        ax.set_yscale("log")
        return
    nz = np.abs(vals[vals != 0])
    linthresh = float(np.percentile(nz, 5)) if nz.size else 1.0
    ax.set_yscale("symlog", linthresh=linthresh if linthresh > 0 and math.isfinite(linthresh) else 1.0)


def colors(n: int) -> list[Any]:
    """``n`` distinct colors: the default cycle, or a continuous colormap beyond 10."""
    mpl = ensure_backend()
    if n <= 10:
        cycle = mpl.rcParams["axes.prop_cycle"].by_key().get("color", [])
        if len(cycle) >= n:
            return list(cycle[:n])
    cmap = mpl.colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]
