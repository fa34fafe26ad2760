"""Reliability of experiments under crashes and concurrency (issue: "Reliability tests").

* SIGKILL a writer process in the middle of a campaign: every run the aggregate lists loads, incomplete runs
  are reported, resuming finishes the rest, nothing is done twice.
* Four writer processes on one experiment at once: no run lost, manifest intact, contested ids won once,
  a shared campaign's items each fitted exactly once.
* Older schema versions read, newer ones refused (runs here; manifests in test_experiment.py).
* A Dask LocalCluster campaign gives the same table as a process pool (and as a serial run).

Worker processes import this module (spawned process pools unpickle ``fit_quadratic`` from it; the scripts
import ``item_trace``), so its top level stays light.
"""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gnomon as gn

TESTS = Path(__file__).parent
MANIFEST = {"description": "reliability", "sweep": {"seed": "0..39"}, "datasets": ["synthetic"]}


def item_trace(item: int, T: int = 300, D: int = 10):
    """A deterministic 'fit result' for an item (no JAX: the point here is the file handling)."""
    rng = np.random.default_rng(item)
    return gn.Trace(
        kind="optimization",
        theta=rng.normal(size=(T, D)),
        loss=np.sort(rng.normal(size=T))[::-1],
        step=np.arange(T, dtype=np.int32),
        stats={"grad_norm": rng.uniform(size=T)},
        status="converged",
        num_grad_evals=T + item,
        info={"engine": "test"},
    )


def logged_fit(log: str, delay: float):
    def fit(item):
        with open(log, "a") as fh:  # O_APPEND: one whole line per call, from any process
            fh.write(f"{os.getpid()} {item}\n")
        time.sleep(delay)
        return item_trace(item), {"item": item}

    return fit


def calls(log: Path) -> list[int]:
    return sorted(int(line.split()[1]) for line in log.read_text().splitlines()) if log.exists() else []


SCRIPT = r"""
import json, os, sys, time
sys.path.insert(0, {tests!r})
from test_reliability import MANIFEST, item_trace, logged_fit
import gnomon as gn

mode, path, log = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "campaign":
    exp = gn.Experiment(path, manifest=MANIFEST)
    exp.run_many(logged_fit(log, 0.03), list(range(int(sys.argv[4]))))
elif mode == "four":
    me = int(sys.argv[4])
    open(os.path.join(os.path.dirname(path), f"ready-{{me}}"), "w").close()
    while not os.path.exists(os.path.join(os.path.dirname(path), "go")):
        time.sleep(0.005)
    exp = gn.Experiment(path, manifest=MANIFEST)          # four creators at once
    out = {{"generated": [], "won": [], "lost": 0}}
    for i in range(15):
        out["generated"].append(exp.save(None, item_trace(1000 * me + i, T=50)).name)
    for j in range(10):
        try:
            d = exp.new_run(f"shared-{{j}}")
        except FileExistsError:
            out["lost"] += 1
            continue
        exp.save(d.name, item_trace(j, T=50), meta={{"writer": me}})
        out["won"].append(d.name)
    res = exp.run_many(logged_fit(log, 0.01), list(range(12)), run_id="camp-{{item}}")
    out["campaign"] = {{"completed": res.completed, "skipped": res.skipped, "busy": sorted(res.busy),
                        "failed": res.failed}}
    print(json.dumps(out))
"""


def script(tmp_path: Path) -> Path:
    p = tmp_path / "writer.py"
    p.write_text(SCRIPT.format(tests=str(TESTS)))
    return p


def test_sigkill_mid_campaign_then_resume(tmp_path):
    N = 40
    path, log = tmp_path / "exp", tmp_path / "calls.log"
    proc = subprocess.Popen([sys.executable, str(script(tmp_path)), "campaign", str(path), str(log), str(N)])
    runs = path / "runs"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer made no progress"
            # runs are staged in hidden folders and renamed into place: a staged one is not a run yet
            done = [
                d
                for d in (os.listdir(runs) if runs.exists() else [])
                if not d.startswith(".") and (runs / d / "summary.json").exists()
            ]
            if len(done) >= 8:
                break
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    exp = gn.Experiment(path, create=False)
    assert exp.manifest["description"] == "reliability"
    before = set(exp.runs())
    assert 8 <= len(before) < N
    df = exp.aggregate(meta_keys=["campaign.index"], on_problem="ignore")
    assert set(df["run_id"]) == before
    for rid, idx in zip(df["run_id"], df["campaign.index"]):  # every listed run loads, with the right content
        run = exp.load(rid)
        assert rid == f"item-{idx:06d}"
        np.testing.assert_array_equal(run.trace.theta, item_trace(idx).theta)
    incomplete = exp.incomplete_runs(detail=True)
    if any(r["claim"] is None for r in incomplete):
        time.sleep(2.1)  # killed between creating the run and claiming it (µs): free after EMPTY_GRACE_S
        incomplete = exp.incomplete_runs(detail=True)
    assert len(incomplete) <= 1 and all(r["state"] == "abandoned" for r in incomplete)  # its writer is dead
    assert sorted(p["run_id"] for p in df.attrs["problems"]) == [r["run_id"] for r in incomplete]
    called_before = calls(log)
    assert set(called_before) >= {int(r[5:]) for r in before}

    # resume: only the missing items run, each once; the killed item is redone from scratch
    log2 = tmp_path / "calls2.log"
    res = exp.run_many(logged_fit(str(log2), 0.0), list(range(N)))
    assert res.ok and set(res.skipped) == before and len(res.completed) == N - len(before)
    assert calls(log2) == sorted(set(range(N)) - {int(r[5:]) for r in before})
    assert exp.runs() == [f"item-{i:06d}" for i in range(N)] and exp.incomplete_runs() == []
    assert sorted(os.listdir(exp.runs_dir)) == exp.runs()  # no duplicates, no leftovers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = exp.aggregate(meta_keys=["user.item"])
    assert list(df["user.item"]) == list(range(N)) and df.attrs["problems"] == []
    for i in range(N):
        assert sorted(os.listdir(exp.run_dir(f"item-{i:06d}"))) == ["meta.json", "summary.json", "trace.npz"]


def test_four_writer_processes_at_once(tmp_path):
    path, log = tmp_path / "exp", tmp_path / "calls.log"
    s = script(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, str(s), "four", str(path), str(log), str(k)], stdout=subprocess.PIPE, text=True
        )
        for k in range(4)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready-{k}").exists() for k in range(4)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert all(p.returncode == 0 for p in procs)

    exp = gn.Experiment(path, create=False)
    m = json.loads((path / "manifest.json").read_text())  # intact, created once, what everyone asked for
    assert m == exp.manifest and m["description"] == "reliability" and m["sweep"] == MANIFEST["sweep"]
    assert sorted(os.listdir(path)) == ["manifest.json", "runs"]
    generated = [g for o in outs for g in o["generated"]]
    assert len(generated) == 60 and len(set(generated)) == 60
    won = sorted(w for o in outs for w in o["won"])
    assert won == [f"shared-{j}" for j in range(10)] and sum(o["lost"] for o in outs) == 30
    for w in won:  # each contested run holds its single winner's write
        writer = next(k for k, o in enumerate(outs) if w in o["won"])
        assert exp.load(w).meta["user"] == {"writer": writer}
    done = sorted(r for o in outs for r in o["campaign"]["completed"])
    assert done == sorted(f"camp-{i}" for i in range(12)) and not any(o["campaign"]["failed"] for o in outs)
    assert calls(log) == list(range(12))  # every campaign item fitted exactly once across the processes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = exp.aggregate()
    assert len(df) == 60 + 10 + 12 and exp.incomplete_runs() == []
    assert set(df["run_id"]) == set(generated) | set(won) | {f"camp-{i}" for i in range(12)}


def test_old_run_formats_read_new_refused(tmp_path):
    """A minimal run as an older writer produced it (fewer keys) loads and aggregates with <NA> for what it
    lacks; a run from a newer gnomon is refused by load and reported by aggregate."""
    exp = gn.Experiment(tmp_path / "e")
    exp.save("current", item_trace(1, T=5))
    old = exp.runs_dir / "old"
    old.mkdir()
    np.savez(old / "trace.npz", theta=np.zeros((3, 2)), loss=np.array([3.0, 2.0, 1.0]))
    (old / "meta.json").write_text(
        json.dumps({"schema_version": 1, "kind": "optimization", "theta": {"dim": 2}})
    )
    (old / "summary.json").write_text(
        json.dumps({"schema_version": 1, "final_loss": 1.0, "status": "converged"})
    )
    run = exp.load("old")
    assert run.trace.dim == 2 and run.summary["final_loss"] == 1.0
    df = exp.aggregate(meta_keys=["theta.layout_hash", "theta.dim"])
    row = df.set_index("run_id").loc["old"]
    assert row["final_loss"] == 1.0 and row["status"] == "converged" and row["theta.dim"] == 2
    assert row["num_grad_evals"] is pd.NA and pd.isna(row["theta.layout_hash"])
    new = exp.runs_dir / "new"
    new.mkdir()
    for f in ("trace.npz", "meta.json"):
        (new / f).write_bytes((exp.runs_dir / "current" / f).read_bytes())
    (new / "summary.json").write_text(json.dumps({"schema_version": 3, "final_loss": 1.0}))
    with pytest.raises(
        gn.ArtifactError, match=r"new/summary\.json: schema_version 3 is newer .* upgrade gnomon"
    ):
        exp.load("new")
    with pytest.warns(UserWarning, match="1 newer_schema"):
        df = exp.aggregate()
    assert sorted(df["run_id"]) == ["current", "old"]


# ---------------------------------------------------------------------------------------------- executors
def _quadratic(theta):
    import jax.numpy as jnp

    return 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * (theta - 1.0) ** 2)


def fit_quadratic(item):
    """A real (tiny) gnomon fit; module-level so that process pools and Dask can ship it."""
    import jax.numpy as jnp

    tr = gn.run_simple_gd(
        _quadratic, jnp.asarray(item["start"], jnp.float32), learning_rate=0.2, num_steps=30
    )
    return tr, {"start": item["start"]}


def _table(exp):
    df = exp.aggregate(meta_keys=["user.start", "campaign.index"])
    return df.drop(columns=["runtime_s", "written_utc_unix", "compile_s", "run_s"], errors="ignore")  # timings vary


def test_dask_local_cluster_campaign_equals_process_pool(tmp_path):
    distributed = pytest.importorskip("distributed")
    items = [{"start": [float(i), -float(i)]} for i in range(6)]
    serial = gn.Experiment(tmp_path / "serial")
    assert serial.run_many(fit_quadratic, items).ok
    pool_exp = gn.Experiment(tmp_path / "pool")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        res = pool_exp.run_many(fit_quadratic, items, executor=pool)
    assert res.ok and len(res.completed) == 6, res.failed
    dask_exp = gn.Experiment(tmp_path / "dask")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dask's own deprecation chatter
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            res = dask_exp.run_many(fit_quadratic, items, executor=client.get_executor())
    assert res.ok and len(res.completed) == 6, res.failed
    ref = _table(serial)
    assert len(ref) == 6 and ref["converged"].notna().all()
    pd.testing.assert_frame_equal(_table(pool_exp), ref)
    pd.testing.assert_frame_equal(_table(dask_exp), ref)
    # and the fits are real: the loss decreased towards the minimum at θ = (1, 1)
    assert (ref.loc[1:, "final_loss"] < 1e-3 * ref.loc[1:, "initial_loss"]).all()


def test_a_dead_writers_claim_on_a_complete_run_is_cleared(tmp_path):
    """A writer killed between writing summary.json and releasing its claim leaves a complete run with a claim
    file: the next campaign skips the run and removes the dead claim (a live writer's claim stays)."""
    from gnomon.experiment.run_writer import acquire_run
    from gnomon.io import runids

    d = tmp_path / "run"
    d.mkdir()
    (d / "summary.json").write_text("{}")
    dead = {"token": "t", "host": runids._HOST, "pid": 2**22 + 4321, "start": 0, "created_unix": time.time()}
    (d / runids.CLAIM_FILE).write_text(json.dumps(dead))
    assert acquire_run(d)[0] == "complete" and not (d / runids.CLAIM_FILE).exists()
    live = {**dead, "pid": os.getpid(), "start": None}  # this process: alive
    (d / runids.CLAIM_FILE).write_text(json.dumps(live))
    assert acquire_run(d)[0] == "complete" and (d / runids.CLAIM_FILE).exists()
