"""Typed status codes (issue 19, item 3, the optimizer's side): every way a fit ends has a StatusCode beside its
sentence — in ``info["status_code"]`` (one per member for a batch), in summary.json, for a member of a batch — and
the code agrees with the sentence; a sentence without its code (an older run) still reads as the right code."""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp

import gnomon as gn
from gnomon.optim import StatusCode, status_code
from gnomon.optim.status import code_of


def _fits() -> dict[StatusCode, gn.Trace]:
    quad = gn.Objective.from_loss(lambda t: 0.5 * jnp.sum(jnp.arange(1.0, 4.0) * (t - 1.0) ** 2), 3)
    saddle = gn.Objective.from_loss(lambda t: t[0] ** 2 - t[1] ** 2 + t[1] ** 4, 2)
    far = gn.Objective.from_loss(lambda t: 0.5 * jnp.sum(jnp.arange(1.0, 4.0) * (t - (1e4 + 0.1)) ** 2), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            StatusCode.CONVERGED: gn.optimize(quad, jnp.zeros(3), tol=1e-8),
            StatusCode.MAX_STEPS: gn.optimize(quad, jnp.zeros(3), "gd", learning_rate=1e-3, num_steps=5),
            StatusCode.STALLED: gn.optimize(far, jnp.full(3, 1e4 + 1.0, jnp.float32), "gd", learning_rate=0.3,
                                            num_steps=300),  # float32 steps fall below θ's resolution at 1e4
            StatusCode.DIVERGED: gn.optimize(quad, jnp.zeros(3), "gd", learning_rate=1e3, safeguard="none",
                                             num_steps=200),
            StatusCode.NO_PROGRESS: gn.optimize(quad, jnp.full(3, 1e4, jnp.float32), "gd", learning_rate=1e-12,
                                                num_steps=500),
            StatusCode.SADDLE_POINT: gn.optimize(saddle, jnp.array([1.0, 0.0]), "lbfgs", num_steps=100, tol=1e-10),
            StatusCode.RAN_OFF: gn.optimize(gn.Objective.from_log_prob(lambda t: t[0] - 0.5 * t[1] ** 2, 2),
                                            jnp.zeros(2), "lbfgs", linesearch="backtracking", num_steps=200),
        }


def test_every_ending_has_its_code_beside_its_sentence(tmp_path):
    with jax.enable_x64(True):
        fits = _fits()
    for code, tr in fits.items():
        assert tr.info["status_code"] == code and status_code(tr) is code, (code, tr.status)
        assert code_of(tr.status) is code, (code, tr.status)  # the sentence says the same
        assert tr.converged == (code is StatusCode.CONVERGED) and tr.diverged == (code is StatusCode.DIVERGED)
        gn.save_run(tmp_path / code.value, tr)
        summary = json.loads((tmp_path / code.value / "summary.json").read_text())
        assert summary["status_code"] == code.value and summary["status"] == tr.status
    assert fits[StatusCode.RAN_OFF].status.startswith("ran off at step") and "θ[0]" in fits[StatusCode.RAN_OFF].status
    # a trace written before codes existed: read from its sentence
    old = gn.load_run(tmp_path / "saddle_point").trace
    info = {k: v for k, v in old.info.items() if k != "status_code"}
    from dataclasses import replace

    assert status_code(replace(old, info=info)) is StatusCode.SADDLE_POINT
    assert code_of("stalled at step 3: ...") is StatusCode.STALLED and code_of("warmup") is None
    assert StatusCode("ran_off") is StatusCode.RAN_OFF and json.dumps(StatusCode.RAN_OFF) == '"ran_off"'


def test_a_batch_has_a_code_per_member_and_a_continuation_takes_the_latest(tmp_path):
    quad = gn.Objective.from_loss(lambda t, c: 0.5 * jnp.sum((t - c) ** 2), 2, takes_data=True)
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = gn.optimize_batch(quad, jnp.zeros((2, 2)), "gd", learning_rate=0.5, tol=1e-6, num_steps=30,
                                  data=jnp.array([[1.0, 1.0], [jnp.nan, 0.0]]).at[1, 0].set(1e300))
        assert batch.info["status_code"] == [StatusCode.CONVERGED, StatusCode.DIVERGED], batch.status
        assert status_code(batch) == (StatusCode.CONVERGED, StatusCode.DIVERGED)
        assert status_code(batch[1]) is StatusCode.DIVERGED and batch[1].status.startswith("diverged")
        gn.save_run(tmp_path / "m1", batch[1])
        assert gn.load_run(tmp_path / "m1").summary["status_code"] == "diverged"
        first = gn.optimize(quad, jnp.zeros(2), "gd", learning_rate=0.1, num_steps=3, data=jnp.ones(2))
        more = gn.optimize(quad, first, "gd", learning_rate=0.5, tol=1e-8, data=jnp.ones(2))
    assert status_code(first) is StatusCode.MAX_STEPS and status_code(more) is StatusCode.CONVERGED
