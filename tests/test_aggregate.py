"""Aggregation: one row per complete run, explicit dtypes, problems reported (never fatal), Parquet / CSV."""

import json
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest

import gnomon as gn
from gnomon.artifacts.aggregate import SUMMARY_DTYPES, AggregationWarning


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
    # without meta keys meta.json is not even opened: r5 is fine
    df2 = exp.aggregate(on_problem="ignore")
    assert list(df2["run_id"]) == ["r0", "r4", "r5"]
    with pytest.raises(gn.ArtifactError, match="skipped 4 run"):
        exp.aggregate(on_problem="raise")
    for rid in df["run_id"]:  # every listed run loads
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
