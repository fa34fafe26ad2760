"""Campaigns (`Experiment.run_many`): one run per item, skip complete runs, record failures, resume."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import gnomon as gn
from gnomon.io.runids import CLAIM_FILE


def make_trace(seed: int, T: int = 8):
    rng = np.random.default_rng(seed)
    return gn.Trace(
        kind="optimization",
        theta=rng.normal(size=(T, 2)),
        loss=rng.normal(size=T),
        step=np.arange(T, dtype=np.int32),
        status="converged",
        num_grad_evals=T + seed,
    )


class Recorder:
    """fn for in-process campaigns: records calls, fails on chosen seeds."""

    def __init__(self, fail=()):
        self.calls = []
        self.fail = set(fail)
        self.lock = threading.Lock()

    def __call__(self, item):
        with self.lock:
            self.calls.append(item["seed"])
        if item["seed"] in self.fail:
            raise RuntimeError(f"bad seed {item['seed']}")
        return make_trace(item["seed"]), {"seed": item["seed"]}


def test_failures_recorded_then_resume_does_only_the_rest(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    items = [{"seed": s} for s in range(6)]
    fn = Recorder(fail={2, 4})
    res = exp.run_many(fn, items)
    assert sorted(fn.calls) == list(range(6)) and not res.ok
    assert res.completed == ["item-000000", "item-000001", "item-000003", "item-000005"]
    assert (
        set(res.failed) == {"item-000002", "item-000004"}
        and "RuntimeError: bad seed 2" in res.failed["item-000002"]
    )
    detail = {r["run_id"]: r for r in exp.incomplete_runs(detail=True)}
    assert detail["item-000002"]["state"] == "failed" and "bad seed 2" in detail["item-000002"]["error"]
    assert not (exp.run_dir("item-000002") / CLAIM_FILE).exists()  # released
    err = json.loads((exp.run_dir("item-000004") / "error.json").read_text())
    assert "Traceback" in err["traceback"] and err["run_id"] == "item-000004"

    fn2 = Recorder()
    res2 = exp.run_many(fn2, items)
    assert (
        sorted(fn2.calls) == [2, 4] and res2.ok and sorted(res2.completed) == ["item-000002", "item-000004"]
    )
    assert len(res2.skipped) == 4
    assert not (exp.run_dir("item-000002") / "error.json").exists()
    df = exp.aggregate(meta_keys=["user.seed", "campaign.index", "campaign.item_hash"])
    assert list(df["user.seed"]) == list(range(6)) and list(df["campaign.index"]) == list(range(6))
    assert df["campaign.item_hash"].nunique() == 6 and df.attrs["problems"] == []
    for i in range(6):
        run = exp.load(f"item-{i:06d}")
        assert run.meta["campaign"]["item"] == {"seed": i}
        np.testing.assert_array_equal(run.trace.theta, make_trace(i).theta)
    # a third pass does nothing at all
    fn3 = Recorder()
    res3 = exp.run_many(fn3, items)
    assert fn3.calls == [] and len(res3.skipped) == 6 and res3.ok


def test_changed_items_are_detected(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    items = [{"seed": s} for s in range(4)]
    exp.run_many(Recorder(), items)
    with pytest.raises(ValueError, match="made from different items"):
        exp.run_many(Recorder(), items[::-1])
    # ids tied to the items: order does not matter
    fn = Recorder()
    res = exp.run_many(fn, items[::-1], run_id="seed{item[seed]}")
    assert sorted(res.completed) == [f"seed{s}" for s in range(4)]
    res = exp.run_many(fn, items, run_id=lambda it: f"seed{it['seed']}")
    assert len(res.skipped) == 4 and sorted(fn.calls) == [0, 1, 2, 3]


def test_bad_ids_and_results(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    with pytest.raises(ValueError, match="duplicate run ids"):
        exp.run_many(Recorder(), [{"seed": 1}, {"seed": 1}], run_id="s{item[seed]}")
    with pytest.raises(ValueError, match="must not contain a path separator"):
        exp.run_many(Recorder(), [{"seed": 1}], run_id="../{index}")
    with pytest.raises(ValueError, match="set by run_many"):
        exp.run_many(Recorder(), [{"seed": 1}], save_kwargs={"overwrite": True})
    res = exp.run_many(lambda item: 42, [1, 2])
    assert len(res.failed) == 2 and "must return a Trace" in res.failed["item-000000"]
    res = exp.run_many(lambda item: {"trace": make_trace(item), "colour": 1}, [3], run_id="x{item}")
    assert "unknown keys ['colour']" in res.failed["x3"]
    with pytest.raises(RuntimeError, match="1 failed"):
        exp.run_many(lambda item: None, [5], run_id="y{item}", raise_on_error=True)


def test_result_forms_progress_and_diagnostics(tmp_path):
    exp = gn.Experiment(tmp_path / "e", diagnostics=gn.DiagnosticsConfig(diag_steps_every=3))
    seen = []

    def fn(item):
        if item == 0:
            return make_trace(0)
        return {
            "trace": make_trace(item),
            "meta": {"k": item},
            "summary": {"extra": item * 1.5},
            "extra_arrays": {"mine": {"a": np.arange(item)}},
        }

    res = exp.run_many(
        fn, [0, 1, 2], progress=lambda done, total, rec: seen.append((done, total, rec["state"]))
    )
    assert res.ok and seen == [(1, 3, "done"), (2, 3, "done"), (3, 3, "done")]
    run = exp.load("item-000002")
    assert run.meta["user"] == {"k": 2} and run.summary["extra"] == 3.0
    np.testing.assert_array_equal(run.load_extra("mine")["a"], np.arange(2))
    assert len(exp.load_diag_steps("item-000002")) == 4  # rows 0, 3, 6 and the final row 7


def test_thread_pool_campaign_each_item_once(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    fn = Recorder()
    items = [{"seed": s} for s in range(24)]
    with ThreadPoolExecutor(4) as pool:
        res = exp.run_many(fn, items, executor=pool, max_in_flight=6)
    assert res.ok and sorted(fn.calls) == list(range(24)) and len(exp.runs()) == 24


def test_max_in_flight_bounds_the_tasks_and_a_bad_one_is_refused_before_any_work(tmp_path):
    exp = gn.Experiment(tmp_path / "e")
    items = [{"seed": s} for s in range(5)]
    fn = Recorder()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"max_in_flight must be an int ≥ 1, got {bad!r}"):
            exp.run_many(fn, items, executor=ThreadPoolExecutor(2), max_in_flight=bad)
    assert fn.calls == [] and exp.runs() == []

    class Overlap(Recorder):  # the most fits running at once (each holds its task in flight)
        running = most = 0

        def __call__(self, item):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(0.02)
            with self.lock:
                self.running -= 1
            return super().__call__(item)

    fn = Overlap()
    with ThreadPoolExecutor(4) as pool:
        res = exp.run_many(fn, items, executor=pool, max_in_flight=2)
    assert res.ok and sorted(fn.calls) == list(range(5)) and 1 <= fn.most <= 2


def test_two_campaigns_at_once_share_the_work(tmp_path):
    """Two concurrent run_many over the same items (threads here; processes in test_reliability): every
    item is done exactly once, the other campaign reports it busy or skipped."""
    exp = gn.Experiment(tmp_path / "e")
    fn = Recorder()
    items = [{"seed": s} for s in range(30)]
    results = []
    barrier = threading.Barrier(2)

    def go():
        barrier.wait()
        with ThreadPoolExecutor(2) as pool:
            results.append(exp.run_many(fn, items, executor=pool))

    ts = [threading.Thread(target=go) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(fn.calls) == list(range(30))  # nothing done twice
    done = results[0].completed + results[1].completed
    assert sorted(done) == sorted(exp.runs()) and len(done) == 30


def test_interrupt_releases_the_run(tmp_path):
    """Ctrl-C inside fn: the run stays incomplete but unclaimed, so re-running in the same process does it."""
    exp = gn.Experiment(tmp_path / "e")

    def fn(item):
        if item == 1:
            raise KeyboardInterrupt
        return make_trace(item)

    with pytest.raises(KeyboardInterrupt):
        exp.run_many(fn, [0, 1, 2])
    assert exp.runs() == ["item-000000"] and exp.incomplete_runs() == ["item-000001"]
    assert not (exp.run_dir("item-000001") / CLAIM_FILE).exists()
    res = exp.run_many(lambda item: make_trace(item), [0, 1, 2])
    assert res.ok and res.completed == ["item-000001", "item-000002"] and res.skipped == ["item-000000"]
