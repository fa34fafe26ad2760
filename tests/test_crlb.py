"""gn.cramer_rao: closed forms (OLS, Poisson rate), the delta method, Monte-Carlo scatter of MLEs, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn

RNG = np.random.default_rng(1)


def test_linear_gaussian_bound_equals_ols_standard_errors():
    X = RNG.normal(size=(30, 3))
    sigma = 0.7
    lay = gn.Layout({"p": (2,), "b": ()}, units={"p": "µas", "b": "nm"}, labels={"p": ["x", "y"]})
    with jax.enable_x64(True):
        th = jnp.array([1.0, 2.0, 3.0])
        y = X @ np.asarray(th) + sigma * RNG.normal(size=30)
        obj = gn.Objective.from_likelihood(lambda t: jnp.asarray(X) @ t, y, gn.family.gaussian(sigma), lay)
        cr = gn.cramer_rao(obj, th)
    XtX = X.T @ X
    np.testing.assert_allclose(cr.marginal, np.sqrt(np.diag(sigma**2 * np.linalg.inv(XtX))), rtol=1e-10)
    np.testing.assert_allclose(cr.conditional, sigma / np.sqrt(np.diag(XtX)), rtol=1e-10)
    np.testing.assert_allclose(cr.covariance, sigma**2 * np.linalg.inv(XtX), rtol=1e-9)
    assert cr.labels == ("p[x]", "p[y]", "b") and cr.units == ("µas", "µas", "nm")
    assert list(cr.to_summary()) == ["crlb.p[x]", "crlb.p[y]", "crlb.b"]
    assert cr.to_summary()["crlb.b"] == pytest.approx(cr["b"])
    assert not cr.bayesian and "likelihood only" in repr(cr) and "p[x]" in cr.table() and "µas" in cr.table()
    np.testing.assert_allclose(np.diag(cr.correlation), 1.0)


def test_an_eigen_space_objective_bounds_the_model_parameters_or_refuses():
    """cramer_rao(zobj, z) used to return the bound on the whitened z (all 1, labelled θ[i]): a number that reads
    like a bound on the parameters. Now z tagged by its trace is decoded and the bound is the OLS one on base θ;
    a plain array is refused (it could be θ or z)."""
    from gnomon.trace.zarray import ZArray

    X = RNG.normal(size=(30, 3))
    sigma = 0.7
    lay = gn.Layout({"p": (2,), "b": ()}, units={"p": "µas", "b": "nm"}, labels={"p": ["x", "y"]})
    with jax.enable_x64(True):
        th = jnp.array([1.0, 2.0, 3.0])
        y = X @ np.asarray(th) + sigma * RNG.normal(size=30)
        obj = gn.Objective.from_likelihood(lambda t: jnp.asarray(X) @ t, y, gn.family.gaussian(sigma), lay)
        F = gn.estimate_curvature(obj, th, "fisher", dense=True).matrix
        emap = gn.EigenMap.from_matrix(F, th + 0.3, whiten=True, layout=lay)
        zobj = obj.reparameterize(emap)
        z = ZArray(np.asarray(emap.to_z(th)), emap)
        cr = gn.cramer_rao(zobj, z)
        with pytest.raises(ValueError, match=r"runs in the coordinates z of .*gn.cramer_rao\(zobj.base, "
                                             r"trace.best_theta\)"):
            gn.cramer_rao(zobj, np.asarray(z))
    np.testing.assert_allclose(cr.marginal, np.sqrt(np.diag(sigma**2 * np.linalg.inv(X.T @ X))), rtol=1e-8)
    np.testing.assert_allclose(cr.value, th, rtol=1e-10)
    assert cr.labels == ("p[x]", "p[y]", "b") and cr.units == ("µas", "µas", "nm")


def test_the_bound_reuses_the_compiled_fisher_of_an_objective_without_prior():
    """estimate_curvature(obj, θ, "fisher") (include_prior=True by default) then cramer_rao(obj, θ) (which asks
    include_prior=False): without a prior the two are the same program, and the second traced the dLux model
    again (2.7 s of compilation per first bound)."""
    traces = []
    X = RNG.normal(size=(20, 2))

    def predict(t):
        traces.append(1)
        return jnp.exp(jnp.asarray(X) @ t)

    with jax.enable_x64(True):
        th = jnp.array([0.3, -0.2])
        obj = gn.Objective.from_likelihood(predict, np.ones(20), "poisson", 2)
        F = gn.estimate_curvature(obj, th, "fisher", dense=True)
        n = len(traces)
        cr = gn.cramer_rao(obj, th + 0.01)
    assert len(traces) == n
    assert F.config["prior_included"] is False
    mu = np.exp(X @ (np.array([0.3, -0.2]) + 0.01))
    np.testing.assert_allclose(cr.marginal, np.sqrt(np.diag(np.linalg.inv(X.T @ (mu[:, None] * X)))), rtol=1e-8)


def test_the_table_prints_the_digits_the_bound_resolves():
    """9.5″ in µas with a 149 µas bound: six significant figures (9.50004e+06) dropped the µas the fit is about."""
    lay = gn.Layout({"sep": (), "pa": ()}, units={"sep": "µas", "pa": "deg"})
    cr = gn.cramer_rao(np.diag([1 / 148.6**2, 1 / 0.022**2]), np.array([9500039.8, 59.99197]), lay)
    rows = {line.split()[0]: line.split()[1] for line in cr.table().splitlines()[2:]}
    assert rows == {"sep": "9500040", "pa": "59.9920"}


def test_poisson_rate_through_a_positive_transform():
    """n counts of rate λ: CRLB(λ) = sqrt(λ/n) in the user's units although θ = log λ (delta method)."""
    n, lam = 50, 7.5
    lay = gn.Layout({"rate": ()}, transforms={"rate": "positive"}, units={"rate": "ph"})
    with jax.enable_x64(True):
        obj = gn.Objective.from_likelihood(lambda t: jnp.full(n, lay.unpack(t)["rate"]), np.full(n, 7.0), "poisson",
                                           lay)
        cr = gn.cramer_rao(obj, lay.pack({"rate": lam}))
    assert cr.marginal[0] == pytest.approx(np.sqrt(lam / n), rel=1e-10)
    assert cr.conditional[0] == pytest.approx(np.sqrt(lam / n), rel=1e-10)
    assert cr.value[0] == pytest.approx(lam)


def test_derived_quantities_by_the_delta_method():
    """Two positions measured directly with noise σ: separation bound σ√2, midpoint bound σ/√2 per axis."""
    sigma = 0.3
    lay = gn.Layout({"a": (2,), "b": (2,)}, units={"a": "arcsec", "b": "arcsec"})
    with jax.enable_x64(True):
        th = jnp.array([0.0, 0.0, 3.0, 4.0])
        obj = gn.Objective.from_likelihood(lambda t: t, np.asarray(th), gn.family.gaussian(sigma), lay)
        cr = gn.cramer_rao(obj, th, derived={
            "separation": (lambda p: jnp.linalg.norm(p["a"] - p["b"]), "arcsec"),
            "midpoint": lambda p: 0.5 * (p["a"] + p["b"]),
        })
    assert cr.labels[4:] == ("separation", "midpoint[0]", "midpoint[1]")
    assert cr.units[4:] == ("arcsec", "", "")
    assert cr["separation"] == pytest.approx(sigma * np.sqrt(2), rel=1e-10)
    assert cr.value[4] == pytest.approx(5.0)
    np.testing.assert_allclose(cr.marginal[5:], sigma / np.sqrt(2), rtol=1e-10)
    assert np.all(np.isnan(cr.conditional[4:]))  # depends on several θ entries


def test_save_run_writes_the_derived_bounds_and_refuses_unknown_mapping_keys(tmp_path):
    import json

    lay = gn.Layout({"a": (2,)}, units={"a": "arcsec"})
    with jax.enable_x64(True):
        th = jnp.array([3.0, 4.0])
        obj = gn.Objective.from_likelihood(lambda t: t, np.asarray(th), gn.family.gaussian(0.5), lay)
        cr = gn.cramer_rao(obj, th, derived={"r": (lambda p: jnp.linalg.norm(p["a"]), "arcsec")})
        fit = gn.optimize(obj, th + 0.1, "lbfgs", num_steps=20)
    gn.save_run(tmp_path / "run", fit, lay, crlb=cr, truth={"a": [3.0, 4.0]})
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["crlb.r"] == pytest.approx(0.5)  # |∇r| = 1: the bound is σ
    a_hat = np.asarray(fit.best_theta)
    assert summary["estimate.r"] == pytest.approx(float(np.hypot(*a_hat)), rel=1e-9)  # a derived quantity is a
    assert summary["truth.r"] == pytest.approx(5.0)  # parameter in the outputs (issue 21, item 6)
    assert summary["crlb.a[0]"] == pytest.approx(0.5) and summary["z.a[0]"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['r'\]"):  # a mapping: likely a typo
        gn.save_run(tmp_path / "run2", fit, lay, crlb={"r": 0.5})


def test_bound_matches_the_monte_carlo_scatter_of_mles():
    """A nonlinear Poisson model: the scatter of 400 maximum-likelihood fits equals the marginal CRLB."""
    x = np.linspace(-2, 2, 30)

    def predict(t):
        return 40.0 * jnp.exp(-0.5 * ((x - t[0]) / t[1]) ** 2) + t[2]

    with jax.enable_x64(True):
        th = jnp.array([0.2, 0.7, 3.0])
        mu = predict(th)
        obj = gn.Objective.from_likelihood(predict, np.asarray(mu), "poisson", 3)
        cr = gn.cramer_rao(obj, th)
        Y = jax.random.poisson(jax.random.key(2), mu, (400, 30)).astype(jnp.float64)

        def mle(y):  # Newton's method on the exact Hessian (independent of gnomon's optimizers)
            def step(t, _):
                g = jax.grad(obj.loss)(t, y)
                return t - jnp.linalg.solve(jax.hessian(obj.loss)(t, y), g), None
            return jax.lax.scan(step, th, None, length=12)[0]

        fits = np.asarray(jax.vmap(mle)(Y))
    ratio = fits.std(0) / cr.marginal
    assert np.all((ratio > 0.85) & (ratio < 1.15)), ratio


def test_wildly_different_units_do_not_matter():
    """Model scales 1e-9 … 1e6: F spans 30 decades; the scaled inversion still gives the exact bound."""
    X = RNG.normal(size=(20, 3))
    scales = np.array([1e-9, 1.0, 1e6])
    with jax.enable_x64(True):
        th = jnp.array([1e9, 1.0, 1e-6])
        obj = gn.Objective.from_likelihood(lambda t: jnp.asarray(X) @ (t * scales), X @ np.ones(3),
                                           gn.family.gaussian(1.0), 3)
        cr = gn.cramer_rao(obj, th)
    np.testing.assert_allclose(cr.marginal, np.sqrt(np.diag(np.linalg.inv(X.T @ X))) / scales, rtol=1e-8)


def test_prior_makes_it_bayesian_and_bad_fishers_are_refused():
    lay = gn.Layout({"a": (), "b": ()})
    with jax.enable_x64(True):
        # b does not enter the model: singular without a prior
        obj = gn.Objective.from_likelihood(lambda t: jnp.full(5, t[0]) + 0.0 * t[1], np.ones(5),
                                           gn.family.gaussian(1.0), lay, prior=lambda p: -0.5 * p["b"] ** 2 / 4.0)
        th = jnp.array([1.0, 0.0])
        with pytest.raises(ValueError, match=r"no information about \['b'\]"):
            gn.cramer_rao(obj, th)
        F = gn.estimate_curvature(obj, th, "fisher", dense=True)  # prior included: b has sd 2
        cr = gn.cramer_rao(F, th, lay)
        assert cr.bayesian and "Bayesian" in repr(cr)
        np.testing.assert_allclose(cr.marginal, [1 / np.sqrt(5), 2.0], rtol=1e-10)
        # a degenerate direction (a and b enter only as a + b)
        deg = gn.Objective.from_likelihood(lambda t: jnp.full(5, t[0] + t[1]), np.ones(5), gn.family.gaussian(1.0),
                                           lay)
        with pytest.raises(ValueError, match=r"singular to working precision.*(\['a', 'b'\]|\['b', 'a'\])"):
            gn.cramer_rao(deg, th)
        with pytest.raises(ValueError, match="needs the dense Fisher"):
            gn.cramer_rao(gn.estimate_curvature(obj, th, "fisher"), th, lay)
        with pytest.raises(ValueError, match=r"θ has shape \(3,\)"):
            gn.cramer_rao(F, jnp.zeros(3))
    # matrices that are no Fisher are named for what they are, not called singular or uninformative
    with pytest.raises(ValueError, match=r"not positive semi-definite: negative diagonal"):
        gn.cramer_rao(-jnp.eye(2), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"not positive semi-definite \(normalised eigenvalue -1"):
        gn.cramer_rao(jnp.array([[1.0, 2.0], [2.0, 1.0]]), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"not symmetric: F\[0,1\] = 0.5 but F\[1,0\] = 0"):
        gn.cramer_rao(jnp.array([[1.0, 0.5], [0.0, 1.0]]), jnp.zeros(2))


def test_a_near_degenerate_pair_is_named_warned_and_recorded(tmp_path):
    """Two columns that differ by 1 % of noise: their marginal bounds are ~100× the conditional ones
    (1/sqrt(1 − R²)); cramer_rao warns naming the partner of each, the third parameter is not named, and the
    findings reach CramerRao.degenerate, summary.json and meta.json (issue 18, item 8)."""
    import json
    import warnings

    rng = np.random.default_rng(3)
    x1 = rng.normal(size=200)
    X = np.stack([x1, x1 + 0.01 * rng.normal(size=200), rng.normal(size=200)], axis=1)
    lay = gn.Layout({"pos": (), "tilt": (), "flux": ()}, units={"pos": "µas", "tilt": "µas"})
    with jax.enable_x64(True):
        th = jnp.array([1.0, 2.0, 3.0])
        obj = gn.Objective.from_likelihood(lambda t: jnp.asarray(X) @ t, X @ np.asarray(th), gn.family.gaussian(1.0),
                                           lay)
        with pytest.warns(gn.curvature.crlb.DegeneracyWarning) as rec:
            cr = gn.cramer_rao(obj, th)
    F = X.T @ X
    ratio = np.sqrt(np.diag(np.linalg.inv(F)) * np.diag(F))  # closed form of marginal / conditional
    assert ratio[0] > 50 and ratio[1] > 50 and ratio[2] < 1.1
    msg = str(rec[0].message)
    assert "2 parameter(s) nearly degenerate" in msg and "'flux':" not in msg
    assert "'pos': marginal" in msg and "most correlated with 'tilt' (ρ = -1.000)" in msg and "µas" in msg
    assert [d["label"] for d in cr.degenerate] == sorted(["pos", "tilt"], key=lambda lab: -ratio[lay.names.index(lab)])
    for d in cr.degenerate:
        i = lay.names.index(d["label"])
        assert d["ratio"] == pytest.approx(ratio[i], rel=1e-8)
        assert [p["label"] for p in d["partners"]] == [{"pos": "tilt", "tilt": "pos"}[d["label"]]]
        rho = np.linalg.inv(F)[0, 1] / np.sqrt(np.linalg.inv(F)[0, 0] * np.linalg.inv(F)[1, 1])
        assert d["partners"][0]["correlation"] == pytest.approx(rho, rel=1e-8)
    fit = gn.Trace(kind="optimization", theta=np.asarray(th)[None], loss=np.zeros(1), status="converged",
                   layout=lay)
    gn.save_run(tmp_path / "r", fit, crlb=cr)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["crlb_max_ratio"] == pytest.approx(ratio.max(), rel=1e-8)
    assert set(summary["crlb_degenerate"].split("; ")) == {"pos~tilt", "tilt~pos"}
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert meta["crlb"]["degeneracy_ratio"] == 10.0 and len(meta["crlb"]["degenerate"]) == 2
    # a well-conditioned problem: no warning, nothing recorded, the max ratio still written
    with jax.enable_x64(True), warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = gn.cramer_rao(obj, th, degeneracy_ratio=1e3)
    assert ok.degenerate == () and "crlb_degenerate" not in ok.summary_scalars()
    with pytest.raises(ValueError, match="degeneracy_ratio must be a number > 1"):
        gn.cramer_rao(obj, th, degeneracy_ratio=0.5)
