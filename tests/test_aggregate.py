"""Aggregation: one row per complete run, explicit dtypes, problems reported (never fatal), Parquet / CSV."""

import json
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest

import gnomon as gn
from gnomon.experiment.aggregate import SUMMARY_DTYPES, AggregationWarning


def trace(seed, T=6, status="converged"):
    rng = np.random.default_rng(seed)
    return gn.Trace(
        kind="optimization",
        theta=rng.normal(size=(T, 2)),
        loss=rng.normal(size=T),
        step=np.arange(T, dtype=np.int32),
        stats={"grad_norm": rng.uniform(size=T)},
        status=status,
        num_grad_evals=T + seed,
        runtime_s=0.5 * seed,
        info={"engine": "gd", "learning_rate": 0.1 * seed},
    )


@pytest.fixture
def exp(tmp_path):
    e = gn.Experiment(tmp_path / "e", manifest={"description": "aggregation"})
    for i in range(6):
        e.save(
            f"r{i}",
            trace(i, status="converged" if i % 2 else "max_steps"),
            meta={"seed": i, "group": "ab"[i % 2], **({"opt": 1.0} if i < 3 else {})},
            summary={
                "score": float(i) if i != 4 else math.nan,
                "flag": i % 3 == 0,
                "count": i * 10,
                "label": f"L{i}",
            },
        )
    return e


def test_table_equals_the_summaries(exp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = exp.aggregate(
            meta_keys=["user.seed", "user.group", "user.opt", "engine.learning_rate", "no.such"]
        )
    assert list(df["run_id"]) == [f"r{i}" for i in range(6)] and df.attrs["problems"] == []
    for _, row in df.iterrows():
        s = exp.load(row["run_id"]).summary
        for k in ("final_loss", "best_loss", "initial_loss", "runtime_s", "final_grad_norm"):
            assert row[k] == s[k]
        for k in ("num_steps", "num_rows", "num_grad_evals", "count", "status", "converged", "label", "flag"):
            assert row[k] == s[k], k
    assert math.isnan(df.loc[4, "score"]) and df.loc[5, "score"] == 5.0
    # explicit dtypes: nullable ints stay ints, strings are strings, missing values are <NA>
    for k, dt in SUMMARY_DTYPES.items():
        if k in df:
            assert str(df[k].dtype) == dt, k
    assert str(df["run_id"].dtype) == "string" and str(df["count"].dtype) == "Int64"
    assert str(df["flag"].dtype) == "boolean" and str(df["label"].dtype) == "string"
    assert str(df["user.seed"].dtype) == "Int64" and list(df["user.seed"]) == list(range(6))
    assert str(df["user.group"].dtype) == "string" and str(df["user.opt"].dtype) == "float64"
    assert df["user.opt"].isna().tolist() == [False] * 3 + [True] * 3
    np.testing.assert_allclose(df["engine.learning_rate"], 0.1 * np.arange(6))
    assert df["no.such"].isna().all()
    assert "schema_version" not in df and list(df.columns[:3]) == ["run_id", "kind", "status"]


def test_problems_are_reported_not_fatal(exp):
    runs = exp.runs_dir
    (runs / "r1" / "summary.json").write_text('{"schema_version": 1, "final_lo')  # torn (not via our writer)
    (runs / "r2" / "summary.json").write_text(json.dumps({"schema_version": 99, "final_loss": 1.0}))
    os.remove(runs / "r3" / "summary.json")  # incomplete
    (runs / "r5" / "meta.json").write_text("[]")  # summary fine, meta unusable
    exp.new_run("inflight")
    with pytest.warns(
        AggregationWarning, match=r"skipped 5 run\(s\) \(2 corrupt, 2 incomplete, 1 newer_schema\)"
    ):
        df = exp.aggregate(meta_keys=["user.seed"])
    assert list(df["run_id"]) == ["r0", "r4"]
    probs = {p["run_id"]: (p["problem"], p["message"]) for p in df.attrs["problems"]}
    assert probs["r1"][0] == "corrupt" and "r1/summary.json: not valid JSON" in probs["r1"][1]
    assert probs["r2"][0] == "newer_schema" and "schema_version 99 is newer" in probs["r2"][1]
    assert probs["r3"][0] == "incomplete" and probs["inflight"][0] == "incomplete"
    assert probs["r5"][0] == "corrupt" and "r5/meta.json" in probs["r5"][1]
    # with or without meta keys, every reader classifies each run the same way (issue 13)
    df2 = exp.aggregate(on_problem="ignore")
    assert list(df2["run_id"]) == ["r0", "r4"] and df2.attrs["problems"] == df.attrs["problems"]
    with pytest.raises(gn.ArtifactError, match="skipped 5 run"):
        exp.aggregate(on_problem="raise")
    states = {s.run_id: s for s in exp.run_states()}
    for p in df.attrs["problems"]:
        assert states[p["run_id"]].state == p["problem"] and states[p["run_id"]].reason == p["message"]
        with pytest.raises(gn.ArtifactError):
            exp.load(p["run_id"])
    for rid in df["run_id"]:  # every listed run loads
        assert states[rid].ok
        exp.load(rid)


def test_parquet_and_csv_outputs(exp, tmp_path):
    df = exp.aggregate(meta_keys=["user.seed"], output=tmp_path / "out" / "t.parquet")
    back = pd.read_parquet(tmp_path / "out" / "t.parquet")
    pd.testing.assert_frame_equal(back, df, check_like=False)
    exp.aggregate(meta_keys=["user.seed"], output=tmp_path / "t.csv")
    csv = pd.read_csv(tmp_path / "t.csv")
    assert list(csv.columns) == list(df.columns) and list(csv["run_id"]) == list(df["run_id"])
    np.testing.assert_allclose(csv["final_loss"], df["final_loss"])
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    with pytest.raises(ValueError, match=r"expected a \.parquet or \.csv"):
        exp.aggregate(output=tmp_path / "t.xlsx")
    with pytest.raises(ValueError, match="dotted path"):
        exp.aggregate(meta_keys=["user..seed"])


def test_empty_experiment_and_clashing_meta_key(tmp_path):
    e = gn.Experiment(tmp_path / "e")
    df = e.aggregate(meta_keys=["user.seed"])
    assert len(df) == 0 and list(df.columns) == ["run_id", "user.seed"]
    e.save("a", trace(1), meta={"x": [1, 2]})
    df = e.aggregate(meta_keys=["kind", "user.x", "user"])
    assert list(df["meta.kind"]) == ["optimization"] and list(df["kind"]) == ["optimization"]
    assert json.loads(df.loc[0, "user.x"]) == [1, 2] and json.loads(df.loc[0, "user"]) == {"x": [1, 2]}


def test_threaded_reader_matches_serial(tmp_path):
    e = gn.Experiment(tmp_path / "e")
    rng = np.random.default_rng(0)
    B = 300
    bt = gn.Trace(
        kind="optimization",
        theta=rng.normal(size=(B, 4, 2)),
        loss=rng.normal(size=(B, 4)),
        step=np.tile(np.arange(4, dtype=np.int32), (B, 1)),
        status=("max_steps",) * B,
        num_grad_evals=np.arange(B),
        extras={"num_rows": np.full(B, 4)},
    )
    e.save_batch(bt, meta=[{"seed": i} for i in range(B)], prefix="p")
    a = e.aggregate(meta_keys=["user.seed"], workers=8)
    b = e.aggregate(meta_keys=["user.seed"], workers=1)
    pd.testing.assert_frame_equal(a, b)
    assert list(a["user.seed"]) == list(range(B)) and list(a["num_grad_evals"]) == list(range(B))


# ---------------------------------------------------------------------------------------------- parameters
PLAYOUT = gn.Layout({"x": (), "v": (3,), "s": ()}, transforms={"s": "positive"}, units={"x": "arcsec", "v": "nm"})


def _param_runs(tmp_path):
    rng = np.random.default_rng(7)
    exp = gn.Experiment(tmp_path / "p")
    opt = gn.Trace(kind="optimization", theta=rng.normal(size=(6, 5)), loss=np.array([5.0, 3, 1, 2, 4, 6]),
                   step=np.arange(6), status="converged", layout=PLAYOUT)
    post = gn.Trace(kind="sampling", theta=rng.normal(size=(2, 40, 5)), log_prob=rng.normal(size=(2, 40)),
                    status="sampled", layout=PLAYOUT)
    truth = {"x": 0.1, "v": [0.0, 1.0, -1.0], "s": 1.5}
    crlb = {"x": 0.5, "v[0]": 0.25, "v[1]": 0.25, "v[2]": 0.25}
    exp.save("map", opt, crlb=crlb, truth=truth)
    exp.save("nuts", post, truth=truth, summary={"note": "user key"})
    return exp, opt, post, truth, crlb


def test_per_parameter_summary_keys_against_an_independent_decoding(tmp_path):
    exp, opt, post, truth, crlb = _param_runs(tmp_path)
    s = exp.load("map").summary
    best = {k: np.asarray(v) for k, v in PLAYOUT.unpack(np.asarray(opt.theta)[2]).items()}  # loss 1 at row 2
    assert s["estimate.x"] == pytest.approx(float(best["x"])) and s["estimate.s"] == pytest.approx(float(best["s"]))
    np.testing.assert_allclose([s[f"estimate.v[{k}]"] for k in range(3)], best["v"])
    assert s["crlb.x"] == 0.5 and "crlb.s" not in s and s["truth.s"] == 1.5
    assert s["z.x"] == pytest.approx((float(best["x"]) - 0.1) / 0.5)
    assert math.isnan(s["z.s"]) and "sd.x" not in s  # no σ for s: z is NaN; no sd for a MAP
    p = exp.load("nuts").summary
    draws = {k: np.asarray(v).reshape(80, -1) for k, v in PLAYOUT.unpack(np.asarray(post.theta)).items()}
    assert p["estimate.s"] == pytest.approx(draws["s"].mean()) and p["sd.s"] == pytest.approx(draws["s"].std(ddof=1))
    assert p["z.v[2]"] == pytest.approx((draws["v"][:, 2].mean() + 1.0) / draws["v"][:, 2].std(ddof=1))
    assert p["user_keys"] == ["note"]
    with pytest.raises(ValueError, match=r"crlb given for unknown parameter\(s\) \['y'\]"):
        gn.save_run(tmp_path / "bad", opt, crlb={"y": 1.0})
    assert not (tmp_path / "bad").exists()


def test_aggregate_params_columns(tmp_path):
    exp, *_ = _param_runs(tmp_path)
    plain = exp.aggregate()
    assert not [c for c in plain.columns if c.startswith(("estimate.", "crlb.", "z."))]
    assert "files" not in plain and "user_keys" not in plain and list(plain["note"].fillna("")) == ["", "user key"]
    df = exp.aggregate(params=["x", "v[1]"])
    cols = [c for c in df.columns if c not in plain.columns]
    assert cols == ["estimate.x", "sd.x", "crlb.x", "truth.x", "z.x",
                    "estimate.v[1]", "sd.v[1]", "crlb.v[1]", "truth.v[1]", "z.v[1]"]
    for _, row in df.iterrows():
        s = exp.load(row["run_id"]).summary
        for c in cols:
            assert (math.isnan(row[c]) and (c not in s or math.isnan(s[c]))) or row[c] == pytest.approx(s[c])
    by_block = exp.aggregate(params="v")
    assert [c for c in by_block.columns if c.startswith("estimate.")] == ["estimate.v[0]", "estimate.v[1]",
                                                                         "estimate.v[2]"]
    assert len([c for c in exp.aggregate(params=True).columns if c.startswith("z.")]) == 5
    with pytest.raises(ValueError, match=r"params: no per-parameter columns for \['nope'\]"):
        exp.aggregate(params=["nope"])
