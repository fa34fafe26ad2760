"""Matplotlib plumbing shared by the plotting functions: lazy import, headless backend, figures, saving,
text that fits, log axes that keep every point, tick labels without offset text.

Figures are created as bare :class:`matplotlib.figure.Figure` objects (not through pyplot) unless
``show=True``: nothing is registered with a GUI, no window opens, and a figure is freed when dropped.
Jupyter still displays a returned Figure. When no display is available (Linux without ``DISPLAY`` or
``WAYLAND_DISPLAY``) and pyplot has not been imported yet, the Agg backend is selected.

Figures use constrained layout, which makes room for labels but cannot shorten a label longer than its axes:
:func:`fit_text` wraps (at spaces, dots, underscores) and if need be shrinks axis titles and labels to their
axes, so that no two texts of a figure overlap at any grid size (:func:`text_overlaps` checks it).

Tick labels are absolute values (:class:`PlainFormatter`, installed on every linear axis by :func:`finish`):
never an offset text (``+1.22e2``) or a shared multiplier (``1e−5``) that a reader must add back, but each
tick with the digits its spacing needs (``122.0100``, ``9500050``), in scientific notation per tick when the
magnitude is extreme (``2.5e−7``).
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
    """Put absolute tick labels on every linear axis (:func:`plain_ticks`), fit the figure's texts
    (:func:`fit_text`), save it (format from the suffix) and/or show it; return it."""
    plain_ticks(fig)
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


def one_axis(ax: Any, figsize: tuple[float, float] | None, show: bool) -> tuple[Any, Any]:
    """``(figure, axis)``: ``ax`` and its figure, or a new figure (``figsize``, 7 × 4 in by default) with one
    axis."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(figsize or (7.0, 4.0), show=show)
    return fig, fig.add_subplot()


def axis_title(ax: Any, title: str | bool | None, text: str) -> None:
    """Title an axis: ``title=None`` gives ``text`` (small), a string that string, False none."""
    if title is None:
        ax.set_title(text, fontsize=9)
    elif title:
        ax.set_title(str(title))


def fmt(v: float, signed: bool = False) -> str:
    """Compact number for titles: 4 significant digits, NaN as 'nan'."""
    if v is None or not np.isfinite(v):
        return "nan"
    return f"{v:+.4g}" if signed else f"{v:.4g}"


def unit_text(unit: str | None) -> str:
    """A unit as printed after a number or in brackets: ``""`` for no unit and for the dimensionless ``"1"``
    and ``"frac"`` (a contrast of 3.2 reads ``3.2``, never ``3.2 1``)."""
    u = (unit or "").strip()
    return "" if u in ("", "1", "frac", "dimensionless") else u


def bracket(unit: str | None) -> str:
    """``" [µas]"`` for an axis label, ``""`` for no unit or a dimensionless one."""
    u = unit_text(unit)
    return f" [{u}]" if u else ""


def readable_key(key: str) -> str:
    """A metadata or table key as a reader names it: the user's own key without its place in meta.json
    (``"user.epoch"``, ``"meta.user.epoch"`` → ``"epoch"``), other dotted meta keys without the ``meta.``
    prefix (``"meta.engine.learning_rate"`` → ``"engine.learning_rate"``)."""
    k = key[len("meta.") :] if key.startswith("meta.") else key
    return k[len("user.") :] if k.startswith("user.") and len(k) > len("user.") else k


# ---------------------------------------------------------------------------------------------- ticks
_MINUS = "\u2212"


def _decimals(locs: np.ndarray, step: float, limit: int = 15) -> int:
    """Fewest decimals that write every tick exactly (to a millionth of the spacing)."""
    for d in range(0, limit + 1):
        if np.all(np.abs(np.round(locs, d) - locs) <= 1e-6 * step):
            return d
    return limit


def _plain_formatter_class():
    from matplotlib.ticker import Formatter

    class PlainFormatter(Formatter):
        """Tick labels as absolute values, each with the digits the tick spacing needs; no offset text and
        no shared multiplier. Magnitudes ≥ 1e9 or < 1e-3 are written per tick in scientific notation."""

        def __init__(self) -> None:
            self._spec: tuple[str, float] = ("f", 0)  # ("f", decimals) or ("e", tick spacing)

        def set_locs(self, locs: Any) -> None:
            a = np.asarray(list(locs), dtype=float)
            if self.axis is not None:
                lo, hi = sorted(self.axis.get_view_interval())
                pad = (hi - lo) * 1e-9
                inside = a[(a >= lo - pad) & (a <= hi + pad)]
                a = inside if inside.size else a
            a = a[np.isfinite(a)]
            if a.size == 0:
                self._spec = ("f", 0)
                return
            diffs = np.diff(np.unique(a))
            step = float(diffs.min()) if diffs.size else (abs(float(a[0])) or 1.0)
            big = float(np.max(np.abs(a)))
            if big >= 1e9 or (0 < big < 1e-3):
                self._spec = ("e", step)
            else:
                self._spec = ("f", _decimals(a, step))

        def __call__(self, x: float, pos: Any = None) -> str:
            kind, d = self._spec
            if not np.isfinite(x):
                return ""
            if kind == "e":  # per tick: its own exponent, the fewest decimals that write it exactly
                if x == 0:
                    return "0"
                e = math.floor(math.log10(abs(x)))
                m = x / 10.0**e
                dm = _decimals(np.array([m]), d / 10.0**e, 12)
                if round(abs(m), dm) >= 10.0:
                    m, e = m / 10.0, e + 1
                text = f"{m:.{dm}f}e{e}"
            else:
                text = f"{x:.{d}f}"
                if float(text) == 0.0:
                    text = text.lstrip("-")
            return text.replace("-", _MINUS)

        def format_data_short(self, value: float) -> str:
            return f"{value:.12g}"

        def get_offset(self) -> str:
            return ""

    return PlainFormatter


_PLAIN = None


def plain_formatter() -> Any:
    """A new :class:`PlainFormatter` (a ``matplotlib.ticker.Formatter``; the class is built on first use so
    that matplotlib is imported lazily)."""
    global _PLAIN
    if _PLAIN is None:
        _PLAIN = _plain_formatter_class()
    return _PLAIN()


def plain_ticks(fig: Any) -> None:
    """Replace matplotlib's default :class:`~matplotlib.ticker.ScalarFormatter` (which moves a common offset
    or multiplier into an offset text) by :func:`plain_formatter` on every linear axis of ``fig``; log, symlog
    and user-set formatters are left alone."""
    from matplotlib.ticker import ScalarFormatter

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if type(axis.get_major_formatter()) is ScalarFormatter and axis.get_scale() == "linear":
                axis.set_major_formatter(plain_formatter())


def set_log_y(ax: Any, arrays: list[np.ndarray], linthresh: float | None = None, symlog: bool = False) -> None:
    """Log y when every finite plotted value is positive (and not ``symlog``), else symlog — linear within
    ``±linthresh`` (e.g. the 1σ bound of a residual, whose band then sits in the linear part about zero;
    default: the 5th percentile of the non-zero |values|) and logarithmic beyond; the limits are then set to
    hold every finite value (the starting values of a history included)."""
    vals = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return
    if np.all(vals > 0) and not symlog:
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
