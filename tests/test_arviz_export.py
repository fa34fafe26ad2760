"""ArviZ export: a numpyro model end to end (objective → MAP → NUTS → DataTree), the tree's content,
optimization traces, eigen-space traces and the netCDF round trip."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.io.netcdf import read_netcdf, write_netcdf

RNG = np.random.default_rng(3)
X = RNG.normal(size=(30, 3))
Y = X @ np.array([1.0, -0.5, 0.25]) + RNG.normal(size=30)
GAMMA_A, GAMMA_B = 3.0, 2.0


def model(x, y=None):
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    numpyro.sample("s", dist.Gamma(GAMMA_A, GAMMA_B))  # no data: its posterior is its prior
    numpyro.sample("obs", dist.Normal(x @ w, 1.0), obs=y)


@pytest.fixture(scope="module")
def fitted():
    obj = gn.Objective.from_numpyro(model, jnp.asarray(X), jnp.asarray(Y))
    opt = gn.optimize(obj, jnp.zeros(obj.dim), "lbfgs", num_steps=200, tol=1e-5)
    post = gn.sample(obj, opt, jax.random.key(0), num_chains=4, num_samples=500, keep_warmup=True)
    return obj, opt, post


def test_numpyro_end_to_end_posterior(fitted):
    obj, opt, post = fitted
    assert opt.converged and post.layout is obj.layout
    dt = post.to_arviz(observed=obj.observed)
    w = dt.posterior["w"].values.reshape(-1, 3)
    s = dt.posterior["s"].values.reshape(-1)
    # closed forms: w | y ~ N(m, V) with V = (XᵀX + I)⁻¹, m = V Xᵀ y; s ~ Gamma(3, rate 2) (Jacobian of log s)
    v = np.linalg.inv(X.T @ X + np.eye(3))
    m = v @ X.T @ Y
    ess = 1000  # conservative: 4 × 500 draws, NUTS on a near-Gaussian target
    assert np.all(np.abs(w.mean(0) - m) < 4 * np.sqrt(np.diag(v) / ess))
    np.testing.assert_allclose(w.std(0), np.sqrt(np.diag(v)), rtol=0.15)
    assert abs(s.mean() - GAMMA_A / GAMMA_B) < 4 * np.sqrt(GAMMA_A) / GAMMA_B / np.sqrt(ess)
    assert np.all(s > 0)
    np.testing.assert_allclose(s.var(), GAMMA_A / GAMMA_B**2, rtol=0.25)


def test_tree_content(fitted):
    obj, _, post = fitted
    dt = post.to_arviz(observed=obj.observed, unconstrained=True, meta={"campaign": "c1"})
    assert set(dt.children) == {
        "posterior",
        "unconstrained_posterior",
        "sample_stats",
        "warmup_posterior",
        "warmup_unconstrained_posterior",
        "warmup_sample_stats",
        "observed_data",
    }
    p = dt.posterior
    assert p["w"].dims == ("chain", "draw", "w_dim_0") and p["w"].shape == (4, 500, 3)
    assert p["s"].dims == ("chain", "draw")
    np.testing.assert_array_equal(p["w_dim_0"].values, [0, 1, 2])
    # constrained values are layout.unpack of θ; the unconstrained group holds the raw blocks
    un = obj.layout.unpack(jnp.asarray(post.theta))
    np.testing.assert_allclose(p["s"].values, np.asarray(un["s"]), rtol=1e-6)
    np.testing.assert_allclose(
        dt.unconstrained_posterior["s"].values, np.log(p["s"].values), rtol=1e-5, atol=1e-6
    )
    ss = dt.sample_stats
    assert set(ss.data_vars) == {
        "lp",
        "acceptance_rate",
        "diverging",
        "energy",
        "n_steps",
        "step_size",
        "tree_depth",
    }
    assert ss["diverging"].dtype == bool
    np.testing.assert_array_equal(ss["lp"].values, np.asarray(post.log_prob))
    nw = post.info["num_warmup"]
    assert dt.warmup_posterior["w"].shape == (4, nw, 3) and dt.warmup_sample_stats["lp"].shape == (4, nw)
    np.testing.assert_array_equal(dt.observed_data["obs"].values, Y.astype(np.float32))
    meta = json.loads(dt.attrs["gnomon_meta"])
    assert meta["kind"] == "sampling" and meta["user"] == {"campaign": "c1"}
    assert meta["engine"]["engine"] == "nuts" and meta["layout"]["hash"] == obj.layout.hash
    # ArviZ computes on it
    import arviz_stats as azs

    assert float(azs.rhat(dt)["w"].max()) < 1.05
    assert "warmup_posterior" not in post.to_arviz(save_warmup=False).children


def test_netcdf_round_trip(fitted, tmp_path):
    obj, _, post = fitted
    path = write_netcdf(tmp_path / "posterior.nc", post, observed=obj.observed, meta={"k": [1, 2]})
    back = read_netcdf(path)
    orig = post.to_arviz(observed=obj.observed)
    for group in ("posterior", "sample_stats", "warmup_posterior", "observed_data"):
        for name, da in orig[group].data_vars.items():
            np.testing.assert_array_equal(back[group][name].values, da.values)
            assert back[group][name].dims == da.dims
    assert back.sample_stats["diverging"].dtype == bool
    assert json.loads(back.attrs["gnomon_meta"])["user"] == {"k": [1, 2]}
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file


def test_save_run_with_netcdf_and_load(fitted, tmp_path):
    _, _, post = fitted
    run_dir = gn.save_run(tmp_path / "r", post, arviz=True)
    assert (run_dir / "posterior.nc").exists()
    run = gn.load_run(run_dir)
    assert run.trace.kind == "sampling" and run.layout == post.layout
    np.testing.assert_array_equal(run.trace.theta, post.theta)
    np.testing.assert_array_equal(run.trace.warmup["theta"], post.warmup["theta"])
    np.testing.assert_array_equal(run.trace.warmup["stats"]["n_steps"], post.warmup["stats"]["n_steps"])
    back = read_netcdf(run_dir / "posterior.nc")
    np.testing.assert_array_equal(back.posterior["w"].values, post.to_arviz().posterior["w"].values)


def test_optimization_trace_export(fitted, tmp_path):
    obj, opt, _ = fitted
    dt = opt.to_arviz()
    assert set(dt.children) == {"posterior", "optimization_path", "optimization_stats"}
    assert dt.posterior["w"].shape == (1, 1, 3)
    best = obj.layout.unpack(jnp.asarray(opt.best_theta))
    np.testing.assert_allclose(dt.posterior["w"].values[0, 0], np.asarray(best["w"]), rtol=1e-6)
    path = dt.optimization_path
    assert path["w"].dims == ("chain", "draw", "w_dim_0") and path.sizes["draw"] == len(opt)
    np.testing.assert_array_equal(path["draw"].values, opt.step)  # draw = optimizer step
    np.testing.assert_array_equal(dt.optimization_stats["loss"].values[0], opt.loss)
    back = read_netcdf(write_netcdf(tmp_path / "map.nc", opt))
    np.testing.assert_array_equal(back.optimization_path["w"].values, path["w"].values)
    # a batch of fits: chain = restart
    batch = gn.optimize_batch(
        obj, jnp.stack([jnp.zeros(obj.dim), 0.5 * jnp.ones(obj.dim)]), method="lbfgs", num_steps=30
    )
    db = batch.to_arviz()
    assert db.optimization_path.sizes["chain"] == 2 and db.posterior.sizes["chain"] == 1


def test_eigen_space_trace_is_decoded():
    layout = gn.Layout({"a": (), "b": (2,)})
    f = np.diag([4.0, 1.0, 0.25])
    emap = gn.EigenMap.from_matrix(f, np.array([1.0, 2.0, 3.0]), layout=layout)
    z = np.random.default_rng(0).normal(size=(2, 5, 3))
    tr = gn.Trace(kind="sampling", z=z, log_prob=np.zeros((2, 5)), layout=layout, thetamap=emap)
    dt = tr.to_arviz()
    theta = np.asarray(emap.to_theta(z))
    np.testing.assert_allclose(dt.posterior["b"].values, theta[..., 1:], rtol=1e-6)
    assert dt.posterior["b"].dims == ("chain", "draw", "b_dim_0")


def test_float64_values_survive_and_component_labels_are_coordinates(tmp_path):
    """A float64 trace exported while JAX runs in float32: untransformed blocks keep every digit (µas offsets
    of 2.5e6 would round to 0.25 µas in float32); labelled vector blocks use their labels as coordinates."""
    layout = gn.Layout({"sep": (), "zern": (2,), "flux": ()}, transforms={"flux": "positive"},
                       units={"sep": "µas", "zern": "nm"}, labels={"zern": ["Z4", "Z5"]})
    theta = np.array([2.5e6 + 0.0123, 12.000001, -8.0, 0.5])[None, None, :] + np.arange(3)[None, :, None] * 1e-3
    tr = gn.Trace(kind="sampling", theta=theta, log_prob=np.zeros((1, 3)), layout=layout)
    dt = tr.to_arviz()
    np.testing.assert_array_equal(dt.posterior["sep"].values, theta[..., 0])  # exact, float64
    assert dt.posterior["sep"].dtype == np.float64
    np.testing.assert_allclose(dt.posterior["flux"].values, np.exp(theta[..., 3]), rtol=1e-6)
    assert list(dt.posterior["zern"].coords["zern_dim_0"].values) == ["Z4", "Z5"]
    np.testing.assert_array_equal(dt.posterior["zern"].sel(zern_dim_0="Z4").values, theta[..., 1])
    write_netcdf(tmp_path / "p.nc", tr)
    back = read_netcdf(tmp_path / "p.nc")
    np.testing.assert_array_equal(back.posterior["sep"].values, theta[..., 0])
    assert list(back.posterior["zern"].coords["zern_dim_0"].values) == ["Z4", "Z5"]


def test_without_layout_and_bad_input():
    tr = gn.Trace(kind="sampling", theta=np.zeros((2, 3, 4)), log_prob=np.zeros((2, 3)))
    dt = tr.to_arviz()
    assert dt.posterior["theta"].dims == ("chain", "draw", "theta_dim_0")
    with pytest.raises(ValueError, match="layout has size 2"):
        tr.to_arviz(layout=gn.Layout({"x": (2,)}))
    with pytest.raises(ValueError, match="expects a gnomon.Trace"):
        from gnomon.trace.arviz_export import to_arviz

        to_arviz(np.zeros(3))
