"""ArviZ netCDF files of a run (``posterior.nc``): written atomically, with units, read back eagerly.

The file follows the in-memory export: ``write_netcdf`` writes exactly what
:func:`gnomon.trace.arviz_export.to_arviz` returns — every variable of every group with a ``units`` and a
``long_name`` attribute (:func:`annotate_datatree`, re-exported here from the trace layer), a labelled vector
block's component labels as the coordinate values of its own dim — so ``post.to_arviz()`` and the reloaded
file agree on dims, coordinates and attributes, and ``arviz_stats.summary`` / ``ess`` / ``rhat`` work on both.
It writes with the ``netcdf4`` engine (about 4× faster than h5netcdf here) to a temporary file in the same
folder, then ``os.replace``-s it over the target, so a crash never leaves a half-written file.

``read_netcdf`` opens it as an ``xarray.DataTree``, loads every group into memory and closes the file. Files
written before 2026-12 also carry a ``<dim>_label`` coordinate per labelled vector block (``position[x]``, …),
which ``arviz_stats.summary`` refuses; ``read_netcdf`` folds it into the dim's coordinate values
(:func:`fold_legacy_labels`). Plain ``xarray.open_datatree(path)`` reads any of these files as written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gnomon.io.jsonio import ArtifactError, atomic_path
from gnomon.trace.arviz_export import STAT_ATTRS, annotate_datatree, to_arviz
from gnomon.trace.trace import Trace

ENGINE = "netcdf4"
LEGACY_LABEL_SUFFIX = "_label"

__all__ = ["ENGINE", "STAT_ATTRS", "annotate_datatree", "fold_legacy_labels", "read_netcdf", "write_datatree",
           "write_netcdf"]


def write_netcdf(
    path: str | os.PathLike,
    trace: Trace,
    layout: Any = None,
    meta: Mapping[str, Any] | None = None,
    **to_arviz_kwargs: Any,
) -> Path:
    """Write ``trace`` (its ArviZ DataTree, units included) as netCDF to ``path``; return the path.

    ``to_arviz_kwargs`` go to :func:`~gnomon.trace.arviz_export.to_arviz` (``observed=``,
    ``unconstrained=``, ``save_warmup=``, ``objective=`` — a numpyro objective adds its deterministic sites,
    ``log_likelihood``, ``observed_data``, ``constant_data`` and plate dims)."""
    layout = layout if layout is not None else trace.layout
    return write_datatree(Path(path), to_arviz(trace, layout=layout, meta=meta, **to_arviz_kwargs))


def write_datatree(path: str | os.PathLike, dt: Any) -> Path:
    """Atomically write an ``xarray.DataTree`` as netCDF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".nc") as tmp:
        dt.to_netcdf(tmp, engine=ENGINE)
    return path


def read_netcdf(path: str | os.PathLike) -> Any:
    """Read a netCDF file written by :func:`write_netcdf` as an in-memory ``xarray.DataTree`` (an older file's
    ``<dim>_label`` coordinates folded into the dims' coordinates, :func:`fold_legacy_labels`).

    Raises :class:`~gnomon.io.jsonio.ArtifactError` naming the file when it is missing or
    unreadable."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: file is missing")
    try:
        with xr.open_datatree(path, engine=ENGINE) as dt:
            dt = dt.load().copy()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable netCDF file ({exc})") from None
    for node in dt.subtree:
        if node.has_data:
            node.dataset = fold_legacy_labels(node.to_dataset(inherit=False))
    return dt


def fold_legacy_labels(ds: Any) -> Any:
    """``ds`` without the ``<dim>_label`` coordinates that files written before 2026-12 carry. Their labels
    (``position[x]``) name a component of the variable on that dim; the bare component (``x``) becomes the
    dim's coordinate value where the dim's coordinate says less (integers), so no label is lost and
    ``arviz_stats.summary`` (which refuses coordinates that not every variable has) works."""
    for name in [str(c) for c in ds.coords]:
        dim = name[: -len(LEGACY_LABEL_SUFFIX)]
        if not name.endswith(LEGACY_LABEL_SUFFIX) or ds.coords[name].dims != (dim,):
            continue
        owners = [str(v) for v in ds.data_vars if dim in ds[v].dims]
        labels = [_bare_label(str(x), owners) for x in ds.coords[name].values]
        values = [str(x) for x in ds.coords[dim].values] if dim in ds.coords else []
        ds = ds.drop_vars(name)
        if labels != values:
            ds = ds.assign_coords({dim: labels})
    return ds


def _bare_label(label: str, owners: list[str]) -> str:
    """``x`` of ``position[x]`` when ``position`` is one of ``owners``; ``label`` itself otherwise."""
    for v in owners:
        if label.startswith(f"{v}[") and label.endswith("]"):
            return label[len(v) + 1 : -1]
    return label
