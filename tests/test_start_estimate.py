"""The start curvature from the optimizer loop's own program (gnomon.optim.start_estimate): the same diagonal as an
estimate of its own, the same gradient as ``jax.value_and_grad``, one compiled copy of the model, and the fallback
chain when the loop's estimate is not finite."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.optim import start_estimate

X = np.random.default_rng(0).normal(size=(80, 4)) * 0.4
TRUTH = np.array([0.5, -0.2, 1.0, 0.3])
Y = np.random.default_rng(1).poisson(np.exp(X @ TRUTH)).astype(float)


def glm(counter=None):
    def mean(theta):
        if counter is not None:
            counter.append(1)  # runs only while the model is traced
        return jnp.exp(jnp.asarray(X, theta.dtype) @ theta)

    return mean


def objectives():
    """A Poisson likelihood, one with a Gaussian prior and bounded parameters (the layout's log-Jacobian in the loss:
    a sampler's target), and weighted residuals."""
    plain = gn.Objective.from_likelihood(glm(), Y, "poisson", 4)
    layout = gn.Layout({"a": (2,), "b": (2,)}, transforms={"b": "positive"})
    prior = gn.Objective.from_likelihood(glm(), Y, "poisson", layout,
                                         prior=lambda v: -0.5 * jnp.sum(v["a"] ** 2) - jnp.sum(v["b"]))
    w = np.linspace(0.5, 2.0, 80)
    resid = gn.Objective.from_residuals(lambda t: jnp.asarray(Y, t.dtype) - jnp.exp(jnp.asarray(X, t.dtype) @ t), 4,
                                        weights=w)
    return {"fisher": plain, "fisher+prior+jacobian": prior.with_jacobian_in_loss(True), "gauss_newton": resid}


@pytest.mark.parametrize("name", ["fisher", "fisher+prior+jacobian", "gauss_newton"])
def test_the_loops_estimate_is_the_estimate_and_its_gradient_the_gradient(name, monkeypatch):
    with jax.enable_x64(True):
        obj = objectives()[name]
        link = "gauss_newton" if name == "gauss_newton" else "fisher"
        theta0 = jnp.asarray(TRUTH + np.array([0.3, -0.2, 0.1, 0.2]))
        fit = gn.optimize(obj, theta0, "preconditioned_gd", num_steps=30)
        cinfo = fit.info["curvature"]
        assert cinfo["method"] == link and cinfo["estimated"] == "at θ0, by the loop's own program"
        if name == "fisher+prior+jacobian":  # the prior's and the log-Jacobian's Hessian are in it
            assert cinfo["prior_included"] and cinfo["log_jacobian_included"]
        own = gn.estimate_curvature(obj, theta0, link)  # its own program, cleaned the same way
        np.testing.assert_allclose(fit.extras["curvature"], own.diag, rtol=1e-12)
        assert cinfo["num_grad_evals"] == own.num_grad_evals == 4
        # the same fit with the estimate in a program of its own (the previous design): the same path and count
        monkeypatch.setattr(gn.optim.optimize, "_in_loop", lambda *a, **k: None)
        before = gn.optimize(obj, theta0, "preconditioned_gd", num_steps=30)
        monkeypatch.undo()
        assert before.info["curvature"]["estimated"] == "at θ0, before the loop"
        assert before.num_grad_evals == fit.num_grad_evals and before.num_steps == fit.num_steps
        np.testing.assert_allclose(before.theta, fit.theta, rtol=1e-9, atol=1e-12)
        # the loop's linearised evaluation gives the loss and gradient of jax.value_and_grad, at any point
        fn = start_estimate.evaluator(obj, link)
        for th in (theta0, jnp.asarray(fit.best_theta), theta0 * 0.5):
            f, _, g, raw = jax.jit(fn, static_argnums=2)(th, obj.data, False)
            f_ref, g_ref = jax.value_and_grad(obj.loss)(th)
            np.testing.assert_allclose(f, f_ref, rtol=1e-12)
            np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
            assert not np.any(raw)  # no estimate asked: zeros


def test_a_first_fit_compiles_one_copy_of_the_model_and_a_batch_gets_each_members_estimate():
    with jax.enable_x64(True):
        traced = []
        obj = gn.Objective.from_likelihood(glm(traced), Y, "poisson", 4)
        traced.clear()
        fit = gn.optimize(obj, jnp.asarray(TRUTH + 0.2), "lbfgs", num_steps=50)
        assert fit.info["curvature"]["estimated"] == "at θ0, by the loop's own program"
        assert len(traced) == 1  # the loop's chunk only (was 2: a Fisher program of its own)
        starts = jnp.asarray(TRUTH + np.array([[0.2, 0, 0, 0], [0, -0.3, 0, 0], [0, 0, 0.1, 0.4]]))
        batch = gn.optimize_batch(obj, starts, "preconditioned_gd", num_steps=40)
        assert batch.info["curvature"]["estimated"] == "at θ0, by the loop's own program"
        for i in range(3):
            np.testing.assert_allclose(batch.extras["curvature"][i], gn.estimate_curvature(obj, starts[i],
                                                                                          "fisher").diag, rtol=1e-12)


def test_a_loop_estimate_that_is_not_finite_falls_back_along_the_chain(monkeypatch):
    """The loop's diagonal is judged as an estimate of its own: forced non-finite here (the model's JVPs in the loop
    made NaN), the chain goes on with the Hessian in its own program, says so and records it."""
    real = start_estimate.diagonal_from_jvp
    monkeypatch.setattr(start_estimate, "diagonal_from_jvp", lambda *a, **k: real(*a, **k) * jnp.nan)
    with jax.enable_x64(True):
        obj = gn.Objective.from_likelihood(glm(), Y, "poisson", 4)
        theta0 = jnp.asarray(TRUTH + 0.25)
        with pytest.warns(RuntimeWarning, match=r"the fisher curvature had 4 of 4 diagonal entries non-finite at θ "
                                                r".*used the exact curvature instead"):
            fit = gn.optimize(obj, theta0, "preconditioned_gd", num_steps=200, tol=1e-8)
        cinfo = fit.info["curvature"]
        assert cinfo["method"] == "exact" and cinfo["fallback"]["from"] == "fisher"
        assert cinfo["estimated"] == "at θ0, before the loop"
        np.testing.assert_allclose(fit.extras["curvature"], gn.estimate_curvature(obj, theta0, "exact").diag,
                                   rtol=1e-12)
        assert fit.status == "converged"


def test_where_the_loop_does_not_estimate_the_host_still_does():
    """Probes, a zoom line search or a from_loss objective: the estimate runs in its own program, as before."""
    with jax.enable_x64(True):
        obj = gn.Objective.from_likelihood(glm(), Y, "poisson", 4)
        theta0 = jnp.asarray(TRUTH + 0.2)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            zoom = gn.optimize(obj, theta0, gn.optim.lbfgs(linesearch="zoom"), num_steps=20)
            probes = gn.optimize(obj, theta0, "preconditioned_gd", num_probes=8, num_steps=20)
        for fit in (zoom, probes):
            assert fit.info["curvature"]["estimated"] == "at θ0, before the loop"
        np.testing.assert_allclose(zoom.extras["curvature"], gn.estimate_curvature(obj, theta0, "fisher").diag,
                                   rtol=1e-12)


def test_float32_the_loops_estimate_matches_its_own_program_to_rounding():
    obj = gn.Objective.from_likelihood(glm(), Y.astype(np.float32), "poisson", 4)
    theta0 = jnp.asarray(TRUTH + 0.2, jnp.float32)
    fit = gn.optimize(obj, theta0, "lbfgs", num_steps=40)
    assert fit.info["curvature"]["estimated"] == "at θ0, by the loop's own program"
    assert fit.extras["curvature"].dtype == np.float32
    np.testing.assert_allclose(fit.extras["curvature"], gn.estimate_curvature(obj, theta0, "fisher").diag, rtol=1e-5)
    f, g = jax.value_and_grad(obj.loss)(theta0)
    np.testing.assert_allclose(fit.loss[0], f, rtol=1e-6)


def test_float32_weighted_residuals_round_as_the_gauss_newton_estimate():
    w = np.linspace(0.5, 2.0, 80).astype(np.float32)
    obj = gn.Objective.from_residuals(lambda t: jnp.asarray(Y, t.dtype) - jnp.exp(jnp.asarray(X, t.dtype) @ t), 4,
                                      weights=w)
    theta0 = jnp.asarray(TRUTH + 0.2, jnp.float32)
    fit = gn.optimize(obj, theta0, "preconditioned_gd", num_steps=20)
    assert fit.info["curvature"]["estimated"] == "at θ0, by the loop's own program"
    np.testing.assert_allclose(fit.extras["curvature"], gn.estimate_curvature(obj, theta0, "gauss_newton").diag,
                               rtol=2e-7)


def test_a_method_whose_init_evaluates_the_model_keeps_the_host_estimate():
    """With a learning rate the λ_max bound's power iterations run in the transformation's init: an estimating
    call of the loop would run them once more, uncounted, so the estimate keeps its own program."""
    with jax.enable_x64(True):
        obj = gn.Objective.from_likelihood(glm(), Y, "poisson", 4)
        fit = gn.optimize(obj, jnp.asarray(TRUTH + 0.2), "preconditioned_gd", learning_rate=0.5, num_steps=20)
        assert fit.info["lambda_max_bound"] and fit.info["curvature"]["estimated"] == "at θ0, before the loop"
