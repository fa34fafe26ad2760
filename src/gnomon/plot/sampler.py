"""Sampler views through arviz-plots: rank, trace + marginal, pair.

Chain histories are :func:`gnomon.plot.history` with sampler :class:`~gnomon.Signals` (one line per chain).
Where arviz-plots does better (rank plots, marginal densities, pair plots) these helpers hand it an
``xarray.DataTree`` and return the matplotlib Figure. The source may be sampler Signals (their parameter
and derived signals become the ``posterior`` group; component axes get the signals' labels), an object with
``to_arviz()`` (a sampling Trace) or a DataTree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gnomon.plot._mpl import ensure_backend, finish
from gnomon.signals.signals import Signals


def to_datatree(source: Any, names: Sequence[str] | None = None):
    """An ``xarray.DataTree`` with a ``posterior`` group from sampler Signals, a Trace or a DataTree."""
    if isinstance(source, Signals):
        if source.kind != "sampling":
            raise ValueError("arviz views need sampler Signals (kind 'sampling'), not an optimization path")
        import arviz_base as azb

        names = list(names) if names is not None else list(source.names_by_role("parameter", "derived"))
        if not names:
            raise ValueError("no parameter signals to plot")
        post, dims, coords = {}, {}, {}
        for n in names:
            s = source[n]
            post[n] = np.asarray(s.values)
            if not s.scalar:
                dim = f"{n}_dim"
                dims[n] = [dim]
                coords[dim] = list(s.labels)
        return azb.from_dict({"posterior": post}, dims=dims, coords=coords)
    if hasattr(source, "to_arviz"):
        return source.to_arviz()
    if hasattr(source, "children") and "posterior" in getattr(source, "children", {}):
        return source
    raise ValueError(
        f"expected sampler Signals, a sampling Trace or an ArviZ DataTree, got {type(source).__name__}"
    )


def _run(fn_name: str, source: Any, names: Sequence[str] | None, save: Any, show: bool, dpi: int | None,
         figsize: tuple[float, float] | None = None, **kwargs: Any):
    ensure_backend()
    import arviz_plots as azp

    dt = to_datatree(source, names)
    var_names = None if isinstance(source, Signals) or names is None else list(names)
    if figsize is not None:
        kwargs["figure_kwargs"] = {**kwargs.get("figure_kwargs", {}), "figsize": figsize}
    pc = getattr(azp, fn_name)(dt, var_names=var_names, backend="matplotlib", **kwargs)
    fig = pc.viz["figure"].item()
    return finish(fig, save=save, show=show, dpi=dpi)


def rank(source: Any, names: Sequence[str] | None = None, *, figsize: tuple[float, float] | None = None,
         save: Any = None, show: bool = False, dpi: int | None = None, **kwargs: Any):
    """Fractional-rank ECDF plot per parameter (``arviz_plots.plot_rank``): chains that mix well overlap."""
    return _run("plot_rank", source, names, save, show, dpi, figsize, **kwargs)


def trace_dist(source: Any, names: Sequence[str] | None = None, *, figsize: tuple[float, float] | None = None,
               save: Any = None, show: bool = False, dpi: int | None = None, **kwargs: Any):
    """Marginal densities beside chain traces (``arviz_plots.plot_trace_dist``)."""
    return _run("plot_trace_dist", source, names, save, show, dpi, figsize, **kwargs)


def pair(source: Any, names: Sequence[str] | None = None, *, figsize: tuple[float, float] | None = None,
         save: Any = None, show: bool = False, dpi: int | None = None, **kwargs: Any):
    """Pairwise scatter/density matrix with marginals (``arviz_plots.plot_pair``); square panels by default
    for sampler Signals (2.4 inches per variable)."""
    if figsize is None and isinstance(source, Signals):
        chosen = list(names) if names is not None else list(source.names_by_role("parameter", "derived"))
        n = sum(source[c].num_components for c in chosen if c in source)
        figsize = (2.4 * n + 0.8, 2.4 * n) if n else None
    return _run("plot_pair", source, names, save, show, dpi, figsize, **kwargs)
