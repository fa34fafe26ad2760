"""The one home of argument validation: PRNG keys, positive integers, fractions, positive numbers.

Each validator returns the value in the one form the library uses and raises ``ValueError`` naming the
argument, the bad value and what was expected::

    as_key(0)                          # jax.random.key(0)
    as_key(jax.random.PRNGKey(0))      # a legacy uint32 (2,) key, wrapped: jax.random.wrap_key_data(...)
    positive_int(num_chains, "num_chains")            # an int ≥ 1 (bool refused)
    positive_int(num_warmup, "num_warmup", minimum=0) # an int ≥ 0
    fraction(target, "target_accept")                 # a float in the open interval (0, 1)
    positive_float(floor, "floor")                    # a finite float > 0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_DEFAULT_KEY: list = []


def default_key() -> Any:
    """``jax.random.key(0)``, made once (creating a key costs a dispatch)."""
    if not _DEFAULT_KEY:
        import jax

        _DEFAULT_KEY.append(jax.random.key(0))
    return _DEFAULT_KEY[0]


def host_rng(key: Any) -> Any:
    """A numpy ``Generator`` seeded by a (concrete) JAX key's bits, for random numbers drawn on the host: an eager
    ``jax.random.uniform``/``normal``/``bernoulli`` outside a compiled program compiles a program of its own for
    each shape (0.4–0.6 s each on a 2-core CPU — most of what a first ``gn.sample`` spent on its starts); this
    costs nothing and is as reproducible (the same key gives the same numbers)."""
    import jax
    import numpy as np

    return np.random.default_rng(np.asarray(jax.random.key_data(key), np.uint32).ravel().tolist())


def as_key(key: Any, name: str = "key", *, optional: bool = False) -> Any:
    """One typed PRNG key from a typed key (``jax.random.key(seed)``), an int seed, or a legacy uint32 ``(2,)``
    key (``jax.random.PRNGKey(seed)``, wrapped with ``jax.random.wrap_key_data``: the same random bits).

    ``None`` is :func:`default_key` when ``optional``, else refused. A key array (several keys), a bool, a float
    or any other value is a ValueError naming it."""
    import jax
    import jax.numpy as jnp

    if key is None:
        if optional:
            return default_key()
        raise ValueError(f"{name} is required: pass jax.random.key(seed) or an int seed")
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    shape = tuple(np.shape(key)) if dtype is not None else None
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if shape != ():
            raise ValueError(f"{name} must be one PRNG key, got a key array of shape {shape} (keys for chains or "
                             "members are split from one key: pass jax.random.key(seed))")
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and shape == (2,):
        return jax.random.wrap_key_data(jnp.asarray(key))
    what = f"an array of dtype {np.dtype(dtype)} and shape {shape}" if dtype is not None else repr(key)
    raise ValueError(f"{name} must be a jax PRNG key (jax.random.key(seed)), an int seed or a legacy uint32 (2,) "
                     f"key (jax.random.PRNGKey(seed)); got {what}")


def positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum`` (an integral Python or numpy int; bools and floats refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int ≥ {minimum}, got {value!r}")
    return int(value)


def fraction(value: Any, name: str, *, closed: bool = False) -> float:
    """``value`` as a float in the open interval (0, 1) (``closed``: [0, 1]); NaN, bools and non-numbers
    refused."""
    v = _number(value)
    inside = (0.0 <= v <= 1.0) if closed else (0.0 < v < 1.0)
    if not inside:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return v


def positive_float(value: Any, name: str) -> float:
    """``value`` as a finite float > 0 (a Python or numpy int or float); NaN, ±inf, bools and non-numbers
    refused."""
    v = _number(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _number(value: Any) -> float:
    """``float(value)`` of a Python or numpy int or float; NaN for a bool or anything else."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    return float(value) if ok else math.nan
