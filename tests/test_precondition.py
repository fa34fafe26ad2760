"""Learning-rate vectors and the scale_by_curvature optax transformation (optax conventions: P ⊙ g, the step
chained after it)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gnomon as gn
from gnomon.curvature.estimate import Curvature
from gnomon.optim.precondition import preconditioned_lambda_max

D_AX = np.array([1e-3, 0.5, 2.0, 1e3])
OPT = np.array([1.0, -2.0, 3.0, 0.5])


def axis_quad(t):
    return 0.5 * jnp.sum(jnp.asarray(D_AX, t.dtype) * (t - jnp.asarray(OPT, t.dtype)) ** 2)


def test_learning_rates_formula_power_by_method_and_clipping():
    c = Curvature.from_diag(jnp.array([1.0, 4.0, 100.0]), method="exact")
    np.testing.assert_allclose(gn.learning_rates(c, 0.5), 0.5 / np.array([1.0, 4.0, 100.0]))
    g2 = Curvature(diag=jnp.array([1.0, 4.0, 100.0]), method="ema_grad2")
    np.testing.assert_allclose(
        gn.learning_rates(g2, 0.5, eps=1e-8), 0.5 / np.sqrt(np.array([1.0, 4.0, 100.0]) + 1e-8), rtol=1e-6
    )
    np.testing.assert_allclose(gn.learning_rates(c, 1.0, power=0.5), 1 / np.sqrt([1.0, 4.0, 100.0]))
    np.testing.assert_allclose(gn.learning_rates(c, 1.0, lr_min=0.05, lr_max=0.5), [0.5, 0.25, 0.05])
    # a plain positive vector is treated as Hessian-like curvature (power 1)
    np.testing.assert_allclose(gn.learning_rates(np.array([2.0, 8.0])), [0.5, 0.125])


def test_block_scale_from_layout():
    layout = gn.Layout({"a": (2,), "b": ()}, blocks={"a": "astro"})
    c = Curvature.from_diag(jnp.ones(3))
    np.testing.assert_allclose(
        gn.learning_rates(c, 0.1, layout=layout, block_scale={"b": 10.0}), [0.1, 0.1, 1.0]
    )
    np.testing.assert_allclose(
        gn.learning_rates(c, 0.1, layout=layout, block_scale={"astro": 3.0}), [0.3, 0.3, 0.1]
    )
    with pytest.raises(ValueError, match="neither a parameter nor a group"):
        gn.learning_rates(c, 0.1, layout=layout, block_scale={"zz": 2.0})
    with pytest.raises(ValueError, match="needs a layout"):
        gn.learning_rates(c, 0.1, block_scale={"b": 2.0})


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="non-finite"):
        gn.learning_rates(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="positive"):
        gn.learning_rates(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="lr_min"):
        gn.learning_rates(np.array([1.0]), lr_min=2.0, lr_max=1.0)
    with pytest.raises(ValueError, match="base_lr"):
        gn.learning_rates(np.array([1.0]), base_lr=0.0)
    with pytest.raises(ValueError, match="vector"):
        gn.learning_rates(np.ones((2, 2)))
    tx = gn.optim.scale_by_curvature(np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        tx.init(jnp.zeros(4))


def test_power_one_diagonal_newton_solves_axis_aligned_quadratic_in_one_step():
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(axis_quad, 4)
        th0 = jnp.zeros(4)
        curv = gn.estimate_curvature(obj, th0, "exact")
        # P ⊙ g (no sign, no learning rate), then the step: optax's own learning rate, η = 1
        tx = optax.chain(gn.optim.scale_by_curvature(curv), optax.scale_by_learning_rate(1.0))
        g = jax.grad(axis_quad)(th0)
        upd, _ = tx.update(g, tx.init(th0), th0)
        np.testing.assert_allclose(th0 + upd, OPT, rtol=1e-12)
        # power ½ (the Adam convention) does not
        tx2 = optax.chain(gn.optim.scale_by_curvature(curv, power=0.5), optax.scale_by_learning_rate(1.0))
        upd2, _ = tx2.update(g, tx2.init(th0), th0)
        assert np.max(np.abs(th0 + upd2 - OPT)) > 0.5


def test_composes_with_optax_chain_clipping_schedule_and_momentum():
    with jax.enable_x64(True):
        diag = jnp.array([1.0, 10.0, 100.0])
        sched = optax.linear_schedule(1.0, 0.5, transition_steps=4)
        tx = optax.chain(
            optax.clip_by_global_norm(1.0), gn.optim.scale_by_curvature(diag), optax.scale_by_learning_rate(sched),
            optax.trace(decay=0.9)
        )
        th = jnp.zeros(3)
        state = tx.init(th)
        grads = [jnp.array([3.0, 4.0, 0.0]), jnp.array([0.1, -0.2, 0.3]), jnp.array([1.0, 1.0, 1.0])]
        v = np.zeros(3)
        for t, g in enumerate(grads):
            upd, state = tx.update(g, state, th)
            gc = np.asarray(g) * min(1.0, 1.0 / np.linalg.norm(g))
            v = -float(sched(t)) / np.asarray(diag) * gc + 0.9 * v
            np.testing.assert_allclose(upd, v, rtol=1e-12)


def test_refresh_re_estimates_every_k_steps_with_ema():
    with jax.enable_x64(True):
        calls = []

        def estimate(theta, data, key, previous):
            calls.append(1)  # traced once
            return jnp.full_like(theta, 4.0), jnp.zeros((3,), jnp.int32)

        est = gn.optim.CurvatureEstimator(estimate, cost=7, method="exact")
        tx = gn.optim.scale_by_curvature(est, initial=jnp.ones(2), refresh_every=2, ema=0.5)
        st = tx.init(jnp.zeros(2))
        g = jnp.ones(2)
        ups = []
        for _ in range(5):
            u, st = tx.update(g, st, jnp.zeros(2))
            ups.append(float(u[0]))
        # diag: 1, 1, (1+4)/2 = 2.5, 2.5, (2.5+4)/2 = 3.25
        np.testing.assert_allclose(ups, [1.0, 1.0, 1 / 2.5, 1 / 2.5, 1 / 3.25])
        assert int(gn.optim.readout.own_grad_evals(st)) == 14  # two refreshes (the initial diagonal was given)
        np.testing.assert_allclose(st.info.diag0, [1.0, 1.0])  # the report keeps c at θ0 beside the one in use
        np.testing.assert_allclose(st.diag, [3.25, 3.25])
        # estimated at init instead: the cost of the initial estimate is counted too
        st2 = gn.optim.scale_by_curvature(est).init(jnp.zeros(2))
        np.testing.assert_allclose(st2.info.diag0, [4.0, 4.0])
        assert int(gn.optim.readout.own_grad_evals(st2)) == 7
        # without refreshes the state is P alone: nothing a next update does not need
        assert st2.count is None and st2.diag is None and st2.key is None


def test_lambda_max_of_preconditioned_hessian_by_power_iteration():
    with jax.enable_x64(True):
        r = np.random.default_rng(3)
        A = r.standard_normal((8, 8))
        H = A @ A.T + 0.1 * np.eye(8)
        shape = 1.0 / np.diag(H)
        lam = preconditioned_lambda_max(
            lambda t: 0.5 * t @ jnp.asarray(H) @ t, jnp.zeros(8), jnp.asarray(shape), num_iters=200
        )
        ref = np.linalg.eigvalsh(np.sqrt(shape)[:, None] * H * np.sqrt(shape)[None, :]).max()
        np.testing.assert_allclose(float(lam), ref, rtol=1e-6)
