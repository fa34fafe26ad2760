"""The five sampling benchmark targets: flat log densities over unconstrained θ, with reference moments.

Used by ``bench_sampling.py``. Each target is a :class:`Target` with ``log_prob(θ)``, its dimension, a
start for the optimizer, and either exact posterior moments (the Gaussian and the banana) or ``None``
(a long reference run is made by the benchmark).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

GERMAN = (
    Path(os.environ.get("GNOMON_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    / "data"
    / "german.data-numeric"
)

SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@dataclass
class Target:
    name: str
    dim: int
    log_prob: Callable[[Any], Any]
    mean: np.ndarray | None = None  # exact posterior mean of θ, when known
    sd: np.ndarray | None = None
    # for eight schools centered: the reference comes from the non-centered run through this map
    reference_from: str | None = None
    to_this: Callable[[np.ndarray], np.ndarray] | None = None


def rotated_gaussian(dim: int = 100, kappa: float = 1e4, seed: int = 0) -> Target:
    """N(m, Σ) with Σ = Q diag(σ²) Qᵀ, σ log-spaced so that cond(Σ) = kappa, Q a random rotation."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    sd = np.exp(np.linspace(-0.25, 0.25, dim) * np.log(kappa))
    cov = (q * sd**2) @ q.T
    prec = (q / sd**2) @ q.T
    m = rng.normal(size=dim)
    prec_j, m_j = jnp.asarray(prec, jnp.float32), jnp.asarray(m, jnp.float32)

    def log_prob(th):
        r = th - m_j
        return -0.5 * r @ (prec_j @ r)

    return Target(f"rotated_gaussian_{dim}d", dim, log_prob, mean=m, sd=np.sqrt(np.diag(cov)))


def german_credit() -> Target:
    """Logistic regression on the UCI German credit data: 24 standardised features + intercept,
    N(0, 1) prior on the weights."""
    raw = np.loadtxt(GERMAN)
    x = raw[:, :-1]
    x = (x - x.mean(0)) / x.std(0)
    x = np.concatenate([np.ones((x.shape[0], 1)), x], axis=1)
    y = (raw[:, -1] == 1).astype(np.float32)
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y)

    def log_prob(w):
        logits = xj @ w
        return jnp.sum(yj * logits - jnp.logaddexp(0.0, logits)) - 0.5 * jnp.sum(w * w)

    return Target("german_credit", x.shape[1], log_prob)


def _schools_common(mu, log_tau):
    tau = jnp.exp(log_tau)
    lp_mu = -0.5 * (mu / 5.0) ** 2
    lp_tau = -jnp.log1p((tau / 5.0) ** 2) + log_tau  # half-Cauchy(5) and the log-Jacobian of τ = exp(log τ)
    return tau, lp_mu + lp_tau


def eight_schools_centered() -> Target:
    """θ = (μ, log τ, θ_1..8); θ_j ~ N(μ, τ), y_j ~ N(θ_j, σ_j)."""
    y, s = jnp.asarray(SCHOOLS_Y, jnp.float32), jnp.asarray(SCHOOLS_SIGMA, jnp.float32)

    def log_prob(th):
        mu, log_tau, t = th[0], th[1], th[2:]
        tau, lp = _schools_common(mu, log_tau)
        lp = lp + jnp.sum(-0.5 * ((t - mu) / tau) ** 2 - jnp.log(tau))
        return lp + jnp.sum(-0.5 * ((y - t) / s) ** 2)

    def from_noncentered(th_nc):
        th_nc = np.asarray(th_nc)
        mu, log_tau, z = th_nc[..., :1], th_nc[..., 1:2], th_nc[..., 2:]
        return np.concatenate([mu, log_tau, mu + np.exp(log_tau) * z], axis=-1)

    return Target(
        "eight_schools_centered",
        10,
        log_prob,
        reference_from="eight_schools_noncentered",
        to_this=from_noncentered,
    )


def eight_schools_noncentered() -> Target:
    """θ = (μ, log τ, θ̃_1..8); θ_j = μ + τ θ̃_j, θ̃_j ~ N(0, 1)."""
    y, s = jnp.asarray(SCHOOLS_Y, jnp.float32), jnp.asarray(SCHOOLS_SIGMA, jnp.float32)

    def log_prob(th):
        mu, log_tau, z = th[0], th[1], th[2:]
        tau, lp = _schools_common(mu, log_tau)
        t = mu + tau * z
        return lp + jnp.sum(-0.5 * z**2) + jnp.sum(-0.5 * ((y - t) / s) ** 2)

    return Target("eight_schools_noncentered", 10, log_prob)


def banana(a: float = 2.0, b: float = 0.25) -> Target:
    """θ₁ ~ N(0, a²), θ₂ | θ₁ ~ N(b(θ₁² − a²), 1): mean 0, sd (a, √(1 + 2a⁴b²))."""

    def log_prob(th):
        return -0.5 * (th[0] / a) ** 2 - 0.5 * (th[1] - b * (th[0] ** 2 - a**2)) ** 2

    return Target("banana_2d", 2, log_prob, mean=np.zeros(2), sd=np.array([a, np.sqrt(1 + 2 * a**4 * b**2)]))


def all_targets() -> list[Target]:
    return [
        rotated_gaussian(),
        german_credit(),
        eight_schools_centered(),
        eight_schools_noncentered(),
        banana(),
    ]
