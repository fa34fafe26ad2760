"""One cache home (gnomon.util.programs) and one validation module (gnomon.util.validate).

Public means only for the engines: ``gn.clear_caches()``, ``trace.info["compile_s"]`` and a tracing counter in
the user's function. Deleting an objective and its loss frees what the loss captured (a weak reference to the
captured array proves it); nothing a user passed outlives ``del`` + ``gn.clear_caches()``; a second call with
the same functions compiles nothing.
"""

from __future__ import annotations

import gc
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.util.programs import ProgramCache, weak_key
from gnomon.util.validate import as_key, fraction, positive_int

MB8 = 1_000_000  # float64 entries of an 8 MB array


def _captured_loss(n: int = MB8):
    """A loss whose closure captures an 8 MB array (as a model's data or a lookup table would); returns the loss
    and a weak reference to the array."""
    big = jnp.asarray(np.linspace(0.0, 1.0, n))
    scale = 1.0 + 1e-9 * jnp.sum(big)

    def loss(th):
        return scale * jnp.sum((th - 1.0) ** 2) + 0.0 * big[:2].sum()

    return loss, weakref.ref(big)


def _gone(ref: weakref.ref) -> bool:
    gc.collect()
    return ref() is None


@pytest.mark.parametrize("run", ["gd", "preconditioned_gd", "lbfgs", "batch", "simple_gd", "curvature"])
def test_deleting_the_objective_frees_what_its_loss_captured(run):
    """The issue's failure: an 8 MB array captured by a loss stayed alive in the optimizer's program cache after
    the user deleted everything. Now the caches hold the user's functions weakly: ``del`` alone frees it."""
    loss, ref = _captured_loss()
    obj = gn.Objective.from_loss(loss, 3)
    x0 = jnp.zeros(3)
    if run == "batch":
        out = gn.optimize_batch(obj, jnp.zeros((2, 3)), "gd", learning_rate=0.1, num_steps=5)
    elif run == "simple_gd":
        out = gn.run_simple_gd(loss, x0, 0.1, 5)
    elif run == "curvature":
        out = gn.estimate_curvature(obj, x0, method="hutchinson", num_probes=4)
    else:
        out = gn.optimize(obj, x0, run, num_steps=5, **({"learning_rate": 0.1} if run == "gd" else {}))
    assert not _gone(ref)  # the user still holds it
    del obj, out, loss
    assert _gone(ref)


def _captured_predict():
    """A forward model capturing an 8 MB table, and Gaussian data; weak references to both arrays."""
    table = jnp.asarray(np.linspace(0.0, 1.0, MB8))
    data = {"y": jnp.asarray([3.0, 5.0, 4.0]), "sigma": jnp.ones(3)}

    def predict(th):
        return th + 0.0 * table[:3].sum()

    return predict, data, [weakref.ref(table), weakref.ref(data["y"])]


def test_sampling_and_bound_data_are_freed_too():
    """The sampler's programs, the curvature seed of its metric and a likelihood's bound data: after ``del``
    nothing stays, without clearing anything."""
    predict, data, refs = _captured_predict()
    obj = gn.Objective.from_likelihood(predict, data, "gaussian", 3)
    fit = gn.optimize(obj, jnp.zeros(3), "lbfgs", num_steps=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = gn.sample(obj, fit, 0, num_chains=2, num_samples=20, warmup=gn.warmup(num_steps=30, check=False))
    np.testing.assert_allclose(fit.final_theta, [3.0, 5.0, 4.0], atol=1e-3)
    assert post.theta.shape == (2, 20, 3)
    del obj, fit, post, predict, data
    assert all(_gone(r) for r in refs)


def test_a_numpyro_objective_is_its_own_key_and_is_freed():
    numpyro = pytest.importorskip("numpyro")
    import numpyro.distributions as dist

    y = jnp.asarray(np.linspace(-1.0, 1.0, MB8 // 10))
    ref = weakref.ref(y)

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    obj = gn.Objective.from_numpyro(model, y)
    first = gn.optimize(obj, jnp.zeros(1), "lbfgs", num_steps=20)
    again = gn.optimize(obj, jnp.zeros(1), "lbfgs", num_steps=20)
    assert first.info["compile_s"] > 0 and again.info["compile_s"] == 0  # one objective, one compilation
    np.testing.assert_allclose(again.final_theta, [float(np.mean(y))], atol=1e-4)
    del obj, first, again, y
    assert _gone(ref)


def test_a_second_call_compiles_nothing_and_clear_caches_frees_everything():
    """Objectives rebuilt from the same function, or bound to other data, share the compiled programs (no
    trace of the user's function, no compilation). While the user keeps the function, its programs stay;
    ``gn.clear_caches()`` frees them (and the arrays they hold), and the next call compiles again."""
    traced = {"n": 0}
    counted, ref = _counted_loss(traced)

    def fit(fn, data):
        obj = gn.Objective.from_loss(fn, 3, data=data)
        return gn.optimize(obj, jnp.zeros(3), "preconditioned_gd", num_steps=5)

    first = fit(counted, jnp.ones(3))
    assert traced["n"] > 0 and first.info["compile_s"] > 0
    traced["n"] = 0
    second = fit(counted, 2 * jnp.ones(3))  # a new objective, new data of the same shape: nothing traced or compiled
    assert traced["n"] == 0 and second.info["compile_s"] == 0
    assert not np.allclose(first.final_theta, second.final_theta)  # the data is an argument, not a constant
    del first, second
    assert not _gone(ref)  # the user keeps `counted`: its programs are kept for the next call
    gn.clear_caches()
    third = fit(counted, jnp.ones(3))
    assert traced["n"] > 0 and third.info["compile_s"] > 0
    del counted, third
    gn.clear_caches()
    assert _gone(ref)


def _counted_loss(traced: dict):
    loss, ref = _captured_loss()

    def counted(th, d):
        traced["n"] += 1
        return loss(th) + jnp.sum(d * th)

    return counted, ref


# ------------------------------------------------------------------------------------- the cache itself
def test_program_cache_keys_hold_functions_weakly_and_values_by_value():
    cache = ProgramCache("test", maxsize=2)

    def f():
        return 1

    layout_a, layout_b = gn.Layout({"a": (2,)}), gn.Layout({"a": (2,)})
    cache.put((f, layout_a, 3), "program")
    assert cache.get((f, layout_b, 3)) == "program"  # a value-hashed leaf: equal layouts share
    assert cache.get((f, layout_b, 4)) is None and cache.get((lambda: 1, layout_a, 3)) is None
    _, anchors = weak_key((f, layout_a, 3))
    assert anchors == [f]
    del f, anchors
    gc.collect()
    assert len(cache) == 0  # the function is gone: so is its entry
    keep = [(lambda i=i: i) for i in range(3)]
    for i, g in enumerate(keep):
        cache.put((g,), i)
    assert len(cache) == 2 and cache.get((keep[0],)) is None and cache.get((keep[2],)) == 2  # LRU, maxsize 2
    gn.clear_caches()
    assert len(cache) == 0


def test_program_cache_bound_methods_are_weak_in_their_object():
    cache = ProgramCache("test methods", maxsize=4)

    class Model:
        def mean(self, th):
            return th

    m = Model()
    cache.put((m.mean,), "p")
    assert cache.get((m.mean,)) == "p"  # a new bound-method object each time, the same method
    del m
    gc.collect()
    assert len(cache) == 0


# --------------------------------------------------------------------------------------------- validation
def test_one_key_parser_for_every_engine():
    bits = np.asarray(jax.random.key_data(jax.random.key(5)))
    for given in (5, np.int64(5), jax.random.key(5), jax.random.PRNGKey(5)):
        key = as_key(given)
        assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
        np.testing.assert_array_equal(np.asarray(jax.random.key_data(key)), bits)
    assert as_key(None, optional=True) is as_key(None, optional=True)
    for bad, says in [
        (True, "got True"),
        (1.5, "got 1.5"),
        ("0", "got '0'"),
        (jax.random.split(jax.random.key(0), 3), r"one PRNG key, got a key array of shape \(3,\)"),
        (np.zeros(3, np.uint32), r"dtype uint32 and shape \(3,\)"),
        (None, "key is required"),
    ]:
        with pytest.raises(ValueError, match=says):
            as_key(bad)


def test_legacy_and_typed_keys_give_the_same_run_in_both_engines():
    """The optimizer wrapped a legacy uint32 key, the sampler kept it raw: one parser now, the same bits."""
    obj = gn.Objective.from_loss(lambda th: jnp.sum(jnp.arange(1.0, 4.0) * th**2), 3)
    runs = [gn.optimize(obj, jnp.ones(3), "preconditioned_gd", curvature="hutchinson", num_steps=5, key=k)
            for k in (7, jax.random.key(7), jax.random.PRNGKey(7))]
    for tr in runs[1:]:
        np.testing.assert_array_equal(tr.theta, runs[0].theta)
    with pytest.raises(ValueError, match="legacy uint32"):
        gn.optimize(obj, jnp.ones(3), "gd", learning_rate=0.1, num_steps=2, key=1.0)


def test_positive_int_and_fraction_name_the_bad_value():
    assert positive_int(3, "n") == 3 and positive_int(np.int32(0), "n", minimum=0) == 0
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=rf"num_chains must be an int ≥ 1, got {bad!r}"):
            positive_int(bad, "num_chains")
    assert fraction(0.8, "target") == 0.8 and fraction(1, "f", closed=True) == 1.0
    for bad in (0.0, 1.0, -0.1, float("nan"), True, "0.5", None):
        with pytest.raises(ValueError, match=r"target must be a number in \(0, 1\), got"):
            fraction(bad, "target")
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1.5"):
        fraction(1.5, "f", closed=True)
