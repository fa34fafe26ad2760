"""The kernel protocol: NUTS, HMC and MCLMC (MAMS) as entries, a user's own kernel plugged in without editing
gnomon, every gradient counted, the gradient at each draw in the loop's outputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.sampler.decisions import Action, SampleStatus
from gnomon.sampler.protocol import StepParams, StepStats, Tuning, check_family

SD = np.geomspace(0.5, 5.0, 10)
MU = np.linspace(-1.0, 1.0, 10)
GAUSS10 = gn.Objective.from_log_prob(
    lambda th: -0.5 * jnp.sum(((th - jnp.asarray(MU, th.dtype)) / jnp.asarray(SD, th.dtype)) ** 2), 10
)


@pytest.fixture(scope="module")
def mclmc_runs():
    fit = gn.optimize(GAUSS10, jnp.zeros(10), "lbfgs", num_steps=100)
    return fit, [gn.sample(GAUSS10, init=fit, key=k, kernel=gn.mclmc(), num_samples=500) for k in range(3)]


def test_mclmc_samples_a_gaussian_of_scales_half_to_five(mclmc_runs):
    """The issue's bar: sds 0.5–5, pooled over keys, mean within 0.15 sd and sd within 10 % (the Monte Carlo
    error of 6000 draws is about 0.015 sd and 1 %: the margin is for the machine, not the sampler)."""
    _, runs = mclmc_runs
    draws = np.concatenate([np.asarray(r.theta, np.float64).reshape(-1, 10) for r in runs])
    assert np.all(np.abs(draws.mean(0) - MU) < 0.15 * SD)
    assert np.all(np.abs(draws.std(0) / SD - 1) < 0.10)
    for r in runs:
        assert r.info["engine"] == "mclmc" and r.info["kernel"]["tuning"] == "own"
        assert r.status == "sampled" and r.info["status_code"] is SampleStatus.SAMPLED
        actions = [d["action"] for d in r.info["decisions"]]
        assert actions == [Action.SEED_KEPT, Action.KERNEL_TUNED]
        check = r.info["decisions"][0]["check"]
        assert check["cost_judged"] is False and "cost per draw not judged" in r.info["decisions"][0]["message"]
        # the seed was right (a Gaussian's curvature is its precision): the whitened variances stay near 1
        tuned = r.info["decisions"][1]
        assert tuned["grad_evals"] > 0 and len(tuned["chain_step_size"]) == 4
        # one run's tuning variance estimates scatter by about 14 % (≈ 100 effective draws): a wrong seed is off by
        # more than 50 %; pooled over the keys they are within 25 % (3 standard errors)
        np.testing.assert_allclose(r.extras["inverse_mass_matrix"] / SD**2, 1.0, rtol=0.5)
    pooled = np.mean([r.extras["inverse_mass_matrix"] / SD**2 for r in runs], axis=0)
    np.testing.assert_allclose(pooled, 1.0, rtol=0.25)


def test_mclmc_statistics_and_costs(mclmc_runs):
    _, runs = mclmc_runs
    r = runs[0]
    assert set(r.stats) == {"acceptance_rate", "diverging", "n_steps", "step_size", "num_integration_steps"}
    # McLachlan's isokinetic integrator: two gradients per integration step; every one counted
    np.testing.assert_array_equal(r.stats["n_steps"], 2 * r.stats["num_integration_steps"])
    ge = r.info["grad_evals"]
    assert ge["sampling"] == int(np.sum(r.stats["n_steps"])) and ge["warmup"] > 0
    assert r.num_grad_evals == sum(v for k, v in ge.items() if k != "map")
    # the random trajectory length averages the kernel's num_integration_steps
    assert abs(float(np.mean(r.stats["num_integration_steps"])) - 2.0) < 0.2
    assert r.info["health"]["ebfmi"] is None and "not applicable" in r.info["health"]["ebfmi_note"]


def test_mclmc_exports_to_arviz_like_nuts(mclmc_runs):
    fit, runs = mclmc_runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 50 draws: R̂ above 1.01 is said, rightly
        nuts = gn.sample(GAUSS10, init=fit, key=0, num_samples=50)
    ours = set(runs[0].to_arviz()["sample_stats"].data_vars)
    theirs = set(nuts.to_arviz()["sample_stats"].data_vars)
    common = {"lp", "acceptance_rate", "diverging", "n_steps", "step_size"}
    assert common <= ours and common <= theirs
    assert ours - common == {"num_integration_steps"} and theirs - common == {"energy", "tree_depth"}
    assert gn.sampling_summary(runs[0])["kernel"] == "mclmc"


def test_a_handoff_between_families_resets_the_step_size(mclmc_runs):
    _, runs = mclmc_runs
    h = gn.HandOff.from_trace(runs[0])
    warnings.simplefilter("ignore")  # 50 draws: R̂ above 1.01 is said, rightly (pytest restores the filters)
    nuts = gn.sample(GAUSS10, h, jax.random.key(5), num_chains=4, num_samples=50)
    reset = [d for d in nuts.info["decisions"] if d["action"] is Action.STEP_SIZE_RESET]
    assert len(reset) == 1 and "not a nuts step size" in reset[0]["message"]
    assert nuts.info["initial_step_size"] == 1.0 and nuts.info["metric"]["seed"] == "handoff"
    again = gn.sample(GAUSS10, h, jax.random.key(6), kernel="mclmc", num_samples=50)
    assert again.info["initial_step_size"] == pytest.approx(h.step_size)


def test_the_dense_mclmc_path_is_the_diagonal_one():
    """A dense metric is applied by whitening with its Cholesky factor: for a diagonal matrix given dense, the
    same transition as BlackJAX's diagonal one, up to rounding."""
    from blackjax.mcmc import hmc

    def lp(x):
        return -0.5 * jnp.sum((x / jnp.arange(1.0, 6.0)) ** 2) - 0.05 * x[0] ** 4

    v = jnp.arange(1.0, 6.0) ** 2
    step = jax.jit(gn.mclmc(num_integration_steps=4.0).build_step(), static_argnums=2)
    state = hmc.init(jnp.ones(5), lp)
    for i in range(3):
        k = jax.random.key(i)
        a, ia = step(k, state, lp, StepParams(jnp.float32(1.5), v, jnp.int32(0)))
        b, ib = step(k, state, lp, StepParams(jnp.float32(1.5), jnp.diag(v), jnp.int32(0)))
        np.testing.assert_allclose(np.asarray(a.position), np.asarray(b.position), rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(np.asarray(a.logdensity_grad), np.asarray(b.logdensity_grad), rtol=2e-3, atol=1e-4)
        assert float(ia.acceptance_rate) == pytest.approx(float(ib.acceptance_rate), rel=1e-3, abs=1e-4)
        assert int(ia.grad_evals) == int(ib.grad_evals) == 2 * int(ia.extras["num_integration_steps"])
        state = a


@pytest.mark.parametrize("kernel", ["nuts", "hmc", "mclmc"])
def test_every_log_density_evaluation_is_counted(kernel):
    """A host callback counts the evaluations the compiled programs really make: ``num_grad_evals`` is that
    count (one chain, so no vmapped loop runs masked steps; an array seed, so no curvature)."""
    calls = [0]

    def bump(x):
        calls[0] += int(np.asarray(x).size // 3)

    def lp(th):
        jax.debug.callback(bump, th)
        return -0.5 * jnp.sum((th / jnp.asarray([1.0, 2.0, 0.5], th.dtype)) ** 2)

    obj = gn.Objective.from_log_prob(lp, 3)
    kw = dict(num_chains=1, num_samples=60, num_warmup=60, inverse_mass_matrix=np.ones(3), kernel=kernel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one chain: no R̂
        gn.sample(obj, jnp.full(3, 0.3), 0, **kw)  # compile (tracing runs no callback)
        calls[0] = 0
        tr = gn.sample(obj, jnp.full(3, 0.3), 1, **kw)
    jax.effects_barrier()
    assert calls[0] == tr.num_grad_evals, tr.info["grad_evals"]


def test_chunk_outputs_carry_the_gradient_at_each_draw():
    """``ChunkOut.grad`` is ∇ log p at the draw — the state's, not re-evaluated — for a transport stage."""
    from gnomon.sampler.loop import ChunkArgs, SamplerSettings, compiled, run_chunks
    from gnomon.sampler.warmup import AdaptSettings

    prog = compiled(GAUSS10, SamplerSettings(gn.nuts(), AdaptSettings(False, False, False)))
    states = prog.init(jnp.zeros((2, 10)), GAUSS10.data)
    ad = prog.adapt_init(states.position, jnp.float32(0.5), jnp.ones(10))
    args = ChunkArgs(GAUSS10.data, jnp.ones(10), jnp.ones(10), jnp.float32(0.0), jnp.float32(0.8))
    (chunk,) = run_chunks(prog, SamplerSettings(gn.nuts(), AdaptSettings(False, False, False)), states, ad,
                          jax.random.key(0), 0, np.zeros((7, 2), np.int32), adapting=False, depth=10,
                          estimator=3, args=args)
    out = chunk.out
    assert out.grad.shape == (7, 2, 10)
    want = jax.vmap(jax.vmap(jax.grad(GAUSS10.log_prob)))(jnp.asarray(out.theta))
    np.testing.assert_allclose(out.grad, np.asarray(want), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ a user's kernel
class RWState(NamedTuple):
    position: Any
    logdensity: Any
    logdensity_grad: Any


@dataclass(frozen=True)
class RandomWalk:
    """Random-walk Metropolis with proposals ``θ + ε L ξ`` (``L Lᵀ = M⁻¹``), written against the protocol only."""

    target_acceptance_rate: float = 0.3
    step_size: float | None = None
    name: ClassVar[str] = "rwm"
    extra_stats: ClassVar[tuple[str, ...]] = ("jump",)
    has_energy: ClassVar[bool] = False
    max_tree_depth: ClassVar[None] = None
    tuning: ClassVar[Tuning] = Tuning.WINDOWS

    def init(self, position, logdensity):
        lp, g = jax.value_and_grad(logdensity)(position)
        return RWState(position, lp, g)

    def build_step(self):
        def step(key, state, logdensity, params: StepParams):
            k_prop, k_acc = jax.random.split(key)
            xi = jax.random.normal(k_prop, state.position.shape, state.position.dtype)
            imm = params.inverse_mass_matrix
            move = jnp.linalg.cholesky(imm) @ xi if imm.ndim == 2 else jnp.sqrt(imm) * xi
            prop = state.position + params.step_size * move
            lp, g = jax.value_and_grad(logdensity)(prop)
            acc = jnp.where(jnp.isfinite(lp), jnp.minimum(1.0, jnp.exp(lp - state.logdensity)), 0.0)
            take = jax.random.uniform(k_acc, dtype=acc.dtype) < acc
            new = jax.tree.map(lambda a, b: jnp.where(take, a, b), RWState(prop, lp, g), state)
            stats = StepStats(acc, jnp.zeros((), bool), jnp.full((), jnp.nan, acc.dtype), jnp.int32(1),
                              {"jump": params.step_size * jnp.linalg.norm(xi) * take})
            return new, stats

        return step

    def initial_step_size(self, dim):
        return 2.38 / dim**0.5

    def expected(self, dim):
        return None


def test_a_users_kernel_plugs_in_without_editing_gnomon(tmp_path):
    cov = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 9.0]])
    prec = np.linalg.inv(cov)
    obj = gn.Objective.from_log_prob(lambda th: -0.5 * th @ jnp.asarray(prec, th.dtype) @ th, 3)
    post = gn.sample(obj, jnp.full(3, 0.5), 0, kernel=RandomWalk(), num_samples=2000)
    assert post.info["engine"] == "rwm" and set(post.stats) == {"acceptance_rate", "diverging", "n_steps",
                                                                  "step_size", "jump"}
    assert abs(float(np.mean(post.stats["acceptance_rate"])) - 0.3) < 0.1  # the windows tuned its step size
    assert np.all(post.stats["n_steps"] == 1) and post.info["grad_evals"]["sampling"] == 4 * 2000
    seed = post.info["decisions"][0]
    assert seed["action"] is Action.SEED_KEPT and seed["check"]["cost_judged"] is False
    import arviz_stats as azs

    th = np.asarray(post.theta, np.float64)
    ess = np.asarray(azs.ess(th, chain_axis=0, draw_axis=1, method="bulk"))
    assert np.all(ess > 100)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(th.reshape(-1, 3).mean(0)) < 5 * sd / np.sqrt(ess))
    assert np.all(np.abs(th.reshape(-1, 3).std(0) / sd - 1) < 5 * np.sqrt(1 / (2 * ess)) + 0.02)
    assert "jump" in post.to_arviz()["sample_stats"].data_vars
    run = gn.load_run(gn.HandOff.from_trace(post).save_run(tmp_path / "rwm", post))
    assert run.summary["kernel"] == "rwm" and run.meta is not None


def test_a_kernel_that_misses_part_of_the_protocol_is_named():
    class Half:
        name = "half"

        def init(self, position, logdensity):
            return None

    with pytest.raises(ValueError, match=r"lacks target_acceptance_rate, step_size, .*build_step"):
        gn.sample(GAUSS10, jnp.zeros(10), 0, kernel=Half())
    with pytest.raises(ValueError, match="extra_stats .*'step_size'.* clash"):
        check_family(_Clash())
    with pytest.raises(ValueError, match="must be hashable"):
        check_family(_Unhashable())


@dataclass(frozen=True)
class _Clash(RandomWalk):
    extra_stats: ClassVar[tuple[str, ...]] = ("step_size",)


@dataclass(frozen=True, eq=True, unsafe_hash=False)
class _Unhashable(RandomWalk):
    __hash__ = None  # type: ignore[assignment]
