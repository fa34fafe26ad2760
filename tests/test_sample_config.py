"""gn.sample's configuration objects, the depth-capped NUTS step and the typed compiled program."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.sampler import config as cfg
from gnomon.sampler import families as fam
from gnomon.sampler.loop import Aot, SamplerProgram, SamplerSettings, compiled
from gnomon.sampler.warmup import AdaptSettings

OBJ = gn.Objective.from_log_prob(lambda th: -0.5 * jnp.sum((th / jnp.asarray([1.0, 3.0], th.dtype)) ** 2), 2)


def test_options_given_to_the_wrong_object_name_their_home():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"max_tree_depth=5 belongs to the NUTS kernel: kernel=gn\.nuts"):
        gn.sample(OBJ, jnp.zeros(2), key, max_tree_depth=5)
    with pytest.raises(ValueError, match=r"curvature_method.*belongs to the warmup: warmup=gn\.warmup\(curvature"):
        gn.sample(OBJ, jnp.zeros(2), key, curvature_method="exact")
    with pytest.raises(ValueError, match=r"algorithm='hmc' belongs to gn\.sample\(\.\.\., kernel=\.\.\.\)"):
        gn.sample(OBJ, jnp.zeros(2), key, algorithm="hmc")
    with pytest.raises(ValueError, match=r"gn\.nuts does not take num_integration_steps=3 belongs to the HMC"):
        gn.nuts(num_integration_steps=3)
    with pytest.raises(ValueError, match=r"gn\.warmup does not take step_size=0\.1 belongs to the kernel"):
        gn.warmup(step_size=0.1)
    with pytest.raises(ValueError, match=r"gn\.hmc does not take metric='diag' belongs to the warmup"):
        gn.hmc(metric="diag")
    with pytest.raises(ValueError, match="'frobnicate' is not a sampler option"):
        gn.nuts(frobnicate=1)


def test_bad_values_and_shorthands():
    with pytest.raises(ValueError, match="max_tree_depth must be an int ≥ 1"):
        gn.nuts(max_tree_depth=0)
    with pytest.raises(ValueError, match=r"target_acceptance_rate must be a number in \(0, 1\), got 1\.5"):
        gn.hmc(target_acceptance_rate=1.5)
    with pytest.raises(ValueError, match="unknown metric 'full'"):
        gn.warmup(metric="full")
    with pytest.raises(ValueError, match="jitter must be a non-negative number"):
        gn.warmup(jitter=-1.0)
    assert fam.as_kernel("nuts") == gn.nuts() and fam.as_kernel("hmc") == gn.hmc()
    assert fam.as_kernel("mclmc") == gn.mclmc()
    with pytest.raises(ValueError, match="unknown kernel 'mala'"):
        fam.as_kernel("mala")
    assert cfg.as_warmup("low_rank") == gn.warmup(metric="low_rank") and cfg.as_warmup(None) == gn.warmup()
    with pytest.raises(ValueError, match=r"num_warmup=5 and warmup=gn\.warmup\(num_steps=7\) disagree"):
        gn.sample(OBJ, jnp.zeros(2), jax.random.key(0), num_warmup=5, warmup=gn.warmup(num_steps=7))


def test_the_seed_curvature_takes_one_name_per_concept():
    """gn.warmup(curvature=...) takes a method (with num_probes / hutchinson_mode), a Curvature or an array
    precision; each gives the metric seed that it says: an array is used as given (here one that is not the
    model's), "exact" is the closed form Σ = H⁻¹ of this Gaussian, Hutchinson is that within its noise."""
    h = np.array([1.0, 1 / 9.0])
    h_user = np.array([4.0, 0.25])
    cases = ((gn.warmup(curvature=h_user), 1 / h_user, 1e-6), (gn.warmup(curvature=np.diag(h_user)), 1 / h_user, 1e-6),
             (gn.warmup(curvature="exact"), 1 / h, 1e-5),
             (gn.warmup(curvature="hutchinson", num_probes=64, hutchinson_mode="plain"), 1 / h, 0.35))
    for w, expected, rtol in cases:
        post = gn.sample(OBJ, jnp.zeros(2), jax.random.key(0), num_samples=5, num_warmup=0, warmup=w, progress=False)
        seed = np.asarray(post.extras["seed_inverse_mass_matrix"])
        np.testing.assert_allclose(np.diag(seed) if seed.ndim == 2 else seed, expected, rtol=rtol)


def test_one_source_of_defaults():
    # the factories' docstrings quote the dataclasses' defaults: they must not drift apart
    defaults = fam.defaults()
    for fn, cls in ((gn.nuts, "NUTS"), (gn.hmc, "HMC"), (gn.mclmc, "MCLMC"), (gn.warmup, "Warmup")):
        quoted = dict(re.findall(r"(\w+)=([^,)]+)", fn.__doc__.split("``")[1]))
        assert set(quoted) == set(defaults[cls]), cls
        for name, text in quoted.items():
            assert text.strip('"') == str(defaults[cls][name]), (cls, name)
    assert fn() == cfg.Warmup()


def test_depth_capped_nuts_step_is_blackjax_at_full_depth():
    import blackjax
    from blackjax.mcmc import hmc

    from gnomon.sampler.protocol import StepParams

    def lp(x):
        return -0.5 * jnp.sum((x / jnp.arange(1.0, 6.0)) ** 2) - 0.1 * x[0] ** 4

    imm = jnp.arange(1.0, 6.0) ** 2
    theirs = jax.jit(lambda k, s: blackjax.nuts.build_kernel()(k, s, lp, 0.7, imm, max_num_doublings=10))
    step = gn.nuts().build_step()
    ours = jax.jit(lambda k, s, d: step(k, s, lp, StepParams(0.7, imm, d)))
    state = hmc.init(jnp.ones(5), lp)
    for i in range(4):
        k = jax.random.key(i)
        a, ia = theirs(k, state)
        b, ib = ours(k, state, 10)
        np.testing.assert_array_equal(np.asarray(a.position), np.asarray(b.position))
        assert int(ia.num_integration_steps) == int(ib.grad_evals)
        assert float(ia.acceptance_rate) == float(ib.acceptance_rate)
        assert int(ia.num_trajectory_expansions) == int(ib.extras["tree_depth"])
        _, ic = ours(k, state, 1)  # capped at one doubling: at most one leapfrog step
        assert int(ic.grad_evals) <= 1 and int(ic.extras["tree_depth"]) <= 1
        state = a


def test_compiled_program_is_typed_and_timed():
    st = SamplerSettings(gn.nuts(), AdaptSettings(False, False, False))
    prog = compiled(OBJ, st)
    assert isinstance(prog, SamplerProgram) and all(isinstance(f, Aot) for f in prog[:4]) and prog.tune is None
    assert compiled(OBJ, st) is prog  # cached per objective and settings
    kw = dict(num_chains=2, num_samples=200, inverse_mass_matrix=[1.0, 9.0])
    tr = gn.sample(OBJ, jnp.zeros(2), jax.random.key(1), **kw)
    again = gn.sample(OBJ, jnp.zeros(2), jax.random.key(2), **kw)
    assert tr.info["compile_s"] > 0 and tr.info["run_s"] > 0
    assert again.info["compile_s"] == 0.0  # the same objective and settings: nothing compiles again
    # the first step size and the target acceptance rate are arguments: changing them compiles nothing, and the
    # adaptation follows the target (a higher target, a smaller step size)
    hi = gn.sample(OBJ, jnp.zeros(2), jax.random.key(2), kernel=gn.nuts(target_acceptance_rate=0.95, step_size=0.3),
                   **kw)
    assert hi.info["compile_s"] == 0.0 and hi.info["target_acceptance_rate"] == 0.95
    assert hi.info["step_size"] < again.info["step_size"]
    assert tr.runtime_s == pytest.approx(tr.info["compile_s"] + tr.info["run_s"], rel=1e-6)


def test_one_home_per_value_and_its_aliases():
    """The warmup's length and the metric seed live in gn.warmup(...); gn.sample's num_warmup= and
    inverse_mass_matrix= (the architecture page's call form) are aliases that fill those homes — the same run —
    and the two spellings given with different values are an error naming the home."""
    kw = dict(num_chains=2, num_samples=30, progress=False)
    key = jax.random.key(3)
    a = gn.sample(OBJ, jnp.zeros(2), key, num_warmup=40, inverse_mass_matrix=[1.0, 9.0], **kw)
    b = gn.sample(OBJ, jnp.zeros(2), key, warmup=gn.warmup(num_steps=40, inverse_mass_matrix=[1.0, 9.0]), **kw)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.info["num_warmup"] == 40 and a.info["metric"]["seed"] == "array"
    with pytest.raises(ValueError, match=r"both give the metric seed; give one \(the home is gn\.warmup\("
                                         r"inverse_mass_matrix=\.\.\.\)"):
        gn.sample(OBJ, jnp.zeros(2), key, inverse_mass_matrix=None, warmup=gn.warmup(inverse_mass_matrix=[1.0, 2.0]))
    with pytest.raises(ValueError, match=r"the home is gn\.warmup\(num_steps=\.\.\.\); num_warmup= is its alias"):
        gn.sample(OBJ, jnp.zeros(2), key, num_warmup=5, warmup=gn.warmup(num_steps=7))
    # a Curvature as inverse_mass_matrix= is an alias of its home, gn.warmup(curvature=...)
    curv = gn.estimate_curvature(OBJ, jnp.zeros(2), method="exact")
    c1 = gn.sample(OBJ, jnp.zeros(2), key, num_warmup=0, inverse_mass_matrix=curv, **kw)
    c2 = gn.sample(OBJ, jnp.zeros(2), key, num_warmup=0, warmup=gn.warmup(curvature=curv), **kw)
    np.testing.assert_array_equal(c1.theta, c2.theta)
    np.testing.assert_allclose(c1.extras["seed_inverse_mass_matrix"], [1.0, 9.0], rtol=1e-5)
    with pytest.raises(ValueError, match="unknown inverse_mass_matrix 'fisher'"):
        gn.warmup(inverse_mass_matrix="fisher")
