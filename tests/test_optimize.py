"""gn.optimize / gn.optimize_batch against independent references (closed forms, manual optax loops)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gnomon as gn
from gnomon.optim.optimize import precond_arrays

D = 5
DIAG = 10.0 ** np.linspace(-2, 2, D)
OPT = np.linspace(-1.0, 1.0, D)
R = np.random.default_rng(7)
Q, _ = np.linalg.qr(R.standard_normal((D, D)))
H_ROT = Q @ np.diag(DIAG) @ Q.T


def axis_loss(t):
    return 0.5 * jnp.sum(jnp.asarray(DIAG, t.dtype) * (t - jnp.asarray(OPT, t.dtype)) ** 2)


def test_preconditioned_gd_solves_axis_aligned_quadratic_in_one_step_and_counts_cost():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(axis_loss, D)
        tr = gn.optimize(obj, jnp.zeros(D), "preconditioned_gd", num_steps=3)
        np.testing.assert_allclose(tr.theta[1], OPT, rtol=1e-10)
        assert tr.loss[1] < 1e-20
        info = tr.info["curvature"]
        assert info["method"] == "exact" and info["chosen"] == "auto" and info["num_grad_evals"] == 2 * D
        assert tr.info["step_rule"] == "bb" and tr.info["backtracking"] and not tr.info["lambda_max_bound"]
        # 1 (θ0) + 2D (exact diagonal) + 1 per step; θ1 is the exact optimum (gradient 0): the run stops there,
        # and the end check (2D differenced gradients) finds a minimum
        assert tr.status == "converged" and tr.theta.shape[0] == 2
        assert tr.info["stationary_check"]["result"] == "minimum" and tr.info["end_check_grad_evals"] == 2 * D
        assert tr.num_grad_evals == 1 + 2 * D + 1 + 2 * D
        np.testing.assert_allclose(tr.extras["curvature"], DIAG, rtol=1e-10)
        np.testing.assert_allclose(tr.extras["lr_vec"], 1 / DIAG, rtol=1e-8)
        # Trace invariant: loss[t] is the loss at θ_t
        np.testing.assert_allclose(tr.loss, [float(axis_loss(jnp.asarray(t))) for t in tr.theta], atol=1e-15)
        # fixed step: + 2 per power iteration for the λ_max bound (λ_max = 1 here, so η = 1)
        fx = gn.optimize(
            obj, jnp.zeros(D), "preconditioned_gd", num_steps=3, step_rule="fixed", power_iters=10
        )
        assert fx.status == "converged" and fx.num_grad_evals == 1 + 2 * D + 20 + (fx.theta.shape[0] - 1) + 2 * D
        assert fx.info["base_lr_used"] == pytest.approx(1.0, rel=1e-6)
        np.testing.assert_allclose(fx.theta[1], OPT, rtol=1e-10)


def test_default_safeguards_keep_jacobi_from_diverging_on_correlated_problem():
    with jax.enable_x64(True):
        rho = 0.9
        H = np.full((4, 4), rho) + (1 - rho) * np.eye(4)  # Jacobi (lr 1, diag 1) diverges: λmax(H) = 3.7
        obj = gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(H) @ t, 4)
        th0 = jnp.array([1.0, -0.5, 0.3, 2.0])
        raw = gn.optimize(
            obj,
            th0,
            "preconditioned_gd",
            num_steps=30,
            learning_rate=1.0,
            step_rule="fixed",
            safeguard="none",
        )
        assert raw.loss[-1] > 1e3 * raw.loss[0]
        fixed = gn.optimize(obj, th0, "preconditioned_gd", num_steps=300, step_rule="fixed")
        assert np.all(np.diff(fixed.loss) <= 1e-12) and fixed.loss[-1] < 1e-6 * fixed.loss[0]
        assert fixed.info["lambda_max"] == pytest.approx(np.linalg.eigvalsh(H).max(), rel=1e-3)
        # backtracking alone also rescues it (the rejected points are rows of their own)
        bt = gn.optimize(
            obj,
            th0,
            "preconditioned_gd",
            num_steps=300,
            learning_rate=1.0,
            step_rule="fixed",
            safeguard="backtrack",
        )
        assert bt.info["num_backtracks"] >= 1 and bt.loss[-1] < 1e-6 * bt.loss[0]
        # the default: Barzilai–Borwein steps with nonmonotone backtracking
        bb = gn.optimize(obj, th0, "preconditioned_gd", num_steps=300, tol=1e-10)
        assert bb.status == "converged" and bb.num_steps < fixed.num_steps
        # the overshooting first step (the Jacobi step, loss 3.8 -> 26.6) is rejected and backtracked
        assert bb.info["num_backtracks"] >= 1 and bb.loss[2] < bb.loss[0] and bb.loss[-1] < 1e-12 * bb.loss[0]
        # the accept flags: one 0 per rejected row, NaN only on the final row (no step taken from it)
        for tr in (bt, bb):
            acc = tr.stats["accepted"]
            assert np.isnan(acc[-1]) and set(np.unique(acc[:-1])) <= {0.0, 1.0}
            assert int(np.sum(acc[:-1] == 0)) == tr.info["num_backtracks"]
            rejected = np.flatnonzero(acc[:-1] == 0)
            assert np.all(tr.loss[rejected] > tr.loss[rejected - 1])  # a rejected point raised the loss
        assert "accepted" not in raw.stats  # no backtracking rule (safeguard="none"), no flags


def test_second_call_with_same_objective_and_settings_does_not_recompile():
    traces = []

    def loss(t):
        traces.append(1)  # Python side effect: runs only while tracing
        return jnp.sum((t - 1.0) ** 2 * jnp.arange(1.0, 4.0))

    obj = gn.Objective.from_loss(loss, 3)
    kw = dict(num_steps=20, curvature="hutchinson", num_probes=4, refresh_every=5)
    a = gn.optimize(obj, jnp.zeros(3), "preconditioned_gd", **kw)
    n = len(traces)
    b = gn.optimize(obj, jnp.ones(3) * 0.5, "preconditioned_gd", **kw)
    assert len(traces) == n and n > 0
    timing = ("compile_s", "run_s", "curvature_s", "estimate_s")

    def untimed(info):
        return {k: (untimed(v) if isinstance(v, dict) else v) for k, v in info.items() if k not in timing}

    assert untimed(a.info) == untimed(b.info)
    assert a.num_grad_evals == b.num_grad_evals and b.info["compile_s"] == 0.0 < a.info["compile_s"]
    gn.optimize(obj, jnp.zeros(3), "gd", learning_rate=0.1, num_steps=5)
    m = len(traces)
    assert m > n  # other settings compile anew ...
    gn.optimize(obj, jnp.ones(3), "gd", learning_rate=0.1, num_steps=5)
    assert len(traces) == m  # ... once


def test_methods_match_manual_optax_loops():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(H_ROT) @ t - jnp.sum(t), D)
        th0 = jnp.ones(D)
        for method, tx in [
            ("adam", optax.adam(0.05)),
            ("rmsprop", optax.rmsprop(0.05)),
            ("sgd", optax.sgd(0.005, momentum=0.5, nesterov=True)),
        ]:
            kw = {"momentum": 0.5, "nesterov": True} if method == "sgd" else {}
            lr = 0.005 if method == "sgd" else 0.05
            tr = gn.optimize(obj, th0, method, num_steps=15, learning_rate=lr, **kw)
            th, st, ref = th0, tx.init(th0), [th0]
            for _ in range(15):
                u, st = tx.update(jax.grad(obj.loss)(th), st, th)
                th = optax.apply_updates(th, u)
                ref.append(th)
            np.testing.assert_allclose(tr.theta, np.stack(ref), rtol=1e-9, atol=1e-12, err_msg=method)
            assert tr.num_grad_evals == 16


def test_lbfgs_converges_and_counts_linesearch_evaluations():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(H_ROT) @ t - jnp.sum(t), D)
        tr = gn.optimize(obj, jnp.zeros(D), "lbfgs", num_steps=200, tol=1e-10)
        np.testing.assert_allclose(tr.final_theta, np.linalg.solve(H_ROT, np.ones(D)), rtol=1e-7)
        assert tr.status == "converged"
        # every line-search trial is one value_and_grad; the accepted one is reused
        assert tr.num_grad_evals >= tr.num_steps + 1


def test_gd_default_learning_rate_is_one_over_lambda_max_and_never_diverges():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(H_ROT) @ t, D)
        tr = gn.optimize(obj, jnp.ones(D), "gd", num_steps=200)
        assert tr.info["base_lr_used"] == pytest.approx(1 / DIAG.max(), rel=1e-3)
        assert np.all(np.diff(tr.loss) <= 0)


def test_batch_equals_loop_of_single_fits_with_batched_data():
    with jax.enable_x64(True):

        def resid(t, data):
            x, y = data
            return t[0] * jnp.exp(-t[1] * x) - y

        x = jnp.linspace(0, 2, 12)
        ys = jnp.stack([2.0 * jnp.exp(-0.7 * x), 1.0 * jnp.exp(-1.5 * x), 0.5 * jnp.exp(-0.2 * x)])
        xs = jnp.broadcast_to(x, ys.shape)
        obj = gn.Objective.from_residuals(resid, 2, takes_data=True)
        th0s = jnp.array([[1.0, 1.0], [0.5, 0.5], [1.0, 0.1]])
        kw = dict(num_steps=40, tol=1e-12)
        b = gn.optimize_batch(obj, th0s, data=(xs, ys), method="preconditioned_gd", **kw)
        assert b.theta.shape[0] == 3 and b.theta.shape[2] == 2
        assert b.info["curvature"]["method"] == "gauss_newton"
        for i in range(3):
            s = gn.optimize(obj, th0s[i], "preconditioned_gd", data=(xs[i], ys[i]), **kw)
            m = b[i]
            np.testing.assert_allclose(m.theta, s.theta, rtol=1e-9, atol=1e-12)
            assert m.num_grad_evals == s.num_grad_evals and m.status == s.status
        with pytest.raises(ValueError, match="leading axis"):
            gn.optimize_batch(obj, th0s, data=(xs[:2], ys[:2]), method="gd", learning_rate=0.1)


def test_continue_from_trace_equals_one_longer_run():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(axis_loss, D)
        full = gn.optimize(obj, jnp.zeros(D), "gd", num_steps=30, learning_rate=0.005)
        part = gn.optimize(obj, jnp.zeros(D), "gd", num_steps=12, learning_rate=0.005)
        cont = gn.optimize(obj, part, "gd", num_steps=18, learning_rate=0.005)
        np.testing.assert_allclose(cont.theta, full.theta, rtol=1e-12)
        assert cont.num_grad_evals == part.num_grad_evals + 19 and list(cont.step) == list(range(31))


def test_curvature_info_and_arrays_round_trip_through_save_run(tmp_path):
    with jax.enable_x64(True):
        obj = gn.Objective.from_residuals(lambda t: jnp.array([t[0] - 1, 10 * (t[1] + 2), t[0] * t[1]]), 2)
        tr = gn.optimize(obj, jnp.zeros(2), "preconditioned_gd", num_steps=50, refresh_every=10, ema=0.5)
        assert tr.info["curvature"]["method"] == "gauss_newton" and tr.info["refresh_every"] == 10
        arrays = precond_arrays(tr)
        assert set(arrays) == {"curvature", "precond"} and "diag_final" in arrays["curvature"]
        gn.save_run(tmp_path / "r", tr, extra_arrays=arrays)
        run = gn.load_run(tmp_path / "r")
        assert run.meta["engine"]["curvature"]["method"] == "gauss_newton"
        np.testing.assert_allclose(np.load(tmp_path / "r" / "precond.npz")["lr_vec"], tr.extras["lr_vec"])


def test_ema_grad2_given_curvature_and_float32():
    obj = gn.Objective.from_loss(axis_loss, D)
    tr = gn.optimize(
        obj,
        jnp.zeros(D),
        "preconditioned_gd",
        curvature="ema_grad2",
        num_steps=300,
        learning_rate=0.05,
        beta=0.9,
    )
    assert tr.info["curvature"]["power"] == 0.5 and tr.loss[-1] < 1e-2 * tr.loss[0]
    assert tr.theta.dtype == np.float32
    c = gn.Curvature.from_diag(jnp.asarray(DIAG, jnp.float32))
    given = gn.optimize(obj, jnp.zeros(D), "preconditioned_gd", curvature=c, num_steps=2)
    np.testing.assert_allclose(given.theta[1], OPT, rtol=1e-5, atol=1e-6)
    assert given.info["curvature"]["source"] == "given"
    # a plain (D,) array is accepted as the curvature diagonal too
    as_array = gn.optimize(obj, jnp.zeros(D), "preconditioned_gd", curvature=np.asarray(DIAG), num_steps=2)
    np.testing.assert_allclose(as_array.theta[1], OPT, rtol=1e-5, atol=1e-6)


def test_bad_inputs_give_clear_errors():
    obj = gn.Objective.from_loss(axis_loss, D)
    with pytest.raises(ValueError, match="unknown optimizer method"):
        gn.optimize(obj, jnp.zeros(D), "newton")
    with pytest.raises(ValueError, match="needs residuals"):
        gn.optimize(obj, jnp.zeros(D), "preconditioned_gd", curvature="gauss_newton")
    with pytest.raises(ValueError, match="θ0 has length"):
        gn.optimize(obj, jnp.zeros(D + 1), "gd")
    for method in ("sgd", "adam", "lbfgs"):
        with pytest.raises(ValueError, match=f"refresh_every is an option of preconditioned_gd, not {method}"):
            gn.optimize(obj, jnp.zeros(D), method, refresh_every=3)
    with pytest.raises(ValueError, match="memory_size is an option of lbfgs, not adam"):
        gn.optimize(obj, jnp.zeros(D), "adam", memory_size=5)
    with pytest.raises(ValueError, match="curvature is an option of preconditioned_gd, lbfgs, not gd"):
        gn.optimize(obj, jnp.zeros(D), "gd", curvature="exact")
    with pytest.raises(ValueError, match="do not apply to a given optax transformation"):
        gn.optimize(obj, jnp.zeros(D), optax.sgd(0.1), refresh_every=3)
    with pytest.raises(ValueError, match="learning_rate"):
        gn.optimize(obj, jnp.zeros(D), "adam", learning_rate=-1.0)
    with pytest.raises(ValueError, match="finite and positive"):
        gn.optimize(obj, jnp.zeros(D), "preconditioned_gd", curvature=gn.Curvature(diag=jnp.full(D, jnp.nan)))
    with pytest.raises(ValueError, match="safeguard"):
        gn.optimize(obj, jnp.zeros(D), "preconditioned_gd", safeguard="maybe")


def test_nonfinite_loss_stops_with_status_naming_the_step():
    obj = gn.Objective.from_loss(lambda t: jnp.sum(jnp.log(t)), 2)
    tr = gn.optimize(obj, jnp.array([1.0, 1.0]), "gd", learning_rate=0.6, num_steps=10)
    assert tr.status.startswith("diverged at step 2") and np.all(np.isfinite(tr.loss))


def test_backtracking_steps_back_from_a_non_finite_trial_point_instead_of_stopping():
    """f = Σ log(θ)²: a step of η = 10 from θ = 3 lands at θ < 0 (NaN). A backtracking method rejects that point
    like any rise (the row stays, with NaN loss, and the next row is the step back) and converges; without a
    safeguard the run still stops at the non-finite point, naming it."""
    obj = gn.Objective.from_loss(lambda t: jnp.sum(jnp.log(t) ** 2), 2)
    start = jnp.array([3.0, 0.2])
    tr = gn.optimize(obj, start, "gd", learning_rate=10.0, safeguard="backtrack", num_steps=200, tol=1e-6)
    assert tr.status == "converged"
    np.testing.assert_allclose(tr.best_theta, [1.0, 1.0], atol=1e-5)
    bad = np.flatnonzero(~np.isfinite(tr.loss))
    assert bad.size and bad[0] == 1 and np.all(tr.theta[1, 0] < 0)  # the trial point is kept as its row
    assert np.all(tr.stats["accepted"][bad] == 0) and np.array_equal(tr.step, np.arange(len(tr)))
    assert np.isfinite(tr.loss[bad[-1] + 1])  # ... and the steps back from it reach finite ground
    batch = gn.optimize_batch(obj, jnp.stack([start, jnp.array([1.5, 1.2])]), "gd", learning_rate=10.0,
                              safeguard="backtrack", num_steps=200, tol=1e-6)
    assert batch.status == ("converged", "converged")
    np.testing.assert_allclose(batch.best_theta, 1.0, atol=1e-5)
    np.testing.assert_allclose(batch[0].loss, tr.loss, rtol=1e-6)
    plain = gn.optimize(obj, start, "gd", learning_rate=10.0, safeguard="none", num_steps=200)
    assert plain.status.startswith("diverged at step 1") and np.all(np.isfinite(plain.loss))


def test_a_run_whose_updates_no_longer_change_theta_stops_and_says_it_never_moved():
    """float32 on a large θ: the update is below θ's resolution, so θ never changes. Before, such a run went on to
    num_steps (a float32 Poisson fit spent 5,537 gradient evaluations that way); now it stops after STALL_STEPS
    unchanged updates, and since θ never left its start with a gradient far from zero, the status says "no progress"
    (not "stalled ... at or next to an optimum") and names float32. The same run in float64 moves and runs to
    num_steps."""
    from gnomon.optim.loop import STALL_STEPS

    obj = gn.Objective.from_loss(lambda t: 0.5 * jnp.sum(t**2), 2)
    th32 = jnp.array([1e4, -3e4], jnp.float32)
    with pytest.warns(RuntimeWarning, match="no progress"):
        tr = gn.optimize(obj, th32, "gd", learning_rate=1e-12, num_steps=500)
    assert tr.status.startswith(f"no progress in {STALL_STEPS} steps:") and "θ never left it" in tr.status
    assert "float64" in tr.status and "optimum" not in tr.status
    assert tr.info["no_progress"]["grad_norm_at_start"] == pytest.approx(float(jnp.linalg.norm(th32)), rel=1e-5)
    assert not tr.converged and not tr.diverged and tr.num_steps == STALL_STEPS
    np.testing.assert_array_equal(np.asarray(tr.theta), np.broadcast_to(np.asarray(th32), tr.theta.shape))
    with jax.enable_x64(True):
        tr64 = gn.optimize(obj, jnp.asarray(th32, jnp.float64), "gd", learning_rate=1e-12, num_steps=50)
    assert tr64.status == "max_steps" and float(tr64.final_theta[0]) < 1e4
    # in a batch only the member that cannot move stalls: a step of 4e-8·θ is 4.4e-5 at θ = 1100, below half the
    # float32 spacing there (6.1e-5), and 4e-5 at θ = 1000, above half the spacing there (3.05e-5)
    obj1 = gn.Objective.from_loss(lambda t: 0.5 * jnp.sum(t**2), 1)
    with pytest.warns(RuntimeWarning, match=r"no progress \(member 0 of 2\)"):
        batch = gn.optimize_batch(obj1, jnp.array([[1100.0], [1000.0]], jnp.float32), "gd", learning_rate=4e-8,
                                  num_steps=40)
    assert batch.status[0].startswith(f"no progress in {STALL_STEPS} steps") and batch.status[1] == "max_steps"


def test_bad_starts_are_refused_by_name():
    obj = gn.Objective.from_log_prob(lambda t: -0.5 * jnp.sum(t**2), 2)
    with pytest.raises(ValueError, match=r"θ0 must be a flat vector \(D,\) of numbers .*got dict"):
        gn.optimize(obj, {"a": 0.0, "b": 1.0}, "lbfgs")
    with pytest.raises(ValueError, match=r"θ0 has non-finite entries at indices \[1\]"):
        gn.optimize(obj, jnp.array([0.0, jnp.inf]), "lbfgs")


def test_a_float32_start_under_x64_is_said_and_the_samplers_advice_works():
    """Found by a new user: θ0.astype(float32) with x64 on fitted silently in float32 (max_steps, |∇| 1.4 where
    float64 converges), then gn.sample refused the fit with advice that did not work. Now the fit warns and
    records it; the sampler's refusal names a call that does work."""
    scales = np.array([1e-3, 1.0, 1e3])
    obj = gn.Objective.from_log_prob(lambda t: -0.5 * jnp.sum((t / jnp.asarray(scales, t.dtype)) ** 2), 3)
    with jax.enable_x64(True):
        with pytest.warns(RuntimeWarning, match=r"θ0 is float32 while jax_enable_x64 is on: .* Pass θ0 as float64"):
            fit = gn.optimize(obj, jnp.ones(3, jnp.float32), num_steps=50)
        assert fit.theta.dtype == jnp.float32 and "float32" in fit.info["precision_note"]
        with pytest.warns(RuntimeWarning, match="θ0 is float32"):
            batch = gn.optimize_batch(obj, jnp.ones((2, 3), jnp.float32), num_steps=20)
        assert "precision_note" in batch.info
        with pytest.raises(ValueError, match=r"init=jnp.asarray\(fit.best_theta, jnp.float64\)"):
            gn.sample(obj, fit, jax.random.key(0), num_samples=10)
        post = gn.sample(obj, jnp.asarray(fit.best_theta, jnp.float64), jax.random.key(0), num_samples=20,
                         num_warmup=20, progress=False)
        assert post.theta.dtype == jnp.float64
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # float64 under x64: nothing said
            ok = gn.optimize(obj, jnp.ones(3, jnp.float64), num_steps=50)
        assert "precision_note" not in ok.info
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # x64 off: float32 is JAX's default, nothing said
        quiet = gn.optimize(obj, jnp.ones(3, jnp.float32), num_steps=50)
    assert "precision_note" not in quiet.info
