"""Loss histories: :func:`loss` draws the loss (log_prob per chain for sampler runs) of one or several runs.

A source is a :class:`~gnomon.Signals`, a Trace, a Run or a 1-d array; several sources (a mapping or a list)
are overlaid, one colour each. The history can be drawn relative to a reference or to the best value over
all sources, floored on a log axis so that zeros stay visible.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from gnomon.plot._mpl import axis_title, colors, finish, fmt, one_axis, set_log_y
from gnomon.plot._panel_data import final_rows, limits, log_auto, mark_rejected, rejected_of, rejected_rows
from gnomon.signals.signals import Signals
from gnomon.util.validate import positive_float

LOSS_NAMES = ("loss", "trace.loss", "log_prob", "trace.log_prob")


def _loss_signals(source: Any, name: str | None = None) -> tuple[Signals, str, np.ndarray | None]:
    """``(signals, loss signal name, rejected rows (C, T) or None)`` of one source."""
    from gnomon.trace.trace import Trace

    if hasattr(source, "trace") and isinstance(source.trace, Trace):  # a Run
        source = source.trace
    if isinstance(source, Trace):
        if source.is_batched:
            raise ValueError("loss: a batched trace holds B fits; plot one member (trace[i])")
        if source.loss is not None:
            loss = np.asarray(source.loss)
            rej = rejected_of((source.stats or {}).get("accepted"), (1,) + loss.shape)
            return Signals({"loss": loss}, x=source.step, kind=source.kind), "loss", rej
        return Signals({"log_prob": np.asarray(source.log_prob)}, kind=source.kind), "log_prob", None
    if isinstance(source, Signals):
        if name is not None:
            if name not in source:
                raise ValueError(f"loss: no signal {name!r}; signals are {list(source)}")
            return source, name, rejected_rows(source)
        for n in LOSS_NAMES:
            if n in source:
                return source, n, rejected_rows(source)
        raise ValueError(f"loss: these Signals have no 'loss' or 'log_prob' signal; signals are {list(source)}")
    arr = np.asarray(source, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"loss: an array loss history must be one-dimensional, got shape {arr.shape}")
    return Signals({"loss": arr}), "loss", None


def _is_multi(source: Any) -> bool:
    """Several loss sources: a mapping label -> source, or a list/tuple of non-numbers (Traces, Signals, Runs,
    1-d arrays). A Signals (itself a mapping) and a flat list of numbers are one source."""
    if isinstance(source, Signals):
        return False
    if isinstance(source, Mapping):
        return True
    if isinstance(source, (list, tuple)) and source:
        return not any(
            isinstance(e, (numbers.Number, np.number)) or (isinstance(e, np.ndarray) and e.ndim == 0) for e in source
        )
    return False


def _source_label(src: Any, i: int) -> str:
    run_id = getattr(src, "run_id", None)
    if isinstance(run_id, str):
        return run_id
    info = getattr(src, "info", None)
    if isinstance(info, Mapping) and isinstance(info.get("method"), str):
        return info["method"]
    return f"#{i}"


def _loss_sources(source: Any) -> list[tuple[str, Signals, str, np.ndarray | None]]:
    """``[(label, signals, loss signal name, rejected rows)]`` of several sources."""
    if isinstance(source, Mapping):
        items = [(str(k), v) for k, v in source.items()]
    else:
        items = [(_source_label(v, i), v) for i, v in enumerate(source)]
        seen = [lab for lab, _ in items]
        items = [(lab if seen.count(lab) == 1 else f"{lab} #{i}", v) for i, (lab, v) in enumerate(items)]
    if not items:
        raise ValueError("loss: no sources given (an empty mapping)")
    out = []
    for lab, v in items:
        try:
            sig, name, rej = _loss_signals(v)
        except ValueError as e:
            raise ValueError(f"loss source {lab!r}: {e}") from None
        out.append((lab, sig, name, rej))
    return out


def _base(name: str) -> str:
    return name.rsplit(".", 1)[-1]  # "trace.loss" -> "loss"


class _Reference(NamedTuple):
    """What the histories are drawn relative to: ``ref`` (None: nothing), whether they are shifted by it
    (``rel``), flipped (``best log_prob − log_prob``), and the source holding the best value."""

    ref: float | None
    rel: bool
    flip: bool
    best_label: str | None

    def shift(self, a: Any) -> Any:
        """``a`` relative to the reference (unchanged when not ``rel``)."""
        return (self.ref - a if self.flip else a - self.ref) if self.rel else a


def _check_entries(source: Any, name: str | None) -> tuple[bool, list, str]:
    """``(multi, [(label, signals, loss name, rejected rows)], name)``: one or several sources whose
    histories are all losses or all log_probs."""
    multi = _is_multi(source)
    entries = _loss_sources(source) if multi else [(None, *_loss_signals(source, name))]
    bases = sorted({_base(n) for _, _, n, _ in entries})
    if len(bases) > 1:
        raise ValueError(
            f"loss: cannot overlay {' and '.join(bases)} histories on one axis; sources are "
            + ", ".join(f"{lab}: {n}" for lab, _, n, _ in entries)
        )
    return multi, entries, entries[0][2] if not multi else bases[0]


def _excess_over_minimum(kept: list[np.ndarray]) -> bool:
    """The ``logy="auto"`` rule for an optimizer's loss: True when the values are neither all positive over
    more than two decades nor constant, so that the excess over the minimum on a log axis says how far from
    its end the run is at each step (a linear axis of a loss ≈ 2079 shows a flat line)."""
    vals = np.concatenate([k.ravel() for k in kept])
    vals = vals[np.isfinite(vals)]
    spans = bool(vals.size) and bool(np.all(vals > 0)) and float(vals.max() / vals.min()) > 100.0
    return bool(vals.size) and not spans and float(vals.max()) > float(vals.min())


def _reference(entries: list, kept: list[np.ndarray], name: str, reference: float | None, relative: bool,
               relative_to: str | float | None, maximize: bool) -> _Reference:
    """The reference of the histories: the best value over all sources (``relative_to="best"``), a number
    (``relative_to``), ``reference``, or the loss signals' truth when they agree on one."""
    best_label = None
    if relative_to is not None:
        if relative:
            raise ValueError("loss: pass either relative=True (with a reference) or relative_to, not both")
        if isinstance(relative_to, str):
            if relative_to != "best":
                raise ValueError(f"relative_to must be 'best' or a number, got {relative_to!r}")
            with np.errstate(all="ignore"):
                per = [np.nanmax(k) if maximize else np.nanmin(k) for k in kept]
            finite = [(v, i) for i, v in enumerate(per) if np.isfinite(v)]
            if not finite:
                raise ValueError(f"loss(relative_to='best'): no finite {name} value in any source")
            ref, ibest = max(finite) if maximize else min(finite)
            best_label = entries[ibest][0]
        else:
            ref = float(relative_to)
            if not math.isfinite(ref):
                raise ValueError(f"relative_to must be 'best' or a finite number, got {relative_to!r}")
        return _Reference(ref, True, relative_to == "best" and maximize, best_label)  # best log_prob − log_prob
    if reference is not None:
        ref = reference
    else:
        truths = {float(sig[n].truth[0]) for _, sig, n, _ in entries if sig[n].truth is not None}
        ref = truths.pop() if len(truths) == 1 else None
    if relative and ref is None:
        raise ValueError("loss(relative=True) needs a reference (or a loss signal with a truth)")
    return _Reference(ref, relative, False, None)


def _draw_histories(ax: Any, entries: list, data: list[np.ndarray], multi: bool, ref: _Reference, name: str,
                    signed: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """One line per chain of each source (several sources: one colour each, labelled with their final value);
    rejected rows are left out of the lines and returned as ``[(x, y)]``."""
    rejected_points: list[tuple[np.ndarray, np.ndarray]] = []

    def line(xs: np.ndarray, y: np.ndarray, rej: np.ndarray | None, **kw: Any) -> None:
        if rej is not None and rej.any():
            rejected_points.append((xs[rej], y[rej]))
            xs, y = xs[~rej], y[~rej]
        ax.plot(xs, y, **kw)

    if multi:
        palette = colors(len(entries))
        delta = "Δ " if ref.rel else ""
        for i, ((lab, sig, n, rej), d) in enumerate(zip(entries, data, strict=True)):
            s = sig[n]
            fin = ref.shift(float(final_rows(s.data, s.chains)[0]))
            text = f"{lab} ({'mean' if s.chains else 'final'} {delta}{fmt(fin, signed=signed)})"
            for c in range(d.shape[0]):
                line(np.asarray(sig.x), d[c], None if rej is None else rej[c], color=palette[i], lw=1.2,
                     alpha=0.7 if d.shape[0] > 1 else 1.0, gid=f"data:{n}",
                     label=text if c == 0 else "_nolegend_")
    else:
        _, sig, _, rej = entries[0]
        d = data[0]
        palette = colors(d.shape[0])
        for c in range(d.shape[0]):
            line(np.asarray(sig.x), d[c], None if rej is None else rej[c], color=palette[c], lw=1.2,
                 gid=f"data:{name}", label=f"chain {c}" if d.shape[0] > 1 else name)
    return rejected_points


def _summary_text(entries: list, multi: bool, name: str, ref: _Reference, relative_to: Any,
                  rejected_points: list) -> str:
    """The title: the final value (sampler runs: the mean) and the reference, or how many runs are overlaid."""
    if multi:
        text = f"{name} of {len(entries)} runs"
        if ref.best_label is not None:
            text += f", relative to the best {fmt(ref.ref)} ({ref.best_label})"
        elif ref.ref is not None:
            text += f", reference {fmt(ref.ref)}"
    else:
        s = entries[0][1][entries[0][2]]
        fin = float(final_rows(s.data, s.chains)[0])
        word = "mean" if s.chains else "final"
        text = f"{name}: {word} {fmt(fin)}"
        if ref.ref is not None:
            what = "best" if relative_to == "best" else "reference"
            text += f" ({what} {fmt(ref.ref)}, Δ {fmt(fin - ref.ref, signed=True)})"
    n_rej = sum(int(p[0].size) for p in rejected_points)
    if n_rej:
        text += f"; {n_rej} rejected trial{'s' if n_rej > 1 else ''} drawn faintly"
    return text


def draw_loss(
    ax: Any,
    source: Any,
    reference: float | None = None,
    *,
    name: str | None = None,
    relative: bool = False,
    relative_to: str | float | None = None,
    floor: float | None = None,
    logy: bool | str = "auto",
    legend: bool = True,
) -> str:
    """Draw the loss history of ``source`` (one or several, as :func:`loss`) on ``ax``; return the title text.

    ``name`` picks the loss signal of a :class:`~gnomon.Signals` (default: ``loss``, else ``log_prob``)."""
    multi, entries, name = _check_entries(source, name)
    maximize = name.endswith("log_prob")
    if floor is not None:
        floor = positive_float(floor, "floor")
    if logy not in (True, False, "auto"):
        raise ValueError(f"logy must be True, False or 'auto', got {logy!r}")

    raw = [np.asarray(sig[n].data[..., 0], dtype=float) for _, sig, n, _ in entries]  # (C, T) each
    # rows that count: finite and not rejected by a backtracking rule (a trial at 1e220 must not set the axis)
    kept = [np.where(rej, np.nan, r) if rej is not None else r for r, (*_, rej) in zip(raw, entries, strict=True)]
    optimization = all(sig.kind == "optimization" for _, sig, _, _ in entries) and not maximize
    auto_offset = (logy == "auto" and relative_to is None and not relative and reference is None and optimization
                   and _excess_over_minimum(kept))
    if auto_offset:
        relative_to, logy = "best", True
    ref = _reference(entries, kept, name, reference, relative, relative_to, maximize)
    data = [ref.shift(r) for r in raw]
    shown = [ref.shift(k) for k in kept]

    # y scale, and the floor that keeps zeros (the best run at its best) on a log axis
    use_floor = relative_to is not None or floor is not None
    vals = np.concatenate([d.ravel() for d in shown])
    vals = vals[np.isfinite(vals)]
    nonneg = bool(vals.size) and bool(np.all(vals >= 0))
    pos = vals[vals > 0]
    if logy == "auto":
        logy = log_auto([pos]) if use_floor and nonneg else log_auto(shown)
    floored = None
    if logy and use_floor and nonneg and (floor is not None or pos.size):
        floored = float(floor) if floor is not None else float(pos.min())
        data = [np.maximum(d, floored) for d in data]  # NaN stays NaN
        shown = [np.maximum(d, floored) for d in shown]

    rejected_points = _draw_histories(ax, entries, data, multi, ref, name, ref.rel and relative_to != "best")
    if ref.ref is not None and not ref.rel:
        ax.axhline(ref.ref, color="k", ls="--", lw=0.9, label=f"reference {fmt(ref.ref)}")
    if logy:
        set_log_y(ax, shown)
    elif rejected_points:
        lim = limits(np.concatenate([d.ravel() for d in shown] + ([np.array([ref.ref])] if ref.ref is not None
                                                                    and not ref.rel else [])))
        if lim is not None:
            ax.set_ylim(*lim)
    if rejected_points:
        mark_rejected(ax, rejected_points, name)
    ax.set_xlabel(entries[0][1].x_label)
    if auto_offset:
        where = "its minimum" if not multi else f"the lowest, {ref.best_label}"
        ylabel = f"{name} − {fmt(ref.ref)} ({where})"
    elif relative_to == "best":
        ylabel = f"best {name} − {name}" if maximize else f"{name} − best {name}"
    else:
        ylabel = f"{name} − reference" if ref.rel else name
    if floored is not None:
        ylabel += f" (floored at {fmt(floored)})"
    ax.set_ylabel(ylabel)
    if legend and (multi or ref.ref is not None or data[0].shape[0] > 1 or rejected_points):
        ax.legend(fontsize="small")
    return _summary_text(entries, multi, name, ref, relative_to, rejected_points)


def loss(
    source: Any,
    reference: float | None = None,
    *,
    relative: bool = False,
    relative_to: str | float | None = None,
    floor: float | None = None,
    logy: bool | str = "auto",
    title: str | bool | None = None,
    ax: Any = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """Loss history (log_prob per chain for sampler runs) of one or several runs on one axis.

    Args:
      source: :class:`~gnomon.Signals` (uses ``loss`` or ``log_prob``), a Trace, a Run or a 1-d array; or
        several of them overlaid — a mapping ``{label: source}`` or a list (labels from each Run's id or each
        Trace's ``info["method"]``, else ``#i``). Several sources are one colour each (one line per chain),
        with a legend giving each source's final value (sampler runs: the mean). They must all be losses or
        all log_probs.
      reference: a reference loss (e.g. the loss at the truth) drawn as a dashed line; defaults to the loss
        signal's truth when it has one (several sources: when all those with a truth agree on it).
      relative: plot ``loss − reference`` instead (log axis when positive).
      relative_to: ``"best"`` plots the excess over the best value over all sources,
        ``loss − min_{sources, rows} loss`` (log_prob: ``max log_prob − log_prob``), which is ≥ 0 and 0 where
        the best is reached; a number ``r`` plots ``loss − r`` (as ``reference=r, relative=True``).
      floor: on a log y axis with non-negative values (``relative_to`` or ``floor`` given), values below
        ``floor`` are drawn at ``floor`` (default: the smallest positive value plotted), so the zeros of
        ``relative_to="best"`` stay on the axis; the y label says so.
      logy: True, False or ``"auto"``: the loss itself on a log axis when it is positive and spans more than
        two decades; otherwise (an optimizer's loss that is negative, or positive but within two decades, e.g.
        120 000 → 2079) its excess over its minimum, ``loss − min loss``, on a log axis floored at the smallest
        positive excess, the y label saying so (``loss − 2079 (its minimum)``); sampler log_probs linear. With
        ``relative_to``/``floor``, judged on the positive values.
      title: None for a summary (final value, reference), a string, or False for none.

    Rows a backtracking rule rejected (``trace.stats["accepted"] == 0``: a trial point the optimizer stepped
    back from, which may lie at 1e220) are left out of the lines and of the axis limits and drawn faintly as
    grey crosses, or as grey triangles on the edge when they lie beyond it (``gid="rejected:<name>"``).
    """
    fig, ax = one_axis(ax, figsize, show)
    text = draw_loss(ax, source, reference, relative=relative, relative_to=relative_to, floor=floor, logy=logy)
    axis_title(ax, title, text)
    return finish(fig, save=save, show=show, dpi=dpi)
