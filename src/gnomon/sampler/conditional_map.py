r"""Conditionally Gaussian coordinates non-centred from the log density itself: a transport map with no model
structure to read and no training.

Why
---
A fitted transport map (:mod:`gnomon.sampler.transport`) learns the posterior from its draws, so in a neck it
extrapolates: on the benchmark's hand-written hierarchical regression the map's neck limit was wrong where no
draw had been (log τ's sd 16–39 % low on six keys of six, with R̂ ≤ 1.017), and on the half-Cauchy eight schools
15–27 %. A numpyro model's own non-centring (:mod:`gnomon.sampler.noncentring`) is exact there, but a
hand-written log density has no sites to read. It has derivatives, though, and in a hierarchical model they tell
the structure exactly.

The map
-------
Split θ into **groups** G and **roots** R such that, given θ_R, the groups are independent Gaussians:

.. math:: \log p(θ_R, θ_G) = A(θ_R) - \tfrac12 \sum_{j∈G} p_j(θ_R)\,\big(θ_j - m_j(θ_R)\big)^2 .

Then :math:`p` and :math:`m` follow exactly from one forward-over-reverse derivative at any reference
:math:`c` of the groups: with :math:`g = ∇_G \log p(θ_R, c)` and the Hessian–vector product along :math:`1_G`
(the Hessian of the groups is diagonal), :math:`p = -H_{GG} 1_G` and :math:`m = c + g / p`. The map is

.. math:: θ_R = \mathrm{loc} + \mathrm{scale} ⊙ z_R, \qquad θ_G = m(θ_R) + p(θ_R)^{-1/2} ⊙ z_G,

with :math:`\log|\det ∂θ/∂z| = \sum \log \mathrm{scale} - \tfrac12 \sum_j \log p_j(θ_R)`. Under it the groups
are *exactly* N(0, 1) and independent of :math:`z_R`, whose density is the roots' marginal posterior: the neck
is gone by construction, in the mouth as in the neck (the precision includes the data's, so this is the full
conditional non-centring — better than the prior's :math:`θ_j = μ + τ z_j` where the data are informative). It
is a bijection for any θ_R, so sampling in z is exact even where the structure holds only approximately (then
only the geometry suffers: the run in z's checks judge it).

What it costs
-------------
Every gradient in z differentiates through the Hessian–vector product: third-order automatic differentiation,
about 7–10 gradients of the log density in arithmetic (:attr:`ConditionalMap.grad_cost`, read from XLA's cost
analysis of the two programs). The sampler counts each gradient in z as that many (``info["grad_evals"]``).

When it is used
---------------
:func:`conditional_map` finds the split from the draws the warmup already has (Hessians at three of them):

* a coordinate is a candidate when its conditional is Gaussian (its Hessian diagonal does not change when it
  moves by two robust sds, to :data:`TOL` relative) and concave;
* the groups are a maximal set of candidates with zero mutual Hessian entries (greedily, fewest links first);
* it is declined unless the groups are at least :data:`MIN_GROUPS` and at least as many as the roots (where most
  coordinates are roots the map saves nothing it costs), the dimension is at most :data:`MAX_DIM` (the Hessians),
  the groups' conditional precision varies across the draws by more than :data:`NECK_RATIO` (a neck: where it
  does not, a linear map does as well), and the conditional log-sd and mean are *not* affine in the roots to
  :data:`AFFINE_TOL` (:func:`affine_misfit`; where they are — Neal's funnel — the fitted affine autoregressive
  map holds the structure exactly at one gradient per gradient, and is trained instead).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.sampler.transport_map import objective_over_z

CONDITIONAL_SCHEMA = 1
MAX_DIM = 256  # the structure test takes D×D Hessians
MIN_GROUPS = 2
NECK_RATIO = 4.0  # max / min of a group's conditional precision over the draws: a neck
TOL = {4: 2e-3, 8: 1e-7}  # relative, by the itemsize of θ's dtype (float32, float64)
POOL_ROWS = 256  # the draws the neck test and the batched map evaluations take at a time
PARENT_SENSITIVITY = 0.5  # |∂ log p_j / ∂θ_k| × sd_k: θ_k sets group j's scale (a scale parent for the fitted map)
AFFINE_TOL = 0.02  # the structure is affine to this (conditional sds): the fitted map holds it, cheaper
DEFAULT_COST = 10.0  # gradients per gradient in z where XLA's cost analysis is unavailable


def base_log_density(obj: Objective):
    """``log p(θ, data)`` of ``obj`` as the sampler sees it (its Jacobian term included)."""

    def lp(th, d):
        out = obj.model_log_density(th, d)
        if obj.log_jacobian is not None:
            out = out + obj.log_jacobian(th)
        return out

    return lp


# ------------------------------------------------------------------------------------------------ the map (pure)
def _assemble(a: dict, th_r: Any, th_g: Any) -> Any:
    d = a["roots"].shape[0] + a["groups"].shape[0]
    x = jnp.zeros(d, jnp.result_type(th_r, th_g))
    return x.at[a["roots"]].set(th_r).at[a["groups"]].set(th_g)


def moments(lp: Any, a: dict, th_r: Any, d: Any) -> tuple[Any, Any]:
    """The groups' conditional mean ``m`` and precision ``p`` (G,) given the roots ``θ_R``: one gradient and one
    Hessian–vector product along 1_G at the reference ``a["ref"]``. A precision at or below zero (no concave
    conditional there) is floored: the map stays a bijection."""

    def grad_g(tg):
        return jax.grad(lp)(_assemble(a, th_r, tg), d)[a["groups"]]

    ref = a["ref"]
    g, hv = jax.jvp(grad_g, (ref,), (jnp.ones_like(ref),))
    floor = jnp.sqrt(jnp.finfo(ref.dtype).tiny)
    p = jnp.maximum(-hv, floor)
    return ref + g / p, p


def forward_one(lp: Any, a: dict, z: Any, d: Any) -> tuple[Any, Any]:
    """``(θ, log|det ∂θ/∂z|)`` for one z (D,)."""
    th_r = a["loc"] + a["scale"] * z[a["roots"]]
    m, p = moments(lp, a, th_r, d)
    th_g = m + z[a["groups"]] * jax.lax.rsqrt(p)
    return _assemble(a, th_r, th_g), jnp.sum(jnp.log(a["scale"])) - 0.5 * jnp.sum(jnp.log(p))


def inverse_one(lp: Any, a: dict, th: Any, d: Any) -> Any:
    """z for one θ (D,)."""
    th_r = th[a["roots"]]
    m, p = moments(lp, a, th_r, d)
    z_r = (th_r - a["loc"]) / a["scale"]
    z_g = (th[a["groups"]] - m) * jnp.sqrt(p)
    return _assemble(a, z_r, z_g)


@functools.lru_cache(maxsize=16)
def _host_programs(obj: Objective) -> tuple[Any, Any]:
    """The map and its inverse over a block of rows, compiled once per objective (the map's arrays and the data
    are arguments: every map of the objective, every call of gn.sample, shares them)."""
    lp = base_log_density(obj)
    fwd = jax.jit(lambda a, z, d: jax.vmap(lambda zi: forward_one(lp, a, zi, d))(z))
    inv = jax.jit(lambda a, th, d: jax.vmap(lambda ti: inverse_one(lp, a, ti, d))(th))
    return fwd, inv


@functools.lru_cache(maxsize=16)
def _test_programs(obj: Objective) -> tuple[Any, Any, Any, Any]:
    """The structure test's programs for ``obj``, compiled once per objective: the Hessian at a point, its
    diagonal after each coordinate's shift by ``step`` (H_jj at x + step_j e_j), the groups' conditional
    moments over a block of draws, and the gradients of some coordinates' log conditional precision."""
    lp = base_log_density(obj)

    def shifted_diag(x, step, d):
        def one(j):
            e = jax.nn.one_hot(j, x.shape[0], dtype=x.dtype)
            _, hv = jax.jvp(lambda y: jax.grad(lp)(y, d), (x + step[j] * e,), (e,))
            return hv[j]

        return jax.vmap(one)(jnp.arange(x.shape[0]))

    at = jax.vmap(lambda x, a, d: moments(lp, a, x[a["roots"]], d), in_axes=(0, None, None))

    def log_precision_grads(x, idx, d):  # ∇ log(−H_jj) at x for each j in idx: (len(idx), D)
        def one(j):
            e = jax.nn.one_hot(j, x.shape[0], dtype=x.dtype)
            return jax.grad(lambda y: jnp.log(-jax.jvp(lambda w: jax.grad(lp)(w, d), (y,), (e,))[1][j]))(x)

        return jax.vmap(one)(idx)

    return jax.jit(jax.hessian(lp)), jax.jit(shifted_diag), jax.jit(at), jax.jit(log_precision_grads)


# ------------------------------------------------------------------------------------------------ the θ-map
@dataclass(frozen=True, eq=False)
class ConditionalMap:
    """``θ = T(z)`` (see the module docstring): the ``roots`` and ``groups`` (indices into θ), the groups'
    reference ``ref``, the roots' standardisation ``loc``/``scale``, and the base objective whose derivatives
    give the groups' conditional moments. A θ-map like :class:`~gnomon.sampler.transport_map.TransportMap`
    (``to_theta``, ``to_z``, ``log_det_jacobian``, ``arrays``, ``hash``, ``describe``, ``to_arrays``); sample with
    :func:`conditioned`."""

    roots: np.ndarray
    groups: np.ndarray
    ref: np.ndarray
    loc: np.ndarray
    scale: np.ndarray
    base: Objective
    data: Any
    grad_cost: float = DEFAULT_COST
    info: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.roots.shape[0] + self.groups.shape[0])

    @property
    def z_dim(self) -> int:
        return self.dim

    def arrays(self, dtype: Any = None) -> dict[str, Any]:
        """The map as a dict of device arrays (the data of :func:`conditioned`'s objective)."""
        dt = dtype or np.asarray(self.loc).dtype
        return {"roots": jnp.asarray(np.asarray(self.roots, np.int32)),
                "groups": jnp.asarray(np.asarray(self.groups, np.int32)),
                **{k: jnp.asarray(np.asarray(getattr(self, k), dt)) for k in ("ref", "loc", "scale")}}

    @property
    def _programs(self) -> tuple[Any, Any]:
        return _host_programs(self.base)

    def _batched(self, fn: Any, x: Any) -> list[Any]:
        """``fn`` over the rows of x (..., D) in blocks of :data:`POOL_ROWS` (padded: one compiled shape)."""
        x = jnp.asarray(x)
        flat = x.reshape(-1, self.dim)
        a = self.arrays(x.dtype)
        outs = []
        for i in range(0, max(flat.shape[0], 1), POOL_ROWS):
            block = flat[i : i + POOL_ROWS]
            n = block.shape[0]
            if n == 0:
                break
            pad = jnp.concatenate([block, jnp.broadcast_to(block[-1:], (POOL_ROWS - n, self.dim))]) \
                if n < POOL_ROWS else block
            outs.append(jax.tree.map(lambda v, n=n: v[:n], fn(a, pad, self.data)))
        return outs

    def _forward(self, z: Any) -> tuple[Any, Any]:
        z = jnp.asarray(z)
        outs = self._batched(self._programs[0], z)
        th = jnp.concatenate([o[0] for o in outs]) if outs else jnp.zeros((0, self.dim), z.dtype)
        ld = jnp.concatenate([o[1] for o in outs]) if outs else jnp.zeros((0,), z.dtype)
        return th.reshape(z.shape), ld.reshape(z.shape[:-1])

    def to_theta(self, z: Any) -> Any:
        """θ = T(z) for z (..., D)."""
        return self._forward(z)[0]

    def log_det_jacobian(self, z: Any) -> Any:
        """``log|det ∂θ/∂z|`` at z (..., D)."""
        return self._forward(z)[1]

    def to_z(self, theta: Any) -> Any:
        """z = T⁻¹(θ) for θ (..., D)."""
        theta = jnp.asarray(theta)
        outs = self._batched(self._programs[1], theta)
        return jnp.concatenate(outs).reshape(theta.shape) if outs else theta

    @functools.cached_property
    def hash(self) -> str:
        h = hashlib.sha256(b"conditional gaussian")
        for v in (self.roots, self.groups, self.ref, self.loc, self.scale):
            h.update(np.ascontiguousarray(np.asarray(v, np.float64)).tobytes())
        return h.hexdigest()[:16]

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(getattr(self, k)) for k in ("roots", "groups", "ref", "loc", "scale")}

    def describe(self) -> dict[str, Any]:
        return {"transport_schema": CONDITIONAL_SCHEMA, "type": "conditional gaussian", "hash": self.hash,
                "dim": self.dim, "grad_cost": float(self.grad_cost), "roots": [int(i) for i in self.roots],
                **{k: v for k, v in self.info.items() if isinstance(v, (int, float, str, list))}}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], meta: dict[str, Any] | None, obj: Objective,
                    data: Any) -> ConditionalMap:
        """Rebuild from :meth:`to_arrays` for the objective ``obj`` and its ``data`` (the moments come from them;
        the hash in ``meta`` is checked)."""
        missing = [k for k in ("roots", "groups", "ref", "loc", "scale") if k not in arrays]
        if missing:
            raise ValueError(f"conditional map arrays lack {missing}")
        meta = meta or {}
        cmap = cls(*(np.asarray(arrays[k]) for k in ("roots", "groups", "ref", "loc", "scale")), base=obj,
                   data=data, grad_cost=float(meta.get("grad_cost", DEFAULT_COST)), info={"structural": True})
        if "hash" in meta and meta["hash"] != cmap.hash:
            raise ValueError(f"conditional map hash mismatch: arrays give {cmap.hash}, the description "
                             f"{meta['hash']}")
        return cmap


def is_conditional(meta: dict | None) -> bool:
    """Whether a saved map's description (``info["transport"]``) is a :class:`ConditionalMap`'s."""
    return bool(meta) and meta.get("type") == "conditional gaussian"


def conditioned(obj: Objective, cmap: ConditionalMap) -> Objective:
    """The objective over z: ``log_prob(z) = obj.log_prob(T(z)) + log|det ∂T/∂z|`` with ``thetamap=cmap``; the
    map's arrays are data beside the base objective's (as :func:`gnomon.sampler.transport.transported`)."""
    if not isinstance(cmap, ConditionalMap):
        raise ValueError(f"conditioned needs a ConditionalMap, got {type(cmap).__name__}")
    if cmap.dim != obj.dim:
        raise ValueError(f"the map has dimension {cmap.dim} but the objective {obj.dim}")
    lp = base_log_density(obj)

    def model_log_density(z, d):
        a, bd = d
        th, ld = forward_one(lp, a, z, bd)
        return lp(th, bd) + ld

    return objective_over_z(obj, cmap, model_log_density, "conditional")


# ------------------------------------------------------------------------------------------------ finding it
def _split(hessians: list[np.ndarray], shifted: list[np.ndarray], tol: float) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """Groups, roots and the candidates (conditionally Gaussian and concave: a mask) from Hessians at a few points
    and their diagonals after each coordinate's shift."""
    dim = hessians[0].shape[0]
    cand = np.ones(dim, bool)
    linked = np.zeros((dim, dim), bool)
    for h, hs in zip(hessians, shifted, strict=True):
        diag = np.diag(h)
        cand &= np.isfinite(diag) & (diag < 0) & np.isfinite(hs)
        cand &= np.abs(hs - diag) <= tol * np.abs(diag)
        scale = np.sqrt(np.abs(np.outer(diag, diag)))
        linked |= ~(np.abs(h) <= tol * scale)  # (NaN counts as linked)
    np.fill_diagonal(linked, False)
    degree = (linked & cand[None, :]).sum(1)
    groups: list[int] = []
    for j in sorted(np.flatnonzero(cand), key=lambda j: (degree[j], j)):
        if not any(linked[j, k] for k in groups):
            groups.append(int(j))
    g = np.array(sorted(groups), np.int64)
    r = np.setdiff1d(np.arange(dim), g)
    return g, r, cand


_COSTS: dict = {}


def _grad_cost(obj: Objective, a: dict, data: Any, x: Any) -> float:
    """Gradients of the log density per gradient in z, from XLA's cost analysis of the two lowered programs
    (flops and transcendentals; nothing is compiled), once per objective, split sizes and dtype."""
    key = (id(obj), int(a["roots"].shape[0]), int(a["groups"].shape[0]), str(x.dtype))
    if key not in _COSTS or _COSTS[key][0] is not obj:
        if len(_COSTS) > 64:
            _COSTS.clear()
        _COSTS[key] = (obj, _measure_cost(obj, a, data, x))
    return _COSTS[key][1]


def _measure_cost(obj: Objective, a: dict, data: Any, x: Any) -> float:
    lp = base_log_density(obj)
    zlp = conditioned(obj, ConditionalMap(np.asarray(a["roots"]), np.asarray(a["groups"]), np.asarray(a["ref"]),
                                          np.asarray(a["loc"]), np.asarray(a["scale"]), obj, data))

    def cost(fn, *args):
        c = jax.jit(fn).lower(*args).cost_analysis()
        c = c[0] if isinstance(c, (list, tuple)) else c
        return float(c.get("flops", 0.0)) + float(c.get("transcendentals", 0.0))

    try:
        base = cost(jax.grad(lp), x, data)
        inz = cost(jax.grad(zlp.model_log_density), x, (a, data))
    except Exception:  # noqa: BLE001 - a backend without the analysis: the conservative default
        return DEFAULT_COST
    if not (base > 0 and np.isfinite(inz)):
        return DEFAULT_COST
    return float(max(inz / base, 1.0))


def affine_misfit(roots: np.ndarray, m: np.ndarray, p: np.ndarray) -> float:
    """How far the groups' conditional log-sd ``−½ log p`` and mean ``m`` (N, G) at the roots (N, R) are from
    affine functions of the roots (least squares): the largest residual, the mean's in conditional sds."""
    x = np.c_[np.ones(len(roots)), roots]
    log_sd = -0.5 * np.log(p)
    out = 0.0
    for y, unit in ((log_sd, 1.0), (m, np.sqrt(p))):
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        out = max(out, float(np.max(np.abs(x @ coef - y) * unit)))
    return out


class Analysis(NamedTuple):
    """What :func:`analyse` found: the map (or None), why, the gradient evaluations spent, and the *precision
    parents*: the coordinates outside the groups whose value changes some group's conditional precision (by
    :data:`PARENT_SENSITIVITY` in log per robust sd of theirs, at any of the points the test looked at)."""

    map: ConditionalMap | None
    message: str
    spent: int
    parents: tuple[int, ...] = ()


def conditional_map(obj: Objective, theta: np.ndarray, data: Any) -> tuple[ConditionalMap | None, str, int]:
    """The :class:`ConditionalMap` of ``obj`` around the draws ``theta`` (N, D), or None with the reason; also the
    gradient evaluations the structure test spent (Hessian–vector products counted as two gradients)."""
    return analyse(obj, theta, data)[:3]


def analyse(obj: Objective, theta: np.ndarray, data: Any) -> Analysis:
    """:func:`conditional_map` with the precision parents (:class:`Analysis`): where the map is declined they
    still tell the fitted map which coordinates set another's scale — exactly, from the derivatives, where the
    draws' correlations miss one (the stochastic volatility's φ sets the level μ's spread, but only μ's)."""
    th = np.asarray(theta)
    dtype = th.dtype if np.issubdtype(th.dtype, np.floating) else np.float32
    th = th[np.all(np.isfinite(th), axis=1)] if th.ndim == 2 else th
    if th.ndim != 2 or th.shape[0] < 3:
        return Analysis(None, "fewer than three finite draws", 0)
    dim = th.shape[1]
    if dim > MAX_DIM:
        return Analysis(None, f"D = {dim} is above {MAX_DIM} (the structure test takes D×D Hessians)", 0)
    tol = TOL.get(np.dtype(dtype).itemsize, TOL[4])
    centre = np.median(th, axis=0)
    sd = np.maximum(1.4826 * np.median(np.abs(th - centre), axis=0), 1e-6)
    points = [centre, th[th.shape[0] // 3], th[(2 * th.shape[0]) // 3]]
    hess, shifted_diag, at, log_precision_grads = _test_programs(obj)
    step = jnp.asarray(2 * sd, dtype)
    try:
        hs = [np.asarray(hess(jnp.asarray(p, dtype), data), np.float64) for p in points]
        sh = [np.asarray(shifted_diag(jnp.asarray(p, dtype), step, data), np.float64) for p in points]
    except Exception as exc:  # noqa: BLE001 - a log density the test cannot differentiate: decline
        return Analysis(None, f"the structure test could not differentiate the log density ({type(exc).__name__})", 0)
    spent = 2 * 2 * dim * len(points)
    groups, roots, cand = _split(hs, sh, tol)
    parents: tuple[int, ...] = ()
    cidx = np.flatnonzero(cand)
    if len(cidx):  # which coordinates set a conditionally Gaussian one's precision (its scale)
        padded = np.resize(cidx, 1 << int(len(cidx) - 1).bit_length())  # (one compile per power of two)
        try:
            jac = [np.asarray(log_precision_grads(jnp.asarray(x, dtype), jnp.asarray(padded, jnp.int32), data),
                              np.float64) for x in points]
        except Exception as exc:  # noqa: BLE001 - as above
            return Analysis(None, f"the structure test could not differentiate the log density "
                            f"({type(exc).__name__})", spent)
        spent += len(points) * len(padded) * 8  # a reverse pass through a Hessian–vector product: ~8 gradients
        sens = np.max([np.abs(j) * sd[None, :] for j in jac], axis=0)  # (len(padded), D)
        sens[np.arange(len(padded)), padded] = 0.0  # (a coordinate's own value: not a parent of itself)
        parents = tuple(int(k) for k in np.flatnonzero(np.nan_to_num(sens).max(0) >= PARENT_SENSITIVITY))
    if len(groups) == 0 or len(roots) == 0:
        return Analysis(None, f"{len(groups)} conditionally Gaussian, mutually independent coordinate(s) against "
                        f"{len(roots)} other(s): nothing to non-centre", spent, parents)
    a = {"roots": jnp.asarray(roots, jnp.int32), "groups": jnp.asarray(groups, jnp.int32),
         "ref": jnp.asarray(centre[groups], dtype), "loc": jnp.asarray(centre[roots], dtype),
         "scale": jnp.asarray(sd[roots], dtype)}
    if len(groups) < max(MIN_GROUPS, len(roots)):
        return Analysis(None, (f"{len(groups)} conditionally Gaussian, mutually independent coordinate(s) against "
                               f"{len(roots)} other(s): not worth a map"), spent, parents)
    rows = th[np.linspace(0, th.shape[0] - 1, POOL_ROWS).astype(int)]  # (a fixed size: one compile)
    m, p = (np.asarray(v, np.float64) for v in at(jnp.asarray(rows, dtype), a, data))
    spent += 2 * rows.shape[0]
    if not np.all(np.isfinite(p)) or np.any(p <= 0) or not np.all(np.isfinite(m)):
        return Analysis(None, "a group's conditional precision is not finite and positive at every draw", spent,
                        parents)
    ratio = float(np.max(p.max(0) / p.min(0)))
    if ratio <= NECK_RATIO:
        return Analysis(None, (f"the groups' conditional precision varies {ratio:.3g}-fold over the draws "
                               f"(≤ {NECK_RATIO:g}: no neck)"), spent, parents)
    misfit = affine_misfit(rows[:, roots].astype(np.float64), m, p)
    if misfit <= AFFINE_TOL:
        return Analysis(None, (f"the groups' conditional log-sd and mean are affine in the other coordinates "
                               f"(misfit {misfit:.2g} conditional sd): the fitted map's family holds them exactly, "
                               "at one gradient per gradient"), spent, parents)
    cost = _grad_cost(obj, a, data, jnp.asarray(centre, dtype))
    cmap = ConditionalMap(np.asarray(roots), np.asarray(groups), centre[groups].astype(dtype),
                          centre[roots].astype(dtype), sd[roots].astype(dtype), obj, data, grad_cost=cost,
                          info={"structural": True, "groups": len(groups), "precision_ratio": ratio,
                                "draws": int(th.shape[0])})
    msg = (f"{len(groups)} conditionally Gaussian coordinate(s) non-centred given {len(roots)} other(s) "
           f"(θ[{', '.join(str(int(i)) for i in roots[:4])}{' …' if len(roots) > 4 else ''}]), read from the log "
           f"density's derivatives: their precision varies {ratio:.3g}-fold over the draws; each gradient in z "
           f"costs {cost:.1f} of θ's")
    return Analysis(cmap, msg, spent, parents)
