"""One block of a :class:`gnomon.Layout` and the checks that build it (shapes, labels, model maps, supports)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gnomon.thetaspace.constraints import Spec, spec_label, to_numpyro_constraint
from gnomon.thetaspace.modelmap import Affine


@dataclass(frozen=True)
class Block:
    """One named parameter block of a layout."""

    name: str
    shape: tuple[int, ...]  # constrained shape
    theta_shape: tuple[int, ...]  # unconstrained shape (differs for e.g. simplex)
    start: int
    stop: int
    transform: Spec
    units: str  # the user's units, exactly as given
    block: str | None
    labels: tuple[str, ...] | None = None  # one per constrained element (C order)
    affine: Affine | None = None  # user value -> model value (None: the same)
    path: str | None = None  # dotted path of the module leaf it sets (Layout.from_module)
    model_units: str = ""  # the model's units (a record; the Affine does the conversion)
    dtype: str | None = None  # dtype of the module leaf (informational; not hashed)

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def num_elements(self) -> int:
        """Number of constrained elements (differs from ``size`` for e.g. a simplex)."""
        return math.prod(self.shape)

    def element_labels(self) -> list[str]:
        """``name[label]`` (component labels) or ``name[i,j]`` per constrained element; ``name`` for a scalar."""
        if self.shape == ():
            return [self.name]
        if self.labels is not None:
            return [f"{self.name}[{lab}]" for lab in self.labels]
        return [f"{self.name}[{','.join(str(i) for i in idx)}]" for idx in np.ndindex(*self.shape)]

    @property
    def is_identity(self) -> bool:
        return self.transform == ("identity",)


def shape_tuple(name: str, shape: Any) -> tuple[int, ...]:
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


def labels_of(name: str, shape: tuple[int, ...], given: Any) -> tuple[str, ...] | None:
    if given is None:
        return None
    if isinstance(given, str) or not isinstance(given, (Sequence, np.ndarray)):
        raise ValueError(f"parameter {name!r}: labels must be a sequence of strings, got {given!r}")
    labels = tuple(given)
    if shape == ():
        raise ValueError(f"parameter {name!r}: labels name the elements of a vector block; {name!r} is a scalar")
    n = math.prod(shape)
    if len(labels) != n:
        raise ValueError(f"parameter {name!r}: {len(labels)} labels for {n} elements (shape {shape})")
    if not all(isinstance(x, str) and x for x in labels):
        raise ValueError(f"parameter {name!r}: labels must be non-empty strings, got {list(labels)}")
    if len(set(labels)) != n:
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise ValueError(f"parameter {name!r}: repeated labels {dup}")
    return labels


def model_map_of(name: str, shape: tuple[int, ...], unit: str, given: Any, model_unit: str) -> Affine | None:
    if given is not None:
        amap = Affine.coerce(given, name)
    elif model_unit:
        if not unit:
            raise ValueError(f"parameter {name!r}: model_units {model_unit!r} needs the user's units too (units=)")
        try:
            amap = Affine.units(unit, model_unit)
        except ValueError as exc:
            raise ValueError(
                f"parameter {name!r}: {exc}; give affine= for a map that is not a unit conversion"
            ) from None
    else:
        return None
    amap.check_shape(shape, name)
    return None if amap.is_identity else amap


def theta_shape_of(spec: Spec, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    from numpyro.distributions.transforms import biject_to

    bij = biject_to(to_numpyro_constraint(spec))
    try:
        return tuple(int(s) for s in bij.inverse_shape(shape))
    except Exception as exc:  # numpyro raises for impossible event shapes
        raise ValueError(
            f"parameter {name!r}: shape {shape} is not valid for transform {spec_label(spec)}: {exc}"
        ) from None


def check_support(b: Block, bij: Any, v: Any) -> None:
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
