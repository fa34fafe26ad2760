"""Host-side random draws of the sampler (starts, probes): reproducible from the key, with the distributions their
docstrings promise, and no program compiled for them (an eager jax.random call compiles one per shape)."""

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np

from gnomon.sampler.modes import probe_starts
from gnomon.sampler.starts import dispersed_starts
from gnomon.util.validate import host_rng


def test_host_rng_is_reproducible_per_key_and_differs_between_keys():
    a, b = jax.random.key(3), jax.random.fold_in(jax.random.key(3), 1)
    np.testing.assert_array_equal(host_rng(a).standard_normal(5), host_rng(a).standard_normal(5))
    assert not np.allclose(host_rng(a).standard_normal(5), host_rng(b).standard_normal(5))
    legacy = jax.random.PRNGKey(3)  # a raw uint32 key seeds the same generator as its typed form
    np.testing.assert_array_equal(host_rng(legacy).random(3), host_rng(jax.random.wrap_key_data(legacy)).random(3))


def test_probe_starts_are_antithetic_with_magnitudes_in_one_to_two_and_compile_nothing():
    compiled = []

    def listen(name, secs, **kw):
        if name.endswith("backend_compile_duration"):
            compiled.append(name)

    center = np.array([1.0, -2.0, 0.5])
    key = jax.random.key(7)
    jax.random.key_data(key)  # (the key's own creation is not the draw)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        s = probe_starts(center, key, 5)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiled == []
    r = s - center
    assert s.shape == (5, 3) and np.all((np.abs(r) >= 1.0) & (np.abs(r) <= 2.0))
    np.testing.assert_allclose(r[0], -r[1], rtol=1e-12)
    np.testing.assert_allclose(r[2], -r[3], rtol=1e-12)
    np.testing.assert_array_equal(s, probe_starts(center, key, 5))


def test_dispersed_starts_are_uniform_in_the_box_in_the_centres_dtype():
    center = jnp.array([0.0, 10.0], jnp.float32)
    s = np.asarray(dispersed_starts(center, jax.random.key(0), 4000, radius=2.0))
    assert dispersed_starts(center, jax.random.key(0), 3).dtype == jnp.float32
    u = s - np.asarray(center)
    assert np.all(np.abs(u) <= 2.0)
    np.testing.assert_allclose(u.mean(0), 0.0, atol=0.1)  # uniform(−2, 2): mean 0, sd 4/√12 = 1.155 (n = 4000)
    np.testing.assert_allclose(u.std(0), 4 / np.sqrt(12), rtol=0.05)
