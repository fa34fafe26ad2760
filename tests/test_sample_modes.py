"""Never destroy evidence: chains in separate modes stay where they are and the run says so; a second mode that
no chain visited is found by the probe; a neck the draws never entered is flagged."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import gnomon as gn
from gnomon.sampler import modes
from gnomon.sampler.stuck_chains import find_stuck


def _two_modes():
    """x ~ N(0, 3), 4 ~ N(x², 0.5): two symmetric modes at x ≈ ±2 (P(x < 0) = 0.5), 32 nats apart at x = 0."""
    x = numpyro.sample("x", dist.Normal(0.0, 3.0))
    numpyro.sample("obs", dist.Normal(x**2, 0.5), obs=4.0)


TWO_MODES = gn.Objective.from_numpyro(_two_modes)


def _run(obj, init, key, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = gn.sample(obj, init, jax.random.key(key), **kw)
    return post, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


@pytest.mark.parametrize("start", [0.0, 0.3])
def test_two_modes_are_sampled_or_reported_never_merged(start):
    """From x = 0 (a stationary point between the modes) and from 0.3 (inside one basin), over three keys: each
    run either has chains in both modes — left there, reported as separate regions with their locations —
    or all in one, and then the probe finds the other; never R̂ ≈ 1 with nothing said, never a chain moved."""
    fit = gn.optimize(TWO_MODES, jnp.array([start]), "lbfgs", num_steps=300, tol=1e-5)
    for key in (0, 1, 2):
        post, caught = _run(TWO_MODES, fit, key, num_samples=300)
        health = post.info["health"]
        assert "chains moved" not in [d["action"] for d in post.info["decisions"]], post.info["decisions"]
        assert health["modes"] and health["problems"], health
        found = health["modes"][0]
        sides = np.sign(np.asarray(post.theta)[..., 0].mean(axis=1))
        if found["kind"] == "chains":  # chains in both modes: they stayed, R̂ says so, the locations are named
            assert set(sides) == {-1.0, 1.0} and health["max_rhat"] > 1.05
            assert sorted(round(loc[0]) for loc in found["locations"]) == [-2, 2]
            assert any("separate regions" in w and "x ≈ " in w for w in caught), caught
        else:  # all in one mode: the probe found the other
            assert found["kind"] == "probe" and len(set(sides)) == 1
            assert abs(found["location"][0] + 2 * sides[0]) < 0.3, found  # the opposite mode
            assert any("region no chain sampled" in w and "x ≈" in w for w in caught), caught
        assert post.info["grad_evals"]["checks"] > 0 or found["kind"] == "chains"


def _mixture(y):
    """Two exchangeable components: modes (μ₀, μ₁) ≈ (−2, 2) and (2, −2), the same up to the labels."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0).expand([2]))
    mix = dist.MixtureSameFamily(dist.Categorical(jnp.array([0.5, 0.5])), dist.Normal(mu, 1.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", mix, obs=y)


def test_label_switching_is_reported_not_hidden():
    """Chains started in both labellings stay in them (the old rule moved the minority and turned R̂ 1.53 into
    1.001): the run names the two regions and says they are the same values in another order."""
    rng = np.random.default_rng(0)
    y = jnp.asarray(np.concatenate([rng.normal(-2, 1, 40), rng.normal(2, 1, 40)]), jnp.float32)
    obj = gn.Objective.from_numpyro(_mixture, y)
    starts = jnp.array([[-2.0, 2.0], [2.0, -2.0], [-2.1, 1.9], [2.1, -1.9]])
    for key in (0, 1):
        post, caught = _run(obj, starts, key, num_samples=300)
        assert "chains moved" not in [d["action"] for d in post.info["decisions"]]
        found = post.info["health"]["modes"]
        assert found and found[0]["kind"] == "chains" and found[0]["label_switching"], found
        assert sorted(map(sorted, found[0]["groups"])) == [[0, 2], [1, 3]]
        assert post.info["health"]["max_rhat"] > 1.05
        assert any("label switching" in w and "mu[0]" in w for w in caught), caught


def test_only_chains_that_cannot_sample_are_moved():
    """Distance alone never moves a chain (it may be another mode); a chain is moved when it runs to the
    tree-depth cap at ≥ 10× the others' cost, or does not move and sits far below the others' log density,
    or is not finite — and where it was is kept."""
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(50, 4, 3))
    steps = np.full((50, 4), 7)
    lp = -0.5 * np.sum(theta**2, axis=2)
    assert find_stuck(theta, steps, rng, lp).chains == ()
    far = theta.copy()
    far[:, 2, 1] += 8.0  # chain 2 samples normally 8 sd away: another mode, not stuck
    assert find_stuck(far, steps, rng, lp).chains == ()
    frozen = theta.copy()
    frozen[:, 1] = frozen[0, 1]  # chain 1 never moves ...
    low = lp.copy()
    assert find_stuck(frozen, steps, rng, low).chains == ()  # ... at the others' log density: not stuck
    low[:, 1] = -500.0  # ... far below them: a plateau, not a mode
    s = find_stuck(frozen, steps, rng, low)
    assert s.chains == (1,) and "moved in 0 %" in s.reasons[0] and s.donors[0] in (0, 2, 3)
    np.testing.assert_allclose(s.where[0][0], frozen[0, 1]) and s.where[0][1] == -500.0
    dear = steps.copy()
    dear[:, 0] = 255  # the tree-depth cap's cost
    s = find_stuck(theta, dear, rng, lp)
    assert s.chains == (0,) and "255 gradient evaluations per draw" in s.reasons[0]
    dear[:, 0] = 40  # a few times the others' cost: exploring a narrower region (a funnel's neck), not stuck
    assert find_stuck(theta, dear, rng, lp).chains == ()
    nan = theta.copy()
    nan[3, 3, 0] = np.nan
    assert find_stuck(nan, steps, rng, lp).chains == (3,)
    split = theta.copy()
    split[:, :2, 0] += 10.0
    assert find_stuck(split, dear * 0 + 7, rng, lp).chains == ()  # two against two: no majority
    assert find_stuck(far[:, :2], steps[:, :2], rng).chains == ()


def test_chain_modes_and_probe_against_synthetic_draws():
    """The findings on draws with known structure: one region → nothing; two groups → their chains,
    coordinates and locations; a probe chain settled elsewhere at the draws' density → a probe finding; one
    still falling towards the draws or far below their density → none."""
    rng = np.random.default_rng(1)
    th = rng.normal(size=(4, 200, 2))
    lp = -0.5 * np.sum(th**2, axis=2)
    assert modes.chain_modes(th, lp) is None
    two = th.copy()
    two[[1, 3], :, 0] += 6.0
    f = modes.chain_modes(two, lp, lambda i: ["a", "b"][i])
    assert f["groups"] == [[0, 2], [1, 3]] and f["coordinates"] == [0] and not f["label_switching"]
    np.testing.assert_allclose(sorted(loc[0] for loc in f["locations"]), [0, 6], atol=0.2)
    assert "a ≈" in f["message"] and "separate regions" in f["message"]
    probe = np.concatenate([rng.normal(size=(20, 1, 2)) * 0.5 + [9.0, 0.0], rng.normal(size=(20, 1, 2))], axis=1)
    plp = np.concatenate([np.full((20, 1), -1.0), np.full((20, 1), -1.0)], axis=1)
    found = modes.probe_modes(probe, plp, np.zeros((20, 2), bool), th, lp)
    assert len(found) == 1 and found[0]["kind"] == "probe" and abs(found[0]["location"][0] - 9) < 0.5
    assert modes.probe_modes(probe, plp - 100.0, np.zeros((20, 2), bool), th, lp) == []  # far below: no mass
    starts = modes.probe_starts(np.array([0.3, -1.0]), jax.random.key(0), 4)
    r = starts - np.array([0.3, -1.0])
    np.testing.assert_allclose(r[0], -r[1]) and np.testing.assert_allclose(r[2], -r[3])
    assert np.all((np.abs(r) >= 1.0) & (np.abs(r) <= 2.0))
