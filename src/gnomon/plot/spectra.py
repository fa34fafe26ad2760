"""Per-index views of θ-space geometry: the curvature / learning-rate view and the eigen spectrum.

* :func:`curvature` — a diagonal curvature estimate ``c_i`` and the learning rates it implies,
  ``lr_i = base_lr / c_i^power`` (power 1: the unit-consistent diagonal Newton step; ½: the Adam/RMSProp
  convention), one bar per θ index on log axes, labelled by the layout's index labels and coloured by block.
* :func:`eigen_spectrum` — the eigenvalues ``λ_1 ≥ … ≥ λ_D`` of a curvature matrix ``F = V Λ Vᵀ`` on a log
  axis, each mode labelled by its dominant parameter ``argmax_j V_ji²`` (with that parameter's share of the
  mode), and optionally the matrix of squared loadings ``V_ji²`` (each column sums to one).

Both take plain arrays plus labels (or a :class:`~gnomon.Layout`), so they do not depend on the internals
of a curvature estimate or an eigen map; objects exposing ``diag`` (a Curvature) or eigenvalues and
eigenvectors (an EigenMap) are accepted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gnomon.plot._mpl import colors, finish, fmt, new_figure
from gnomon.util.validate import positive_float


def _labels(n: int, labels: Sequence[str] | None, layout: Any) -> list[str]:
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels given for {n} entries")
        return labels
    if layout is not None:
        lab = list(layout.index_labels())
        if len(lab) != n:
            raise ValueError(f"layout has {len(lab)} θ indices but {n} entries were given")
        return lab
    return [f"θ[{i}]" for i in range(n)]


def _groups(n: int, layout: Any) -> np.ndarray:
    """Group number per index (by layout block group), zeros without a layout."""
    g = np.zeros(n, dtype=int)
    if layout is not None and getattr(layout, "size", None) == n:
        for j, idx in enumerate(layout.group_indices().values()):
            g[np.asarray(idx)] = j
    return g


def curvature(
    curv: Any = None,
    *,
    learning_rates: Any = None,
    base_lr: float = 1.0,
    power: float = 1.0,
    labels: Sequence[str] | None = None,
    layout: Any = None,
    title: str | None = None,
    fig: Any = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """Diagonal curvature and per-index learning rates as bars on log axes; returns the Figure.

    Args:
      curv: the diagonal ``(D,)`` (or an object with ``.diag``, e.g. a :class:`~gnomon.Curvature`). Optional
        when ``learning_rates`` is given.
      learning_rates: ``(D,)`` learning rates to show; default ``base_lr / curv**power``.
      labels / layout: index labels (default ``layout.index_labels()``, else ``θ[i]``); a layout also
        colours the bars by block group.
    """
    diag = None if curv is None else np.asarray(getattr(curv, "diag", curv), dtype=float)
    if diag is not None and diag.ndim != 1:
        raise ValueError(f"curvature diagonal must be one-dimensional (D,), got shape {diag.shape}")
    if learning_rates is not None:
        lr = np.asarray(learning_rates, dtype=float)
        if lr.ndim != 1 or (diag is not None and lr.shape != diag.shape):
            raise ValueError(
                f"learning_rates must have shape {(diag.shape if diag is not None else ('D',))}, "
                f"got {lr.shape}"
            )
    elif diag is not None:
        base_lr, power = positive_float(base_lr, "base_lr"), positive_float(power, "power")
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = base_lr / np.power(diag, power)
    else:
        raise ValueError("curvature plot needs a curvature diagonal or learning_rates")
    n = lr.shape[0]
    labs = _labels(n, labels, layout)
    grp = _groups(n, layout)
    palette = colors(int(grp.max()) + 1)
    cols = [palette[g] for g in grp]
    rows = [(r, lab) for r, lab in ((diag, "curvature diag"), (lr, "learning rate")) if r is not None]
    if fig is None:
        fig = new_figure(figsize or (max(6.0, 0.28 * n + 2.0), 2.6 * len(rows) + 0.8), show=show)
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    xs = np.arange(n)
    for ax, (vals, lab) in zip(axes, rows):
        pos = np.where(np.isfinite(vals) & (vals > 0), vals, np.nan)
        ax.bar(xs, pos, color=cols, gid=f"data:{lab}")
        bad = ~np.isfinite(pos)
        if bad.any():
            ax.plot(
                xs[bad],
                np.full(bad.sum(), np.nanmin(pos) if np.isfinite(pos).any() else 1.0),
                "rx",
                label="≤ 0 or non-finite",
            )
            ax.legend(fontsize="small")
        if np.isfinite(pos).any():
            ax.set_yscale("log")
        ax.set_ylabel(lab)
        finite = pos[np.isfinite(pos)]
        if finite.size:
            ax.set_title(
                f"{lab}: min {fmt(finite.min())}, max {fmt(finite.max())}, "
                f"ratio {fmt(finite.max() / finite.min())}",
                fontsize=9,
            )
    axes[-1].set_xticks(xs)
    axes[-1].set_xticklabels(labs, rotation=90, fontsize=7 if n > 20 else 8)
    axes[-1].set_xlabel("θ index")
    if title:
        fig.suptitle(title)
    return finish(fig, save=save, show=show, dpi=dpi)


def _eigen_parts(obj: Any, eigenvectors: Any) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """``(eigenvalues, eigenvectors, layout)`` from arrays or an EigenMap-like object."""
    if isinstance(obj, (np.ndarray, list, tuple)) or hasattr(obj, "__array__"):
        return np.asarray(obj, dtype=float), None if eigenvectors is None else np.asarray(eigenvectors), None
    lam = next(
        (getattr(obj, a) for a in ("eigenvalues", "evals", "lam") if getattr(obj, a, None) is not None), None
    )
    vec = next(
        (getattr(obj, a) for a in ("eigenvectors", "evecs", "V") if getattr(obj, a, None) is not None), None
    )
    if lam is None:
        raise ValueError(
            "eigen_spectrum needs eigenvalues (an array, or an object with .eigenvalues); "
            f"got {type(obj).__name__}"
        )
    vec = eigenvectors if eigenvectors is not None else vec
    return (
        np.asarray(lam, dtype=float),
        None if vec is None else np.asarray(vec, dtype=float),
        getattr(obj, "layout", None),
    )


def dominant_parameters(eigenvectors: Any, labels: Sequence[str]) -> list[tuple[str, float]]:
    """For each mode (column ``i`` of ``V``): the label of ``argmax_j V_ji²`` and its share
    ``V_ji² / Σ_j V_ji²``."""
    v2 = np.square(np.asarray(eigenvectors, dtype=float))
    tot = v2.sum(axis=0)
    j = np.argmax(v2, axis=0)
    return [
        (str(labels[j[i]]), float(v2[j[i], i] / tot[i]) if tot[i] > 0 else float("nan"))
        for i in range(v2.shape[1])
    ]


def eigen_spectrum(
    eigenvalues: Any,
    eigenvectors: Any = None,
    labels: Sequence[str] | None = None,
    *,
    layout: Any = None,
    vectors: bool | str = "auto",
    title: str | None = None,
    fig: Any = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """Eigenvalue spectrum (descending, log axis), each mode labelled by its dominant parameter.

    Args:
      eigenvalues: ``(M,)`` eigenvalues, or an EigenMap-like object exposing eigenvalues, eigenvectors and
        ``layout``.
      eigenvectors: ``(D, M)`` matrix whose column ``i`` is the eigenvector of ``eigenvalues[i]``.
      labels / layout: the ``D`` parameter labels (default ``layout.index_labels()``).
      vectors: also draw the squared-loading matrix ``V²`` (``"auto"``: when ``D ≤ 40``).
    Non-positive eigenvalues are drawn at their absolute value with a red cross.
    """
    lam, vec, obj_layout = _eigen_parts(eigenvalues, eigenvectors)
    layout = layout if layout is not None else obj_layout
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-d array, got shape {lam.shape}")
    m = lam.size
    if vec is not None:
        if vec.ndim != 2 or vec.shape[1] != m:
            raise ValueError(
                f"eigenvectors must have shape (D, {m}) (one column per eigenvalue), got {vec.shape}"
            )
    order = np.argsort(-lam, kind="stable")
    lam = lam[order]
    vec = None if vec is None else vec[:, order]
    d = vec.shape[0] if vec is not None else m
    labs = (
        _labels(d, labels, layout) if (vec is not None or labels is not None or layout is not None) else None
    )
    dom = dominant_parameters(vec, labs) if vec is not None else None
    show_vec = vec is not None and (vectors is True or (vectors == "auto" and d <= 40))
    if fig is None:
        w = max(6.0, 0.3 * m + 2.5)
        fig = new_figure(figsize or (w, 7.5 if show_vec else 4.2), show=show)
    if show_vec:
        ax, axv = fig.subplots(2, 1, height_ratios=[1.0, 1.3])
    else:
        ax, axv = fig.add_subplot(), None
    xs = np.arange(m)
    mag = np.abs(lam)
    ax.plot(xs, mag, "o-", color="C0", ms=4, lw=1.0, gid="data:eigenvalues")
    neg = lam <= 0
    if neg.any():
        ax.plot(xs[neg], np.where(mag[neg] > 0, mag[neg], np.nan), "rx", ms=7, label="λ ≤ 0 (|λ| shown)")
        ax.legend(fontsize="small")
    if np.any(mag > 0):
        ax.set_yscale("log")
    ax.set_ylabel("eigenvalue λ")
    ax.set_xticks(xs)
    if dom is not None:
        ax.set_xticklabels(
            [f"{i}: {lab} ({share:.0%})" for i, (lab, share) in enumerate(dom)],
            rotation=90,
            fontsize=7 if m > 20 else 8,
        )
    else:
        ax.set_xticklabels([str(i) for i in xs], fontsize=8)
    ax.set_xlabel("mode (dominant parameter, its share of the mode)")
    pos = lam[lam > 0]
    cond = pos.max() / pos.min() if pos.size else float("nan")
    ax.set_title(
        title or f"eigen spectrum: {m} modes, λ_max {fmt(lam[0])}, λ_max/λ_min {fmt(cond)}", fontsize=9
    )
    if axv is not None:
        v2 = np.square(vec)
        v2 = v2 / np.where(v2.sum(axis=0, keepdims=True) > 0, v2.sum(axis=0, keepdims=True), 1.0)
        im = axv.imshow(v2, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        axv.set_yticks(np.arange(d))
        axv.set_yticklabels(labs, fontsize=7 if d > 20 else 8)
        axv.set_xticks(xs)
        axv.set_xticklabels([str(i) for i in xs], fontsize=8)
        axv.set_xlabel("mode")
        axv.set_title("squared loadings V² (each mode sums to 1)", fontsize=9)
        fig.colorbar(im, ax=axv, shrink=0.8)
    return finish(fig, save=save, show=show, dpi=dpi)
