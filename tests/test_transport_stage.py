"""The transport stage as a phase of gn.sample (gnomon.sampler.transport_stage): it fires in a recovery and is
kept on a centred funnel, with the exact moments; it does not run on a Gaussian; a map whose run in z fails is
abandoned and the warmup goes on in θ; the decision and the cost are recorded; a hand-off carries the map and
the next epoch reuses it without training or compiling."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.sampler import transport_stage as ts
from gnomon.sampler.decisions import Action

D, V_SD = 5, 3.0  # Neal's funnel: v ~ N(0, 3²), x_i | v ~ N(0, e^v); its mode (v = −18) is deep in the neck


def _funnel(th):
    v, x = th[0], th[1:]
    return -0.5 * (v / V_SD) ** 2 - 0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * (D - 1) * v


def _fit():
    obj = gn.Objective.from_log_prob(_funnel, D)
    x0 = jnp.zeros(D).at[0].set(1.0)
    return obj, gn.optimize(obj, x0, "lbfgs", num_steps=500, tol=1e-3)


def _sample(obj, init, key, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gn.sample(obj, init, jax.random.key(key), num_samples=kw.pop("num_samples", 500), progress=False, **kw)


def _actions(post):
    return [Action.parse(d["action"]) for d in post.info["decisions"]]


@pytest.fixture(scope="module")
def funnel_runs():
    obj, fit = _fit()
    return obj, fit, [_sample(obj, fit, k) for k in (0, 1)]


def test_kept_on_a_centred_funnel_with_the_exact_moments(funnel_runs):
    """The seed at the mode is rejected, the recovery's draws train the map, it is kept, and the draws — base θ
    in the Trace — have the funnel's exact moments: v ~ N(0, 3²) and x_i e^{−v/2} ~ N(0, 1), pooled over two
    keys (4000 draws; a recovery in θ gets sds 25–30 % off here)."""
    _, _, posts = funnel_runs
    pooled = []
    for post in posts:
        acts = _actions(post)
        assert Action.TRANSPORT_KEPT in acts and Action.TRANSPORT_ABANDONED not in acts, post.info["decisions"]
        assert acts.index(Action.TRANSPORT_KEPT) > acts.index(Action.RECOVERY)
        assert post.thetamap is None and post.theta_space == "primitive"  # base θ, not z
        assert post.info["transport"]["hash"] and post.info["transport"]["reused"] is False
        pooled.append(np.asarray(post.theta, np.float64).reshape(-1, D))
    th = np.concatenate(pooled)
    v, u = th[:, 0], th[:, 1:] * np.exp(-th[:, :1] / 2)
    assert abs(v.mean()) < 0.15 * V_SD and abs(v.std() / V_SD - 1) < 0.1, (v.mean(), v.std())
    assert np.all(np.abs(u.mean(0)) < 0.15) and np.all(np.abs(u.std(0) - 1) < 0.1), (u.mean(0), u.std(0))


def test_the_decision_and_the_cost_are_recorded(funnel_runs):
    """The kept map's decision holds the held-out Fisher divergences (the map far below the best linear map),
    the stage's gradients are counted under their own key and in num_grad_evals, and the Trace's log_prob is
    the density of θ (the map's log-Jacobian taken off)."""
    obj, _, posts = funnel_runs
    post = posts[0]
    kept = next(d for d in post.info["decisions"] if Action.parse(d["action"]) is Action.TRANSPORT_KEPT)
    det = kept["transport"]
    assert det["fisher_map"] < 0.1 * det["fisher_linear"] and det["grad_evals"] == 0  # trained on draws only
    # the conditional map from the derivatives was declined, and the decision says why (a funnel is affine)
    assert "affine" in det["conditional_map"] and det["forced_parents"] == [0]
    ge = post.info["grad_evals"]
    assert ge["transport"] > 0 and post.num_grad_evals == sum(v for k, v in ge.items() if k != "map")
    lp = np.asarray(jax.vmap(obj.log_prob)(jnp.asarray(post.theta[0, :20])))
    assert np.allclose(np.asarray(post.log_prob[0, :20]), lp, rtol=1e-4, atol=1e-3)


def test_not_run_on_a_gaussian():
    """A correlated Gaussian: the curvature seed is right, the draws show no funnel, so the stage never runs
    (no transport decision, no transport gradients) — the run is the plain seeded one."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    prec = jnp.asarray((q / np.linspace(0.1, 3.0, 6) ** 2) @ q.T, jnp.float32)
    obj = gn.Objective.from_log_prob(lambda th: -0.5 * th @ (prec @ th), 6)
    fit = gn.optimize(obj, jnp.ones(6), "lbfgs", num_steps=200, tol=1e-4)
    post = _sample(obj, fit, 0, num_samples=200)
    acts = _actions(post)
    assert Action.SEED_KEPT in acts and not any(a.value.startswith("transport") for a in acts), acts
    assert post.info["grad_evals"]["transport"] == 0 and post.info["transport"] is None


def test_far_from_gaussian_needs_a_funnel_and_a_moved_metric():
    """The kept-seed criterion: a Gaussian's draws (any correlation) never fire it, a funnel's do once the
    metric moved; a metric that stayed near the seed does not, whatever the draws."""
    rng = np.random.default_rng(1)
    gauss = rng.normal(size=(800, 5)) @ rng.normal(size=(5, 5))
    v = 3 * rng.normal(size=(800, 1))
    funnel = np.c_[v, np.exp(v / 2) * rng.normal(size=(800, 4))]
    seed, moved = np.ones(5), np.array([1.0, 30.0, 0.05, 8.0, 0.2])
    assert ts.far_from_gaussian(gauss, seed, moved) is None
    assert ts.far_from_gaussian(funnel, seed, moved) is not None
    assert ts.far_from_gaussian(funnel, seed, 1.2 * seed) is None


def test_falls_back_to_the_recovery_when_the_run_in_z_goes_bad(monkeypatch):
    """A map whose run in z fails its probe (here: any divergence at all, forced) is abandoned: the decision
    says why, the warmup goes on in θ (the Trace has no map), and the gradients spent in z stay counted."""
    obj, fit = _fit()
    monkeypatch.setattr(ts, "DIVERGENCE_LIMIT", -1.0)  # every probe "diverges"
    post = _sample(obj, fit, 0, num_samples=200)
    acts = _actions(post)
    assert Action.TRANSPORT_KEPT in acts and Action.TRANSPORT_ABANDONED in acts, acts
    gone = next(d for d in post.info["decisions"] if Action.parse(d["action"]) is Action.TRANSPORT_ABANDONED)
    assert "transitions in z" in gone["message"] and gone["grad_evals"] > 0
    assert post.info["transport"] is None and "transport" not in post.extras
    ge = post.info["grad_evals"]
    assert ge["transport"] >= gone["grad_evals"] and post.num_grad_evals == sum(v for k, v in ge.items() if k != "map")


def test_a_handoff_carries_the_map_and_the_next_epoch_reuses_it(funnel_runs, tmp_path):
    """HandOff.from_trace keeps the map's arrays (saved and loaded with handoff.npz); gn.sample(init=bundle)
    runs in its z from the start — no training, no new compile (the map is data) — and reports base θ."""
    obj, _, posts = funnel_runs
    post = posts[0]
    bundle = gn.HandOff.from_trace(post)
    assert bundle.transport is not None and bundle.info["transport"]["hash"] == post.info["transport"]["hash"]
    bundle.save(tmp_path)
    loaded = gn.HandOff.load(tmp_path)
    assert set(loaded.transport) == set(bundle.transport)
    nxt = _sample(obj, loaded, 5, num_samples=300)
    acts = _actions(nxt)
    assert acts[0] is Action.TRANSPORT_REUSED and Action.TRANSPORT_KEPT not in acts, acts
    assert nxt.info["compile_s"] == 0.0  # the program of the first run, reused
    assert nxt.info["transport"]["reused"] is True and nxt.info["transport"]["hash"] == post.info["transport"]["hash"]
    th = np.asarray(nxt.theta, np.float64).reshape(-1, D)
    assert abs(th[:, 0].std() / V_SD - 1) < 0.2  # base θ (v), not z (whose sd is about 1)
    off = gn.sample(obj, loaded, jax.random.key(6), num_samples=10, progress=False,
                    warmup=gn.warmup(transport=False, num_steps=0))
    assert _actions(off)[0] is Action.TRANSPORT_REUSED  # a hand-off's map is its metric's coordinates: always used


def test_transport_option_is_checked():
    with pytest.raises(ValueError, match="transport must be True or False"):
        gn.warmup(transport="yes")


def test_a_map_that_does_not_normalise_is_a_health_problem():
    """Draws in z far from N(0, I) in a marginal (sd or skewness) are a finding naming the coordinate — the
    hierarchical regression's failure (log τ's tail unreached, sd 40 % low at R̂ 1.007) is then not silent; a
    standard normal of the same size, from any seed, is not flagged."""
    names = lambda i: f"θ[{i}]"  # noqa: E731
    for seed in range(5):
        z = np.random.default_rng(seed).normal(size=(4, 500, 6))
        assert ts.normality(z, names) == []
    rng = np.random.default_rng(9)
    z = rng.normal(size=(4, 500, 6))
    z[..., 1] = 1.0 - rng.exponential(size=(4, 500))  # skewness −2
    z[..., 4] *= 1.6
    (f,) = ts.normality(z, names)
    assert f["coordinates"] == [1, 4] and "z[1], paired with θ[1]" in f["message"] and "skewness -2" in f["message"]
    # a scale parent's z is its own marginal standardised: its skewness is not judged, its sd is
    (f,) = ts.normality(z, names, parents=[1])
    assert f["coordinates"] == [4]
    (f,) = ts.normality(z, names, parents=[4])
    assert f["coordinates"] == [1, 4]


def test_a_centred_numpyro_model_is_non_centred_by_the_stage():
    """Item 2 without the model's structure: inference-gym's centred eight schools written in numpyro (τ ~
    LogNormal(5, 1): a mode at log τ ≈ −3, deep in the neck), through from_numpyro with the defaults — the seed
    at the mode is rejected, the stage's map is kept (it contains numpyro's LocScaleReparam at every centring),
    and the pooled draws of two keys match a long run of the non-centred model (BlackJAX dense window
    adaptation, 4 × 10000 draws, min ESS 14259: benchmarks/sampling_references.json)."""
    import numpyro
    import numpyro.distributions as dist

    y = jnp.asarray([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = jnp.asarray([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def schools(sigma, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        tau = numpyro.sample("tau", dist.LogNormal(5.0, 1.0))
        with numpyro.plate("school", 8):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
            numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

    obj = gn.Objective.from_numpyro(schools, sigma, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = gn.optimize(obj, jnp.zeros(obj.dim), num_steps=500)
    posts = [_sample(obj, fit, k) for k in (0, 1)]
    for post in posts:
        assert Action.TRANSPORT_KEPT in _actions(post), post.info["decisions"]
    dts = [p.to_arviz(objective=obj).posterior for p in posts]
    log_tau = np.concatenate([np.log(np.asarray(d["tau"])).ravel() for d in dts])
    mu = np.concatenate([np.asarray(d["mu"]).ravel() for d in dts])
    th0 = np.concatenate([np.asarray(d["theta"])[..., 0].ravel() for d in dts])
    for x, (m, s) in ((mu, (5.788, 5.457)), (log_tau, (2.448, 0.512)), (th0, (14.70, 10.71))):
        assert abs(x.mean() - m) < 0.15 * s and abs(x.std() / s - 1) < 0.12, (x.mean(), x.std(), m, s)


def test_a_probe_that_diverges_is_retried_at_smaller_step_sizes(monkeypatch):
    """The probe in z diverging above the limit runs again at half the step size (up to PROBE_RETRIES times):
    the first step size that passes is the one sampling uses, and the decision says so; when none passes the
    reason to abandon names the retries. (A forced fake: 5 % of the transitions diverge above step size 0.3.)"""
    from types import SimpleNamespace
    from typing import Any, NamedTuple

    from gnomon.sampler.decisions import Ledger

    class DA(NamedTuple):
        log_step_size: Any
        log_step_size_avg: Any

    class Adapt(NamedTuple):
        da: Any
        step_size: Any
        imm: Any

    tried = []

    def fake_draw(ctx, chains, key, n, offset, threshold):
        step = float(chains.adapt.step_size)
        tried.append(step)
        div = np.zeros((n, 4), bool)
        if step > threshold:
            div[: n // 20] = True  # 5 %
        return chains, [SimpleNamespace(n_steps=np.full((n, 4), 3), diverging=div)]

    def run(threshold):
        tried.clear()
        monkeypatch.setattr(ts.ph, "draw", lambda *a: fake_draw(*a, threshold=threshold))
        monkeypatch.setattr(ts, "cat", lambda outs: outs[0])
        one = jnp.log(jnp.float32(1.0))
        adapt = Adapt(DA(one, one), jnp.float32(1.0), jnp.ones(3))
        chains = ts.ph.Chains(SimpleNamespace(position=jnp.zeros((4, 3))), adapt, None, None)
        ctx = SimpleNamespace(program=SimpleNamespace(adapt_final=lambda ad: (jnp.exp(ad.da.log_step_size_avg),
                                                                              ad.imm)), key=jax.random.key(0))
        ledger = Ledger()
        out, why = ts.probe(ctx, chains, ledger)
        return out, why, ledger

    out, why, ledger = run(0.3)
    assert why is None and tried == [1.0, 0.5, 0.25]
    assert np.isclose(float(jnp.exp(out.adapt.da.log_step_size_avg)), 0.25) and float(out.adapt.step_size) == 0.25
    (d,) = ledger.decisions
    assert d.action is Action.TRANSPORT_STEP_REDUCED and d.details["step_size"] == 0.25
    assert ledger.grads == 3 * 100 * 4 * 3  # every probe's leapfrog steps counted
    out, why, ledger = run(0.0)  # nothing passes: abandoned, the retries named
    assert len(tried) == ts.PROBE_RETRIES + 1 and "smaller step sizes" in why and not ledger.decisions
