"""One curvature rule for every consumer, and the fallback chain when an estimate is not finite.

The NaN-Hessian model below reproduces on every machine what dLux's optics do on some CPUs: its gradient and its
Jacobian are finite, its forward-over-reverse derivatives (Hessian-vector products) are NaN (a custom JVP whose
Jacobian passes through a value with NaN tangents: 0·∞ in the second derivative only).
"""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.curvature.choice import auto_method, choose_curvature, fallback_chain
from gnomon.sampler.metric import default_curvature_method


@jax.custom_jvp
def _nan_tangent(x):
    return x


@_nan_tangent.defjvp
def _nan_tangent_jvp(primals, tangents):
    return primals[0], tangents[0] * jnp.nan


X = np.random.default_rng(0).normal(size=(60, 3)) * 0.5
TRUTH = np.array([0.5, -0.2, 1.0])


@jax.custom_jvp
def glm_mean(theta):
    """A Poisson GLM mean exp(Xθ) whose first derivatives are exact and whose second derivatives are NaN."""
    return jnp.exp(jnp.asarray(X, theta.dtype) @ theta)


@glm_mean.defjvp
def _glm_mean_jvp(primals, tangents):
    (th,), (dth,) = primals, tangents
    x = jnp.asarray(X, th.dtype)
    return glm_mean(th), jnp.exp(x @ _nan_tangent(th)) * (x @ dth)


Y = np.random.default_rng(1).poisson(np.exp(X @ TRUTH)).astype(float)


def poisson_nll(theta):
    mu = glm_mean(theta)
    return jnp.sum(mu - jnp.asarray(Y, theta.dtype) * jnp.log(mu))


def glm_mle():
    """Newton's method with the closed-form gradient and Hessian of the Poisson GLM (float64, numpy)."""
    th = np.zeros(3)
    for _ in range(50):
        mu = np.exp(X @ th)
        th = th - np.linalg.solve(X.T @ (mu[:, None] * X), X.T @ (mu - Y))
    mu = np.exp(X @ th)
    return th, X.T @ (mu[:, None] * X)  # the MLE and the Hessian (= the expected Fisher) there


def test_the_model_has_a_nan_hessian_and_finite_gradients_on_every_machine():
    with jax.enable_x64(True):
        th = jnp.asarray(TRUTH)
        assert np.all(np.isfinite(jax.grad(poisson_nll)(th)))
        assert np.all(np.isfinite(jax.jacfwd(glm_mean)(th)))
        assert np.all(np.isnan(jax.hessian(poisson_nll)(th)))


def test_one_rule_picks_the_curvature_by_what_the_objective_knows():
    lay = gn.Layout({"a": (), "b": ()})
    lik = gn.Objective.from_likelihood(lambda t: jnp.exp(t[0]) + 0 * t[1] + jnp.ones(4), np.ones(4), "poisson", lay)
    gauss = gn.Objective.from_likelihood(lambda t: t[0] + t[1] + jnp.zeros(4), np.ones(4), gn.family.gaussian(1.0),
                                         lay)
    res = gn.Objective.from_residuals(lambda t: t - 1.0, 2)
    small = gn.Objective.from_loss(lambda t: jnp.sum(t**2), 16)
    big = gn.Objective.from_loss(lambda t: jnp.sum(t**2), 17)
    assert [auto_method(o) for o in (lik, gauss, res, small, big)] == [
        "fisher", "fisher", "gauss_newton", "exact", "hutchinson"]  # a Gaussian likelihood has residuals too
    assert gn.optim.curvature_estimator(lik).method == "fisher"
    # the sampler's metric asks the same rule (its "exact" limit is the dense one)
    assert default_curvature_method(lik) == ("fisher", True)
    assert default_curvature_method(big) == ("exact", True)
    assert default_curvature_method(big, max_dense_dim=10) == ("hutchinson", False)
    assert fallback_chain(lik, "fisher") == ("exact", "finite_difference", "identity")
    assert fallback_chain(big, "hutchinson") == ("finite_difference", "identity")
    tr = gn.optimize(lik, jnp.array([0.3, 0.1]), "preconditioned_gd", num_steps=5)
    assert tr.info["curvature"]["method"] == "fisher" and tr.info["curvature"]["chosen"] == "auto"
    assert tr.info["curvature"]["fallback"] is None
    with jax.enable_x64(True):
        g = gn.Objective.from_likelihood(glm_mean, Y, "poisson", 3)
        assert gn.cramer_rao(g, jnp.asarray(TRUTH)).method == "fisher"


def test_finite_differences_of_the_gradient_match_the_hessian():
    with jax.enable_x64(True):
        a = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 5.0]])
        obj = gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(a) @ t + jnp.sum(jnp.cosh(t)), 3)
        th = jnp.array([0.3, -2.0, 4.0])  # steps scale with |θ|
        c = gn.estimate_curvature(obj, th, "finite_difference", dense=True)
        np.testing.assert_allclose(c.matrix, jax.hessian(obj.loss)(th), rtol=1e-6)
        assert c.num_grad_evals == 6 and c.method == "finite_difference"


def test_a_nan_hessian_is_an_error_that_names_the_cause_and_the_fix_when_asked_for_by_name():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(poisson_nll, 3)
        with pytest.raises(ValueError, match=r"every entry of the exact curvature is non-finite at θ: Hessian-vector "
                                             r"products .* dLux .*'finite_difference'"):
            gn.estimate_curvature(obj, jnp.asarray(TRUTH), "exact")


def test_the_chain_falls_back_to_gradient_differences_with_a_warning_and_a_record():
    with jax.enable_x64(True):
        mle, hess = glm_mle()
        obj = gn.Objective.from_loss(poisson_nll, 3)
        with pytest.warns(RuntimeWarning, match=r"the exact curvature had 3 of 3 diagonal entries non-finite at θ "
                                                r"\(Hessian-vector products.*used the finite_difference curvature "
                                                r"instead. Choose with curvature="):
            c = choose_curvature(obj, jnp.asarray(mle))
        assert c.method == "finite_difference" and c.config["chosen"] == "auto"
        assert c.config["fallback"]["from"] == "exact" and c.config["fallback"]["tried"][0]["num_nonfinite"] == 3
        np.testing.assert_allclose(c.diag, np.diag(hess), rtol=1e-6)
        assert c.num_grad_evals == 2 * 3 + 2 * 3  # the exact attempt is paid for too
        # a likelihood objective gets its Fisher, which is finite: no fallback, no warning
        lik = gn.Objective.from_likelihood(glm_mean, Y, "poisson", 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            f = choose_curvature(lik, jnp.asarray(mle), dense=True)
        assert f.method == "fisher" and f.config["fallback"] is None
        np.testing.assert_allclose(f.matrix, hess, rtol=1e-10)


def test_nothing_finite_is_an_error_that_names_the_cause_and_the_fix():
    obj = gn.Objective.from_loss(lambda t: jnp.sum(jnp.sqrt(t) ** 3), 2)  # NaN gradient for θ < 0
    with pytest.raises(ValueError, match=r"no curvature is finite at θ: exact 2 of 2 non-finite, finite_difference 2 "
                                         r"of 2 non-finite; the gradient is not finite at or next to θ .*"
                                         r"\(curvature=<Curvature or array>\)"):
        choose_curvature(obj, -jnp.ones(2))


@pytest.mark.parametrize("method", ["preconditioned_gd", "lbfgs"])
def test_defaults_reach_the_mle_on_a_model_whose_hessian_is_nan(method, tmp_path):
    """Through the documented path with defaults only: a likelihood objective preconditions with its Fisher; a loss
    objective falls back to gradient differences, says so and records it in info and summary.json. Both reach the
    MLE from a start several standard errors away."""
    with jax.enable_x64(True):
        mle, hess = glm_mle()
        sd = np.sqrt(np.diag(np.linalg.inv(hess)))
        start = jnp.asarray(mle + np.array([6.0, -5.0, 8.0]) * sd)
        lik = gn.Objective.from_likelihood(glm_mean, Y, "poisson", 3)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            fit = gn.optimize(lik, start, method, num_steps=200, tol=1e-8)
        assert fit.status == "converged" and fit.info["curvature"]["method"] == "fisher"
        assert np.max(np.abs(np.asarray(fit.best_theta) - mle) / sd) < 0.05
        assert fit.info["stationary_check"]["result"] == "minimum"  # from gradients: no NaN, no false alarm
        loss = gn.Objective.from_loss(poisson_nll, 3)
        with pytest.warns(RuntimeWarning, match="used the finite_difference curvature instead"):
            fit2 = gn.optimize(loss, start, method, num_steps=200, tol=1e-8)
        assert fit2.status == "converged"
        assert np.max(np.abs(np.asarray(fit2.best_theta) - mle) / sd) < 0.05
        cinfo = fit2.info["curvature"]
        assert cinfo["method"] == "finite_difference" and cinfo["fallback"]["from"] == "exact"
        assert "Hessian-vector products" in cinfo["fallback"]["reason"]
        gn.save_run(tmp_path / "run", fit2)
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["curvature_method"] == "finite_difference"
        assert summary["curvature_fallback"].startswith("the exact curvature had 3 of 3")


def test_batches_and_refreshes_fall_back_too():
    with jax.enable_x64(True):
        mle, hess = glm_mle()
        sd = np.sqrt(np.diag(np.linalg.inv(hess)))
        loss = gn.Objective.from_loss(poisson_nll, 3)
        starts = jnp.asarray(mle + np.array([[4.0, 0, 0], [0, -4.0, 0], [0, 0, 4.0]]) * sd)
        with pytest.warns(RuntimeWarning, match=r"non-finite at θ of members 0, 1, 2 \(of 3\)"):
            batch = gn.optimize_batch(loss, starts, "preconditioned_gd", num_steps=200, tol=1e-8)
        assert batch.status == ("converged",) * 3 and batch.info["curvature"]["method"] == "finite_difference"
        assert np.max(np.abs(np.asarray(batch.best_theta) - mle) / sd) < 0.05
        # a refreshed preconditioner is planned again for the method that worked
        with pytest.warns(RuntimeWarning, match="finite_difference"):
            ref = gn.optimize(loss, starts[0], "preconditioned_gd", refresh_every=5, num_steps=200, tol=1e-8)
        assert ref.status == "converged" and ref.info["curvature"]["method"] == "finite_difference"
        assert ref.info["curvature"]["refresh_cost"] == 6


def test_the_sampler_seed_falls_back_and_names_the_knobs():
    with jax.enable_x64(True):
        mle, hess = glm_mle()
        loss = gn.Objective.from_loss(poisson_nll, 3)
        with pytest.warns(RuntimeWarning, match=r"used the finite_difference curvature instead. Choose with "
                                                r"gn.warmup\(curvature=...\) or inverse_mass_matrix="):
            post = gn.sample(loss, init=jnp.asarray(mle), key=jax.random.key(0), num_chains=2, num_warmup=100,
                             num_samples=100)
        assert post.info["metric"]["seed"] == "curvature"
        assert post.info["curvature"]["method"] == "finite_difference"
        assert post.info["curvature"]["fallback"]["from"] == "exact"
        seed = np.asarray(post.extras["seed_inverse_mass_matrix"])
        np.testing.assert_allclose(np.diagonal(seed) if seed.ndim == 2 else seed, np.diag(np.linalg.inv(hess)),
                                   rtol=1e-4)


def test_gd_says_when_its_lambda_max_bound_is_not_finite():
    """gd without a learning rate bounds η by 1/λ_max from Hessian-vector products: NaN on this model, so η0 = 1
    under backtracking, and the run says so instead of hiding it behind a None in info."""
    with jax.enable_x64(True):
        mle, _ = glm_mle()
        loss = gn.Objective.from_loss(poisson_nll, 3)
        with pytest.warns(RuntimeWarning, match="λ_max bound of the learning rate is not finite"):
            tr = gn.optimize(loss, jnp.asarray(mle) + 0.1, "gd", num_steps=50)
        assert tr.info["lambda_max"] is None and "η0 = 1" in tr.info["lambda_max_fallback"]
        assert tr.info["base_lr_used"] == 1.0 and np.all(np.isfinite(tr.loss))


@jax.custom_vjp
def _linear_vjp_only(theta):
    return jnp.asarray(X, theta.dtype) @ theta


_linear_vjp_only.defvjp(lambda t: (_linear_vjp_only(t), None), lambda _, g: (jnp.asarray(X, g.dtype).T @ g,))


@pytest.mark.parametrize("method", ["preconditioned_gd", "lbfgs"])
def test_a_model_without_forward_mode_derivatives_falls_back_to_gradient_differences(method):
    """A jax.custom_vjp model has gradients but no JVPs: the Fisher and the Hessian cannot be computed at all (JAX
    raises); the chain says so and goes on to gradient differences, and the defaults still reach the MLE."""
    with jax.enable_x64(True):
        mle, hess = glm_mle()
        sd = np.sqrt(np.diag(np.linalg.inv(hess)))
        obj = gn.Objective.from_likelihood(lambda t: jnp.exp(_linear_vjp_only(t)), Y, "poisson", 3)
        start = jnp.asarray(mle + np.array([5.0, -4.0, 6.0]) * sd)
        with pytest.warns(RuntimeWarning, match=r"the fisher curvature cannot be computed \(JAX cannot take "
                                                r"forward-mode derivatives.*custom_vjp.*\(then exact not computable"
                                                r".*used the finite_difference curvature instead"):
            fit = gn.optimize(obj, start, method, num_steps=200, tol=1e-8)
        cinfo = fit.info["curvature"]
        assert cinfo["method"] == "finite_difference" and cinfo["fallback"]["from"] == "fisher"
        assert [t["method"] for t in cinfo["fallback"]["tried"]] == ["fisher", "exact"]
        assert fit.status == "converged" and np.max(np.abs(np.asarray(fit.best_theta) - mle) / sd) < 1e-3
        np.testing.assert_allclose(fit.extras["curvature"], choose_curvature(
            obj, start, warn=False).diag, rtol=1e-10)
