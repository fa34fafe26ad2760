"""Conditionally Gaussian coordinates non-centred from a hand-written log density's own derivatives
(gnomon.sampler.conditional_map): the structure found, the map exact against the closed-form conditionals of the
centred eight schools, declined where it saves nothing (no neck, an affine structure the fitted map holds, few
groups), and, in gn.sample with the defaults, what makes the centred half-Cauchy eight schools come out right
(a fitted map left its sds 15–27 % off on six keys of six), with every gradient in z counted at its cost."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.sampler import conditional_map as cm
from gnomon.sampler.decisions import Action

Y = jnp.asarray([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], jnp.float32)
S = jnp.asarray([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], jnp.float32)


def centred_schools(th):
    """Stan's centred eight schools, hand-written: θ = (μ, log τ, θ_1..8), τ ~ half-Cauchy(5), μ ~ N(0, 5²)."""
    mu, log_tau, t = th[0], th[1], th[2:]
    tau = jnp.exp(log_tau)
    lp = -0.5 * (mu / 5.0) ** 2 - jnp.log1p((tau / 5.0) ** 2) + log_tau
    lp = lp + jnp.sum(-0.5 * ((t - mu) / tau) ** 2 - log_tau)
    return lp + jnp.sum(-0.5 * ((Y - t) / S) ** 2)


def _draws(n=400, seed=0):
    """Dispersed draws of the kind a recovery has: roots spread, groups around their conditional."""
    rng = np.random.default_rng(seed)
    mu, lt = 4 + 3 * rng.normal(size=n), 1 + rng.normal(size=n)
    t = mu[:, None] + np.exp(lt)[:, None] * rng.normal(size=(n, 8))
    return np.c_[mu, lt, t].astype(np.float32)


def _closed_form(mu, lt):
    p = np.exp(-2 * lt)[:, None] + 1 / np.asarray(S, np.float64) ** 2
    m = (mu[:, None] * np.exp(-2 * lt)[:, None] + np.asarray(Y, np.float64) / np.asarray(S, np.float64) ** 2) / p
    return m, p


def test_the_structure_is_found_and_the_map_is_exact():
    """Groups θ_1..8 given roots (μ, log τ); the conditional moments are the closed form's (precision
    e^{−2 log τ} + 1/σ_j², the precision-weighted mean); z = T⁻¹(T(z)); the log-Jacobian is the Jacobian's
    log-determinant; and the density in z factorises exactly: the groups' z are N(0, 1) whatever the roots."""
    obj = gn.Objective.from_log_prob(centred_schools, 10)
    cmap, msg, spent = cm.conditional_map(obj, _draws(), obj.data)
    assert cmap is not None, msg
    assert list(cmap.roots) == [0, 1] and list(cmap.groups) == list(range(2, 10)) and spent > 0
    assert "8 conditionally Gaussian" in msg and 2 < cmap.grad_cost < 40
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(64, 10)) * 1.5, jnp.float32)
    th = np.asarray(cmap.to_theta(z), np.float64)
    mu, lt = th[:, 0], th[:, 1]
    m, p = _closed_form(mu, lt)
    assert np.allclose(th[:, 2:], m + np.asarray(z[:, 2:], np.float64) / np.sqrt(p), rtol=2e-3, atol=2e-3 / np.sqrt(p))
    assert np.allclose(np.asarray(cmap.to_z(jnp.asarray(th, jnp.float32))), np.asarray(z), atol=2e-3)
    jac = jax.vmap(jax.jacfwd(lambda zz: cmap.to_theta(zz[None])[0]))(z[:4])
    logdet = np.linalg.slogdet(np.asarray(jac, np.float64))[1]
    assert np.allclose(logdet, np.asarray(cmap.log_det_jacobian(z[:4])), atol=2e-3)
    expect = np.sum(np.log(cmap.scale)) - 0.5 * np.sum(np.log(p[:4]), axis=1)
    assert np.allclose(np.asarray(cmap.log_det_jacobian(z[:4])), expect, atol=2e-3)
    zobj = cm.conditioned(obj, cmap)
    ell = jax.vmap(zobj.log_prob)
    z0 = z.at[:, 2:].set(0.0)
    diff = np.asarray(ell(z), np.float64) - np.asarray(ell(z0), np.float64)
    assert np.allclose(diff, -0.5 * np.sum(np.asarray(z[:, 2:], np.float64) ** 2, axis=1), rtol=1e-3, atol=2e-2)
    again = cm.ConditionalMap.from_arrays(cmap.to_arrays(), cmap.describe(), obj, obj.data)
    assert again.hash == cmap.hash and cm.is_conditional(cmap.describe())
    with pytest.raises(ValueError, match="hash mismatch"):
        cm.ConditionalMap.from_arrays({**cmap.to_arrays(), "ref": cmap.ref + 1}, cmap.describe(), obj, obj.data)


def _funnel(th):
    v, x = th[0], th[1:]
    return -0.5 * (v / 3.0) ** 2 - 0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * (th.shape[0] - 1) * v


def _funnel_draws(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    v = 3 * rng.normal(size=(n, 1))
    return np.c_[v, np.exp(v / 2) * rng.normal(size=(n, d - 1))].astype(np.float32)


def _banana(th):
    return -0.5 * th[0] ** 2 - 0.5 * (th[1] - th[0] ** 2) ** 2 / 0.25 - 0.5 * jnp.sum(th[2:] ** 2)


@pytest.mark.parametrize(
    ("log_prob", "draws", "why"),
    [
        # a diagonal Gaussian: every coordinate a group, nothing varies
        (lambda th: -0.5 * jnp.sum((th / jnp.arange(1.0, 7.0)) ** 2), np.random.default_rng(0).normal(
            size=(300, 6)).astype(np.float32), "nothing to non-centre"),
        # Neal's funnel: log-sd −v/2 and mean 0 are affine in v — the fitted map's family holds it exactly
        (_funnel, _funnel_draws(), "affine"),
        # a banana in 2 of 6 coordinates: x_1 | x_0 is Gaussian but x_0 | x_1 is not; the rest no neck
        (_banana, np.random.default_rng(2).normal(size=(300, 6)).astype(np.float32), "no neck"),
    ],
)
def test_declined_where_it_saves_nothing(log_prob, draws, why):
    obj = gn.Objective.from_log_prob(log_prob, draws.shape[1])
    cmap, msg, _ = cm.conditional_map(obj, draws, obj.data)
    assert cmap is None and why in msg, msg


def test_declined_above_its_dimension_and_for_few_draws(monkeypatch):
    obj = gn.Objective.from_log_prob(centred_schools, 10)
    assert cm.conditional_map(obj, _draws()[:2], obj.data)[0] is None
    monkeypatch.setattr(cm, "MAX_DIM", 8)
    cmap, msg, spent = cm.conditional_map(obj, _draws(), obj.data)
    assert cmap is None and "above 8" in msg and spent == 0


def test_few_groups_against_many_roots_are_declined():
    """Only one coordinate conditionally Gaussian (μ of a stochastic-volatility-like series whose latent states
    are not): a map whose every gradient costs several would save nothing."""

    def sv_like(th):
        mu, h = th[0], th[1:]
        return -0.5 * mu**2 - 0.5 * jnp.sum((h[1:] - h[:-1]) ** 2) - 0.5 * jnp.sum((h - mu) ** 2) - jnp.sum(
            jnp.exp(-h))

    obj = gn.Objective.from_log_prob(sv_like, 8)
    cmap, msg, _ = cm.conditional_map(obj, np.random.default_rng(3).normal(size=(300, 8)).astype(np.float32),
                                      obj.data)
    assert cmap is None and "not worth a map" in msg, msg


def _sample(obj, init, key, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gn.sample(obj, init, jax.random.key(key), progress=False, **kw)


def test_sample_gets_the_centred_half_cauchy_schools_right(tmp_path):
    """The defaults on the hand-written centred eight schools (no mode: the optimizer runs off into the neck):
    the stage keeps the conditional map, the pooled draws of two keys match a long run of the non-centred model
    (BlackJAX dense window adaptation, 4 × 10000 draws: benchmarks/sampling_references.json) in μ, log τ and
    θ_1 — a fitted map missed log τ's sd by 15–27 % — every gradient in z is counted at its cost, and a
    hand-off reuses the map."""
    obj = gn.Objective.from_log_prob(centred_schools, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = gn.optimize(obj, jnp.zeros(10).at[1].set(1.0), "lbfgs", num_steps=500, tol=1e-3)
    posts = [_sample(obj, fit, k, num_samples=600) for k in (0, 1)]
    for post in posts:
        acts = [Action.parse(d["action"]) for d in post.info["decisions"]]
        assert Action.TRANSPORT_KEPT in acts and Action.TRANSPORT_ABANDONED not in acts, post.info["decisions"]
        tr = post.info["transport"]
        assert tr["type"] == "conditional gaussian" and tr["roots"] == [0, 1]
        ge = post.info["grad_evals"]
        steps = int(np.sum(post.stats["n_steps"]))
        assert ge["sampling"] == math.ceil(steps * tr["grad_cost"]) > steps
        assert post.num_grad_evals == sum(v for k, v in ge.items() if k != "map")
    th = np.concatenate([np.asarray(p.theta, np.float64).reshape(-1, 10) for p in posts])
    for i, (m, s) in ((0, (4.380, 3.322)), (1, (0.797, 1.164)), (2, (6.208, 5.596))):
        assert abs(th[:, i].mean() - m) < 0.12 * s and abs(th[:, i].std() / s - 1) < 0.1, (i, th[:, i].mean(),
                                                                                          th[:, i].std())
    bundle = gn.HandOff.from_trace(posts[0])
    bundle.save(tmp_path)
    nxt = _sample(obj, gn.HandOff.load(tmp_path), 5, num_samples=200)
    acts = [Action.parse(d["action"]) for d in nxt.info["decisions"]]
    assert acts[0] is Action.TRANSPORT_REUSED and nxt.info["transport"]["type"] == "conditional gaussian"
    assert nxt.info["grad_evals"]["sampling"] > int(np.sum(nxt.stats["n_steps"]))
    assert abs(np.asarray(nxt.theta)[..., 1].std() / 1.164 - 1) < 0.3  # base θ (log τ), not z


def _scale_of_one(th):
    """a sets the scale of μ alone (μ | a ~ N(0, e^{2a})), s that of six non-Gaussian h's: the draws'
    correlations rank s as the scale parent; a sets one coordinate's spread and scores far below it."""
    a, s, mu, h = th[0], th[1], th[2], th[3:]
    lp = -0.5 * a**2 - 0.5 * s**2 - 0.5 * mu**2 * jnp.exp(-2 * a) - a
    return lp - 0.5 * jnp.sum(h**2) * jnp.exp(-2 * s) - h.size * s - 0.05 * jnp.sum(h**4)


def test_precision_parents_are_named_from_the_derivatives():
    """Where the map itself is declined (one Gaussian coordinate against many others), the analysis still names
    the coordinate that sets its scale — exactly, from the gradient of its log conditional precision — and the
    fitted map takes it as a scale parent (its log-scale can then depend on it), with a bad index refused."""
    from gnomon.sampler import transport as tp

    rng = np.random.default_rng(4)
    n = 600
    a, s = rng.normal(size=n), rng.normal(size=n)
    th = np.c_[a, s, np.exp(a) * rng.normal(size=n), np.exp(s)[:, None] * rng.normal(size=(n, 6)) * 0.8]
    th = th.astype(np.float32)
    obj = gn.Objective.from_log_prob(_scale_of_one, 9)
    an = cm.analyse(obj, th, obj.data)
    assert an.map is None and "not worth a map" in an.message and an.parents == (0,), an
    order, parents = tp.parent_order(th, an.parents)
    assert 0 in order[:parents] and parents >= 1
    grads = np.asarray(jax.vmap(jax.grad(_scale_of_one))(jnp.asarray(th)))
    _, dec = tp.fit_transport(th, grads, scale_parents=an.parents)
    assert dec.details["forced_parents"] == [0] and dec.details["scale_parents"] >= 1
    with pytest.raises(ValueError, match="scale_parents"):
        tp.fit_transport(th, grads, scale_parents=(9,))


def test_a_nan_hessian_is_declined_not_used():
    """A log density whose second derivatives are NaN (as the dLux Hessian is on some CPUs): no coordinate is a
    candidate, the map and the parents are declined with a reason, nothing raises."""

    @jax.custom_jvp
    def nan_curvature(x):
        return x

    nan_curvature.defjvp(lambda p, t: (nan_curvature(p[0]), t[0] * jnp.sin(p[0]) * jnp.nan))
    obj = gn.Objective.from_log_prob(lambda th: centred_schools(nan_curvature(th)), 10)
    an = cm.analyse(obj, _draws(), obj.data)
    assert an.map is None and an.parents == () and "nothing to non-centre" in an.message, an
