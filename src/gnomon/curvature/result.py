"""`Curvature`: one curvature estimate at a point θ (diagonal, optional dense matrix, method, cost, config).

Estimators (:mod:`gnomon.curvature.estimate`) return it; preconditioners, mass matrices, eigen maps and the
Cramér–Rao bound consume it. A registered JAX pytree: ``diag`` and ``matrix`` are leaves, the rest static.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Learning-rate exponent by what a curvature measures: 1 for Hessian-like (loss/θ²), ½ for g² statistics.
POWERS = {
    "exact": 1.0,
    "hutchinson": 1.0,
    "gauss_newton": 1.0,
    "empirical_fisher": 1.0,
    "fisher": 1.0,
    "blend": 1.0,
    "user": 1.0,
    "ema_grad2": 0.5,
}


def default_power(method: str) -> float:
    """1 for Hessian/Gauss–Newton/Fisher curvature, ½ for squared-gradient statistics (``ema_grad2``)."""
    return POWERS.get(method, 1.0)



class _Config(dict):
    """A JSON-able dict that hashes and compares by its JSON text (usable as pytree aux data)."""

    def _text(self) -> str:
        return json.dumps(self, sort_keys=True, default=str)

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self._text())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and json.dumps(other, sort_keys=True, default=str) == self._text()

    def __ne__(self, other: object) -> bool:
        return not self == other


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class Curvature:
    """A curvature estimate at one θ.

    Attributes:
      diag: ``(D,)`` positive diagonal (after the safeguards described in the module docstring).
      matrix: ``(D, D)`` symmetric dense matrix when asked for (``dense=True``), else None.
      method: the estimator (``"exact"``, ``"hutchinson"``, ``"gauss_newton"``, ``"empirical_fisher"``,
        ``"ema_grad2"``, ``"blend"``, or ``"user"`` for a curvature built from arrays).
      num_grad_evals: its cost in gradient-evaluation equivalents (an HVP counts 2).
      config: JSON-able parameters and safeguard counts (``num_negative``, ``num_nonfinite``,
        ``num_floored``, ``floor``, ...), written to ``meta.json`` by the engines.

    A registered pytree: ``diag`` and ``matrix`` are leaves; ``method``, ``num_grad_evals`` and ``config``
    are static (hashable by value).
    """

    diag: Any
    matrix: Any = None
    method: str = "user"
    num_grad_evals: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.config, _Config):
            object.__setattr__(self, "config", _Config(self.config or {}))

    def tree_flatten(self):
        return (self.diag, self.matrix), (self.method, int(self.num_grad_evals), self.config)

    @classmethod
    def tree_unflatten(cls, aux, children):
        diag, matrix = children
        method, nge, config = aux
        obj = object.__new__(cls)
        object.__setattr__(obj, "diag", diag)
        object.__setattr__(obj, "matrix", matrix)
        object.__setattr__(obj, "method", method)
        object.__setattr__(obj, "num_grad_evals", nge)
        object.__setattr__(obj, "config", config)
        return obj

    @classmethod
    def from_diag(cls, diag: Any, method: str = "user", **config: Any) -> Curvature:
        """A curvature from a given positive diagonal (e.g. a prior precision or a saved estimate)."""
        d = jnp.asarray(diag)
        if d.ndim != 1:
            raise ValueError(f"a curvature diagonal must be a vector (D,), got shape {tuple(d.shape)}")
        _check_finite_positive(np.asarray(d), "diag")
        return cls(diag=d, method=method, config=config)

    @classmethod
    def from_matrix(cls, matrix: Any, method: str = "user", **config: Any) -> Curvature:
        """A curvature from a given symmetric matrix (its diagonal becomes ``diag``)."""
        m = jnp.asarray(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"a curvature matrix must be square (D, D), got shape {tuple(m.shape)}")
        if not np.all(np.isfinite(np.asarray(m))):
            raise ValueError("the curvature matrix has non-finite entries")
        d = jnp.diagonal(m)
        _check_finite_positive(np.asarray(d), "matrix diagonal")
        return cls(diag=d, matrix=0.5 * (m + m.T), method=method, config=config)

    @property
    def dim(self) -> int:
        return int(np.shape(self.diag)[-1])

    @property
    def power(self) -> float:
        """The learning-rate exponent this curvature calls for (1 for Hessian-like, ½ for g²)."""
        return default_power(self.method)

    def describe(self) -> dict[str, Any]:
        """JSON-able description for ``meta.json``: method, cost and configuration."""
        return {
            "method": self.method,
            "num_grad_evals": int(self.num_grad_evals),
            "dim": self.dim,
            "dense": self.matrix is not None,
            **dict(self.config),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``curvature.npz``: ``diag`` and, when present, ``matrix``."""
        out = {"diag": np.asarray(self.diag)}
        if self.matrix is not None:
            out["matrix"] = np.asarray(self.matrix)
        return out

    def __repr__(self) -> str:
        d = np.asarray(self.diag)
        rng = f"{d.min():.3g}…{d.max():.3g}" if d.size else "empty"
        dense = ", dense" if self.matrix is not None else ""
        return f"Curvature({self.method}, D={d.size}, diag {rng}{dense}, {self.num_grad_evals} grad evals)"


def _check_finite_positive(d: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(d)):
        raise ValueError(f"curvature {what} has {int(np.sum(~np.isfinite(d)))} non-finite entries")
    if np.any(d <= 0):
        raise ValueError(f"curvature {what} must be positive, got min {float(np.min(d))!r}")


# ---------------------------------------------------------------------------------------------- driver


def blend_curvature(a: Curvature, b: Curvature, weight: float = 0.5) -> Curvature:
    """``weight · a + (1 − weight) · b`` (diagonals, and matrices when both have one); costs add."""
    if not (isinstance(weight, (int, float)) and 0 <= weight <= 1):
        raise ValueError(f"weight must be in [0, 1], got {weight!r}")
    if a.dim != b.dim:
        raise ValueError(f"cannot blend curvatures of dims {a.dim} and {b.dim}")
    diag = weight * jnp.asarray(a.diag) + (1 - weight) * jnp.asarray(b.diag)
    matrix = None
    if a.matrix is not None and b.matrix is not None:
        matrix = weight * jnp.asarray(a.matrix) + (1 - weight) * jnp.asarray(b.matrix)
    return Curvature(
        diag=diag,
        matrix=matrix,
        method="blend",
        num_grad_evals=a.num_grad_evals + b.num_grad_evals,
        config={"weight": float(weight), "a": a.describe(), "b": b.describe()},
    )
