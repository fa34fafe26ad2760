"""Campaign figures from an experiment's table: an epoch time series per parameter, and z against N(0, 1).

Both read the per-parameter columns of :meth:`gnomon.Experiment.aggregate` (``estimate.<label>``,
``sd.<label>``, ``crlb.<label>``, ``truth.<label>``, ``z.<label>``, written by ``save_run(crlb=..., truth=...)``)
— so they need no trace, only ``summary.json`` files. Any name with these keys is drawn, a layout's parameter
or a derived quantity (a secondary's offset, a magnitude difference: ``gn.cramer_rao(..., derived=...)``)
alike; a derived quantity has no layout unit unless ``units={name: unit}`` gives one:

* :func:`campaign` — one panel per named parameter: the estimate of every run (MAP or posterior mean) with
  ±1σ error bars (the CRLB, or the posterior sd), against an epoch column (or the run order), and the truth
  when known; in the parameter's units from the run's layout.
* :func:`z_distribution` — the z-scores ``(estimate − truth) / σ`` of an ensemble pooled over runs (and
  parameters, or one panel per parameter) as a histogram against the N(0, 1) density, with the
  Kolmogorov–Smirnov statistic ``D = sup_x |F_n(x) − Φ(x)|`` and its p-value (:func:`normal_ks`).

A source is an :class:`~gnomon.Experiment`, an experiment directory, or a table (a pandas DataFrame from
``exp.aggregate(params=...)``). ``gnomon plot EXPERIMENT --campaign`` draws both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gnomon.plot._mpl import bracket, colors, finish, fmt, new_figure, readable_key
from gnomon.plot._table_data import column, column_labels, experiment_table

_PREFIXES = ("estimate", "sd", "crlb", "truth", "z")


def normal_ks(z: Any) -> tuple[float, float]:
    """Kolmogorov–Smirnov test of the finite values of ``z`` against N(0, 1): ``(D, p)``.

    ``D = max_i max(i/n − Φ(z_(i)), Φ(z_(i)) − (i−1)/n)`` over the sorted sample, and ``p`` the two-sided
    p-value of ``scipy.stats.kstest`` (exact for small n, Kolmogorov's limit distribution for large n; scipy
    is a dependency of JAX). NaN for an empty sample."""
    z = np.asarray(z, dtype=float).ravel()
    z = np.sort(z[np.isfinite(z)])
    n = z.size
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import kstest

    res = kstest(z, "norm")
    return float(res.statistic), float(res.pvalue)


def _labels(df: Any, params: Any, needed: str) -> list[str]:
    """Parameter labels with a ``<needed>.<label>`` column, in table order, restricted to ``params``."""
    labels = column_labels(df, needed)
    if params is not None and params is not True and params != "all":
        wanted = [params] if isinstance(params, str) else list(params)
        labels = [lab for lab in labels if any(lab == w or lab.startswith(w + "[") for w in wanted)]
    if not labels:
        raise ValueError(
            f"no {needed}.<label> columns for {params!r} in the table; save runs with a layout (and crlb=/truth= "
            "for bounds and z) and aggregate with params=..."
        )
    return labels


def campaign(
    source: Any,
    params: str | Sequence[str] | None = None,
    *,
    x: str | None = None,
    sigma: str = "auto",
    residual: bool = False,
    units: Mapping[str, str] | None = None,
    ncols: int | None = None,
    title: str | None = None,
    fig: Any = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """Estimate ± σ per named parameter across the runs of a campaign (an epoch time series); the Figure.

    Args:
      source: an :class:`~gnomon.Experiment`, an experiment directory, or a table from
        ``exp.aggregate(params=...)``.
      params: parameter names (all their components) or component labels; default every parameter.
      x: the column giving each run's epoch — a summary key or a dotted meta.json key (``"user.epoch"``,
        labelled ``epoch``); default the runs in ``run_id`` order.
      sigma: the error bars: ``"crlb"``, ``"sd"`` (posterior sd) or ``"auto"`` (the CRLB where known, else
        the sd).
      residual: plot ``estimate − truth`` (with a line at zero) instead of the estimate with the truth.
      units: ``{label: unit}`` for the y labels (default: the runs' layout units).
    """
    if sigma not in ("auto", "crlb", "sd"):
        raise ValueError(f"sigma must be 'auto', 'crlb' or 'sd', got {sigma!r}")
    df, found_units = experiment_table(source, params, x)
    if len(df) == 0:
        raise ValueError("campaign: the experiment has no complete runs")
    found_units.update(dict(units or {}))
    labels = _labels(df, params, "estimate")
    if x is None:
        xs, xlabel = np.arange(len(df), dtype=float), "run (in run_id order)"
    else:
        col = x if x in df.columns else f"meta.{x}"
        if col not in df.columns:
            raise ValueError(f"campaign: no column {x!r} in the table; columns are {list(df.columns)[:12]}")
        xs, xlabel = column(df, col), readable_key(x)
        if xs is None or not np.isfinite(xs).any():
            hint = f" (user metadata is under 'user.<key>': --x user.{x})" if "." not in x else ""
            raise ValueError(f"campaign: no run has a number under {x!r}{hint}")
    order = np.argsort(xs, kind="stable")
    n = len(labels)
    ncols = ncols or (1 if n == 1 else 2 if n <= 4 else 3)
    nrows = math.ceil(n / ncols)
    if fig is None:
        fig = new_figure(figsize or (4.8 * ncols, 3.0 * nrows + 0.5), show=show)
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    palette = colors(3)
    for i, lab in enumerate(labels):
        ax = axes[i]
        est = column(df, f"estimate.{lab}")
        crlb, sd, truth, z = (column(df, f"{p}.{lab}") for p in ("crlb", "sd", "truth", "z"))
        if sigma == "crlb":
            err, what = crlb, "CRLB"
        elif sigma == "sd":
            err, what = sd, "posterior sd"
        else:
            err = crlb if crlb is not None else sd
            if crlb is not None and sd is not None:
                err = np.where(np.isfinite(crlb), crlb, sd)
            what = "CRLB" if crlb is not None and (sd is None or np.isfinite(crlb).all()) else "σ"
        y = est - truth if residual and truth is not None else est
        yerr = None if err is None else np.where(np.isfinite(err), err, 0.0)
        ax.errorbar(xs[order], y[order], yerr=None if yerr is None else yerr[order], fmt="o", ms=3.5, lw=1.0,
                    capsize=2, color=palette[0], label=f"estimate ± {what}" if err is not None else "estimate",
                    gid=f"data:{lab}")
        if residual and truth is not None:
            ax.axhline(0.0, color="k", ls="--", lw=0.8, label="truth")
        elif truth is not None and np.isfinite(truth).any():
            ax.plot(xs[order], truth[order], color="k", ls="--", lw=0.9, marker=".", ms=3, label="truth")
        unit = found_units.get(lab, "")
        ax.set_ylabel(f"{lab}{' − truth' if residual and truth is not None else ''}{bracket(unit)}")
        parts = [lab]
        if z is not None and np.isfinite(z).any():
            zz = z[np.isfinite(z)]
            parts.append(f"rms z {fmt(float(np.sqrt(np.mean(zz**2))))} over {zz.size} runs")
        ax.set_title(": ".join(parts), fontsize=9)
        if i == 0:
            ax.legend(fontsize="small")
    for ax in axes[n:]:
        fig.delaxes(ax)
    for i in range(n):
        if i + ncols >= n:
            axes[i].set_xlabel(xlabel)
            axes[i].xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(title or f"campaign: {len(df)} runs, estimate ± σ per parameter")
    return finish(fig, save=save, show=show, dpi=dpi)


def z_distribution(
    source: Any,
    params: str | Sequence[str] | None = None,
    *,
    per_parameter: bool = False,
    bins: int | str = "auto",
    ncols: int | None = None,
    title: str | None = None,
    fig: Any = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """Histogram of the z-scores ``z.<label>`` of an ensemble against the N(0, 1) density, titled with the
    count, mean, sd and the Kolmogorov–Smirnov ``D`` and p-value (:func:`normal_ks`); the Figure.

    ``per_parameter=True`` gives one panel (and one test) per parameter; otherwise the z of all chosen
    parameters are pooled. A z of 1 means an estimate one σ (its CRLB, or the posterior sd) from the truth:
    estimates that reach the bound scatter as N(0, 1)."""
    df, _ = experiment_table(source, params, None)
    labels = _labels(df, params, "z")
    groups = [(lab, [lab]) for lab in labels] if per_parameter else [("pooled", labels)]
    n = len(groups)
    ncols = ncols or (1 if n == 1 else 2 if n <= 4 else 3)
    nrows = math.ceil(n / ncols)
    if fig is None:
        fig = new_figure(figsize or (4.8 * ncols, 3.4 * nrows + 0.4), show=show)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    grid = np.linspace(-4.5, 4.5, 301)
    pdf = np.exp(-0.5 * grid**2) / math.sqrt(2.0 * math.pi)
    for i, (name, labs) in enumerate(groups):
        ax = axes[i]
        z = np.concatenate([column(df, f"z.{lab}") for lab in labs])
        z = z[np.isfinite(z)]
        d, p = normal_ks(z)
        if z.size:
            lim = max(4.5, float(np.max(np.abs(z))) * 1.05)
            ax.hist(z, bins=bins, range=(-lim, lim), density=True, color="C0", alpha=0.6, gid=f"data:{name}",
                    label=f"z ({z.size})")
        ax.plot(grid, pdf, color="k", lw=1.2, label="N(0, 1)", gid="ref:normal")
        ax.set_xlabel("z = (estimate − truth) / σ")
        ax.set_ylabel("density")
        stats = (f"n {z.size}, mean {fmt(float(np.mean(z)), signed=True)}, sd {fmt(float(np.std(z, ddof=1)))}"
                 if z.size > 1 else f"n {z.size}")
        ax.set_title(f"{name}: {stats}, KS D {fmt(d)}, p {fmt(p)}", fontsize=9)
        ax.legend(fontsize="small")
    for ax in axes[n:]:
        fig.delaxes(ax)
    what = "per parameter" if per_parameter else f"pooled over {len(labels)} parameter(s)"
    fig.suptitle(title or f"z-scores of {len(df)} runs against N(0, 1), {what}")
    return finish(fig, save=save, show=show, dpi=dpi)


__all__ = ["campaign", "z_distribution", "normal_ks"]
