"""Objective: the loss/log_prob pair, the Jacobian policy, residuals, data, numpyro models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn


def test_from_loss_pairs_loss_and_log_prob():
    A = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    obj = gn.Objective.from_loss(lambda t: 0.5 * t @ A @ t, 2)
    th = jnp.array([0.3, -1.2])
    assert obj.dim == 2 and obj.layout is None
    assert float(obj.log_prob(th)) == pytest.approx(-float(obj.loss(th)))
    val, grad = obj.value_and_grad(th)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(A @ th), rtol=1e-6)
    assert float(val) == pytest.approx(float(0.5 * th @ A @ th))


def test_jacobian_policy_positive_scale():
    """Exponential(1) on σ: loss = σ (no Jacobian) → MAP at σ→0 in θ=log σ; log_prob adds log σ = θ."""
    layout = gn.Layout({"sigma": ()}, transforms={"sigma": "positive"})
    obj = gn.Objective.from_log_density(lambda p: -p["sigma"], layout)
    th = jnp.array([0.7])
    s = np.exp(0.7)
    assert float(obj.loss(th)) == pytest.approx(s, rel=1e-6)
    assert float(obj.log_prob(th)) == pytest.approx(-s + 0.7, rel=1e-6)
    assert obj.info["loss_includes_jacobian"] is False
    obj_j = obj.with_jacobian_in_loss(True)
    assert float(obj_j.loss(th)) == pytest.approx(-(-s + 0.7), rel=1e-6)
    assert obj_j.info["loss_includes_jacobian"] is True
    # the mode of θ's own density: d/dθ (e^θ - θ) = 0 at θ = 0
    g = jax.grad(obj_j.loss)(jnp.array([0.0]))
    assert abs(float(g[0])) < 1e-6


def test_log_prob_is_normalised_density_of_theta():
    """∫ exp(log_prob(θ)) dθ = 1 when fn is a normalised density of the constrained value (Jacobian in)."""
    layout = gn.Layout({"p": ()}, transforms={"p": ("interval", 0.0, 1.0)})
    obj = gn.Objective.from_log_density(lambda prm: jnp.log(6 * prm["p"] * (1 - prm["p"])), layout)  # Beta(2,2)
    grid = jnp.linspace(-30, 30, 200001)
    dens = jnp.exp(jax.vmap(lambda u: obj.log_prob(u[None]))(grid))
    assert float(jnp.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-3)


def test_from_residuals_loss_and_per_observation():
    x = jnp.linspace(0, 1, 7)
    y = 2.0 * x + 1.0 + jnp.sin(9 * x) * 0.1
    w = jnp.linspace(1, 3, 7)
    obj = gn.Objective.from_residuals(lambda t: t[0] * x + t[1] - y, 2, weights=w)
    th = jnp.array([1.5, 0.2])
    r = th[0] * x + th[1] - y
    assert float(obj.loss(th)) == pytest.approx(float(0.5 * jnp.sum(w * r**2)), rel=1e-6)
    np.testing.assert_allclose(np.asarray(obj.residuals(th)), np.asarray(r), rtol=1e-6)
    np.testing.assert_allclose(float(jnp.sum(obj.per_observation(th))), float(obj.loss(th)), rtol=1e-6)
    assert obj.has_residuals and obj.has_per_observation


def test_data_argument_and_with_data():
    def loss(t, d):
        return jnp.sum((t - d["mu"]) ** 2)

    obj = gn.Objective.from_loss(loss, 3, data={"mu": jnp.ones(3)})
    assert obj.takes_data
    assert float(obj.loss(jnp.ones(3))) == pytest.approx(0.0)
    assert float(obj.loss(jnp.ones(3), {"mu": jnp.zeros(3)})) == pytest.approx(3.0)
    other = obj.with_data({"mu": 2 * jnp.ones(3)})
    assert float(other.loss(jnp.ones(3))) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="take θ only"):
        gn.Objective.from_loss(lambda t: jnp.sum(t), 3).with_data(1.0)


def test_missing_aux_outputs_give_clear_errors():
    obj = gn.Objective.from_loss(lambda t: jnp.sum(t**2), 2)
    with pytest.raises(ValueError, match="no residuals.*from_residuals"):
        obj.residuals(jnp.zeros(2))
    with pytest.raises(ValueError, match="no per-observation terms"):
        obj.per_observation(jnp.zeros(2))
    with pytest.raises(ValueError, match="positive int dimension or a gnomon.Layout"):
        gn.Objective.from_loss(lambda t: t, 0)
    with pytest.raises(ValueError, match="needs a gnomon.Layout"):
        gn.Objective.from_log_density(lambda p: 0.0, 3)


class _Shift:
    """A linear θ-map θ = θ_ref + B z (independent of gnomon.EigenMap)."""

    def __init__(self, ref, B):
        self.ref, self.B = ref, B
        self.z_dim = B.shape[1]
        self.log_abs_det = float(np.linalg.slogdet(np.asarray(B))[1])

    def to_theta(self, z):
        return self.ref + z @ self.B.T


def test_reparameterize_composes_and_keeps_residuals():
    x = jnp.linspace(-1, 1, 5)
    base = gn.Objective.from_residuals(lambda t: t[0] + t[1] * x - x**2, 2)
    m = _Shift(jnp.array([0.5, 0.1]), jnp.array([[2.0, 0.0], [1.0, 0.5]]))
    zobj = base.reparameterize(m)
    z = jnp.array([0.3, -0.4])
    th = m.to_theta(z)
    assert zobj.dim == 2 and zobj.thetamap is m and zobj.base is base
    assert float(zobj.loss(z)) == pytest.approx(float(base.loss(th)), rel=1e-6)
    np.testing.assert_allclose(np.asarray(zobj.residuals(z)), np.asarray(base.residuals(th)), rtol=1e-6)
    assert float(zobj.log_prob(z)) == pytest.approx(float(base.log_prob(th)) + m.log_abs_det, rel=1e-6)


def _eight_schools():
    import numpyro
    import numpyro.distributions as dist

    y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def model(sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfCauchy(5))
        with numpyro.plate("J", sigma.shape[0]):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
            numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)

    return model, sigma, y


def test_from_numpyro_matches_numpyro_potential_energy():
    from numpyro.infer.util import initialize_model, log_density

    with jax.enable_x64(True):
        model, sigma, y = _eight_schools()
        obj = gn.Objective.from_numpyro(model, sigma, y=y)
        assert obj.layout.names == ("mu", "tau", "theta")
        assert [e["transform"] for e in obj.layout.index_map()] == ["identity", "positive", "identity"]
        assert obj.dim == 10
        info = initialize_model(jax.random.PRNGKey(1), model, model_args=(sigma,), model_kwargs={"y": y})
        rng = np.random.default_rng(0)
        for _ in range(3):
            th = jnp.asarray(rng.normal(size=10))
            unc = obj.layout.unpack_unconstrained(th)
            pe = info.potential_fn(unc)
            assert float(obj.log_prob(th)) == pytest.approx(-float(pe), rel=1e-10)
            lp, _ = log_density(model, (sigma,), {"y": y}, obj.layout.unpack(th))
            assert float(obj.loss(th)) == pytest.approx(-float(lp), rel=1e-10)
        th = jnp.asarray(rng.normal(size=10))
        terms = obj.per_observation(th)
        assert terms.shape == (8,)
        prm = obj.layout.unpack(th)
        ref = -(-0.5 * ((y - prm["theta"]) / sigma) ** 2 - jnp.log(sigma) - 0.5 * jnp.log(2 * jnp.pi))
        np.testing.assert_allclose(np.asarray(terms), np.asarray(ref), rtol=1e-10)
        assert set(obj.observed) == {"obs"}
