"""The end-of-run checks of gn.optimize: a saddle is not "converged", a run that never moved says so, a fit that runs
out of steps along a near-degenerate direction names it."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.optim.verdict import DENSE_MAX_DIM, NO_PROGRESS_STEPS


def two_modes():
    """x ~ N(0, 3), 4 ~ N(x², 0.5): modes at x ≈ ±2, and x = 0 a minimum of the density (a maximum of the loss)."""
    return gn.Objective.from_log_prob(lambda t: -0.5 * (t[0] / 3) ** 2 - 0.5 * ((4 - t[0] ** 2) / 0.5) ** 2, 1)


@pytest.mark.parametrize("method", ["gd", "preconditioned_gd", "lbfgs", "adam"])
def test_a_maximum_of_the_loss_is_not_converged(method):
    with jax.enable_x64(True):
        obj = two_modes()
        with pytest.warns(RuntimeWarning, match="stationary point that is not a minimum"):
            tr = gn.optimize(obj, jnp.zeros(1), method, num_steps=100)
        assert tr.status.startswith("saddle point at step 0:") and not tr.converged
        chk = tr.info["stationary_check"]
        # the loss's second derivative at 0 is 1/9 − 4·4·2 = −31.9 (scaled by |θ| = 1 or by |c|^-1/2: −1)
        assert chk["result"] == "saddle" and chk["lambda_min"] < 0
        if method in ("gd", "adam"):
            assert chk["lambda_min"] == pytest.approx(1 / 9 - 32, rel=1e-6)
        # from a point beside it every method goes downhill to a mode, which the check confirms
        if method != "adam":
            ok = gn.optimize(obj, jnp.array([0.3]), method, num_steps=300, tol=1e-8)
            assert ok.status == "converged" and ok.info["stationary_check"]["result"] == "minimum"
            assert abs(float(ok.final_theta[0])) == pytest.approx(1.9965, abs=1e-3)


def test_saddles_in_batches_and_beyond_the_dense_limit():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(lambda t: t[0] ** 2 - t[1] ** 2 + t[1] ** 4, 2)
        with pytest.warns(RuntimeWarning, match=r"not a minimum \(member 0 of 2\)"):
            b = gn.optimize_batch(obj, jnp.array([[1.0, 0.0], [1.0, 0.1]]), "lbfgs", num_steps=100, tol=1e-10)
        assert b.status[0].startswith("saddle point") and "θ[1]" in b.status[0] and b.status[1] == "converged"
        # D > DENSE_MAX_DIM: Lanczos on differenced gradients finds the one negative direction of a rotated quadratic
        d = DENSE_MAX_DIM + 8
        q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((d, d)))
        lam = np.linspace(1.0, 5.0, d)
        for neg, expected in ((-0.5, "saddle"), (None, "minimum")):
            lam_k = lam.copy()
            if neg is not None:
                lam_k[0] = neg
            h = jnp.asarray(q @ np.diag(lam_k) @ q.T)
            quad = gn.Objective.from_loss(lambda t, h=h: 0.5 * t @ h @ t + 0.01 * jnp.sum(t**4), d)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                tr = gn.optimize(quad, jnp.zeros(d), "preconditioned_gd", num_steps=5)  # 0 is stationary
            assert tr.info["stationary_check"]["result"] == expected, tr.info["stationary_check"]
            assert tr.status.startswith("saddle point") == (expected == "saddle")


def test_the_sampler_leaves_a_saddle_that_the_optimizer_stopped_at():
    with jax.enable_x64(True):
        obj = two_modes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = gn.optimize(obj, jnp.zeros(1), "lbfgs", num_steps=50)
            post = gn.sample(obj, init=fit, key=jax.random.key(3), num_chains=4, num_warmup=200, num_samples=200)
        assert fit.status.startswith("saddle point")
        assert post.info["init"] == "no mode" and post.info["metric"]["seed"] == "identity"
        x = np.asarray(post.theta)[..., 0]
        assert np.mean(np.abs(x) > 1.0) > 0.95  # the draws are at the modes (|x| ≈ 2), not at the saddle


def test_a_run_that_never_improves_on_its_start_says_so_and_names_a_cause():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(lambda t: 0.5 * jnp.sum(jnp.arange(1.0, 4.0) * t**2), 3)
        # a given curvature 1e12 too small: every step overshoots and backtracking never gets back within the run
        with pytest.warns(RuntimeWarning, match="no progress"):
            tr = gn.optimize(obj, jnp.ones(3), "preconditioned_gd", curvature=np.full(3, 1e-30),
                             num_steps=NO_PROGRESS_STEPS + 2)
        assert tr.status.startswith(f"no progress in {NO_PROGRESS_STEPS + 2} steps: no point had a lower loss than "
                                    "the start (every point it tried had a higher loss")
        assert "raised the loss" in tr.status and tr.info["no_progress"]["moved"]
        assert tr.info["no_progress"]["grad_norm_at_start"] == pytest.approx(np.sqrt(1 + 4 + 9))
        # a start that is the minimum to working precision is not "no progress": the Newton step predicts nothing
        at_min = gn.optimize(obj, jnp.full(3, 1e-200), "preconditioned_gd", num_steps=NO_PROGRESS_STEPS + 5)
        assert not at_min.status.startswith("no progress")
        # too few steps to tell: a rejected first step is normal
        short = gn.optimize(obj, jnp.ones(3), "preconditioned_gd", curvature=np.full(3, 1e-30), num_steps=3)
        assert short.status == "max_steps"


def test_running_out_of_steps_along_a_near_degenerate_direction_is_named():
    with jax.enable_x64(True):
        lay = gn.Layout({"sep": (), "plate": (), "flux": ()})

        def loss(t):  # sep and plate enter almost only as their sum (the separation vs plate scale)
            return 0.5e4 * (t[0] + t[1] - 2.0) ** 2 + 0.5e-2 * jnp.log1p((t[0] - t[1]) ** 2) + 0.5 * (t[2] - 1) ** 2

        obj = gn.Objective.from_loss(loss, lay)
        with pytest.warns(RuntimeWarning, match=r"near-degenerate direction.*sep, plate trade off"):
            tr = gn.optimize(obj, jnp.array([30.0, -28.0, 0.0]), "preconditioned_gd", num_steps=40)
        assert tr.status == "max_steps"
        dd = tr.info["degenerate_direction"]
        assert sorted(dd["parameters"]) == ["plate", "sep"] and dd["curvature_ratio"] < 1e-4
        np.testing.assert_allclose(np.abs(dd["direction"]), [0.5**0.5, 0.5**0.5, 0.0], atol=1e-6)
        # a well-conditioned fit that merely runs out of steps is not flagged
        iso = gn.Objective.from_loss(lambda t: 0.5 * jnp.sum((t - 1.0) ** 2) + jnp.sum(t**4), lay)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            tr2 = gn.optimize(iso, jnp.array([3.0, -2.0, 1.0]), "preconditioned_gd", num_steps=6)
        assert tr2.status == "max_steps" and "degenerate_direction" not in tr2.info


@pytest.mark.parametrize("method", ["lbfgs", "preconditioned_gd"])
def test_a_fit_at_its_minimum_says_converged_with_the_default_tolerances(method):
    """Found by a new user on a dLux fit: with the default tol=None a fit at its minimum (|∇| 1e-9) wandered for
    300 more steps and ended 'stalled' (summary.json: converged False). A float64 fit with a curvature diagonal now
    stops at the precision limit (the Newton step predicts a decrease below the loss's resolution) as converged,
    at the minimum a tight tol finds; where that rule is off (tol=0, or float32) a stall at a minimum — the Hessian
    check finds one and the Newton step is below the resolution — is called converged by the end check."""
    x = np.linspace(-3, 3, 50)
    with jax.enable_x64(True):
        mean = lambda t: jnp.exp(t[0] + t[1] * jnp.asarray(x))  # noqa: E731
        y = jax.random.poisson(jax.random.key(0), mean(jnp.array([2.0, 0.5]))).astype(jnp.float64)
        obj = gn.Objective.from_likelihood(mean, y, "poisson", 2)
        fit = gn.optimize(obj, jnp.array([1.0, 0.0]), method)
        exact = gn.optimize(obj, jnp.array([1.0, 0.0]), method, tol=1e-10)
        assert fit.status == "converged" and fit.converged and fit.num_grad_evals < 60, fit
        np.testing.assert_allclose(fit.best_theta, exact.best_theta, rtol=1e-7)
        assert exact.status == "converged"
    # float32 (no direct precision stop: the Newton step's prediction uses c at θ0): L-BFGS used to jitter at its
    # minimum until num_steps (1005 evaluations); now 20 steps at the precision limit are a stall, called converged
    # at the verified minimum
    mean32 = lambda t: jnp.exp(t[0] + t[1] * jnp.asarray(x, jnp.float32))  # noqa: E731
    obj32 = gn.Objective.from_likelihood(mean32, np.asarray(y, np.float32), "poisson", 2)
    fit32 = gn.optimize(obj32, jnp.array([1.0, 0.0]), method)
    assert fit32.converged and fit32.status.startswith("converged at step"), fit32.status
    assert "precision limit" in fit32.status and fit32.num_grad_evals < 100
    check = fit32.info["stationary_check"]
    assert check["result"] == "minimum" and 0 <= check["predicted_decrease"] <= check["resolution"]
    np.testing.assert_allclose(fit32.best_theta, np.asarray(exact.best_theta), rtol=1e-3)


@pytest.mark.parametrize("method", ["lbfgs", "preconditioned_gd"])
def test_a_stall_short_of_the_optimum_is_never_called_converged(method):
    """Units 12 decades apart in float32: the curvature diagonal is floored for the broadest coordinate, so the
    diagonal's Newton step looks negligible while the fit stalls 0.14 sd short (L-BFGS) — the end check bounds the
    step with the Hessian's own smallest eigenvalue and keeps it 'stalled'. Whatever the machine's rounding does to
    the path: a fit called converged is at its optimum."""
    sd = jnp.asarray(10.0 ** np.linspace(-6, 6, 6), jnp.float32)
    obj = gn.Objective.from_log_prob(lambda t: -0.5 * jnp.sum(((t - 3.0 * sd) / sd) ** 2), 6)
    fit = gn.optimize(obj, jnp.zeros(6, jnp.float32), method)
    off = float(np.max(np.abs(np.asarray(fit.best_theta, np.float64) / np.asarray(sd, np.float64) - 3.0)))
    assert off < 0.01 or not fit.converged, (fit.status, off)
