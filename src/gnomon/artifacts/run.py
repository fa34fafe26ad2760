"""Run directories: ``save_run`` / ``load_run``.

A run directory holds (schema documented in ``docs/artifacts.md``)::

    trace.npz      theta (base θ), z (θ-map coordinates, when the engine ran in a θ-map), loss / log_prob,
                   step, stats/<channel>, warmup/<name>
    meta.json      identity, provenance, θ interpretation (layout index map + hash, θ-map), engine config
    summary.json   small scalars for aggregation — written LAST: a run is complete iff it exists
    <name>.npz     optional diagnostics (curvature, precond, grads, signals, handoff, thetamap)
    posterior.nc   optional ArviZ netCDF export

Every file is written atomically; nothing is pickled; every JSON carries ``schema_version``.
"""

from __future__ import annotations

import functools
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gnomon.artifacts.jsonio import ArtifactError, read_json, to_jsonable, write_json
from gnomon.artifacts.npzio import read_npz, write_npz
from gnomon.artifacts.provenance import git_hash, package_versions, platform_info
from gnomon.thetaspace.layout import Layout
from gnomon.trace.trace import Trace

TRACE_FILE, META_FILE, SUMMARY_FILE = "trace.npz", "meta.json", "summary.json"
THETAMAP_FILE = "thetamap.npz"
NETCDF_FILE = "posterior.nc"
_EXTRA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_RESERVED = {"trace", "meta", "summary", "thetamap"}


@dataclass
class Run:
    """A loaded run directory."""

    path: Path
    trace: Trace
    meta: dict[str, Any]
    summary: dict[str, Any]
    layout: Layout | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.meta.get("run_id", self.path.name)

    def load_extra(self, name: str) -> dict[str, np.ndarray]:
        """Arrays of an optional ``<name>.npz`` diagnostic file of this run."""
        if name not in self.files:
            raise ArtifactError(
                f"{self.path / (name + '.npz')}: this run has no {name!r} file (has {sorted(self.files)})"
            )
        return read_npz(self.files[name])


def _trace_arrays(trace: Trace) -> dict[str, Any]:
    arrays: dict[str, Any] = {"theta": trace.theta}
    if trace.z is not None:
        arrays["z"] = np.asarray(trace.z)
    if trace.loss is not None:
        arrays["loss"] = trace.loss
    if trace.log_prob is not None:
        arrays["log_prob"] = trace.log_prob
    if trace.step is not None:
        arrays["step"] = trace.step
    for k, v in trace.stats.items():
        arrays[f"stats/{k}"] = v
    for k, v in (trace.warmup or {}).items():
        if k == "stats":
            for sk, sv in v.items():
                arrays[f"warmup/stats/{sk}"] = sv
        else:
            arrays[f"warmup/{k}"] = v
    return arrays


def _trace_from_arrays(arrays: dict[str, np.ndarray], meta: dict, summary: dict, layout, thetamap) -> Trace:
    stats = {k[len("stats/"):]: v for k, v in arrays.items() if k.startswith("stats/")}
    warm_stats = {k[len("warmup/stats/"):]: v for k, v in arrays.items() if k.startswith("warmup/stats/")}
    warmup = {k[len("warmup/"):]: v for k, v in arrays.items()
              if k.startswith("warmup/") and not k.startswith("warmup/stats/")}
    if warm_stats:
        warmup["stats"] = warm_stats
    theta, z = arrays["theta"], arrays.get("z")
    if thetamap is not None and int(meta.get("schema_version", 1)) < 2:  # schema 1 stored the z rows as theta
        theta, z = None, theta
        if "theta" in warmup:
            warmup["z"] = warmup.pop("theta")
    if thetamap is not None and z is None:
        raise ValueError("the run has a θ-map but trace.npz has no 'z' array")
    return Trace(
        kind=meta["kind"],
        theta=theta,
        z=z,
        loss=arrays.get("loss"),
        log_prob=arrays.get("log_prob"),
        stats=stats,
        step=arrays.get("step"),
        warmup=warmup or None,
        status=summary.get("status", "unknown"),
        num_grad_evals=int(summary.get("num_grad_evals", 0)),
        runtime_s=float(summary.get("runtime_s", 0.0)),
        info=meta.get("engine", {}),
        layout=layout,
        thetamap=thetamap,
        extras=dict(meta.get("extras", {})),
    )


@functools.lru_cache(maxsize=16)
def _provenance(cwd: str) -> dict[str, Any]:
    """The provenance block of meta.json, computed once per process (and working directory)."""
    return to_jsonable({
        "gnomon_version": package_versions().get("gnomon"),
        "git_hash": git_hash(),
        "packages": package_versions(),
        "platform": platform_info(),
    })


@functools.lru_cache(maxsize=64)
def _layout_doc(layout: Layout) -> dict[str, Any]:
    return to_jsonable(layout.to_dict())


def save_run(
    run_dir: str | os.PathLike,
    trace: Trace,
    layout: Layout | None = None,
    meta: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    summary: Mapping[str, Any] | None = None,
    extra_arrays: Mapping[str, Mapping[str, Any]] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    arviz: bool = False,
    overwrite: bool = False,
    compress: bool = False,
    fsync: bool = False,
) -> Path:
    """Write ``trace`` as a run directory and return its path.

    Args:
      run_dir: directory to create (parents too). An existing *complete* run (one with summary.json) is
        refused unless ``overwrite=True``.
      trace: a single (unbatched) optimization or sampling :class:`Trace`.
      layout: the layout naming θ (defaults to ``trace.layout``); stored as index map + hash.
      meta: user metadata (JSON-able), stored under ``"user"`` in meta.json.
      run_id: defaults to the directory name.
      summary: extra aggregation scalars merged into summary.json (e.g. ``max_abs_z_vs_truth``). Sampling
        runs get min bulk/tail ESS, max R-hat, divergences and gradient evaluations per ESS automatically.
      extra_arrays: optional diagnostic files ``{name: {array_name: array}}`` written as ``<name>.npz``
        (e.g. ``curvature``, ``precond``, ``grads``, ``signals``, ``handoff``).
      extra_meta: extra top-level meta.json sections (e.g. ``{"curvature": {...}}``).
      arviz: also write ``posterior.nc`` through ``trace.to_arviz()`` (netCDF).
      compress: compress trace.npz (≈7% smaller, ≈5× slower to write).
      fsync: fsync each file (durable against power loss, ≈3× slower).
    """
    if not isinstance(trace, Trace):
        raise ValueError(f"save_run expects a gnomon.Trace, got {type(trace).__name__}")
    if trace.is_batched:
        raise ValueError(
            "save_run writes one fit; a batched trace is B runs: use Experiment.save_batch or save trace[i]"
        )
    trace.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / SUMMARY_FILE).exists() and not overwrite:
        raise FileExistsError(f"{run_dir}: already holds a complete run (summary.json); pass overwrite=True")
    if overwrite:
        (run_dir / SUMMARY_FILE).unlink(missing_ok=True)  # incomplete while rewriting
    layout = layout if layout is not None else trace.layout
    if layout is not None and layout.size != trace.dim:
        raise ValueError(f"layout has size {layout.size} but the trace's θ has dimension {trace.dim}")
    run_id = run_id or run_dir.name
    trace = trace.to_numpy()
    files = [TRACE_FILE]
    write_npz(run_dir / TRACE_FILE, _trace_arrays(trace), compress=compress, fsync=fsync)

    thetamap_meta = None
    if trace.thetamap is not None:
        tm = trace.thetamap
        write_npz(run_dir / THETAMAP_FILE, tm.to_arrays(), fsync=fsync)
        files.append(THETAMAP_FILE)
        thetamap_meta = {"type": type(tm).__name__, **tm.describe()}
    for name, arrays in (extra_arrays or {}).items():
        if not _EXTRA_NAME.fullmatch(name) or name in _RESERVED:
            raise ValueError(f"extra_arrays name {name!r} must be a plain identifier other than {sorted(_RESERVED)}")
        write_npz(run_dir / f"{name}.npz", arrays, fsync=fsync)
        files.append(f"{name}.npz")
    if arviz:
        from gnomon.artifacts.netcdf import write_netcdf

        write_netcdf(run_dir / NETCDF_FILE, trace, layout=layout, meta=meta)
        files.append(NETCDF_FILE)

    theta_dtype = str(np.asarray(trace.theta).dtype)
    meta_doc: dict[str, Any] = {
        "run_id": run_id,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": trace.kind,
        **_provenance(os.getcwd()),
        "theta": {
            "theta_space": trace.theta_space,
            "dim": trace.dim,
            "z_dim": trace.z_dim if trace.z is not None else None,
            "dtype": theta_dtype,
            "layout_hash": layout.hash if layout is not None else None,
            "layout": _layout_doc(layout) if layout is not None else None,
            "thetamap": thetamap_meta,
        },
        "engine": dict(trace.info),
        "extras": {k: v for k, v in trace.extras.items() if _json_scalar_like(v)},
        "files": files,
        "user": dict(meta or {}),
        **dict(extra_meta or {}),
    }
    write_json(run_dir / META_FILE, meta_doc, fsync=fsync)
    base = trace.summary()
    if trace.kind == "sampling":  # ESS, R-hat, divergences, cost per effective sample (arviz-stats)
        from gnomon.artifacts.sampling_summary import sampling_summary

        base.update(sampling_summary(trace))
    summary_doc = {"run_id": run_id, **base, **dict(summary or {})}
    summary_doc["written_utc_unix"] = time.time()
    write_json(run_dir / SUMMARY_FILE, summary_doc, fsync=fsync)  # last: marks the run complete
    return run_dir


def _json_scalar_like(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def load_run(run_dir: str | os.PathLike, *, require_complete: bool = True) -> Run:
    """Load a run directory written by :func:`save_run`.

    Raises :class:`ArtifactError` naming the file that is missing, truncated, corrupt or written by a newer
    gnomon. An incomplete run (no summary.json) is refused unless ``require_complete=False``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: no such run directory")
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.exists() or require_complete:
        if not summary_path.exists():
            raise ArtifactError(f"{summary_path}: file is missing (the run is incomplete or was interrupted)")
        summary = read_json(summary_path)
    else:
        summary = {}
    meta = read_json(run_dir / META_FILE)
    for key in ("kind", "theta"):
        if key not in meta:
            raise ArtifactError(f"{run_dir / META_FILE}: missing required key {key!r}")
    layout_doc = meta["theta"].get("layout")
    try:
        layout = Layout.from_dict(layout_doc) if layout_doc else None
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{run_dir / META_FILE}: unreadable layout ({exc})") from None
    thetamap = None
    tm_meta = meta["theta"].get("thetamap")
    if tm_meta:
        thetamap = _load_thetamap(run_dir / THETAMAP_FILE, tm_meta, layout)
    arrays = read_npz(run_dir / TRACE_FILE)
    if "theta" not in arrays:
        raise ArtifactError(f"{run_dir / TRACE_FILE}: no 'theta' array (has {sorted(arrays)})")
    try:
        trace = _trace_from_arrays(arrays, meta, summary, layout, thetamap).validate()
    except ValueError as exc:
        raise ArtifactError(f"{run_dir / TRACE_FILE}: inconsistent arrays ({exc})") from None
    files = {p.stem: p for p in run_dir.glob("*.npz") if p.stem not in ("trace", "thetamap")}
    return Run(path=run_dir, trace=trace, meta=meta, summary=summary, layout=layout, files=files)


def _load_thetamap(path: Path, tm_meta: dict, layout: Layout | None):
    kind = tm_meta.get("type")
    if kind != "EigenMap":
        raise ArtifactError(f"{path}: unknown θ-map type {kind!r}")
    from gnomon.thetaspace.eigenmap import EigenMap

    try:
        return EigenMap.from_arrays(read_npz(path), tm_meta, layout=layout)
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot rebuild the θ-map ({exc})") from None


def new_run_id() -> str:
    """A collision-free run id: UTC time + random suffix (safe as a directory name)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
