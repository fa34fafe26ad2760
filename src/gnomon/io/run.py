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

import dataclasses
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gnomon.io.install import staged_run, write_staged
from gnomon.io.jsonio import ArtifactError, encode_json, from_jsonable, read_json, to_jsonable
from gnomon.io.npzio import npz_bytes, read_npz
from gnomon.io.parameters import parameter_summary
from gnomon.io.provenance import git_hash, package_versions, platform_info
from gnomon.io.status import FILES_KEY, USER_KEYS_KEY, check_meta, check_run
from gnomon.thetaspace.layout import Layout
from gnomon.trace.trace import Trace
from gnomon.util.programs import memoized

TRACE_FILE, META_FILE, SUMMARY_FILE = "trace.npz", "meta.json", "summary.json"
THETAMAP_FILE = "thetamap.npz"
#: goodness-of-fit keys copied from ``trace.info["goodness_of_fit"]`` into summary.json
GOF_SUMMARY_KEYS = ("deviance", "reduced_deviance", "pearson_chi2", "reduced_pearson_chi2", "dof", "misfit")
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

    def signals(self, truth: Any = None, transforms: Any = (), **kwargs: Any):
        """This run's :class:`~gnomon.Signals` (:meth:`gnomon.Signals.from_run`): the cached signals.npz or
        the decoded trace, with the truth and CRLB the run recorded."""
        from gnomon.signals.signals import Signals

        return Signals.from_run(self, truth=truth, transforms=transforms, **kwargs)

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


@memoized(maxsize=16)
def _provenance(cwd: str) -> dict[str, Any]:
    """The provenance block of meta.json, computed once per process (and working directory)."""
    return to_jsonable({
        "gnomon_version": package_versions().get("gnomon"),
        "git_hash": git_hash(),
        "packages": package_versions(),
        "platform": platform_info(),
    })


@memoized(maxsize=64)
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
    crlb: Any = None,
    truth: Any = None,
    extra_arrays: Mapping[str, Mapping[str, Any]] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    arviz: Any = False,
    overwrite: bool = False,
    compress: bool = False,
    fsync: bool = False,
) -> Path:
    """Write ``trace`` as a run directory and return its path.

    Every file is written into a staging directory beside ``run_dir`` and installed only when complete
    (:mod:`gnomon.io.install`), so a run directory never holds files of two runs.

    Args:
      run_dir: directory to create (parents too). It may be missing or empty, or hold an incomplete earlier
        attempt of this run. A complete run there (or an incomplete one of another run id) is refused unless
        ``overwrite=True``; a directory holding no run file, only other files, is always refused. Rewriting a
        run replaces gnomon's own files of it only: the user's files and folders in the directory stay
        (:mod:`gnomon.io.install`).
      trace: a single (unbatched) optimization or sampling :class:`Trace`.
      layout: the layout naming θ (defaults to ``trace.layout``); stored as index map + hash.
      meta: user metadata (JSON-able), stored under ``"user"`` in meta.json.
      run_id: defaults to the directory name.
      summary: extra aggregation scalars merged into summary.json (e.g. ``max_abs_z_vs_truth``); they win
        over the keys gnomon computes. Sampling runs get min bulk/tail ESS, max R-hat, divergences and
        gradient evaluations per ESS automatically.
      crlb: Cramér–Rao bounds per named parameter — a mapping label → value (or block name → array), or an
        object with ``to_summary()`` (the forward-model CRLB result); written as ``crlb.<label>``.
      truth: true parameter values — a mapping block name → constrained value (or label → value) or a flat
        base θ; written as ``truth.<label>``. With a layout, summary.json always gets ``estimate.<label>``
        (the MAP, or the posterior mean of a sampling run), ``sd.<label>`` for sampling runs, and
        ``z.<label>`` = (estimate − truth) / (CRLB, else sd) when a truth is given
        (:mod:`gnomon.io.parameters`).
      extra_arrays: optional diagnostic files ``{name: {array_name: array}}`` written as ``<name>.npz``
        (e.g. ``curvature``, ``precond``, ``grads``, ``signals``, ``handoff``).
      extra_meta: extra top-level meta.json sections (e.g. ``{"curvature": {...}}``).
      arviz: also write ``posterior.nc`` through ``trace.to_arviz()`` (netCDF; every variable carries
        ``units`` and ``long_name`` attributes); ``arviz=obj`` (the objective the trace came from) adds its
        groups (``to_arviz(objective=obj)``: a numpyro model's deterministic sites, ``log_likelihood``,
        ``observed_data``, ``constant_data`` and plate dims).
      overwrite: replace a complete run there, or an incomplete run of another run id (its files only; a new
        file named like one of the user's is refused before anything changes).
      compress: compress trace.npz (≈7% smaller, ≈5× slower to write).
      fsync: fsync each file (durable against power loss, ≈3× slower).
    """
    return write_run_dir(
        run_dir, trace, layout, meta, run_id=run_id, summary=summary, crlb=crlb, truth=truth,
        extra_arrays=extra_arrays, extra_meta=extra_meta, arviz=arviz, overwrite=overwrite,
        compress=compress, fsync=fsync,
    )


def write_run_dir(
    run_dir: str | os.PathLike,
    trace: Trace,
    layout: Layout | None = None,
    meta: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    summary: Mapping[str, Any] | None = None,
    crlb: Any = None,
    truth: Any = None,
    extra_arrays: Mapping[str, Mapping[str, Any]] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    arviz: Any = False,
    overwrite: bool = False,
    compress: bool = False,
    fsync: bool = False,
    claim_token: str | None = None,
    fresh: bool = False,
    prepare: Callable[[Path], tuple[Mapping[str, Any], Mapping[str, Any]]] | None = None,
) -> Path:
    """:func:`save_run` for the experiment writers: ``claim_token`` is the writer's claim of ``run_dir``,
    ``fresh`` says the writer has just created it (empty, unclaimed), and ``prepare(staging_dir) ->
    (extra_arrays, extra_meta)`` writes more files into the staging directory first (the diagnostics) and
    returns what it adds to the run's arrays and meta.json."""
    if not isinstance(trace, Trace):
        raise ValueError(f"save_run expects a gnomon.Trace, got {type(trace).__name__}")
    if trace.is_batched:
        raise ValueError(
            "save_run writes one fit; a batched trace is B runs: use Experiment.save_batch or save trace[i]"
        )
    trace.validate()
    run_dir = Path(run_dir)
    layout = layout if layout is not None else trace.layout
    if layout is not None and layout.size != trace.dim:
        raise ValueError(f"layout has size {layout.size} but the trace's θ has dimension {trace.dim}")
    for name in extra_arrays or {}:
        if not _EXTRA_NAME.fullmatch(name) or name in _RESERVED:
            raise ValueError(f"extra_arrays name {name!r} must be a plain identifier other than {sorted(_RESERVED)}")
    run_id = run_id or run_dir.name
    trace = member_info(trace.to_numpy())
    params = parameter_summary(trace, layout, crlb=crlb, truth=truth) if (layout is not None or crlb is not None
                                                                         or truth is not None) else {}
    record = getattr(crlb, "record", None)
    with staged_run(run_dir, run_id, overwrite=overwrite, claim_token=claim_token, fresh=fresh) as staging:
        extra_arrays = dict(extra_arrays or {})
        extra_meta = {**({"crlb": record()} if callable(record) else {}), **dict(extra_meta or {})}
        if prepare is not None:
            more_arrays, more_meta = prepare(staging)
            clash = sorted(set(more_arrays) & set(extra_arrays))
            if clash:
                raise ValueError(f"extra_arrays {clash} clash with diagnostics files of the same name")
            extra_arrays.update(more_arrays)
            extra_meta.update(more_meta)
        _write_files(staging, trace, layout, meta, run_id=run_id, summary=summary, params=params,
                     extra_arrays=extra_arrays, extra_meta=extra_meta, arviz=arviz, compress=compress,
                     fsync=fsync, scan=prepare is not None, atomic=fresh)
    return run_dir


def _write_files(
    run_dir: Path,
    trace: Trace,
    layout: Layout | None,
    meta: Mapping[str, Any] | None,
    *,
    run_id: str,
    summary: Mapping[str, Any] | None,
    params: Mapping[str, Any],
    extra_arrays: Mapping[str, Mapping[str, Any]],
    extra_meta: Mapping[str, Any],
    arviz: Any,
    compress: bool,
    fsync: bool,
    scan: bool = False,
    atomic: bool = False,
) -> None:
    """Write the run's files into ``run_dir`` (a private staging directory: each file is written whole, once,
    without a temporary file; the directory is installed atomically), summary.json last. ``scan``: other
    files were put there before (diagnostics), so their sizes are read back for ``summary.json``; ``atomic``:
    ``run_dir`` is a fresh run directory staged file by file (:func:`gnomon.io.install.staged_run`)."""
    sizes: dict[str, int] = {}

    def put(name: str, data: bytes) -> None:
        sizes[name] = write_staged(run_dir / name, data, fsync, atomic=atomic)

    files = [TRACE_FILE]
    put(TRACE_FILE, npz_bytes(_trace_arrays(trace), compress=compress))

    thetamap_meta = None
    if trace.thetamap is not None:
        tm = trace.thetamap
        put(THETAMAP_FILE, npz_bytes(tm.to_arrays()))
        files.append(THETAMAP_FILE)
        thetamap_meta = {"type": type(tm).__name__, **tm.describe()}
    for name, arrays in extra_arrays.items():
        put(f"{name}.npz", npz_bytes(arrays))
        files.append(f"{name}.npz")
    if arviz:
        from gnomon.io.netcdf import write_netcdf

        objective = None if isinstance(arviz, bool) else arviz  # arviz=obj: the objective's groups too
        write_netcdf(run_dir / NETCDF_FILE, trace, layout=layout, meta=meta, objective=objective)
        files.append(NETCDF_FILE)
        scan = True

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
    write_staged(run_dir / META_FILE, encode_json(meta_doc), fsync, atomic=atomic)
    base = trace.summary()
    cinfo = trace.info.get("curvature") if isinstance(trace.info, Mapping) else None
    if isinstance(cinfo, Mapping) and cinfo.get("method"):  # which curvature, and why not the one asked for
        fb = cinfo.get("fallback")
        base.update(curvature_method=str(cinfo["method"]),
                    curvature_fallback=str(fb["reason"]) if isinstance(fb, Mapping) else None)
    if trace.kind == "sampling":  # ESS, R-hat, divergences, cost per effective sample (arviz-stats)
        from gnomon.io.sampling_summary import sampling_summary

        base.update(sampling_summary(trace))
    code = trace.info.get("status_code")
    if isinstance(code, str):  # an optimizer's StatusCode beside the status sentence (gnomon.optim.status)
        base["status_code"] = str(code)
    gof = trace.info.get("goodness_of_fit")
    if isinstance(gof, Mapping):  # deviance, reduced_deviance, pearson_chi2, reduced_pearson_chi2, dof, misfit
        base.update({k: gof[k] for k in GOF_SUMMARY_KEYS if k in gof})
    for k in ("batch_size", "batch_runtime_s"):  # a batch member: runtime_s is its share, these the batch's
        if isinstance(trace.info.get(k), (int, float)):
            base[k] = trace.info[k]
    summary_doc = {"run_id": run_id, **base, **dict(params), **dict(summary or {})}
    summary_doc["written_utc_unix"] = time.time()
    summary_doc[USER_KEYS_KEY] = sorted(str(k) for k in (summary or {}))
    if scan:
        with os.scandir(run_dir) as it:
            sizes.update({e.name: e.stat().st_size for e in it
                          if e.is_file() and e.name not in sizes and e.name != META_FILE})
    summary_doc[FILES_KEY] = sizes
    write_staged(run_dir / SUMMARY_FILE, encode_json(summary_doc), fsync, atomic=atomic)  # last: complete


def member_info(trace: Trace) -> Trace:
    """A member of a batch (``batch[i]``: ``extras["batch_index"]``) with the per-member lists of the batch's
    ``info`` (``goodness_of_fit``, ``status_code``) cut to its own entry, so that its meta.json and summary.json
    describe it alone."""
    i = trace.extras.get("batch_index")
    info = dict(trace.info)
    cut = False
    for name in ("goodness_of_fit", "status_code"):
        per = info.get(name)
        if isinstance(per, (list, tuple)):
            cut = True
            if isinstance(i, (int, np.integer)) and 0 <= int(i) < len(per):
                info[name] = per[int(i)]
            else:
                info.pop(name)
    return dataclasses.replace(trace, info=info) if cut else trace


def _json_scalar_like(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def load_run(run_dir: str | os.PathLike, *, require_complete: bool = True) -> Run:
    """Load a run directory written by :func:`save_run`.

    The run is first classified by :func:`gnomon.io.status.check_run` (the judge every reader
    shares): a corrupt run — unreadable or newer JSON, a meta.json whose layout no longer matches its stored
    hash (e.g. a block renamed by hand), a data file missing or of another size than recorded — raises
    :class:`ArtifactError` naming the file and the reason, as does any array file that cannot be read. An
    incomplete run (no summary.json) is refused unless ``require_complete=False``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: no such run directory")
    state = check_run(run_dir)
    if state.state == "incomplete":
        if require_complete:
            raise ArtifactError(
                f"{run_dir / SUMMARY_FILE}: file is missing (the run is incomplete or was interrupted)"
            )
        summary = {}
        meta = read_json(run_dir / META_FILE)
        why = check_meta(run_dir / META_FILE, meta)
        if why is not None:
            raise ArtifactError(why)
    elif not state.ok:
        raise ArtifactError(state.reason)
    else:
        summary, meta = from_jsonable(state.summary), from_jsonable(state.meta)
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
