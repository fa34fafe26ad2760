"""Transform specifications: how a block of unconstrained θ maps to a constrained value.

A transform is named by a small JSON-able *spec* so that a layout can be written to ``meta.json`` and
rebuilt in another process; the bijection itself always comes from numpyro's ``biject_to`` (imported
lazily, only when a non-identity transform is used).

Accepted specs (``normalize_spec`` turns each into a canonical tuple):

====================================  ==============================================
``None``, ``"identity"``, ``"real"``  identity
``"positive"``                        exp
``"softplus_positive"``               softplus
``"unit_interval"``                   sigmoid onto (0, 1)
``("interval", lo, hi)``              scaled sigmoid onto (lo, hi)
``("greater_than", lo)``              lo + exp
``("less_than", hi)``                 hi - exp
``"simplex"``                         stick-breaking (K values from K-1 θ entries)
``"ordered_vector"``                  cumulative exp
``"positive_ordered_vector"``
``"corr_cholesky"``                   Cholesky factor of a correlation matrix
a numpyro ``Constraint`` instance     recognised and named when possible
====================================  ==============================================
"""

from __future__ import annotations

import math
from typing import Any

Spec = tuple  # canonical form: (name, *float_params)

_NO_PARAMS = {
    "identity",
    "positive",
    "softplus_positive",
    "unit_interval",
    "simplex",
    "ordered_vector",
    "positive_ordered_vector",
    "corr_cholesky",
    "corr_matrix",
    "positive_definite",
    "lower_cholesky",
}
_WITH_PARAMS = {"interval": 2, "greater_than": 1, "less_than": 1}

# numpyro constraint class name -> spec name (for constraint instances handed to us)
_NUMPYRO_NAMES = {
    "_Real": "identity",
    "_RealVector": "identity",
    "_IndependentConstraint": None,  # unwrapped below
    "_Positive": "positive",
    "_SoftplusPositive": "softplus_positive",
    "_UnitInterval": "unit_interval",
    "_Interval": "interval",
    "_OpenInterval": "interval",
    "_GreaterThan": "greater_than",
    "_GreaterThanEq": "greater_than",
    "_LessThan": "less_than",
    "_LessThanEq": "less_than",
    "_Simplex": "simplex",
    "_OrderedVector": "ordered_vector",
    "_PositiveOrderedVector": "positive_ordered_vector",
    "_CorrCholesky": "corr_cholesky",
    "_CorrMatrix": "corr_matrix",
    "_PositiveDefinite": "positive_definite",
    "_LowerCholesky": "lower_cholesky",
}


def _from_numpyro_constraint(c: Any, name: str) -> Spec:
    cls = type(c).__name__
    if cls == "_IndependentConstraint":
        return _from_numpyro_constraint(c.base_constraint, name)
    spec_name = _NUMPYRO_NAMES.get(cls)
    if spec_name is None:
        raise ValueError(
            f"parameter {name!r}: numpyro constraint {c!r} has no gnomon transform spec; "
            f"supported: {sorted(_NO_PARAMS | set(_WITH_PARAMS))}"
        )
    if spec_name == "interval":
        return ("interval", float(c.lower_bound), float(c.upper_bound))
    if spec_name == "greater_than":
        return ("greater_than", float(c.lower_bound))
    if spec_name == "less_than":
        return ("less_than", float(c.upper_bound))
    return (spec_name,)


def normalize_spec(spec: Any, name: str = "?") -> Spec:
    """Return the canonical tuple form of a transform spec, or raise ValueError naming the parameter."""
    if spec is None:
        return ("identity",)
    if isinstance(spec, str):
        s = "identity" if spec in ("real", "identity", "none") else spec
        if s in _NO_PARAMS:
            return (s,)
        if s in _WITH_PARAMS:
            raise ValueError(
                f"parameter {name!r}: transform {spec!r} needs {_WITH_PARAMS[s]} bound(s), "
                f"e.g. ({spec!r}, {', '.join(['0.0'] * _WITH_PARAMS[s])})"
            )
        raise ValueError(
            f"parameter {name!r}: unknown transform {spec!r}; expected one of "
            f"{sorted(_NO_PARAMS | set(_WITH_PARAMS) | {'real'})}, a (name, bounds...) tuple "
            "or a numpyro constraint"
        )
    if isinstance(spec, (tuple, list)) and spec and isinstance(spec[0], str):
        head = spec[0]
        if head in _NO_PARAMS and len(spec) == 1:
            return (head,)
        if head in _WITH_PARAMS:
            n = _WITH_PARAMS[head]
            if len(spec) != n + 1:
                raise ValueError(
                    f"parameter {name!r}: transform {head!r} takes {n} bound(s), got {list(spec[1:])}"
                )
            bounds = tuple(float(b) for b in spec[1:])
            if any(math.isnan(b) for b in bounds):
                raise ValueError(f"parameter {name!r}: NaN bound in transform {tuple(spec)}")
            if head == "interval" and not bounds[0] < bounds[1]:
                raise ValueError(
                    f"parameter {name!r}: interval needs lower < upper, got lower={bounds[0]}, "
                    f"upper={bounds[1]}"
                )
            return (head, *bounds)
        raise ValueError(f"parameter {name!r}: unknown transform spec {tuple(spec)!r}")
    if hasattr(spec, "check") and hasattr(spec, "feasible_like"):  # a numpyro Constraint
        return _from_numpyro_constraint(spec, name)
    raise ValueError(
        f"parameter {name!r}: transform must be a string, a (name, bounds...) tuple or a numpyro "
        f"constraint, got {spec!r}"
    )


def to_numpyro_constraint(spec: Spec) -> Any:
    """The numpyro constraint object of a canonical spec (imports numpyro)."""
    from numpyro.distributions import constraints as C

    head = spec[0]
    if head == "identity":
        return C.real
    if head == "interval":
        return C.interval(spec[1], spec[2])
    if head == "greater_than":
        return C.greater_than(spec[1])
    if head == "less_than":
        return C.less_than(spec[1])
    return getattr(C, head)


def spec_to_json(spec: Spec) -> str | list:
    """JSON form: a bare string for parameter-free transforms, a list otherwise."""
    return spec[0] if len(spec) == 1 else list(spec)


def spec_label(spec: Spec) -> str:
    return spec[0] if len(spec) == 1 else f"{spec[0]}({', '.join(repr(b) for b in spec[1:])})"
