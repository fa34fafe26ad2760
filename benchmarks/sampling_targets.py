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


# ----------------------------------------------------------------------------------------------- issue 20: necks
# Hand-written (no inference-gym / TensorFlow needed), so the transport benchmark runs on any machine. The
# funnels have exact moments; the centred models take their references from long runs of their non-centred
# forms (``reference_from`` + ``to_this``), cached in ``sampling_references.json``.
def funnel(dim: int = 10, v_sd: float = 3.0) -> Target:
    """Neal's funnel in ``dim`` dimensions: v ~ N(0, v_sd²), x_i | v ~ N(0, (e^{v/2})²), θ = (v, x_1..x_{D−1}).
    Exact moments: v mean 0, sd v_sd; x_i mean 0, sd e^{v_sd²/4} (E e^v = e^{v_sd²/2}); reported: v and
    x_i e^{−v/2} (see :func:`_funnel_report`). Its mode is at x = 0,
    v = −v_sd²(D − 1)/2 (−40.5 for D = 10, −445.5 for D = 100): deep in the neck, where the optimizer runs."""

    def log_prob(th):
        v, x = th[0], th[1:]
        return -0.5 * (v / v_sd) ** 2 - 0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * (dim - 1) * v

    sd = np.ones(dim)
    sd[0] = v_sd
    x0 = np.zeros(dim)
    x0[0] = 1.0
    return Target(f"funnel_{dim}d", dim, log_prob, "funnel", mean=np.zeros(dim), sd=sd, ref_source="exact",
                  x0=x0, note=f"v ~ N(0, {v_sd:g}²)", report=_funnel_report)


def _funnel_report(th):
    """The funnel's reported quantities: v and x_i e^{−v/2} (exactly N(0, 1) and independent of v). The sd of
    x_i itself (e^{v_sd²/4}) cannot be checked from 4000 draws: its kurtosis is 3e^{v_sd²}, so the Monte-Carlo
    error of a sample sd is about 100 % even for exact independent draws; the standardised x_i test the joint
    shape (the neck included) with a Monte-Carlo error of ~2 %."""
    th = np.asarray(th, np.float64)
    return np.concatenate([th[..., :1], th[..., 1:] * np.exp(-th[..., :1] / 2)], axis=-1)


def _funnel_exact_noncentred(dim: int, v_sd: float = 3.0):
    """The exact non-centring of :func:`funnel`: z ~ N(0, I) ↦ θ = (v_sd z_0, e^{v_sd z_0 / 2} z_{1:})."""

    def to_theta(z):
        z = np.asarray(z)
        v = v_sd * z[..., :1]
        return np.concatenate([v, np.exp(v / 2) * z[..., 1:]], axis=-1)

    return to_theta


def eight_schools_centered_lognormal() -> Target:
    """inference-gym's centred eight schools, hand-written: μ ~ N(0, 10²), log τ ~ N(5, 1), θ_j ~ N(μ, τ²),
    y_j ~ N(θ_j, σ_j²); θ = (μ, log τ, θ_1..8). Its mode is at log τ ≈ −3, deep in the neck."""
    y, s = jnp.asarray(SCHOOLS_Y, jnp.float32), jnp.asarray(SCHOOLS_SIGMA, jnp.float32)

    def log_prob(th):
        mu, log_tau, t = th[0], th[1], th[2:]
        lp = -0.5 * (mu / 10.0) ** 2 - 0.5 * (log_tau - 5.0) ** 2
        lp = lp + jnp.sum(-0.5 * ((t - mu) * jnp.exp(-log_tau)) ** 2) - 8 * log_tau
        return lp + jnp.sum(-0.5 * ((y - t) / s) ** 2)

    return Target("eight_schools_centered_lognormal", 10, log_prob, "hierarchical",
                  reference_from="eight_schools_noncentered_lognormal", to_this=_schools_from_noncentred,
                  note="mode in the neck")


def eight_schools_noncentered_lognormal() -> Target:
    """The non-centred form of :func:`eight_schools_centered_lognormal` (θ_j = μ + τ z_j): the reference."""
    y, s = jnp.asarray(SCHOOLS_Y, jnp.float32), jnp.asarray(SCHOOLS_SIGMA, jnp.float32)

    def log_prob(th):
        mu, log_tau, z = th[0], th[1], th[2:]
        t = mu + jnp.exp(log_tau) * z
        lp = -0.5 * (mu / 10.0) ** 2 - 0.5 * (log_tau - 5.0) ** 2 - 0.5 * jnp.sum(z**2)
        return lp + jnp.sum(-0.5 * ((y - t) / s) ** 2)

    return Target("eight_schools_noncentered_lognormal", 10, log_prob, "hierarchical")


def _schools_from_noncentred(th_nc):
    th_nc = np.asarray(th_nc)
    mu, log_tau, z = th_nc[..., :1], th_nc[..., 1:2], th_nc[..., 2:]
    return np.concatenate([mu, log_tau, mu + np.exp(log_tau) * z], axis=-1)


HREG_GROUPS, HREG_PER_GROUP = 20, 5


def _hreg_data(seed: int = 3):
    """Synthetic grouped data: α_j ~ N(1, 0.3²), y_ij = α_j + 0.5 x_ij + N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(HREG_GROUPS, HREG_PER_GROUP))
    alpha = 1.0 + 0.3 * rng.normal(size=HREG_GROUPS)
    y = alpha[:, None] + 0.5 * x + rng.normal(size=x.shape)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def _hreg_log_prob(centred: bool):
    x, y = _hreg_data()

    def log_prob(th):
        mu, log_tau, beta, log_sigma, a = th[0], th[1], th[2], th[3], th[4:]
        tau, sigma = jnp.exp(log_tau), jnp.exp(log_sigma)
        # μ ~ N(0, 5²), τ ~ half-N(0, 1), β ~ N(0, 2²), σ ~ half-N(0, 2): log-Jacobians of τ, σ included
        lp = -0.5 * (mu / 5.0) ** 2 - 0.5 * tau**2 + log_tau - 0.5 * (beta / 2.0) ** 2 - 0.125 * sigma**2 + log_sigma
        if centred:
            alpha = a
            lp = lp + jnp.sum(-0.5 * ((a - mu) / tau) ** 2) - HREG_GROUPS * log_tau
        else:
            alpha = mu + tau * a
            lp = lp - 0.5 * jnp.sum(a**2)
        r = (y - alpha[:, None] - beta * x) / sigma
        return lp - 0.5 * jnp.sum(r**2) - y.size * log_sigma

    return log_prob


def hierarchical_regression() -> Target:
    """A varying-intercept regression, centred: y_ij ~ N(α_j + β x_ij, σ²), α_j ~ N(μ, τ²) with the group scale
    τ unknown (half-normal), 20 groups × 5 observations; θ = (μ, log τ, β, log σ, α_1..20), D = 24. The data's
    group scale (0.3) is small against the noise (1): the posterior of τ reaches into the neck."""
    return Target("hierarchical_regression", 4 + HREG_GROUPS, _hreg_log_prob(True), "hierarchical",
                  reference_from="hierarchical_regression_noncentered", to_this=_hreg_from_noncentred,
                  note="unknown group scale")


def hierarchical_regression_noncentered() -> Target:
    return Target("hierarchical_regression_noncentered", 4 + HREG_GROUPS, _hreg_log_prob(False), "hierarchical")


def _hreg_from_noncentred(th_nc):
    th_nc = np.asarray(th_nc)
    mu, log_tau, z = th_nc[..., :1], th_nc[..., 1:2], th_nc[..., 4:]
    return np.concatenate([th_nc[..., :4], mu + np.exp(log_tau) * z], axis=-1)


SV_T = 100


def _sv_data(seed: int = 5):
    """Synthetic daily returns from the model itself: μ = −1, φ = 0.95, σ = 0.25 (a persistent log-volatility)."""
    rng = np.random.default_rng(seed)
    h = np.empty(SV_T)
    h[0] = -1.0 + 0.25 / np.sqrt(1 - 0.95**2) * rng.normal()
    for t in range(1, SV_T):
        h[t] = -1.0 + 0.95 * (h[t - 1] + 1.0) + 0.25 * rng.normal()
    return jnp.asarray(np.exp(h / 2) * rng.normal(size=SV_T), jnp.float32)


def _sv_log_prob(centred: bool):
    y = _sv_data()

    def log_prob(th):
        mu, phi_raw, log_sigma, hh = th[0], th[1], th[2], th[3:]
        phi = jnp.tanh(phi_raw)  # φ ∈ (−1, 1)
        sigma = jnp.exp(log_sigma)
        # μ ~ N(0, 5²), (φ + 1)/2 ~ Beta(20, 1.5), σ ~ half-Cauchy(0, 2); log-Jacobians included
        lp = -0.5 * (mu / 5.0) ** 2
        lp = lp + 19.0 * jnp.log1p(phi) + 0.5 * jnp.log1p(-phi) + jnp.log1p(-(phi**2))
        lp = lp - jnp.log1p((sigma / 2.0) ** 2) + log_sigma
        if centred:
            h = hh
            sd0 = sigma / jnp.sqrt(1 - phi**2)
            lp = lp - 0.5 * ((h[0] - mu) / sd0) ** 2 - jnp.log(sd0)
            lp = lp + jnp.sum(-0.5 * ((h[1:] - mu - phi * (h[:-1] - mu)) / sigma) ** 2) - (SV_T - 1) * log_sigma
        else:
            h = _sv_states(mu, phi, sigma, hh)
            lp = lp - 0.5 * jnp.sum(hh**2)
        return lp + jnp.sum(-0.5 * y**2 * jnp.exp(-h) - 0.5 * h)

    return log_prob


def _sv_states(mu, phi, sigma, eps):
    """h from the standardised innovations ε (non-centred): h_0 = μ + σ/√(1−φ²) ε_0,
    h_t = μ + φ(h_{t−1} − μ) + σ ε_t."""
    xp = jnp if isinstance(eps, jax.Array) else np
    h0 = mu + sigma / xp.sqrt(1 - phi**2) * eps[..., 0]

    def step(prev, e):
        nxt = mu + phi * (prev - mu) + sigma * e
        return nxt, nxt

    if xp is jnp:
        _, rest = jax.lax.scan(step, h0, eps[1:])
        return jnp.concatenate([h0[None], rest])
    out = [h0]
    for t in range(1, eps.shape[-1]):
        out.append(mu + phi * (out[-1] - mu) + sigma * eps[..., t])
    return np.stack(out, axis=-1)


def stochastic_volatility_centred() -> Target:
    """Stochastic volatility on 100 synthetic daily returns, centred: h_t = μ + φ(h_{t−1} − μ) + σ η_t,
    y_t ~ N(0, e^{h_t}); θ = (μ, atanh φ, log σ, h_1..100), D = 103 (inference-gym's SP500 model, hand-written,
    with the data drawn from the model)."""
    return Target("stochastic_volatility_centred", 3 + SV_T, _sv_log_prob(True), "time series",
                  reference_from="stochastic_volatility_noncentred", to_this=_sv_from_noncentred,
                  x0=np.r_[0.0, 1.0, -1.0, np.zeros(SV_T)])


def stochastic_volatility_noncentred() -> Target:
    return Target("stochastic_volatility_noncentred", 3 + SV_T, _sv_log_prob(False), "time series",
                  x0=np.r_[0.0, 1.0, -1.0, np.zeros(SV_T)])


def _sv_from_noncentred(th_nc):
    th_nc = np.asarray(th_nc, np.float64)
    mu, phi, sigma = th_nc[..., 0], np.tanh(th_nc[..., 1]), np.exp(th_nc[..., 2])
    h = _sv_states(mu, phi, sigma, th_nc[..., 3:])
    return np.concatenate([th_nc[..., :3], h], axis=-1)


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
    # issue 20 (hand-written; see bench_transport.py)
    "funnel_10d": lambda: funnel(10),
    "funnel_100d": lambda: funnel(100),
    "eight_schools_centered_lognormal": eight_schools_centered_lognormal,
    "eight_schools_noncentered_lognormal": eight_schools_noncentered_lognormal,
    "hierarchical_regression": hierarchical_regression,
    "hierarchical_regression_noncentered": hierarchical_regression_noncentered,
    "stochastic_volatility_centred": stochastic_volatility_centred,
    "stochastic_volatility_noncentred": stochastic_volatility_noncentred,
}
# the transport benchmark's targets (issue 20, item 5): a neck in every one
NECKS = (
    "funnel_10d",
    "funnel_100d",
    "eight_schools_centered_lognormal",
    "eight_schools_centered_halfcauchy",
    "hierarchical_regression",
    "stochastic_volatility_centred",
)
QUICK = ("rotated_gaussian_100d", "banana_2d", "neals_funnel", "eight_schools_centered")


def load(names: list[str] | tuple[str, ...] | None = None) -> list[Target]:
    """The targets by name (all by default), in registry order."""
    names = list(TARGETS) if not names else list(names)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ValueError(f"unknown targets {unknown}; have {list(TARGETS)}")
    return [TARGETS[n]() for n in names]

