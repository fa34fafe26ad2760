"""Run directories: round trips, atomic writes, schema versions, and errors that name the file."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gnomon as gn
from gnomon.io.jsonio import read_json, to_jsonable, write_json
from gnomon.io.npzio import read_npz, write_npz
from gnomon.io.status import check_run

floats = st.floats(allow_nan=True, allow_infinity=True, width=32)


@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=20)
@given(
    T=st.integers(1, 12),
    D=st.integers(1, 5),
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_optimization_trace_round_trip(tmp_path_factory, T, D, dtype, data):
    theta = data.draw(hnp.arrays(dtype, (T, D), elements=st.floats(-1e6, 1e6, width=32)))
    loss = data.draw(hnp.arrays(dtype, (T,), elements=floats))
    gnorm = data.draw(hnp.arrays(dtype, (T,), elements=floats))
    status = data.draw(st.sampled_from(["converged", "max_steps", "diverged at step 3: non-finite loss (nan)"]))
    tr = gn.Trace(kind="optimization", theta=theta, loss=loss, stats={"grad_norm": gnorm},
                  step=np.arange(T, dtype=np.int32) * 2, status=status, num_grad_evals=2 * T - 1,
                  runtime_s=0.25, info={"engine": "gd", "learning_rate": 0.1, "tol": math.nan})
    d = tmp_path_factory.mktemp("run")
    gn.save_run(d, tr, meta={"note": "ünïcode", "x": [1, 2.5, math.inf]})
    run = gn.load_run(d)
    out = run.trace
    assert out.kind == "optimization" and out.status == status and out.num_grad_evals == 2 * T - 1
    for a, b in ((out.theta, theta), (out.loss, loss), (out.stats["grad_norm"], gnorm), (out.step, tr.step)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert run.meta["user"]["x"][2] == math.inf and run.meta["user"]["note"] == "ünïcode"
    assert math.isnan(run.meta["engine"]["tol"])
    assert run.summary["num_steps"] == 2 * (T - 1) and run.summary["status"] == status


def test_layout_and_meta_recorded(tmp_path):
    layout = gn.Layout({"x": (), "s": ()}, transforms={"s": "positive"}, units={"x": "arcsec"})
    obj = gn.Objective.from_log_density(lambda p: -0.5 * p["x"] ** 2 - p["s"], layout)
    tr = gn.run_simple_gd(obj, jnp.zeros(2), learning_rate=0.1, num_steps=10)
    assert tr.layout is layout
    gn.save_run(tmp_path / "r", tr)
    run = gn.load_run(tmp_path / "r")
    assert run.layout == layout and run.trace.layout == layout
    meta = run.meta
    assert meta["schema_version"] == 2 and meta["run_id"] == "r" and meta["kind"] == "optimization"
    assert meta["theta"]["layout_hash"] == layout.hash and meta["theta"]["theta_space"] == "primitive"
    assert meta["theta"]["dtype"] == "float32" and meta["engine"]["engine"] == "gd"
    assert meta["engine"]["learning_rate"] == 0.1 and meta["packages"]["jax"]
    assert meta["platform"]["python"].startswith("3.")
    summary = run.summary
    assert summary["final_loss"] == pytest.approx(float(tr.loss[-1]))
    assert summary["num_grad_evals"] == 11 and summary["converged"] is False
    # compilation and execution apart, as the engine measured them; the final gradient norm although the
    # default channels did not record it per step
    assert summary["compile_s"] == tr.info["compile_s"] > 0 and summary["run_s"] == tr.info["run_s"]
    assert summary["final_grad_norm"] == pytest.approx(tr.info["final_grad_norm"])


def test_summary_written_last_and_overwrite(tmp_path):
    tr = gn.run_simple_gd(lambda t: jnp.sum(t**2), jnp.ones(2), learning_rate=0.1, num_steps=3)
    d = gn.save_run(tmp_path / "r", tr)
    files = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    assert set(files) == {"trace.npz", "meta.json", "summary.json"}
    assert files["summary.json"] >= max(files.values())
    with pytest.raises(FileExistsError, match="already holds a complete run"):
        gn.save_run(d, tr)
    gn.save_run(d, tr, overwrite=True, summary={"extra": 1.5})
    assert gn.load_run(d).summary["extra"] == 1.5
    assert not [p for p in d.iterdir() if ".tmp-" in p.name]


def test_extra_arrays_written_and_loadable(tmp_path):
    tr = gn.run_simple_gd(lambda t: jnp.sum(t**2), jnp.ones(3), learning_rate=0.1, num_steps=3)
    gn.save_run(tmp_path / "r", tr, extra_arrays={"curvature": {"diag": np.arange(3.0)}},
                extra_meta={"curvature": {"method": "exact"}})
    run = gn.load_run(tmp_path / "r")
    np.testing.assert_array_equal(run.load_extra("curvature")["diag"], np.arange(3.0))
    assert run.meta["curvature"]["method"] == "exact" and "curvature.npz" in run.meta["files"]
    with pytest.raises(gn.ArtifactError, match="no 'grads' file"):
        run.load_extra("grads")
    with pytest.raises(ValueError, match="plain identifier"):
        gn.save_run(tmp_path / "q", tr, extra_arrays={"../evil": {"a": np.zeros(1)}})


def test_sampling_trace_round_trip_with_warmup(tmp_path):
    rng = np.random.default_rng(0)
    tr = gn.Trace(kind="sampling", theta=rng.normal(size=(2, 5, 3)), log_prob=rng.normal(size=(2, 5)),
                  stats={"diverging": np.zeros((2, 5), bool), "step_size": np.full((2, 5), 0.3)},
                  warmup={"theta": rng.normal(size=(2, 4, 3)), "log_prob": rng.normal(size=(2, 4)),
                          "stats": {"step_size": rng.uniform(size=(2, 4))}},
                  status="sampled", num_grad_evals=123)
    gn.save_run(tmp_path / "s", tr)
    out = gn.load_run(tmp_path / "s").trace
    assert out.kind == "sampling" and out.num_chains == 2 and out.num_draws == 5
    np.testing.assert_array_equal(out.warmup["stats"]["step_size"], tr.warmup["stats"]["step_size"])
    np.testing.assert_array_equal(out.stats["diverging"], tr.stats["diverging"])
    assert out.stats["diverging"].dtype == bool
    assert gn.load_run(tmp_path / "s").summary["divergences"] == 0


@pytest.fixture
def saved(tmp_path):
    tr = gn.run_simple_gd(lambda t: jnp.sum(t**2), jnp.ones(2), learning_rate=0.1, num_steps=3)
    return gn.save_run(tmp_path / "r", tr)


def test_missing_summary_means_incomplete(saved):
    os.remove(saved / "summary.json")
    with pytest.raises(gn.ArtifactError, match=r"summary\.json: file is missing \(the run is incomplete"):
        gn.load_run(saved)
    assert gn.load_run(saved, require_complete=False).trace.kind == "optimization"


@pytest.mark.parametrize("name", ["meta.json", "summary.json"])
def test_truncated_json_names_the_file(saved, name):
    p = saved / name
    p.write_text(p.read_text()[:40])
    with pytest.raises(gn.ArtifactError, match=rf"{name}: not valid JSON"):
        gn.load_run(saved)


def test_truncated_npz_names_the_file(saved):
    p = saved / "trace.npz"
    raw = p.read_bytes()
    p.write_bytes(raw[:100])
    with pytest.raises(gn.ArtifactError, match=r"trace\.npz: 100 bytes, but summary\.json recorded \d+ \(truncated"):
        gn.load_run(saved)
    p.write_bytes(b"\0" * len(raw))  # damaged in place at its recorded size: found when read
    with pytest.raises(gn.ArtifactError, match=r"trace\.npz: not a readable NPZ"):
        gn.load_run(saved)


def test_newer_schema_refused_older_read(saved):
    p = saved / "meta.json"
    doc = json.loads(p.read_text())
    doc["schema_version"] = 99
    p.write_text(json.dumps(doc))
    with pytest.raises(gn.ArtifactError, match=r"meta\.json: schema_version 99 is newer"):
        gn.load_run(saved)
    write_json(saved / "x.json", {"a": 1}, schema_version=0)
    assert read_json(saved / "x.json")["a"] == 1


def test_missing_directory(tmp_path):
    with pytest.raises(gn.ArtifactError, match="no such run directory"):
        gn.load_run(tmp_path / "nope")


def test_json_nonfinite_and_numpy_scalars(tmp_path):
    obj = {"a": np.float32(1.5), "b": np.int64(3), "c": [math.nan, -math.inf], "d": np.arange(3), "e": np.bool_(True)}
    write_json(tmp_path / "x.json", obj)
    text = (tmp_path / "x.json").read_text()
    json.loads(text)  # strict JSON
    assert "NaN" in text
    back = read_json(tmp_path / "x.json")
    assert back["a"] == 1.5 and back["b"] == 3 and math.isnan(back["c"][0]) and back["c"][1] == -math.inf
    assert back["d"] == [0, 1, 2] and back["e"] is True
    with pytest.raises(TypeError, match="cannot store"):
        to_jsonable(object())


def test_npz_refuses_object_arrays_and_writes_atomically(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="no pickle"):
        write_npz(tmp_path / "a.npz", {"x": np.array([{"a": 1}], dtype=object)})
    write_npz(tmp_path / "a.npz", {"x": np.arange(3)})
    import gnomon.io.jsonio as jio

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(jio.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_npz(tmp_path / "a.npz", {"x": np.arange(5)})
    monkeypatch.undo()
    np.testing.assert_array_equal(read_npz(tmp_path / "a.npz")["x"], np.arange(3))  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # temp file removed


def test_batched_trace_refused(tmp_path):
    tr = gn.Trace(kind="optimization", theta=np.zeros((2, 3, 1)), loss=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="batched trace is B runs"):
        gn.save_run(tmp_path / "b", tr)


def test_posterior_netcdf_carries_units_and_long_names(tmp_path):
    """Every variable of every group of posterior.nc has ``units`` and ``long_name`` (netCDF round trip);
    parameters carry the layout's units exactly as given, vector blocks their component labels."""
    from gnomon.io.netcdf import read_netcdf

    layout = gn.Layout({"sep": (), "zern": (3,), "s": ()}, transforms={"s": "positive"},
                       units={"sep": "µas", "zern": "nm"})
    rng = np.random.default_rng(0)
    tr = gn.Trace(kind="sampling", theta=rng.normal(size=(2, 6, 5)), log_prob=rng.normal(size=(2, 6)),
                  stats={"diverging": np.zeros((2, 6), bool), "n_steps": np.full((2, 6), 3), "custom": np.ones((2, 6))},
                  warmup={"theta": rng.normal(size=(2, 4, 5)), "log_prob": rng.normal(size=(2, 4))},
                  status="sampled", layout=layout)
    d = gn.save_run(tmp_path / "r", tr, arviz=True)
    dt = read_netcdf(d / "posterior.nc")
    seen = 0
    for node in dt.subtree:
        for name, var in node.to_dataset().data_vars.items():
            assert "units" in var.attrs and var.attrs.get("long_name"), (node.name, name)
            seen += 1
    assert seen >= 3 + 3 + 3 + 1
    post = dt["posterior"].to_dataset()
    assert post["sep"].attrs == {"long_name": "sep", "units": "µas"} and post["s"].attrs["units"] == ""
    # the file is what to_arviz gives: labels are the dimension's own values (arviz_stats.summary reads them)
    assert list(post["zern"].coords["zern_dim_0"].values) == [0, 1, 2] and "zern_dim_0_label" not in post.coords
    stats = dt["sample_stats"].to_dataset()
    assert stats["lp"].attrs["long_name"] == "log density of θ" and stats["custom"].attrs["long_name"] == "custom"
    assert check_run(d).ok


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@hsettings(max_examples=150)
@given(doc=st.dictionaries(st.text(max_size=10).filter(lambda k: k != "schema_version"), json_values, max_size=8))
def test_encode_json_reads_back_as_the_plain_form(doc):
    """The fast encoder (one top-level key per line, scalars by hand, the C encoder for the rest) writes what
    to_jsonable + json.dumps wrote: the same document read back, non-finite floats as strings."""
    from gnomon.io.jsonio import encode_json

    text = encode_json(doc).decode()
    assert json.loads(text) == to_jsonable({"schema_version": 2, **doc})
    assert text.count("\n") == len(doc) + 3  # "{", schema_version, one line per key, "}"
    numpy_doc = {"a": np.float32(1.5), "b": np.int64(3), "c": np.bool_(True), "d": np.arange(3), "e": np.float64("nan")}
    assert json.loads(encode_json(numpy_doc)) == {"schema_version": 2, "a": 1.5, "b": 3, "c": True, "d": [0, 1, 2],
                                                  "e": "NaN"}


def test_fresh_runs_are_staged_file_by_file_and_a_failed_one_leaves_nothing(tmp_path, monkeypatch):
    """Experiment.save with a given id (a fresh directory): every file appears whole (no temporary left), the
    summary last; a failure while writing removes the fresh directory again."""
    exp = gn.Experiment(tmp_path / "e")
    tr = gn.Trace(kind="optimization", theta=np.zeros((3, 2)), loss=np.ones(3), status="converged")
    order = []
    import gnomon.util.files as files_mod

    real = os.replace

    def replace(src, dst):
        order.append(os.path.basename(str(dst)))
        return real(src, dst)

    monkeypatch.setattr(files_mod.os, "replace", replace)
    d = exp.save("given", tr)
    monkeypatch.undo()
    assert order == ["trace.npz", "meta.json", "summary.json"]
    assert sorted(os.listdir(d)) == ["meta.json", "summary.json", "trace.npz"] and check_run(d).ok
    import gnomon.io.run as run_mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(run_mod, "encode_json", boom)
    with pytest.raises(OSError, match="disk full"):
        exp.save("broken", tr)
    monkeypatch.undo()
    assert not exp.run_dir("broken").exists() and not [n for n in os.listdir(exp.runs_dir) if n.startswith(".")]
