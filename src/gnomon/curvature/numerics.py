r"""Curvature numerics: pure, jittable estimators of Hessian/Gauss–Newton diagonals and their safeguards.

The driver (:func:`gnomon.estimate_curvature`, :mod:`gnomon.curvature.estimate`) plans, compiles and packages
these; the module docstring there states the mathematics of each method. The expected Fisher of likelihood
objectives is in :mod:`gnomon.curvature.fisher`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def hvp(f: Callable, theta: Any, v: Any) -> jnp.ndarray:
    """Hessian-vector product ``∇²f(θ) v`` by forward-over-reverse differentiation (cost: 2 gradients)."""
    return jax.jvp(jax.grad(f), (theta,), (v,))[1]


def _default_batch(dim: int) -> int:
    return dim if dim <= 512 else 128


def exact_diag(f: Callable, theta: Any, batch_size: int | None = None) -> jnp.ndarray:
    """``diag ∇²f(θ)`` from D HVPs with basis vectors (jittable; cost 2D)."""
    d = theta.shape[-1]

    def one(i):
        e = jnp.zeros_like(theta).at[i].set(1)
        return hvp(f, theta, e)[i]

    return jax.lax.map(one, jnp.arange(d), batch_size=batch_size or _default_batch(d))


def exact_matrix(f: Callable, theta: Any, batch_size: int | None = None) -> jnp.ndarray:
    """The Hessian ``∇²f(θ)`` from D HVPs (symmetrised; cost 2D)."""
    d = theta.shape[-1]
    cols = jax.lax.map(
        lambda e: hvp(f, theta, e), jnp.eye(d, dtype=theta.dtype), batch_size=batch_size or _default_batch(d)
    )
    return 0.5 * (cols + cols.T)


def finite_difference_step(theta: Any) -> jnp.ndarray:
    r"""Per-coordinate step of the central differences: :math:`h_i = ε^{1/3} \max(|θ_i|, 1)` (ε the dtype's
    machine epsilon; the step that balances truncation and rounding error for a unit-scale coordinate)."""
    eps = float(jnp.finfo(theta.dtype).eps)
    return eps ** (1.0 / 3.0) * jnp.maximum(jnp.abs(theta), 1.0)


def finite_difference_hessian(grad: Callable, theta: Any, dense: bool, batch_size: int | None = None):
    r"""The Hessian from central differences of the gradient, :math:`H e_i ≈ (g(θ + h_i e_i) - g(θ - h_i e_i))
    / (2 h_i)` (:func:`finite_difference_step`; the difference of the rounded points is used as the step).

    Reverse mode only: finite where the gradient is, even when forward-over-reverse derivatives are not (a model
    whose HVPs are NaN). Returns ``(diag, matrix | None)``; the matrix is symmetrised. Cost 2D gradients."""
    d = theta.shape[-1]
    h = finite_difference_step(theta)

    def column(i):
        e = jnp.zeros_like(theta).at[i].set(h[i])
        up, down = theta + e, theta - e
        return (grad(up) - grad(down)) / (up[i] - down[i])

    bs = batch_size or _default_batch(d)
    if dense:
        cols = jax.lax.map(column, jnp.arange(d), batch_size=bs)
        m = 0.5 * (cols + cols.T)
        return jnp.diagonal(m), m
    return jax.lax.map(lambda i: column(i)[i], jnp.arange(d), batch_size=bs), None


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype=dtype)


def hutchinson_plain(f: Callable, theta: Any, key: Any, num_probes: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Plain Hutchinson: mean and standard error of ``z ⊙ Hz`` over Rademacher probes (cost 2k)."""
    z = _rademacher(key, (num_probes, theta.shape[-1]), theta.dtype)
    s = z * jax.vmap(lambda v: hvp(f, theta, v))(z)
    return s.mean(0), _stderr(s)


def _stderr(samples: jnp.ndarray) -> jnp.ndarray:
    k = samples.shape[0]
    if k < 2:
        return jnp.abs(samples[0])
    return jnp.std(samples, axis=0, ddof=1) / math.sqrt(k)


def hutchinson_scaled(
    f: Callable, theta: Any, key: Any, num_probes: int, scale: Any
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Hutchinson with probes ``v = z / √scale``: unbiased, relative variance ≈ Σ_j C_ij²/k when
    ``scale ≈ diag H`` (C = correlation matrix of H). Returns mean and standard error (cost 2k)."""
    p = jax.lax.rsqrt(scale)
    z = _rademacher(key, (num_probes, theta.shape[-1]), theta.dtype) * p
    s = z * jax.vmap(lambda v: hvp(f, theta, v))(z) / (p * p)
    return s.mean(0), _stderr(s)


def hutchinson_rounds(num_probes: int) -> tuple[int, ...]:
    """Probe counts per round of the variance-reduced estimator (¼, ¼, ½; at least 2 each)."""
    if num_probes < 6:
        return (num_probes,)
    q = max(2, num_probes // 4)
    return (q, q, num_probes - 2 * q)


def hutchinson_variance_reduced(
    f: Callable, theta: Any, key: Any, num_probes: int, scale: Any = None
) -> jnp.ndarray:
    """Variance-reduced Hutchinson: rounds of probes rescaled by the previous round's estimate.

    The first round is plain (or scaled by ``scale`` when a previous estimate is given); each later round
    scales its probes by ``max(|estimate|, stderr)`` of the round before and the last round is returned.

    The rounds run as one ``fori_loop`` over equal chunks of probes (the greatest common divisor of the round
    sizes), so the Hessian-vector product — the whole model, differentiated forward over reverse — is
    compiled once, not once per round (measured: a 3× longer compile for a heavy model otherwise)."""
    rounds = hutchinson_rounds(num_probes)
    keys = jax.random.split(key, len(rounds))
    if len(rounds) == 1:
        if scale is None:
            return hutchinson_plain(f, theta, keys[0], rounds[0])[0]
        return hutchinson_scaled(f, theta, keys[0], rounds[0], scale)[0]
    chunk = math.gcd(*rounds)
    bounds = np.cumsum([r // chunk for r in rounds])  # chunk index at which each round ends
    dim, dtype = theta.shape[-1], theta.dtype
    largest = max(rounds)
    tiny = jnp.finfo(dtype).tiny

    def finish(buf, count):
        """Mean and standard error of the first ``count`` rows of ``buf`` (as :func:`_stderr`, ddof 1)."""
        valid = (jnp.arange(largest) < count)[:, None]
        mean = jnp.sum(jnp.where(valid, buf, 0), 0) / count
        var = jnp.sum(jnp.where(valid, (buf - mean) ** 2, 0), 0) / jnp.maximum(count - 1, 1)
        return mean, jnp.sqrt(var / count)

    def next_scale(est, se):
        s = jnp.maximum(jnp.abs(est), se)
        ref = jnp.median(s)
        return jnp.maximum(s, jnp.maximum(ref, tiny) * 1e-12)

    def body(i, carry):
        sc, buf, count = carry
        rnd = jnp.sum(i >= bounds[:-1])  # the round this chunk belongs to
        new_round = jnp.any(i == bounds[:-1])
        est, se = finish(buf, jnp.maximum(count, 1))
        sc = jnp.where(new_round, next_scale(est, se), sc)
        count = jnp.where(new_round, 0, count)
        p = jax.lax.rsqrt(sc)
        z = _rademacher(jax.random.fold_in(keys[rnd], i), (chunk, dim), dtype) * p
        samples = z * jax.vmap(lambda v: hvp(f, theta, v))(z) / (p * p)
        buf = jax.lax.dynamic_update_slice_in_dim(buf, samples.astype(dtype), count, 0)
        return sc, buf, count + chunk

    first = jnp.ones((dim,), dtype) if scale is None else jnp.asarray(scale, dtype)
    carry = (first, jnp.zeros((largest, dim), dtype), jnp.zeros((), jnp.int32))
    _, buf, count = jax.lax.fori_loop(0, int(bounds[-1]), body, carry)
    return finish(buf, count)[0]


def jacobian_mode(n: int, d: int) -> str:
    return "forward" if n >= d else "reverse"


def weighted_jacobian(r: Callable, theta: Any, weights: Any, n: int) -> jnp.ndarray:
    """``√w ⊙ J`` (N, D) for the flattened residuals, J by the cheaper AD mode (cost min(N, D))."""
    d = theta.shape[-1]
    flat = lambda th: jnp.ravel(r(th))  # noqa: E731
    jac = jax.jacfwd(flat)(theta) if jacobian_mode(n, d) == "forward" else jax.jacrev(flat)(theta)
    if weights is None:
        return jac
    w = jnp.ravel(jnp.broadcast_to(weights, jax.eval_shape(r, theta).shape)).astype(jac.dtype)
    return jnp.sqrt(w)[:, None] * jac


def clean_diagonal(diag: jnp.ndarray, *, floor: float, prior_precision: Any, negative: str):
    """Clean a raw diagonal (non-finite, negative, floor; module docstring); returns (diag, counts of 0-d arrays)."""
    finite = jnp.isfinite(diag)
    num_nonfinite = jnp.sum(~finite)
    num_negative = jnp.sum(finite & (diag < 0))
    absd = jnp.where(finite, jnp.abs(diag), jnp.nan)
    med = jnp.nanmedian(absd)
    big = jnp.nanmax(absd)
    d = jnp.where(finite, diag, big)
    if negative == "abs":
        d = jnp.abs(d)
    lo = floor * med
    if prior_precision is not None:
        lo = jnp.maximum(lo, jnp.asarray(prior_precision, d.dtype))
    lo = jnp.maximum(lo, jnp.finfo(d.dtype).tiny)
    num_floored = jnp.sum(d < lo)
    d = jnp.maximum(d, lo)
    return d, {
        "num_nonfinite": num_nonfinite,
        "num_negative": num_negative,
        "num_floored": num_floored,
        "floor_value": lo,
        "median": med,
    }


def clean_diagonal_host(diag: Any, *, floor: float, prior_precision: Any, negative: str
                        ) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`clean_diagonal` in numpy, for estimates already on the host (no device dispatch, nothing to
    compile); the dtype is kept. Returns ``(diag, counts)`` with plain Python numbers."""
    raw = np.asarray(diag)
    dt = raw.dtype
    finite = np.isfinite(raw)
    absd = np.abs(raw[finite])
    med = float(np.median(absd)) if absd.size else float("nan")
    big = float(np.max(absd)) if absd.size else float("nan")
    d = np.where(finite, raw, big)
    if negative == "abs":
        d = np.abs(d)
    lo = floor * med
    if prior_precision is not None:
        lo = np.maximum(lo, np.asarray(prior_precision, np.float64))
    lo = np.maximum(lo, float(np.finfo(dt).tiny))
    with np.errstate(invalid="ignore"):
        floored = d < lo
    out = np.maximum(d, lo).astype(dt)
    counts = {
        "num_nonfinite": int(np.sum(~finite)),
        "num_negative": int(np.sum(raw[finite] < 0)),
        "num_floored": int(np.sum(floored)),
        "floor_value": float(np.max(lo)),
        "median": med,
    }
    return out, counts


def ema_of_squares(grads: Any, beta: float) -> jnp.ndarray:
    """Bias-corrected EMA of g² over the rows of ``grads`` (K, D): ``v_K / (1 − β^K)``."""

    def step(v, g):
        return beta * v + (1 - beta) * g * g, None

    v, _ = jax.lax.scan(step, jnp.zeros_like(grads[0]), grads)
    return v / (1 - beta ** grads.shape[0])
