r"""The transport map's mathematics, pure and jittable: the parameters (:class:`TransportParams`), the map
:math:`x = T_π(u)` and its inverse in the ordered, standardised coordinates (:func:`forward`, :func:`inverse`),
the Fisher-divergence residuals (:func:`fisher_residuals`) and the compiled training (:func:`_train`: full-batch
L-BFGS on the log Fisher divergence). :mod:`gnomon.sampler.transport` explains the map, fits and judges it;
:mod:`gnomon.sampler.transport_map` is the θ-map built from it."""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class TransportParams(NamedTuple):
    """The trainable arrays (ordered coordinates): shift ``a`` (D,), log-scale ``c`` (D,), the strictly lower
    triangular weights of the shift ``A`` (D, D) and of the log-scale ``B`` (D, D) on the earlier coordinates of
    u (entries on and above the diagonal are ignored), and the shift's gate logits ``g`` (D,) (None, or +inf: no
    gate — see :func:`forward`)."""

    shift: Any
    log_scale: Any
    shift_w: Any
    scale_w: Any
    shift_gate: Any = None


# ------------------------------------------------------------------------------------------------ the map (pure)
def _tri(d: int, dtype: Any) -> jnp.ndarray:
    return jnp.tri(d, d, -1, dtype=dtype)


class Bounds(NamedTuple):
    """The range each log-scale :math:`h_j` may take (ordered coordinates, (D,) each): beyond it :math:`h_j` is
    softly capped (:func:`cap`). Set to the range the training draws span, so the map does not extrapolate its
    exponential log-scale into regions it never saw (a cap keeps T a bijection with a triangular Jacobian: the
    density in z stays exact, only the geometry beyond the range is left as it is)."""

    lo: Any
    hi: Any


NO_BOUNDS = 50.0  # |h| ≤ 50: no cap (the standardised coordinates never need e^50)
CAP_SOFTNESS = 0.5  # the width of the cap's knee: a capped log-scale saturates this far beyond its bound


def cap(h: Any, b: Bounds | None) -> Any:
    r"""The log-scale ``h`` softly capped to ``[lo, hi]``: the identity inside, and
    :math:`hi + m\tanh((h - hi)/m)` above (``lo`` alike below), m = :data:`CAP_SOFTNESS` — continuous with a
    continuous derivative, so NUTS sees a smooth density."""
    if b is None:
        return h
    m = CAP_SOFTNESS
    above = b.hi + m * jnp.tanh((h - b.hi) / m)
    below = b.lo - m * jnp.tanh((b.lo - h) / m)
    return jnp.where(h > b.hi, above, jnp.where(h < b.lo, below, h))


def _scaled(dh: Any, shift: Any) -> Any:
    """``2 sigmoid(dh) · shift``: the shift scaled like ``e^dh`` where the row's scale is below its typical one (a
    neck), at most doubled above it (unbounded, ``e^dh`` amplified the shift weights' noise in the mouth)."""
    return 2 * jax.nn.sigmoid(dh) * shift


def forward(p: TransportParams, u: Any, bounds: Bounds | None = None) -> tuple[Any, Any]:
    r"""``x = T_π(u)`` in the ordered, standardised coordinates and ``Σ_j h_j(u)`` (the log-det of this part);
    ``u`` (D,); the log-scales capped to ``bounds``.

    With gate logits ``g`` (γ = sigmoid(g) per column k) the shift is

    .. math:: \sum_{k<j} A_{jk} u_k \big(γ_k + (1 - γ_k)\, 2\,\mathrm{sigmoid}(h_j(u) - c_j)\big),

    column k's share ``1 − γ_k`` scaled with row j's relative scale (:func:`_scaled`: like e^{h_j − c_j} below the
    row's typical scale, at most 2 above it): where the log-scale is constant (a linear map) the factor is 1 and
    the map is the affine one for any γ; in a funnel's neck the children's mutual shifts shrink with their scales
    — the shape of a non-centred correlated group or latent series, x_t = μ + σ·Σ L_tk u_k (exact in the neck,
    approximate where σ is above its typical value) — where unscaled (γ = 1) weights fitted in the mouth left a
    narrow correlated structure in the neck."""
    m = _tri(u.shape[-1], u.dtype)
    h = cap(p.log_scale + (p.scale_w * m) @ u, bounds)
    aw = p.shift_w * m
    if p.shift_gate is None:
        x = p.shift + aw @ u + jnp.exp(h) * u
    else:
        gamma = jax.nn.sigmoid(p.shift_gate)
        x = p.shift + aw @ (gamma * u) + _scaled(h - p.log_scale, aw @ ((1 - gamma) * u)) + jnp.exp(h) * u
    return x, jnp.sum(h)


def log_scales(p: TransportParams, u: Any) -> Any:
    """The uncapped log-scales ``h(u)`` for u (N, D)."""
    m = _tri(u.shape[-1], u.dtype)
    return p.log_scale + u @ (p.scale_w * m).T


def _stacked_weights(p: TransportParams) -> Any:
    """The weights each row's log-scale and shift take from earlier coordinates, stacked (D, k, D): the log-scale's
    ``B``, then the shift's ``A`` (or, gated, its unscaled share ``A γ`` and scaled share ``A (1 − γ)``)."""
    m = _tri(p.shift.shape[-1], p.shift.dtype)
    aw, bw = p.shift_w * m, p.scale_w * m
    if p.shift_gate is None:
        return jnp.stack([bw, aw], axis=1)
    gamma = jax.nn.sigmoid(p.shift_gate)
    return jnp.stack([bw, aw * gamma, aw * (1 - gamma)], axis=1)


def _solve_row(r: Any, xj: Any, a: Any, c: Any, lo: Any, hi: Any, gated: bool) -> Any:
    """``u_j`` from ``x_j`` given the products ``r`` (k, ...) of row j's stacked weights with u: elementwise."""
    h = c + r[0]
    if lo is not None:
        h = cap(h, Bounds(lo, hi))
    shift = r[1] + _scaled(h - c, r[2]) if gated else r[1]
    return (xj - a - shift) * jnp.exp(-h)


def _rows(u_t: Any, p: TransportParams, x_t: Any, bounds: Bounds | None) -> Any:
    """Every row's ``u_j`` at once (D, N) from a given u (D, N) — the fixed point ``u = G(u)`` is the inverse."""
    r = jnp.einsum("jmd,dn->mjn", _stacked_weights(p), u_t)
    lo, hi = (None, None) if bounds is None else (bounds.lo[:, None], bounds.hi[:, None])
    return _solve_row(r, x_t, p.shift[:, None], p.log_scale[:, None], lo, hi, p.shift_gate is not None)


def _forward_solve(p: TransportParams, x: Any, bounds: Bounds | None) -> Any:
    w = _stacked_weights(p)
    x_t = x.T  # (D, N): a row of u is contiguous

    def step(u, j):
        lo, hi = (None, None) if bounds is None else (bounds.lo[j], bounds.hi[j])
        uj = _solve_row(w[j] @ u, x_t[j], p.shift[j], p.log_scale[j], lo, hi, p.shift_gate is not None)
        return u.at[j].set(uj), None

    u, _ = jax.lax.scan(step, jnp.zeros_like(x_t), jnp.arange(x.shape[-1]))
    return u.T


def inverse(p: TransportParams, x: Any, bounds: Bounds | None = None) -> Any:
    r"""``u = T_π⁻¹(x)`` for x (N, D): the triangular solve, one coordinate at a time (``lax.scan``).

    Its gradient is implicit: u is the fixed point of :math:`u = G(u; π, x)` (row j solved from the rows before
    it), so :math:`\bar π = (∂G/∂π)^T λ` with :math:`λ = \bar u + (∂G/∂u)^T λ` — a back-substitution, since
    ∂G/∂u is strictly lower triangular. Reverse-mode through the scan stored u (N, D) at every one of its D
    steps and cost ~7× the solve; this costs about three (on the 100-d funnel, 300 draws: 5.5–9.7 → 1.5 ms a
    gradient of the inverse, 8–11 → 2.7 ms one of the training loss)."""
    return _inverse(*jax.tree.map(jnp.asarray, (p, x, bounds)))


@jax.custom_vjp
def _inverse(p: TransportParams, x: Any, bounds: Bounds | None) -> Any:
    return _forward_solve(p, x, bounds)


def _inverse_fwd(p, x, bounds):
    u = _forward_solve(p, x, bounds)
    return u, (p, x, bounds, u)


def _inverse_bwd(res, u_bar):
    p, x, bounds, u = res
    u_t, x_t = u.T, x.T
    w = _stacked_weights(p)  # (D, k, D)
    k, d = w.shape[1], w.shape[0]
    r = jnp.einsum("jmd,dn->mjn", w, u_t)
    lo, hi = (None, None) if bounds is None else (bounds.lo[:, None], bounds.hi[:, None])
    # ∂u_j/∂r_{m,j} for every row and draw (elementwise: one pull of ones gives them all)
    _, pull = jax.vjp(lambda r_: _solve_row(r_, x_t, p.shift[:, None], p.log_scale[:, None], lo, hi,
                                            p.shift_gate is not None), r)
    (coef,) = pull(jnp.ones_like(x_t))  # (k, D, N)
    w_cols = jnp.transpose(w, (2, 1, 0)).reshape(d, k * d)  # row i: column i of every stacked weight
    v_t = u_bar.T

    def step(e, i):  # λ_i = ū_i + Σ_{j>i} Σ_m w[j, m, i] coef[m, j] λ_j   (e holds coef · λ for rows > i)
        lam_i = v_t[i] + w_cols[i] @ e.reshape(k * d, -1)
        return e.at[:, i].set(coef[:, i] * lam_i), lam_i

    _, lam = jax.lax.scan(step, jnp.zeros_like(coef), jnp.arange(d), reverse=True)
    _, pull_params = jax.vjp(lambda p_, x_, b_: _rows(u_t, p_, x_.T, b_), p, x, bounds)
    return pull_params(lam)


_inverse.defvjp(_inverse_fwd, _inverse_bwd)


def fisher_residuals(p: TransportParams, x: Any, gx: Any, bounds: Bounds | None = None) -> Any:
    """``z + ∇_z log p_z(z)`` at ``z = T⁻¹(x)`` for draws x (N, D) with gradients ``gx = ∂ log p/∂x`` (ordered,
    standardised coordinates): zero for every draw exactly when the map pushes N(0, I) onto the target."""
    u = inverse(p, x, bounds)

    def one(ui, gi):
        _, pull = jax.vjp(lambda v: forward(p, v, bounds), ui)
        (score,) = pull((gi, jnp.ones((), ui.dtype)))
        return ui + score

    return jax.vmap(one)(u, gx)


def _loss(p: TransportParams, x: Any, gx: Any, l2: Any, scale_mask: Any, gate_on: Any = False) -> Any:
    p = _effective(p, scale_mask, gate_on)
    r = fisher_residuals(p, x, gx)
    fisher = jnp.mean(jnp.sum(r**2, axis=-1))
    m = _tri(x.shape[-1], x.dtype)
    ridge = jnp.sum((p.shift_w * m) ** 2) + jnp.sum((p.scale_w * m) ** 2)
    return jnp.log(fisher + 1e-12) + l2 * ridge


def _effective(p: TransportParams, scale_mask: Any, gate_on: Any) -> TransportParams:
    """The map a training's parameters describe: the log-scale weights masked, the gate off (+inf) unless
    ``gate_on``."""
    p = p._replace(scale_w=p.scale_w * scale_mask)
    if p.shift_gate is not None:
        p = p._replace(shift_gate=jnp.where(gate_on, p.shift_gate, jnp.inf).astype(p.shift_gate.dtype))
    return p


EXACT_FISHER = 1e-7  # a Fisher divergence per dimension below this: the map is exact (float32), training stops


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _train(p0: TransportParams, fallback: TransportParams, x: Any, gx: Any, l2: Any, tol: Any, scale_mask: Any,
           gate_on: Any = False, *, max_iter: int):
    """Full-batch L-BFGS on the log Fisher divergence from ``p0`` (from ``fallback`` where the loss is not finite at
    ``p0``); returns (params, final loss, iterations), the log-scale weights multiplied by ``scale_mask`` (D, D)
    and the shift's gate trained when ``gate_on`` (else +inf: none) (both traced: the linear fit, a zero mask
    and no gate, and the full fit share one compiled program)."""
    import optax

    fn = functools.partial(_loss, x=x, gx=gx, l2=l2, scale_mask=scale_mask, gate_on=gate_on)
    p0 = jax.tree.map(lambda a, b: jnp.where(jnp.isfinite(fn(p0)), a, b), p0, fallback)
    opt = optax.lbfgs(memory_size=20)
    vg = optax.value_and_grad_from_state(fn)

    def cond(c):
        _, _, it, gn, val, _, _ = c
        # (and stop once the map is exact to float precision: EXACT_FISHER per dimension)
        exact = val < math.log(EXACT_FISHER * x.shape[-1])
        return (it < max_iter) & (gn > tol) & jnp.isfinite(val) & ((it == 0) | ~exact)

    def body(c):
        p, st, it, _, _, best, best_val = c
        val, g = vg(p, state=st)
        better = val < best_val  # (NaN is never better)
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b), p, best)
        best_val = jnp.where(better, val, best_val)
        upd, st = opt.update(g, st, p, value=val, grad=g, value_fn=fn)
        p = optax.apply_updates(p, upd)
        return p, st, it + 1, optax.tree.norm(g), val, best, best_val

    inf = jnp.asarray(jnp.inf, x.dtype)
    init = (p0, opt.init(p0), jnp.asarray(0), inf, jnp.asarray(0.0, x.dtype), p0, inf)
    p, _, it, _, _, best, best_val = jax.lax.while_loop(cond, body, init)
    # the lowest loss seen, not the last iterate: near an exact map the log Fisher divergence falls towards
    # log 1e-12 and float32 line searches there can throw the iterate far off (seen on the 10-d funnel: −14.3
    # after 100 iterations, +37.7 after 200)
    last = fn(p)
    keep_last = last <= best_val
    p = jax.tree.map(lambda a, b: jnp.where(keep_last, a, b), p, best)
    return _effective(p, scale_mask, gate_on), jnp.where(keep_last, last, best_val), it


@jax.jit
def _per_dim_fisher(p: TransportParams, x: Any, gx: Any, bounds: Bounds | None = None) -> Any:
    r = fisher_residuals(p, x, gx, bounds)
    return jnp.mean(r**2, axis=0)


@jax.jit
def _bounds(p: TransportParams, x: Any) -> Bounds:
    """The range of the log-scales over the draws x (N, D)."""
    h = log_scales(p, inverse(p, x))
    return Bounds(jnp.min(h, axis=0), jnp.max(h, axis=0))
