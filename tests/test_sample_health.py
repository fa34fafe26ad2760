"""After sampling the sampler says when the chains disagree or diverge, instead of returning plausible draws."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.sampler.health import RHAT_LIMIT, chain_health, mode_note


def test_chain_health_against_synthetic_chains():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(4, 500, 3))
    h = chain_health(good, np.zeros((4, 500), bool))
    assert h["problems"] == [] and h["max_rhat"] < 1.01 and h["divergence_fraction"] == 0.0
    shifted = good + np.array([0.0, 0.0, 3.0, 3.0])[:, None, None] * np.array([0, 1, 0])  # two chains elsewhere
    div = np.zeros((4, 500), bool)
    div[0, :40] = True  # 2 % divergent
    note = mode_note("stalled at step 9: ...", np.array([7e13, 0.0]), judged_no_mode=False)
    assert note == "the optimizer that gave the start ran off to |θ| = 7e+13 (stalled at step 9)"
    assert mode_note("stalled at step 9: ...", np.array([2.5e6, 1.0]), False) is None  # µas values are fine
    assert mode_note("diverged at step 3: ...", np.ones(2), False).endswith("found no mode (diverged at step 3)")
    assert mode_note("converged", np.ones(2), True).endswith("found no mode (converged)")
    h = chain_health(shifted, div, note)
    assert h["max_rhat"] > RHAT_LIMIT and h["worst_coordinate"] == 1
    assert len(h["problems"]) == 3 and "chains disagree" in h["problems"][0] and "2 %" in h["problems"][1]
    assert h["problems"][2].startswith(note) and "cannot be sampled" in h["problems"][2]
    assert chain_health(shifted, div)["problems"][-1].startswith("2 %")
    bad = good.copy()
    bad[1, 7, 0] = np.nan
    assert chain_health(bad, np.zeros((4, 500), bool))["problems"] == ["1 draws hold non-finite values"]


def test_an_improper_posterior_is_not_returned_silently():
    """log p = θ₀ − θ₁²/2 has no mode: the optimizer runs off, and the sampler's chains drift apart. The run
    must say so (a warning naming R̂ and the optimizer's failure, info['health']), not look 'sampled'."""
    obj = gn.Objective.from_log_prob(lambda t: t[0] - 0.5 * t[1] ** 2, 2)
    fit = gn.optimize(obj, jnp.zeros(2), "lbfgs", num_steps=200)
    assert fit.status != "converged"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = gn.sample(obj, fit, jax.random.key(0), num_samples=200)
    first = post.info["decisions"][0]
    assert first["action"] == "no mode" and "ran off to |θ|" in first["message"]  # no seeded warmup paid for
    problems = post.info["health"]["problems"]
    assert problems and any("found no mode" in p and "cannot be sampled" in p for p in problems)
    assert any(str(w.message).startswith("sampling: ") and "R̂" in str(w.message) for w in caught)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("dim", [3])
def test_a_healthy_run_reports_no_problem(dim):
    obj = gn.Objective.from_log_prob(lambda t: -0.5 * jnp.sum((t - 1.0) ** 2 * jnp.arange(1.0, dim + 1)), dim)
    fit = gn.optimize(obj, jnp.zeros(dim), "lbfgs", num_steps=100, tol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one warning on a Gaussian
        post = gn.sample(obj, fit, jax.random.key(1), num_samples=300)
    assert post.info["health"]["problems"] == [] and post.info["health"]["max_rhat"] < 1.02
