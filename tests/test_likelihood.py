"""Objective.from_likelihood, likelihood families and the expected Fisher (estimate_curvature method="fisher")."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import gnomon as gn
from gnomon.objective.checks import check_finite_data

RNG = np.random.default_rng(0)
A = RNG.uniform(0.5, 2.0, size=(40, 3))
THETA = np.array([1.0, 2.0, 3.0])


def linear(theta):
    return jnp.asarray(A, theta.dtype) @ theta


def _poisson_obj(y=None, prior=None, layout=3):
    with jax.enable_x64(True):
        y = np.asarray(RNG.poisson(A @ THETA), float) if y is None else y
        return gn.Objective.from_likelihood(linear, y, "poisson", layout, prior=prior)


# ---------------------------------------------------------------------------------------------- families
@pytest.mark.parametrize(
    "family, ref",
    [
        (gn.family.poisson(), lambda y, m: st.poisson.logpmf(y, m)),
        (gn.family.gaussian(sigma=0.7), lambda y, m: st.norm.logpdf(y, m, 0.7)),
        (gn.family.student_t(nu=4.0, sigma=0.7), lambda y, m: st.t.logpdf(y, 4.0, loc=m, scale=0.7)),
    ],
)
def test_family_log_likelihoods_match_scipy(family, ref):
    with jax.enable_x64(True):
        mu = np.array([0.3, 2.0, 7.5, 40.0])
        y = np.array([0.0, 3.0, 5.0, 44.0])
        got = family.log_likelihood(jnp.asarray(y), jnp.asarray(mu), family.resolve({}, jnp.float64))
        np.testing.assert_allclose(np.asarray(got), ref(y, mu), rtol=1e-10)


@pytest.mark.parametrize(
    "family, draw",
    [
        (gn.family.poisson(), lambda rng, mu: rng.poisson(mu)),
        (gn.family.gaussian(sigma=0.7), lambda rng, mu: mu + 0.7 * rng.normal(size=mu.shape)),
        (gn.family.student_t(nu=4.0, sigma=0.7), lambda rng, mu: mu + 0.7 * rng.standard_t(4.0, size=mu.shape)),
    ],
)
def test_fisher_weights_equal_the_expected_squared_score(family, draw):
    """w(μ) = E[(∂_μ log p(y|μ))²], checked by Monte Carlo (numpy's samplers)."""
    with jax.enable_x64(True):
        mu = np.array([3.0, 20.0])
        p = family.resolve({}, jnp.float64)
        mus = jnp.broadcast_to(jnp.asarray(mu), (100_000, 2))
        y = jnp.asarray(draw(np.random.default_rng(5), np.broadcast_to(mu, (100_000, 2))), jnp.float64)
        score = jax.grad(lambda m: jnp.sum(family.log_likelihood(y, m, p)))(mus)  # elementwise scores
        mc = np.mean(np.asarray(score) ** 2, axis=0)
        se = np.std(np.asarray(score) ** 2, axis=0) / np.sqrt(len(y))
        w = np.asarray(family.fisher_weights(mu, p))
        assert np.all(np.abs(mc - w) < 5 * se), (mc, w, se)


# ---------------------------------------------------------------------------------------------- the Fisher
def test_poisson_fisher_equals_the_closed_form_in_every_mode():
    obj = _poisson_obj()
    with jax.enable_x64(True):
        th = jnp.asarray(THETA)
        mu = A @ THETA
        exact = A.T @ (A / mu[:, None])
        dense = gn.estimate_curvature(obj, th, "fisher", dense=True)
        np.testing.assert_allclose(np.asarray(dense.matrix), exact, rtol=1e-12)
        assert dense.config["jacobian_mode"] == "forward" and dense.num_grad_evals == 3
        diag = gn.estimate_curvature(obj, th, "fisher")
        np.testing.assert_allclose(np.asarray(diag.diag), np.diag(exact), rtol=1e-12)
        probes = gn.estimate_curvature(obj, th, "fisher", num_probes=4000, key=jax.random.key(3))
        np.testing.assert_allclose(np.asarray(probes.diag), np.diag(exact), rtol=0.1)
        assert probes.num_grad_evals == 4000 and probes.config["jacobian_mode"] == "probes"
        # reverse mode: fewer data than parameters
        B = RNG.uniform(0.5, 2.0, size=(2, 5))
        o = gn.Objective.from_likelihood(lambda t: jnp.asarray(B) @ t, np.array([3.0, 4.0]), "poisson", 5)
        t5 = jnp.ones(5)
        c = gn.estimate_curvature(o, t5, "fisher", dense=True)
        m5 = B @ np.ones(5)
        np.testing.assert_allclose(np.asarray(c.matrix), B.T @ (B / m5[:, None]), rtol=1e-12)
        assert c.config["jacobian_mode"] == "reverse" and c.num_grad_evals == 2


def test_fisher_equals_the_monte_carlo_average_of_score_outer_products():
    """A nonlinear Poisson model: E[s sᵀ] over simulated data equals JᵀWJ within Monte-Carlo error."""
    x = np.linspace(-2, 2, 25)

    def predict(t):
        return 30.0 * jnp.exp(-0.5 * ((x - t[0]) / t[1]) ** 2) + t[2]

    with jax.enable_x64(True):
        th = jnp.array([0.2, 0.8, 2.0])
        mu = predict(th)
        obj = gn.Objective.from_likelihood(predict, np.asarray(mu), "poisson", 3)
        F = np.asarray(gn.estimate_curvature(obj, th, "fisher", dense=True).matrix)
        Y = jnp.asarray(np.random.default_rng(6).poisson(np.asarray(mu), (8_000, 25)), jnp.float64)
        scores = np.asarray(jax.vmap(lambda y: jax.grad(obj.log_prob)(th, y))(Y))  # per-call data
        outer = scores[:, :, None] * scores[:, None, :]
        se = outer.std(0) / np.sqrt(len(Y))
        assert np.all(np.abs(outer.mean(0) - F) < 5 * se + 1e-12)


def test_gaussian_fisher_equals_gauss_newton_of_an_independent_residual_objective():
    sigma = RNG.uniform(0.5, 2.0, size=30)
    x = np.linspace(0, 1, 30)

    def predict(t):
        return t[0] * jnp.sin(3 * x * t[1]) + t[2] * x**2

    with jax.enable_x64(True):
        th = jnp.array([1.5, 0.7, -0.4])
        y = np.asarray(predict(th)) + sigma * RNG.normal(size=30)
        obj = gn.Objective.from_likelihood(predict, y, gn.family.gaussian(sigma=sigma), 3)
        ref = gn.Objective.from_residuals(lambda t: jnp.asarray(y) - predict(t), 3, weights=1 / sigma**2)
        F = gn.estimate_curvature(obj, th, "fisher", dense=True).matrix
        G = gn.estimate_curvature(ref, th, "gauss_newton", dense=True).matrix
        np.testing.assert_allclose(np.asarray(F), np.asarray(G), rtol=1e-12)
        # the loss is the Gaussian negative log likelihood (constants included)
        assert float(obj.loss(th)) == pytest.approx(-st.norm.logpdf(y, np.asarray(predict(th)), sigma).sum(), rel=1e-12)


def test_gaussian_sampler_has_the_right_moments():
    with jax.enable_x64(True):
        y = np.asarray(gn.family.gaussian(0.5).sample(jax.random.key(0), jnp.full(20_000, 4.0)))
    assert abs(y.mean() - 4.0) < 5 * 0.5 / np.sqrt(y.size) and abs(y.var() / 0.25 - 1) < 0.05


def test_student_t_fisher_uses_its_weights_and_per_call_sigma():
    with jax.enable_x64(True):
        th = jnp.asarray(THETA)
        y = A @ THETA
        base = np.asarray(A.T @ A)
        fam = gn.family.student_t(nu=5.0)
        o1 = gn.Objective.from_likelihood(linear, {"y": y, "sigma": np.full(40, 2.0)}, fam, 3)
        o2 = gn.Objective.from_likelihood(linear, {"y": y + 1, "sigma": np.full(40, 4.0)}, fam, 3)
        assert o1.compile_key == o2.compile_key  # σ maps travel with the data
        F1 = gn.estimate_curvature(o1, th, "fisher", dense=True).matrix
        F2 = gn.estimate_curvature(o2, th, "fisher", dense=True).matrix
        np.testing.assert_allclose(np.asarray(F1), base * 6 / (8 * 4.0), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(F2), base * 6 / (8 * 16.0), rtol=1e-12)


def test_prior_curvature_is_added_exactly_and_can_dominate():
    """F = JᵀWJ + ∇²(−log π) over θ; a tight prior dominates; include_prior=False leaves the likelihood's."""
    lay = gn.Layout({"a": (2,), "s": ()}, transforms={"s": "positive"})

    def prior(p):  # N(0, 0.01²) on a; log-normal on s
        return -0.5 * jnp.sum((p["a"] / 0.01) ** 2) - 0.5 * (jnp.log(p["s"]) / 0.5) ** 2

    def predict(t):
        return jnp.asarray(A, t.dtype) @ jnp.array([t[0], t[1], jnp.exp(t[2])])

    with jax.enable_x64(True):
        th = jnp.array([1.0, 2.0, np.log(3.0)])
        y = np.round(np.asarray(predict(th)))
        obj = gn.Objective.from_likelihood(predict, y, "poisson", lay, prior=prior)
        lik = gn.Objective.from_likelihood(predict, y, "poisson", lay)
        F = np.asarray(gn.estimate_curvature(obj, th, "fisher", dense=True).matrix)
        F0 = np.asarray(gn.estimate_curvature(lik, th, "fisher", dense=True).matrix)
        Fx = np.asarray(gn.estimate_curvature(obj, th, "fisher", dense=True, include_prior=False).matrix)
        np.testing.assert_allclose(Fx, F0, rtol=1e-12)
        np.testing.assert_allclose(F - F0, np.diag([1e4, 1e4, 1 / 0.25]), rtol=1e-10, atol=1e-9)
        assert gn.estimate_curvature(obj, th, "fisher", dense=True).config["prior_included"] is True
        # log_prob: likelihood + prior + log|dT/dθ| (θ[2] = log s)
        expected = st.poisson.logpmf(y, np.asarray(predict(th))).sum() + float(prior(lay.unpack(th))) + float(th[2])
        assert float(obj.log_prob(th)) == pytest.approx(expected, rel=1e-12)
        assert float(obj.loss(th)) == pytest.approx(-(expected - float(th[2])), rel=1e-12)


def test_fisher_in_a_whitened_eigen_map_is_the_identity():
    obj = _poisson_obj()
    with jax.enable_x64(True):
        th = jnp.asarray(THETA)
        F = gn.estimate_curvature(obj, th, "fisher", dense=True).matrix
        emap = gn.EigenMap.from_matrix(F, th)
        Fz = gn.estimate_curvature(obj.reparameterize(emap), jnp.zeros(3), "fisher", dense=True).matrix
        np.testing.assert_allclose(np.asarray(Fz), np.eye(3), atol=1e-10)


# ---------------------------------------------------------------------------------------------- compile once
def test_epochs_compile_once():
    """A time series: new data per epoch (new objectives, with_data, per-call data) traces the model once."""
    traces = []

    def predict(t):
        traces.append(1)
        return jnp.asarray(A, t.dtype) @ t

    th = jnp.asarray(THETA, jnp.float32)
    epochs = [np.asarray(RNG.poisson(A @ THETA), np.float32) for _ in range(4)]
    obj = gn.Objective.from_likelihood(predict, epochs[0], "poisson", 3)
    gn.estimate_curvature(obj, th, "fisher")
    first = len(traces)
    for y in epochs[1:]:
        again = gn.Objective.from_likelihood(predict, y, "poisson", 3)
        assert again.compile_key == obj.compile_key == obj.with_data(y).compile_key
        gn.estimate_curvature(again, th, "fisher")
        gn.estimate_curvature(obj.with_data(y), th, "fisher", dense=False)
        gn.estimate_curvature(obj, th, "fisher", data=y)
    assert len(traces) == first
    # the optimizer with per-call data: one compilation for all epochs
    gn.optimize(obj, th, "gd", num_steps=3, learning_rate=1e-3, data=epochs[0])
    after_first_fit = len(traces)
    for y in epochs[1:]:
        gn.optimize(obj, th, "gd", num_steps=3, learning_rate=1e-3, data=y)
    assert len(traces) == after_first_fit
    # what does change the program changes the key
    assert gn.Objective.from_likelihood(predict, epochs[0][:39].tolist() + [1.0], "poisson", 3).compile_key != \
        obj.compile_key  # a list, not an array: another structure
    assert gn.Objective.from_likelihood(predict, epochs[0], gn.family.poisson(floor=1.0), 3).compile_key != \
        obj.compile_key


def test_compile_key_of_other_constructors():
    f = lambda t, d: jnp.sum((t - d) ** 2)  # noqa: E731
    a = gn.Objective.from_loss(f, 2, data=np.zeros(2))
    assert a.compile_key == gn.Objective.from_loss(f, 2, data=np.ones(2)).compile_key == \
        a.with_data(np.ones(2)).compile_key
    assert a.compile_key != gn.Objective.from_loss(f, 2, data=np.ones(3)).compile_key
    assert a.compile_key != a.with_jacobian_in_loss(True).compile_key
    r = lambda t: t  # noqa: E731
    assert gn.Objective.from_residuals(r, 2, weights=np.ones(2)).compile_key == \
        gn.Objective.from_residuals(r, 2, weights=np.ones(2)).compile_key
    assert gn.Objective.from_residuals(r, 2, weights=np.ones(2)).compile_key != \
        gn.Objective.from_residuals(r, 2, weights=2 * np.ones(2)).compile_key
    hash(a.compile_key)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda y: gn.Objective.from_likelihood(linear, y.at[3].set(jnp.nan), "poisson", 3),
         r"data has nan at index \(3,\) \(1 of 40"),
        (lambda y: gn.Objective.from_likelihood(linear, {"y": y, "sigma": jnp.ones(40).at[7].set(jnp.inf)},
                                                "gaussian", 3), r"data\['sigma'\] has inf at index \(7,\)"),
        (lambda y: gn.Objective.from_likelihood(linear, y.at[2].set(-1.0), "poisson", 3),
         r"poisson family needs y non-negative counts; got -1.0 at index \(2,\)"),
        (lambda y: gn.Objective.from_likelihood(linear, y[:5], "poisson", 3),
         r"observations have shape \(5,\) but predict\(θ\) returns shape \(40,\)"),
        (lambda y: gn.Objective.from_likelihood(linear, y, "gaussian", 3), r"gaussian family needs 'sigma'"),
        (lambda y: gn.Objective.from_likelihood(linear, {"y": y, "nu": 3.0}, "gaussian", 3),
         r"unexpected key\(s\) \['nu'\]"),
        (lambda y: gn.Objective.from_likelihood(linear, y, "student_t", 3), r"needs its degrees of freedom"),
        (lambda y: gn.Objective.from_likelihood(linear, y, "cauchy", 3), r"unknown likelihood family 'cauchy'"),
        (lambda y: gn.family.gaussian(sigma=np.array([1.0, 0.0])), r"sigma must be finite and positive; got 0.0 "
                                                                   r"at index \(1,\)"),
        (lambda y: gn.Objective.from_residuals(lambda t: t, 2, weights=np.array([1.0, np.nan])),
         r"weights has nan at index \(1,\)"),
        (lambda y: gn.Objective.from_loss(lambda t, d: jnp.sum(t * d), 2, data=np.array([np.inf, 1.0])),
         r"data has inf at index \(0,\)"),
        (lambda y: _poisson_obj().with_data(y.at[0].set(jnp.nan)), r"data has nan at index \(0,\)"),
        # per-call data of the engines: refused before compiling, not a run "diverged at step 0"
        (lambda y: gn.optimize(_poisson_obj(), jnp.asarray(THETA, jnp.float32), "gd", learning_rate=1e-3,
                               num_steps=2, data=y.at[5].set(jnp.nan)), r"data has nan at index \(5,\)"),
        (lambda y: gn.optimize(_poisson_obj(), jnp.asarray(THETA, jnp.float32), "gd", learning_rate=1e-3,
                               num_steps=2, data=y[:7]), r"observations have shape \(7,\)"),
        (lambda y: gn.optimize_batch(_poisson_obj(), jnp.tile(jnp.asarray(THETA, jnp.float32), (2, 1)), "gd",
                                     learning_rate=1e-3, num_steps=2, data=jnp.stack([y, y.at[1].set(jnp.inf)])),
         r"data of batch member 1 has inf at index \(1,\)"),  # names the member (issue 18, item 7)
        (lambda y: gn.estimate_curvature(_poisson_obj(), jnp.asarray(THETA, jnp.float32), "fisher",
                                         data=y.at[4].set(jnp.nan)), r"data has nan at index \(4,\)"),
        (lambda y: gn.optimize(gn.Objective.from_loss(lambda t, d: jnp.sum((t[0] - d) ** 2), 2, data=y),
                               jnp.zeros(2), "gd", learning_rate=1e-3, num_steps=2, data=y.at[6].set(jnp.inf)),
         r"data has inf at index \(6,\)"),
    ],
)
def test_bad_data_names_the_array_and_the_first_bad_index(make, match):
    y = jnp.asarray(RNG.poisson(A @ THETA), jnp.float32)
    with pytest.raises(ValueError, match=match):
        make(y)


def test_check_finite_data_walks_pytrees_and_skips_tracers():
    check_finite_data({"y": np.ones(3), "n": np.array([1, 2]), "name": "x"}, "data")
    with pytest.raises(ValueError, match=r"epochs\[1\]\['sigma'\] has nan at index \(0, 1\)"):
        check_finite_data([{"sigma": np.ones((2, 2))}, {"sigma": np.array([[1.0, np.nan], [1, 1]])}], "epochs")
    with pytest.raises(ValueError, match=r"data is inf"):
        check_finite_data(float("inf"))
    jax.jit(lambda d: check_finite_data(d) or d)(jnp.ones(2))  # traced: nothing to check


# ---------------------------------------------------------------------------------------------- float32, zeros
def test_float32_poisson_with_dark_pixels_and_zero_counts():
    """μ underflows to 0 in far pixels and the data there are 0: loss, gradient and Fisher stay finite and
    agree with float64 (the floor only touches pixels that carry no information)."""
    x = np.linspace(-6, 6, 64)
    xx, yy = np.meshgrid(x, x)

    def predict(t):
        r2 = (jnp.asarray(xx, t.dtype) - t[0]) ** 2 + (jnp.asarray(yy, t.dtype) - t[1]) ** 2
        return t[2] * jnp.exp(-0.5 * r2 / 0.3**2)  # exp(-200) = 0 in float32

    th64 = np.array([0.1, -0.2, 500.0])
    with jax.enable_x64(True):
        mu = np.asarray(predict(jnp.asarray(th64)))
    y = RNG.poisson(mu).astype(float)
    mu32 = np.asarray(predict(jnp.asarray(th64, jnp.float32)))
    assert (mu32 == 0).sum() > 1000 and (y == 0).sum() > 3000
    out = {}
    for dt, x64 in ((np.float32, False), (np.float64, True)):
        with jax.enable_x64(x64):
            obj = gn.Objective.from_likelihood(predict, y.astype(dt), "poisson", 3)
            th = jnp.asarray(th64, dt)
            loss, grad = jax.jit(obj.value_and_grad)(th)
            F = gn.estimate_curvature(obj, th, "fisher", dense=True)
            assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))
            assert np.all(np.isfinite(np.asarray(F.matrix)))
            out[dt] = np.asarray(F.matrix, float)
    np.testing.assert_allclose(out[np.float32], out[np.float64], rtol=1e-4, atol=1e-6 * np.abs(out[np.float64]).max())


def test_fisher_diagonal_is_not_floored_across_wildly_different_units():
    """Parameters whose information differs by 1e12 keep their exact Fisher diagonal (default floor of the
    information methods: 1e-12 of the median); the noisy methods keep the 1e-6 floor."""
    scales = np.array([1e-4, 1.0, 1e2])
    with jax.enable_x64(True):
        obj = gn.Objective.from_likelihood(lambda t: jnp.asarray(A) @ (t * scales), A @ np.ones(3), "poisson", 3)
        th = jnp.asarray(1 / scales)
        c = gn.estimate_curvature(obj, th, "fisher")
        mu = A @ np.ones(3)
        np.testing.assert_allclose(np.asarray(c.diag), np.diag(A.T @ (A / mu[:, None])) * scales**2, rtol=1e-12)
        assert c.config["num_floored"] == 0 and c.config["floor"] == 1e-12
        assert gn.estimate_curvature(obj, th, "fisher", floor=1e-6).config["num_floored"] == 1
        assert gn.estimate_curvature(obj, th, "exact").config["floor"] == 1e-6


def test_float32_poisson_loss_differences_survive_bright_pixels():
    """Pixels of ~10⁶ photons: y·log μ and μ are ~10⁷ each, and written directly float32 turns loss
    differences below ~1 into rounding noise (wrong-signed steps near a fit). The loss keeps them: a 10⁻⁴
    relative change of the model matches float64 within 1 %."""
    from gnomon.objective.family import poisson

    fam = poisson()
    rng = np.random.default_rng(0)
    mu = rng.uniform(1e5, 2e6, 4096)
    y = rng.poisson(mu).astype(float)

    def loss_change(dtype, scale):
        p = fam.resolve({}, dtype)
        yy, m = jnp.asarray(y, dtype), jnp.asarray(mu, dtype)
        return float(jnp.sum(fam.log_likelihood(yy, m * scale, p)) - jnp.sum(fam.log_likelihood(yy, m, p)))

    with jax.enable_x64(True):
        exact = loss_change(jnp.float64, 1 + 1e-4)
    assert abs(exact) > 1  # the change is meaningful
    np.testing.assert_allclose(loss_change(jnp.float32, jnp.float32(1 + 1e-4)), exact, rtol=0.01)


def test_poisson_floor_removes_information_from_the_loss_and_the_fisher_alike():
    """Below an explicit floor the mean is clamped: those data have a zero gradient, so their Fisher weight is 0."""
    from gnomon.objective.family import poisson

    fam = poisson(floor=1.0)
    p = fam.resolve({}, jnp.float32)
    mu = jnp.array([0.2, 0.5, 3.0])
    g = jax.grad(lambda m: jnp.sum(fam.log_likelihood(jnp.array([1.0, 0.0, 2.0]), m, p)))(mu)
    np.testing.assert_allclose(g[:2], 0.0)
    np.testing.assert_allclose(fam.fisher_weights(mu, p), [0.0, 0.0, 1 / 3.0], rtol=1e-6)


def test_numpyro_model_with_nan_data_names_the_argument():
    """numpyro's own error ("Cannot find valid initial parameters") is replaced by the datum at fault."""
    import numpyro
    import numpyro.distributions as dist

    def model(x, y=None):
        a = numpyro.sample("a", dist.Normal(0, 1))
        numpyro.sample("y", dist.Normal(a * x, 1.0), obs=y)

    x = np.linspace(0, 1, 20)
    y = x.copy()
    y[7] = np.nan
    with warnings.catch_warnings():  # numpyro warns about the out-of-support value on its way
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"arguments\['args'\]\[1\] has nan at index \(7,\)"):
            gn.Objective.from_numpyro(model, x, y)
