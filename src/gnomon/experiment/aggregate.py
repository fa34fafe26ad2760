"""Aggregate an experiment's runs into one table: ``summary.json`` scalars plus chosen ``meta.json`` keys.

Per run, ``summary.json`` and ``meta.json`` are read and the run is classified by
:func:`gnomon.io.status.check_run` — the judge :func:`gnomon.load_run` and ``gnomon show`` use too, so
a run is in the table exactly when it loads, whether or not meta keys are asked for. The cost is file opens,
so the reads run in a small thread pool (file I/O releases the GIL). Runs that cannot be used are reported,
never fatal: ``df.attrs["problems"]`` lists ``{"run_id", "problem", "message"}`` with problem
``"incomplete"`` (no summary.json: in progress, crashed or failed), ``"corrupt"`` (unreadable JSON, no
schema_version, a layout that does not match its hash, a data file missing or truncated; the message names
the file) or ``"newer_schema"`` (written by a newer gnomon).

Per-parameter keys (``estimate.<label>``, ``sd.<label>``, ``crlb.<label>``, ``truth.<label>``,
``z.<label>``: :mod:`gnomon.io.parameters`) become columns when ``params=`` asks for them.

Column dtypes are explicit (pandas nullable dtypes, so a missing value is ``<NA>`` and never turns an
integer column into floats): see :data:`SUMMARY_DTYPES`; other summary keys and meta keys are inferred
per column (all bool → ``boolean``, all int → ``Int64``, numbers → ``float64``, otherwise ``string``, with
lists and dicts as JSON text).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from gnomon.io.jsonio import ArtifactError, atomic_path
from gnomon.io.parameters import PREFIXES, split_key
from gnomon.io.status import FILES_KEY, USER_KEYS_KEY, check_run

SUMMARY_FILE, META_FILE = "summary.json", "meta.json"
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

#: dtypes of the summary scalars written by ``Trace.summary()`` / ``save_run``
SUMMARY_DTYPES: dict[str, str] = {
    "kind": "string",
    "status": "string",
    "converged": "boolean",
    "diverged": "boolean",
    "final_loss": "float64",
    "best_loss": "float64",
    "initial_loss": "float64",
    "final_grad_norm": "float64",
    "num_steps": "Int64",
    "num_rows": "Int64",
    "num_chains": "Int64",
    "num_draws": "Int64",
    "mean_log_prob": "float64",
    "divergences": "Int64",
    "num_grad_evals": "Int64",
    "runtime_s": "float64",
    "compile_s": "float64",
    "run_s": "float64",
    "written_utc_unix": "float64",
    "deviance": "float64",
    "reduced_deviance": "float64",
    "pearson_chi2": "float64",
    "reduced_pearson_chi2": "float64",
    "dof": "Int64",
    "misfit": "boolean",
    "crlb_max_ratio": "float64",
    "crlb_degenerate": "string",
    "batch_size": "Int64",
    "batch_runtime_s": "float64",
}
_SKIP = {"schema_version", "run_id", FILES_KEY, USER_KEYS_KEY}
_MISSING = object()


class AggregationWarning(UserWarning):
    """Some runs were skipped by an aggregation (see ``df.attrs["problems"]``)."""


def _dotted(doc: Any, key: str) -> Any:
    cur = doc
    for part in key.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


class _Row(NamedTuple):
    run_id: str
    summary: dict[str, Any] | None
    metavals: list[Any] | None
    problem: tuple[str, str] | None  # (state, message) of a run that is not complete


def _read_run(runs_dir: str, name: str, meta_keys: Sequence[str]) -> _Row:
    st = check_run(os.path.join(runs_dir, name))
    if not st.ok:
        return _Row(name, None, None, (st.state, st.reason))
    metavals = [_dotted(st.meta, k) for k in meta_keys]
    return _Row(name, st.summary, metavals, None)


def _select_params(keys: Sequence[str], params: Any) -> list[str]:
    """The per-parameter summary keys to keep as columns, grouped by label in first-seen order."""
    if params is None or params is False:
        return []
    labels: dict[str, None] = {}
    for k in keys:
        sk = split_key(k)
        if sk is not None:
            labels.setdefault(sk[1], None)
    if params is True or params == "all":
        chosen = list(labels)
    else:
        wanted = [params] if isinstance(params, str) else list(params)
        chosen, missing = [], []
        for w in wanted:
            if not isinstance(w, str) or not w:
                raise ValueError(f"params entries must be parameter names or labels, got {w!r}")
            hit = [lab for lab in labels if lab == w or lab.startswith(w + "[")]  # a block's labels are name[...]
            if not hit:
                missing.append(w)
            chosen += [lab for lab in hit if lab not in chosen]
        if missing:
            known = list(labels)
            raise ValueError(
                f"params: no per-parameter columns for {missing}; the runs have {known[:12]}"
                + (" …" if len(known) > 12 else "")
                + ("" if known else " (none: save runs with a layout, crlb= or truth=)")
            )
    present = set(keys)
    return [f"{p}.{lab}" for lab in chosen for p in PREFIXES if f"{p}.{lab}" in present]


def _list_runs(runs_dir: str) -> list[str]:
    try:
        with os.scandir(runs_dir) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except FileNotFoundError:
        raise FileNotFoundError(f"{runs_dir}: no runs directory (is this a gnomon experiment?)") from None


def _infer(values: list[Any]) -> str:
    present = [v for v in values if v is not None and v is not _MISSING]
    if not present:
        return "float64"
    if all(isinstance(v, bool) for v in present):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "Int64"
    if all(
        (isinstance(v, (int, float)) and not isinstance(v, bool)) or (isinstance(v, str) and v in _NONFINITE)
        for v in present
    ):
        return "float64"
    return "string"


def _column(values: list[Any], dtype: str):
    import numpy as np
    import pandas as pd

    na = (None, _MISSING)
    if dtype == "float64":
        out = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            if v in na or isinstance(v, bool):
                out[i] = np.nan
            elif isinstance(v, str):
                out[i] = _NONFINITE.get(v, np.nan)
            else:
                out[i] = float(v)
        return out
    if dtype == "string":
        vals = [None if v in na else (v if isinstance(v, str) else json.dumps(v)) for v in values]
        return pd.array(vals, dtype="string")
    if dtype == "boolean":
        return pd.array([None if v in na else bool(v) for v in values], dtype="boolean")
    if dtype == "Int64":
        return pd.array([None if v in na else int(v) for v in values], dtype="Int64")
    raise AssertionError(dtype)  # pragma: no cover


def _typed_column(values: list[Any], dtype: str | None):
    if dtype is not None:
        try:
            return _column(values, dtype)
        except (TypeError, ValueError, OverflowError):
            pass  # a run stored something unexpected under a known key: fall back to inference
    return _column(values, _infer(values))


def aggregate(
    runs_dir: str | os.PathLike,
    meta_keys: Sequence[str] = (),
    output: str | os.PathLike | None = None,
    *,
    on_problem: str = "warn",
    workers: int | None = None,
    params: bool | str | Sequence[str] | None = None,
):
    """Table of the complete runs under ``runs_dir``: ``run_id``, the summary scalars, the meta keys.

    Args:
      runs_dir: an experiment's ``runs/`` directory (or an experiment directory containing one).
      meta_keys: dotted keys into ``meta.json`` (e.g. ``"user.seed"``, ``"engine.learning_rate"``,
        ``"theta.layout_hash"``), one column each, named by the key (prefixed ``meta.`` if it would clash
        with a summary column); ``<NA>`` where a run lacks the key.
      output: also write the table atomically to ``*.parquet`` (needs pyarrow, the ``parquet`` extra) or
        ``*.csv``; a relative path is relative to the current directory.
      on_problem: ``"warn"`` (an :class:`AggregationWarning` with the counts), ``"ignore"`` or ``"raise"``
        (ArtifactError) when runs are incomplete, corrupt or newer; they are always listed in
        ``df.attrs["problems"]``.
      workers: reader threads (default: 8).
      params: per-parameter columns ``estimate.<label>``, ``sd.<label>``, ``crlb.<label>``,
        ``truth.<label>``, ``z.<label>`` (written by ``save_run``): None (default) for none, True or
        ``"all"`` for every parameter, or a list of block names (all their components) and component labels.
        Grouped by parameter, after the run-level columns and before the meta keys.

    Returns:
      a ``pandas.DataFrame`` sorted by ``run_id``, with explicit nullable dtypes (:data:`SUMMARY_DTYPES`).
    """
    if on_problem not in ("warn", "ignore", "raise"):
        raise ValueError(f"on_problem must be 'warn', 'ignore' or 'raise', got {on_problem!r}")
    meta_keys = _check_meta_keys(meta_keys)
    runs_dir = Path(runs_dir)
    if (runs_dir / "runs").is_dir() and not (runs_dir / SUMMARY_FILE).exists():
        runs_dir = runs_dir / "runs"
    fmt = _output_format(output)
    results = _read_runs(str(runs_dir), _list_runs(str(runs_dir)), meta_keys, workers)
    problems = [
        {"run_id": r.run_id, "problem": r.problem[0], "message": r.problem[1]} for r in results if r.problem
    ]
    df = _table([r for r in results if r.problem is None], meta_keys, params)
    df.attrs["problems"] = problems
    if problems and on_problem != "ignore":
        _report(problems, on_problem, runs_dir)
    if output is not None:
        _write_table(df, Path(output), fmt)
    return df


def _check_meta_keys(meta_keys: str | Sequence[str]) -> list[str]:
    """``meta_keys`` as a list of distinct dotted paths (one key may be given as a string)."""
    if isinstance(meta_keys, str):
        meta_keys = (meta_keys,)
    meta_keys = list(meta_keys)
    for k in meta_keys:
        if not isinstance(k, str) or not k or any(not p for p in k.split(".")):
            raise ValueError(f"meta key {k!r} must be a dotted path like 'user.seed'")
    if len(set(meta_keys)) != len(meta_keys):
        raise ValueError(f"meta_keys has duplicates: {meta_keys}")
    return meta_keys


def _output_format(output: str | os.PathLike | None) -> str | None:
    """``"parquet"`` or ``"csv"`` from the suffix of ``output`` (None: no output)."""
    if output is None:
        return None
    suffix = Path(output).suffix.lower()
    fmt = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(suffix)
    if fmt is None:
        raise ValueError(f"output {str(output)!r}: expected a .parquet or .csv file name")
    return fmt


def _read_runs(runs_dir: str, names: list[str], meta_keys: list[str], workers: int | None) -> list[_Row]:
    """Each run's row, in run-id order; many runs are read by ``workers`` threads (default 8)."""
    nworkers = max(1, int(workers) if workers is not None else 8)
    if nworkers == 1 or len(names) < 256:
        return [_read_run(runs_dir, n, meta_keys) for n in names]
    nchunks = nworkers * 4
    chunks = [names[i::nchunks] for i in range(nchunks)]

    def work(chunk):
        return [_read_run(runs_dir, n, meta_keys) for n in chunk]

    with ThreadPoolExecutor(nworkers) as pool:
        results = [r for part in pool.map(work, chunks) for r in part]
    results.sort(key=lambda r: r[0])
    return results


def _table(good: list[_Row], meta_keys: list[str], params: Any):
    """The DataFrame of the complete runs: ``run_id``, the run-level summary keys (known ones first, in
    :data:`SUMMARY_DTYPES` order, then the others sorted), the per-parameter columns ``params`` asks for, and
    the meta keys (``meta.<key>`` where a summary column has that name)."""
    import pandas as pd

    keys: dict[str, None] = {}
    for r in good:
        for k in r.summary:
            if k not in _SKIP:
                keys.setdefault(k, None)
    per_param = _select_params(list(keys), params)
    run_keys = [k for k in keys if split_key(k) is None]
    ordered = [k for k in SUMMARY_DTYPES if k in keys] + sorted(k for k in run_keys if k not in SUMMARY_DTYPES)
    data: dict[str, Any] = {"run_id": pd.array([r.run_id for r in good], dtype="string")}
    for k in ordered + per_param:
        data[k] = _typed_column([r.summary.get(k) for r in good], SUMMARY_DTYPES.get(k))
    for j, k in enumerate(meta_keys):
        col = k if k not in data else f"meta.{k}"
        data[col] = _typed_column([r.metavals[j] for r in good], None)
    return pd.DataFrame(data)


def _report(problems: list[dict[str, str]], on_problem: str, runs_dir: Path) -> None:
    """Warn (:class:`AggregationWarning`) or raise (``on_problem="raise"``) with the counts of skipped runs."""
    counts: dict[str, int] = {}
    for p in problems:
        counts[p["problem"]] = counts.get(p["problem"], 0) + 1
    what = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    text = (
        f"aggregate {runs_dir}: skipped {len(problems)} run(s) ({what}); df.attrs['problems'] lists "
        f"them; first: {problems[0]['message']}"
    )
    if on_problem == "raise":
        raise ArtifactError(text)
    warnings.warn(text, AggregationWarning, stacklevel=4)


def _write_table(df, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError(
                "writing Parquet needs pyarrow: pip install 'gnomon[parquet]' (or write a .csv)"
            ) from None
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            df.to_parquet(tmp, index=False, engine="pyarrow")
        else:
            df.to_csv(tmp, index=False)
