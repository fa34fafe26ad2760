"""Sampler views through arviz-plots: trace + marginal, rank, forest — named, in the layout's units.

Chain histories are :func:`gnomon.plot.history` with sampler :class:`~gnomon.Signals` (one line per chain).
Where arviz-plots does better (marginal densities, rank plots, forests) these helpers hand it an
``xarray.DataTree`` and return the matplotlib Figure. The source may be sampler Signals (their parameter and
derived signals become the ``posterior`` group; component axes are labelled by the signals' component
labels), an object with ``to_arviz()`` (a sampling Trace, named and labelled by its layout) or a DataTree
(e.g. a run's ``posterior.nc``, whose variables carry ``units`` attributes).

Every variable is labelled ``name [unit]`` (a :class:`arviz_base.labels.MapLabeller` built from the units),
figures use constrained layout, and their titles and labels are fitted to the panels
(:func:`gnomon.plot._mpl.fit_text`), so no label is clipped or overlaps another. Pair (corner) plots with
truth markers and Cramér–Rao ellipses are :func:`gnomon.plot.pair` (:mod:`gnomon.plot.pair`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from gnomon.plot._mpl import bracket, ensure_backend, finish, unit_text
from gnomon.signals.signals import Signals


def _component_coords(labels: Sequence[str], name: str) -> list[str]:
    """Coordinate values for a component axis: the labels without the signal's name (``name[Z4]`` → ``Z4``)."""
    out = []
    for lab in labels:
        rest = lab[len(name) :] if lab.startswith(name) and lab != name else lab
        out.append(rest[1:-1] if rest.startswith("[") and rest.endswith("]") else rest)
    return out if len(set(out)) == len(out) else list(labels)


def to_datatree(source: Any, names: Sequence[str] | None = None):
    """An ``xarray.DataTree`` with a ``posterior`` group from sampler Signals, a Trace or a DataTree; its
    variables carry ``units`` and ``long_name`` attributes and vector parameters their component labels."""
    if isinstance(source, Signals):
        if source.kind != "sampling":
            raise ValueError("arviz views need sampler Signals (kind 'sampling'), not an optimization path")
        import arviz_base as azb

        names = list(names) if names is not None else list(source.names_by_role("parameter", "derived"))
        if not names:
            raise ValueError("no parameter signals to plot")
        post, dims, coords = {}, {}, {}
        vectors = [n for n in names if not source[n].scalar]
        for n in names:
            s = source[n]
            post[n] = np.asarray(s.values)
            if not s.scalar:  # a short dimension name: views print it as a column header
                dim = "component" if len(vectors) == 1 else f"{n.rsplit('.', 1)[-1]} component"
                dims[n] = [dim]
                coords[dim] = _component_coords(s.labels, n)
        dt = azb.from_dict({"posterior": post}, dims=dims, coords=coords)
        ds = dt["posterior"].to_dataset()
        for n in names:
            ds[n].attrs.update(units=source[n].units, long_name=n)
        dt["posterior"] = ds
        return dt
    if hasattr(source, "to_arviz") and getattr(source, "kind", None) == "sampling" and \
            getattr(source, "layout", None) is not None:
        # through Signals: identity blocks keep float64 precision (an arcsec position near 9.5" with µas
        # scatter would be quantised by a float32 decoding), names, units and component labels come along
        return to_datatree(Signals.from_trace(source, diagnostics=False), names)
    if hasattr(source, "to_arviz"):
        from gnomon.io.netcdf import annotate_datatree

        return annotate_datatree(source.to_arviz(), getattr(source, "layout", None))
    if hasattr(source, "children") and "posterior" in getattr(source, "children", {}):
        return source
    raise ValueError(
        f"expected sampler Signals, a sampling Trace or an ArviZ DataTree, got {type(source).__name__}"
    )


def _labeller(dt: Any, names: Sequence[str] | None):
    """``name [unit]`` for every posterior variable with a unit."""
    from arviz_base.labels import MapLabeller

    ds = dt["posterior"].to_dataset()
    var_map = {}
    for v in ds.data_vars:
        unit = unit_text(str(ds[v].attrs.get("units", "") or ""))
        if unit:
            var_map[v] = f"{v} [{unit}]"
    return MapLabeller(var_name_map=var_map)


def _units(dt: Any, var_names: Sequence[str] | None) -> dict[str, str]:
    """``{variable: unit as printed}`` of the posterior variables drawn."""
    ds = dt["posterior"].to_dataset()
    names = list(var_names) if var_names is not None else list(ds.data_vars)
    return {v: unit_text(str(ds[v].attrs.get("units", "") or "")) for v in names if v in ds.data_vars}


def _run(fn_name: str, source: Any, names: Sequence[str] | None, save: Any, show: bool, dpi: int | None,
         figsize: tuple[float, float] | None = None, **kwargs: Any):
    ensure_backend()
    import arviz_plots as azp

    dt = to_datatree(source, names)
    from_signals = isinstance(source, Signals) or (getattr(source, "kind", None) == "sampling"
                                                   and getattr(source, "layout", None) is not None)
    var_names = None if from_signals or names is None else list(names)
    fk = dict(kwargs.pop("figure_kwargs", None) or {})
    fk.setdefault("layout", "constrained")
    if figsize is not None:
        fk["figsize"] = figsize
    kwargs.setdefault("labeller", _labeller(dt, var_names))
    pc = getattr(azp, fn_name)(dt, var_names=var_names, backend="matplotlib", figure_kwargs=fk, **kwargs)
    fig = pc.viz["figure"].item()
    _label_axes(fig, fn_name, _units(dt, var_names))
    return finish(fig, save=save, show=show, dpi=dpi)


def _label_axes(fig: Any, fn_name: str, units: dict[str, str]) -> None:
    """Name the axes arviz-plots leaves bare: the rank plot's Δ-ECDF, the trace plot's draw axis, and the
    forest's value axis with the variables' common unit (a warning when they have none in common: one axis
    then holds several units)."""
    for ax in fig.axes:
        if fn_name == "plot_rank" and ax.get_xlabel() and not ax.get_ylabel():
            ax.set_ylabel("Δ-ECDF (observed − uniform)")
        if fn_name == "plot_trace_dist" and ax.get_xlabel() == "Draw":
            ax.set_xlabel("draw")
    if fn_name != "plot_forest":
        return
    found = set(units.values())
    if len(found) == 1:
        unit = next(iter(found))
        text = "residual [σ]" if unit == "σ" else f"value{bracket(unit)}"
    else:
        shown = ", ".join(f"{v} [{u or '—'}]" for v, u in list(units.items())[:6])
        warnings.warn(f"forest: the variables have different units ({shown}) but share one axis; give it "
                      "quantities of one scale, e.g. residuals in σ (transforms.residual_in_sigma)", stacklevel=4)
        text = "value (each in its own unit: see the labels)"
    for ax in fig.axes:
        if ax.get_lines() and not ax.get_xlabel():
            ax.set_xlabel(text)


def rank(source: Any, names: Sequence[str] | None = None, *, figsize: tuple[float, float] | None = None,
         save: Any = None, show: bool = False, dpi: int | None = None, **kwargs: Any):
    """Fractional-rank ECDF plot per parameter (``arviz_plots.plot_rank``): chains that mix well overlap."""
    return _run("plot_rank", source, names, save, show, dpi, figsize, **kwargs)


def trace_dist(source: Any, names: Sequence[str] | None = None, *, figsize: tuple[float, float] | None = None,
               save: Any = None, show: bool = False, dpi: int | None = None, **kwargs: Any):
    """Marginal densities beside chain traces (``arviz_plots.plot_trace_dist``)."""
    return _run("plot_trace_dist", source, names, save, show, dpi, figsize, **kwargs)


def forest(source: Any, names: Sequence[str] | None = None, *, figsize: tuple[float, float] | None = None,
           save: Any = None, show: bool = False, dpi: int | None = None, **kwargs: Any):
    """Credible intervals per parameter and component on one axis (``arviz_plots.plot_forest``).

    One axis holds every variable, so give it quantities of one scale: e.g. residuals in σ,
    ``sig.apply(transforms.residual_in_sigma("x"), ...)`` and ``names=["x_z", ...]``. Chains are combined
    into one interval per parameter unless ``combined=False``."""
    kwargs.setdefault("combined", True)
    return _run("plot_forest", source, names, save, show, dpi, figsize, **kwargs)

