"""Sampling benchmark targets: flat log densities over unconstrained θ, with reference moments.

Used by ``bench_sampling.py``. Each :class:`Target` has ``log_prob(θ)`` over the unconstrained θ (Jacobian
included), its dimension, a start for the optimizer, a map ``report`` from θ draws ``(..., D)`` to the reported
quantities (the constrained parameters for inference-gym targets, θ itself otherwise), and reference moments
of those quantities: exact (Gaussian, banana), inference-gym's ground truth (long runs by its authors), or
``None`` (the benchmark then makes a long reference run).

Shapes covered (the issue's list): near-Gaussian correlated (a rotated ill-conditioned Gaussian, German
credit, a Brownian bridge, item response theory with D = 501), curved (banana), a funnel (Neal's),
hierarchical models centred (eight schools with a proper prior on log τ — its mode is in the neck — and with
Stan's half-Cauchy — no mode at all) and non-centred, latent time series with unknown scales (a Brownian
motion with unknown innovation and observation noise, stochastic volatility on S&P 500 returns).

inference-gym (PyPI ``inference-gym`` + ``tfp-nightly``) is imported lazily; targets that need TensorFlow
Datasets cannot load on these machines (German credit uses the UCI file in ``shared/data`` instead).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _shared() -> Path:
    """The shared data folder: $GNOMON_SHARED, else ``shared/`` beside the checkout (or its worktree folder)."""
    if "GNOMON_SHARED" in os.environ:
        return Path(os.environ["GNOMON_SHARED"])
    here = Path(__file__).resolve()
    for up in here.parents[2:4]:
        if (up / "shared" / "data").is_dir():
            return up / "shared"
    return here.parents[2] / "shared"


GERMAN = _shared() / "data" / "german.data-numeric"

SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def _identity(th: np.ndarray) -> np.ndarray:
    return np.asarray(th)


@dataclass
class Target:
    name: str
    dim: int
    log_prob: Callable[[Any], Any]
    family: str  # near-gaussian | curved | funnel | hierarchical | time series
    mean: np.ndarray | None = None  # reference mean of report(θ)
    sd: np.ndarray | None = None
    ref_source: str = "long run"  # exact | inference-gym | long run
    report: Callable[[np.ndarray], np.ndarray] = _identity
    x0: np.ndarray | None = None  # optimizer start (default 0)
    note: str = ""
    # the reference of this target comes from another target's long run, mapped by to_this
    reference_from: str | None = None
    to_this: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def start(self) -> np.ndarray:
        return np.zeros(self.dim, np.float32) if self.x0 is None else np.asarray(self.x0, np.float32)


# ----------------------------------------------------------------------------------------------- closed forms
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

    return Target(
        f"rotated_gaussian_{dim}d", dim, log_prob, "near-gaussian", mean=m, sd=np.sqrt(np.diag(cov)), ref_source="exact"
    )


def banana(a: float = 2.0, b: float = 0.25) -> Target:
    """θ₁ ~ N(0, a²), θ₂ | θ₁ ~ N(b(θ₁² − a²), 1): mean 0, sd (a, √(1 + 2a⁴b²))."""

    def log_prob(th):
        return -0.5 * (th[0] / a) ** 2 - 0.5 * (th[1] - b * (th[0] ** 2 - a**2)) ** 2

    return Target(
        "banana_2d",
        2,
        log_prob,
        "curved",
        mean=np.zeros(2),
        sd=np.array([a, np.sqrt(1 + 2 * a**4 * b**2)]),
        ref_source="exact",
    )


# ----------------------------------------------------------------------------------------------- data models
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

    return Target("german_credit", x.shape[1], log_prob, "near-gaussian")


def _schools_common(mu, log_tau):
    tau = jnp.exp(log_tau)
    lp_mu = -0.5 * (mu / 5.0) ** 2
    lp_tau = -jnp.log1p((tau / 5.0) ** 2) + log_tau  # half-Cauchy(5) and the log-Jacobian of τ = exp(log τ)
    return tau, lp_mu + lp_tau


def eight_schools_centered_halfcauchy() -> Target:
    """Stan's centred eight schools: θ = (μ, log τ, θ_1..8); θ_j ~ N(μ, τ), τ ~ half-Cauchy(5). No mode: the
    density grows without bound as τ → 0 with θ_j = μ."""
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
        "eight_schools_centered_halfcauchy",
        10,
        log_prob,
        "hierarchical",
        reference_from="eight_schools_noncentered",
        to_this=from_noncentered,
        note="no mode",
    )


def eight_schools_noncentered() -> Target:
    """θ = (μ, log τ, θ̃_1..8); θ_j = μ + τ θ̃_j, θ̃_j ~ N(0, 1), τ ~ half-Cauchy(5)."""
    y, s = jnp.asarray(SCHOOLS_Y, jnp.float32), jnp.asarray(SCHOOLS_SIGMA, jnp.float32)

    def log_prob(th):
        mu, log_tau, z = th[0], th[1], th[2:]
        tau, lp = _schools_common(mu, log_tau)
        t = mu + tau * z
        return lp + jnp.sum(-0.5 * z**2) + jnp.sum(-0.5 * ((y - t) / s) ** 2)

    return Target("eight_schools_noncentered", 10, log_prob, "hierarchical")


# ----------------------------------------------------------------------------------------------- inference-gym
def _gym():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from inference_gym import using_jax as gym
    return gym


def gym_target(cls_name: str, name: str, family: str, note: str = "") -> Target:
    """An inference-gym model as a flat unconstrained log density (its default event-space bijector, the
    log-Jacobian included); the reported quantities are the constrained parameters, whose ground-truth mean
    and sd the gym ships."""
    gym = _gym()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = gym.targets.VectorModel(getattr(gym.targets, cls_name)(), flatten_sample_transformations=True)
    bij = model.default_event_space_bijector
    dim = int(np.prod(bij.inverse_event_shape(model.event_shape)))

    def log_prob(z):
        return model.unnormalized_log_prob(bij.forward(z)) + bij.forward_log_det_jacobian(z, event_ndims=1)

    st = model.sample_transformations["identity"]
    forward = jax.jit(jax.vmap(lambda z: st(bij.forward(z))))  # the ground truth's own ordering

    def report(th):
        th = np.asarray(th, np.float32)
        flat = th.reshape(-1, dim)
        out = np.concatenate([np.asarray(forward(flat[i : i + 4096])) for i in range(0, len(flat), 4096)])
        return out.reshape(*th.shape[:-1], -1)

    return Target(
        name,
        dim,
        log_prob,
        family,
        mean=np.asarray(st.ground_truth_mean, np.float64),
        sd=np.asarray(st.ground_truth_standard_deviation, np.float64),
        ref_source="inference-gym",
        report=report,
        note=note,
    )


def eight_schools_centered() -> Target:
    """inference-gym's centred eight schools: log τ ~ N(5, 1) (a proper prior, so a mode exists — at log τ ≈ −3,
    deep in the funnel's neck, while the posterior bulk sits near log τ ≈ 2)."""
    return gym_target("EightSchools", "eight_schools_centered", "hierarchical", note="mode in the neck")


def neals_funnel() -> Target:
    """Neal's funnel in 10 dimensions: v ~ N(0, 3²), x_i ~ N(0, e^{v/2}). Its mode sits at v ≈ −40."""
    return gym_target("NealsFunnel", "neals_funnel", "funnel", note="mode at v ≈ −40")


def brownian_bridge() -> Target:
    """A Brownian motion with known scales and 10 missing middle observations (30 latent states)."""
    return gym_target("BrownianMotionMissingMiddleObservations", "brownian_bridge", "near-gaussian")


def brownian_unknown_scales() -> Target:
    """The same latent random walk with unknown innovation and observation noise scales (log-normal priors)."""
    return gym_target(
        "BrownianMotionUnknownScalesMissingMiddleObservations", "brownian_unknown_scales", "time series"
    )


def stochastic_volatility() -> Target:
    """Stochastic volatility on 100 days of S&P 500 returns: a centred AR(1) latent log-volatility with
    unknown persistence, mean and shock scale (D = 103)."""
    return gym_target("StochasticVolatilitySP500Small", "stochastic_volatility", "time series")


def item_response() -> Target:
    """Synthetic item response theory: 400 students × 100 questions, logistic (D = 501)."""
    return gym_target("SyntheticItemResponseTheory", "item_response_501d", "near-gaussian")


# ----------------------------------------------------------------------------------------------- registry
TARGETS: dict[str, Callable[[], Target]] = {
    "rotated_gaussian_100d": rotated_gaussian,
    "german_credit": german_credit,
    "brownian_bridge": brownian_bridge,
    "item_response_501d": item_response,
    "banana_2d": banana,
    "neals_funnel": neals_funnel,
    "eight_schools_centered": eight_schools_centered,
    "eight_schools_centered_halfcauchy": eight_schools_centered_halfcauchy,
    "eight_schools_noncentered": eight_schools_noncentered,
    "brownian_unknown_scales": brownian_unknown_scales,
    "stochastic_volatility": stochastic_volatility,
}
QUICK = ("rotated_gaussian_100d", "banana_2d", "neals_funnel", "eight_schools_centered")


def load(names: list[str] | tuple[str, ...] | None = None) -> list[Target]:
    """The targets by name (all by default), in registry order."""
    names = list(TARGETS) if not names else list(names)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; have {list(TARGETS)}")
    return [TARGETS[n]() for n in names]

