"""numpyro models as first-class citizens: the bridge refuses what it cannot do right (discrete latents,
mis-shaped observations) and names a forgotten observation; data per call compiles nothing new; the ArviZ
export has deterministic sites, a log_likelihood group (az.loo runs), plate dims, observed and constant data —
in posterior.nc too."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

import gnomon as gn
from gnomon.io.netcdf import read_netcdf, write_netcdf

RNG = np.random.default_rng(5)
N = 25
X = jnp.asarray(RNG.uniform(-1, 1, N), jnp.float32)
Y = jnp.asarray(0.5 + 2.0 * np.asarray(X) + 0.3 * RNG.normal(size=N), jnp.float32)
TRACED = []  # the model's runs under JAX tracing (each compilation traces it)


def regression(x, y=None):
    a = numpyro.sample("a", dist.Normal(0.0, 10.0))
    b = numpyro.sample("b", dist.Normal(0.0, 10.0))
    s = numpyro.sample("s", dist.HalfNormal(5.0))
    mu = numpyro.deterministic("mu", a + b * x)
    if isinstance(y, jax.core.Tracer):
        TRACED.append(1)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(mu, s), obs=y)


# ------------------------------------------------------------------------------------------------ the checks
def test_discrete_latent_sites_are_refused_by_name():
    def poisson():
        n = numpyro.sample("n", dist.Poisson(3.0))
        numpyro.sample("y", dist.Normal(n, 1.0), obs=2.0)

    def indicators(y):
        p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        with numpyro.plate("data", y.shape[0]):
            z = numpyro.sample("z", dist.Bernoulli(p), infer={"enumerate": "parallel"})
            numpyro.sample("y", dist.Normal(2.0 * z, 1.0), obs=y)

    with pytest.raises(ValueError, match=r"latent site 'n' is discrete \(Poisson\).*Marginalise.*enumeration"):
        gn.Objective.from_numpyro(poisson)
    with pytest.raises(ValueError, match=r"latent site 'z' is discrete \(Bernoulli.*outside gnomon"):
        gn.Objective.from_numpyro(indicators, Y)


def test_observations_of_the_wrong_shape_are_refused_naming_the_site_and_both_shapes():
    with pytest.raises(ValueError, match=r"site 'y' have shape \(25, 1\).*has shape \(25,\).*\(25, 25\) terms"):
        gn.Objective.from_numpyro(regression, X, Y[:, None])
    with pytest.raises(ValueError, match=r"site 'y' have shape \(5,\).*has shape \(25,\).*do not broadcast"):
        gn.Objective.from_numpyro(regression, X, Y[:5])

    def iid(y):  # n observations of one scalar distribution, no plate: still one term per observation
        m = numpyro.sample("m", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(m, 1.0), obs=y)

    obj = gn.Objective.from_numpyro(iid, Y)
    ref = stats.norm.logpdf(0.3, 0, 10) + stats.norm.logpdf(np.asarray(Y), 0.3, 1).sum()
    assert float(obj.log_prob(jnp.array([0.3]))) == pytest.approx(ref, rel=1e-5)
    # per-call data of the wrong shape is refused the same way, before anything runs
    obj = gn.Objective.from_numpyro(regression, X, Y, data_argnames="y")
    with pytest.raises(ValueError, match=r"site 'y' have shape \(24,\)"):
        gn.optimize(obj, jnp.zeros(3), "lbfgs", num_steps=5, data={"y": Y[:24]})
    with pytest.raises(ValueError, match=r"site 'y' have shape \(24,\)"):
        obj.with_data({"y": Y[:24]})
    with pytest.raises(ValueError, match=r"keys \['y'\]"):
        obj.with_data({"obs": Y})
    # a bare array (a new user's first try) is named as such, with the mapping to pass — not a tracer's type
    with pytest.raises(ValueError, match=r"e\.g\. data=\{'y': <y>\}; got an array of shape \(25,\)"):
        gn.optimize(obj, jnp.zeros(3), "lbfgs", num_steps=5, data=Y)


def test_a_forgotten_observation_is_warned_by_name():
    with pytest.warns(UserWarning, match=r"site 'y' is latent .*shape \(25,\).* argument 'y' is None — pass y="):
        obj = gn.Objective.from_numpyro(regression, X)
    assert obj.dim == 3 + N

    def renamed(x, obs=None):  # the argument and the site differ in name: found by running the model again
        m = numpyro.sample("m", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Normal(m, 1.0), obs=obs)

    with pytest.warns(UserWarning, match=r"site 'y' is latent .* argument 'obs' is None"):
        gn.Objective.from_numpyro(renamed, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuinely latent site with no None argument: not a word
        gn.Objective.from_numpyro(regression, X, Y)


def test_a_forgotten_discrete_observation_and_data_outside_the_support_are_named():
    """Found by a new user: a logistic regression called without y was refused as 'a discrete latent site'
    (advice to marginalise it) instead of naming the forgotten y; a label 2 in Bernoulli data gave numpyro's
    'Cannot find valid initial parameters' without naming the site."""

    def logit(x, y=None):
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=b * x), obs=y)

    with pytest.raises(ValueError, match=r"site 'y' \(BernoulliLogits\) is latent because the model's argument 'y' "
                                         r"is None — pass y=<observations>"):
        gn.Objective.from_numpyro(logit, X)
    labels = (np.asarray(Y) > 1.0).astype(np.float32)
    bad = labels.copy()
    bad[4] = 2.0
    with pytest.raises(ValueError, match=r"observed site 'y' has 1 value\(s\) outside the support .* 2\.0 at index "
                                         r"\(4,\)"):
        gn.Objective.from_numpyro(logit, X, bad)
    assert gn.Objective.from_numpyro(logit, X, labels).dim == 1


# ------------------------------------------------------------------------------------------------ data per call
def _map(y):
    """The closed-form MAP (a, b) of the regression for fixed s is the least-squares fit: check the fit used y."""
    a_, b_ = np.polyfit(np.asarray(X), np.asarray(y), 1)[::-1]
    return np.array([a_, b_])


def test_a_second_dataset_compiles_nothing():
    """obj.with_data, optimize(data=), a new objective of the same model and arguments, optimize_batch and
    sample(data=) take new observations without tracing the model again — and use them."""
    obj = gn.Objective.from_numpyro(regression, X, Y, data_argnames=("y",))
    assert obj.takes_data and set(obj.data) == {"y"} and obj.info["data_argnames"] == ["y"]
    th0 = jnp.zeros(3)
    y2 = Y + 1.0
    fit = gn.optimize(obj, th0, "lbfgs", num_steps=100, tol=1e-6)
    post = gn.sample(obj, fit, jax.random.key(0), num_samples=100, num_warmup=100)
    batch = gn.optimize_batch(obj, jnp.zeros((2, 3)), "lbfgs", num_steps=100, data={"y": jnp.stack([Y, y2])})
    first = len(TRACED)
    assert first > 0
    again = gn.Objective.from_numpyro(regression, X, y2, data_argnames="y")
    assert again.compile_key == obj.compile_key == obj.with_data({"y": y2}).compile_key
    fit2 = gn.optimize(obj, th0, "lbfgs", num_steps=100, tol=1e-6, data={"y": y2})
    fit3 = gn.optimize(again, th0, "lbfgs", num_steps=100, tol=1e-6)
    post2 = gn.sample(obj.with_data({"y": y2}), fit2, jax.random.key(1), num_samples=100, num_warmup=100)
    post3 = gn.sample(obj, fit2, jax.random.key(1), num_samples=100, num_warmup=100, data={"y": y2})
    gn.optimize_batch(obj, jnp.zeros((2, 3)), "lbfgs", num_steps=100, data={"y": jnp.stack([y2, Y])})
    assert len(TRACED) == first, "a second dataset traced the model again"
    assert fit2.info["compile_s"] == fit3.info["compile_s"] == 0.0 and post2.info["compile_s"] == 0.0
    for f, y in ((fit, Y), (fit2, y2), (fit3, y2)):
        np.testing.assert_allclose(np.asarray(f.best_theta)[:2], _map(y), atol=2e-3)
    np.testing.assert_allclose(np.asarray(batch.best_theta)[1, :2], _map(y2), atol=2e-3)
    np.testing.assert_allclose(np.asarray(post2.theta).mean((0, 1))[0] - np.asarray(post.theta).mean((0, 1))[0],
                               1.0, atol=0.1)
    np.testing.assert_allclose(np.asarray(post3.theta), np.asarray(post2.theta), rtol=1e-5, atol=1e-6)
    # the other arguments are part of the key by value: another x is another program
    assert gn.Objective.from_numpyro(regression, X * 2, Y, data_argnames="y").compile_key != obj.compile_key
    with pytest.raises(ValueError, match="data_argnames=\\('y',\\)"):
        gn.Objective.from_numpyro(regression, X, Y).with_data({"y": y2})
    with pytest.raises(ValueError, match=r"data_argnames \['z'\] are not arguments"):
        gn.Objective.from_numpyro(regression, X, Y, data_argnames="z")


# ------------------------------------------------------------------------------------------------ ArviZ
@pytest.fixture(scope="module")
def sampled():
    obj = gn.Objective.from_numpyro(regression, X, Y, data_argnames="y")
    fit = gn.optimize(obj, jnp.zeros(3), "lbfgs", num_steps=100, tol=1e-6)
    post = gn.sample(obj, fit, jax.random.key(2), num_samples=300)
    return obj, post


def test_the_export_has_deterministics_log_likelihood_plates_and_data(sampled):
    obj, post = sampled
    dt = post.to_arviz(objective=obj)
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data", "constant_data"} <= set(dt.children)
    p = dt.posterior
    a, b, s = (np.asarray(p[k]) for k in ("a", "b", "s"))
    # the deterministic site, recomputed per draw
    assert p["mu"].dims == ("chain", "draw", "mu_dim_0")
    np.testing.assert_allclose(np.asarray(p["mu"]), a[..., None] + b[..., None] * np.asarray(X), rtol=1e-5,
                               atol=1e-5)
    # the pointwise log likelihood against scipy, with the plate's name as its dim
    ll = dt.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "data") and ll.shape == (4, 300, N)
    ref = stats.norm.logpdf(np.asarray(Y), np.asarray(p["mu"]), s[..., None])
    np.testing.assert_allclose(np.asarray(ll), ref, rtol=1e-4, atol=1e-4)
    assert dt.observed_data["y"].dims == ("data",)
    np.testing.assert_array_equal(np.asarray(dt.observed_data["y"]), np.asarray(Y))
    np.testing.assert_array_equal(np.asarray(dt.constant_data["x"]), np.asarray(X))
    import arviz as az

    loo = az.loo(dt)
    assert np.isfinite(loo.elpd) and 1.0 < loo.p < 6.0  # about the 3 parameters


def test_plate_dims_name_latent_sites_and_posterior_nc_has_every_group(sampled, tmp_path):
    def schools(sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfNormal(5.0))
        with numpyro.plate("school", 4):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            numpyro.deterministic("theta", mu + tau * z)
            numpyro.sample("y", dist.Normal(mu + tau * z, sigma), obs=y)

    sigma, y = jnp.array([10.0, 12.0, 9.0, 15.0]), jnp.array([8.0, -2.0, 5.0, 11.0])
    obj = gn.Objective.from_numpyro(schools, sigma, y)
    post = gn.sample(obj, jnp.zeros(obj.dim), jax.random.key(0), num_samples=200)
    dt = post.to_arviz(objective=obj)
    assert dt.posterior["z"].dims == ("chain", "draw", "school") and "theta_dim_0" not in dt.posterior.dims
    assert dt.posterior["theta"].dims == ("chain", "draw", "school")
    assert dt.log_likelihood["y"].dims == ("chain", "draw", "school")
    np.testing.assert_array_equal(np.asarray(dt.constant_data["sigma"]), np.asarray(sigma))
    back = read_netcdf(write_netcdf(tmp_path / "posterior.nc", post, objective=obj))
    assert {"log_likelihood", "observed_data", "constant_data"} <= set(back.children)
    np.testing.assert_allclose(np.asarray(back.log_likelihood["y"]), np.asarray(dt.log_likelihood["y"]))
    assert back.log_likelihood["y"].attrs["long_name"] == "pointwise log likelihood of y"
    # save_run(arviz=obj): the run's posterior.nc has the groups too
    obj2, post2 = sampled
    run = gn.save_run(tmp_path / "run", post2, arviz=obj2)
    nc = read_netcdf(run / "posterior.nc")
    assert {"log_likelihood", "observed_data", "constant_data"} <= set(nc.children) and "mu" in nc.posterior


def test_an_export_with_other_data_is_refused(sampled):
    obj, post = sampled
    with pytest.raises(ValueError, match="sampled with other data"):
        post.to_arviz(objective=obj.with_data({"y": Y + 1.0}))
    post2 = gn.sample(obj, post, jax.random.key(3), num_samples=50, num_warmup=50, data={"y": Y + 1.0})
    dt = post2.to_arviz(objective=obj.with_data({"y": Y + 1.0}))
    np.testing.assert_allclose(np.asarray(dt.observed_data["y"]), np.asarray(Y + 1.0))
