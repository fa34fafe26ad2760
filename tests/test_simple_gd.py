"""run_simple_gd and the Trace invariants against the closed-form GD path on a quadratic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.optim.loop import run_loop
from gnomon.optim.simple_gd import gd_program

A = np.diag([1.0, 4.0, 9.0]) + 0.1
THETA0 = np.array([1.0, -2.0, 0.5])


def quad(t):
    return 0.5 * t @ jnp.asarray(A, t.dtype) @ t


def closed_form_path(lr, n, dtype=np.float64):
    M = np.eye(3) - lr * A
    out = [THETA0.astype(dtype)]
    for _ in range(n):
        out.append(M @ out[-1])
    return np.stack(out)


@pytest.mark.parametrize("x64", [False, True])
def test_path_matches_closed_form_and_loss_is_at_theta(x64):
    with jax.enable_x64(x64):
        tr = gn.run_simple_gd(quad, jnp.asarray(THETA0), learning_rate=0.05, num_steps=40, channels="all")
        dtype = np.float64 if x64 else np.float32
        assert tr.theta.dtype == dtype and tr.loss.dtype == dtype
        ref = closed_form_path(0.05, 40)
        tol = 1e-12 if x64 else 2e-5
        np.testing.assert_allclose(tr.theta, ref, rtol=tol, atol=tol)
        # invariant: loss[t] is the loss at theta[t] (not the loss before the update)
        np.testing.assert_allclose(tr.loss, [0.5 * r @ A @ r for r in ref], rtol=tol * 10)
        np.testing.assert_allclose(tr.stats["grad_norm"], np.linalg.norm(ref @ A.T, axis=1), rtol=tol * 10)
        steps = np.linalg.norm(np.diff(ref, axis=0), axis=1)
        np.testing.assert_allclose(tr.stats["step_norm"][:-1], steps, rtol=1e-4)
        assert np.isnan(tr.stats["step_norm"][-1])
        assert np.all(tr.stats["learning_rate"][:-1] == pytest.approx(0.05))
        assert tr.status == "max_steps" and tr.num_steps == 40 and tr.num_grad_evals == 41
        np.testing.assert_array_equal(tr.step, np.arange(41))


@pytest.mark.parametrize("k", [1, 3, 7, 40, 100])
def test_record_every_thins_and_keeps_final(k):
    tr = gn.run_simple_gd(quad, jnp.asarray(THETA0), learning_rate=0.05, num_steps=40, record_every=k)
    expected_steps = sorted(set(range(0, 41, k)) | {40})
    np.testing.assert_array_equal(tr.step, expected_steps)
    ref = closed_form_path(0.05, 40)[expected_steps]
    np.testing.assert_allclose(tr.theta, ref, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(tr.loss, [0.5 * r @ A @ r for r in ref], rtol=1e-4)


def test_long_run_spans_several_chunks():
    tr = gn.run_simple_gd(quad, jnp.asarray(THETA0), learning_rate=0.01, num_steps=5000, record_every=3)
    assert tr.num_steps == 5000 and tr.step[-1] == 5000 and tr.step[-2] == 4998
    assert np.all(np.diff(tr.step) > 0)


def test_convergence_by_gradient_tolerance():
    tr = gn.run_simple_gd(quad, jnp.asarray(THETA0), learning_rate=0.1, num_steps=10_000, tol=1e-4)
    assert tr.status == "converged" and tr.converged
    assert tr.stats["grad_norm"][-1] <= 1e-4 < tr.stats["grad_norm"][-2]
    # the slowest mode contracts by (1 - 0.1 λmin) per step: the stopping step is predictable
    assert 50 < tr.num_steps < 200


def test_divergence_stops_and_keeps_finite_trace():
    tr = gn.run_simple_gd(quad, jnp.asarray(THETA0), learning_rate=0.5, num_steps=10_000)  # 0.5·9.1 > 2
    assert tr.status.startswith("diverged at step ") and "non-finite loss" in tr.status
    t_bad = int(tr.status.split()[3].rstrip(":"))
    assert tr.num_steps == t_bad - 1 and np.all(np.isfinite(tr.loss)) and np.all(np.isfinite(tr.theta))
    assert tr.diverged and not tr.converged


def test_nonfinite_start_is_reported_at_step_zero():
    tr = gn.run_simple_gd(lambda t: jnp.sum(jnp.log(t)), jnp.array([-1.0, 1.0]), learning_rate=0.1, num_steps=5)
    assert tr.status.startswith("diverged at step 0") and len(tr) == 1


def test_continuation_equals_one_run():
    one = gn.run_simple_gd(quad, jnp.asarray(THETA0), learning_rate=0.05, num_steps=30)
    first = gn.run_simple_gd(quad, jnp.asarray(THETA0), learning_rate=0.05, num_steps=12)
    both = gn.run_simple_gd(quad, first, learning_rate=0.05, num_steps=18)
    np.testing.assert_array_equal(both.step, one.step)
    np.testing.assert_allclose(both.theta, one.theta, rtol=1e-6)
    np.testing.assert_allclose(both.loss, one.loss, rtol=1e-6)
    assert both.num_grad_evals == first.num_grad_evals + 19


def test_second_call_does_not_recompile():
    count = {"n": 0}

    def loss(t):
        count["n"] += 1  # runs only while JAX traces
        return jnp.sum(t**2)

    gn.run_simple_gd(loss, jnp.ones(2), learning_rate=0.1, num_steps=20)
    traced = count["n"]
    gn.run_simple_gd(loss, 2 * jnp.ones(2), learning_rate=0.1, num_steps=20)
    gn.run_simple_gd(loss, 3 * jnp.ones(2), learning_rate=0.1, num_steps=17)  # same row buffer (2^k or 1.5·2^k rows)
    assert count["n"] == traced


def test_batched_loop_equals_single_runs():
    obj = gn.Objective.from_loss(lambda t, d: 0.5 * jnp.sum(d * t**2), 3, takes_data=True)
    scales = jnp.array([[1.0, 2.0, 3.0], [0.5, 1.0, 1.5], [2.0, 2.0, 2.0]])
    starts = jnp.ones((3, 3))
    batch = run_loop(obj, starts, gd_program(obj, 0.2), num_steps=200, tol=1e-3, data=scales, batched=True).trace
    assert batch.is_batched and batch.batch_size == 3
    for i in range(3):
        single = run_loop(obj, starts[i], gd_program(obj, 0.2), num_steps=200, tol=1e-3, data=scales[i]).trace
        member = batch[i]
        assert member.status == single.status == "converged"
        np.testing.assert_array_equal(member.step, single.step)
        np.testing.assert_allclose(member.theta, single.theta, rtol=1e-6)
        assert member.num_grad_evals == single.num_grad_evals


def test_trace_is_a_pytree_and_validates():
    tr = gn.run_simple_gd(quad, jnp.asarray(THETA0), learning_rate=0.05, num_steps=5)
    again = jax.jit(lambda t: t)(tr)
    assert isinstance(again, gn.Trace) and again.status == tr.status and again.info == tr.info  # docs/trace.md
    np.testing.assert_array_equal(np.asarray(again.theta), tr.theta)
    leaves = jax.tree_util.tree_leaves(tr)
    assert any(leaf is tr.theta for leaf in leaves)
    with pytest.raises(ValueError, match="loss must have shape"):
        gn.Trace(kind="optimization", theta=np.zeros((4, 2)), loss=np.zeros(3)).validate()
    with pytest.raises(ValueError, match="kind must be one of"):
        gn.Trace(kind="opt", theta=np.zeros((4, 2)))
    assert tr.best_index == len(tr) - 1
    np.testing.assert_array_equal(tr.best_theta, tr.theta[-1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(learning_rate=-1.0, num_steps=5), "learning_rate must be a positive number"),
        (dict(learning_rate=0.1, num_steps=-5), "num_steps must be a non-negative int"),
        (dict(learning_rate=0.1, num_steps=5, record_every=0), "record_every must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gn.run_simple_gd(quad, jnp.asarray(THETA0), **kwargs)


def test_wrong_theta_shape():
    obj = gn.Objective.from_loss(quad, 3)
    with pytest.raises(ValueError, match=r"θ0 has length 2 but the objective has dim 3"):
        gn.run_simple_gd(obj, jnp.ones(2), learning_rate=0.1, num_steps=3)
    with pytest.raises(ValueError, match=r"flat vector"):
        gn.run_simple_gd(quad, jnp.ones((2, 3)), learning_rate=0.1, num_steps=3)


@pytest.mark.parametrize("record_every", [1, 4])
def test_batch_with_mixed_endings_equals_single_runs(record_every):
    """Members that converge, run out of steps and diverge at different steps each match their single run."""
    obj = gn.Objective.from_loss(lambda t, d: 0.5 * jnp.sum(d * t**2), 2, takes_data=True)
    scales = jnp.array([[1.0, 2.0], [0.1, 0.2], [30.0, 1.0], [3.0, 0.5]])  # 30·0.1 > 2: member 2 diverges
    starts = jnp.array([[1.0, 1.0], [1.0, -1.0], [0.5, 0.5], [jnp.nan, 1.0]])  # member 3: non-finite start
    batch = run_loop(obj, starts, gd_program(obj, 0.1), num_steps=150, tol=1e-3, data=scales, batched=True,
                     record_every=record_every).trace
    assert [s.split(":")[0] for s in batch.status] == ["converged", "max_steps", batch[2].status.split(":")[0],
                                                      "diverged at step 0"]
    assert batch[2].diverged
    for i in range(4):
        single = run_loop(obj, starts[i], gd_program(obj, 0.1), num_steps=150, tol=1e-3, data=scales[i],
                          record_every=record_every).trace
        member = batch[i]
        assert member.status == single.status and member.num_grad_evals == single.num_grad_evals
        np.testing.assert_array_equal(member.step, single.step)
        np.testing.assert_allclose(member.theta, single.theta, rtol=1e-6)
        np.testing.assert_allclose(member.loss, single.loss, rtol=1e-6)
        for k in single.stats:
            np.testing.assert_allclose(member.stats[k], single.stats[k], rtol=1e-6)
