"""Issue 19, items 5 and 6: the curvature transform follows optax's conventions (P ⊙ g, no sign, no learning rate;
pytrees welcome), the step rules chained or wrapped around it, diagnostics read by type, one home per value."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import gnomon as gn
from gnomon.optim import readout

# a quadratic over a dict of parameters: curvatures spanning 1e-3…1e3, weak couplings (ρ = 0.05 in correlation)
D_A = np.array([1e-3, 2.0, 50.0])
D_B = np.array([[1e3, 0.3], [7.0, 1e-2]])
OPT = {"a": np.array([1.0, -2.0, 0.5]), "b": np.array([[3.0, -1.0], [0.25, 10.0]])}


def coupled_hessian():
    d = np.concatenate([D_A, D_B.ravel()])
    corr = np.full((d.size, d.size), 0.05) + 0.95 * np.eye(d.size)
    return np.sqrt(d)[:, None] * corr * np.sqrt(d)[None, :]


def tree_loss(params):
    h = jnp.asarray(coupled_hessian())
    x, _ = ravel_pytree(jax.tree.map(lambda p, o: p - jnp.asarray(o), params, OPT))
    return 0.5 * x @ h @ x


def test_a_hand_written_optax_loop_over_a_pytree_reaches_the_optimum_with_the_exact_diagonal():
    with jax.enable_x64(True):
        diag = {"a": jnp.asarray(D_A), "b": jnp.asarray(D_B)}  # the exact Hessian diagonal, shaped like params
        tx = optax.chain(gn.optim.scale_by_curvature(diag), optax.scale_by_learning_rate(0.8))
        params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
        state = tx.init(params)
        step = jax.jit(lambda p, s: tx.update(jax.grad(tree_loss)(p), s, p))
        for _ in range(60):
            updates, state = step(params, state)
            params = optax.apply_updates(params, updates)
        assert jax.tree.structure(params) == jax.tree.structure(OPT)
        for k in OPT:
            np.testing.assert_allclose(params[k], OPT[k], rtol=1e-9, atol=1e-9)
        # the same loop with the best single learning rate (1/λ_max) is nowhere near after as many steps
        plain = optax.sgd(1.0 / np.linalg.eigvalsh(coupled_hessian()).max())
        p, s = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}, plain.init(params)
        for _ in range(60):
            u, s = plain.update(jax.grad(tree_loss)(p), s, p)
            p = optax.apply_updates(p, u)
        assert abs(float(p["a"][0]) - OPT["a"][0]) > 0.5


def test_a_pytree_gets_its_curvature_estimated_in_the_ravel_order_of_its_leaves():
    with jax.enable_x64(True):
        params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
        _, unravel = ravel_pytree(params)
        obj = gn.Objective.from_loss(lambda t: tree_loss(unravel(t)), 7)
        tx = gn.optim.scale_by_curvature("exact", objective=obj)
        state = tx.init(params)
        np.testing.assert_allclose(state.info.diag0, np.diag(coupled_hessian()), rtol=1e-12)
        g = jax.grad(tree_loss)(params)
        out, _ = tx.update(g, state, params)
        for k in g:  # + P ⊙ g leaf by leaf: no sign, no learning rate
            np.testing.assert_allclose(out[k], g[k] / {"a": D_A, "b": D_B}[k], rtol=1e-12)
        with pytest.raises(ValueError, match="structure"):
            gn.optim.scale_by_curvature({"a": jnp.ones(3)}).init(params)


def test_the_old_spellings_refuse_with_the_new_composition_instead_of_changing_direction():
    c = np.array([1.0, 4.0])
    for call in (lambda: gn.scale_by_curvature(c), lambda: gn.scale_by_curvature(c, 0.5)):
        with pytest.raises(ValueError, match=r"optax.chain\(gn.optim.scale_by_curvature\(curvature\), "
                                             r"optax.scale_by_learning_rate\(learning_rate\)\)"):
            call()
    with pytest.raises(ValueError, match=r"got learning_rate.*optax.scale_by_learning_rate\(learning_rate\)"):
        gn.optim.scale_by_curvature(c, optax.linear_schedule(1.0, 0.1, 10))
    with pytest.raises(ValueError, match=r"got learning_rate"):
        gn.optim.scale_by_curvature(c, learning_rate=0.5)
    with pytest.raises(ValueError, match=r"lambda_max_iters: .*scale_by_lr_vector.*power_iters=n"):
        gn.optim.scale_by_curvature(c, lambda_max_iters=20)
    with pytest.raises(ValueError, match=r"got flip_sign, lr_max.*flip_sign=False"):
        gn.optim.scale_by_curvature(c, flip_sign=False, lr_max=1.0)
    # the new meaning: + P ⊙ g exactly, and the documented composition is −η P ⊙ g
    g = jnp.array([2.0, -8.0])
    tx = gn.optim.scale_by_curvature(c)
    np.testing.assert_array_equal(tx.update(g, tx.init(jnp.zeros(2)))[0], [2.0, -2.0])
    tx = optax.chain(gn.optim.scale_by_curvature(c), optax.scale_by_learning_rate(0.5))
    np.testing.assert_array_equal(tx.update(g, tx.init(jnp.zeros(2)))[0], [-1.0, 1.0])


def test_the_learning_rate_vector_rule_clips_bounds_and_refreshes_with_its_preconditioner():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        a = rng.standard_normal((5, 5))
        h = a @ a.T + np.diag(np.logspace(0, 2, 5))
        obj = gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(h) @ t, 5)
        p = 1 / np.diag(h)
        lam = np.linalg.eigvalsh(np.sqrt(p)[:, None] * h * np.sqrt(p)[None, :]).max()
        g = jnp.asarray(rng.standard_normal(5))
        th = jnp.zeros(5)
        # η0 = min(learning_rate, 1/λ_max(P^½ H P^½)), −clip(η0 P) ⊙ g, the cost of the power iterations counted
        for lr, lo, hi in ((10.0, None, None), (0.5 / lam, None, None), (10.0, 0.02, 0.2)):
            tx = gn.optim.scale_by_lr_vector(gn.optim.scale_by_curvature(np.diag(h)), lr, lr_min=lo, lr_max=hi,
                                             power_iters=100, objective=obj)
            st = tx.init(th)
            eta = min(lr, 1 / lam)
            np.testing.assert_allclose(float(st.base), eta, rtol=1e-6)
            np.testing.assert_allclose(float(st.info.lambda_max), lam, rtol=1e-6)
            u, st = tx.update(g, st, th)
            np.testing.assert_allclose(u, -np.clip(eta * p, lo, hi) * g, rtol=1e-6)
            rep = readout.report(st)
            np.testing.assert_allclose(rep.lr_vec, np.clip(eta * p, lo, hi), rtol=1e-6)
            assert float(readout.step_learning_rate(st)) == pytest.approx(eta, rel=1e-6)
            assert int(readout.own_grad_evals(st)) == 200
        # a refresh of P (every 2 updates) is a refresh of the bound: 2 × 10 more evaluations each, plus the estimate
        est = gn.optim.curvature_estimator(obj, "exact")
        tx = gn.optim.scale_by_lr_vector(gn.optim.scale_by_curvature(est, refresh_every=2), power_iters=10,
                                         objective=obj)
        st = tx.init(th)
        for _ in range(5):
            _, st = tx.update(g, st, th)
        assert int(readout.own_grad_evals(st)) == (1 + 2) * (2 * 5 + 20)  # init and the refreshes at updates 2, 4
        with pytest.raises(ValueError, match="power_iters"):
            gn.optim.scale_by_lr_vector(None, np.inf)
        with pytest.raises(ValueError, match="wraps a diagonal preconditioner"):
            gn.optim.scale_by_lr_vector(optax.scale_by_adam()).init(th)


class SpentState(NamedTuple):
    spent: jnp.ndarray  # a user's own count of the gradient evaluations their transformation spent


def test_diagnostics_are_read_by_type_and_a_users_transformation_can_say_what_it_reports():
    def halving():  # a foreign state: optax's field names (here a dict key "learning_rate") are read, as before
        return optax.GradientTransformation(lambda p: {"learning_rate": jnp.ones(())},
                                            lambda u, s, p=None: (u, {"learning_rate": s["learning_rate"] * 0.5}))

    def spending():
        return optax.GradientTransformation(lambda p: SpentState(jnp.zeros((), jnp.int32)),
                                            lambda u, s, p=None: (u, SpentState(s.spent + 3)))

    tx = optax.chain(gn.optim.scale_by_curvature(np.ones(2)), halving(), spending())
    st = tx.init(jnp.zeros(2))
    _, st = tx.update(jnp.ones(2), st)
    assert float(readout.step_learning_rate(st)) == 0.5
    assert int(readout.own_grad_evals(st)) == 0  # "spent" is no name the loop knows ...
    readout.register_reader(SpentState, readout.Reader(grad_evals=lambda s: s.spent))
    assert int(readout.own_grad_evals(st)) == 3  # ... until its type says what it is
    # gnomon's own reports (CurvatureInfo, LrVectorInfo) are read through their states only: counted once
    lr = gn.optim.scale_by_lr_vector(gn.optim.scale_by_curvature(np.ones(2)), 0.25)
    s2 = lr.init(jnp.zeros(2))
    assert [float(v) for v in readout.scalar_fields(s2, "learning_rate")] == [0.25]
    with pytest.raises(ValueError, match="unknown channel"):
        readout.scalar_fields(s2, "lr")


def test_one_home_per_value():
    obj = gn.Objective.from_loss(lambda t: jnp.sum(t**2), 2)
    th0 = jnp.ones(2)
    # gn.optimize's options are aliases of the configuration's fields; both at once must agree
    with pytest.raises(ValueError, match=r"learning_rate given twice: gd\(learning_rate=0.1\) and learning_rate=0.2"):
        gn.optimize(obj, th0, gn.optim.gd(learning_rate=0.1), learning_rate=0.2, num_steps=2)
    a = gn.optimize(obj, th0, gn.optim.gd(learning_rate=0.1), learning_rate=0.1, num_steps=3)
    b = gn.optimize(obj, th0, gn.optim.gd(), learning_rate=0.1, num_steps=3)
    c = gn.optimize(obj, th0, "gd", learning_rate=0.1, num_steps=3)
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.theta, c.theta)
    # an estimator carries its objective and data; a fixed curvature takes neither
    est = gn.optim.curvature_estimator(obj, "exact")
    with pytest.raises(ValueError, match="the estimator carries its data"):
        gn.optim.scale_by_curvature(est, data=None)
    with pytest.raises(ValueError, match="the estimator carries its objective"):
        gn.optim.scale_by_curvature(est, objective=gn.Objective.from_loss(lambda t: jnp.sum(t**4), 2))
    with pytest.raises(ValueError, match="a given diagonal uses none"):
        gn.optim.scale_by_curvature(np.ones(2), data=None)
    # the method configurations validate through gnomon.util.validate, naming the value
    with pytest.raises(ValueError, match=r"memory_size must be an int ≥ 1, got 0"):
        gn.optim.lbfgs(memory_size=0)
    with pytest.raises(ValueError, match=r"ema must be in \[0, 1\), got 1.0"):
        gn.optim.preconditioned_gd(ema=1.0)
    with pytest.raises(ValueError, match=r"lr_min \(0.5\) exceeds lr_max \(0.1\)"):
        gn.optim.preconditioned_gd(lr_min=0.5, lr_max=0.1)
    with pytest.raises(ValueError, match="learning_rate must be a positive number or an optax schedule"):
        gn.optim.adam(learning_rate=float("nan"))


def test_the_methods_fixed_steps_are_the_documented_composition_bit_for_bit():
    """preconditioned_gd with fixed steps, a clip and a schedule is scale_by_lr_vector around scale_by_curvature
    inside monotone backtracking: the hand-assembled chain gives the same trace, row for row."""
    with jax.enable_x64(True):
        h = coupled_hessian()
        obj = gn.Objective.from_loss(lambda t: 0.5 * t @ jnp.asarray(h) @ t + 0.01 * jnp.sum(t**4), 7)
        th0 = jnp.linspace(-1.0, 1.0, 7)
        est = gn.optim.curvature_estimator(obj, "exact")
        for lr, lo, hi in ((0.7, None, 2.0), (optax.exponential_decay(1.0, 5, 0.5), 1e-4, None)):
            method = gn.optimize(obj, th0, "preconditioned_gd", curvature="exact", learning_rate=lr, lr_min=lo,
                                 lr_max=hi, num_steps=30)
            chain = gn.optim.nonmonotone_backtracking(gn.optim.scale_by_lr_vector(
                gn.optim.scale_by_curvature(est), lr, lr_min=lo, lr_max=hi, power_iters=20, objective=obj), window=1)
            hand = gn.optimize(obj, th0, chain, num_steps=30)
            np.testing.assert_array_equal(method.theta, hand.theta)
            np.testing.assert_array_equal(method.stats["learning_rate"], hand.stats["learning_rate"])
            np.testing.assert_array_equal(method.extras["lr_vec"], hand.extras["lr_vec"])
            assert method.info["base_lr_used"] == pytest.approx(float(hand.info["base_lr_used"]), rel=0, abs=0)
            h0 = h + np.diag(0.12 * np.asarray(th0) ** 2)  # the Hessian at θ0, where the bound is taken
            ref = np.linalg.eigvalsh(h0 / np.sqrt(np.outer(np.diag(h0), np.diag(h0)))).max()
            assert method.info["lambda_max"] == pytest.approx(ref, rel=1e-2)
