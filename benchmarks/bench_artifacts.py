"""Run artifacts at scale: per-run write cost vs raw numpy + json, and aggregation of 10,000 runs.

1. Write cost (goal: gnomon ≤ 1.5× the baseline). Baseline: the same three files with the same content —
   ``np.savez`` of the trace arrays and ``json.dumps`` of the same meta/summary documents — each written to
   a temporary file and ``os.replace``-d, plus the ``mkdir``. gnomon: ``Experiment.save`` per run,
   ``Experiment.save_batch`` of a batched trace (per member), and bare ``gn.save_run``. Trace: T=1000 rows,
   D=20 (float64) with grad_norm / step_norm / learning_rate channels, as in FACTS.md. Methods run in
   small interleaved blocks (order rotated each round, so background load hits them alike); medians of
   wall time and of the process's CPU time (robust to other processes' load) are reported.
2. Aggregation: 10,000 complete runs (written with ``save_batch``), ``Experiment.aggregate()`` of the summary
   scalars, with two meta keys, with 1 reader thread, and written to Parquet.

Run: ``python benchmarks/bench_artifacts.py [--runs-per-round 40] [--rounds 25] [--aggregate 10000]
[--layout none|d20|both]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def bench_layout(gn):
    """A D=20 layout as a campaign run carries one: a position pair, a separation, a positive flux, 16 Zernikes
    with labels (the parameter summary then writes estimate.<label> for its 20 components)."""
    return gn.Layout({"position": (2,), "separation": (), "flux": (), "zernikes": (16,)},
                     transforms={"flux": "positive"},
                     units={"position": "µas", "separation": "µas", "zernikes": "nm"},
                     labels={"position": ["x", "y"], "zernikes": [f"Z{j}" for j in range(4, 20)]})


def make_trace(gn, rng, T=1000, D=20, batch=None, layout=None):
    lead = (T,) if batch is None else (batch, T)
    step = np.arange(T, dtype=np.int32)
    kw = dict(
        kind="optimization",
        theta=rng.normal(size=lead + (D,)),
        loss=rng.normal(size=lead),
        stats={k: rng.normal(size=lead) for k in ("grad_norm", "step_norm", "learning_rate")},
        step=step if batch is None else np.tile(step, (batch, 1)),
        num_grad_evals=T if batch is None else np.full(batch, T),
        status="max_steps" if batch is None else ("max_steps",) * batch,
        runtime_s=0.5,
        info={"engine": "gd", "learning_rate": 0.1, "num_steps": T - 1},
        layout=layout,
    )
    if batch is not None:
        kw["extras"] = {"num_rows": np.full(batch, T)}
    return gn.Trace(**kw)


def raw_writer(trace, meta_doc, summary_doc):
    arrays = {
        "theta": trace.theta,
        "loss": trace.loss,
        "step": trace.step,
        **{f"stats/{k}": v for k, v in trace.stats.items()},
    }

    def put(path: Path, data: bytes):
        tmp = path.with_name("." + path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def write(d: Path):
        d.mkdir()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        put(d / "trace.npz", buf.getvalue())
        put(d / "meta.json", json.dumps(meta_doc, indent=1).encode())
        put(d / "summary.json", json.dumps(summary_doc, indent=1).encode())

    return write


def bench_writes(gn, root: Path, per_round: int, rounds: int, layout=None) -> dict[str, tuple[float, float]]:
    """(median wall, median CPU) seconds per run of each method, interleaved in small blocks, order rotated.

    CPU time (user + system of this process: the Python work and the system calls) is robust to other
    processes' load on a shared machine; wall time also counts waiting for the disk and for a core. With a
    ``layout`` the runs carry it (meta.json its index map, summary.json the per-parameter estimates) and the
    raw baseline writes the same documents."""
    rng = np.random.default_rng(0)
    trace = make_trace(gn, rng, layout=layout)
    batch = make_trace(gn, rng, batch=per_round, layout=layout)
    ref = gn.save_run(root / "ref", trace)
    meta_doc = json.loads((ref / "meta.json").read_text())
    summary_doc = json.loads((ref / "summary.json").read_text())
    raw = raw_writer(trace, meta_doc, summary_doc)
    for sub in ("raw", "plain"):
        (root / sub).mkdir()
    exp = gn.Experiment(root / "exp", manifest={"description": "write benchmark"})
    exp_ids = gn.Experiment(root / "exp_ids", manifest={"description": "write benchmark, given ids"})
    methods = {
        "raw numpy+json (temp+replace)": lambda r: [raw(root / "raw" / f"{r}-{i}") for i in range(per_round)],
        "Experiment.save (generated ids)": lambda r: [exp.save(None, trace) for _ in range(per_round)],
        "Experiment.save (given ids)": lambda r: [
            exp_ids.save(f"s-{r}-{i}", trace) for i in range(per_round)
        ],
        "Experiment.save_batch (per run)": lambda r: exp.save_batch(batch),
        "gn.save_run": lambda r: [gn.save_run(root / "plain" / f"{r}-{i}", trace) for i in range(per_round)],
    }
    names = list(methods)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t, c = time.perf_counter(), time.process_time()
            methods[k](r)
            cpu[k].append((time.process_time() - c) / per_round)
            wall[k].append((time.perf_counter() - t) / per_round)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in names}


def bench_aggregate(gn, root: Path, n: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    exp = gn.Experiment(root / "agg", manifest={"description": "aggregation benchmark"})
    chunk = 1000
    t = time.perf_counter()
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        tr = make_trace(gn, rng, T=20, D=5, batch=b)
        exp.save_batch(tr, prefix=f"c{start // chunk:03d}", meta=[{"seed": start + i} for i in range(b)])
    write_s = time.perf_counter() - t
    out: dict[str, float] = {f"write {n} runs with save_batch (s)": write_s}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for label, kw in (
            (f"aggregate {n} runs, summary only (s)", {}),
            (f"aggregate {n} runs, 1 reader thread (s)", {"workers": 1}),
            (f"aggregate {n} runs + 2 meta keys (s)", {"meta_keys": ["user.seed", "batch.index"]}),
            (f"aggregate {n} runs -> parquet (s)", {"output": root / "table.parquet"}),
        ):
            reps = []
            for _ in range(3):
                t = time.perf_counter()
                df = exp.aggregate(**kw)
                reps.append(time.perf_counter() - t)
            assert len(df) == n, len(df)
            out[label] = min(reps)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs-per-round", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--aggregate", type=int, default=10_000)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir, removed after)")
    ap.add_argument("--layout", choices=("none", "d20", "both"), default="both",
                    help="runs without a layout, with a D=20 layout (parameter summaries, index map), or both")
    args = ap.parse_args()
    import gnomon as gn

    root = Path(tempfile.mkdtemp(prefix="gnomon-bench-", dir=args.dir))
    try:
        layouts = {"none": [None], "d20": [bench_layout(gn)], "both": [None, bench_layout(gn)]}[args.layout]
        for k, lay in enumerate(layouts if args.rounds else []):
            w = bench_writes(gn, root / f"w{k}", args.runs_per_round, args.rounds, layout=lay)
            base_wall, base_cpu = w["raw numpy+json (temp+replace)"]
            print(
                f"per-run write cost, T=1000 D=20 float64, {'no layout' if lay is None else 'a D=20 layout'} "
                f"({args.rounds} interleaved blocks × {args.runs_per_round} runs per method; medians of wall and "
                "of process CPU time):"
            )
            for k, (wt, ct) in w.items():
                print(
                    f"  {k:34s} wall {wt * 1e3:6.3f} ms/run ({wt / base_wall:4.2f}× raw)   "
                    f"cpu {ct * 1e3:6.3f} ms/run ({ct / base_cpu:4.2f}× raw)   goal ≤ 1.5×"
                )
        if args.aggregate:
            a = bench_aggregate(gn, root, args.aggregate)
            for k, v in a.items():
                print(f"  {k:44s} {v:7.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
