"""ArviZ netCDF files of a run (``posterior.nc``): written atomically, read back eagerly.

``write_netcdf`` exports the trace with :func:`gnomon.trace.arviz_export.to_arviz` and writes it with the
``netcdf4`` engine (about 4× faster than h5netcdf here) to a temporary file in the same folder, then
``os.replace``-s it over the target, so a crash never leaves a half-written file. ``read_netcdf`` opens it
as an ``xarray.DataTree``, loads every group into memory and closes the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gnomon.artifacts.jsonio import ArtifactError, atomic_path
from gnomon.trace.trace import Trace

ENGINE = "netcdf4"


def write_netcdf(
    path: str | os.PathLike,
    trace: Trace,
    layout: Any = None,
    meta: Mapping[str, Any] | None = None,
    **to_arviz_kwargs: Any,
) -> Path:
    """Write ``trace`` (its ArviZ DataTree) as netCDF to ``path``; return the path.

    ``to_arviz_kwargs`` go to :func:`~gnomon.trace.arviz_export.to_arviz` (``observed=``,
    ``unconstrained=``, ``save_warmup=``)."""
    from gnomon.trace.arviz_export import to_arviz

    path = Path(path)
    dt = to_arviz(trace, layout=layout, meta=meta, **to_arviz_kwargs)
    return write_datatree(path, dt)


def write_datatree(path: str | os.PathLike, dt: Any) -> Path:
    """Atomically write an ``xarray.DataTree`` as netCDF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".nc") as tmp:
        dt.to_netcdf(tmp, engine=ENGINE)
    return path


def read_netcdf(path: str | os.PathLike) -> Any:
    """Read a netCDF file written by :func:`write_netcdf` as an in-memory ``xarray.DataTree``.

    Raises :class:`~gnomon.artifacts.jsonio.ArtifactError` naming the file when it is missing or
    unreadable."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: file is missing")
    try:
        with xr.open_datatree(path, engine=ENGINE) as dt:
            return dt.load().copy()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable netCDF file ({exc})") from None
