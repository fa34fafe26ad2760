"""The work behind ``gnomon show | plot | aggregate`` (argument parsing lives in :mod:`gnomon.interface.cli`).

Each function takes the parsed ``argparse.Namespace`` and returns an exit code. Problems with the user's
input (a missing, corrupt or wrong kind of directory, an unknown signal, a bad output suffix) raise
``ArtifactError`` / ``ValueError`` / ``FileNotFoundError``, which the CLI prints as one line on stderr
with exit status 1.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gnomon.io.jsonio import ArtifactError
from gnomon.io.status import FILES_KEY, STATES, USER_KEYS_KEY
from gnomon.util.format import format_number, format_uncertain, iso_time

_RUN_FILES = ("summary.json", "meta.json", "trace.npz")
#: summary columns left out of a printed table (still in a written one)
_QUIET_COLUMNS = ("initial_loss", "final_grad_norm", "num_rows", "converged", "diverged", "num_warnings",
                  "poor_start")
_TABLE_COLUMNS = (
    "run_id",
    "kind",
    "status",
    "final_loss",
    "best_loss",
    "reduced_deviance",
    "misfit",
    "num_steps",
    "num_chains",
    "num_draws",
    "divergences",
    "num_grad_evals",
    "min_ess_bulk",
    "max_rhat",
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
    if _run_subdirs(p):
        return "runs"
    raise ArtifactError(
        f"{p}: neither a run directory (trace.npz, meta.json, summary.json), an experiment "
        "(manifest.json, runs/) nor a folder of run directories"
    )


def _run_subdirs(p: Path) -> list[Path]:
    """The sub-folders of ``p`` that hold a run's files (a folder of ``gn.save_run`` directories), sorted."""
    try:
        subs = sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))
    except OSError:
        return []
    return [c for c in subs if any((c / f).exists() for f in _RUN_FILES)]


def _load_run(path: str):
    from gnomon.io.run import load_run

    try:
        return load_run(path)
    except ArtifactError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ArtifactError(f"{path}: unreadable run directory ({type(exc).__name__}: {exc})") from None


def _fmt(v: Any) -> str:
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v[:8]) + (", …]" if len(v) > 8 else "]")
    return format_number(v)


def _fmt_summary(key: str, v: Any) -> str:
    """A summary value as read: times as ISO dates, durations in seconds."""
    if key.endswith("_unix"):
        return iso_time(v)
    if key.endswith("_s") and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{format_number(v, 4)} s"
    return _fmt(v)


def _engine_with_transport(engine: Mapping[str, Any]) -> dict[str, Any]:
    """The engine settings with a kept transport map as one word ("affine autoregressive 97086fe7") — a dict
    that ``_scalars`` would drop — and "none" for a run without one."""
    out = dict(engine)
    if "transport" in out:
        t = out["transport"]
        out["transport"] = (f"{t.get('type', 'map')} {str(t.get('hash', ''))[:8]}".strip()
                            if isinstance(t, Mapping) else "none" if t is None else t)
    return out


def _scalars(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool)) or v is None}


def _text_table(header: list[str], rows: list[list[str]], *, width: int | None = None, keep: int = 1) -> str:
    """An aligned text table (first ``keep`` columns left-aligned and repeated), split into column blocks that
    fit ``width`` characters (default: the terminal's)."""
    import shutil

    width = width or max(80, shutil.get_terminal_size((160, 24)).columns)
    cols = list(zip(header, *rows)) if rows else [(h,) for h in header]
    widths = [max(len(str(x)) for x in c) for c in cols]

    def line(cells: list[str], idx: list[int]) -> str:
        return "  ".join(
            (cells[i].ljust(widths[i]) if i < keep else cells[i].rjust(widths[i])) for i in idx
        ).rstrip()

    blocks, cur, used = [], list(range(keep)), sum(widths[:keep]) + 2 * keep
    for i in range(keep, len(header)):
        if cur[keep:] and used + widths[i] + 2 > width:
            blocks.append(cur)
            cur, used = list(range(keep)), sum(widths[:keep]) + 2 * keep
        cur.append(i)
        used += widths[i] + 2
    blocks.append(cur)
    out = []
    for idx in blocks:
        out.append(line(header, idx))
        out.extend(line(r, idx) for r in rows)
        out.append("")
    return "\n".join(out).rstrip()


# ---------------------------------------------------------------------------------------------- show
_HIDDEN = {"schema_version", "run_id", FILES_KEY, USER_KEYS_KEY}


def _parameter_rows(run: Any) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-parameter table of a run: estimate (± sd or CRLB), CRLB, truth, z, and ESS /
    R̂ for sampling runs; values with the significant figures their uncertainty supports, in the layout's
    units."""
    import numpy as np

    from gnomon.io.parameters import constrained, parameter_labels, parameter_summary, split_key

    summary = run.summary
    keys = {split_key(k): v for k, v in summary.items() if split_key(k) is not None}
    layout = run.layout
    labels = parameter_labels(layout) if layout is not None else []
    if layout is not None and not any(p == "estimate" for p, _ in keys):
        keys = {split_key(k): v for k, v in parameter_summary(run.trace, layout).items()}
    units = {lab: layout[name].units for name, _, lab in labels} if layout is not None else {}
    crlb_meta = run.meta.get("crlb") if isinstance(run.meta.get("crlb"), Mapping) else {}
    derived_units = crlb_meta.get("derived") if isinstance(crlb_meta.get("derived"), Mapping) else {}
    units.update({str(k): str(v) for k, v in derived_units.items()})
    order = [lab for _, _, lab in labels] or sorted({lab for _, lab in keys})
    order = [lab for lab in order if ("estimate", lab) in keys]
    named = len(order)  # the layout's parameters; derived quantities (cramer_rao(derived=...)) follow them
    order += [lab for p, lab in keys if p == "estimate" and lab not in order]
    sampling = run.trace.kind == "sampling"
    ess = rhat = None
    if sampling and layout is not None and named:
        import arviz_stats as azs

        from gnomon.io.parameters import base_theta

        th = base_theta(run.trace)
        vals = constrained(layout, th)
        cols = {lab: np.asarray(vals[name][..., k], dtype=np.float64) for name, k, lab in labels}
        draws = np.stack([cols[lab] for lab in order[:named]], axis=-1)  # (C, N, K)
        ess = np.atleast_1d(azs.ess(draws, chain_axis=0, draw_axis=1, method="bulk"))
        rhat = np.atleast_1d(azs.rhat(draws, chain_axis=0, draw_axis=1)) if draws.shape[0] > 1 else None
    has = {p: any((p, lab) in keys for lab in order) for p in ("sd", "crlb", "truth", "z")}
    est_head = "posterior mean ± sd" if sampling else ("MAP ± CRLB" if has["crlb"] else "MAP")
    header = ["parameter", est_head]
    header += [h for h, p in (("CRLB", "crlb"), ("truth", "truth"), ("z", "z")) if has[p]]
    if ess is not None:
        header += ["ESS bulk"] + (["R-hat"] if rhat is not None else [])
    header.append("unit")
    rows = []
    for i, lab in enumerate(order):
        est = keys[("estimate", lab)]
        sd = keys.get(("sd", lab)) if sampling else keys.get(("crlb", lab))
        row = [lab, format_uncertain(est, sd) if sd is not None else format_number(est, 8)]
        crlb = keys.get(("crlb", lab))
        if has["crlb"]:
            row.append(format_number(crlb, 3) if crlb is not None else "")
        if has["truth"]:
            t = keys.get(("truth", lab))
            row.append(format_number(t, 8) if t is not None else "")
        if has["z"]:
            z = keys.get(("z", lab))
            row.append(f"{float(z):+.2f}" if isinstance(z, (int, float)) else "")
        if ess is not None:
            row.append(f"{float(ess[i]):.0f}" if i < named else "")
            if rhat is not None:
                row.append(f"{float(rhat[i]):.3f}" if i < named else "")
        row.append(units.get(lab, ""))
        rows.append(row)
    return header, rows


def _show_run(path: str, out: Any) -> int:
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
    engine = _scalars(_engine_with_transport(meta.get("engine") or {}))
    if engine:
        w(f"  engine: {_fmt(engine)}")
    user = meta.get("user") or {}
    if isinstance(user, Mapping) and user:
        short = {k: v for k, v in user.items() if k != "truth"}
        if short:
            w(f"  user meta: {_fmt(_scalars(short)) or ', '.join(sorted(short))}")
    from gnomon.io.parameters import split_key

    user_keys = [k for k in summary.get(USER_KEYS_KEY) or [] if k in summary]
    gnomon_keys = [
        k for k in summary if k not in _HIDDEN and k not in user_keys and split_key(k) is None
    ]
    w("summary:")
    for k in gnomon_keys:
        w(f"  {k:<28} {_fmt_summary(k, summary[k])}")
    if user_keys:
        w("user summary:")
        for k in user_keys:
            w(f"  {k:<28} {_fmt_summary(k, summary[k])}")
    header, rows = _parameter_rows(run)
    if rows:
        w("parameters:")
        for line in _text_table(header, rows, width=10**6).splitlines():
            w(f"  {line}" if line else "")
    files = sorted(p.name for p in run.path.iterdir() if not p.name.startswith("."))
    w(f"files: {' '.join(files)}")
    return 0


def _table_cells(df: Any, cols: list[str]) -> list[list[str]]:
    import pandas as pd

    rows = []
    for _, rec in df[cols].iterrows():
        cells = []
        for c in cols:
            v = rec[c]
            if v is None or (not isinstance(v, str) and pd.isna(v)):
                cells.append("")
            elif c.endswith("_unix"):
                cells.append(iso_time(v))
            elif isinstance(v, float):
                cells.append(format_number(v))
            else:
                cells.append(str(v))
        rows.append(cells)
    return rows


def _user_summary_keys(states: list[Any]) -> list[str]:
    keys: dict[str, None] = {}
    for st in states:
        for k in (st.summary or {}).get(USER_KEYS_KEY) or []:
            keys.setdefault(str(k), None)
    return list(keys)


def _show_experiment(path: str, out: Any) -> int:
    from gnomon.experiment.experiment import Experiment

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
    return _show_states(path, exp.run_states(), exp.runs_dir, lambda: exp.aggregate(on_problem="ignore"), out)


def _show_folder(path: str, out: Any) -> int:
    """A folder of run directories (``gn.save_run`` into ``folder/<run>``): the same table as an experiment's."""
    from gnomon.experiment.aggregate import aggregate
    from gnomon.io.status import check_run

    print(f"folder of runs {path}", file=out)
    runs = _run_subdirs(Path(path))
    return _show_states(path, [check_run(r) for r in runs], Path(path),
                        lambda: aggregate(path, on_problem="ignore"), out)


def _show_states(path: str, states: list[Any], runs_dir: Path, table: Any, out: Any) -> int:
    """The runs' states, the problems, and the table of the complete ones (``table()`` aggregates them)."""
    from gnomon.experiment.incomplete import incomplete_state

    w = lambda s="": print(s, file=out)  # noqa: E731
    by: dict[str, list[Any]] = {s: [] for s in STATES}
    for st in states:
        by[st.state].append(st)
    counts = [f"{len(by['complete'])} complete", f"{len(by['incomplete'])} incomplete", f"{len(by['corrupt'])} corrupt"]
    if by["newer_schema"]:
        counts.append(f"{len(by['newer_schema'])} written by a newer gnomon")
    w("runs: " + ", ".join(counts))
    shown = 0
    for st in by["incomplete"]:
        if shown < 20:
            item = incomplete_state(runs_dir / st.run_id)
            err = f": {item['error']}" if item.get("error") else ""
            w(f"  incomplete {st.run_id} ({item['state']}{err})")
        shown += 1
    for st in by["corrupt"] + by["newer_schema"]:
        if shown < 20:
            w(f"  {'corrupt' if st.state == 'corrupt' else 'newer'} {st.run_id}: {st.reason}")
        shown += 1
    if shown > 20:
        w(f"  … and {shown - 20} more runs that are not complete")
    if not by["complete"]:
        return 0
    df = table()
    cols = [c for c in _TABLE_COLUMNS if c in df.columns and not df[c].isna().all()]
    cols += [c for c in _user_summary_keys(by["complete"]) if c in df.columns and c not in cols]
    w(_text_table(cols, _table_cells(df.head(30), cols)))
    if len(df) > 30:
        w(f"… and {len(df) - 30} more runs (gnomon aggregate {path} for all, -o table.csv to save them)")
    if "status" in df.columns:
        counts = df["status"].astype("string").fillna("unknown").value_counts()
        w("status: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def show(args: Any) -> int:
    """``gnomon show RUN_DIR|EXPERIMENT_DIR|FOLDER_OF_RUNS``: status, summary table and essential meta."""
    kind = _dir_kind(args.path)
    show_kind = {"run": _show_run, "experiment": _show_experiment, "runs": _show_folder}[kind]
    return show_kind(args.path, sys.stdout)


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


def _plot_campaign(args: Any, out: Path) -> int:
    """``gnomon plot EXPERIMENT_DIR --campaign -o FILE.png``: the campaign time series to FILE and, when the
    runs have z-scores, their distribution against N(0, 1) to FILE-z."""
    if _dir_kind(args.path) != "experiment":
        raise ValueError(f"{args.path}: --campaign takes an experiment directory, not a run directory")
    if args.signals or args.recipe or getattr(args, "map", None):
        raise ValueError("--campaign draws its own figures; it cannot be combined with --signals, --recipe or --map")
    from gnomon.experiment.experiment import Experiment
    from gnomon.plot import campaign, z_distribution

    exp = Experiment(args.path, create=False)
    params = list(args.params) if args.params else None
    fig = campaign(exp, params, x=args.x)
    fig.savefig(out)
    print(f"wrote {out}")
    try:
        zfig = z_distribution(exp, params)
    except ValueError:
        return 0  # no z-scores (no truth saved with the runs)
    zpath = out.with_name(f"{out.stem}-z{out.suffix}")
    zfig.savefig(zpath)
    print(f"wrote {zpath}")
    return 0


def _role_map(items: list[str] | None) -> dict[str, str]:
    """``{role: name}`` from ``--map ROLE=NAME`` arguments (``NAME`` may be ``x,y`` for a pair)."""
    roles: dict[str, str] = {}
    for item in items or []:
        role, sep, name = item.partition("=")
        role, name = role.strip(), name.strip()
        if not sep or not role or not name:
            raise ValueError(f"--map {item!r}: expected ROLE=NAME, e.g. --map separation=sep")
        if role in roles:
            raise ValueError(f"--map: the role {role!r} is mapped twice ({roles[role]!r} and {name!r})")
        roles[role] = name
    return roles


def plot(args: Any) -> int:
    """``gnomon plot RUN_DIR -o FILE.png [--signals ...] [--mode ...] [--recipe NAME [--map ROLE=NAME ...]]`` or
    ``gnomon plot EXPERIMENT_DIR --campaign -o FILE.png [--params ...] [--x KEY]``."""
    out = _check_output(args.output, _IMAGE_SUFFIXES, "the output image")
    if getattr(args, "campaign", False):
        return _plot_campaign(args, out)
    only = [f for f, v in (("--params", getattr(args, "params", None)), ("--x", getattr(args, "x", None))) if v]
    if only:
        raise ValueError(f"{' and '.join(only)} only go with --campaign (an experiment's campaign figures)")
    if _dir_kind(args.path) != "run":
        raise ValueError(
            f"{args.path}: is an experiment; gnomon plot takes one run directory ({args.path}/runs/<id>), or "
            "--campaign for the experiment's campaign figures"
        )
    signals_arg = list(args.signals) if args.signals else []
    if args.recipe and signals_arg:
        raise ValueError("use either --recipe or --signals (a recipe chooses its own signals)")
    roles = _role_map(getattr(args, "map", None))
    if roles and not args.recipe:
        raise ValueError("--map ROLE=NAME names the roles of a recipe; give it with --recipe NAME")
    run = _load_run(args.path)
    from gnomon.signals.signals import Signals

    sig = Signals.from_run(run)
    status = run.summary.get("status", "")
    if args.recipe:
        from gnomon.recipes import get_recipe

        fn = get_recipe(args.recipe)
        params = inspect.signature(fn).parameters
        kwargs: dict[str, Any] = {"mode": args.mode} if "mode" in params else {}
        if roles:
            if "roles" not in params:
                raise ValueError(f"recipe {args.recipe!r} takes no role map (--map)")
            kwargs["roles"] = roles
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            figs = fn(sig, **kwargs)
        for w in caught:  # a recipe says which roles it could not fill: one line each, not a traceback
            print(f"gnomon plot: note: {w.message}", file=sys.stderr)
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
    """``gnomon aggregate EXPERIMENT_DIR|FOLDER_OF_RUNS [-o table.parquet|table.csv] [--meta-keys ...]
    [--params [NAME ...]]``: write the table, or print it when no ``-o`` is given."""
    out = _check_output(args.output, ("parquet", "csv"), "the table file") if args.output else None
    kind = _dir_kind(args.path)
    if kind == "run":
        raise ValueError(f"{args.path}: is a run directory; gnomon aggregate takes an experiment directory or a "
                         "folder of run directories")
    if kind == "experiment":
        from gnomon.experiment.experiment import Experiment

        table = Experiment(args.path, create=False).aggregate
    else:
        from functools import partial

        from gnomon.experiment.aggregate import aggregate as aggregate_runs

        table = partial(aggregate_runs, args.path)
    if out is not None and out.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(
                f"{out}: writing Parquet needs pyarrow (pip install 'gnomon[parquet]'); or write .csv"
            ) from None
    params = getattr(args, "params", None)
    if params is not None:
        params = list(params) or True
    meta_keys = list(args.meta_keys or ())
    df = table(meta_keys=meta_keys, output=out, on_problem="ignore", params=params)
    problems = df.attrs.get("problems") or []
    if kind == "runs":  # a folder of runs may hold other folders (figures, notes): not runs, not problems
        names = {r.name for r in _run_subdirs(Path(args.path))}
        problems = [p for p in problems if p.get("run_id") in names]
    if out is not None:
        print(f"wrote {len(df)} runs × {len(df.columns)} columns to {out}")
    else:
        from gnomon.io.parameters import split_key

        cols = [c for c in df.columns if c not in ("written_utc_unix",) and not df[c].isna().all()]
        base = [c for c in cols if split_key(c) is None and c not in meta_keys and not c.startswith("meta.")]
        keep = [c for c in _TABLE_COLUMNS if c in base]
        rest = [c for c in base if c not in keep and c not in _QUIET_COLUMNS]
        chosen = keep + rest + [c for c in cols if split_key(c) is not None] + [c for c in cols if c not in base
                                                                              and split_key(c) is None]
        if len(df):
            print(_text_table(chosen, _table_cells(df, chosen)))
        print(f"{len(df)} runs (write them all with -o table.csv or -o table.parquet)")
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
