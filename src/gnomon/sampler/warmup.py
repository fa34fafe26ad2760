r"""Warmup: one pooled window adaptation of the step size and the metric for all chains.

Whitened coordinates
--------------------
The metric is seeded as :math:`M^{-1}_0 = LL^T` (see :mod:`gnomon.sampler.starts`; after a recovery
:math:`L = \mathrm{diag}(\sigma_0)` from the chains' pooled scales, without a seed :math:`L = I`). The warmup
does not re-estimate :math:`M^{-1}` from scratch: it estimates a metric :math:`S` of the whitened
coordinates :math:`u = L^{-1}θ` (ideally :math:`S = I`), so that

.. math:: M^{-1} = L\,S\,L^T

keeps what the seed knew and only corrects it. The gradients transform as :math:`g_u = L^T \nabla_θ \log p`.

Estimators (``Estimator``; chosen per phase, one compiled program serves them all)
----------------------------------------------------------------------------------
``VARIANCE`` (Stan's): :math:`S = \mathrm{diag}\,\widehat{\mathrm{Var}}[u]`, regularised as
:math:`s = (n\hat s + k\,s_{prev} + 5\cdot10^{-3})/(n + 5 + k)` with ``k = shrinkage`` pseudo-draws of the
previous value. ``COVARIANCE``: the same for the full covariance. ``LOW_RANK`` (nutpie's
Algorithm 1, Seyboldt et al. 2026): with :math:`\sigma = (\mathrm{Var}[u]/\mathrm{Var}[g_u])^{1/4}`, the
scaled draw and gradient covariances :math:`A = D^{-1}C_uD^{-1}`, :math:`B = DC_gD` (:math:`D = \mathrm{diag}\,
\sigma`) are projected on the span :math:`Q` of their top ``rank`` eigenvectors each; there
:math:`\Sigma = C_x \# C_a^{-1}` (the SPD geometric mean of :math:`C_x = nQ^TAQ/γ + I` and the inverse of
:math:`C_a = nQ^TBQ/γ + I`, :math:`γ = 10^{-5}`) minimises the sample Fisher divergence, and

.. math:: S = D\,(I + U(\Lambda - I)U^T)\,D

keeps the eigenpairs :math:`(\lambda, U = Q v)` of :math:`\Sigma` outside :math:`[1/2, 2]`. The moments are
pooled over every chain (Chan's parallel Welford update): a window of ``w`` steps gives ``C·w`` draws.
``NONE`` freezes the metric (only the step size adapts).

Schedule
--------
Stan's windowed schedule (:func:`blackjax.adaptation.window_adaptation.build_schedule`: a fast buffer, slow
windows doubling in size, a final fast buffer) with BlackJAX's dual averaging of the step size towards the
kernel's ``target_acceptance_rate`` on the chains' mean acceptance; at each window end the metric is
re-estimated and dual averaging restarts from the window's average step size. The final step size is the
dual-averaging average. A seeded metric starts inside the typical set, so its schedule is shorter
(:func:`schedule`); when the last window still moved the metric by more than its noise, or the chains still
disagree (:func:`unsettled`), the driver inserts further, doubling windows before the final fast buffer.

Everything here is pure and jittable except the schedule helpers, which work on NumPy rows
``(slow?, window end?)`` between compiled chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import IntEnum
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

LOW_RANK_GAMMA = 1e-5
LOW_RANK_CUTOFF = 2.0
DEFAULT_RANK = 10


class Estimator(IntEnum):
    """How a window's pooled moments become the whitened metric ``S`` (see the module docstring)."""

    VARIANCE = 0
    COVARIANCE = 1
    LOW_RANK = 2
    NONE = 3


DENSE_ESTIMATORS = (Estimator.COVARIANCE, Estimator.LOW_RANK)


class Moments(NamedTuple):
    """Pooled running moments of a window's whitened draws ``u`` and gradients ``g_u`` (sums of squares
    ``(D,)``, or ``(D, D)`` with dense moments)."""

    n: Any
    mean_u: Any
    m2_u: Any
    mean_g: Any
    m2_g: Any


class ChainMoments(NamedTuple):
    """Per-chain running means and sums of squares of ``u`` in the current window, ``(C, D)``: R̂."""

    n: Any
    mean: Any
    m2: Any


class AdaptState(NamedTuple):
    da: Any  # blackjax DualAveragingAdaptationState
    step_size: Any
    scale: Any  # S: (D,) or (D, D)
    mom: Moments
    chains: ChainMoments
    imm: Any  # M⁻¹ = L S Lᵀ
    change_std: Any  # std over coordinates of log(new/previous variance) at the last window end
    change_max: Any  # max over coordinates of |log(new/previous variance)|
    last_n: Any  # pooled draws of the last window
    last_rhat: Any  # max split-free R̂ over coordinates of u in the last window
    windows: Any  # window ends so far


class AdaptSettings(NamedTuple):
    """The static shape of an adaptation (part of the compile-cache key)."""

    factor_dense: bool  # L is (D, D)
    scale_dense: bool  # S is (D, D)
    moments_dense: bool  # moments keep (D, D) sums of squares
    rank: int = DEFAULT_RANK

    @property
    def imm_dense(self) -> bool:
        return self.factor_dense or self.scale_dense


class WindowAdaptation(NamedTuple):
    """Pure functions of the pooled adaptation (jit them; they carry no state)."""

    init: Callable  # (positions (C, D), step_size, factor) -> AdaptState
    # (state, stage, is_end, positions, grads, acceptance (C,), factor, factor_inv, shrink, est, target)
    update: Callable
    final: Callable  # (state) -> (step_size, inverse mass matrix)


# ------------------------------------------------------------------------------------------------ algebra
def inverse_mass_matrix(st: AdaptSettings, factor, scale):
    """``M⁻¹ = L S Lᵀ`` for the whitening factor ``L`` and the whitened metric ``S``."""
    if not st.imm_dense:
        return factor * factor * scale
    lmat = factor if st.factor_dense else jnp.diag(factor)
    smat = scale if st.scale_dense else jnp.diag(scale)
    m = lmat @ smat @ lmat.T
    return 0.5 * (m + m.T)


def whiten(factor_dense: bool, factor_inv, x):
    """``u = L⁻¹ x`` for rows ``x``."""
    return x @ factor_inv.T if factor_dense else x * factor_inv


def grad_to_u(factor_dense: bool, factor, g):
    """``g_u = Lᵀ g`` for rows ``g``."""
    return g @ factor if factor_dense else g * factor


def _moments_init(dense: bool, dim: int, dtype) -> Moments:
    m2 = jnp.zeros((dim, dim) if dense else (dim,), dtype)
    zero = jnp.zeros((dim,), dtype)
    return Moments(jnp.zeros((), dtype), zero, m2, zero, m2)


def _chan(dense: bool, n, mean, m2, rows):
    """Chan et al.'s parallel update: merge the rows (C, D) into running (n, mean, m2)."""
    nb = rows.shape[0]
    mb = jnp.mean(rows, axis=0)
    d = rows - mb
    m2b = d.T @ d if dense else jnp.sum(d * d, axis=0)
    n_new = n + nb
    delta = mb - mean
    corr = jnp.outer(delta, delta) if dense else delta * delta
    return mean + delta * (nb / n_new), m2 + m2b + corr * (n * nb / n_new)


def moments_add(dense: bool, m: Moments, u, g) -> Moments:
    mean_u, m2_u = _chan(dense, m.n, m.mean_u, m.m2_u, u)
    mean_g, m2_g = _chan(dense, m.n, m.mean_g, m.m2_g, g)
    return Moments(m.n + u.shape[0], mean_u, m2_u, mean_g, m2_g)


def chains_add(c: ChainMoments, u) -> ChainMoments:
    """Welford's update of every chain's moments with its new row."""
    n = c.n + 1
    delta = u - c.mean
    mean = c.mean + delta / n
    return ChainMoments(n, mean, c.m2 + delta * (u - mean))


def chains_rhat(c: ChainMoments):
    """Max over coordinates of the (non-split) potential scale reduction of the window's draws."""
    n = jnp.maximum(c.n, 2.0)
    w = jnp.mean(c.m2 / (n - 1), axis=0)
    b_over_n = jnp.var(c.mean, axis=0, ddof=1) if c.mean.shape[0] > 1 else jnp.zeros_like(w)
    var = (n - 1) / n * w + b_over_n
    rhat = jnp.sqrt(var / jnp.maximum(w, jnp.finfo(w.dtype).tiny))
    return jnp.where(c.n >= 4, jnp.max(rhat), jnp.ones((), w.dtype))


def _var(dense: bool, m2, n):
    return (jnp.diagonal(m2) if dense else m2) / jnp.maximum(n, 1.0)


def _floor(w):
    """Eigenvalues floored relative to the largest, by the dtype's resolution."""
    return jnp.maximum(w, 10 * jnp.finfo(w.dtype).eps * w.shape[0] * jnp.max(jnp.abs(w)))


def spd_mean(a, b):
    """The SPD (affine-invariant) geometric mean ``a # b = a^½ (a^-½ b a^-½)^½ a^½``."""
    wa, va = jnp.linalg.eigh(a)
    wa = _floor(wa)
    ra = va * jnp.sqrt(wa)[None, :]
    ira = va / jnp.sqrt(wa)[None, :]
    mid = ira.T @ b @ ira
    wm, vm = jnp.linalg.eigh(0.5 * (mid + mid.T))
    half = (vm * jnp.sqrt(_floor(wm))[None, :]) @ vm.T
    out = ra @ half @ ra.T
    return 0.5 * (out + out.T)


def fisher_sigma(m: Moments, dense: bool):
    """``σ = (Var[u] / Var[g_u])^{1/4}`` per coordinate, both variances regularised as Stan regularises the
    draws' (``(n v + 5·10⁻³)/(n + 5)``: in whitened coordinates both are near 1, so a coordinate with too
    few distinct draws cannot swing the metric by orders of magnitude)."""
    n = m.n
    vu = (n * _var(dense, m.m2_u, n) + 5e-3) / (n + 5)
    vg = (n * _var(dense, m.m2_g, n) + 5e-3) / (n + 5)
    return jnp.exp(0.25 * (jnp.log(vu) - jnp.log(vg)))


def low_rank_scale(m: Moments, rank: int, gamma: float = LOW_RANK_GAMMA, cutoff: float = LOW_RANK_CUTOFF):
    """nutpie's diagonal-plus-low-rank metric ``S = D (I + U(Λ − I)Uᵀ) D`` from dense moments (see the
    module docstring); ``(D, D)``."""
    n = jnp.maximum(m.n, 2.0)
    dim = m.mean_u.shape[0]
    sigma = fisher_sigma(m, True)
    a = (m.m2_u / n) / sigma[:, None] / sigma[None, :]
    b = (m.m2_g / n) * sigma[:, None] * sigma[None, :]
    k = min(rank, dim)
    _, va = jnp.linalg.eigh(a)
    _, vb = jnp.linalg.eigh(b)
    basis = jnp.concatenate([va[:, -k:], vb[:, -k:]], axis=1)
    q, _ = jnp.linalg.qr(basis)  # (D, min(D, 2k))
    # nutpie's C = n QᵀAQ/γ + I, divided by n/γ (the geometric mean below is invariant to a common scale);
    # the regulariser floored at the dtype's resolution
    reg = jnp.maximum(gamma / n, 10 * jnp.finfo(a.dtype).eps) * jnp.eye(q.shape[1], dtype=a.dtype)
    cx = q.T @ a @ q + reg
    ca = q.T @ b @ q + reg
    wca, vca = jnp.linalg.eigh(0.5 * (ca + ca.T))
    ca_inv = (vca / _floor(wca)[None, :]) @ vca.T
    sig = spd_mean(cx, ca_inv)
    lam, vec = jnp.linalg.eigh(sig)
    keep = (lam < 1.0 / cutoff) | (lam > cutoff)
    order = jnp.argsort(-jnp.abs(jnp.log(jnp.maximum(lam, 1e-30))))
    rank_ok = jnp.zeros_like(keep).at[order[:k]].set(True)
    lam = jnp.where(keep & rank_ok, lam, 1.0)
    u = q @ vec
    core = jnp.eye(dim, dtype=a.dtype) + (u * (lam - 1.0)[None, :]) @ u.T
    s = sigma[:, None] * core * sigma[None, :]
    return 0.5 * (s + s.T)


# ------------------------------------------------------------------------------------------------ the adaptation
def _fresh(st: AdaptSettings, num_chains: int, dim: int, dtype):
    """A unit whitened metric and empty moments."""
    scale = jnp.eye(dim, dtype=dtype) if st.scale_dense else jnp.ones((dim,), dtype)
    per_chain = jnp.zeros((num_chains, dim), dtype)
    chains = ChainMoments(jnp.zeros((), dtype), per_chain, per_chain)
    return scale, _moments_init(st.moments_dense, dim, dtype), chains


def estimate(st: AdaptSettings, est, mom: Moments, prev, shrink):
    """The whitened metric ``S`` of a window's pooled moments by the estimator ``est`` (an :class:`Estimator`
    code, traced: one program serves them all); ``prev`` is the previous ``S``."""
    n = mom.n
    dim = mom.mean_u.shape[0]
    dtype = mom.mean_u.dtype

    def as_scale(diag_s):
        return jnp.diag(diag_s) if st.scale_dense else diag_s

    def prev_diag():
        return jnp.diagonal(prev) if st.scale_dense else prev

    def variance(_):
        s = (n * _var(st.moments_dense, mom.m2_u, n) + shrink * prev_diag() + 5e-3) / (n + 5 + shrink)
        return as_scale(s)

    def none(_):
        return prev

    branches = [variance, variance, variance, none]  # without dense moments the dense estimators cannot run
    if st.scale_dense:

        def covariance(_):
            cov = mom.m2_u / jnp.maximum(n, 1.0)
            s = (n * cov + shrink * prev + 5e-3 * jnp.eye(dim, dtype=dtype)) / (n + 5 + shrink)
            return 0.5 * (s + s.T)

        def low_rank(_):
            return low_rank_scale(mom, st.rank).astype(dtype)

        branches = [variance, covariance, low_rank, none]
    return jax.lax.switch(est, branches, None)


def window_end(st: AdaptSettings, ad: AdaptState, est, factor, shrink, restart_da: Callable) -> AdaptState:
    """The end of a slow window: re-estimate ``S`` (an estimate that is not finite and positive — too few
    distinct draws — keeps the previous one), restart dual averaging from the window's average step size
    (``restart_da(state) -> state``), record how far the metric moved and the window's R̂, empty the
    moments."""
    mom = ad.mom
    scale = estimate(st, est, mom, ad.scale, shrink)
    dg = jnp.diagonal(scale) if st.scale_dense else scale
    usable = jnp.all(jnp.isfinite(scale)) & jnp.all(dg > 0)
    scale = jnp.where(usable, scale, ad.scale)
    da = restart_da(ad.da)
    diag = (lambda a: jnp.diagonal(a)) if st.scale_dense else (lambda a: a)
    lr = jnp.log(diag(scale) / diag(ad.scale))
    num_chains, dim = ad.chains.mean.shape
    _, fresh_mom, fresh_chains = _fresh(st, num_chains, dim, mom.mean_u.dtype)
    return ad._replace(
        da=da,
        step_size=jnp.exp(da.log_step_size),
        scale=scale,
        mom=fresh_mom,
        chains=fresh_chains,
        imm=inverse_mass_matrix(st, factor, scale),
        change_std=jnp.std(lr),
        change_max=jnp.max(jnp.abs(lr)),
        last_n=mom.n,
        last_rhat=chains_rhat(ad.chains),
        windows=ad.windows + 1,
    )


def window_adaptation(st: AdaptSettings) -> WindowAdaptation:
    """The pooled window adaptation for the static shape ``st`` (see :class:`AdaptSettings`). Like BlackJAX's
    ``window_adaptation`` it does not know the kernel: it sees each step's positions, gradients and
    acceptance rates (the kernel protocol's common statistics), so any kernel family tuned by dual averaging
    on its acceptance rate runs through it."""
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    # only update uses the target acceptance rate: it is an argument (a new target does not recompile)
    da_init, _, da_final = dual_averaging_adaptation(0.8)
    if st.scale_dense and not st.moments_dense:
        raise ValueError("a dense whitened metric needs dense moments")

    def init(positions, step_size, factor) -> AdaptState:
        num_chains, dim = positions.shape
        dtype = positions.dtype
        scale, mom, chains = _fresh(st, num_chains, dim, dtype)
        zero = jnp.zeros((), dtype)
        eps = jnp.asarray(step_size, dtype)
        return AdaptState(
            da=da_init(eps),
            step_size=eps,
            scale=scale,
            mom=mom,
            chains=chains,
            imm=inverse_mass_matrix(st, factor, scale),
            change_std=zero,
            change_max=zero,
            last_n=zero,
            last_rhat=jnp.ones((), dtype),
            windows=jnp.zeros((), jnp.int32),
        )

    def update(ad: AdaptState, stage, is_end, positions, grads, acceptance, factor, factor_inv, shrink, est,
               target):
        """One warmup step: dual averaging on the chains' mean acceptance; in a slow window (``stage == 1``)
        the whitened positions and gradients join the pooled moments; at a window end the metric is
        re-estimated by the estimator ``est`` (an :class:`Estimator` code)."""
        da = dual_averaging_adaptation(target)[1](ad.da, jnp.mean(acceptance))
        ad = ad._replace(da=da, step_size=jnp.exp(da.log_step_size))
        u = whiten(st.factor_dense, factor_inv, positions)
        gu = grad_to_u(st.factor_dense, factor, grads)

        def add(a: AdaptState) -> AdaptState:
            return a._replace(mom=moments_add(st.moments_dense, a.mom, u, gu), chains=chains_add(a.chains, u))

        ad = jax.lax.cond(stage == 1, add, lambda a: a, ad)
        end = lambda a: window_end(st, a, est, factor, shrink, lambda d: da_init(da_final(d)))  # noqa: E731
        return jax.lax.cond(is_end, end, lambda a: a, ad)

    def final(ad: AdaptState):
        # the dual-averaging average; right after a window end (no update since the restart) the restart value
        avg = jnp.where(ad.da.step > 1, ad.da.log_step_size_avg, ad.da.log_step_size)
        return jnp.exp(avg), ad.imm

    return WindowAdaptation(init, update, final)


# ------------------------------------------------------------------------------------ the schedule (NumPy)
def windows(num_steps: int, initial_buffer: int, first_window: int, final_buffer: int) -> np.ndarray:
    """Stan's schedule rows ``(slow?, window end?)`` for ``num_steps`` with the given buffers."""
    from blackjax.adaptation.window_adaptation import build_schedule

    if num_steps == 0:
        return np.zeros((0, 2), np.int32)
    sched = build_schedule(
        num_steps, initial_buffer_size=initial_buffer, final_buffer_size=final_buffer, first_window_size=first_window
    )
    return np.asarray(sched, dtype=np.int32).reshape(num_steps, 2)


def split_final(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split schedule rows before the final fast buffer (extra windows go between the two parts)."""
    ends = np.flatnonzero(rows[:, 1])
    cut = int(ends[-1]) + 1 if ends.size else len(rows)
    return rows[:cut], rows[cut:]


def schedule(num_warmup: int, seeded: bool, adapt: bool) -> tuple[np.ndarray, np.ndarray]:
    """The warmup's rows, split before the final fast buffer.

    Seeded metrics start inside the typical set (Laplace draws), so the initial buffer is 10 % of the
    warmup instead of 75 steps and the first slow window 20 %. Without adaptation (``adapt=False``) every
    step is fast (step size only)."""
    if num_warmup == 0:
        return np.zeros((0, 2), np.int32), np.zeros((0, 2), np.int32)
    if not adapt:
        return np.zeros((num_warmup, 2), np.int32), np.zeros((0, 2), np.int32)
    if seeded:
        buf = max(5, int(round(0.1 * num_warmup)))
        rows = windows(num_warmup, buf, max(10, int(round(0.2 * num_warmup))), buf)
    else:
        from blackjax.adaptation.window_adaptation import build_schedule

        rows = np.asarray(build_schedule(num_warmup), dtype=np.int32).reshape(num_warmup, 2)
    return split_final(rows)


def last_window(head: np.ndarray) -> int:
    """Length of the last slow window in the schedule rows ``head`` (0 without one)."""
    ends = np.flatnonzero(head[:, 1])
    if ends.size == 0:
        return 0
    return int(ends[-1] - ends[-2]) if ends.size > 1 else int(ends[-1] + 1 - np.argmax(head[:, 0] == 1))


def extra_window(size: int) -> np.ndarray:
    """Schedule rows of one more slow window of ``size`` steps."""
    return np.asarray([(1, 0)] * (size - 1) + [(1, 1)], np.int32)


class Settledness(NamedTuple):
    """Why the last window was (not) enough: the metric's movement against its noise, and R̂."""

    unsettled: bool
    reason: str


RHAT_LIMIT = 1.1


def unsettled(ad: AdaptState, dim: int) -> Settledness:
    r"""Did the last window still move the metric materially beyond its own noise, or do the chains disagree?

    ``r = log(s_new / s_prev)`` over coordinates at the last window end. With ``n`` pooled draws a log
    variance has a standard error of about :math:`se = \sqrt{2/n}` (more with autocorrelation). Unsettled:
    some variance still moved by more than 4× (``max|r| > log 4 + 2·se·√(2 log D)``), the scales moved
    broadly (``std(r) > 0.5 + 3·se``) — a metric that was badly wrong, not the ordinary refinement of a good
    one — or the window's chains disagree (max R̂ over whitened coordinates above 1.1)."""
    n = float(ad.last_n)
    if n < 2:
        return Settledness(False, "")
    se = math.sqrt(2.0 / n)
    std, mx, rhat = float(ad.change_std), float(ad.change_max), float(ad.last_rhat)
    if mx > math.log(4.0) + 2 * se * math.sqrt(2 * math.log(max(dim, 2))):
        return Settledness(True, f"a variance moved {math.exp(mx):.3g}× in the last window")
    if std > 0.5 + 3 * se:
        return Settledness(True, f"the scales moved broadly (log-ratio sd {std:.2f}) in the last window")
    if rhat > RHAT_LIMIT:
        return Settledness(True, f"the chains disagree (R̂ {rhat:.3f} in the last window)")
    return Settledness(False, "")
