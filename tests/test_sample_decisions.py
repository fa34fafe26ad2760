"""Typed decisions: codes compared as members, written as their readable strings, read back from files."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.io.sampling_summary import sampling_summary
from gnomon.sampler import record
from gnomon.sampler.decisions import Action, Ledger, MapEnd, SampleStatus, SeedKind, StartSource
from gnomon.util.codes import Code

OBJ = gn.Objective.from_log_prob(lambda th: -0.5 * jnp.sum((th / jnp.asarray([1.0, 3.0], th.dtype)) ** 2), 2)


def test_codes_are_members_in_memory_and_strings_in_files(tmp_path):
    fit = gn.optimize(OBJ, jnp.ones(2), "lbfgs", num_steps=50)
    # 4 × 1000 draws: with 2 × 300 the R̂ of a Gaussian crosses 1.01 on one key in three ("unhealthy")
    post = gn.sample(OBJ, fit, jax.random.key(0), num_chains=4, num_samples=1000, progress=False)
    d = post.info["decisions"][0]
    assert d["action"] is Action.SEED_KEPT and d["action"] == "seed kept"
    assert post.info["metric"]["seed"] is SeedKind.CURVATURE and post.info["init"] is StartSource.OPTIMIZATION
    assert post.info["status_code"] is SampleStatus.SAMPLED and post.status == "sampled"
    assert post.info["map_end"] is MapEnd.OTHER
    run = gn.load_run(gn.HandOff.from_trace(post).save_run(tmp_path / "run", post))
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    text = json.dumps(meta)
    assert '"seed kept"' in text and '"status_code": "sampled"' in text  # readable values, no encoder needed
    loaded = run.trace.info["decisions"][0]["action"]
    assert isinstance(loaded, str) and Action.parse(loaded) is Action.SEED_KEPT
    # a record read back (strings) summarises as the fresh one (members)
    fresh, again = sampling_summary(post), sampling_summary(run.trace)
    for k in ("seed_rejected", "no_mode", "recovered", "status_code", "kernel", "divergent_chains"):
        assert fresh[k] == again[k], k
    assert fresh["divergent_chains"] == 0 and post.info["health"]["divergent_chains"] == []
    named = {"chain": 1, "divergences": 200, "fraction": 0.67, "coordinate": 0, "chain_mean": -2.0,
             "others_mean": 0.0, "others_sd": 1.0}
    hurt = dataclasses.replace(post, info={**post.info, "health": {**post.info["health"], "divergent_chains": [named]}})
    assert sampling_summary(hurt)["divergent_chains"] == 1
    assert run.summary["status_code"] == "sampled"


def test_parse_names_the_codes_it_knows():
    assert Action.parse("chains moved") is Action.CHAINS_MOVED and Action.get("frobnicate") is None
    with pytest.raises(ValueError, match=r"'frobnicate' is not a Action code; expected one of 'seed kept'"):
        Action.parse("frobnicate")
    assert issubclass(Action, Code) and issubclass(SampleStatus, Code)


def test_the_optimizers_end_is_read_in_one_place():
    assert MapEnd.of("diverged at step 3: non-finite loss (nan)") is MapEnd.DIVERGED
    assert MapEnd.of("max_steps") is MapEnd.MAX_STEPS and MapEnd.of("converged: |g| < tol") is MapEnd.OTHER
    assert MapEnd.of("saddle point: λ_min = -3") is MapEnd.SADDLE_POINT
    assert MapEnd.of(None) is None
    # an optimizer that records its own code is believed over its sentence
    assert MapEnd.of("stopped", code="diverged") is MapEnd.DIVERGED
    # the optimizer's own codes (gn.optim.StatusCode) are read first; a run-off is no mode, like a divergence
    assert MapEnd.of("stopped", code=gn.optim.StatusCode.RAN_OFF) is MapEnd.RAN_OFF
    assert MapEnd.of("ran off along θ[0]: …") is MapEnd.RAN_OFF and MapEnd.RAN_OFF.found_no_mode
    assert MapEnd.of("converged", code="saddle_point") is MapEnd.SADDLE_POINT
    assert not MapEnd.of("converged: |g| < tol").found_no_mode


def _run_with(ledger: Ledger) -> record.Run:
    return record.Run(*([None] * 9), ledger, *([None] * 14))


def test_the_status_is_a_sentence_with_its_code():
    ledger = Ledger()
    assert record._status(_run_with(ledger), {"problems": []}) == ("sampled", SampleStatus.SAMPLED)
    ledger.decide(Action.SEED_REJECTED, "seed rejected after 10 warmup steps: the draws' variance ...")
    ledger.decide("recovery", "recovery at warmup step 10: ...")  # a stored string is parsed into its member
    assert ledger.decisions[-1].action is Action.RECOVERY
    sentence, code = record._status(_run_with(ledger), {"problems": []})
    assert code is SampleStatus.RECOVERED and sentence.startswith("sampled after a recovery: seed rejected")
    sentence, code = record._status(_run_with(ledger), {"problems": ["the chains disagree: R̂ = 1.2", "x"]})
    assert code is SampleStatus.UNHEALTHY and sentence == "sampled with 2 health problems: the chains disagree: R̂ = 1.2"
    with pytest.raises(ValueError, match="not a Action code"):
        ledger.decide("seed dropped", "...")
    assert np.all([isinstance(d.action, Action) for d in ledger.decisions])
