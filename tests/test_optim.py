"""gn.optim: the transformations behind preconditioned_gd, the method configurations, the loop's compile sites."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gnomon as gn

RHO = 0.9
H_CORR = np.full((4, 4), RHO) + (1 - RHO) * np.eye(4)  # Jacobi (lr 1, diag 1) overshoots: λmax(H) = 3.7
TH0 = np.array([1.0, -0.5, 0.3, 2.0])


def corr_obj():
    return gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(H_CORR) @ t + 0.05 * jnp.sum(t**4), 4)


def same_trace(a, b):
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.loss, b.loss)
    assert set(a.stats) == set(b.stats)
    for k in a.stats:
        np.testing.assert_array_equal(a.stats[k], b.stats[k], err_msg=k)
    # the end-of-run check probes more where it knows the method's curvature (a method) than where it does not (a
    # hand-assembled chain): compare what the runs themselves spent
    spent = [t.num_grad_evals - t.info.get("end_check_grad_evals", 0) for t in (a, b)]
    # ... and where it knows the curvature it calls a stall at a minimum converged (at the precision limit)
    relabelled = a.status.startswith("converged at step") and b.status.startswith("stalled at step")
    assert spent[0] == spent[1] and (a.status == b.status or relabelled), (a.status, b.status)
    for k in ("curvature", "lr_vec"):
        np.testing.assert_array_equal(a.extras[k], b.extras[k])


def test_hand_assembled_chain_gives_the_same_trace_as_the_method():
    with jax.enable_x64(True):
        obj = corr_obj()
        est = gn.optim.curvature_estimator(obj)  # auto: the exact diagonal (D ≤ 16)
        chain = gn.optim.nonmonotone_backtracking(
            optax.chain(gn.optim.scale_by_curvature(est), gn.optim.scale_by_bb()), window=10
        )
        # tol=0: no precision-limit stop (a method knows its curvature diagonal, a hand-assembled chain does not)
        a = gn.optimize(obj, TH0, "preconditioned_gd", num_steps=80, tol=0.0)
        b = gn.optimize(obj, TH0, chain, num_steps=80, tol=0.0)
        assert a.info["num_backtracks"] >= 1  # the path exercises the safeguard
        same_trace(a, b)
        # fixed steps: the λ_max bound is the step rule wrapped around P, monotone backtracking around both
        fixed = gn.optim.nonmonotone_backtracking(
            gn.optim.scale_by_lr_vector(gn.optim.scale_by_curvature(est), power_iters=20, objective=obj), window=1)
        same_trace(gn.optimize(obj, TH0, "preconditioned_gd", step_rule="fixed", num_steps=40, tol=0.0),
                   gn.optimize(obj, TH0, fixed, num_steps=40, tol=0.0))
        # the same chain in a plain optax loop (init at θ0 outside any gnomon loop)
        st = chain.init(jnp.asarray(TH0))
        th = jnp.asarray(TH0)
        for t in range(20):
            f, g = jax.value_and_grad(obj.loss)(th)
            np.testing.assert_allclose(th, a.theta[t], rtol=1e-9, atol=1e-13)
            u, st = chain.update(g, st, th, value=f, grad=g)
            th = th + u


def reference_bb_backtracking(H, th0, steps, window=10, c=1e-4):
    """Independent numpy implementation of preconditioned BB steps with non-monotone backtracking (P = 1/diag H)."""
    f = lambda t: 0.5 * t @ H @ t  # noqa: E731
    P = 1 / np.diag(H)
    th, rows = np.array(th0, float), []
    recent, alpha, factor = [], 1.0, 1.0
    th_a = g_a = f_a = u = None
    for _ in range(steps):
        fv, g = f(th), H @ th
        rows.append(th.copy())
        rejected = bool(recent) and not fv <= max(recent[-window:]) + c * (u @ g_a)
        if rejected:
            slope = u @ g_a
            curv = fv - f_a - slope
            t = np.clip(-slope / (2 * curv), 0.1, 0.5) if curv > 0 else 0.5
            factor *= t
            th, u = th_a + t * u, t * u
            continue
        if th_a is not None:
            s, y = th - th_a, g - g_a
            sy = s @ y
            if sy > 0:
                alpha, factor = np.clip((s @ (s / P)) / sy, 1e-6, 1e6), 1.0
        recent.append(fv)
        th_a, g_a, f_a = th.copy(), g, fv
        u = -factor * alpha * P * g
        th = th + u
    return np.stack(rows)


def test_bb_with_nonmonotone_backtracking_matches_an_independent_implementation():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(H_CORR) @ t, 4)
        tr = gn.optimize(obj, TH0, "preconditioned_gd", num_steps=25, tol=0.0)  # tol=0: all 25 steps
        ref = reference_bb_backtracking(H_CORR, TH0, 26)
        np.testing.assert_allclose(tr.theta, ref, rtol=1e-9, atol=1e-14)
        assert int(np.sum(tr.stats["accepted"][:-1] == 0)) == tr.info["num_backtracks"] >= 1


def test_method_configurations_and_option_errors():
    with jax.enable_x64(True):
        obj = corr_obj()
        by_name = gn.optimize(obj, TH0, "adam", learning_rate=0.05, num_steps=30)
        by_cfg = gn.optimize(obj, TH0, gn.optim.adam(0.05), num_steps=30)
        np.testing.assert_array_equal(by_name.theta, by_cfg.theta)
        # the factory's signature is the one source of defaults
        assert gn.optim.preconditioned_gd().window == 10 and gn.optim.sgd().momentum == 0.9
        assert inspect.signature(gn.optim.lbfgs).parameters["memory_size"].default == 10
        cfg = gn.optim.preconditioned_gd(curvature="exact", step_rule="fixed", learning_rate=0.5)
        tr = gn.optimize(obj, TH0, cfg, num_steps=5)
        assert tr.info["step_rule"] == "fixed" and tr.info["curvature"]["method"] == "exact"
        with pytest.raises(ValueError, match="window is an option of gd, preconditioned_gd, sgd, not adam"):
            gn.optimize(obj, TH0, "adam", window=3)
        with pytest.raises(ValueError, match="unknown option 'layout' for gd"):
            gn.optimize(obj, TH0, "gd", layout="x", learning_rate=0.1)
        with pytest.raises(ValueError, match="unknown option 'layout' for gd"):
            gn.optimize_batch(obj, np.stack([TH0, TH0]), "gd", layout="x", learning_rate=0.1)
        with pytest.raises(ValueError, match="step_rule must be one of"):
            gn.optim.preconditioned_gd(step_rule="armijo")
        with pytest.raises(ValueError, match="momentum"):
            gn.optim.gd(learning_rate=0.1, momentum=1.5)


def test_optimize_and_optimize_batch_take_the_same_arguments():
    a = inspect.signature(gn.optimize).parameters
    b = inspect.signature(gn.optimize_batch).parameters
    assert list(a)[2:] == list(b)[2:]
    assert sum(p.kind == p.KEYWORD_ONLY for p in a.values()) <= 11  # the stop rules tol, ftol and runoff among them
    with jax.enable_x64(True):
        obj = corr_obj()
        batch = gn.optimize_batch(obj, np.stack([TH0, -TH0]), "sgd", learning_rate=0.02, momentum=0.5, num_steps=20)
        single = gn.optimize(obj, -TH0, "sgd", learning_rate=0.02, momentum=0.5, num_steps=20)
        np.testing.assert_allclose(batch[1].theta, single.theta, rtol=1e-12)


def test_loop_traces_the_objective_at_few_sites_and_times_compilation_apart():
    counts = {}

    def count(method, **kw):
        n = [0]

        def loss(t):
            n[0] += 1  # Python runs only while JAX traces
            return jnp.sum((t - 1.0) ** 2 * jnp.arange(1.0, 4.0)) + jnp.sum(t**4)

        obj = gn.Objective.from_loss(loss, 3)
        tr = gn.optimize(obj, jnp.zeros(3), method, num_steps=20, **kw)
        traced = n[0]
        again = gn.optimize(obj, jnp.ones(3), method, num_steps=20, **kw)
        assert n[0] == traced  # no recompilation
        assert again.info["compile_s"] == 0.0 < tr.info["compile_s"]
        # the loop's programs compile in background threads, alongside the curvature estimate at θ0: the wall time
        # is at most the sum of the parts
        parts = tr.info["compile_s"] + tr.info["run_s"] + tr.info.get("curvature_s", 0.0)
        assert tr.info["run_s"] < tr.runtime_s <= parts + 0.05
        counts[method, tuple(kw)] = traced

    count("gd", learning_rate=0.1)  # the loop body's value_and_grad
    count("adam")
    count("preconditioned_gd")  # + the exact diagonal (one HVP site under lax.map)
    count("preconditioned_gd", step_rule="fixed")  # + the λ_max power iteration
    count("gd")  # the body + the λ_max power iteration
    count("lbfgs")  # (backtracking line search) the exact diagonal + the body
    count("lbfgs", linesearch="zoom")  # the exact diagonal + the loop's first evaluation + the zoom search's two sites
    assert counts == {("gd", ("learning_rate",)): 1, ("adam", ()): 1, ("preconditioned_gd", ()): 2,
                      ("preconditioned_gd", ("step_rule",)): 3, ("gd", ()): 2, ("lbfgs", ()): 2,
                      ("lbfgs", ("linesearch",)): 4}


def test_objectives_sharing_a_compile_key_compile_once():
    def loss(t, d):
        return 0.5 * jnp.sum((t - d) ** 2 * jnp.arange(1.0, 4.0))

    a = gn.Objective.from_loss(loss, 3, data=jnp.zeros(3))
    b = gn.Objective.from_loss(loss, 3, data=jnp.ones(3))
    if getattr(a, "compile_key", None) is None or a.compile_key != b.compile_key:
        token = ("test-loss", 3)
        object.__setattr__(a, "compile_key", token)
        object.__setattr__(b, "compile_key", token)
    ta = gn.optimize(a, jnp.full(3, 2.0), "preconditioned_gd", num_steps=10, tol=1e-9)
    tb = gn.optimize(b, jnp.full(3, 2.0), "preconditioned_gd", num_steps=10, tol=1e-9)
    assert tb.info["compile_s"] == 0.0 < ta.info["compile_s"]
    np.testing.assert_allclose(ta.final_theta, 0.0, atol=1e-5)
    np.testing.assert_allclose(tb.final_theta, 1.0, atol=1e-5)  # its own data, not the first objective's


def test_lbfgs_defaults_converge_on_a_badly_scaled_problem_where_plain_lbfgs_stalls():
    with jax.enable_x64(True):
        d = 10.0 ** np.linspace(-3, 3, 8)  # curvature diagonal spans 1e6
        r = np.random.default_rng(0)
        w = r.standard_normal((8, 8))
        c = w @ w.T / 8 + np.eye(8)
        c = c / np.sqrt(np.outer(np.diag(c), np.diag(c)))  # a correlation matrix
        s = np.sqrt(d)
        h = s[:, None] * c * s[None, :]
        target = r.standard_normal(8)

        def loss(t):
            z = t - jnp.asarray(target)
            return 0.5 * z @ jnp.asarray(h) @ z + 0.1 * jnp.sum((jnp.asarray(s) * z) ** 4)

        obj = gn.Objective.from_loss(loss, 8)
        default = gn.optimize(obj, jnp.zeros(8), "lbfgs", num_steps=300, tol=1e-10)
        plain = gn.optimize(obj, jnp.zeros(8), "lbfgs", curvature="identity", num_steps=300, tol=1e-10)
        assert default.status == "converged" and default.loss[-1] < 1e-14
        np.testing.assert_allclose(default.final_theta, target, rtol=1e-6)
        assert plain.loss[-1] > 1e3 * default.loss[-1] or plain.num_steps > 3 * default.num_steps
        assert default.info["curvature"]["method"] == "exact"
        assert default.num_grad_evals < plain.num_grad_evals


def test_zero_steps_and_user_transforms_record_the_start():
    obj = corr_obj()
    for method in (optax.adam(1e-3), "adam", "preconditioned_gd"):
        for n in (0, 1, 2):
            tr = gn.optimize(obj, TH0, method, num_steps=n, channels="all")
            assert tr.status == "max_steps" and tr.num_steps == n and len(tr) == n + 1
            np.testing.assert_allclose(tr.loss[0], float(obj.loss(jnp.asarray(TH0, tr.theta.dtype))), rtol=1e-6)
            assert np.isnan(tr.stats["step_norm"][-1])


def test_channels_default_to_the_free_ones_and_the_final_gradient_norm_is_always_reported():
    with jax.enable_x64(True):
        obj = corr_obj()
        plain = gn.optimize(obj, TH0, "gd", learning_rate=0.05, num_steps=30)
        assert set(plain.stats) == {"learning_rate"}
        g = jax.grad(obj.loss)(jnp.asarray(plain.final_theta))
        assert plain.info["final_grad_norm"] == pytest.approx(float(jnp.linalg.norm(g)), rel=1e-10)
        pgd = gn.optimize(obj, TH0, "preconditioned_gd", num_steps=30, tol=1e-12)
        assert set(pgd.stats) == {"grad_norm", "learning_rate", "accepted"}  # tol computes |g| anyway
        assert pgd.stats["grad_norm"][-1] == pytest.approx(pgd.info["final_grad_norm"])
        full = gn.optimize(obj, TH0, "gd", learning_rate=0.05, num_steps=30, channels="all")
        assert set(full.stats) == {"grad_norm", "step_norm", "learning_rate"}  # no backtracking: no accept flags
        np.testing.assert_array_equal(full.theta, plain.theta)
        np.testing.assert_allclose(full.stats["step_norm"][:-1], np.linalg.norm(np.diff(full.theta, axis=0), axis=1),
                                   rtol=1e-12)
        with pytest.raises(ValueError, match="unknown channels"):
            gn.optimize(obj, TH0, "gd", learning_rate=0.05, channels=("loss_norm",))


def test_a_non_finite_curvature_estimate_falls_back_instead_of_poisoning_the_run():
    with jax.enable_x64(True):
        obj = corr_obj()
        for raw, used in (([np.nan, 2.0, np.inf, 0.5], [2.0, 2.0, 2.0, 0.5]), ([np.nan] * 4, [1.0] * 4)):
            est = gn.optim.CurvatureEstimator(
                lambda th, d, k, p, raw=raw: (jnp.asarray(raw, th.dtype), jnp.zeros((3,), jnp.int32)), 0, "exact",
                objective=obj)
            st = gn.optim.scale_by_curvature(est).init(jnp.asarray(TH0))
            np.testing.assert_array_equal(st.info.diag0, used)
            np.testing.assert_array_equal(st.shape, 1 / np.asarray(used))
            tr = gn.optimize(obj, TH0, gn.optim.nonmonotone_backtracking(
                optax.chain(gn.optim.scale_by_curvature(est), gn.optim.scale_by_bb())), num_steps=60)
            assert not tr.diverged and tr.loss[-1] < 1e-3 * tr.loss[0]
            pre = gn.optim.precondition_by_curvature(optax.scale_by_lbfgs(), est).init(jnp.asarray(TH0))
            assert np.all(np.isfinite(pre.scale))


def test_lbfgs_with_the_loops_backtracking_matches_the_zoom_search_on_regular_problems():
    """linesearch="backtracking": one evaluation per step, restarts on unusable pairs, expansion when a full step
    was too short. On a badly scaled quadratic-plus-quartic and on Rosenbrock's (non-convex) valley it reaches the
    optimum with about the evaluations of optax's zoom search."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        h = q @ np.diag(np.logspace(0, 4, 6)) @ q.T
        obj = gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(h) @ t - jnp.sum(t) + 0.01 * jnp.sum(t**4), 6)
        rosen = gn.Objective.from_loss(lambda t: (1 - t[0]) ** 2 + 100 * (t[1] - t[0] ** 2) ** 2, 2)
        for o, th0, opt in ((obj, jnp.zeros(6), None), (rosen, jnp.array([-1.2, 1.0]), np.ones(2))):
            zoom = gn.optimize(o, th0, "lbfgs", num_steps=500, tol=1e-8)
            bt = gn.optimize(o, th0, "lbfgs", linesearch="backtracking", num_steps=500, tol=1e-8)
            assert zoom.status == bt.status == "converged"
            np.testing.assert_allclose(bt.final_theta, zoom.final_theta if opt is None else opt, rtol=1e-6, atol=1e-7)
            assert bt.num_grad_evals <= 1.5 * zoom.num_grad_evals
            assert bt.info["backtracking"] and "accepted" in bt.stats
        with pytest.raises(ValueError, match="linesearch must be one of"):
            gn.optim.lbfgs(linesearch="wolfe")
