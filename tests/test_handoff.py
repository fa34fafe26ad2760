"""The hand-off bundle: built from a sampling trace, saved with a run, loaded back, and resumed from."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.io.jsonio import ArtifactError

SD = np.array([0.5, 2.0, 1.0])
OBJ = gn.Objective.from_log_prob(lambda th: -0.5 * jnp.sum((th / jnp.asarray(SD, th.dtype)) ** 2), 3)


@pytest.fixture(scope="module")
def first():
    opt = gn.optimize(OBJ, jnp.ones(3), "lbfgs", num_steps=50, tol=1e-6)
    return gn.sample(OBJ, opt, jax.random.key(0), num_chains=2, num_samples=400)


def test_bundle_from_trace(first):
    h = gn.HandOff.from_trace(first)
    assert h.dim == 3 and h.num_chains == 2
    assert np.ndim(h.seed_inverse_mass_matrix) == 1  # uncorrelated: a diagonal seed (the adapted one may be dense)
    assert h.step_size == first.info["step_size"]
    np.testing.assert_array_equal(h.inverse_mass_matrix, first.extras["inverse_mass_matrix"])
    np.testing.assert_array_equal(h.positions, np.asarray(first.theta)[:, -1])
    # the seed is the curvature's inverse: 1/diag(H) = SD² exactly for this target
    np.testing.assert_allclose(h.seed_inverse_mass_matrix, SD**2, rtol=1e-5)
    np.testing.assert_allclose(h.curvature_diag, 1 / SD**2, rtol=1e-5)
    # the adapted metric estimates the variances (pooled over chains, short warmup): within 50 %
    adapted = np.diagonal(h.inverse_mass_matrix) if h.dense else h.inverse_mass_matrix
    np.testing.assert_allclose(adapted / SD**2, 1.0, atol=0.5)
    d = h.describe()
    json.dumps(d)
    assert d["handoff_schema"] == 1 and d["packages"]["blackjax"] and d["engine"] == "nuts"


def test_save_run_and_load_round_trip(first, tmp_path):
    h = gn.HandOff.from_trace(first)
    run_dir = h.save_run(tmp_path / "run", first)
    run = gn.load_run(run_dir)
    assert run.trace.kind == "sampling"
    np.testing.assert_array_equal(run.trace.theta, first.theta)
    np.testing.assert_array_equal(run.trace.stats["diverging"], first.stats["diverging"])
    # summary.json: ESS, R-hat, divergences, cost, hand-off diagnostics
    s = run.summary
    for k in (
        "min_ess_bulk",
        "min_ess_tail",
        "max_rhat",
        "divergences",
        "num_grad_evals",
        "runtime_s",
        "metric_ratio_spread",
        "start_max_abs_z",
        "grad_evals_per_ess",
    ):
        assert k in s, k
    assert s["num_grad_evals"] == first.num_grad_evals and s["max_rhat"] < 1.05
    assert run.meta["handoff"]["step_size"] == pytest.approx(h.step_size)
    back = gn.HandOff.load(run)
    assert back.step_size == h.step_size and back.info["engine"] == "nuts"
    for name in (
        "theta",
        "inverse_mass_matrix",
        "seed_inverse_mass_matrix",
        "positions",
        "key",
        "curvature_diag",
    ):
        np.testing.assert_array_equal(getattr(back, name), getattr(h, name))
    # the same from the directory and from the file itself; and the plain save()
    assert gn.HandOff.load(run_dir).step_size == h.step_size
    assert gn.HandOff.load(run_dir / "handoff.npz").dim == 3
    p = h.save(tmp_path / "other")
    assert gn.HandOff.load(p).step_size == h.step_size
    # a complete run's files are recorded in its summary: save() does not rewrite one behind its back
    with pytest.raises(FileExistsError, match="is a complete run"):
        h.save(run_dir)
    assert gn.load_run(run_dir).path is not None


def test_resume_with_the_same_adaptation(first, tmp_path):
    h = gn.HandOff.load(gn.HandOff.from_trace(first).save(tmp_path / "h"))
    # a hand-off's one home is init=: its chains' positions, its adapted metric and step size
    nxt = gn.sample(OBJ, h, jax.random.key(1), num_chains=2, num_samples=400, num_warmup=0)
    assert nxt.info["metric"]["seed"] == "handoff" and nxt.info["init"] == "handoff"
    assert nxt.info["step_size"] == pytest.approx(h.step_size)
    np.testing.assert_allclose(nxt.extras["inverse_mass_matrix"], h.inverse_mass_matrix, rtol=1e-6)
    assert np.all(nxt.stats["step_size"] == np.float32(h.step_size))
    assert nxt.info["grad_evals"]["warmup"] == 0
    # the chains continue from the bundle's positions: no burn-in needed, moments right
    draws = np.asarray(nxt.theta).reshape(-1, 3)
    assert np.all(np.abs(draws.mean(0)) < 0.25 * SD)
    np.testing.assert_allclose(draws.std(0) / SD, 1.0, atol=0.2)
    # default warmup from a hand-off is short
    again = gn.sample(OBJ, h, jax.random.key(2), num_chains=2, num_samples=50)
    assert again.info["num_warmup"] == 150 and again.info["initial_step_size"] == pytest.approx(h.step_size)
    # the v0.1 handoff= names the new home; the metric alone from another start is a metric seed
    with pytest.raises(ValueError, match=r"handoff belongs to init= \(gn\.sample\(obj, init=bundle"):
        gn.sample(OBJ, h, jax.random.key(2), handoff=h)
    other = gn.sample(OBJ, jnp.zeros(3), jax.random.key(3), num_chains=2, num_samples=50,
                      warmup=gn.warmup(inverse_mass_matrix=h, num_steps=0))
    assert other.info["metric"]["seed"] == "handoff" and other.info["init"] == "theta"
    np.testing.assert_allclose(other.extras["inverse_mass_matrix"], h.inverse_mass_matrix, rtol=1e-6)
    # the curvature seed from a hand-off's start, when asked for
    fresh = gn.sample(OBJ, h, jax.random.key(4), num_chains=2, num_samples=50, inverse_mass_matrix="curvature")
    assert fresh.info["metric"]["seed"] == "curvature"


def test_bad_bundles(tmp_path, first):
    with pytest.raises(ArtifactError, match="no hand-off bundle"):
        gn.HandOff.load(tmp_path)
    (tmp_path / "handoff.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="handoff.npz"):
        gn.HandOff.load(tmp_path)
    with pytest.raises(ValueError, match="inverse_mass_matrix must be"):
        gn.HandOff(theta=np.zeros(3), step_size=0.1, inverse_mass_matrix=np.ones(2))
    with pytest.raises(ValueError, match="step_size must be a positive"):
        gn.HandOff(theta=np.zeros(3), step_size=-1.0, inverse_mass_matrix=np.ones(3))
    with pytest.raises(ValueError, match="needs a sampling Trace"):
        gn.HandOff.from_trace(gn.optimize(OBJ, jnp.ones(3), "lbfgs", num_steps=2))
    h = gn.HandOff(theta=np.zeros(5), step_size=0.1, inverse_mass_matrix=np.ones(5))
    with pytest.raises(ValueError, match="dimension 5"):
        gn.sample(OBJ, jnp.zeros(3), jax.random.key(0), warmup=gn.warmup(inverse_mass_matrix=h))
