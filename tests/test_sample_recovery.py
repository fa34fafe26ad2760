"""The seed is a hypothesis: kept where the curvature describes the posterior, abandoned and recovered from
where it does not (a centred hierarchical model whose mode is in the neck, a funnel), and no mode at all."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.engines import seed_check as sc

SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], np.float32)
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], np.float32)


def _schools(th):
    """Centred eight schools with log τ ~ N(5, 1) (inference-gym's): the mode sits in the neck, log τ ≈ −3."""
    mu, log_tau, t = th[0], th[1], th[2:]
    lp = -0.5 * (mu / 10.0) ** 2 - 0.5 * (log_tau - 5.0) ** 2
    lp = lp + jnp.sum(-0.5 * ((t - mu) / jnp.exp(log_tau)) ** 2 - log_tau)
    return lp + jnp.sum(-0.5 * ((SCHOOLS_Y - t) / SCHOOLS_SIGMA) ** 2)


def _funnel(th, scale=1.5):
    """A funnel, v ~ N(0, 1.5²), x_i | v ~ N(0, e^{v/2}): its mode sits at v = −1.5²·9/2 ≈ −10."""
    v, x = th[0], th[1:]
    return -0.5 * (v / scale) ** 2 - 0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * x.shape[0] * v


SCHOOLS = gn.Objective.from_log_prob(_schools, 10)
FUNNEL = gn.Objective.from_log_prob(_funnel, 10)


def _ess(theta):
    import arviz_stats as azs

    return float(np.min(azs.ess(np.asarray(theta, np.float64), chain_axis=0, draw_axis=1, method="bulk")))


def _cost_per_ess(obj, keys):
    """(hand-off, cold start) gradients per effective sample, pooled over ``keys``: the hand-off counts the
    MAP, curvature, seed check and recovery; the cold start is Stan's window adaptation (1000 steps, the
    draws' variances) from the optimizer's start with the identity metric."""
    fit = gn.optimize(obj, jnp.zeros(obj.dim), "lbfgs", num_steps=500, tol=1e-3)
    hand = cold = None
    grads = np.zeros(2)
    ess = np.zeros(2)
    for k in keys:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hand = gn.sample(obj, fit, jax.random.key(k))
            cold = gn.sample(obj, jnp.zeros(obj.dim), jax.random.key(k), inverse_mass_matrix=None, warmup="diag")
        grads += [hand.num_grad_evals + fit.num_grad_evals, cold.num_grad_evals]
        ess += [_ess(hand.theta), _ess(cold.theta)]
    return grads / ess, hand, cold


@pytest.mark.parametrize("obj", [SCHOOLS, FUNNEL], ids=["centred_schools", "funnel"])
def test_rejected_seed_recovers_at_the_cost_of_a_cold_start(obj):
    (hand_cost, cold_cost), hand, cold = _cost_per_ess(obj, keys=(1, 2))
    actions = [d["action"] for d in hand.info["decisions"]]
    assert actions[:2] == ["seed rejected", "recovery"], hand.info["decisions"]
    first = hand.info["decisions"][0]
    assert first["step"] in (sc.EARLY_STEPS, sc.CHECK_STEPS) and "leapfrog steps per draw" in first["message"]
    assert hand.info["recovered"] and hand.info["rejected_grad_evals"] > 0
    # the failed part is cheap: the check ran with the depth capped
    cap = 2 ** sc.check_depth(obj.dim, 10) - 1
    assert hand.info["rejected_grad_evals"] <= 4 * sc.CHECK_STEPS * cap
    print(f"gradients per effective sample: hand-off {hand_cost:.1f}, cold start {cold_cost:.1f}")
    assert hand_cost <= 1.1 * cold_cost, (hand_cost, cold_cost)
    # and it is right: no worse mixing than the cold start
    assert np.max(np.asarray(jax.device_get(hand.stats["diverging"]))) <= 1


def test_the_summary_says_what_was_decided(tmp_path):
    fit = gn.optimize(SCHOOLS, jnp.zeros(10), "lbfgs", num_steps=500, tol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = gn.sample(SCHOOLS, fit, jax.random.key(3), num_samples=200)
    run = gn.load_run(gn.HandOff.from_trace(post).save_run(tmp_path / "run", post))
    s = run.summary
    assert s["seed_rejected"] is True and s["recovered"] is True and s["rejected_grad_evals"] > 0
    assert "seed rejected after 10 warmup steps" in s["sampler_decisions"]
    assert s["compile_s"] >= 0 and s["run_s"] > 0
    assert gn.HandOff.load(run).info["decisions"][0]["action"] == "seed rejected"


def test_no_mode_skips_the_seed():
    """Stan's centred eight schools (half-Cauchy on τ) has no mode: L-BFGS runs into the neck, gaining log
    density without end; the sampler then pays for no seed and no check."""

    def half_cauchy(th):
        mu, log_tau, t = th[0], th[1], th[2:]
        tau = jnp.exp(log_tau)
        lp = -0.5 * (mu / 5.0) ** 2 - jnp.log1p((tau / 5.0) ** 2) + log_tau
        lp = lp + jnp.sum(-0.5 * ((t - mu) / tau) ** 2 - log_tau)
        return lp + jnp.sum(-0.5 * ((SCHOOLS_Y - t) / SCHOOLS_SIGMA) ** 2)

    obj = gn.Objective.from_log_prob(half_cauchy, 10)
    fit = gn.optimize(obj, jnp.zeros(10), "lbfgs", num_steps=500, tol=1e-3)
    assert fit.status != "converged"
    post = gn.sample(obj, fit, jax.random.key(0), num_samples=300)
    actions = [d["action"] for d in post.info["decisions"]]
    assert actions[:2] == ["no mode", "recovery"]
    assert post.info["rejected_grad_evals"] == 0 and post.info["metric"]["seed"] == "identity"
    assert post.info["grad_evals"]["curvature"] == 0
