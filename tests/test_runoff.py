"""The run-off stop (issue 20, item 4): an optimizer chasing a neck — a density without a mode, whose loss falls by a
constant number of nats per unit of a log-scale for ever — stops within a bounded number of gradients with status
code ``ran_off`` and a sentence naming the coordinate; the sampler treats it as no mode. A well-posed problem never
fires it."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import gnomon as gn
from gnomon.optim import StatusCode, status_code
from gnomon.optim import runoff as ro
from gnomon.sampler import starts

Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def _schools(sigma, y=None):  # the centred eight schools with a half-Cauchy τ: no mode (as tests/test_sample_health.py)
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", 8):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def schools_log_prob(prior: str):
    """θ = (μ, log τ, θ_1..8), centred; τ half-Cauchy(5) (no mode) or log τ ~ N(5, sd) (inference-gym's: its mode is
    at log τ ≈ −3, in the neck, for sd = 1 — or the data of ``log_prob(θ, sd)``: with sd 1e3 the prior is flat over
    any reachable log τ, and there is no mode within reach)."""
    y, s = jnp.asarray(Y), jnp.asarray(SIGMA)

    def log_prob(th, sd=1.0):
        mu, log_tau, t = th[0], th[1], th[2:]
        tau = jnp.exp(log_tau)
        if prior == "half-cauchy":
            lp = -jnp.log1p((tau / 5.0) ** 2) + log_tau
        else:
            lp = -0.5 * ((log_tau - 5.0) / sd) ** 2
        lp = lp - 0.5 * (mu / 5.0) ** 2 + jnp.sum(-0.5 * ((t - mu) / tau) ** 2 - log_tau)
        return lp + jnp.sum(-0.5 * ((y - t) / s) ** 2)

    return log_prob


METHODS = [("lbfgs", {}), ("lbfgs", {"linesearch": "backtracking"}), ("preconditioned_gd", {})]


@pytest.mark.parametrize("method,options", METHODS)
def test_the_centred_schools_without_a_mode_run_off_within_a_gradient_budget(method, options):
    obj = gn.Objective.from_numpyro(_schools, jnp.asarray(SIGMA), jnp.asarray(Y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = gn.optimize(obj, jnp.zeros(10), method, num_steps=500, tol=1e-3, **options)  # runoff: on (numpyro)
        chase = gn.optimize(obj, jnp.zeros(10), method, num_steps=500, tol=1e-3, runoff=False, **options)
    assert status_code(fit) == StatusCode.RAN_OFF and fit.info["status_code"] == "ran_off", fit.status
    assert fit.status.startswith("ran off at step") and "along tau" in fit.status  # the log-scale, named
    assert fit.info["runoff"] and fit.num_grad_evals <= 200, fit.num_grad_evals  # measured 44–87
    assert status_code(chase) != StatusCode.RAN_OFF and chase.num_grad_evals > 2 * fit.num_grad_evals
    # it stopped where the loss still fell: the last row is the best one, log τ far below its start
    assert float(fit.loss[-1]) == float(np.nanmin(fit.loss)) and float(fit.theta[-1, 1]) < -3
    # the sampler takes it as no mode: no seed from a point in the neck
    reason = starts.no_mode(starts.resolve_init(obj, fit, 4), obj.dim)
    assert reason is not None and "did not reach a mode (ran off" in reason


@pytest.mark.parametrize("method,options", METHODS + [("gd", {})])
def test_well_posed_problems_never_run_off(method, options):
    """A centred eight schools with a log-normal τ (a mode in the neck), a logistic regression and a Gaussian whose
    mode is 5 units away: every method reaches the mode without the stop firing (it is forced on)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 4))
    yb = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.logistic(size=200) > 0).astype(float)
    xj, yj = jnp.asarray(x), jnp.asarray(yb)
    problems = {
        "log-normal schools": (schools_log_prob("log-normal"), jnp.zeros(10)),
        "logistic": (lambda w: jnp.sum(yj * (xj @ w) - jnp.logaddexp(0.0, xj @ w)) - 0.5 * jnp.sum(w**2), jnp.zeros(4)),
        "gaussian 5 away": (lambda t: -0.5 * jnp.sum(((t - 5.0) / jnp.array([0.3, 1.0, 3.0])) ** 2), jnp.zeros(3)),
    }
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (lp, x0) in problems.items():
            obj = gn.Objective.from_log_prob(lp, x0.shape[0])
            fit = gn.optimize(obj, x0, method, num_steps=500, tol=1e-6, runoff=True, **options)
            assert status_code(fit) != StatusCode.RAN_OFF, (name, fit.status)
            if name == "gaussian 5 away" and method != "gd":  # (gd creeps along the 3-sd axis)
                np.testing.assert_allclose(fit.best_theta, 5.0, atol=1e-4)


def test_a_batch_stops_only_the_members_that_run_off(tmp_path):
    """One compiled program, the prior's sd on log τ as data: the member with sd 1e3 (flat: no mode within reach)
    runs off, the one with sd 1 converges; each member's code is its own (info, batch[i], summary.json)."""
    obj = gn.Objective.from_log_prob(schools_log_prob("log-normal"), 10, takes_data=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = gn.optimize_batch(obj, jnp.zeros((2, 10)), "lbfgs", num_steps=500, tol=1e-3,
                                  data=jnp.array([1e3, 1.0]))
        single = gn.optimize(obj, jnp.zeros(10), "lbfgs", num_steps=500, tol=1e-3, data=jnp.asarray(1e3))
    assert batch.info["status_code"] == ["ran_off", "converged"], batch.status
    assert status_code(batch) == (StatusCode.RAN_OFF, StatusCode.CONVERGED)
    assert status_code(batch[0]) == StatusCode.RAN_OFF and batch.status[0].startswith("ran off")
    assert status_code(batch[1]) == StatusCode.CONVERGED and batch.status[1] == "converged"
    assert status_code(single) == StatusCode.RAN_OFF  # as the member does (float32 paths differ under vmap)
    assert int(batch.extras["num_rows"][0]) < 250  # it stopped long before num_steps
    for i, code in enumerate(("ran_off", "converged")):
        gn.save_run(tmp_path / str(i), batch[i])
        assert gn.load_run(tmp_path / str(i)).summary["status_code"] == code


def test_on_by_default_only_for_log_densities():
    assert ro.enabled(gn.Objective.from_log_prob(lambda t: -jnp.sum(t**2), 2), None)
    assert not ro.enabled(gn.Objective.from_loss(lambda t: jnp.sum(t**2), 2), None)
    assert not ro.enabled(gn.Objective.from_residuals(lambda t: t, 2), None)
    assert ro.enabled(gn.Objective.from_loss(lambda t: jnp.sum(t**2), 2), True)
    with pytest.raises(ValueError, match="runoff must be True, False or None"):
        gn.optimize(lambda t: jnp.sum(t**2), jnp.ones(2), runoff="yes")
    # a loss of its own (from_loss) chasing the same neck is followed unless asked: off by default
    obj = gn.Objective.from_loss(lambda th: -schools_log_prob("half-cauchy")(th), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = gn.optimize(obj, jnp.zeros(10), "lbfgs", num_steps=40, linesearch="backtracking")
    assert status_code(fit) == StatusCode.MAX_STEPS and fit.info["runoff"] is False


def test_the_detector_on_a_synthetic_path():
    """The test itself, step by step: a coordinate moving 0.4 a step while the loss falls 7 per unit fires once it
    has covered three steady segments over ten improving points; the same path slowing down does not; a
    non-improving point changes nothing."""
    def walk(slopes):
        s = ro.init(jnp.zeros(2))
        f = 0.0
        fired = []
        for k, slope in enumerate(slopes):
            x = jnp.array([-0.4 * k, 0.01 * (k % 2)])
            s = ro.update(s, x, jnp.asarray(f), jnp.asarray(True))
            fired.append(bool(np.any(ro.fired(s))))
            f -= 0.4 * slope
        return s, fired

    s, fired = walk([7.0] * 12)
    first = fired.index(True)
    assert first == max(ro.MIN_POINTS, int(np.ceil(ro.SEGMENTS * ro.SEGMENT / 0.4))), fired
    i, moved, fell, points = (np.asarray(v) for v in ro.finding(s))
    assert i == 0 and moved >= ro.SEGMENTS * ro.SEGMENT and fell == pytest.approx(7.0 * moved, rel=1e-5)
    _, fired = walk([7.0 * 0.8**k for k in range(40)])  # a bowl: the fall per unit shrinks
    assert not any(fired)
    same = ro.update(s, jnp.array([5.0, 5.0]), jnp.asarray(1e9), jnp.asarray(True))  # a worse point: ignored
    assert all(bool(jnp.all(a == b)) for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(s), strict=True))
