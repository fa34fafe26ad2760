r"""The transport map as a θ-map (:class:`TransportMap`: ``to_theta``, ``to_z``, ``log_det_jacobian``, its arrays,
hash and description) and the objective over z (:func:`transported`): base θ = T(z), the density of z with the
map's log-Jacobian. The mathematics is :mod:`gnomon.sampler.transport_core`; the fitting
:mod:`gnomon.sampler.transport`."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.objective import Objective
from gnomon.sampler.transport_core import NO_BOUNDS, Bounds, TransportParams, forward, inverse

TRANSPORT_SCHEMA = 1
NO_GATE = 100.0  # a gate logit this high is no gate: sigmoid(100) is 1 in float32 and float64, so 1 − γ is 0


# ------------------------------------------------------------------------------------------------ the θ-map
@dataclass(frozen=True, eq=False)
class TransportMap:
    """``θ = T(z)`` (see the module docstring): the standardisation ``loc``/``scale`` (D,), the ordering ``order``
    (θ's coordinate at position j of the ordered vector), and the trained :class:`TransportParams` (numpy).

    A θ-map like :class:`gnomon.EigenMap` (``to_theta``, ``to_z``, ``dim``, ``z_dim``, ``hash``, ``describe``,
    ``to_arrays``), but nonlinear: its log-Jacobian depends on z (:meth:`log_det_jacobian`), so sample with
    :func:`transported` rather than ``Objective.reparameterize`` (which adds a constant ``log_abs_det``)."""

    loc: np.ndarray
    scale: np.ndarray
    order: np.ndarray
    params: TransportParams
    bounds: Bounds | None = None  # the log-scales' range (ordered coordinates); None: no cap
    info: dict = field(default_factory=dict)

    def _params_np(self) -> TransportParams:
        """The params with the gate filled in (+inf, no gate, for a map trained or saved without one)."""
        if self.params.shift_gate is not None:
            return self.params
        return self.params._replace(shift_gate=np.full(self.dim, np.inf, np.asarray(self.loc).dtype))

    def _bounds_np(self) -> Bounds:
        if self.bounds is None:
            full = np.full(self.dim, NO_BOUNDS)
            return Bounds(-full, full)
        return Bounds(np.asarray(self.bounds.lo), np.asarray(self.bounds.hi))

    @property
    def dim(self) -> int:
        return int(self.loc.shape[0])

    @property
    def z_dim(self) -> int:
        return self.dim

    def arrays(self, dtype: Any = None) -> dict[str, Any]:
        """The map as a dict of device arrays (the data of :func:`transported`'s objective)."""
        dt = dtype or self.loc.dtype
        inv = np.argsort(self.order)
        b = self._bounds_np()
        return {
            "loc": jnp.asarray(np.asarray(self.loc, dt)),  # (converted on the host: nothing to compile)
            "scale": jnp.asarray(np.asarray(self.scale, dt)),
            "order": jnp.asarray(np.asarray(self.order, np.int32)),
            "inv_order": jnp.asarray(np.asarray(inv, np.int32)),
            **{k: jnp.asarray(np.asarray(v, dt)) for k, v in self._params_np()._asdict().items()},
            # "no gate" as a finite logit with sigmoid = 1 exactly (an objective's data must be finite: +inf made
            # every map without a gate — no scale parents, or saved before the gate — fail to build its objective)
            "shift_gate": jnp.asarray(np.minimum(np.asarray(self._params_np().shift_gate, dt), NO_GATE)),
            "h_lo": jnp.asarray(np.asarray(b.lo, dt)),
            "h_hi": jnp.asarray(np.asarray(b.hi, dt)),
        }

    def to_theta(self, z: Any) -> Any:
        """θ = T(z) for z of shape (..., D) (jittable; one compiled program per shape — run eagerly, its dozens of
        operations each compiled a program of their own)."""
        z = jnp.asarray(z)
        return _apply_jit(self.arrays(z.dtype if jnp.issubdtype(z.dtype, jnp.floating) else None), z)[0]

    def log_det_jacobian(self, z: Any) -> Any:
        """``log|det ∂θ/∂z|`` at z (..., D)."""
        z = jnp.asarray(z)
        return _apply_jit(self.arrays(z.dtype), z)[1]

    def to_z(self, theta: Any) -> Any:
        """z = T⁻¹(θ) for θ of shape (..., D)."""
        theta = jnp.asarray(theta)
        a = self.arrays(theta.dtype if jnp.issubdtype(theta.dtype, jnp.floating) else None)
        return _to_z_jit(a, theta.reshape(-1, self.dim)).reshape(theta.shape)

    @functools.cached_property
    def hash(self) -> str:
        h = hashlib.sha256()
        gate = self._params_np().shift_gate  # (a map without a gate hashes as it did before there was one)
        gated = () if np.all(np.isposinf(np.asarray(gate))) else (gate,)
        for v in (self.loc, self.scale, self.order, *self.params[:4], *self._bounds_np(), *gated):
            h.update(np.ascontiguousarray(np.asarray(v, np.float64)).tobytes())
        return h.hexdigest()[:16]

    def to_arrays(self) -> dict[str, np.ndarray]:
        b = self._bounds_np()
        return {"loc": np.asarray(self.loc), "scale": np.asarray(self.scale), "order": np.asarray(self.order),
                **{k: np.asarray(v) for k, v in self._params_np()._asdict().items()},
                "h_lo": np.asarray(b.lo), "h_hi": np.asarray(b.hi)}

    def describe(self) -> dict[str, Any]:
        return {"transport_schema": TRANSPORT_SCHEMA, "type": "affine autoregressive", "hash": self.hash,
                "dim": self.dim, **{k: v for k, v in self.info.items() if isinstance(v, (int, float, str, list))}}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], meta: dict[str, Any] | None = None) -> TransportMap:
        """Rebuild from :meth:`to_arrays` (and :meth:`describe`: its hash is checked)."""
        need = ("loc", "scale", "order", *TransportParams._fields[:4])  # (shift_gate: absent in older files)
        missing = [k for k in need if k not in arrays]
        if missing:
            raise ValueError(f"TransportMap arrays lack {missing}")
        bounds = Bounds(np.asarray(arrays["h_lo"]), np.asarray(arrays["h_hi"])) if "h_lo" in arrays else None
        tm = cls(np.asarray(arrays["loc"]), np.asarray(arrays["scale"]), np.asarray(arrays["order"]),
                 TransportParams(*(np.asarray(arrays[k]) for k in TransportParams._fields[:4]),
                                 np.asarray(arrays["shift_gate"]) if "shift_gate" in arrays else None), bounds,
                 info={k: v for k, v in (meta or {}).items()
                       if k in ("fisher_map", "fisher_linear", "draws", "structural", "sites", "scale_parents")})
        if meta and "hash" in meta and meta["hash"] != tm.hash:
            raise ValueError(f"TransportMap hash mismatch: arrays give {tm.hash}, meta says {meta['hash']}")
        return tm

    def __repr__(self) -> str:
        return f"TransportMap(D={self.dim}, affine autoregressive, hash={self.hash})"


@jax.jit
def _to_z_jit(a: dict[str, Any], flat: Any) -> Any:
    x = ((flat - a["loc"]) / a["scale"])[:, a["order"]]
    u = inverse(_params(a), x, Bounds(a["h_lo"], a["h_hi"]))
    return u[:, a["inv_order"]]


def _params(a: dict[str, Any]) -> TransportParams:
    return TransportParams(a["shift"], a["log_scale"], a["shift_w"], a["scale_w"], a["shift_gate"])


def apply(a: dict[str, Any], z: Any) -> tuple[Any, Any]:
    """``(θ, log|det ∂θ/∂z|)`` for z (..., D) with the map's arrays ``a`` (:meth:`TransportMap.arrays`)."""
    p = _params(a)
    b = Bounds(a["h_lo"], a["h_hi"])

    def one(zi):
        x, ld = forward(p, zi[a["order"]], b)
        return a["loc"] + a["scale"] * x[a["inv_order"]], ld + jnp.sum(jnp.log(a["scale"]))

    flat = z.reshape(-1, z.shape[-1])
    th, ld = jax.vmap(one)(flat)
    return th.reshape(z.shape), ld.reshape(z.shape[:-1])


_apply_jit = jax.jit(apply)


def transported(obj: Objective, tmap: TransportMap) -> Objective:
    """The objective over z: ``log_prob(z) = obj.log_prob(T(z)) + log|det ∂T/∂z|``, with ``thetamap=tmap`` (a
    sampling Trace on it holds base θ in ``theta`` and z in ``z``). The map's arrays are the objective's data
    (with the base objective's data beside them), so another map of the same dimension reuses every compiled
    program (the compile key is the base's); the loss is ``−log_prob`` (the map's Jacobian is part of the
    density of z)."""
    if not isinstance(tmap, TransportMap):
        raise ValueError(f"transported needs a TransportMap, got {type(tmap).__name__}")
    if tmap.dim != obj.dim:
        raise ValueError(f"the map has dimension {tmap.dim} but the objective {obj.dim}")
    base = obj

    def model_log_density(z, d):
        a, bd = d
        th, ld = apply(a, z)
        lp = base.model_log_density(th, bd)
        if base.log_jacobian is not None:
            lp = lp + base.log_jacobian(th)
        return lp + ld

    return objective_over_z(obj, tmap, model_log_density, "transport")


def objective_over_z(obj: Objective, tmap: Any, model_log_density: Any, kind: str) -> Objective:
    """The objective over a map's z with ``model_log_density(z, (map arrays, base data))``: the map's arrays are
    data beside the base's (every map of one kind and dimension shares the compiled programs; the compile key is
    the base's and ``kind``), ``thetamap`` the map, the loss ``−log_prob``."""
    return Objective(
        dim=obj.dim,
        layout=None,
        model_log_density=model_log_density,
        data=(tmap.arrays(), obj.data),
        takes_data=True,
        thetamap=tmap,
        base=obj,
        info={**obj.info, "transported": True, "transport": tmap.describe()},
        key_parts=None if obj.key_parts is None else (kind, obj.key_parts, obj.loss_includes_jacobian),
    )
