"""gn.sample: moments of known targets, gradient accounting, caching, start forms, bad inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.sampler import metric as mmx

MEAN = np.array([1.0, -2.0, 0.5, 3.0])
_A = np.array([[1.0, 0.0, 0.0, 0.0], [0.8, 0.6, 0.0, 0.0], [0.0, 0.5, 2.0, 0.0], [0.3, 0.0, -0.4, 0.2]])
COV = _A @ _A.T  # correlated, scales 0.2 … 2
TRACES = {"n": 0}


def _log_prob(th):
    TRACES["n"] += 1  # counts traces (Python runs only while JAX traces the function)
    r = th - jnp.asarray(MEAN, th.dtype)
    return -0.5 * r @ jnp.linalg.solve(jnp.asarray(COV, th.dtype), r)


OBJ = gn.Objective.from_log_prob(_log_prob, 4)


@pytest.fixture(scope="module")
def gauss_trace():
    # θ = 0 is not the mode: coordinate 3 sits (3 − 0)/0.54 ≈ 5.6 sd out, which the hand-off reports
    with pytest.warns(UserWarning, match="far in the tails"):
        return gn.sample(
            OBJ, jnp.zeros(4), jax.random.key(0), num_chains=4, num_samples=1000, keep_warmup=True
        )


def _ess(theta):
    import arviz_stats as azs

    return azs.ess(np.asarray(theta, np.float64), chain_axis=0, draw_axis=1, method="bulk")


def test_gaussian_moments_within_monte_carlo_error(gauss_trace):
    tr = gauss_trace
    assert tr.kind == "sampling" and tr.theta.shape == (4, 1000, 4) and tr.log_prob.shape == (4, 1000)
    draws = np.asarray(tr.theta, np.float64).reshape(-1, 4)
    sd = np.sqrt(np.diag(COV))
    ess = _ess(tr.theta)
    assert np.all(ess > 500)
    # mean: |error| < 4 MCSE;   variance: relative error < 4 sqrt(2/ESS)
    assert np.all(np.abs(draws.mean(0) - MEAN) < 4 * sd / np.sqrt(ess))
    assert np.all(np.abs(draws.var(0) / np.diag(COV) - 1) < 4 * np.sqrt(2 / ess))
    corr = np.corrcoef(draws.T)
    true_corr = COV / np.outer(sd, sd)
    assert np.max(np.abs(corr - true_corr)) < 4 * np.sqrt(2 / ess.min())
    # log_prob column is the target at the draws
    lp = np.asarray(jax.vmap(OBJ.log_prob)(jnp.asarray(tr.theta[0, :5])))
    np.testing.assert_allclose(np.asarray(tr.log_prob[0, :5]), lp, rtol=1e-4, atol=1e-4)


def test_stats_names_and_gradient_accounting(gauss_trace):
    tr = gauss_trace
    assert set(tr.stats) == {"acceptance_rate", "diverging", "energy", "n_steps", "step_size", "tree_depth"}
    for v in tr.stats.values():
        assert np.shape(v) == (4, 1000)
    ge = tr.info["grad_evals"]
    assert ge["sampling"] == int(np.sum(tr.stats["n_steps"]))
    assert ge["warmup"] == int(np.sum(tr.warmup["stats"]["n_steps"]))
    assert ge["init"] == 4
    assert ge["curvature"] == 2 * 4  # exact dense Hessian: D HVPs at 2 gradients each
    assert tr.num_grad_evals == sum(ge.values())
    # NUTS: n_steps = 2^depth - 1 at most, and the sampling phase uses one fixed step size
    assert np.all(tr.stats["n_steps"] <= 2 ** tr.stats["tree_depth"])
    assert np.all(tr.stats["step_size"] == tr.info["step_size"])
    assert tr.warmup["theta"].shape == (4, tr.info["num_warmup"], 4)


def test_curvature_seed_is_the_exact_covariance(gauss_trace):
    # for a Gaussian the curvature of −log p is the precision: the dense seed is the covariance itself
    seed = gauss_trace.extras["seed_inverse_mass_matrix"]
    assert gauss_trace.info["metric"]["dense"] is True  # correlated: dense="auto" picks the dense inverse
    np.testing.assert_allclose(seed, COV, rtol=2e-3, atol=2e-3)
    assert gauss_trace.info["num_warmup"] == 300  # seeded: short warmup
    assert gauss_trace.info["handoff"]["metric_ratio_spread"] < 1.3


def test_second_call_does_not_recompile(gauss_trace):
    n = TRACES["n"]
    with pytest.warns(UserWarning, match="far in the tails"):
        tr = gn.sample(OBJ, jnp.zeros(4), jax.random.key(5), num_chains=4, num_samples=1000, keep_warmup=True)
    assert TRACES["n"] == n
    assert not np.array_equal(tr.theta, gauss_trace.theta)  # another key, other draws


def test_map_start_is_not_far_in_the_tails(gauss_trace):
    opt = gn.optimize(OBJ, jnp.zeros(4), "lbfgs", num_steps=100, tol=1e-5)
    tr = gn.sample(OBJ, opt, jax.random.key(6), num_chains=4, num_samples=300)
    assert tr.info["handoff"]["start_max_abs_z"] < 0.5 and tr.info["warnings"] == []
    assert tr.info["init"] == "optimization trace" and tr.info["metric"]["seed"] == "curvature"


def test_start_forms(gauss_trace):
    # per-chain starts are used as given (no jitter): the first warmup draw moves from them
    starts = np.tile(MEAN, (4, 1)) + np.arange(4)[:, None] * 0.1
    tr = gn.sample(
        OBJ,
        starts,
        jax.random.key(1),
        num_chains=4,
        num_samples=10,
        num_warmup=0,
        inverse_mass_matrix=COV,
        kernel=gn.nuts(step_size=0.5),
    )
    assert tr.info["init"] == "per-chain starts" and tr.info["jitter"] is None
    np.testing.assert_allclose(tr.extras["theta_star"], starts[0])
    # an optimization trace: its best θ is the start (the MAP hand-off) and its cost is reported
    opt = gn.optimize(OBJ, jnp.zeros(4), "lbfgs", num_steps=100, tol=1e-5)
    tr = gn.sample(
        OBJ,
        opt,
        jax.random.key(2),
        num_chains=4,
        num_samples=10,
        num_warmup=0,
        inverse_mass_matrix=COV,
        kernel=gn.nuts(step_size=0.5),
    )
    np.testing.assert_allclose(tr.extras["theta_star"], np.asarray(opt.best_theta))
    assert tr.info["grad_evals"]["map"] == opt.num_grad_evals
    assert tr.num_grad_evals == sum(v for k, v in tr.info["grad_evals"].items() if k != "map")
    # a sampling trace continues from its last draws
    tr2 = gn.sample(
        OBJ,
        gauss_trace,
        jax.random.key(3),
        num_chains=4,
        num_samples=10,
        num_warmup=0,
        inverse_mass_matrix=COV,
        kernel=gn.nuts(step_size=0.5),
    )
    assert tr2.info["init"] == "sampling trace"


def test_frozen_metric_keeps_the_seed():
    tr = gn.sample(
        OBJ,
        jnp.asarray(MEAN),
        jax.random.key(4),
        num_chains=2,
        num_samples=50,
        inverse_mass_matrix=COV,
        warmup=gn.warmup(metric="none"),
    )
    assert tr.info["num_warmup"] == 150 and tr.info["metric"]["adapt"] == "none"
    np.testing.assert_allclose(tr.extras["inverse_mass_matrix"], COV, rtol=1e-4, atol=1e-5)


def test_hmc_counts_its_leapfrog_steps():
    tr = gn.sample(
        OBJ,
        jnp.asarray(MEAN),
        jax.random.key(7),
        num_chains=2,
        num_samples=400,
        kernel=gn.hmc(num_integration_steps=8),
        num_warmup=200,
    )
    assert "tree_depth" not in tr.stats and np.all(tr.stats["n_steps"] == 8)
    assert tr.info["grad_evals"]["sampling"] == 2 * 400 * 8 and tr.info["grad_evals"]["warmup"] == 2 * 200 * 8
    draws = np.asarray(tr.theta, np.float64).reshape(-1, 4)
    assert np.all(np.abs(draws.mean(0) - MEAN) < 0.5 * np.sqrt(np.diag(COV)))


def test_dense_adaptation_from_the_identity_estimates_the_covariance():
    # no curvature: unit dense seed, full 1000-step warmup, pooled dense Welford over the 4 chains
    tr = gn.sample(
        OBJ,
        jnp.asarray(MEAN),
        jax.random.key(8),
        num_chains=4,
        num_samples=100,
        inverse_mass_matrix=None,
        warmup="dense",
    )
    assert tr.info["num_warmup"] == 1000 and tr.info["metric"]["seed"] == "identity"
    imm = tr.extras["inverse_mass_matrix"]
    sd = np.sqrt(np.diag(COV))
    assert imm.shape == (4, 4)
    assert np.max(np.abs(imm - COV) / np.outer(sd, sd)) < 0.25


# ------------------------------------------------------------------------------------------ mass matrices
def test_marginal_versus_conditional_variances():
    prec = np.linalg.inv(COV)
    m = mmx.from_precision_matrix(prec, dense=False)
    np.testing.assert_allclose(m.matrix, np.diag(COV), rtol=1e-8)  # marginal diag(H⁻¹), not 1/diag(H)
    c = mmx.from_precision_diag(np.diag(prec))
    np.testing.assert_allclose(c.matrix, 1 / np.diag(prec), rtol=1e-12)
    assert np.all(c.matrix <= m.matrix + 1e-12)  # conditional ≤ marginal
    vif = np.diag(prec) * np.diag(COV)
    assert m.info["vif_max"] == pytest.approx(vif.max())
    d = mmx.from_precision_matrix(prec, dense=True)
    np.testing.assert_allclose(d.matrix, COV, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(d.factor @ d.factor.T, COV, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(d.factor_inv @ d.factor, np.eye(4), atol=1e-10)


def test_negative_and_degenerate_curvature_are_replaced():
    v = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    h = (v * np.array([4.0, -1.0, 0.0])) @ v.T  # one negative, one flat direction
    m = mmx.from_precision_matrix(h, dense=True)
    assert m.info["num_negative_eigenvalues"] == 1 and m.info["num_degenerate_eigenvalues"] == 1
    # the repair acts on the diagonally normalised H_n = S H S (S = diag(1/√|H_ii|)): negative eigenvalues
    # are flipped, the flat one gets the median of the others
    s = 1 / np.sqrt(np.abs(np.diag(h)))
    lam = np.linalg.eigvalsh(h * s[:, None] * s[None, :])
    flat = np.argmin(np.abs(lam))
    good = np.abs(np.delete(lam, flat))
    expected = np.sort(np.append(good, np.median(good)))
    w = np.linalg.eigvalsh(s[:, None] * np.linalg.inv(m.matrix) * s[None, :])
    np.testing.assert_allclose(np.sort(w), expected, rtol=1e-8)
    c = mmx.from_precision_diag(np.array([4.0, -1.0, np.nan, 1.0]))
    assert c.info["num_replaced"] == 2 and np.all(np.isfinite(c.matrix)) and np.all(c.matrix > 0)


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_give_clear_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"init has shape \(3,\).*expected a θ of shape \(4,\)"):
        gn.sample(OBJ, jnp.zeros(3), key)
    with pytest.raises(ValueError, match=r"per-chain starts of shape \(2, 4\)"):
        gn.sample(OBJ, jnp.zeros((3, 4)), key, num_chains=2)
    with pytest.raises(ValueError, match="unknown kernel 'mala'"):
        gn.sample(OBJ, jnp.zeros(4), key, kernel="mala")
    with pytest.raises(ValueError, match="unknown metric 'full'"):
        gn.sample(OBJ, jnp.zeros(4), key, warmup=gn.warmup(metric="full"))
    with pytest.raises(ValueError, match="unknown inverse_mass_matrix 'fisher'"):
        gn.sample(OBJ, jnp.zeros(4), key, inverse_mass_matrix="fisher")
    with pytest.raises(ValueError, match="inverse mass matrix has dimension 3"):
        gn.sample(OBJ, jnp.zeros(4), key, inverse_mass_matrix=np.ones(3))
    with pytest.raises(ValueError, match="positive definite"):
        gn.sample(OBJ, jnp.zeros(4), key, inverse_mass_matrix=-np.eye(4))
    with pytest.raises(ValueError, match="num_samples must be an int"):
        gn.sample(OBJ, jnp.zeros(4), key, num_samples=0)
    with pytest.raises(ValueError, match="key must be a jax PRNG key"):
        gn.sample(OBJ, jnp.zeros(4), "seed")
    with pytest.raises(ValueError, match="gnomon.Objective"):
        gn.sample(_log_prob, jnp.zeros(4), key)


def test_non_finite_start_names_the_chain():
    obj = gn.Objective.from_log_prob(lambda th: jnp.where(th[0] > 0, -0.5 * jnp.sum(th**2), -jnp.inf), 2)
    starts = jnp.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])
    with pytest.raises(ValueError, match=r"chain 1 starts where the target has log_prob = -inf"):
        gn.sample(obj, starts, jax.random.key(0), num_chains=3, inverse_mass_matrix=None)


def test_float64_is_respected():
    with jax.enable_x64(True):
        obj = gn.Objective.from_log_prob(lambda th: -0.5 * jnp.sum(th**2), 2)
        tr = gn.sample(obj, jnp.zeros(2, jnp.float64), jax.random.key(0), num_chains=2, num_samples=50)
    assert tr.theta.dtype == np.float64 and tr.log_prob.dtype == np.float64
    assert tr.extras["inverse_mass_matrix"].dtype == np.float64


def test_curvature_metric_survives_parameters_in_very_different_units():
    """Regression: a float32 Fisher whose diagonal spans 12 decades (units, not degeneracy) keeps every
    direction; the metric equals the exact inverse (marginal variances and dense)."""
    from gnomon.sampler.metric import from_precision_matrix

    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    scale = np.diag(10.0 ** np.arange(-6, 6, 2))
    h = scale @ (a @ a.T + 6 * np.eye(6)) @ scale
    h_inv = np.linalg.inv(h)
    diag = from_precision_matrix(h.astype(np.float32), dense=False)
    assert diag.info["num_degenerate_eigenvalues"] == 0
    np.testing.assert_allclose(diag.matrix, np.diag(h_inv), rtol=1e-4)
    dense = from_precision_matrix(h.astype(np.float32), dense=True)
    np.testing.assert_allclose(dense.matrix, h_inv, rtol=1e-4, atol=1e-4 * np.abs(h_inv).max())
    np.testing.assert_allclose(dense.factor @ dense.factor.T, h_inv, rtol=1e-4, atol=1e-4 * np.abs(h_inv).max())
