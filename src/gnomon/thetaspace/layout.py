"""`Layout`: the named, shaped, unit-carrying blocks that give a flat unconstrained θ its meaning.

θ is a flat float vector in unconstrained space. A layout lists its blocks in order; each block has a
constrained shape, a transform from unconstrained to constrained values (numpyro's ``biject_to`` of a
constraint), a unit string (the user's, checked against :mod:`gnomon.thetaspace.units`), an optional group
label, optional per-element labels (``"Z4"`` … ``"Z11"``), and optionally a model map and a module path:

    θ ──bijection──▶ value in the user's units (``unpack``) ──Affine──▶ value in the model's units
    (``to_model``) ──path──▶ leaf of an equinox module (``apply``).

Engines and traces never need a layout; decoding, metadata, signals and ArviZ export do.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from gnomon.thetaspace import module_paths as _paths
from gnomon.thetaspace.blocks import (  # noqa: F401 (Block re-exported: gnomon.thetaspace.layout.Block)
    Block,
    check_support,
    labels_of,
    model_map_of,
    shape_tuple,
    theta_shape_of,
)
from gnomon.thetaspace.constraints import normalize_spec, spec_label, spec_to_json, to_numpyro_constraint
from gnomon.thetaspace.modelmap import Affine
from gnomon.thetaspace.units import check_unit

LAYOUT_SCHEMA = 1


class Layout:
    """Ordered named blocks of a flat unconstrained parameter vector θ.

    Args:
      shapes: mapping ``name -> shape`` (``()`` for a scalar, an int or tuple otherwise), in θ order.
      transforms: optional mapping ``name -> transform spec`` (see :mod:`gnomon.thetaspace.constraints`):
        ``"positive"``, ``("interval", lo, hi)``, a numpyro constraint, ... Missing names are identity.
      units: optional mapping ``name -> unit string`` (``"arcsec"``, ``"nm"``, ``"ppm"``, ...).
      blocks: optional mapping ``name -> group label`` (e.g. ``"astrometry"``) used for block-level
        learning rates, grouped plots and metadata.
      labels: optional mapping ``name -> component labels``, one string per element of a vector block (C
        order), e.g. ``{"zernikes": ["Z4", ..., "Z11"]}``: index labels become ``"zernikes[Z4]"``.
      affine: optional mapping ``name -> gnomon.Affine`` (or a scale, or a ``(scale, offset)`` pair): the map
        from the user's units to the model's (:meth:`to_model`).
      model_units: optional mapping ``name -> the model's unit``; where no ``affine`` is given the map is
        the unit conversion ``units[name] -> model_units[name]`` (``"µas" -> "rad"``); ``"same"`` says the
        model takes the block in ``units[name]`` (recorded, no conversion).
      paths: optional mapping ``name -> dotted module path`` (set by :meth:`from_module`, used by
        :meth:`apply`).

    Units are checked against the unit registry (:func:`gnomon.register_unit` adds more) and kept exactly as
    written. ``pack(params)`` maps constrained values (user units) to θ, ``unpack(θ)`` maps back, and
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
        *,
        labels: Mapping[str, Any] | None = None,
        affine: Mapping[str, Any] | None = None,
        model_units: Mapping[str, str] | None = None,
        paths: Mapping[str, str] | None = None,
    ):
        self._build(shapes, transforms, units, blocks, labels, affine, model_units, paths, None, strict_units=True)

    def _build(self, shapes, transforms, units, blocks, labels, affine, model_units, paths, dtypes, *, strict_units):
        if not isinstance(shapes, Mapping) or not shapes:
            raise ValueError(f"Layout needs a non-empty mapping name -> shape, got {shapes!r}")
        transforms = dict(transforms or {})
        units = dict(units or {})
        groups = dict(blocks or {})
        labels = dict(labels or {})
        affine = dict(affine or {})
        model_units = dict(model_units or {})
        paths = dict(paths or {})
        dtypes = dict(dtypes or {})
        for what, given in (("transforms", transforms), ("units", units), ("blocks", groups), ("labels", labels),
                            ("affine", affine), ("model_units", model_units), ("paths", paths)):
            unknown = sorted(set(given) - set(shapes), key=str)
            if unknown:
                raise ValueError(
                    f"Layout {what} name(s) {unknown} are not parameters; parameters are {list(shapes)}"
                )
        out: list[Block] = []
        start = 0
        for name, shape in shapes.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
            shape = shape_tuple(name, shape)
            spec = normalize_spec(transforms.get(name), name)
            theta_shape = shape if spec == ("identity",) else theta_shape_of(spec, shape, name)
            size = math.prod(theta_shape)
            unit = units.get(name, "")
            if not isinstance(unit, str):
                raise ValueError(f"parameter {name!r}: units must be a string, got {unit!r}")
            if strict_units:
                check_unit(unit, f"parameter {name!r}")
            mu = model_units.get(name, "")
            if mu == _paths.SAME:  # "the model takes the user's units"
                mu = unit
            if strict_units:
                check_unit(mu, f"parameter {name!r} (model_units)")
            amap = model_map_of(name, shape, unit, affine.get(name), mu)
            path = paths.get(name)
            if path is not None:
                _paths.split_path(path)
            out.append(Block(name, shape, theta_shape, start, start + size, spec, unit, groups.get(name),
                             labels_of(name, shape, labels.get(name)), amap, path, mu, dtypes.get(name)))
            start += size
        self._blocks: tuple[Block, ...] = tuple(out)
        self._by_name = {b.name: b for b in out}
        self._size = start
        self._bijectors: dict[str, Any] = {}
        self._hash: str | None = None

    @classmethod
    def from_module(
        cls,
        module: Any,
        paths: Sequence[str] | Mapping[str, str],
        *,
        units: Mapping[str, str] | None = None,
        labels: Mapping[str, Any] | None = None,
        transforms: Mapping[str, Any] | None = None,
        blocks: Mapping[str, str] | None = None,
        affine: Mapping[str, Any] | None = None,
        model_units: Mapping[str, str] | None = None,
    ) -> Layout:
        """A layout whose blocks are leaves of an equinox module (dLux, zodiax), read at dotted paths.

        Args:
          module: an ``equinox.Module`` (any pytree whose leaves the paths reach).
          paths: zodiax-style dotted paths in θ order (``["source.position", "aperture.coefficients"]``;
            the block names are the paths), or a mapping ``name -> path`` to choose the names.
          units, labels, transforms, blocks, affine, model_units: as in :class:`Layout`, keyed by block name.

        Shapes (and dtypes, for information) come from the module's leaves. Values in the user's units map
        to the module's through ``affine``/``model_units``: e.g. ``units={"source.position": "µas"},
        model_units={"source.position": "rad"}``. A block with physical units (anything but ``""``, ``"1"``,
        ``"frac"``) must say what its leaf takes — ``model_units`` (a unit, or ``"same"`` when the model takes
        the user's units) or ``affine`` — else a ValueError names it: θ in µas must never reach radians
        unconverted. :meth:`apply` sets the leaves from θ;
        :meth:`theta_from_module` reads θ off a module. equinox is imported only when :meth:`apply` runs.
        """
        named = _paths.named_paths(paths)
        infos = _paths.leaf_infos(module, named)
        _paths.check_model_units(named, units, model_units, affine)
        layout = cls.__new__(cls)
        layout._build({name: info.shape for name, info in infos.items()}, transforms, units, blocks, labels, affine,
                      model_units, named, {name: info.dtype for name, info in infos.items()}, strict_units=True)
        return layout

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
        """One label per θ index: ``"x"`` for scalars, ``"z[3]"`` / ``"m[1,2]"`` for array entries, and
        ``"z[Z4]"`` where the block has component labels (and θ has one entry per element)."""
        labels: list[str] = []
        for b in self._blocks:
            if b.theta_shape == b.shape:
                labels.extend(b.element_labels())
            else:
                labels.extend(f"{b.name}[{','.join(str(i) for i in idx)}]" for idx in np.ndindex(*b.theta_shape))
        return labels

    def element_values(self, theta: Any) -> jnp.ndarray:
        """θ (``(*batch, size)``) → the constrained values in the user's units, flattened block by block in the
        order of :meth:`element_labels` (``(*batch, num_elements)``): what tables and bounds list."""
        params = self.unpack(theta)
        batch = jnp.shape(theta)[:-1]
        return jnp.concatenate([jnp.reshape(params[b.name], batch + (-1,)) for b in self._blocks], axis=-1)

    def element_labels(self) -> list[str]:
        """One label per *constrained* element (what :meth:`unpack` returns, flattened block by block): the
        labels of bounds and tables in the user's units. Equal to :meth:`index_labels` unless a transform
        changes the size (a simplex of K values has K element labels and K − 1 θ indices)."""
        return [lab for b in self._blocks for lab in b.element_labels()]

    def index_map(self) -> list[dict]:
        """JSON-able description of θ: one dict per block with name, start, stop, shape, theta_shape,
        units, block, transform; plus ``labels``, ``path``, ``model_units`` and ``to_model`` (the Affine map)
        where the block has them."""
        out = []
        for b in self._blocks:
            e = {
                "name": b.name,
                "start": b.start,
                "stop": b.stop,
                "shape": list(b.shape),
                "theta_shape": list(b.theta_shape),
                "units": b.units,
                "block": b.block,
                "transform": spec_to_json(b.transform),
            }
            if b.labels is not None:
                e["labels"] = list(b.labels)
            if b.path is not None:
                e["path"] = b.path
            if b.model_units:
                e["model_units"] = b.model_units
            if b.affine is not None:
                e["to_model"] = b.affine.to_json()
            out.append(e)
        return out

    def to_dict(self) -> dict:
        """JSON-able form that :meth:`from_dict` turns back into an equal layout."""
        return {"layout_schema": LAYOUT_SCHEMA, "hash": self.hash, "blocks": self.index_map()}

    @classmethod
    def from_dict(cls, d: Mapping) -> Layout:
        """Rebuild a layout from :meth:`to_dict` output (or an ``index_map()`` list).

        Stored unit strings are taken as written (a run saved before the unit registry knew a unit still
        loads)."""
        entries = d["blocks"] if isinstance(d, Mapping) else d
        shapes = {e["name"]: tuple(e["shape"]) for e in entries}
        transforms = {e["name"]: e.get("transform") for e in entries}
        units = {e["name"]: e.get("units", "") for e in entries}
        groups = {e["name"]: e["block"] for e in entries if e.get("block") is not None}
        labels = {e["name"]: e["labels"] for e in entries if e.get("labels") is not None}
        affine = {e["name"]: Affine.from_json(e["to_model"]) for e in entries if e.get("to_model") is not None}
        model_units = {e["name"]: e["model_units"] for e in entries if e.get("model_units")}
        paths = {e["name"]: e["path"] for e in entries if e.get("path") is not None}
        layout = cls.__new__(cls)
        layout._build(shapes, transforms, units, groups, labels, affine, model_units, paths, None,
                      strict_units=False)
        return layout

    @property
    def hash(self) -> str:
        """Stable content hash (sha256 hex, first 16 chars) of :meth:`index_map` (names, shapes, transforms,
        units, blocks, and labels, paths and model maps where given).

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
                check_support(b, bij, v)
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

    # ------------------------------------------------------------------ the model's units
    @property
    def has_model_maps(self) -> bool:
        """True when some block's model units differ from the user's (an Affine map)."""
        return any(b.affine is not None for b in self._blocks)

    def to_model(self, params: Mapping[str, Any]) -> dict[str, jnp.ndarray]:
        """User-unit values ``{name: value}`` (as :meth:`unpack` returns) → the model's units (each block's
        Affine map; blocks without one are passed through). Leading batch dimensions are kept."""
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"to_model: missing parameter(s) {missing}; expected {list(self.names)}")
        return {b.name: params[b.name] if b.affine is None else b.affine.to_model(params[b.name])
                for b in self._blocks}

    def from_model(self, model_params: Mapping[str, Any]) -> dict[str, jnp.ndarray]:
        """Inverse of :meth:`to_model`: model-unit values → the user's units (for :meth:`pack`)."""
        missing = [n for n in self.names if n not in model_params]
        if missing:
            raise ValueError(f"from_model: missing parameter(s) {missing}; expected {list(self.names)}")
        return {b.name: jnp.asarray(model_params[b.name]) if b.affine is None
                else b.affine.to_user(model_params[b.name]) for b in self._blocks}

    def unpack_model(self, theta: Any) -> dict[str, jnp.ndarray]:
        """θ → values in the model's units: ``to_model(unpack(θ))``."""
        return self.to_model(self.unpack(theta))

    def apply(self, module: Any, theta: Any) -> Any:
        """A new module with the leaf at each block's path set to the block's value in the model's units.

        ``θ`` is one point (shape ``(size,)``; use ``jax.vmap`` for batches). The module is not mutated
        (``equinox.tree_at``); the call works under ``jit``, ``grad`` and ``vmap``. Blocks without a path
        (parameters the module does not hold, e.g. a noise level) are not set. Needs ``pip install
        gnomon[equinox]``."""
        theta = self._check_theta(theta)
        if theta.ndim != 1:
            raise ValueError(f"apply takes one θ of shape ({self.size},), got {tuple(theta.shape)}; use jax.vmap")
        with_path = [b for b in self._blocks if b.path is not None]
        if not with_path:
            raise ValueError("apply: no block of this layout has a module path; build it with Layout.from_module")
        values = self.unpack_model(theta)
        return _paths.set_leaves(module, [b.path for b in with_path], [values[b.name] for b in with_path])

    def read_module(self, module: Any) -> dict[str, jnp.ndarray]:
        """The module's values at the blocks' paths, in the user's units (blocks without a path omitted)."""
        out = {}
        for b in self._blocks:
            if b.path is None:
                continue
            m = jnp.asarray(_paths.resolve(module, b.path))
            if tuple(m.shape) != b.shape:
                raise ValueError(f"read_module: {b.path!r} has shape {tuple(m.shape)}, the layout expects {b.shape}")
            out[b.name] = m if b.affine is None else b.affine.to_user(m)
        return out

    def theta_from_module(self, module: Any, extra: Mapping[str, Any] | None = None) -> jnp.ndarray:
        """θ of the module's current values (``pack(read_module(module))``); ``extra`` gives user-unit
        values for blocks without a path."""
        params = {**self.read_module(module), **dict(extra or {})}
        return self.pack(params)

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
