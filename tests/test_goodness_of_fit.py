"""Goodness of fit (issue 18, item 4) and honest batches (item 7): deviance and Pearson χ² against closed forms,
≈ 1 on right data, ≥ 2 and a warning on wrong data (a transposed image, σ in the wrong units), in info, in
summary.json, in ``gnomon show`` and in the aggregated table; a batch's per-member cost shares and per-member
data checks."""

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma, xlogy

import gnomon as gn
from gnomon.interface.cli import main
from gnomon.objective.goodness import MisfitWarning, threshold

N = 16
YY, XX = np.mgrid[0:N, 0:N].astype(float)


def blob(t):
    """An elliptical Gaussian spot (σx = 1.3 px, σy = 3 px, fixed orientation) on a background: θ = (log flux,
    x0, y0, background). Its transposed image is elongated along the other axis, which no θ reproduces."""
    img = jnp.exp(-0.5 * (((XX - t[1]) / 1.3) ** 2 + ((YY - t[2]) / 3.0) ** 2))
    return 10.0 ** t[0] * img / (2 * np.pi * 1.3 * 3.0) + t[3]


TRUTH = np.array([4.0, 7.3, 8.6, 20.0])


def poisson_data(key):
    return np.asarray(jax.random.poisson(jax.random.key(key), blob(jnp.asarray(TRUTH)), (N, N)), float)


def fit(obj, data=None):
    kw = {} if data is None else {"data": data}
    return gn.optimize(obj, TRUTH + np.array([0.05, 0.4, -0.4, 1.0]), "lbfgs", num_steps=300, tol=1e-3, **kw)


def test_poisson_statistics_equal_their_closed_forms():
    y = poisson_data(0)
    obj = gn.Objective.from_likelihood(blob, y, "poisson", 4)
    th = TRUTH + 0.01
    g = obj.goodness_of_fit(th)
    mu = np.asarray(blob(jnp.asarray(th)), np.float64)
    dev = 2 * np.sum(xlogy(y, y / mu) - (y - mu))
    assert g["deviance"] == pytest.approx(dev, rel=1e-5)
    assert g["pearson_chi2"] == pytest.approx(np.sum((y - mu) ** 2 / mu), rel=1e-5)
    assert g["dof"] == N * N - 4 and g["num_data"] == N * N and g["num_params"] == 4 and g["family"] == "poisson"
    assert g["reduced_deviance"] == pytest.approx(dev / (N * N - 4), rel=1e-5)


def test_right_data_reduces_to_one_and_the_transposed_image_is_flagged(tmp_path, capsys):
    """Pooled over six simulated images the reduced deviance and Pearson χ² are ≈ 1 (no warning); each fit to
    the transposed image ends with both ≥ 2 and a MisfitWarning — while the optimizer reports its usual status."""
    exp = gn.Experiment(tmp_path / "e")
    right, wrong = [], []
    for key in range(6):
        y = poisson_data(key)
        obj = gn.Objective.from_likelihood(blob, y, "poisson", 4)
        with warnings.catch_warnings():
            warnings.simplefilter("error", MisfitWarning)
            tr = fit(obj)
        right.append(tr.info["goodness_of_fit"])
        with pytest.warns(MisfitWarning, match=r"reduced deviance .* far above what the poisson noise allows"):
            bad = fit(obj, data=y.T.copy())
        wrong.append(bad.info["goodness_of_fit"])
        if key == 0:
            exp.save("right", tr, summary={"note": 1})
            exp.save("transposed", bad)
    for stat in ("reduced_deviance", "reduced_pearson_chi2"):
        pooled = np.mean([g[stat] for g in right])  # sd of one ≈ sqrt(2/252) = 0.09; of the mean 0.04
        assert 0.85 < pooled < 1.15, (stat, pooled)
        assert all(g[stat] >= 2.0 for g in wrong), [g[stat] for g in wrong]
    assert not any(g["misfit"] for g in right) and all(g["misfit"] for g in wrong)
    assert all(g["p_value"] < 1e-6 for g in wrong)
    # summary.json, show and the table
    s = json.loads((exp.run_dir("transposed") / "summary.json").read_text())
    g = wrong[0]
    for k in ("deviance", "reduced_deviance", "pearson_chi2", "reduced_pearson_chi2", "dof", "misfit"):
        assert s[k] == g[k]
    assert main(["show", str(exp.run_dir("transposed"))]) == 0
    out = capsys.readouterr().out
    assert "reduced_deviance" in out and "misfit" in out and "pearson_chi2" in out
    df = exp.aggregate()
    assert df.set_index("run_id").loc["transposed", "misfit"] == True  # noqa: E712 (pandas boolean)
    assert str(df["dof"].dtype) == "Int64" and str(df["misfit"].dtype) == "boolean"
    assert main(["show", str(exp.path)]) == 0
    assert "reduced_deviance" in capsys.readouterr().out


def test_gaussian_linear_model_closed_form_and_sigma_in_the_wrong_units():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(500, 3))
    sigma = 0.2
    y = X @ np.array([1.0, -2.0, 0.5]) + sigma * rng.normal(size=500)
    with jax.enable_x64(True):
        obj = gn.Objective.from_likelihood(lambda t: jnp.asarray(X) @ t, y, gn.family.gaussian(sigma), 3)
        ols = np.linalg.lstsq(X, y, rcond=None)[0]
        g = obj.goodness_of_fit(ols)
    rss = np.sum((y - X @ ols) ** 2) / sigma**2
    assert g["deviance"] == pytest.approx(rss, rel=1e-10) and g["pearson_chi2"] == pytest.approx(rss, rel=1e-10)
    assert 0.8 < g["reduced_deviance"] < 1.2 and not g["misfit"]  # χ²_497 / 497: sd 0.063
    # σ given in the wrong units (mas for arcsec: 1000× too small... here 10×): flagged, warned
    with jax.enable_x64(True):
        wrong = gn.Objective.from_likelihood(lambda t: jnp.asarray(X) @ t, y, gn.family.gaussian(sigma / 10), 3)
        with pytest.warns(MisfitWarning, match="wrong units"):
            g2 = wrong.goodness_of_fit(ols)
    assert g2["reduced_deviance"] == pytest.approx(100 * g["reduced_deviance"], rel=1e-10) and g2["misfit"]


def test_student_t_deviance_has_its_documented_expectation():
    nu, sigma, n = 3.0, 0.5, 40000
    mu = np.linspace(-1, 1, n)
    y = mu + sigma * np.asarray(jax.random.t(jax.random.key(1), nu, (n,)))
    obj = gn.Objective.from_likelihood(lambda t: jnp.asarray(mu) + t[0], y, gn.family.student_t(nu, sigma), 1)
    g = obj.goodness_of_fit(np.zeros(1))
    c_nu = (nu + 1) * (digamma((nu + 1) / 2) - digamma(nu / 2))
    assert g["expected_reduced_deviance"] == pytest.approx(c_nu) and c_nu == pytest.approx(1.545, abs=1e-3)
    r2 = ((y - mu) / sigma) ** 2
    assert g["deviance"] == pytest.approx(np.sum((nu + 1) * np.log1p(r2 / nu)), rel=1e-5)
    assert g["reduced_deviance"] / c_nu == pytest.approx(1.0, abs=0.05) and not g["misfit"]


def test_residual_objective_counts_weighted_data_only():
    rng = np.random.default_rng(2)
    x = np.linspace(0, 1, 200)
    y = 3 * x + 0.1 * rng.normal(size=200)
    w = np.full(200, 100.0)
    w[:50] = 0.0  # masked out
    obj = gn.Objective.from_residuals(lambda t: y - t[0] * x, 1, weights=w)
    g = obj.goodness_of_fit(np.array([3.0]))
    assert g["family"] == "residuals" and g["num_data"] == 150 and g["dof"] == 149
    assert g["deviance"] == pytest.approx(np.sum(w * (y - 3 * x) ** 2), rel=1e-5)
    assert 0.7 < g["reduced_deviance"] < 1.3
    assert gn.Objective.from_loss(lambda t: jnp.sum(t**2), 2).goodness_of_fit(np.zeros(2)) is None
    assert threshold(10) == pytest.approx(4.686, abs=1e-3) and threshold(10_000) == 2.0


def test_batch_members_get_their_own_statistics_cost_share_and_data_checks(tmp_path):
    ys = np.stack([poisson_data(k) for k in range(3)])
    ys[1] = ys[1].T  # member 1 fits the transposed image
    obj = gn.Objective.from_likelihood(blob, ys[0], "poisson", 4)
    starts = np.tile(TRUTH + np.array([0.05, 0.4, -0.4, 1.0]), (3, 1))
    with pytest.warns(MisfitWarning, match=r"1 of 3 batch members \(\[1\]\)"):
        batch = gn.optimize_batch(obj, starts, "lbfgs", num_steps=300, tol=1e-3, data=ys)
    gofs = batch.info["goodness_of_fit"]
    assert [g["misfit"] for g in gofs] == [False, True, False]
    single = obj.goodness_of_fit(batch.best_theta[2], ys[2], warn=False)
    assert gofs[2]["deviance"] == pytest.approx(single["deviance"], rel=1e-9)
    # honest cost: each member's runtime/compile/run is its share; the totals are recorded as such
    info = batch.info
    assert info["batch_size"] == 3 and batch.runtime_s == pytest.approx(info["batch_runtime_s"] / 3)
    assert info["compile_s"] == pytest.approx(info["batch_compile_s"] / 3)
    assert info["run_s"] == pytest.approx(info["batch_run_s"] / 3)
    exp = gn.Experiment(tmp_path / "e")
    exp.save_batch(batch, prefix="b")
    rows = exp.aggregate().set_index("run_id")
    assert rows["runtime_s"].sum() == pytest.approx(info["batch_runtime_s"])  # summed: the batch, not 3×
    assert list(rows["misfit"]) == [False, True, False] and (rows["batch_size"] == 3).all()
    meta = json.loads((exp.run_dir("b-001") / "meta.json").read_text())
    assert meta["engine"]["goodness_of_fit"]["misfit"] is True  # the member's own record, not the list
    # member data checked as gn.optimize checks it, naming the member
    bad = ys.copy()
    bad[2, 3, 4] = -1.0
    with pytest.raises(ValueError, match=r"data of batch member 2: the poisson family needs y non-negative counts; "
                                         r"got -1\.0 at index \(3, 4\)"):
        gn.optimize_batch(obj, starts, "lbfgs", num_steps=5, data=bad)
    bad = ys.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"data of batch member 1 has nan at index \(0, 0\)"):
        gn.optimize_batch(obj, starts, "lbfgs", num_steps=5, data=bad)
    with pytest.raises(ValueError, match=r"data of batch member 0: the observations have shape \(16, 15\)"):
        gn.optimize_batch(obj, starts, "lbfgs", num_steps=5, data=ys[:, :, :15])
    with pytest.raises(ValueError, match=r"leading axis B=3"):
        gn.optimize_batch(obj, starts, "lbfgs", num_steps=5, data=ys[:2])


def test_the_fit_takes_the_model_output_from_its_own_evaluations():
    """gn.optimize computes the statistics from the mean (or residuals) its loop kept at the best point — from the
    evaluation it made there, so the first call compiles no program of the model for the goodness of fit: the model
    is traced once by the loop (gd with a learning rate: nothing else evaluates it) — and the numbers are those of
    a separate evaluation. The loss evaluated with the output is the objective's own, for every kind of objective."""
    from gnomon.objective.goodness import loss_and_output

    traced = [0]

    def counted(t):
        traced[0] += 1
        return blob(t)

    y = poisson_data(0)
    obj = gn.Objective.from_likelihood(counted, y, "poisson", 4)
    before = traced[0]
    tr = gn.optimize(obj, TRUTH + 0.05, "gd", learning_rate=1e-6, num_steps=20)
    assert traced[0] - before == 1, traced[0] - before
    direct = obj.goodness_of_fit(tr.best_theta, warn=False)
    for k in ("deviance", "pearson_chi2", "reduced_deviance", "dof", "p_value"):
        assert tr.info["goodness_of_fit"][k] == pytest.approx(direct[k], rel=1e-12, nan_ok=True), k
    # loss_and_output's loss is obj.loss (value and gradient) for each family, a prior, a layout with a Jacobian in the
    # loss, a reparameterisation and a weighted residual objective (float32)
    lay = gn.Layout({"flux": (), "pos": (3,)}, transforms={"flux": "positive"})
    rng = np.random.default_rng(0)
    g = rng.normal(blob(jnp.asarray(TRUTH)), 2.0)
    objectives = [
        gn.Objective.from_likelihood(blob, y, "poisson", 4),
        gn.Objective.from_likelihood(blob, g, gn.family.gaussian(2.0), 4, prior=lambda t: -0.5 * jnp.sum(t**2)),
        gn.Objective.from_likelihood(blob, {"y": g, "sigma": np.full((N, N), 2.0)}, gn.family.student_t(4.0), 4),
        gn.Objective.from_likelihood(lambda t: blob(jnp.concatenate([t[:1] / jnp.log(10.0), t[1:]])), y, "poisson",
                                     lay, loss_includes_jacobian=True),
        gn.Objective.from_likelihood(blob, y, "poisson", 4).reparameterize(
            gn.EigenMap.from_matrix(np.diag([1.0, 4.0, 4.0, 0.5]), TRUTH)),
        gn.Objective.from_residuals(lambda t, d: (blob(t) - d) / 2.0, 4, weights=np.full((N, N), 0.5), data=g),
    ]
    for o in objectives:
        fn = loss_and_output(o)
        th = jnp.asarray(TRUTH + 0.1 if o.thetamap is None else np.zeros(4) + 0.1)
        if o.layout is not None:
            th = jnp.asarray(np.r_[np.log(10.0**4.1), TRUTH[1:]])
        (f, out), grad = jax.value_and_grad(fn, has_aux=True)(th, o.data)
        np.testing.assert_allclose(f, o.loss(th), rtol=1e-6)
        np.testing.assert_allclose(grad, jax.grad(o.loss)(th), rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(grad))))
        expected = o.likelihood.mean(th) if o.likelihood is not None else o.residual_fn(th, o.data)
        np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert loss_and_output(gn.Objective.from_loss(lambda t: jnp.sum(t**2), 2)) is None


def test_threshold_is_the_chi2_quantile_with_its_floor_at_every_dof():
    """The bound that skips scipy for large dof gives exactly max(MIN_REDUCED, χ²_{1-P}(dof)/dof) everywhere."""
    from scipy.special import chdtri

    from gnomon.objective.goodness import MIN_REDUCED, P_VALUE

    for dof in [*range(1, 400), 1_000, 4_082, 10**6]:
        assert threshold(dof) == pytest.approx(max(MIN_REDUCED, chdtri(dof, P_VALUE) / dof), rel=1e-12), dof


def test_chi2_survival_function_matches_scipy_without_importing_it():
    """The pure-Python χ² tail (series below the mean, continued fraction above) agrees with scipy's chdtrc from 1 to
    10⁵ degrees of freedom, deep into both tails; the edge cases are exact."""
    from scipy.special import chdtrc

    from gnomon.objective.goodness import chi2_sf

    for k in (1, 2, 3, 7, 50, 333, 4_095, 12_288, 100_000):
        for r in (1e-3, 0.1, 0.5, 0.9, 0.99, 1.0, 1.01, 1.1, 1.5, 2.0, 4.0, 20.0):
            want = chdtrc(k, r * k)
            if want > 1e-300:
                assert chi2_sf(k, r * k) == pytest.approx(want, rel=1e-9), (k, r)
            else:
                assert chi2_sf(k, r * k) < 1e-290, (k, r)
    assert chi2_sf(5, 0.0) == 1.0 and chi2_sf(5, -1.0) == 1.0 and chi2_sf(5, math.inf) == 0.0
    assert math.isnan(chi2_sf(5, math.nan)) and math.isnan(chi2_sf(0, 3.0))


def test_a_fit_with_its_goodness_of_fit_does_not_import_scipy_special():
    """The first gn.optimize of a process computes its p-value and misfit threshold without importing scipy.special
    (its import competed with the loop's compilation for the CPU)."""
    import subprocess
    import sys

    code = ("import sys, jax, jax.numpy as jnp, numpy as np, gnomon as gn\n"
            "A = jnp.asarray(np.random.default_rng(0).normal(size=(400, 3)) * 0.1)\n"
            "pred = lambda t: jnp.exp(A @ t + 2.0)\n"
            "y = jax.random.poisson(jax.random.key(0), pred(jnp.zeros(3))).astype(jnp.float32)\n"
            "tr = gn.optimize(gn.Objective.from_likelihood(pred, y, 'poisson', 3), jnp.full(3, 0.1), 'lbfgs')\n"
            "g = tr.info['goodness_of_fit']\n"
            "assert 0 < g['p_value'] < 1 and g['threshold'] == 2.0, g\n"
            "print('scipy.special' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr
