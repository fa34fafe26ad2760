"""The warmup's metric estimators against closed forms, and its guards."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from gnomon.sampler import warmup as wu


def _gaussian_moments(cov: np.ndarray, n: int, seed: int = 0, dense: bool = True) -> wu.Moments:
    """Pooled moments of n draws x ~ N(0, cov) and their exact gradients g = −cov⁻¹ x."""
    rng = np.random.default_rng(seed)
    d = cov.shape[0]
    x = rng.multivariate_normal(np.zeros(d), cov, size=n)
    g = -x @ np.linalg.inv(cov)
    m = wu._moments_init(dense, d, jnp.float32)
    for rows in np.array_split(np.arange(n), n // 4):  # four "chains" at a time, as the sampler adds them
        m = wu.moments_add(dense, m, jnp.asarray(x[rows], jnp.float32), jnp.asarray(g[rows], jnp.float32))
    return m


def test_low_rank_estimate_of_a_gaussian_is_its_covariance():
    # for a Gaussian the gradients are g = −Σ⁻¹x, so Cov[g] = Σ⁻¹ Cov[x] Σ⁻¹ draw for draw and
    # Cov[x] # Cov[g]⁻¹ = Σ exactly, whatever the sampling noise of Cov[x] (X = Σ solves X A⁻¹ X = B); with
    # D ≤ 2·rank the projected subspace is everything. Without the eigenvalue mask (cutoff 1) the estimate is
    # the covariance itself — far better than the sample covariance of the same n = 100 draws
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + 0.5 * np.eye(6)
    m = _gaussian_moments(cov, 100)
    sd = np.sqrt(np.diag(cov))
    s = np.asarray(wu.low_rank_scale(m, rank=10, cutoff=1.0), np.float64)
    rel = np.abs(s - cov) / np.outer(sd, sd)
    assert rel.max() < 0.01, rel.max()
    sample = np.asarray(m.m2_u, np.float64) / 100
    assert np.abs(sample - cov).max() / np.outer(sd, sd).max() > 5 * rel.max()  # the draws alone are noisier
    # nutpie's mask (cutoff 2) keeps only the corrections outside [1/2, 2] in the σ-scaled coordinates: the
    # metric then differs from Σ by at most that factor along any direction
    masked = np.asarray(wu.low_rank_scale(m, rank=10), np.float64)
    w = np.linalg.eigvalsh(np.linalg.solve(np.linalg.cholesky(cov), np.linalg.solve(np.linalg.cholesky(cov), masked).T))
    assert 0.45 < w.min() and w.max() < 2.2


def test_fisher_diagonal_of_an_axis_aligned_gaussian():
    var = np.array([1e-2, 1.0, 25.0, 4e2])
    m = _gaussian_moments(np.diag(var), 64, dense=False)
    s2 = np.asarray(wu.fisher_sigma(m, False), np.float64) ** 2
    np.testing.assert_allclose(s2, var, rtol=0.05)


def test_a_degenerate_window_keeps_the_previous_metric(monkeypatch):
    """A window whose estimate is not finite (too few distinct draws) keeps the metric it had."""
    monkeypatch.setattr(wu, "low_rank_scale", lambda m, rank, *a, **k: jnp.full((3, 3), jnp.nan))
    st = wu.AdaptSettings(factor_dense=False, scale_dense=True, moments_dense=True)
    wa = wu.window_adaptation(st)
    pos = jnp.zeros((4, 3))
    ad = wa.init(pos, 0.5, jnp.ones(3))
    ad = ad._replace(scale=2 * jnp.eye(3))
    ad = wa.update(ad, 1, True, pos, jnp.zeros((4, 3)), jnp.full(4, 0.8), jnp.ones(3), jnp.ones(3), 0.0,
                   int(wu.Estimator.LOW_RANK), 0.8)
    np.testing.assert_array_equal(np.asarray(ad.scale), 2 * np.eye(3))


def test_unsettled_names_its_reason():
    st = wu.AdaptSettings(False, False, False)
    ad = wu.window_adaptation(st).init(jnp.zeros((4, 5)), 0.5, jnp.ones(5))
    fresh = wu.unsettled(ad, 5)
    assert not fresh.unsettled  # no window yet
    moved = ad._replace(last_n=jnp.asarray(400.0), change_max=jnp.asarray(np.log(20.0)))
    assert wu.unsettled(moved, 5).unsettled and "moved 20×" in wu.unsettled(moved, 5).reason
    split = ad._replace(last_n=jnp.asarray(400.0), last_rhat=jnp.asarray(1.3))
    assert "chains disagree" in wu.unsettled(split, 5).reason
    calm = ad._replace(last_n=jnp.asarray(400.0), change_max=jnp.asarray(0.1), change_std=jnp.asarray(0.05))
    assert not wu.unsettled(calm, 5).unsettled
