"""EigenMap: round trips, whitening, unit-independent truncation, reparameterised objectives, save/load."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gnomon as gn

R = np.random.default_rng(11)
D = 6
A = R.standard_normal((D, D))
C = A @ A.T + 0.5 * np.eye(D)
UNITS = 10.0 ** np.linspace(-3, 3, D)
F = UNITS[:, None] * C * UNITS[None, :]  # badly scaled precision
REF = R.standard_normal(D)


@given(st.integers(0, 2**31 - 1))
def test_round_trips_with_batch_dims(seed):
    r = np.random.default_rng(seed)
    em = gn.EigenMap.from_matrix(F, REF)
    th = r.standard_normal((3, 2, D))
    with jax.enable_x64(True):
        np.testing.assert_allclose(em.to_theta(em.to_z(th)), th, rtol=1e-9, atol=1e-9)
        z = r.standard_normal((4, D))
        np.testing.assert_allclose(em.to_z(em.to_theta(z)), z, rtol=1e-9, atol=1e-9)
        tr = gn.EigenMap.from_matrix(F, REF, truncate=3)
        zt = r.standard_normal((5, 3))
        np.testing.assert_allclose(tr.to_z(tr.to_theta(zt)), zt, rtol=1e-9, atol=1e-9)


def test_whitening_and_loss_is_half_z_squared_near_optimum():
    with jax.enable_x64(True):
        em = gn.EigenMap.from_matrix(F, REF)
        np.testing.assert_allclose(em.basis.T @ F @ em.basis, np.eye(D), atol=1e-9)
        obj = gn.Objective.from_loss(lambda t: 0.5 * (t - REF) @ jnp.asarray(F) @ (t - REF) + 3.0, D)
        zobj = obj.reparameterize(em)
        z = jnp.asarray(R.standard_normal(D))
        assert float(zobj.loss(z)) == pytest.approx(3.0 + 0.5 * float(z @ z), rel=1e-10)
        np.testing.assert_allclose(jax.hessian(zobj.loss)(z), np.eye(D), atol=1e-8)
        # log_prob of z carries log|det B|
        assert float(zobj.log_prob(z) - obj.log_prob(em.to_theta(z))) == pytest.approx(
            em.log_abs_det, rel=1e-12
        )
        assert em.log_abs_det == pytest.approx(-0.5 * np.linalg.slogdet(F)[1], rel=1e-9)
        un = gn.EigenMap.from_matrix(F, REF, whiten=False)
        np.testing.assert_allclose(un.basis.T @ np.diag(np.diag(F)) @ un.basis, np.eye(D), atol=1e-9)


def test_truncation_does_not_depend_on_units():
    a = gn.EigenMap.from_matrix(C, np.zeros(D), truncate=0.5)
    b = gn.EigenMap.from_matrix(F, np.zeros(D), truncate=0.5)
    assert a.z_dim == b.z_dim < D
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-9)
    np.testing.assert_allclose(b.basis, a.basis / UNITS[:, None], rtol=1e-7, atol=1e-12)
    k = gn.EigenMap.from_matrix(F, np.zeros(D), truncate=2)
    assert k.z_dim == 2 and np.all(k.eigenvalues >= b.eigenvalues.min())


def test_gd_in_whitened_coordinates_solves_rotated_ill_conditioned_quadratic(tmp_path):
    with jax.enable_x64(True):
        obj = gn.Objective.from_loss(lambda t: 0.5 * (t - REF) @ jnp.asarray(F) @ (t - REF), D)
        curv = gn.estimate_curvature(obj, jnp.zeros(D), "exact", dense=True)
        em = gn.EigenMap.from_matrix(curv.matrix, jnp.zeros(D))
        zobj = obj.reparameterize(em)
        tr = gn.optimize(zobj, jnp.zeros(D), "gd", learning_rate=1.0, num_steps=2)
        np.testing.assert_allclose(tr.decoded_theta()[1], REF, rtol=1e-8, atol=1e-10)
        assert tr.theta_space == "eigen" and tr.thetamap is em
        gn.save_run(tmp_path / "z", tr)
        run = gn.load_run(tmp_path / "z")
        assert run.meta["theta"]["thetamap"]["hash"] == em.hash
        assert run.meta["theta"]["theta_space"] == "eigen"
        np.testing.assert_allclose(run.trace.decoded_theta(), tr.decoded_theta(), rtol=1e-12)
        # tampered arrays are refused
        arrays = em.to_arrays()
        arrays["basis"] = arrays["basis"] * 1.001
        with pytest.raises(ValueError, match="hash"):
            gn.EigenMap.from_arrays(arrays, em.describe())


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="square"):
        gn.EigenMap.from_matrix(np.ones((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="positive diagonal"):
        gn.EigenMap.from_matrix(np.diag([1.0, 0.0]), np.zeros(2))
    with pytest.raises(ValueError, match="non-positive normalised eigenvalues"):
        gn.EigenMap.from_matrix(np.ones((3, 3)), np.zeros(3))
    sing = gn.EigenMap.from_matrix(np.ones((3, 3)) + 1e-12 * np.eye(3), np.zeros(3), truncate=1e-3)
    assert sing.z_dim == 1
    with pytest.raises(ValueError, match="theta_ref"):
        gn.EigenMap.from_matrix(C, np.zeros(D + 1))
    with pytest.raises(ValueError, match="truncate"):
        gn.EigenMap.from_matrix(C, np.zeros(D), truncate=D + 1)
    with pytest.raises(ValueError, match="non-finite"):
        gn.EigenMap.from_matrix(np.full((2, 2), np.nan), np.zeros(2))
    em = gn.EigenMap.from_matrix(C, np.zeros(D))
    with pytest.raises(ValueError, match="trailing dimension"):
        em.to_z(np.zeros(D + 1))
