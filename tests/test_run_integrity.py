"""Run integrity (issue 13): one classification shared by every reader, a layout checked against its hash,
save_run that never writes into unrelated files and never leaves two runs' files mixed."""

import json
import os
import threading

import numpy as np
import pytest

import gnomon as gn
from gnomon.io.install import target_state
from gnomon.io.jsonio import read_json
from gnomon.io.status import check_run

LAYOUT = gn.Layout({"x": (), "v": (3,), "s": ()}, transforms={"s": "positive"}, units={"x": "arcsec", "v": "nm"})


def trace(seed=0, T=5):
    rng = np.random.default_rng(seed)
    return gn.Trace(kind="optimization", theta=rng.normal(size=(T, LAYOUT.size)), loss=rng.uniform(size=T) + seed,
                    step=np.arange(T, dtype=np.int32), status="converged", num_grad_evals=T, layout=LAYOUT)


def edit_meta(run_dir, fn):
    p = run_dir / "meta.json"
    doc = json.loads(p.read_text())
    fn(doc)
    p.write_text(json.dumps(doc, indent=1))


def test_renamed_block_is_refused_by_every_reader(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    for i in range(3):
        exp.save(f"r{i}", trace(i), meta={"seed": i})
    edit_meta(exp.run_dir("r1"), lambda d: d["theta"]["layout"]["blocks"][1].update(name="w"))
    with pytest.raises(gn.ArtifactError) as err:
        gn.load_run(exp.run_dir("r1"))
    msg = str(err.value)
    assert "r1/meta.json" in msg and "['x', 'w', 's']" in msg and LAYOUT.hash in msg and "edited" in msg
    st = check_run(exp.run_dir("r1"))
    assert st.state == "corrupt" and st.file.endswith("r1/meta.json") and st.reason == msg
    for keys in ((), ("user.seed",)):
        df = exp.aggregate(meta_keys=keys, on_problem="ignore")
        assert list(df["run_id"]) == ["r0", "r2"]
        assert df.attrs["problems"] == [{"run_id": "r1", "problem": "corrupt", "message": msg}]
    # editing a stored unit, or the stored hash, is caught the same way
    edit_meta(exp.run_dir("r2"), lambda d: d["theta"]["layout"]["blocks"][0].update(units="mas"))
    assert check_run(exp.run_dir("r2")).state == "corrupt"
    edit_meta(exp.run_dir("r0"), lambda d: d["theta"].update(layout_hash="0" * 16))
    assert "differs from theta.layout_hash" in check_run(exp.run_dir("r0")).reason


def test_layout_of_another_gnomon_version_loads(tmp_path):
    """An index map with keys this version does not write (or lacks) still loads when its hash matches the
    stored blocks as written."""
    d = gn.save_run(tmp_path / "r", trace())

    def older(doc):
        blocks = doc["theta"]["layout"]["blocks"]
        for b in blocks:
            b["future_key"] = None
        import hashlib

        h = hashlib.sha256(json.dumps(blocks, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
        doc["theta"]["layout_hash"] = doc["theta"]["layout"]["hash"] = h

    edit_meta(d, older)
    assert check_run(d).ok and gn.load_run(d).layout.names == ("x", "v", "s")


def test_save_run_never_deletes_unrelated_files(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    (d / "notes.txt").write_text("my notes")
    (d / "figs").mkdir()
    for overwrite in (False, True):  # save_run(".", overwrite=True) must not empty a working directory
        with pytest.raises(FileExistsError, match=r"results: is not empty and is not this run's directory \(it "
                                                  r"holds figs, notes\.txt\).*never deletes files it did not write"):
            gn.save_run(d, trace(), overwrite=overwrite)
        assert sorted(os.listdir(d)) == ["figs", "notes.txt"]  # untouched
        assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # no staging left behind
    # an incomplete run of another run id is not this run either
    other = tmp_path / "other"
    gn.save_run(other, trace(), run_id="someone-else")
    os.remove(other / "summary.json")
    assert target_state(other, "other") == ("foreign", ["meta.json of run 'someone-else'"])
    with pytest.raises(FileExistsError, match="someone-else.*overwrite=True to replace it"):
        gn.save_run(other, trace())
    gn.save_run(other, trace(), overwrite=True)
    assert gn.load_run(other).run_id == "other"


def test_rewrites_never_mix_two_runs_files(tmp_path):
    d = gn.save_run(tmp_path / "r", trace(1), extra_arrays={"curvature": {"diag": np.ones(5)}}, arviz=False)
    assert (d / "curvature.npz").exists()
    gn.save_run(d, trace(2), overwrite=True)
    assert sorted(os.listdir(d)) == ["meta.json", "summary.json", "trace.npz"]  # the old curvature.npz is gone
    np.testing.assert_array_equal(gn.load_run(d).trace.theta, trace(2).theta)
    # an interrupted earlier attempt of this run (no summary.json) is rewritten without overwrite=True
    os.remove(d / "summary.json")
    (d / "grads.npz").write_bytes(b"torn")
    gn.save_run(d, trace(3))
    assert sorted(os.listdir(d)) == ["meta.json", "summary.json", "trace.npz"]
    assert check_run(d).ok


def test_failed_write_leaves_the_old_run_and_no_staging(tmp_path, monkeypatch):
    d = gn.save_run(tmp_path / "r", trace(1))
    import gnomon.io.run as run_mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(run_mod, "encode_json", boom)
    with pytest.raises(OSError, match="disk full"):
        gn.save_run(d, trace(2), overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(gn.load_run(d).trace.theta, trace(1).theta)  # staged, never installed
    assert os.listdir(tmp_path) == ["r"]


def test_concurrent_writers_of_one_new_directory(tmp_path):
    """Eight threads save different runs to the same new directory at once: exactly one wins, the others get
    FileExistsError, and the directory holds the winner's files only."""
    d = tmp_path / "r"
    results = {}
    barrier = threading.Barrier(8)

    def write(i):
        barrier.wait()
        try:
            gn.save_run(d, trace(i, T=50), meta={"writer": i})
            results[i] = "ok"
        except FileExistsError as exc:
            results[i] = str(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "ok"]
    assert len(winners) == 1, results
    run = gn.load_run(d)
    w = run.meta["user"]["writer"]
    assert w == winners[0]
    np.testing.assert_array_equal(run.trace.theta, trace(w, T=50).theta)
    assert run.summary["best_loss"] == pytest.approx(float(np.min(trace(w, T=50).loss)))
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_json_errors_are_proofread(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"schema_version": 1, "a": "unterminated')
    with pytest.raises(gn.ArtifactError) as err:
        read_json(p)
    msg = str(err.value)
    assert "Unterminated string starting at line 1, column 28" in msg and "at at" not in msg
    p.write_text("")
    with pytest.raises(gn.ArtifactError, match="Expecting value at line 1, column 1"):
        read_json(p)


def test_crashed_staging_directories_are_ignored_and_swept(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    exp.save("a", trace())
    crashed = exp.runs_dir / ".b.tmp-123-abcd"
    crashed.mkdir()
    (crashed / "trace.npz").write_bytes(b"partial")
    assert [s.run_id for s in exp.run_states()] == ["a"] and list(exp.aggregate()["run_id"]) == ["a"]
    exp.sweep_incomplete(min_age_s=0.0)
    assert not crashed.exists() and exp.runs() == ["a"]


def test_experiment_run_states_and_show_agree(tmp_path, capsys):
    exp = gn.Experiment(tmp_path / "e")
    for i in range(4):
        exp.save(f"r{i}", trace(i))
    (exp.run_dir("r1") / "meta.json").write_text('{"schema_version": 1, "kind": "optimiz')
    os.remove(exp.run_dir("r2") / "summary.json")
    states = {s.run_id: s.state for s in exp.run_states()}
    assert states == {"r0": "complete", "r1": "corrupt", "r2": "incomplete", "r3": "complete"}
    from gnomon.interface.cli import main

    assert main(["show", str(exp.path)]) == 0
    out = capsys.readouterr().out
    assert "runs: 2 complete, 1 incomplete, 1 corrupt" in out
    assert "corrupt r1: " in out and "r1/meta.json: not valid JSON" in out


def test_save_into_the_current_directory(tmp_path, monkeypatch):
    d = tmp_path / "here"
    d.mkdir()
    monkeypatch.chdir(d)
    gn.save_run(".", trace(), run_id="here")
    assert sorted(os.listdir(".")) == ["meta.json", "summary.json", "trace.npz"]  # the cwd itself, not a copy
    assert gn.load_run(".").run_id == "here" and os.listdir(tmp_path) == ["here"]
