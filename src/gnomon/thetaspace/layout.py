"""`Layout`: the named, shaped, unit-carrying blocks that give a flat unconstrained θ its meaning.

θ is a flat float vector in unconstrained space. A layout lists its blocks in order; each block has a
constrained shape (what the model sees), a transform from unconstrained to constrained values (numpyro's
``biject_to`` of a constraint), a unit string and an optional group label. Engines and traces never need
a layout; decoding, metadata, signals and ArviZ export do.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from gnomon.thetaspace.constraints import (
    Spec,
    normalize_spec,
    spec_label,
    spec_to_json,
    to_numpyro_constraint,
)

LAYOUT_SCHEMA = 1


@dataclass(frozen=True)
class Block:
    """One named parameter block of a layout."""

    name: str
    shape: tuple[int, ...]  # constrained shape
    theta_shape: tuple[int, ...]  # unconstrained shape (differs for e.g. simplex)
    start: int
    stop: int
    transform: Spec
    units: str
    block: str | None

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def is_identity(self) -> bool:
        return self.transform == ("identity",)


def _shape_tuple(name: str, shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(
            f"parameter {name!r}: shape must be a tuple of non-negative ints (or an int), got {shape!r}"
        ) from None
    if any(s < 0 for s in shape):
        raise ValueError(f"parameter {name!r}: shape {shape} has a negative dimension")
    return shape


class Layout:
    """Ordered named blocks of a flat unconstrained parameter vector θ.

    Args:
      shapes: mapping ``name -> shape`` (``()`` for a scalar, an int or tuple otherwise), in θ order.
      transforms: optional mapping ``name -> transform spec`` (see :mod:`gnomon.thetaspace.constraints`):
        ``"positive"``, ``("interval", lo, hi)``, a numpyro constraint, ... Missing names are identity.
      units: optional mapping ``name -> unit string`` (``"arcsec"``, ``"nm"``, ``"ppm"``, ...).
      blocks: optional mapping ``name -> group label`` (e.g. ``"astrometry"``) used for block-level
        learning rates, grouped plots and metadata.

    ``pack(params)`` maps constrained values to θ, ``unpack(θ)`` maps back, and
    ``log_det_jacobian(θ)`` is ``log|det ∂unpack/∂θ|``, the term that turns a density over constrained
    values into one over θ.

    Example:
      >>> layout = Layout({"x": (), "z": (8,), "sigma": ()}, transforms={"sigma": "positive"})
      >>> layout.size
      10
    """

    def __init__(
        self,
        shapes: Mapping[str, Any],
        transforms: Mapping[str, Any] | None = None,
        units: Mapping[str, str] | None = None,
        blocks: Mapping[str, str] | None = None,
    ):
        if not isinstance(shapes, Mapping) or not shapes:
            raise ValueError(f"Layout needs a non-empty mapping name -> shape, got {shapes!r}")
        transforms = dict(transforms or {})
        units = dict(units or {})
        groups = dict(blocks or {})
        for label, given in (("transforms", transforms), ("units", units), ("blocks", groups)):
            unknown = sorted(set(given) - set(shapes))
            if unknown:
                raise ValueError(
                    f"Layout {label} name(s) {unknown} are not parameters; parameters are {list(shapes)}"
                )
        out: list[Block] = []
        start = 0
        for name, shape in shapes.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
            shape = _shape_tuple(name, shape)
            spec = normalize_spec(transforms.get(name), name)
            theta_shape = shape if spec == ("identity",) else _theta_shape(spec, shape, name)
            size = math.prod(theta_shape)
            unit = units.get(name, "")
            if not isinstance(unit, str):
                raise ValueError(f"parameter {name!r}: units must be a string, got {unit!r}")
            out.append(Block(name, shape, theta_shape, start, start + size, spec, unit, groups.get(name)))
            start += size
        self._blocks: tuple[Block, ...] = tuple(out)
        self._by_name = {b.name: b for b in out}
        self._size = start
        self._bijectors: dict[str, Any] = {}
        self._hash: str | None = None

    # ------------------------------------------------------------------ structure
    @property
    def size(self) -> int:
        """Length of θ."""
        return self._size

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self._blocks)

    @property
    def blocks(self) -> tuple[Block, ...]:
        return self._blocks

    def __getitem__(self, name: str) -> Block:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no parameter {name!r} in layout; parameters are {list(self.names)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._blocks)

    def __repr__(self) -> str:
        parts = []
        for b in self._blocks:
            extra = "" if b.is_identity else f", {spec_label(b.transform)}"
            parts.append(f"{b.name}{list(b.shape)}{extra}")
        return f"Layout(size={self.size}: {'; '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    @property
    def is_identity(self) -> bool:
        """True when every block is unconstrained (θ is the constrained vector itself)."""
        return all(b.is_identity for b in self._blocks)

    def index_labels(self) -> list[str]:
        """One label per θ index: ``"x"`` for scalars, ``"z[3]"`` / ``"m[1,2]"`` for array entries."""
        labels: list[str] = []
        for b in self._blocks:
            if b.theta_shape == ():
                labels.append(b.name)
            else:
                for idx in np.ndindex(*b.theta_shape):
                    labels.append(f"{b.name}[{','.join(str(i) for i in idx)}]")
        return labels

    def index_map(self) -> list[dict]:
        """JSON-able description of θ: one dict per block with name, start, stop, shape, theta_shape,
        units, block, transform."""
        return [
            {
                "name": b.name,
                "start": b.start,
                "stop": b.stop,
                "shape": list(b.shape),
                "theta_shape": list(b.theta_shape),
                "units": b.units,
                "block": b.block,
                "transform": spec_to_json(b.transform),
            }
            for b in self._blocks
        ]

    def to_dict(self) -> dict:
        """JSON-able form that :meth:`from_dict` turns back into an equal layout."""
        return {"layout_schema": LAYOUT_SCHEMA, "hash": self.hash, "blocks": self.index_map()}

    @classmethod
    def from_dict(cls, d: Mapping) -> Layout:
        """Rebuild a layout from :meth:`to_dict` output (or an ``index_map()`` list)."""
        entries = d["blocks"] if isinstance(d, Mapping) else d
        shapes = {e["name"]: tuple(e["shape"]) for e in entries}
        transforms = {e["name"]: e.get("transform") for e in entries}
        units = {e["name"]: e.get("units", "") for e in entries}
        groups = {e["name"]: e["block"] for e in entries if e.get("block") is not None}
        return cls(shapes, transforms=transforms, units=units, blocks=groups)

    @property
    def hash(self) -> str:
        """Stable content hash (sha256 hex, first 16 chars) of names, shapes, transforms, units, blocks.

        The same layout gives the same hash in any process and on any machine."""
        if self._hash is None:
            payload = json.dumps(self.index_map(), sort_keys=True, separators=(",", ":"))
            self._hash = hashlib.sha256(payload.encode()).hexdigest()[:16]
        return self._hash

    def group_indices(self) -> dict[str, np.ndarray]:
        """θ indices of each group label (blocks without a label are grouped under their own name)."""
        out: dict[str, list[int]] = {}
        for b in self._blocks:
            out.setdefault(b.block or b.name, []).extend(range(b.start, b.stop))
        return {k: np.asarray(v, dtype=int) for k, v in out.items()}

    # ------------------------------------------------------------------ transforms
    def _bijector(self, b: Block):
        bij = self._bijectors.get(b.name)
        if bij is None:
            from numpyro.distributions.transforms import biject_to

            bij = biject_to(to_numpyro_constraint(b.transform))
            self._bijectors[b.name] = bij
        return bij

    def pack(self, params: Mapping[str, Any]) -> jnp.ndarray:
        """Constrained values ``{name: array}`` -> flat unconstrained θ.

        Leading batch dimensions shared by all blocks are kept: values of shape ``(*batch, *shape)`` give
        θ of shape ``(*batch, size)``. Raises ValueError for missing or extra names, wrong shapes and
        (for concrete values) values outside a transform's support."""
        if not isinstance(params, Mapping):
            raise ValueError(f"pack expects a mapping name -> value, got {type(params).__name__}")
        missing = [n for n in self.names if n not in params]
        extra = sorted(set(params) - set(self.names))
        if missing or extra:
            raise ValueError(
                f"pack: missing parameter(s) {missing} and unexpected parameter(s) {extra}; "
                f"expected exactly {list(self.names)}"
            )
        pieces = []
        batch: tuple[int, ...] | None = None
        for b in self._blocks:
            v = jnp.asarray(params[b.name])
            if not jnp.issubdtype(v.dtype, jnp.floating):
                v = v.astype(jnp.result_type(float))
            nd = len(b.shape)
            if v.shape[v.ndim - nd :] != b.shape or v.ndim < nd:
                raise ValueError(
                    f"pack: parameter {b.name!r} has shape {tuple(v.shape)}, expected {b.shape}"
                    " (optionally with leading batch dimensions)"
                )
            vb = tuple(v.shape[: v.ndim - nd])
            if batch is None:
                batch = vb
            elif vb != batch:
                raise ValueError(
                    f"pack: parameter {b.name!r} has batch shape {vb}, but earlier parameters have {batch}"
                )
            if not b.is_identity:
                bij = self._bijector(b)
                _check_support(b, bij, v)
                v = bij.inv(v)
            pieces.append(jnp.reshape(v, vb + (-1,)))
        dtype = jnp.result_type(*pieces)
        return jnp.concatenate([p.astype(dtype) for p in pieces], axis=-1)

    def unpack(self, theta: Any) -> dict[str, jnp.ndarray]:
        """Flat unconstrained θ (shape ``(*batch, size)``) -> constrained ``{name: (*batch, *shape)}``."""
        theta = self._check_theta(theta)
        out = {}
        for b in self._blocks:
            u = theta[..., b.start : b.stop].reshape(theta.shape[:-1] + b.theta_shape)
            out[b.name] = u if b.is_identity else self._bijector(b)(u)
        return out

    def unpack_unconstrained(self, theta: Any) -> dict[str, jnp.ndarray]:
        """Flat θ -> ``{name: unconstrained block}`` without applying transforms."""
        theta = self._check_theta(theta)
        return {
            b.name: theta[..., b.start : b.stop].reshape(theta.shape[:-1] + b.theta_shape)
            for b in self._blocks
        }

    def pack_unconstrained(self, values: Mapping[str, Any]) -> jnp.ndarray:
        """Inverse of :meth:`unpack_unconstrained`."""
        missing = [n for n in self.names if n not in values]
        if missing:
            raise ValueError(f"pack_unconstrained: missing parameter(s) {missing}")
        pieces = []
        for b in self._blocks:
            v = jnp.asarray(values[b.name])
            nd = len(b.theta_shape)
            if v.shape[v.ndim - nd :] != b.theta_shape:
                raise ValueError(
                    f"pack_unconstrained: parameter {b.name!r} has shape {tuple(v.shape)}, "
                    f"expected {b.theta_shape}"
                )
            pieces.append(v.reshape(v.shape[: v.ndim - nd] + (-1,)))
        return jnp.concatenate(pieces, axis=-1)

    def log_det_jacobian(self, theta: Any) -> jnp.ndarray:
        """``log|det ∂ unpack(θ) / ∂θ|`` summed over blocks (shape ``batch``)."""
        theta = self._check_theta(theta)
        batch = theta.shape[:-1]
        total = jnp.zeros(batch, dtype=theta.dtype)
        for b in self._blocks:
            if b.is_identity:
                continue
            bij = self._bijector(b)
            u = theta[..., b.start : b.stop].reshape(batch + b.theta_shape)
            ldj = bij.log_abs_det_jacobian(u, bij(u))
            extra = tuple(range(len(batch), jnp.ndim(ldj)))
            total = total + (jnp.sum(ldj, axis=extra) if extra else ldj)
        return total

    def _check_theta(self, theta: Any) -> jnp.ndarray:
        if (zmap := getattr(theta, "z_of", None)) is not None:  # a gnomon.trace.zarray.ZArray, not θ
            what = "eigen coordinates z of an EigenMap" if type(zmap).__name__ == "EigenMap" else "θ-map coordinates z"
            raise ValueError(f"these are {what}, not θ; use trace.theta / trace.best_theta or thetamap.to_theta(z)")
        theta = jnp.asarray(theta)
        if theta.ndim == 0 or theta.shape[-1] != self.size:
            raise ValueError(
                f"θ has shape {tuple(theta.shape)}, expected ({self.size},) (optionally with leading batch "
                f"dimensions) for {self!r}"
            )
        return theta


def _theta_shape(spec: Spec, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    from numpyro.distributions.transforms import biject_to

    bij = biject_to(to_numpyro_constraint(spec))
    try:
        return tuple(int(s) for s in bij.inverse_shape(shape))
    except Exception as exc:  # numpyro raises for impossible event shapes
        raise ValueError(
            f"parameter {name!r}: shape {shape} is not valid for transform {spec_label(spec)}: {exc}"
        ) from None


def _check_support(b: Block, bij: Any, v: jnp.ndarray) -> None:
    try:
        ok = np.asarray(bij.codomain.check(v))
    except Exception:  # traced values under jit/grad: nothing to check
        return
    if not ok.all():
        bad = np.asarray(v).reshape(-1)[np.flatnonzero(~ok.reshape(-1))[:1]] if ok.size == v.size else v
        raise ValueError(
            f"pack: parameter {b.name!r} has value(s) outside the support of transform "
            f"{spec_label(b.transform)}: e.g. {np.asarray(bad).ravel()[:3].tolist()}"
        )
