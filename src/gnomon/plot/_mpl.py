"""Matplotlib plumbing shared by the plotting functions: lazy import, headless backend, figures, saving,
text that fits, log axes that keep every point.

Figures are created as bare :class:`matplotlib.figure.Figure` objects (not through pyplot) unless
``show=True``: nothing is registered with a GUI, no window opens, and a figure is freed when dropped.
Jupyter still displays a returned Figure. When no display is available (Linux without ``DISPLAY`` or
``WAYLAND_DISPLAY``) and pyplot has not been imported yet, the Agg backend is selected.

Figures use constrained layout, which makes room for labels but cannot shorten a label longer than its axes:
:func:`fit_text` wraps (at spaces, dots, underscores) and if need be shrinks axis titles and labels to their
axes, so that no two texts of a figure overlap at any grid size (:func:`text_overlaps` checks it).
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
    """Fit the figure's texts (:func:`fit_text`), save it (format from the suffix) and/or show it; return it."""
    fit_text(fig)
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


def set_log_y(ax: Any, arrays: list[np.ndarray], linthresh: float | None = None) -> None:
    """Log y when every finite plotted value is positive, else symlog — linear within ``±linthresh`` (e.g. the
    1σ bound of a residual; default: the 5th percentile of the non-zero |values|) and logarithmic beyond; the
    limits are then set to hold every finite value (the starting values of a history included)."""
    vals = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return
    if np.all(vals > 0):
        ax.set_yscale("log")
        lo, hi = float(vals.min()), float(vals.max())
        if hi / lo < 10.0:  # pad to at least a decade so that log ticks show
            mid = math.sqrt(lo * hi)
            lo, hi = min(lo, mid / math.sqrt(10.0)), max(hi, mid * math.sqrt(10.0))
        ax.set_ylim(lo / 1.3, hi * 1.3)
        return
    if linthresh is None or not (math.isfinite(linthresh) and linthresh > 0):
        nz = np.abs(vals[vals != 0])
        linthresh = float(np.percentile(nz, 5)) if nz.size else 1.0
        linthresh = linthresh if linthresh > 0 and math.isfinite(linthresh) else 1.0
    ax.set_yscale("symlog", linthresh=linthresh)
    lo, hi = float(vals.min()), float(vals.max())

    def pad(v: float, up: bool) -> float:  # 30% beyond the value in the log part, a margin in the linear one
        if abs(v) > linthresh:
            return v * 1.3 if (v > 0) == up else v / 1.3
        return v + (linthresh if up else -linthresh)

    ax.set_ylim(pad(lo, False), pad(hi, True))


def symlog_x(ax: Any, x: np.ndarray) -> None:
    """Log x (symlog with a linear part below 1 when x starts at 0, so the first row stays visible)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size and x.min() > 0:
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=1.0)


# ---------------------------------------------------------------------------------------------- text fitting
_BREAKS = (" ", ".", "_", "/", ",")


def renderer(fig: Any) -> Any:
    """A renderer for measuring text of ``fig`` (an Agg canvas is attached to a bare Figure)."""
    get = getattr(fig.canvas, "get_renderer", None)
    if get is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        get = FigureCanvasAgg(fig).get_renderer
    return get()


def _length(text: Any, r: Any, vertical: bool) -> float:
    ext = text.get_window_extent(r)
    return ext.height if vertical else ext.width


def _tokens(line: str) -> list[str]:
    """``line`` split after each break character, keeping them (joining the tokens gives ``line``); a dot or
    comma breaks only before a letter (``a.b_c``), never inside a number (``0.108``)."""
    out, cur = [], ""
    for i, ch in enumerate(line):
        cur += ch
        nxt = line[i + 1] if i + 1 < len(line) else ""
        if ch in _BREAKS and (ch in " /_" or nxt.isalpha()):
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out


def _fit_one(text: Any, avail: float, r: Any, vertical: bool, min_size: float) -> bool:
    """Wrap and shrink one text to ``avail`` pixels; True when it changed."""
    full = getattr(text, "_gnomon_full", None)
    if full is None:
        full = text.get_text()
        text._gnomon_full = full
        text._gnomon_size = text.get_fontsize()
    if not full or avail <= 0:
        return False
    before = (text.get_text(), text.get_fontsize())
    if before == (full, text._gnomon_size) and not any(
        _line_too_long(text, ln, avail, r, vertical) for ln in full.split("\n")
    ):
        return False  # fits as it is
    size = text._gnomon_size
    while True:
        text.set_fontsize(size)
        lines = []
        for raw in full.split("\n"):
            cur = ""
            for tok in _tokens(raw):
                text.set_text((cur + tok).strip())
                if cur and _length(text, r, vertical) > avail:
                    lines.append(cur.strip())
                    cur = tok
                else:
                    cur += tok
            lines.append(cur.strip())
        text.set_text("\n".join(lines))
        too_long = any(_line_too_long(text, ln, avail, r, vertical) for ln in lines)
        if not too_long or size <= min_size:
            break
        size = max(min_size, size - 1.0)
    if too_long:  # still too long at the smallest size: shorten the offending lines in the middle
        lines = [_ellipsize(text, ln, avail, r, vertical) for ln in lines]
        text.set_text("\n".join(lines))
    return (text.get_text(), text.get_fontsize()) != before


def _line_too_long(text: Any, line: str, avail: float, r: Any, vertical: bool) -> bool:
    keep = text.get_text()
    text.set_text(line)
    n = _length(text, r, vertical)
    text.set_text(keep)
    return n > avail


def _ellipsize(text: Any, line: str, avail: float, r: Any, vertical: bool) -> str:
    if not _line_too_long(text, line, avail, r, vertical):
        return line
    keep = len(line)
    while keep > 4:
        keep -= 1
        cand = line[: keep // 2] + "…" + line[len(line) - (keep - keep // 2) :]
        if not _line_too_long(text, cand, avail, r, vertical):
            return cand
    return line[:4] + "…"


def _thin_ticks(axis: Any, r: Any) -> bool:
    """Keep only tick labels of ``axis`` that do not collide (0 and the outermost kept first): a symlog axis
    spanning many decades crowds its ticks near zero, long category labels run into each other. Returns True
    when ticks were dropped."""
    from matplotlib.ticker import FixedLocator

    lo, hi = sorted(axis.get_view_interval())
    ticks = [t for t in axis.get_major_ticks() if lo <= t.get_loc() <= hi and t.label1.get_visible()
             and t.label1.get_text()]
    if len(ticks) < 2:
        return False
    boxes = {t.get_loc(): t.label1.get_window_extent(r).expanded(1.05, 1.05) for t in ticks}
    locs = sorted(boxes)
    order = sorted(locs, key=lambda v: (v != 0, -abs(v)))  # zero, then from the outside in
    kept: list[float] = []
    for v in order:
        if all(not boxes[v].overlaps(boxes[k]) for k in kept):
            kept.append(v)
    if len(kept) == len(locs):
        return False
    axis.set_major_locator(FixedLocator(sorted(kept)))
    return True


def _merge_offset(axis: Any, r: Any) -> bool:
    """When the axis' offset text (``1e−5+9.5``) collides with its label, hide it and append it to the label
    (``… (offset 1e−5+9.5)``). Returns True when it did."""
    off = axis.offsetText
    if not off.get_visible() or not off.get_text().strip() or not axis.label.get_text():
        return False
    if not off.get_window_extent(r).overlaps(axis.label.get_window_extent(r)):
        return False
    text = off.get_text().strip()
    off.set_visible(False)
    full = getattr(axis.label, "_gnomon_full", None) or axis.label.get_text()
    axis.label._gnomon_full = f"{full} (offset {text})"
    axis.label.set_text(axis.label._gnomon_full)
    return True


def fit_text(fig: Any, min_size: float = 6.0, passes: int = 2) -> None:
    """Wrap (at spaces, underscores, slashes, dots before a letter) and, if need be, shrink (down to
    ``min_size`` points) the title and axis labels of every axes to the axes' width / height, and the suptitle
    to the figure width; drop tick labels that would collide (crowded symlog ticks); re-run the layout in
    between. Idempotent: the full texts are kept and refitted after a resize."""
    for _ in range(passes):
        fig.draw_without_rendering()  # runs the layout engine
        r = renderer(fig)
        changed = False
        for ax in fig.axes:
            if not ax.get_visible() or not ax.axison:
                continue
            box = ax.get_window_extent(r)
            changed |= _fit_one(ax.title, box.width, r, False, min_size)
            changed |= _fit_one(ax.xaxis.label, box.width, r, False, min_size)
            changed |= _fit_one(ax.yaxis.label, box.height, r, True, min_size)
            for axis in (ax.xaxis, ax.yaxis):
                changed |= _thin_ticks(axis, r)
                changed |= _merge_offset(axis, r)
        sup = getattr(fig, "_suptitle", None)
        if sup is not None:
            changed |= _fit_one(sup, fig.bbox.width * 0.98, r, False, min_size)
        if not changed:
            break


def _texts(fig: Any) -> list[tuple[str, Any, str, Any]]:
    """``(description, axes, kind, window extent)`` of the visible texts a layout must keep apart."""
    r = renderer(fig)
    fig.draw_without_rendering()
    out = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        items = [("title", ax.title), ("left title", ax._left_title), ("right title", ax._right_title),
                 ("xlabel", ax.xaxis.label), ("ylabel", ax.yaxis.label),
                 ("x offset", ax.xaxis.offsetText), ("y offset", ax.yaxis.offsetText)]
        for axis, name in ((ax.xaxis, "xtick"), (ax.yaxis, "ytick")):
            lo, hi = sorted(axis.get_view_interval())
            span = (hi - lo) * 1e-9
            for t in axis.get_major_ticks():
                if not lo - span <= t.get_loc() <= hi + span:
                    continue  # ticks outside the view are not drawn
                for lab in (t.label1, t.label2):
                    if lab.get_visible():
                        items.append((name, lab))
        for kind, t in items:
            if t.get_visible() and t.get_text().strip():
                out.append((f"axes {i} {kind} {t.get_text()[:40]!r}", ax, kind, t.get_window_extent(r)))
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and sup.get_visible() and sup.get_text():
        out.append((f"suptitle {sup.get_text()[:40]!r}", None, "suptitle", sup.get_window_extent(r)))
    for attr in ("_supxlabel", "_supylabel"):
        t = getattr(fig, attr, None)
        if t is not None and t.get_visible() and t.get_text():
            out.append((f"{attr[1:]} {t.get_text()[:40]!r}", None, attr, t.get_window_extent(r)))
    return out


def text_overlaps(fig: Any, tolerance: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of texts of ``fig`` whose boxes intersect by more than ``tolerance`` pixels: tick labels (of one
    axis among themselves too), axis labels, offset texts, titles and the suptitle. Empty for a figure whose
    layout is readable."""
    items = _texts(fig)
    bad = []
    for i in range(len(items)):
        a, axa, ka, ba = items[i]
        for j in range(i + 1, len(items)):
            b, axb, kb, bb = items[j]
            w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
            h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
            if w > tolerance and h > tolerance:
                bad.append((a, b))
    return bad


def colors(n: int) -> list[Any]:
    """``n`` distinct colors: the default cycle, or a continuous colormap beyond 10."""
    mpl = ensure_backend()
    if n <= 10:
        cycle = mpl.rcParams["axes.prop_cycle"].by_key().get("color", [])
        if len(cycle) >= n:
            return list(cycle[:n])
    cmap = mpl.colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]
