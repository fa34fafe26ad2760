"""Experiments: manifests, run ids, save / save_batch, diagnostics files, listing and sweeping."""

import json
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gnomon as gn
from gnomon.experiment import manifest as manifest_mod
from gnomon.io.diagnostics import every_rows, read_diag_steps
from gnomon.io.runids import CLAIM_FILE, check_run_id


def opt_trace(T=12, D=3, seed=0, layout=None, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return gn.Trace(
        kind="optimization",
        theta=rng.normal(size=(T, D)).astype(dtype),
        loss=rng.normal(size=T).astype(dtype),
        step=np.arange(T, dtype=np.int32) * 2,
        stats={"grad_norm": rng.uniform(size=T).astype(dtype), "step_norm": rng.uniform(size=T)},
        status="converged",
        num_grad_evals=2 * T,
        runtime_s=0.125,
        info={"engine": "gd", "learning_rate": 0.1},
        layout=layout,
    )


def batch_trace(B=5, T=9, D=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = np.array([T - (i % 3) for i in range(B)])
    return gn.Trace(
        kind="optimization",
        theta=rng.normal(size=(B, T, D)),
        loss=rng.normal(size=(B, T)),
        step=np.tile(np.arange(T, dtype=np.int32), (B, 1)),
        stats={"grad_norm": rng.uniform(size=(B, T))},
        status=tuple("converged" if i % 2 else "max_steps" for i in range(B)),
        num_grad_evals=np.arange(B) + 10,
        runtime_s=1.5,
        info={"engine": "adam", "learning_rate": 0.01},
        extras={"num_rows": rows},
    )


# ---------------------------------------------------------------------------------------------- manifest
def test_manifest_created_once_and_never_clobbered(tmp_path):
    m = {"description": "sweep of lr", "sweep": {"lr": [0.1, 0.2]}, "datasets": ["epoch-1"], "note": 3}
    exp = gn.Experiment(tmp_path / "e", manifest=m)
    doc = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert doc["schema_version"] == manifest_mod.MANIFEST_SCHEMA_VERSION and doc["kind"] == "gnomon.experiment"
    assert doc["description"] == "sweep of lr" and doc["sweep"] == {"lr": [0.1, 0.2]} and doc["note"] == 3
    assert doc["time_series"] is None and doc["gnomon_version"] == gn.__version__ and doc["created_utc"]
    assert exp.manifest == doc
    before = (tmp_path / "e" / "manifest.json").read_bytes()
    again = gn.Experiment(tmp_path / "e")  # open: manifest untouched
    same = gn.Experiment(tmp_path / "e", manifest={"description": "sweep of lr"})  # agreeing keys: fine
    assert again.manifest == doc == same.manifest
    with pytest.raises(ValueError, match="already exists with description='sweep of lr'"):
        gn.Experiment(tmp_path / "e", manifest={"description": "something else"})
    assert (tmp_path / "e" / "manifest.json").read_bytes() == before
    with pytest.raises(ValueError, match="set by gnomon"):
        gn.Experiment(tmp_path / "f", manifest={"created_utc": "yesterday"})
    with pytest.raises(ValueError, match="JSON-able"):
        gn.Experiment(tmp_path / "g", manifest={"x": object()})
    with pytest.raises(FileNotFoundError, match="no gnomon experiment"):
        gn.Experiment(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_concurrent_creators_agree_on_one_manifest(tmp_path):
    """Threads racing to create the experiment: one manifest, all see the same document."""
    seen, errors = [], []
    barrier = threading.Barrier(8)

    def create(i):
        barrier.wait()
        try:
            seen.append(gn.Experiment(tmp_path / "e", manifest={"description": "race"}).manifest)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(seen) == 8 and all(s == seen[0] for s in seen)
    assert sorted(os.listdir(tmp_path / "e")) == ["manifest.json", "runs"]  # no temp files left


def test_manifest_schema_versions(tmp_path, monkeypatch):
    gn.Experiment(tmp_path / "e", manifest={"description": "v1"})
    mpath = tmp_path / "e" / "manifest.json"
    # a newer gnomon reads today's (older) manifest, through its upgrade chain
    calls = []
    monkeypatch.setattr(manifest_mod, "MANIFEST_SCHEMA_VERSION", 2)
    monkeypatch.setitem(manifest_mod._MANIFEST_UPGRADES, 1, lambda d: calls.append(1) or {**d, "upgraded": True})
    exp = gn.Experiment(tmp_path / "e")
    assert calls == [1] and exp.manifest["upgraded"] and exp.manifest["description"] == "v1"
    assert exp.manifest["schema_version"] == 2
    assert json.loads(mpath.read_text())["schema_version"] == 1  # reading never rewrites
    monkeypatch.undo()
    # a manifest from a newer gnomon is refused with a clear error
    doc = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**doc, "schema_version": 7}))
    with pytest.raises(
        gn.ArtifactError, match=r"manifest\.json: schema_version 7 is newer .* upgrade gnomon"
    ):
        gn.Experiment(tmp_path / "e")


# ---------------------------------------------------------------------------------------------- run ids
@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        "a/b",
        "a\\b",
        "../x",
        "x..y",
        ".hidden",
        "-x",
        "a b",
        "é",
        "nul",
        "COM1.txt",
        "x" * 129,
        "a\0b",
        5,
        1.5,
    ],
)
def test_unsafe_run_ids_rejected(tmp_path, bad):
    exp = gn.Experiment(tmp_path / "e")
    with pytest.raises(ValueError, match="run id"):
        exp.new_run(bad)
    with pytest.raises(ValueError, match="run id"):
        exp.save(bad, opt_trace())
    assert os.listdir(exp.runs_dir) == []


@given(st.text(alphabet=st.characters(codec="ascii"), min_size=0, max_size=140))
def test_run_id_rule(s):
    """Accepted ids are exactly the plain names: they stay inside runs/ and name one directory."""
    try:
        check_run_id(s)
    except ValueError:
        ok = False
    else:
        ok = True
    plain = (
        0 < len(s) <= 128
        and s[0].isalnum()
        and ".." not in s
        and all(c.isalnum() or c in "._-" for c in s)
        and s.split(".")[0].lower()
        not in {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
    )
    assert ok == plain
    if ok:
        assert os.path.basename(s) == s and os.path.normpath(os.path.join("runs", s)) == os.path.join(
            "runs", s
        )


def test_new_run_ids_unique_and_claims_exclusive(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    ids = {exp.new_run().name for _ in range(200)}
    assert len(ids) == 200 and all(check_run_id(i) for i in ids)
    d = exp.new_run("fixed")
    assert (d / CLAIM_FILE).exists()
    with pytest.raises(FileExistsError, match=r"'fixed' is already taken .* \(being written by pid"):
        exp.new_run("fixed")
    exp.save("fixed", opt_trace())  # the creator (this process) may write it
    assert not (d / CLAIM_FILE).exists()
    with pytest.raises(FileExistsError, match=r"already taken .*\(a complete run\)"):
        exp.new_run("fixed")
    with pytest.raises(FileExistsError, match="already complete; pass overwrite=True"):
        exp.save("fixed", opt_trace())
    exp.save("fixed", opt_trace(seed=5), overwrite=True)
    np.testing.assert_array_equal(exp.load("fixed").trace.theta, opt_trace(seed=5).theta)


def test_new_run_race_threads_one_winner(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    wins, losses = [], []
    barrier = threading.Barrier(6)

    def claim():
        barrier.wait()
        try:
            wins.append(exp.new_run("contested"))
        except FileExistsError as exc:
            losses.append(str(exc))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 5 and all("already taken" in m for m in losses)


def test_save_same_id_race_one_winner(tmp_path):
    """Threads saving the same (new) id at once: one writes it, the others get a FileExistsError."""
    exp = gn.Experiment(tmp_path / "e")
    ok, errors = [], []
    barrier = threading.Barrier(6)

    def save(i):
        barrier.wait()
        try:
            exp.save("same", opt_trace(seed=i))
            ok.append(i)
        except FileExistsError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 1 and len(errors) == 5
    assert all("already complete" in m or "being written" in m for m in errors)
    np.testing.assert_array_equal(exp.load("same").trace.theta, opt_trace(seed=ok[0]).theta)
    # an unclaimed incomplete run (a writer that crashed) is busy for a grace period, then free
    os.remove(exp.run_dir("same") / "summary.json")
    with pytest.raises(FileExistsError, match="being written without a claim"):
        exp.save("same", opt_trace())
    for p in [exp.run_dir("same"), *exp.run_dir("same").iterdir()]:
        os.utime(p, (time.time() - 120, time.time() - 120))
    exp.save("same", opt_trace(seed=9))
    assert exp.load("same").summary["num_grad_evals"] == opt_trace(seed=9).num_grad_evals
    # an empty unclaimed directory (a writer killed between mkdir and its first file) is free after 2 s
    os.mkdir(exp.run_dir("empty"))
    with pytest.raises(FileExistsError, match="free after 2 s"):
        exp.save("empty", opt_trace())
    os.utime(exp.run_dir("empty"), (time.time() - 3, time.time() - 3))
    exp.save("empty", opt_trace())


# ---------------------------------------------------------------------------------------------- writing
def test_save_round_trip_and_same_files_as_save_run(tmp_path):
    """The experiment's writer produces the same files and content as the reference save_run."""
    layout = gn.Layout({"x": (), "z": (2,)}, units={"x": "arcsec"})
    rng = np.random.default_rng(1)
    sampling = gn.Trace(
        kind="sampling",
        theta=rng.normal(size=(2, 6, 3)),
        log_prob=rng.normal(size=(2, 6)),
        stats={"diverging": np.zeros((2, 6), bool), "step_size": np.full((2, 6), 0.3)},
        warmup={
            "theta": rng.normal(size=(2, 4, 3)),
            "log_prob": rng.normal(size=(2, 4)),
            "stats": {"step_size": rng.uniform(size=(2, 4))},
        },
        status="sampled",
        num_grad_evals=99,
        info={"engine": "nuts"},
        layout=layout,
        extras={"note": "x", "arr": np.zeros(3)},
    )
    cases = {
        "f32": opt_trace(layout=layout, dtype=np.float32),
        "f64": opt_trace(layout=layout),
        "sampling": sampling,
    }
    for name_, tr in cases.items():
        exp = gn.Experiment(tmp_path / f"e{name_}")
        kw = dict(
            meta={"seed": 3, "bad": np.inf},
            summary={"score": 1.5},
            extra_arrays={"mine": {"a": np.arange(3)}},
            extra_meta={"section": {"k": [1, 2]}},
        )
        d = exp.save("r1", tr, **kw)
        ref = gn.save_run(tmp_path / f"ref{name_}" / "r1", tr, **kw)
        assert (
            sorted(os.listdir(d))
            == sorted(os.listdir(ref))
            == ["meta.json", "mine.npz", "summary.json", "trace.npz"]
        )
        for name in ("meta.json", "summary.json"):
            a, b = json.loads((d / name).read_text()), json.loads((ref / name).read_text())
            for k in ("created_utc", "written_utc_unix"):
                a.pop(k, None), b.pop(k, None)
            assert a == b, name
        for f in ("trace.npz", "mine.npz"):
            with np.load(d / f) as za, np.load(ref / f) as zb:
                assert sorted(za.files) == sorted(zb.files)
                for k in za.files:
                    assert za[k].dtype == zb[k].dtype
                    np.testing.assert_array_equal(za[k], zb[k])
        run = exp.load("r1")
        assert run.layout == layout and run.meta["user"]["bad"] == np.inf and run.summary["score"] == 1.5
        np.testing.assert_array_equal(run.trace.theta, tr.theta)
    gen = exp.save(None, tr)
    assert check_run_id(gen.name) and exp.load(gen.name).summary["run_id"] == gen.name


def test_save_batch_writes_each_member(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    bt = batch_trace()
    layout = gn.Layout({"a": (3,)})
    dirs = exp.save_batch(
        bt, layout=layout, meta=[{"seed": i} for i in range(5)], summary={"tag": "x"}, prefix="ens"
    )
    assert [d.name for d in dirs] == [f"ens-{i:03d}" for i in range(5)] and exp.runs() == [
        d.name for d in dirs
    ]
    for i, d in enumerate(dirs):
        run = exp.load(d.name)
        member = bt[i]
        n = int(bt.extras["num_rows"][i])
        assert len(run.trace) == n
        np.testing.assert_array_equal(run.trace.theta, bt.theta[i, :n])
        np.testing.assert_array_equal(run.trace.stats["grad_norm"], bt.stats["grad_norm"][i, :n])
        assert run.trace.status == member.status and run.summary["num_grad_evals"] == 10 + i
        assert run.summary["final_loss"] == pytest.approx(float(bt.loss[i, n - 1]))
        assert run.meta["user"] == {"seed": i} and run.summary["tag"] == "x" and run.layout == layout
        assert run.meta["batch"] == {"batch_id": "ens", "index": i, "size": 5}
        assert run.meta["engine"]["engine"] == "adam" and not (d / CLAIM_FILE).exists()
    # taken ids: nothing is written, the error lists them
    with pytest.raises(FileExistsError, match=r"already taken .*\['ens-002'\]"):
        exp.save_batch(bt, run_ids=["new0", "new1", "ens-002", "new3", "new4"])
    assert exp.runs() == [d.name for d in dirs] and exp.incomplete_runs() == []
    with pytest.raises(ValueError, match="batched optimization Trace"):
        exp.save_batch(opt_trace())
    with pytest.raises(ValueError, match="distinct"):
        exp.save_batch(bt, run_ids=["a"] * 5)
    with pytest.raises(ValueError, match="5 mappings, got 2"):
        exp.save_batch(bt, meta=[{}, {}])
    with pytest.raises(ValueError, match="batched trace is B runs"):
        exp.save("one", bt)
    auto = exp.save_batch(bt)
    assert len({d.name for d in auto}) == 5 and all(check_run_id(d.name) for d in auto)


# ---------------------------------------------------------------------------------------------- diagnostics
def test_diagnostics_off_by_default_and_config_checked():
    cfg = gn.DiagnosticsConfig()
    assert not cfg.enabled and cfg.to_dict() == {
        "diag_steps_every": None,
        "grads_every": None,
        "signals": False,
        "curvature": False,
        "precond": False,
        "handoff": False,
    }
    assert gn.DiagnosticsConfig.from_dict(gn.DiagnosticsConfig(grads_every=3).to_dict()).grads_every == 3
    for bad in (
        {"diag_steps_every": 0},
        {"grads_every": 1.5},
        {"signals": "yes"},
        {"diag_steps_every": True},
    ):
        with pytest.raises(ValueError, match="DiagnosticsConfig"):
            gn.DiagnosticsConfig(**bad)
    with pytest.raises(ValueError, match="unknown option"):
        gn.DiagnosticsConfig.from_dict({"grad_every": 2})


@given(st.lists(st.integers(1, 5), min_size=1, max_size=40), st.integers(1, 12))
def test_every_rows_one_per_block(gaps, every):
    step = np.cumsum([0] + gaps)
    rows = every_rows(step, every)
    blocks = step[rows] // every
    assert rows[-1] == len(step) - 1 and rows[0] == 0
    # one row per block of `every` steps that holds a row (the last row may share a block)
    assert set(blocks) == set(step // every)
    assert len(rows) - (len(rows) > 1 and blocks[-1] == blocks[-2]) == len(set(step // every))


def test_all_diagnostics_files(tmp_path):
    layout = gn.Layout({"x": (), "s": ()}, transforms={"s": "positive"})
    a = jnp.array([1.0, 3.0])
    obj = gn.Objective.from_loss(lambda t: 0.5 * jnp.sum(a * t**2), layout)
    tr = gn.run_simple_gd(obj, jnp.array([1.0, -2.0]), learning_rate=0.1, num_steps=25, record_every=2,
                         channels="all")
    cfg = gn.DiagnosticsConfig(
        diag_steps_every=5, grads_every=10, signals=True, curvature=True, precond=True, handoff=True
    )

    class Curv:  # the attributes a gnomon.Curvature exposes
        diag = np.array([1.0, 3.0])
        matrix = None
        method = "exact"
        num_grad_evals = 4

    exp = gn.Experiment(tmp_path / "e", diagnostics=cfg)
    with pytest.raises(ValueError, match=r"DiagnosticsConfig\(curvature=True\) but no curvature was given"):
        exp.save("missing", tr, objective=obj)
    exp.save(
        "r",
        tr,
        objective=obj,
        curvature=Curv(),
        precond=0.1 / Curv.diag,
        handoff={"theta_star": np.asarray(tr.final_theta), "step_size": np.float64(0.5)},
    )
    run = exp.load("r")
    assert {"grads", "signals", "curvature", "precond", "handoff"} <= set(run.files)
    step = np.asarray(tr.step)
    # diag_steps: the first recorded row of each 5-step block, plus the final row; values equal the trace's
    recs = exp.load_diag_steps("r")
    rows = every_rows(step, 5)
    assert [r["step"] for r in recs] == step[rows].tolist()
    np.testing.assert_allclose([r["loss"] for r in recs], np.asarray(tr.loss)[rows], rtol=1e-6)
    np.testing.assert_allclose(
        [r["grad_norm"] for r in recs], np.asarray(tr.stats["grad_norm"])[rows], rtol=1e-6
    )
    # grads: recomputed from the objective, equal to the closed form a ⊙ θ, and counted
    g = run.load_extra("grads")
    np.testing.assert_array_equal(g["step"], step[every_rows(step, 10)])
    theta_rows = np.asarray(tr.theta)[every_rows(step, 10)]
    np.testing.assert_allclose(g["grad"], np.asarray(a) * theta_rows, rtol=1e-6)
    d = run.meta["diagnostics"]
    assert d["grads_source"] == "objective" and d["grads_num_grad_evals"] == len(theta_rows)
    assert d["config"] == cfg.to_dict() and "diag_steps.jsonl" in d["files"] and "grads.npz" in d["files"]
    # signals: constrained blocks (s = exp(θ_s)) per row; curvature / precond / handoff stored with meta
    s = run.load_extra("signals")
    np.testing.assert_allclose(s["s"], np.exp(np.asarray(tr.theta)[:, 1]), rtol=1e-6)
    np.testing.assert_array_equal(s["step"], step)
    np.testing.assert_array_equal(run.load_extra("curvature")["diag"], Curv.diag)
    assert d["curvature"] == {"method": "exact", "num_grad_evals": 4}
    np.testing.assert_allclose(run.load_extra("precond")["lr_vec"], 0.1 / Curv.diag)
    assert run.load_extra("handoff")["step_size"] == 0.5
    # switches off: sources are ignored, nothing extra is written
    exp.save("plain", tr, diagnostics=gn.DiagnosticsConfig(), curvature=Curv())
    assert sorted(os.listdir(exp.run_dir("plain"))) == ["meta.json", "summary.json", "trace.npz"]


def test_grads_from_trace_channel_and_sampling_diag_steps(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    tr = opt_trace(T=7, D=2)
    grad = np.arange(14.0).reshape(7, 2)
    tr = gn.Trace(**{**tr.__dict__, "stats": {**tr.stats, "grad": grad}})
    exp.save("g", tr, diagnostics=gn.DiagnosticsConfig(grads_every=4))
    g = exp.load("g").load_extra("grads")
    rows = every_rows(np.asarray(tr.step), 4)
    np.testing.assert_array_equal(g["grad"], grad[rows])
    assert exp.load("g").meta["diagnostics"]["grads_source"] == "trace"
    with pytest.raises(ValueError, match="pass objective="):
        exp.save("g2", opt_trace(), diagnostics=gn.DiagnosticsConfig(grads_every=4))
    rng = np.random.default_rng(0)
    st_ = gn.Trace(
        kind="sampling",
        theta=rng.normal(size=(2, 10, 3)),
        log_prob=rng.normal(size=(2, 10)),
        stats={"diverging": np.zeros((2, 10), bool)},
        status="sampled",
        num_grad_evals=40,
    )
    exp.save("s", st_, diagnostics=gn.DiagnosticsConfig(diag_steps_every=4))
    recs = exp.load_diag_steps("s")
    assert [(r["draw"], r["chain"]) for r in recs] == [(j, c) for j in (0, 4, 8, 9) for c in (0, 1)]
    assert recs[3]["log_prob"] == pytest.approx(st_.log_prob[1, 4]) and recs[0]["diverging"] is False


def test_torn_diag_steps_line_is_skipped(tmp_path):
    p = tmp_path / "diag_steps.jsonl"
    p.write_text('{"step": 0, "loss": 1.0}\n{"step": 5, "loss": "NaN"}\n{"step": 10, "lo')
    recs = read_diag_steps(p)
    assert len(recs) == 2 and np.isnan(recs[1]["loss"])


# ---------------------------------------------------------------------------------------------- listing
def test_incomplete_runs_listed_and_swept(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    exp.save("done", opt_trace())
    live = exp.new_run("live")  # claimed by this (live) process
    os.mkdir(exp.runs_dir / "orphan")  # unclaimed, e.g. plain save_run interrupted
    (exp.runs_dir / "orphan" / "trace.npz").write_bytes(b"partial")
    dead = exp.runs_dir / "dead"
    os.mkdir(dead)
    (dead / CLAIM_FILE).write_text(
        json.dumps(
            {"host": os.uname().nodename, "pid": 2**22 + 12345, "start": 1, "created_unix": 0.0, "token": "x"}
        )
    )
    (exp.runs_dir / "done" / ".meta.json.tmp-123").write_text("orphan temp")
    old = exp.runs_dir / "old-orphan"
    os.mkdir(old)
    (old / "meta.json").write_text("{}")
    for p in (old / "meta.json", old):
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    assert exp.runs() == ["done"] and "done" in exp and "live" not in exp
    assert exp.incomplete_runs() == ["dead", "live", "old-orphan", "orphan"]
    states = {r["run_id"]: r["state"] for r in exp.incomplete_runs(detail=True)}
    # an unclaimed run that changed just now may still be written (save/save_batch claim nothing)
    assert states == {
        "dead": "abandoned",
        "live": "in_progress",
        "orphan": "in_progress",
        "old-orphan": "abandoned",
    }
    assert exp.sweep_incomplete(dry_run=True) == ["dead", "old-orphan"]
    assert exp.sweep_incomplete() == ["dead", "old-orphan"]
    assert exp.sweep_incomplete(min_age_s=0) == ["orphan"]
    assert exp.incomplete_runs() == ["live"] and live.exists()
    assert sorted(os.listdir(exp.runs_dir / "done")) == ["meta.json", "summary.json", "trace.npz"]
    assert not [n for n in os.listdir(exp.runs_dir) if n.startswith(".")]


def test_x64_trace_saved_in_float64(tmp_path):
    with jax.enable_x64(True):
        tr = gn.run_simple_gd(
            lambda t: jnp.sum(t**2), jnp.ones(2, dtype=jnp.float64), learning_rate=0.1, num_steps=3
        )
        exp = gn.Experiment(tmp_path / "e")
        exp.save("r", tr)
    assert exp.load("r").trace.theta.dtype == np.float64


def test_optimize_batch_to_save_batch_with_per_member_curvature(tmp_path):
    """gn.optimize_batch → save_batch: each run is that member's fit, with its own curvature and lr_vec."""
    a = jnp.array([1.0, 10.0, 100.0])
    obj = gn.Objective.from_loss(lambda t, d: 0.5 * jnp.sum(a * (t - d) ** 2), 3, data=jnp.zeros(3))
    targets = jnp.arange(12.0).reshape(4, 3)
    bt = gn.optimize_batch(obj, jnp.ones((4, 3)), data=targets, method="preconditioned_gd", num_steps=5)
    exp = gn.Experiment(tmp_path / "e", diagnostics=gn.DiagnosticsConfig(curvature=True, precond=True))
    dirs = exp.save_batch(
        bt, run_ids=[f"t{i}" for i in range(4)], meta=[{"target": t} for t in targets.tolist()]
    )
    for i, d in enumerate(dirs):
        run = exp.load(d.name)
        np.testing.assert_array_equal(run.trace.theta, np.asarray(bt[i].theta))
        np.testing.assert_allclose(run.trace.final_theta, np.asarray(targets[i]), rtol=1e-5)  # Newton: exact
        np.testing.assert_allclose(
            run.load_extra("curvature")["diag"], np.asarray(a)
        )  # exact Hessian diagonal
        np.testing.assert_array_equal(run.load_extra("precond")["lr_vec"], np.asarray(bt.extras["lr_vec"][i]))
        assert (
            run.meta["engine"]["method"] == "preconditioned_gd"
            and run.meta["user"]["target"] == targets[i].tolist()
        )


def test_failed_writes_leave_nothing_behind(tmp_path):
    """A save that fails (bad diagnostics source, bad extra name) removes the run it created, so the id is
    immediately usable again; a failing batch keeps the members written before the failure."""
    exp = gn.Experiment(tmp_path / "e")
    with pytest.raises(ValueError, match="no curvature was given"):
        exp.save("r", opt_trace(), diagnostics=gn.DiagnosticsConfig(curvature=True))
    assert os.listdir(exp.runs_dir) == []
    exp.save("r", opt_trace())
    assert exp.runs() == ["r"]
    with pytest.raises(ValueError, match="batched trace is B runs"):
        exp.save("b", batch_trace())
    assert exp.runs() == ["r"] and exp.incomplete_runs() == []
    bt = batch_trace(B=4)
    metas = [{}, {}, {"x": object()}, {}]  # member 2 cannot be written
    with pytest.raises(TypeError, match="cannot store object"):
        exp.save_batch(bt, meta=metas, prefix="p")
    assert exp.runs() == ["p-000", "p-001", "r"] and exp.incomplete_runs() == []
