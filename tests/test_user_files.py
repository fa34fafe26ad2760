"""Nothing a user wrote is ever deleted (issue 18, item 5): every writer that replaces a run — ``save_run(...,
overwrite=True)``, ``Experiment.save(..., overwrite=True)``, ``save_batch``, campaigns resuming failed or
crashed runs, ``sweep_incomplete`` — removes gnomon's own files of the run only; the user's files and folders
beside and inside a run stay, byte for byte, and a crash mid-write still leaves a readable run."""

import json
import os
import socket
import time

import numpy as np
import pytest

import gnomon as gn
import gnomon.io.install as install_mod
from gnomon.io.runids import CLAIM_FILE
from gnomon.io.status import check_run

LAYOUT = gn.Layout({"x": (), "v": (2,)}, units={"x": "arcsec"})


def trace(seed=0, T=5):
    rng = np.random.default_rng(seed)
    return gn.Trace(kind="optimization", theta=rng.normal(size=(T, LAYOUT.size)), loss=rng.uniform(size=T) + seed,
                    step=np.arange(T, dtype=np.int32), status="converged", num_grad_evals=T, layout=LAYOUT)


def add_user_files(d):
    """Files and folders of the user's inside the run directory ``d``; returns a snapshot to compare with."""
    (d / "notes.txt").write_text("my notes")
    (d / "figs").mkdir()
    (d / "figs" / "fit.png").write_bytes(b"\x89PNG fake")
    (d / "figs" / "sub").mkdir()
    (d / "figs" / "sub" / "deep.txt").write_text("deep")
    (d / "mydata.npz").write_bytes(b"the user's own npz, not recorded by the run")
    return snapshot(d)


def snapshot(d):
    out = {}
    for root, dirs, files in os.walk(d):
        rel = os.path.relpath(root, d)
        if rel == ".":
            files = [f for f in files if f in ("notes.txt", "mydata.npz")]
            dirs[:] = [x for x in dirs if x == "figs"]
        for f in files:
            p = os.path.join(root, f)
            out[os.path.join(rel, f)] = open(p, "rb").read()
        for x in dirs:
            out[os.path.join(rel, x) + "/"] = None
    return out


def test_save_run_overwrite_keeps_user_files_and_replaces_the_run(tmp_path):
    d = gn.save_run(tmp_path / "r", trace(1), extra_arrays={"mine": {"a": np.ones(3)}})
    before = add_user_files(d)
    gn.save_run(d, trace(2), overwrite=True)
    assert snapshot(d) == before
    assert not (d / "mine.npz").exists()  # the old run's own extra file went with it
    np.testing.assert_array_equal(gn.load_run(d).trace.theta, trace(2).theta)
    assert check_run(d).ok
    # and again, with a diagnostics file of the documented names: still the user's files stay
    gn.save_run(d, trace(3), overwrite=True, extra_arrays={"curvature": {"diag": np.ones(3)}})
    assert snapshot(d) == before and (d / "curvature.npz").exists()
    # without overwrite a complete run is still refused, and nothing changes
    with pytest.raises(FileExistsError, match="overwrite=True"):
        gn.save_run(d, trace(4))
    assert snapshot(d) == before


def test_a_new_file_named_like_a_user_file_is_refused_before_anything_changes(tmp_path):
    d = gn.save_run(tmp_path / "r", trace(1))
    before = add_user_files(d)
    with pytest.raises(FileExistsError, match=r"holds mydata\.npz, which this run did not write.*never deletes"):
        gn.save_run(d, trace(2), overwrite=True, extra_arrays={"mydata": {"a": np.zeros(2)}})
    assert snapshot(d) == before
    np.testing.assert_array_equal(gn.load_run(d).trace.theta, trace(1).theta)  # the old run is still whole
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_crash_while_writing_keeps_the_old_run_and_user_files(tmp_path, monkeypatch):
    d = gn.save_run(tmp_path / "r", trace(1))
    before = add_user_files(d)
    import gnomon.io.run as run_mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(run_mod, "write_staged", boom)
    with pytest.raises(OSError, match="disk full"):
        gn.save_run(d, trace(2), overwrite=True)
    monkeypatch.undo()
    assert snapshot(d) == before and check_run(d).ok
    np.testing.assert_array_equal(gn.load_run(d).trace.theta, trace(1).theta)


def test_crash_while_installing_leaves_an_incomplete_run_that_names_its_files(tmp_path, monkeypatch):
    """A crash between moving files in: the run is incomplete (never corrupt, never two runs mixed), its
    meta.json is there, the next save completes it, and the user's files survive both."""
    d = gn.save_run(tmp_path / "r", trace(1), extra_arrays={"old": {"a": np.ones(2)}})
    before = add_user_files(d)
    real = os.replace
    moved = []

    def replace(src, dst):
        if os.path.dirname(str(dst)) == str(d) and str(dst).endswith("trace.npz"):
            raise OSError("power cut")
        if os.path.dirname(str(dst)) == str(d):
            moved.append(os.path.basename(str(dst)))
        return real(src, dst)

    monkeypatch.setattr(install_mod.os, "replace", replace)
    with pytest.raises(OSError, match="power cut"):
        gn.save_run(d, trace(2), overwrite=True)
    monkeypatch.undo()
    assert moved[0] == "meta.json"  # the new meta.json first: it names the run's files from then on
    st = check_run(d)
    assert st.state == "incomplete"
    assert snapshot(d) == before
    assert not (d / "old.npz").exists() and not (d / "summary.json").exists()
    assert json.loads((d / "meta.json").read_text())["files"] == ["trace.npz"]  # the new run's meta.json
    gn.save_run(d, trace(3))  # an interrupted attempt of this run: completed without overwrite
    assert check_run(d).ok and snapshot(d) == before
    np.testing.assert_array_equal(gn.load_run(d).trace.theta, trace(3).theta)


def test_experiment_save_overwrite_and_claimed_runs_keep_user_files(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    d = exp.save("r1", trace(1))
    before = add_user_files(d)
    exp.save("r1", trace(2), overwrite=True)
    assert snapshot(d) == before and check_run(d).ok
    np.testing.assert_array_equal(exp.load("r1").trace.theta, trace(2).theta)
    # a run taken with new_run, the user's files put there first, then written
    d2 = exp.new_run("r2")
    before2 = add_user_files(d2)
    exp.save("r2", trace(3))
    assert snapshot(d2) == before2 and check_run(d2).ok
    # with diagnostics on: the diag_steps.jsonl / grads.npz of the old run are replaced, the user's stay
    cfg = gn.DiagnosticsConfig(diag_steps_every=1)
    exp.save("r1", trace(4), overwrite=True, diagnostics=cfg)
    exp.save("r1", trace(5), overwrite=True)
    assert snapshot(d) == before and not (d / "diag_steps.jsonl").exists()


def test_save_batch_never_touches_a_taken_run_with_user_files(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    d = exp.save("b-001", trace(1))
    before = add_user_files(d)
    batch = gn.Trace(kind="optimization", theta=np.zeros((3, 4, LAYOUT.size)), loss=np.zeros((3, 4)),
                     step=np.tile(np.arange(4, dtype=np.int32), (3, 1)), status=("converged",) * 3,
                     num_grad_evals=np.full(3, 4), extras={"num_rows": np.full(3, 4)})
    with pytest.raises(FileExistsError, match="b-001"):
        exp.save_batch(batch, prefix="b")
    assert snapshot(d) == before and check_run(d).ok
    assert sorted(os.listdir(exp.runs_dir)) == ["b-001"]  # the other members' fresh directories went again


class Flaky:
    def __init__(self):
        self.fail = True

    def __call__(self, item):
        if self.fail:
            raise RuntimeError("first attempt fails")
        return trace(item)


def test_campaign_resume_keeps_user_files_in_failed_and_crashed_runs(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    fn = Flaky()
    res = exp.run_many(fn, [1, 2])
    assert len(res.failed) == 2
    failed = exp.run_dir("item-000000")
    before = add_user_files(failed)
    # a crashed writer's run: a stale claim (a pid that is gone), half its files, and the user's notes
    crashed = exp.run_dir("item-000001")
    (crashed / "error.json").unlink()
    (crashed / "trace.npz").write_bytes(b"torn")
    before_crashed = add_user_files(crashed)
    (crashed / CLAIM_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "start": 1,
                                                  "token": "dead", "created_unix": 0}))
    fn.fail = False
    res = exp.run_many(fn, [1, 2])
    assert res.ok, res.failed
    assert snapshot(failed) == before and check_run(failed).ok
    assert snapshot(crashed) == before_crashed and check_run(crashed).ok


def test_sweep_incomplete_leaves_runs_with_user_files(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    exp.run_many(Flaky(), [1, 2])
    keep = exp.run_dir("item-000000")
    before = add_user_files(keep)
    old = time.time() - 3600
    for d in (keep, exp.run_dir("item-000001")):
        for root, _, files in os.walk(d):
            for f in files + ["."]:
                os.utime(os.path.join(root, f), (old, old))
    with pytest.warns(UserWarning, match=r"left 1 incomplete run.*item-000000: figs, mydata\.npz, notes\.txt"):
        removed = exp.sweep_incomplete(min_age_s=60)
    assert removed == ["item-000001"]
    assert snapshot(keep) == before
