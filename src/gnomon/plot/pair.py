r"""Pair (corner) plots of posterior draws or of an ensemble of estimates, with truth markers and Cramér–Rao
ellipses: :func:`pair`.

For K variables a K × K lower-triangular grid: on the diagonal the marginal density of each variable (a
histogram, labelled ``density``) with the Gaussian of its marginal bound :math:`N(c_i, σ_i^2)`; below it, for
each pair, the points with — for posterior draws — contours holding 39.3 % and 86.5 % of them (the "1σ" and
"2σ" regions of a two-dimensional Gaussian, :math:`1 - e^{-k^2/2}`), and the bound's ellipses

.. math:: \{x : (x - c)^T Σ_{ij}^{-1} (x - c) = k^2\},\quad k = 1, 2

where :math:`Σ_{ij}` is the 2 × 2 block of the CRLB covariance (``gn.cramer_rao(...).covariance``, user units)
and :math:`c` the truth (else the point the bound was computed at). A posterior whose contours lie on the
ellipses reaches the bound; an ensemble of estimates (MAPs of many fits) should scatter inside them as a
Gaussian of that covariance. Truth markers are drawn where a truth is known.

Sources: posterior draws — sampler :class:`~gnomon.Signals`, a sampling Trace (named by its layout) or an
ArviZ DataTree (a run's ``posterior.nc``) —, or an ensemble of estimates — a batched Trace from
``gn.optimize_batch`` (each member's best θ), a list of optimization Traces or Runs, an
:class:`~gnomon.Experiment` or its directory, or a table from ``exp.aggregate(params=True)`` (its
``estimate.<label>`` columns; a truth that differs between runs, as in an epoch series, is subtracted run by
run and the estimates are drawn as residuals about zero).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gnomon.plot._mpl import bracket, colors, finish, new_figure
from gnomon.plot._pair_data import Points, covariance, points_of, truth_vector

#: variables a pair plot draws at most (K² panels)
MAX_VARIABLES = 12
#: points drawn per panel at most (a random subset beyond; contours use every point)
MAX_POINTS = 4000


# ---------------------------------------------------------------------------------------------- bounds
def ellipse(centre: Sequence[float], cov: np.ndarray, k: float, **kwargs: Any):
    """The matplotlib Ellipse ``{x : (x − c)ᵀ Σ⁻¹ (x − c) = k²}`` of a 2 × 2 covariance ``cov``."""
    from matplotlib.patches import Ellipse

    lam, vec = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    lam = np.maximum(lam, 0.0)
    angle = math.degrees(math.atan2(vec[1, 1], vec[0, 1]))  # the major axis (largest eigenvalue)
    return Ellipse(tuple(centre), width=2 * k * math.sqrt(lam[1]), height=2 * k * math.sqrt(lam[0]),
                   angle=angle, **kwargs)


def mass_levels(x: np.ndarray, y: np.ndarray, masses: Sequence[float], xlim: tuple[float, float],
                ylim: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """A smoothed 2-d histogram ``(xc, yc, H)`` of the points and, per fraction ``m`` of ``masses``, the density
    level whose region ``{H ≥ level}`` holds that fraction of the points: the ``1 − m`` quantile of ``H``
    interpolated at the points (highest-density regions counted on the draws themselves, so a smoothing
    that widens the histogram does not widen the regions)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    n = x.size
    bins = int(np.clip(math.sqrt(n) / 2.5, 12, 50))
    h, xe, ye = np.histogram2d(x, y, bins=bins, range=[xlim, ylim])
    h = gaussian_filter(h, 1.0)
    xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
    fx = (x - xc[0]) / (xc[1] - xc[0])  # fractional index of each point between bin centres
    fy = (y - yc[0]) / (yc[1] - yc[0])
    at = map_coordinates(h, np.vstack([fx, fy]), order=1, mode="nearest")
    levels = [float(np.quantile(at, 1.0 - m)) for m in masses]
    return xc, yc, h, levels


# ---------------------------------------------------------------------------------------------- figure
def _range(vals: np.ndarray, extra: list[float]) -> tuple[float, float]:
    v = vals[np.isfinite(vals)]
    pts = np.concatenate([v, np.asarray([e for e in extra if np.isfinite(e)], dtype=float)])
    if pts.size == 0:
        return -1.0, 1.0
    lo, hi = float(pts.min()), float(pts.max())
    pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi) * 1e-6, 1e-12)
    return lo - pad, hi + pad


def pair(
    source: Any,
    names: str | Sequence[str] | None = None,
    *,
    truth: Mapping[str, Any] | None = None,
    crlb: Any = None,
    levels: Sequence[float] = (1.0, 2.0),
    contours: bool | str = "auto",
    title: str | bool | None = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """A corner plot of posterior draws or of an ensemble of estimates; returns the Figure.

    Args:
      source: sampler Signals, a sampling Trace or Run, an ArviZ DataTree (posterior draws); a batched Trace
        from ``gn.optimize_batch``, a list of optimization Traces / Runs, an Experiment (or its directory) or a
        table from ``exp.aggregate(params=True)`` (an ensemble of estimates). See the module docstring.
      names: signal / block names (all their components) or component labels (``"zern[Z4]"``); default every
        parameter.
      truth: ``{name or label: value}`` in the plotted units, or a flat base θ ``(D,)`` (as ``save_run`` and
        ``Signals.from_trace`` take it) for a source with a layout — put in the plotted units by the layout's
        transforms; default the signals' own truth (a table: its ``truth.<label>`` columns). Drawn as lines on
        the diagonal and stars in the pair panels.
      crlb: the Cramér–Rao bound: a ``gn.cramer_rao(...)`` result (its ``covariance``, ``labels`` and
        ``units``; converted to the plotted units), a ``(K, K)`` covariance of the plotted variables, or a
        mapping label → marginal bound (the diagonal's Gaussians only: marginals carry no correlation, so no
        ellipses). Ellipses at ``levels`` σ (Mahalanobis distance k) about the truth, else about the point the
        bound was computed at.
      levels: the k of the ellipses and of the posterior contours (which hold ``1 − exp(−k²/2)`` of the
        draws: 39 % and 86 % for 1σ and 2σ).
      contours: draw posterior contours (``"auto"``: for posterior draws, at least 200 of them).
      title: None for a description of what is drawn, a string, or False.

    Every axis is labelled: the bottom row and left column ``name [unit]``, the diagonal's y axis
    ``density``. Ellipses carry ``gid="crlb:<k>σ"``, truth markers ``gid="truth"``, points ``gid="data"``.
    """
    pts, values, levels = _checked(source, names, levels)
    k = len(pts.labels)
    tv = truth_vector(pts, _truth_by_name(source, truth))
    cov, marginal, centre_b, bound_what = covariance(pts, crlb)
    has_truth = tv is not None and np.isfinite(tv).any()
    centre, about = _centre(tv if has_truth else None, centre_b, marginal, values)
    posterior = pts.kind == "posterior"
    draw_contours = contours is True or (contours == "auto" and posterior and values.shape[0] >= 200)
    ranges = _ranges(values, tv if has_truth else None, marginal, centre, max(levels))

    fig = new_figure(figsize or (2.3 * k + 1.0, 2.3 * k + 0.4), show=show)
    axes = fig.subplots(k, k, squeeze=False)
    pal = colors(3)
    rng = np.random.default_rng(0)
    shown = values if values.shape[0] <= MAX_POINTS else values[rng.choice(values.shape[0], MAX_POINTS, False)]
    masses = [1.0 - math.exp(-0.5 * lv * lv) for lv in sorted(levels, reverse=True)]
    names_u = [f"{lab}{' − truth' if pts.residual else ''}{bracket(u)}" for lab, u in zip(pts.labels, pts.units,
                                                                                         strict=True)]
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            ax.set_xlim(*ranges[j])
            if i == j:
                _diagonal(ax, values[:, i], ranges[i], tv[i] if has_truth else np.nan,
                          None if marginal is None else marginal[i], centre[i], pal, posterior)
            else:
                ax.set_ylim(*ranges[i])
                _off_diagonal(ax, values[:, [j, i]], shown[:, [j, i]], (ranges[j], ranges[i]), posterior,
                              masses if draw_contours else None,
                              None if cov is None else cov[np.ix_([j, i], [j, i])], centre[[j, i]], levels,
                              tv[[j, i]] if has_truth else None, pal)
            _label_panel(ax, i, j, k, names_u)
    _legend(fig, axes, k, pal, posterior, draw_contours, cov is not None, marginal is not None, has_truth,
            bound_what, about, levels, pts)
    if title is None:
        text = pts.what or ("posterior draws" if posterior else "estimates")
        if cov is not None or marginal is not None:
            text += f"; {bound_what} about {about}"
        fig.suptitle(text, fontsize=10)
    elif title:
        fig.suptitle(str(title))
    for ax in axes.ravel():
        if ax.get_visible():
            ax.tick_params(axis="x", labelrotation=30)
    return finish(fig, save=save, show=show, dpi=dpi)


def _truth_by_name(source: Any, truth: Any) -> Any:
    """``truth`` as ``{name: value}`` in the user's units: a mapping as given; a flat base θ through the source's
    layout (its transforms: θ holds log c for a ``"positive"`` contrast, the plot shows c)."""
    if truth is None or isinstance(truth, Mapping):
        return truth
    vec = np.asarray(truth, dtype=float)
    layout = getattr(source, "layout", None)
    if layout is None:
        raise ValueError(f"pair: truth as a flat θ (shape {vec.shape}) needs a source with a layout to put it in the "
                         "plotted units; give {name or label: value} instead")
    if vec.shape != (layout.size,):
        raise ValueError(f"pair: truth as a flat base θ must have shape ({layout.size},) for this layout, got "
                         f"{vec.shape}")
    from gnomon.io.parameters import constrained

    return {name: np.asarray(v) for name, v in constrained(layout, vec).items()}


def _checked(source: Any, names: Any, levels: Sequence[float]) -> tuple[Points, np.ndarray, list[float]]:
    """``(points, the complete points (N, K), levels)``, refused when there are too many variables, fewer than
    two complete points or a level that is not a positive number of σ."""
    pts = points_of(source, names)
    good = np.isfinite(pts.values).all(axis=1)
    values = pts.values[good]
    k = len(pts.labels)
    if k > MAX_VARIABLES:
        raise ValueError(f"pair: {k} variables make {k * k} panels; choose at most {MAX_VARIABLES} with names=")
    if values.shape[0] < 2:
        raise ValueError(f"pair: {values.shape[0]} complete point(s) to draw; need at least 2")
    levels = [float(x) for x in levels]
    if not levels or any(not (x > 0) for x in levels):
        raise ValueError(f"levels must be positive numbers of σ, got {levels!r}")
    return pts, values, levels


def _centre(tv: np.ndarray | None, centre_b: np.ndarray | None, marginal: np.ndarray | None,
            values: np.ndarray) -> tuple[np.ndarray, str]:
    """``(centre (K,), what it is)`` of the bound's ellipses and Gaussians: the truth, else the point the bound
    was computed at, else (marginal bounds only) the mean of the points."""
    k = values.shape[1]
    centre = np.where(np.isfinite(tv), tv, np.nan) if tv is not None else np.full(k, np.nan)
    about = "the truth"
    if centre_b is not None and not np.isfinite(centre).all():
        about = "the truth" if tv is not None else "the point it was computed at"
        centre = np.where(np.isfinite(centre), centre, centre_b)
    if marginal is not None and not np.isfinite(centre).all():
        mean = values.mean(axis=0)
        if tv is None and centre_b is None:
            about = "the mean"
        centre = np.where(np.isfinite(centre), centre, mean)
    return centre, about


def _ranges(values: np.ndarray, tv: np.ndarray | None, marginal: np.ndarray | None, centre: np.ndarray,
            kmax: float) -> list[tuple[float, float]]:
    """Each variable's axis range: its points, its truth and the outermost (``kmax`` σ) ellipse."""
    ranges = []
    for i in range(values.shape[1]):
        extra = [tv[i]] if tv is not None else []
        if marginal is not None and np.isfinite(marginal[i]) and np.isfinite(centre[i]):
            extra += [centre[i] - 1.05 * kmax * marginal[i], centre[i] + 1.05 * kmax * marginal[i]]
        ranges.append(_range(values[:, i], extra))
    return ranges


def _label_panel(ax: Any, i: int, j: int, k: int, names_u: list[str]) -> None:
    """The bottom row names its x variable, the left column its y variable; inner tick labels are hidden."""
    if i == k - 1:
        ax.set_xlabel(names_u[j])
    else:
        ax.tick_params(labelbottom=False)
    if i != j:
        if j == 0:
            ax.set_ylabel(names_u[i])
        else:
            ax.tick_params(labelleft=False)


def _off_diagonal(ax: Any, xy: np.ndarray, shown: np.ndarray, ranges: tuple, posterior: bool,
                  masses: list[float] | None, cov: np.ndarray | None, centre: np.ndarray, levels: list[float],
                  truth: np.ndarray | None, pal: list[Any]) -> None:
    """One pair panel: the points, the posterior contours (``masses``), the bound's ellipses, the truth."""
    ax.scatter(shown[:, 0], shown[:, 1], s=3 if posterior else 9, alpha=0.25 if posterior else 0.7,
               color=pal[0], lw=0, gid="data", rasterized=shown.shape[0] > 1000)
    if masses is not None:
        xc, yc, h, lv = mass_levels(xy[:, 0], xy[:, 1], masses, ranges[0], ranges[1])
        lv = sorted(set(lv))
        if len(lv) == len(masses) and lv[0] < lv[-1] or len(lv) == 1:
            cs = ax.contour(xc, yc, h.T, levels=lv, colors=[pal[0]], linewidths=1.1)
            cs.set_gid("contours")
    if cov is not None and np.isfinite(cov).all() and np.isfinite(centre).all():
        for lvl in levels:
            ax.add_patch(ellipse(tuple(centre), cov, lvl, fill=False, color=pal[1], lw=1.3,
                                 ls="--" if lvl > 1 else "-", gid=f"crlb:{lvl:g}σ"))
    if truth is not None and np.isfinite(truth).all():
        ax.plot(truth[0], truth[1], marker="*", ms=9, color="k", mec="w", mew=0.6, ls="none", gid="truth",
                zorder=5)


def _diagonal(ax: Any, v: np.ndarray, rng: tuple[float, float], t: float, sigma: float | None, c: float,
              pal: list[Any], posterior: bool) -> None:
    bins = int(np.clip(math.sqrt(v.size), 8, 40))
    ax.hist(v, bins=bins, range=rng, density=True, histtype="stepfilled", color=pal[0], alpha=0.35, gid="data")
    ax.hist(v, bins=bins, range=rng, density=True, histtype="step", color=pal[0], lw=1.0)
    if sigma is not None and np.isfinite(sigma) and sigma > 0 and np.isfinite(c):
        x = np.linspace(*rng, 200)
        ax.plot(x, np.exp(-0.5 * ((x - c) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)), color=pal[1],
                lw=1.3, gid="crlb:marginal")
    if np.isfinite(t):
        ax.axvline(t, color="k", lw=1.0, gid="truth")
    ax.set_yticks([])
    ax.set_ylim(bottom=0)
    ax.yaxis.set_label_position("right")
    ax.set_ylabel("density")


def _legend(fig: Any, axes: Any, k: int, pal: list[Any], posterior: bool, contours: bool, ellipses: bool,
            marginal: bool, truth: bool, bound_what: str, about: str, levels: list[float], pts: Points) -> None:
    from matplotlib.lines import Line2D

    lv = ", ".join(f"{x:g}σ" for x in levels)
    handles = [Line2D([], [], ls="none", marker="o", ms=4, color=pal[0],
                      label="posterior draws" if posterior else ("estimate − truth" if pts.residual else
                                                                 "estimates"))]
    if contours:
        pct = ", ".join(f"{100 * (1 - math.exp(-0.5 * x * x)):.0f}%" for x in levels)
        handles.append(Line2D([], [], color=pal[0], label=f"posterior {lv} ({pct})"))
    if ellipses:
        handles.append(Line2D([], [], color=pal[1], label=f"{bound_what} {lv} ellipses"))
    elif marginal:
        handles.append(Line2D([], [], color=pal[1], label=f"{bound_what} (diagonal)"))
    if truth:
        handles.append(Line2D([], [], ls="none", marker="*", ms=9, color="k", label="truth"))
    holder = axes[0, k - 1] if k > 1 else axes[0, 0]
    if k > 1:
        holder.set_visible(True)
        holder.axis("off")
    holder.legend(handles=handles, loc="upper right", fontsize="small", frameon=k == 1)


__all__ = ["pair", "ellipse", "mass_levels"]
