"""Panels of signals on a grid: :func:`grid` and its default layout :func:`default_panels`.

Each panel is drawn by :func:`gnomon.plot.draw` (components, summary or hybrid; residuals when the
truth is known) on a shared step/draw axis, and is titled with the final value(s) of its signals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gnomon.plot._mpl import finish, new_figure
from gnomon.plot._panel_data import check_signals, select_names
from gnomon.plot.history import draw
from gnomon.plot.loss import LOSS_NAMES, draw_loss
from gnomon.signals.signals import Signals
from gnomon.util.validate import positive_int

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
    "sigma",
    "bands",
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
    """One panel per signal: the loss (or log_prob) first — on a log axis when it is positive and spans
    decades, else its excess over its minimum on a log axis (:func:`gnomon.plot.loss`) —, then every parameter
    and derived signal, with ``logy="auto"``: a residual whose CRLB band a linear axis would shrink to a line
    is drawn on a symlog axis, linear within ±σ."""
    panels: list[dict[str, Any]] = []
    for n in ("loss", "log_prob"):
        if n in signals:
            panels.append({"names": [n], "logy": "auto"})
            break
    first = {p["names"][0] for p in panels}
    panels += [{"names": [n], "logy": "auto"} for n in signals.names_by_role("parameter", "derived")
               if n not in first]
    return panels


def _is_loss_panel(sig: Signals, names: list[str]) -> bool:
    """A panel of one loss / log_prob diagnostic: drawn by :func:`gnomon.plot.loss` (accepted rows set the
    axis, the excess over the minimum when the loss does not span decades)."""
    return len(names) == 1 and names[0] in LOSS_NAMES and sig[names[0]].role == "diagnostic"


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
    auto_units: bool = False,
    logy: bool | str = "auto",
    sigma: Any = None,
    bands: bool | str = "auto",
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
      Other arguments (``residual`` including ``"sigma"``, ``sigma``, ``bands``, ``units``, ``logy``) as in
      :func:`history`; ``logy`` defaults to ``"auto"`` for every panel, given or default (a CRLB band a linear axis
      would shrink to a line gets a symlog axis whether or not the panels are named). Titles and labels are
      wrapped to their panels, so no two texts overlap at any grid size.
    """
    sig = check_signals(signals)
    specs = default_panels(sig) if panels is None else [_panel_spec(p, i) for i, p in enumerate(panels)]
    if not specs:
        raise ValueError("grid needs at least one panel")
    for spec in specs:
        select_names(sig, spec["names"])  # validate every panel before drawing
    n = len(specs)
    if ncols is None:
        ncols = 1 if n == 1 else 2 if n <= 4 else 3
    ncols = min(positive_int(ncols, "ncols"), n)
    nrows = math.ceil(n / ncols)
    if fig is None:
        fig = new_figure(figsize or (4.6 * ncols, 3.0 * nrows + (0.4 if suptitle else 0.0)), show=show)
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    defaults = dict(
        mode=mode, residual=residual, summary=summary, top=top, units=units, auto_units=auto_units, logy=logy,
        sigma=sigma, bands=bands,
    )
    flat = axes.ravel()
    for i, spec in enumerate(specs):
        ax = flat[i]
        opts = {**defaults, **{k: v for k, v in spec.items() if k not in ("names", "title")}}
        if _is_loss_panel(sig, spec["names"]):
            text = draw_loss(ax, sig, name=spec["names"][0], logy=opts["logy"])
        else:
            text = draw(ax, sig, spec["names"], **opts).title
        if spec.get("title") is not None:
            ax.set_title(str(spec["title"]) if spec["title"] else "", fontsize=9)
        elif titles:
            ax.set_title(text, fontsize=8)
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
