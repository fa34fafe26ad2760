r"""Warmup: one pooled window adaptation of the step size and the metric for all chains.

Whitened coordinates
--------------------
The metric is seeded as :math:`M^{-1}_0 = LL^T` (see :mod:`gnomon.engines.sample_starts`). The warmup does not
re-estimate :math:`M^{-1}` from scratch: it estimates the variances of the whitened coordinates
:math:`u = L^{-1}θ` (ideally all 1), so that

.. math:: M^{-1} = L\,\mathrm{diag}(s)\,L^T

keeps the seed's correlations and only re-measures its scales; with ``adapt="dense"`` the full covariance
:math:`S` of ``u`` is estimated and :math:`M^{-1} = L S L^T`. ``adapt="none"`` freezes the seed (only the step
size adapts).

Schedule and updates
--------------------
Stan's windowed schedule (:func:`blackjax.adaptation.window_adaptation.build_schedule`: a fast buffer, slow
windows doubling in size, a final fast buffer) with BlackJAX's dual averaging of the step size towards
``target_acceptance_rate``. The chains share one adaptation: dual averaging sees the mean acceptance rate
across chains and each slow window pools every chain's draws (Chan's parallel Welford update), so a short
warmup still estimates the metric from ``num_chains ×`` window draws. At the end of a window the whitened
variances are regularised as in Stan,

.. math:: s = \frac{n\,\hat s + k\,s_{prev} + 5\cdot10^{-3}}{n + 5 + k}

with ``k = metric_shrinkage`` pseudo-draws of the previous value, and dual averaging restarts from the
window's average step size. The final step size is the dual-averaging average.

A seeded metric starts inside the typical set, so its schedule is shorter (:func:`schedule`); when the last
window still moved the metric by more than its noise (:func:`unsettled`), the driver inserts further,
doubling windows before the final fast buffer.

Everything here is pure and jittable except the schedule helpers, which work on NumPy rows
``(slow?, window end?)`` between compiled chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Welford(NamedTuple):
    """Running moments of a window's pooled whitened draws (``m2``: (D,) sums of squares or (D, D))."""

    n: Any
    mean: Any
    m2: Any


class AdaptState(NamedTuple):
    ss: Any  # blackjax DualAveragingAdaptationState
    step_size: Any
    scale: Any  # (D,) whitened variances, or (D, D) whitened covariance (adapt="dense")
    wf: Welford
    imm: Any
    change_std: Any  # std over coordinates of log(new/previous variance) at the last window end
    change_max: Any  # max over coordinates of |log(new/previous variance)|
    last_n: Any  # pooled draws of the last window


class WindowAdaptation(NamedTuple):
    """Pure functions of the pooled adaptation (jit them; they carry no state)."""

    init: Callable  # (positions (C, D), step_size, factor) -> AdaptState
    update: Callable  # (state, stage, is_end, positions, acceptance (C,), factor, factor_inv, shrink) -> state
    final: Callable  # (state) -> (step_size, inverse mass matrix)


def inverse_mass_matrix(adapt: str, factor_dense: bool, factor, scale):
    """``M⁻¹ = L S Lᵀ`` for the whitening factor ``L`` and the whitened (co)variance ``S``."""
    if adapt == "dense":
        if factor_dense:
            m = factor @ scale @ factor.T
        else:
            m = factor[:, None] * scale * factor[None, :]
        return 0.5 * (m + m.T)
    if factor_dense:
        m = (factor * scale[None, :]) @ factor.T
        return 0.5 * (m + m.T)
    return factor * factor * scale


def whiten(factor_dense: bool, factor_inv, x):
    """``u = L⁻¹ x`` for rows ``x``."""
    return x @ factor_inv.T if factor_dense else x * factor_inv


def welford_init(adapt: str, dim: int, dtype) -> Welford:
    m2 = jnp.zeros((dim, dim) if adapt == "dense" else (dim,), dtype)
    return Welford(jnp.zeros((), dtype), jnp.zeros((dim,), dtype), m2)


def welford_add(adapt: str, w: Welford, u) -> Welford:
    """Chan et al.'s parallel update: merge a batch of rows ``u`` (C, D) into the running moments."""
    nb = u.shape[0]
    mb = jnp.mean(u, axis=0)
    du = u - mb
    m2b = du.T @ du if adapt == "dense" else jnp.sum(du * du, axis=0)
    n = w.n + nb
    delta = mb - w.mean
    mean = w.mean + delta * (nb / n)
    corr = jnp.outer(delta, delta) if adapt == "dense" else delta * delta
    return Welford(n, mean, w.m2 + m2b + corr * (w.n * nb / n))


def window_adaptation(adapt: str, factor_dense: bool, target_acceptance_rate: float) -> WindowAdaptation:
    """The pooled window adaptation for metric adaptation ``adapt`` (``"diag"``, ``"dense"`` or ``"none"``)
    around a whitening factor that is dense (``factor_dense``) or diagonal."""
    from blackjax.adaptation.step_size import dual_averaging_adaptation

    da_init, da_update, da_final = dual_averaging_adaptation(target_acceptance_rate)

    def init(positions, step_size, factor) -> AdaptState:
        dim = positions.shape[-1]
        dtype = positions.dtype
        scale = jnp.eye(dim, dtype=dtype) if adapt == "dense" else jnp.ones((dim,), dtype)
        zero = jnp.zeros((), dtype)
        return AdaptState(
            ss=da_init(jnp.asarray(step_size, dtype)),
            step_size=jnp.asarray(step_size, dtype),
            scale=scale,
            wf=welford_init(adapt, dim, dtype),
            imm=inverse_mass_matrix(adapt, factor_dense, factor, scale),
            change_std=zero,
            change_max=zero,
            last_n=zero,
        )

    def update(ad: AdaptState, stage, is_end, positions, acceptance, factor, factor_inv, shrink) -> AdaptState:
        """One warmup step: dual averaging on the chains' mean acceptance; in a slow window (``stage == 1``)
        the whitened positions join the pooled moments; at a window end the metric is re-estimated."""

        def window_end(ad: AdaptState) -> AdaptState:
            w = ad.wf
            n = w.n
            cov = w.m2 / jnp.maximum(n - 1, 1)
            reg = 5e-3 * jnp.eye(cov.shape[0], dtype=cov.dtype) if adapt == "dense" else 5e-3
            scale = (n * cov + shrink * ad.scale + reg) / (n + 5 + shrink)
            ss = da_init(da_final(ad.ss))
            diag = (lambda a: jnp.diagonal(a)) if adapt == "dense" else (lambda a: a)
            lr = jnp.log(diag(scale) / diag(ad.scale))
            return AdaptState(
                ss=ss,
                step_size=jnp.exp(ss.log_step_size),
                scale=scale,
                wf=welford_init(adapt, w.mean.shape[0], w.mean.dtype),
                imm=inverse_mass_matrix(adapt, factor_dense, factor, scale),
                change_std=jnp.std(lr),
                change_max=jnp.max(jnp.abs(lr)),
                last_n=n,
            )

        ss = da_update(ad.ss, jnp.mean(acceptance))
        ad = ad._replace(ss=ss, step_size=jnp.exp(ss.log_step_size))
        if adapt != "none":
            u = whiten(factor_dense, factor_inv, positions)
            ad = ad._replace(wf=jax.lax.cond(stage == 1, lambda w: welford_add(adapt, w, u), lambda w: w, ad.wf))
            ad = jax.lax.cond(is_end, window_end, lambda a: a, ad)
        return ad

    def final(ad: AdaptState):
        # the dual-averaging average; right after a window end (no update since the restart) the restart value
        avg = jnp.where(ad.ss.step > 1, ad.ss.log_step_size_avg, ad.ss.log_step_size)
        return jnp.exp(avg), ad.imm

    return WindowAdaptation(init, update, final)


# ------------------------------------------------------------------------------------ the schedule (NumPy)
def schedule(num_warmup: int, seeded: bool, adapt: str) -> tuple[np.ndarray, np.ndarray]:
    """Stan's window schedule as int rows (slow?, window end?), split before the final fast buffer.

    Seeded metrics start inside the typical set (Laplace draws), so the initial buffer is 10 % of the
    warmup instead of 75 steps and the first slow window 20 %. Extra windows (see :func:`unsettled`) go
    between the two parts."""
    if num_warmup == 0:
        return np.zeros((0, 2), np.int32), np.zeros((0, 2), np.int32)
    if adapt == "none":
        return np.zeros((num_warmup, 2), np.int32), np.zeros((0, 2), np.int32)
    from blackjax.adaptation.window_adaptation import build_schedule

    if seeded:
        init_buf = max(5, int(round(0.1 * num_warmup)))
        sched = build_schedule(
            num_warmup,
            initial_buffer_size=init_buf,
            final_buffer_size=init_buf,
            first_window_size=max(10, int(round(0.2 * num_warmup))),
        )
    else:
        sched = build_schedule(num_warmup)
    sched = np.asarray(sched, dtype=np.int32).reshape(num_warmup, 2)
    ends = np.flatnonzero(sched[:, 1])
    cut = int(ends[-1]) + 1 if ends.size else num_warmup
    return sched[:cut], sched[cut:]


def last_window(head: np.ndarray) -> int:
    """Length of the last slow window in the schedule rows ``head`` (0 without one)."""
    ends = np.flatnonzero(head[:, 1])
    if ends.size == 0:
        return 0
    return int(ends[-1] - ends[-2]) if ends.size > 1 else int(ends[-1] + 1 - np.argmax(head[:, 0] == 1))


def extra_window(size: int) -> np.ndarray:
    """Schedule rows of one more slow window of ``size`` steps."""
    return np.asarray([(1, 0)] * (size - 1) + [(1, 1)], np.int32)


def unsettled(ad: AdaptState, dim: int) -> bool:
    r"""Did the last window still move the metric materially, beyond its own noise?

    ``r = log(s_new / s_prev)`` over coordinates at the last window end. With ``n`` pooled draws a log
    variance has a standard error of about :math:`se = \sqrt{2/n}` (more with autocorrelation). Unsettled:
    some variance still moved by more than 4× (``max|r| > log 4 + 2·se·√(2 log D)``) or the scales moved
    broadly (``std(r) > 0.5 + 3·se``) — a seed that was badly wrong, not the ordinary refinement of a
    good one."""
    n = float(ad.last_n)
    if n < 2:
        return False
    se = math.sqrt(2.0 / n)
    return bool(
        float(ad.change_std) > 0.5 + 3 * se
        or float(ad.change_max) > math.log(4.0) + 2 * se * math.sqrt(2 * math.log(max(dim, 2)))
    )
