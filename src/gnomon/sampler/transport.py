r"""A transport stage: learn a map :math:`θ = T(z)` under which the target is close to N(0, I), from draws and
gradients the sampler already has, and sample in z.

Why
---
Where a scale parameter shapes the others — a funnel, a centred hierarchical model, a latent time series with
an unknown innovation scale — no metric fits everywhere: in the neck the posterior is narrow, in the mouth
wide, and NUTS with one step size and one metric pays in divergences, depth and wrong answers. The fix users
apply by hand is *non-centring* (:math:`θ_j = μ + τ z_j`); an **affine autoregressive map** whose shift and
log-scale depend linearly on earlier coordinates does it without the model's structure, and contains every
non-centring of a loc-scale family exactly:

.. math::

    x = \mathrm{standardise}(θ)_{π}, \qquad
    x_j = a_j + \sum_{k<j} A_{jk} u_k + \exp\Big(c_j + \sum_{k<j} B_{jk} u_k\Big) u_j, \qquad u = z_{π},

with π an ordering of the coordinates (scale parents first, :func:`parent_order`), the standardisation
:math:`θ = m + s ⊙ x` (nutpie's first metric: :math:`s = \sqrt{\mathrm{sd}(θ)/\mathrm{sd}(∇\log p)}`), and
:math:`\log|\det ∂θ/∂z| = \sum_j \log s_j + \sum_j h_j(u)`, :math:`h_j = c_j + (B u)_j`. With :math:`B = 0`
it is a dense linear map (the Gaussian a dense metric describes); :math:`B ≠ 0` is what a metric cannot do.
``T`` is parallel (one matrix product per direction: cheap inside every leapfrog step); ``T⁻¹`` is sequential
in the coordinates and is only needed to map draws and starts.

Training (nutpie's Fisher divergence)
-------------------------------------
For draws :math:`θ_i` with gradients :math:`g_i = ∇\log p(θ_i)` — which NUTS computes anyway — the score in z
is :math:`∇_z \log p_z(z_i) = J(z_i)^T g_i + ∇_z \log|\det J(z_i)|` at :math:`z_i = T^{-1}(θ_i)`: no new
evaluation of the log density. For N(0, I) the score is :math:`-z`, so the map minimises

.. math::

    F(T) = \frac1N \sum_i \big\| z_i + ∇_z \log p_z(z_i) \big\|^2 \quad (\log F \text{ is optimised, as nutpie})

— zero exactly when the pushforward of N(0, I) is the target. The draws need not come from the target: where the
family contains the exact map, any draws that cover the region identify it (the seed check's draws in the neck
count as much as the recovery's). Full-batch L-BFGS (``optax.lbfgs``) on a few hundred draws (the gradient through
:math:`T^{-1}` implicit: :func:`~gnomon.sampler.transport_core.inverse`; the best linear map in closed form,
:func:`linear_map`): the parameters are
at most :math:`2D + D(D-1)` numbers, far fewer than nutpie's neural flows — and where there are P scale parents
the log-scales depend on them alone (:func:`scale_mask`): :math:`2D + D(D-1)/2 + DP`.

Keeping the map
---------------
The map is kept only when it helps: on held-out draws the Fisher divergence of the fitted map must be below
``keep_ratio`` × that of the best *linear* map fitted the same way (what a dense metric achieves) and lower by
``min_gain`` per dimension; a Gaussian target, whose linear map is already exact, is refused.
:func:`fit_transport` returns the map (or None) and a :class:`TransportDecision` — the record the sampler
puts in ``trace.info["decisions"]``.

Sampling in z
-------------
:func:`transported` returns an :class:`~gnomon.objective.objective.Objective` over z with
:math:`\log p(T(z)) + \log|\det ∂T/∂z|` and ``thetamap=`` the map, so :func:`gnomon.sample` on it returns a
Trace whose ``theta`` is base θ (decoded with :meth:`TransportMap.to_theta`) and ``z`` the sampler's
coordinates, as for an :class:`~gnomon.thetaspace.eigenmap.EigenMap`. The map's arrays travel as the
objective's data, so a second map of the same dimension reuses the compiled sampler.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.sampler.transport_core import (  # noqa: F401  (the map's mathematics, re-exported: tp.forward, ...)
    EXACT_FISHER,
    NO_BOUNDS,
    Bounds,
    TransportParams,
    _bounds,
    _loss,
    _per_dim_fisher,
    _train,
    cap,
    fisher_residuals,
    forward,
    inverse,
    log_scales,
)
from gnomon.sampler.transport_map import TRANSPORT_SCHEMA, TransportMap, apply, transported  # noqa: F401


class TransportSettings(NamedTuple):
    """How :func:`fit_transport` trains and judges a map.

    Attributes:
      max_draws: draws used (a random subset beyond that; the cost of training grows linearly).
      holdout: the fraction of draws held out to judge the map.
      max_iter: L-BFGS iterations of the full map's fit (the linear map is fitted in closed form, by L-BFGS only
        where the draws do not determine it: N ≤ D).
      tol: stop when the gradient norm of the loss falls below this.
      keep_ratio: keep the map when its held-out Fisher divergence is below ``keep_ratio`` × the linear map's.
      l2: a ridge on ``A`` and ``B`` (relative to the log-loss), against overfitting few draws.
      min_gain: and only when it lowers the held-out Fisher divergence per dimension by at least this much
        (below it the linear map — the metric the sampler adapts anyway — is already close to N(0, I)).
      cap: how far (in log units) a log-scale may extrapolate beyond the range the training draws span
        (:class:`Bounds`); None (default): no cap. Measured: a cap of 0.5 or 3 made NUTS in z diverge on the
        funnels, whose exact map extrapolates correctly, and did not help the hierarchical regression, whose
        failure is the family's ceiling (docs/sampling.md).
      scale_from: ``"parents"`` (default): where there are scale parents (:func:`parent_order`), the log-scales
        depend on them alone (:func:`scale_mask`); ``"all"``: on every earlier coordinate.
      shift_gate: where there are scale parents, train the shift's gate (:func:`forward`) from
        :data:`GATE_START`; False: no gate (the shift weights act unscaled, the map before Dec 2026).
    """

    max_draws: int = 1000
    holdout: float = 0.25
    max_iter: int = 200
    tol: float = 1e-6
    keep_ratio: float = 0.5
    l2: float = 1e-4
    min_gain: float = 0.05
    cap: float | None = None
    scale_from: str = "parents"
    shift_gate: bool = True


class TransportDecision(NamedTuple):
    """What :func:`fit_transport` decided and why: ``action`` is ``"transport kept"`` or ``"transport refused"``;
    ``details`` holds the held-out Fisher divergences (per dimension) of the linear and the full map, the worst
    coordinate, the draws used, the L-BFGS iterations, the training seconds and the ordering."""

    action: str
    message: str
    details: dict

    def as_info(self) -> dict[str, Any]:
        return {"action": self.action, "message": self.message, **self.details}


GATE_START = -2.0  # the gate logits' start: γ ≈ 0.12, mostly scaled. The logits barely move in training (their
# gradient is small where the draws are), so the start matters: on the sampler's draws of the 100-d funnel the
# held-out Fisher divergence was 3e-3 unscaled, 2.5e-3 from γ = 0.5, 3e-6 from γ = 0.12; on the stochastic
# volatility 0.12 / 0.059 (from 0.12), on the hierarchical regression 0.062 / 0.051 (where μ's column went to 1)


# ------------------------------------------------------------------------------------------------ fitting
def standardisation(theta: np.ndarray, grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""nutpie's first affine map from draws and gradients: :math:`s = \sqrt{\mathrm{sd}(θ)/\mathrm{sd}(g)}`,
    :math:`m = \overline{θ} + \overline{g} s^2` (exact for a Gaussian with a diagonal covariance)."""
    th, g = np.asarray(theta, np.float64), np.asarray(grads, np.float64)
    s = np.sqrt(np.clip(th.std(0), 1e-8, 1e8) / np.clip(g.std(0), 1e-8, 1e8))
    return th.mean(0) + g.mean(0) * s**2, s


def linear_map(x: np.ndarray, gx: np.ndarray, dtype: Any) -> TransportParams | None:
    r"""The best linear map :math:`x = a + L u` in Fisher divergence, in closed form: for u = L⁻¹(x − a) the
    divergence is :math:`\mathrm{tr}(Σ^{-1} C_x) + \mathrm{tr}(Σ C_g)` + terms free of Σ = LLᵀ (the cross term
    :math:`(x-a)^T L^{-T} L^T g` does not depend on L), minimised by :math:`Σ C_g Σ = C_x`:

    .. math:: Σ = C_g^{-1/2} \big(C_g^{1/2} C_x C_g^{1/2}\big)^{1/2} C_g^{-1/2}, \qquad a = \bar x + Σ \bar g

    (the dense form of the standardisation; nutpie's dense metric). L is Σ's Cholesky factor: its log-diagonal the
    log-scales, its strictly lower part the shift weights. None where the draws do not determine it (N ≤ D, or a
    covariance that is not positive definite): the caller trains it by L-BFGS instead. Fitting it by L-BFGS took
    100–180 iterations and a third of the training's time on the 100-d targets."""
    x, gx = np.asarray(x, np.float64), np.asarray(gx, np.float64)
    n, d = x.shape
    if n <= d:
        return None
    cx, cg = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(gx, rowvar=False))
    try:
        ev, vec = np.linalg.eigh(cg)
        if ev.min() <= 1e-10 * ev.max():
            return None
        root = (vec * np.sqrt(ev)) @ vec.T
        inv_root = (vec / np.sqrt(ev)) @ vec.T
        em, vm = np.linalg.eigh(root @ cx @ root)
        if em.min() <= 1e-10 * em.max():
            return None
        sigma = inv_root @ ((vm * np.sqrt(em)) @ vm.T) @ inv_root
        chol = np.linalg.cholesky((sigma + sigma.T) / 2)
    except np.linalg.LinAlgError:
        return None
    a = x.mean(0) + sigma @ gx.mean(0)
    lower = np.tril(chol, -1)
    return TransportParams(*(np.asarray(v, dtype) for v in (a, np.log(np.diag(chol)), lower, np.zeros((d, d)),
                                                             np.zeros(d))))


def parent_order(x: np.ndarray, forced: Any = ()) -> tuple[np.ndarray, int]:
    """An ordering of the coordinates, *scale parents* first: coordinate k scores by how well it predicts the
    log spread of the others, Σ_j corr(x_k, log|x_j − median_j|)² (v in a funnel, log τ in a hierarchical
    model), then *shift parents* by Σ_j corr(x_k, x_j)² (μ). A linear map fits any ordering; a log-scale can
    only depend on coordinates before it. The coordinates ``forced`` are scale parents whatever their score (the
    precision parents the log density's derivatives name: :func:`gnomon.sampler.conditional_map.analyse`).
    Returns the ordering and the number of scale parents at its head."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    if d == 1:
        return np.zeros(1, np.int64), 0
    xs = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    spread = np.log(np.abs(x - np.median(x, 0)) + 1e-3 * np.maximum(x.std(0), 1e-12))
    spread = (spread - spread.mean(0)) / np.maximum(spread.std(0), 1e-12)
    rs = (xs.T @ spread) / n
    rl = (xs.T @ xs) / n
    np.fill_diagonal(rs, 0.0)
    np.fill_diagonal(rl, 0.0)
    scale_score = np.sum(rs**2, axis=1)
    shift_score = np.sum(rl**2, axis=1)
    # a clear scale parent explains at least one other coordinate's spread (|corr| ≥ 0.3 on average over
    # 1/√D of them ...): rank parents by the scale score, everything else by the shift score after them
    parent = scale_score > max(0.5 * scale_score.max(), 0.09)
    parent[np.asarray(forced, np.int64)] = True
    key = np.where(parent, 1e6 + scale_score, shift_score)
    return np.argsort(-key, kind="stable"), int(np.sum(parent))


def scale_start(p_lin: TransportParams, x: np.ndarray, parents: int) -> TransportParams:
    r"""A start for the full map when there are scale parents (the first ``parents`` ordered coordinates, P):
    the parents standardised by their draws' moments (u_P; the Fisher-optimal linear map squeezes a funnel's v,
    whose gradients in the neck are huge), then for every other coordinate the least-squares line of
    :math:`x_j` on u_P (the shift: a_j, A's row) and of the log of the residual's size on u_P (for
    :math:`r_j = e^{h_j(u_P)} ε_j`, ε ~ N(0, 1), :math:`E\log|r_j| = h_j − 0.635`: c_j and B's row). This is
    the non-centring map when the model is one; from B = 0 L-BFGS needs about a thousand iterations to find a
    funnel's log-scale. Without parents the linear map ``p_lin`` is the start."""
    if parents == 0 or parents >= np.shape(x)[1]:  # no parents, or no children to scale
        return p_lin
    x = np.asarray(x, np.float64)
    n, d = x.shape
    a, c = np.zeros(d), np.zeros(d)
    aw, bw = np.zeros((d, d)), np.zeros((d, d))
    a[:parents] = x[:, :parents].mean(0)
    c[:parents] = np.log(np.maximum(x[:, :parents].std(0), 1e-12))
    up = (x[:, :parents] - a[:parents]) / np.exp(c[:parents])
    design = np.c_[np.ones(n), up]
    ridge = 1e-6 * n * np.eye(parents + 1)
    gram = design.T @ design + ridge
    h = np.zeros((n, d - parents))
    for _ in range(3):  # the shift by least squares weighted by the current spread, then the spread again
        shift = np.stack([np.linalg.solve((design * w[:, None]).T @ design + ridge, (design * w[:, None]).T @ xj)
                          for w, xj in zip(np.exp(-2 * h).T, x[:, parents:].T, strict=True)], axis=1)
        resid = x[:, parents:] - design @ shift
        spread = np.linalg.solve(gram, design.T @ np.log(np.abs(resid) + 1e-12))
        h = np.clip(design @ spread, -30.0, 30.0)
    a[parents:], aw[parents:, :parents] = shift[0], shift[1:].T
    c[parents:], bw[parents:, :parents] = spread[0] + 0.635, spread[1:].T
    dt = np.asarray(p_lin.shift).dtype
    return TransportParams(*(jnp.asarray(np.asarray(v, dt)) for v in (a, c, aw, bw)))


def scale_mask(d: int, parents: int, settings: TransportSettings, dtype: Any) -> np.ndarray:
    """Which log-scale weights B the full fit trains (ordered coordinates, (D, D), ones where trained): with
    scale parents and ``settings.scale_from == "parents"``, only their columns — a child's log-scale depends on
    the parents alone, D·P weights instead of D(D−1)/2 (on the 100-d funnel ~450 training draws fitted ~5000
    free log-scale weights, and the noise in them moved v's mean 0.1–0.2 sd); otherwise every earlier
    coordinate."""
    mask = np.ones((d, d), dtype)
    if settings.scale_from == "parents" and 0 < parents < d:
        mask[:, parents:] = 0.0
    return mask


def _prepare(theta, grads, loc, scale, order):
    x = ((theta - loc) / scale)[:, order]
    gx = (grads * scale)[:, order]
    return x, gx


def fit_transport(
    theta: Any, grads: Any, *, seed: int = 0, settings: TransportSettings | None = None, scale_parents: Any = ()
) -> tuple[TransportMap | None, TransportDecision]:
    """Fit the affine autoregressive map to draws ``theta`` (N, D) and their gradients ``grads`` = ∇ log p
    (N, D) (the sampler's draws: chains and steps flattened; non-finite rows are dropped), and judge it; ``seed``
    picks the held-out draws (and the subset beyond ``settings.max_draws``); ``scale_parents``: coordinates made
    scale parents whatever the draws' correlations say (:func:`parent_order`).

    Returns ``(map or None, decision)``: the map when its held-out Fisher divergence is below
    ``settings.keep_ratio`` × the linear map's (the map helps beyond a dense metric), else None. No log density
    is evaluated: the cost is the training's wall time (``decision.details["train_s"]``).

    Raises ValueError for arrays of different or wrong shapes, or fewer than 20 finite draws."""
    st = settings or TransportSettings()
    if st.scale_from not in ("parents", "all"):
        raise ValueError(f"TransportSettings.scale_from must be 'parents' or 'all', got {st.scale_from!r}")
    th = np.asarray(theta)
    g = np.asarray(grads)
    if th.ndim != 2 or th.shape != g.shape:
        raise ValueError(f"theta and grads must both have shape (N, D); got {th.shape} and {g.shape}")
    dtype = th.dtype if np.issubdtype(th.dtype, np.floating) else np.float64
    ok = np.all(np.isfinite(th), axis=1) & np.all(np.isfinite(g), axis=1)
    th, g = th[ok].astype(np.float64), g[ok].astype(np.float64)
    n, d = th.shape
    if n < 20:
        raise ValueError(f"fit_transport needs at least 20 finite draws with gradients, got {n} of {len(ok)}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)[: st.max_draws]
    th, g = th[idx], g[idx]
    n = len(th)
    n_val = max(int(round(st.holdout * n)), 5)
    tr, va = slice(n_val, None), slice(0, n_val)
    loc, scale = standardisation(th[tr], g[tr])
    bad = [k for k in np.asarray(scale_parents, np.int64).ravel() if not 0 <= k < d]
    if bad:
        raise ValueError(f"scale_parents {bad} are not coordinates of a {d}-dimensional θ")
    order, parents = parent_order((th[tr] - loc) / scale, scale_parents)
    x, gx = _prepare(th, g, loc, scale, order)
    # the slices on the host, every array made once: eager device operations each compiled a program of their own
    x_tr, gx_tr, x_va, gx_va = (jnp.asarray(np.asarray(a, dtype)) for a in (x[tr], gx[tr], x[va], gx[va]))
    zeros, square = np.zeros((d,), dtype), np.zeros((d, d), dtype)
    p0 = TransportParams(zeros, zeros, square, square, zeros)
    l2, tol = (jnp.asarray(np.asarray(v, dtype)) for v in (st.l2, st.tol))  # (converted on the host)
    p_lin, it_lin = linear_map(x[tr], gx[tr], dtype), 0
    if p_lin is None:  # too few draws for the closed form: L-BFGS from the standardisation
        p_lin, _, it_lin = _train(p0, p0, x_tr, gx_tr, l2, tol, square, np.False_, max_iter=st.max_iter)
    p_lin = TransportParams(*(np.asarray(v) for v in p_lin))._replace(scale_w=square)
    gated = st.shift_gate and 0 < parents < d
    p_start = scale_start(p_lin, x[tr].astype(dtype), parents)._replace(shift_gate=np.full(d, GATE_START, dtype))
    p_full, _, it_full = _train(p_start, p_lin, x_tr, gx_tr, l2, tol, scale_mask(d, parents, st, dtype),
                                np.bool_(gated), max_iter=st.max_iter)
    bounds = None
    if st.cap is not None:  # the log-scales' range over the training draws, widened by the cap
        lo, hi = _bounds(p_full, x_tr)
        bounds = Bounds(lo - st.cap, hi + st.cap)
    f_lin = np.asarray(_per_dim_fisher(p_lin, x_va, gx_va, None))  # (bounds passed alike: one program)
    f_full = np.asarray(_per_dim_fisher(p_full, x_va, gx_va, bounds))
    f_id = np.asarray(_per_dim_fisher(p0, x_va, gx_va, None))
    train_s = time.perf_counter() - t0
    fl, ff, fi = (float(np.mean(f)) for f in (f_lin, f_full, f_id))
    worst = int(order[int(np.argmax(f_full))])
    details = {
        "fisher_standardised": fi,
        "fisher_linear": fl,
        "fisher_map": ff,
        "worst_coordinate": worst,
        "draws": int(n),
        "held_out": int(n_val),
        "iterations": [int(it_lin), int(it_full)],
        "train_s": round(train_s, 3),
        "order": [int(i) for i in order[: min(d, 8)]],
        "scale_parents": parents,
        "forced_parents": [int(k) for k in np.asarray(scale_parents, np.int64).ravel()],
        "grad_evals": 0,
    }
    helps = math.isfinite(ff) and ff < st.keep_ratio * fl and fl - ff > st.min_gain
    what = (f"held-out Fisher divergence per dimension {ff:.3g} with the map vs {fl:.3g} for the best linear map "
            f"(a dense metric) and {fi:.3g} standardised; {n} draws, {train_s:.1f} s of training")
    if not helps:
        return None, TransportDecision(
            "transport refused",
            f"transport map refused: {what}: it does not improve on a linear map by {1 / st.keep_ratio:g}× and "
            f"{st.min_gain:g} per dimension",
            details,
        )
    p_np = TransportParams(*(np.asarray(v, dtype) for v in p_full))
    b_np = None if bounds is None else Bounds(*(np.asarray(v, dtype) for v in bounds))
    tmap = TransportMap(loc.astype(dtype), scale.astype(dtype), order.astype(np.int64), p_np, b_np,
                        info={"fisher_map": ff, "fisher_linear": fl, "draws": int(n),
                              "scale_parents": [int(k) for k in order[:parents]]})
    return tmap, TransportDecision("transport kept", f"transport map kept: {what}", details)


def standard_normal_check(tobj: Objective, z: Any) -> dict[str, float]:
    """Whitened-gradient diagnostics of a transported objective at z (N, D): in a perfect map ``∇ log p_z(z) = −z``;
    returns the mean per-dimension ``|z + ∇|²`` and the sd of the gradients (1 for N(0, I))."""
    z = jnp.asarray(z)
    grads = jax.vmap(jax.grad(tobj.log_prob))(z)
    r = np.asarray(z + grads)
    return {"fisher": float(np.mean(r**2)), "grad_sd": float(np.mean(np.std(np.asarray(grads), axis=0)))}
