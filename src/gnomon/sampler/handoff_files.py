"""`HandOff`: the hand-off bundle with its files (``handoff.npz`` in a run directory).

:class:`HandOff` is :class:`gnomon.sampler.handoff.HandOffBundle` (what the sampler reads and writes) plus
storage, kept here so that the engine layer never reaches up into the artifacts layer:

* ``to_arrays()`` / ``from_arrays()``: the arrays of ``handoff.npz``, with the JSON description (settings,
  diagnostics, the sampler's decisions, package versions) as UTF-8 bytes under ``meta_json``;
* ``bundle.save_run(run_dir, trace, **save_run_kwargs)``: the whole run directory — trace.npz, meta.json
  with a ``handoff`` section, summary.json with the sampling summary (ESS, R-hat, divergences, cost,
  compile and run time, the hand-off diagnostics and decisions) and handoff.npz;
* ``bundle.save(run_dir)``: only ``handoff.npz`` (atomic, no pickle);
* ``HandOff.load(run_or_dir)``: back from a :class:`gnomon.Run`, its directory or the ``.npz`` itself.

By hand, the same run directory::

    gn.save_run(run_dir, trace, summary=sampling_summary(trace),
                extra_arrays={"handoff": bundle.to_arrays()}, extra_meta={"handoff": bundle.describe()})
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from gnomon.io.jsonio import ArtifactError, from_jsonable, to_jsonable
from gnomon.io.npzio import read_npz, write_npz
from gnomon.io.provenance import package_versions
from gnomon.sampler.handoff import ARRAYS, HANDOFF_SCHEMA, HandOffBundle
from gnomon.trace.trace import Trace

HANDOFF_FILE = "handoff.npz"
TRANSPORT_PREFIX = "transport_"  # the transport map's arrays in handoff.npz


@dataclass(frozen=True, eq=False)
class HandOff(HandOffBundle):
    """The adaptation state of a sampling run, reusable by the next run, and storable with it: the fields of
    :class:`gnomon.sampler.handoff.HandOffBundle` (θ*, step size, adapted and seeded metrics, curvature,
    chain positions, key, info) plus saving and loading as ``handoff.npz``."""

    @classmethod
    def from_trace(cls, trace: Trace) -> HandOff:
        """The bundle of a sampling :class:`Trace` returned by :func:`gnomon.sample` (with the package
        versions of this environment in its description)."""
        bundle = super().from_trace(trace)
        return replace(bundle, info={**bundle.info, "packages": dict(package_versions())})

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``handoff.npz`` (the description is stored as UTF-8 bytes under ``meta_json``)."""
        out = {name: np.asarray(getattr(self, name)) for name in ARRAYS if getattr(self, name) is not None}
        out["step_size"] = np.asarray(self.step_size, dtype=np.float64)
        for k, v in (self.transport or {}).items():  # the transport map's arrays, when the run ended in one
            out[f"{TRANSPORT_PREFIX}{k}"] = np.asarray(v)
        text = json.dumps(to_jsonable(self.describe()), allow_nan=False)
        out["meta_json"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> HandOff:
        """Inverse of :meth:`to_arrays`."""
        for name in ("theta", "inverse_mass_matrix", "step_size"):
            if name not in arrays:
                raise ValueError(f"hand-off arrays lack {name!r} (have {sorted(arrays)})")
        desc: dict[str, Any] = {}
        if "meta_json" in arrays:
            desc = from_jsonable(json.loads(bytes(np.asarray(arrays["meta_json"], dtype=np.uint8)).decode("utf-8")))
            schema = desc.get("handoff_schema", 1)
            if isinstance(schema, int) and schema > HANDOFF_SCHEMA:
                raise ValueError(f"hand-off schema {schema} is newer than this gnomon reads (≤ {HANDOFF_SCHEMA})")
        for k in ("handoff_schema", "dim", "dense", "step_size", "num_chains"):
            desc.pop(k, None)
        kw = {name: np.asarray(arrays[name]) for name in ARRAYS if name in arrays}
        tmap = {k[len(TRANSPORT_PREFIX):]: np.asarray(v) for k, v in arrays.items() if k.startswith(TRANSPORT_PREFIX)}
        return cls(step_size=float(np.asarray(arrays["step_size"])), info=desc, transport=tmap or None, **kw)

    # ------------------------------------------------------------------ files
    def save_run(self, run_dir: str | os.PathLike, trace: Trace, **save_run_kwargs: Any) -> Path:
        """Write ``trace`` as a run directory with this bundle (``handoff.npz`` and ``meta.json["handoff"]``)
        and the sampling summary (min ESS, max R-hat, divergences, cost, hand-off diagnostics) merged into
        ``summary.json``. Other keyword arguments go to :func:`gnomon.save_run` (``arviz=True``, ``meta=``,
        ...)."""
        from gnomon.io.run import save_run
        from gnomon.io.sampling_summary import sampling_summary

        kw = dict(save_run_kwargs)
        kw["summary"] = {**sampling_summary(trace), **dict(kw.get("summary") or {})}
        kw["extra_arrays"] = {**dict(kw.get("extra_arrays") or {}), "handoff": self.to_arrays()}
        kw["extra_meta"] = {**dict(kw.get("extra_meta") or {}), "handoff": to_jsonable(self.describe())}
        return save_run(run_dir, trace, **kw)

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``handoff.npz`` into ``run_dir`` (created if needed); return its path. A complete run directory
        is refused: its summary.json records every file's size, so a rewritten bundle would mark the run as
        changed after it was written (use :meth:`save_run` with ``overwrite=True`` to replace the run)."""
        from gnomon.io.run import SUMMARY_FILE

        run_dir = Path(run_dir)
        if (run_dir / SUMMARY_FILE).exists():
            raise FileExistsError(f"{run_dir}: is a complete run; write its bundle with bundle.save_run(run_dir, "
                                  "trace, overwrite=True) or save it to another directory")
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / HANDOFF_FILE
        write_npz(path, self.to_arrays())
        return path

    @classmethod
    def load(cls, run_or_dir: Any) -> HandOff:
        """Read the bundle of a run: a loaded :class:`gnomon.Run`, its directory or the ``.npz`` itself."""
        if hasattr(run_or_dir, "files") and hasattr(run_or_dir, "path"):
            path = Path(run_or_dir.files.get("handoff", Path(run_or_dir.path) / HANDOFF_FILE))
        else:
            path = Path(run_or_dir)
            if path.is_dir():
                path = path / HANDOFF_FILE
        if not path.exists():
            raise ArtifactError(
                f"{path}: no hand-off bundle (save one with HandOff.save(run_dir) or "
                "save_run(..., extra_arrays={'handoff': bundle.to_arrays()}))"
            )
        try:
            return cls.from_arrays(read_npz(path))
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"{path}: not a usable hand-off bundle ({exc})") from None
