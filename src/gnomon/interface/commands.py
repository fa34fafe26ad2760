"""The work behind ``gnomon show | plot | aggregate`` (argument parsing lives in :mod:`gnomon.interface.cli`).

Each function takes the parsed ``argparse.Namespace`` and returns an exit code. Problems with the user's
input (a missing, corrupt or wrong kind of directory, an unknown signal, a bad output suffix) raise
``ArtifactError`` / ``ValueError`` / ``FileNotFoundError``, which the CLI prints as one line on stderr
with exit status 1.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gnomon.artifacts.jsonio import ArtifactError

_RUN_FILES = ("summary.json", "meta.json", "trace.npz")
_TABLE_COLUMNS = (
    "run_id",
    "kind",
    "status",
    "final_loss",
    "best_loss",
    "num_steps",
    "num_chains",
    "num_draws",
    "divergences",
    "num_grad_evals",
    "runtime_s",
)


# ---------------------------------------------------------------------------------------------- helpers
def _dir_kind(path: str) -> str:
    """``"run"`` or ``"experiment"``; FileNotFoundError / ArtifactError with one clear message otherwise."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such directory")
    if not p.is_dir():
        raise NotADirectoryError(f"{p}: not a directory (expected a run or experiment directory)")
    if (p / "manifest.json").exists() or (p / "runs").is_dir():
        return "experiment"
    if any((p / f).exists() for f in _RUN_FILES):
        return "run"
    raise ArtifactError(
        f"{p}: neither a run directory (trace.npz, meta.json, summary.json) nor an experiment "
        "(manifest.json, runs/)"
    )


def _load_run(path: str):
    from gnomon.artifacts.run import load_run

    try:
        return load_run(path)
    except ArtifactError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ArtifactError(f"{path}: unreadable run directory ({type(exc).__name__}: {exc})") from None


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v[:8]) + (", …]" if len(v) > 8 else "]")
    return str(v)


def _scalars(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool)) or v is None}


# ---------------------------------------------------------------------------------------------- show
def _show_run(path: str, out: Any) -> int:
    import numpy as np

    run = _load_run(path)
    meta, summary = run.meta, run.summary
    theta = meta.get("theta") or {}
    w = lambda s="": print(s, file=out)  # noqa: E731
    w(f"run {run.run_id}  ({run.path})")
    w(
        f"  kind: {meta.get('kind')}   status: {summary.get('status', 'unknown')}   "
        f"created: {meta.get('created_utc', '?')}   gnomon {meta.get('gnomon_version', '?')}"
        + (f"   git {meta['git_hash'][:10]}" if meta.get("git_hash") else "")
    )
    w(
        f"  θ: {theta.get('theta_space', '?')}, dim {theta.get('dim', '?')} ({theta.get('dtype', '?')})"
        + (f", layout {theta['layout_hash']}" if theta.get("layout_hash") else "")
        + (f", θ-map {theta['thetamap'].get('type')}" if isinstance(theta.get("thetamap"), Mapping) else "")
    )
    engine = _scalars(meta.get("engine") or {})
    if engine:
        w(f"  engine: {_fmt(engine)}")
    user = meta.get("user") or {}
    if isinstance(user, Mapping) and user:
        short = {k: v for k, v in user.items() if k != "truth"}
        if short:
            w(f"  user meta: {_fmt(_scalars(short)) or ', '.join(sorted(short))}")
    w("summary:")
    for k, v in summary.items():
        if k in ("schema_version", "run_id"):
            continue
        w(f"  {k:<24} {_fmt(v)}")
    if run.layout is not None:
        from gnomon.signals.signals import Signals

        sig = Signals.from_trace(run.trace, run.layout, diagnostics=False)
        head = "posterior mean ± sd" if sig.kind == "sampling" else "final"
        w(f"parameters ({head}):")
        width = max(len(n) for n in sig.names)
        for n, s in sig.items():
            fin = np.atleast_1d(s.final())
            unit = f" {s.units}" if s.units else ""
            if sig.kind == "sampling":
                sd = np.atleast_1d(np.nanstd(s.data.reshape(-1, s.num_components), axis=0))
                vals = ", ".join(f"{a:.6g} ± {b:.2g}" for a, b in zip(fin[:4], sd[:4]))
            else:
                vals = ", ".join(f"{a:.8g}" for a in fin[:6])
            more = ", …" if fin.size > (4 if sig.kind == "sampling" else 6) else ""
            shape = "" if s.scalar else f"{list(s.values.shape[1 + (sig.kind == 'sampling') :])}"
            w(f"  {n:<{width}} {shape:>5} {vals}{more}{unit}")
    files = sorted(p.name for p in run.path.iterdir() if not p.name.startswith("."))
    w(f"files: {' '.join(files)}")
    return 0


def _show_experiment(path: str, out: Any) -> int:
    import pandas as pd

    from gnomon.artifacts.experiment import Experiment

    exp = Experiment(path, create=False)
    w = lambda s="": print(s, file=out)  # noqa: E731
    man = exp.manifest or {}
    w(f"experiment {exp.path}")
    if man.get("description"):
        w(f"  description: {man['description']}")
    for key in ("created_utc", "gnomon_version"):
        if man.get(key):
            w(f"  {key}: {man[key]}")
    for key in ("sweep", "time_series", "datasets"):
        if man.get(key):
            w(f"  {key}: {_fmt(man[key])}")
    complete = exp.runs()
    incomplete = exp.incomplete_runs(detail=True)
    w(f"runs: {len(complete)} complete, {len(incomplete)} incomplete")
    for item in incomplete[:20]:
        err = f": {item['error']}" if item.get("error") else ""
        w(f"  incomplete {item['run_id']} ({item['state']}{err})")
    if len(incomplete) > 20:
        w(f"  … and {len(incomplete) - 20} more incomplete runs")
    if not complete:
        return 0
    df = exp.aggregate(on_problem="ignore")
    cols = [c for c in _TABLE_COLUMNS if c in df.columns and not df[c].isna().all()]
    table = df[cols]
    with pd.option_context(
        "display.width", 160, "display.max_columns", 20, "display.float_format", "{:.6g}".format
    ):
        w(table.head(30).to_string(index=False))
    if len(table) > 30:
        w(f"… and {len(table) - 30} more runs (gnomon aggregate {path} -o table.csv for all)")
    if "status" in df.columns:
        counts = df["status"].astype("string").fillna("unknown").value_counts()
        w("status: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def show(args: Any) -> int:
    """``gnomon show RUN_DIR|EXPERIMENT_DIR``: status, summary table and essential meta."""
    kind = _dir_kind(args.path)
    out = sys.stdout
    return _show_run(args.path, out) if kind == "run" else _show_experiment(args.path, out)


# ---------------------------------------------------------------------------------------------- plot
_IMAGE_SUFFIXES = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def _check_output(output: str, allowed: tuple[str, ...], what: str) -> Path:
    out = Path(output)
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in allowed:
        raise ValueError(f"{output}: {what} must end in one of {', '.join('.' + s for s in allowed)}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: output directory does not exist")
    return out


def plot(args: Any) -> int:
    """``gnomon plot RUN_DIR -o FILE.png [--signals ...] [--mode ...] [--recipe ...]``."""
    out = _check_output(args.output, _IMAGE_SUFFIXES, "the output image")
    if _dir_kind(args.path) != "run":
        raise ValueError(
            f"{args.path}: is an experiment; gnomon plot takes one run directory ({args.path}/runs/<id>)"
        )
    signals_arg = list(args.signals) if args.signals else []
    if args.recipe and signals_arg:
        raise ValueError("use either --recipe or --signals (a recipe chooses its own signals)")
    run = _load_run(args.path)
    from gnomon.signals.signals import Signals

    sig = Signals.from_run(run)
    status = run.summary.get("status", "")
    if args.recipe:
        from gnomon.recipes import get_recipe

        fn = get_recipe(args.recipe)
        kwargs = {"mode": args.mode} if "mode" in inspect.signature(fn).parameters else {}
        figs = fn(sig, **kwargs)
    else:
        from gnomon.plot import default_panels, grid

        if signals_arg:
            unknown = [n for n in signals_arg if n not in sig]
            if unknown:
                raise ValueError(f"unknown signal(s) {unknown}; this run has {list(sig.names)}")
            panels = [{"names": [n], **({"logy": "auto"} if n == "loss" else {})} for n in signals_arg]
        else:
            panels = default_panels(sig)
        figs = grid(
            sig, panels, mode=args.mode, suptitle=f"{run.run_id} ({status})" if status else run.run_id
        )
    written = []
    if isinstance(figs, Mapping):
        for key, fig in figs.items():
            path = out.with_name(f"{out.stem}-{key}{out.suffix}")
            fig.savefig(path)
            written.append(path)
    else:
        figs.savefig(out)
        written.append(out)
    for p in written:
        print(f"wrote {p}")
    return 0


# ---------------------------------------------------------------------------------------------- aggregate
def aggregate(args: Any) -> int:
    """``gnomon aggregate EXPERIMENT_DIR -o table.parquet|table.csv [--meta-keys ...]``."""
    out = _check_output(args.output, ("parquet", "csv"), "the table file")
    if _dir_kind(args.path) != "experiment":
        raise ValueError(f"{args.path}: is a run directory; gnomon aggregate takes an experiment directory")
    from gnomon.artifacts.experiment import Experiment

    exp = Experiment(args.path, create=False)
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(
                f"{out}: writing Parquet needs pyarrow (pip install 'gnomon[parquet]'); or write .csv"
            ) from None
    df = exp.aggregate(meta_keys=list(args.meta_keys or ()), output=out, on_problem="ignore")
    problems = df.attrs.get("problems") or []
    print(f"wrote {len(df)} runs × {len(df.columns)} columns to {out}")
    if problems:
        kinds: dict[str, int] = {}
        for p in problems:
            kinds[p.get("problem", "?")] = kinds.get(p.get("problem", "?"), 0) + 1
        print(
            "skipped "
            + ", ".join(f"{v} {k}" for k, v in kinds.items())
            + " run(s): "
            + ", ".join(str(p.get("run_id")) for p in problems[:10])
            + (" …" if len(problems) > 10 else ""),
            file=sys.stderr,
        )
    return 0
