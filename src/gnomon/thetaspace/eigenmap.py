r"""`EigenMap`: a linear θ-map ``θ = θ_ref + B z`` from the eigendecomposition of a curvature matrix.

Given a symmetric positive (semi-)definite curvature F (a Fisher, Gauss–Newton or Hessian matrix at
θ_ref) the map is built in *normalised* units so that which modes are kept does not depend on the units
of θ:

.. math::

    S = \mathrm{diag}(F)^{-1/2}, \qquad \tilde F = S F S \ (\text{unit diagonal}) = V Λ V^T,

    B = S V Λ^{-1/2} \ (\texttt{whiten=True}), \qquad B = S V \ (\texttt{whiten=False}).

With whitening :math:`B^T F B = I`, so near a minimum with Hessian F the loss in z is
:math:`\ell(θ_\mathrm{ref}) + ½|z - z^*|^2` — one global learning rate then fits every direction.

Truncation keeps the modes with the largest normalised eigenvalues (the best-constrained directions):
``truncate=k`` (an int) keeps k modes, a float threshold keeps modes with :math:`λ ≥` threshold (Λ
has mean 1 since :math:`\tilde F` has unit diagonal), ``None`` keeps all (then every eigenvalue must be
positive). With truncation, ``to_z`` is the left inverse :math:`z = B^+ (θ - θ_\mathrm{ref})` (exact on
the kept subspace).

``log_abs_det`` is :math:`\log|\det B|` (square B) or :math:`½ \log\det(B^T B)` (truncated), the constant
Jacobian term :meth:`gnomon.Objective.reparameterize` adds to ``log_prob``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

EIGENMAP_SCHEMA = 1


@dataclass(frozen=True, eq=False)
class EigenMap:
    """``θ = θ_ref + B z`` (see the module docstring). Build with :meth:`from_matrix`.

    Attributes:
      theta_ref: ``(D,)`` reference point.
      basis: ``(D, K)`` the matrix B.
      scale: ``(D,)`` the normalisation ``S = diag(F)^{-1/2}``.
      eigenvalues: ``(K,)`` kept normalised eigenvalues (descending).
      eigenvectors: ``(D, K)`` kept eigenvectors of the normalised matrix.
      whiten: whether B includes ``Λ^{-1/2}``.
      truncate: the truncation rule (None, int or float).
      layout: optional :class:`gnomon.Layout` naming θ (the base coordinates).
    """

    theta_ref: np.ndarray
    basis: np.ndarray
    scale: np.ndarray
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    whiten: bool = True
    truncate: Any = None
    layout: Any = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrix(
        cls,
        F: Any,
        theta_ref: Any,
        *,
        whiten: bool = True,
        truncate: int | float | None = None,
        layout: Any = None,
    ) -> EigenMap:
        """Eigen θ-map of the curvature matrix ``F`` (D, D) at ``theta_ref`` (D,).

        Raises ValueError for a non-square or non-finite F, a non-positive diagonal, a θ_ref of the wrong
        shape, a bad ``truncate``, or (without truncation) non-positive eigenvalues.
        """
        F = np.asarray(F, dtype=np.float64)
        ref = np.asarray(theta_ref)
        if F.ndim != 2 or F.shape[0] != F.shape[1]:
            raise ValueError(f"F must be a square matrix (D, D), got shape {F.shape}")
        d = F.shape[0]
        if ref.shape != (d,):
            raise ValueError(f"theta_ref must have shape ({d},) to match F, got {ref.shape}")
        if not np.all(np.isfinite(F)):
            raise ValueError("F has non-finite entries")
        if not np.all(np.isfinite(ref)):
            raise ValueError("theta_ref has non-finite entries")
        if layout is not None and layout.size != d:
            raise ValueError(f"layout has size {layout.size} but F is {d}×{d}")
        diag = np.diag(F)
        if np.any(diag <= 0):
            raise ValueError(
                f"F must have a positive diagonal (got min {diag.min()!r}); it is normalised by "
                "1/√diag F before the eigendecomposition"
            )
        s = 1.0 / np.sqrt(diag)
        Fn = s[:, None] * (0.5 * (F + F.T)) * s[None, :]
        lam, vec = np.linalg.eigh(Fn)
        order = np.argsort(lam)[::-1]
        lam, vec = lam[order], vec[:, order]
        vec = vec * np.where(
            vec[np.argmax(np.abs(vec), axis=0), np.arange(d)] < 0, -1.0, 1.0
        )  # sign convention
        keep = _kept(lam, truncate)
        lam, vec = lam[:keep], vec[:, :keep]
        if np.any(lam <= 0):
            raise ValueError(
                f"F has {int(np.sum(lam <= 0))} non-positive normalised eigenvalues (min {lam.min():.3g}); "
                "pass truncate= (a mode count, or an eigenvalue threshold such as 1e-8) to drop them"
            )
        basis = s[:, None] * vec
        if whiten:
            basis = basis / np.sqrt(lam)[None, :]
        dtype = ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float64
        return cls(
            theta_ref=ref.astype(dtype),
            basis=basis,
            scale=s,
            eigenvalues=lam,
            eigenvectors=vec,
            whiten=bool(whiten),
            truncate=truncate,
            layout=layout,
        )

    # ------------------------------------------------------------------ maps
    @property
    def dim(self) -> int:
        """Dimension D of θ."""
        return int(self.basis.shape[0])

    @property
    def z_dim(self) -> int:
        """Dimension K of z (D unless truncated)."""
        return int(self.basis.shape[1])

    @property
    def log_abs_det(self) -> float:
        """``log|det ∂θ/∂z|`` (square) or ``½ log det(BᵀB)`` (truncated)."""
        if self.z_dim == self.dim:
            return float(np.linalg.slogdet(self.basis)[1])
        return 0.5 * float(np.linalg.slogdet(self.basis.T @ self.basis)[1])

    def _inverse(self) -> np.ndarray:
        # z = Λ^{1/2} Vᵀ S⁻¹ (θ − θ_ref)  (whitened)  or  Vᵀ S⁻¹ (θ − θ_ref)
        inv = self.eigenvectors.T / self.scale[None, :]
        if self.whiten:
            inv = np.sqrt(self.eigenvalues)[:, None] * inv
        return inv

    def to_theta(self, z: Any) -> jnp.ndarray:
        """θ = θ_ref + B z for z of shape (..., K) (jittable, keeps z's dtype)."""
        z = jnp.asarray(z)
        if z.shape[-1:] != (self.z_dim,):
            raise ValueError(f"z must have trailing dimension {self.z_dim}, got shape {tuple(z.shape)}")
        dt = z.dtype if jnp.issubdtype(z.dtype, jnp.floating) else jnp.result_type(float)
        # HIGHEST: on GPUs the default matmul is TF32, and θ must be the θ the model sees (Trace decodes z
        # exactly on the host)
        return jnp.asarray(self.theta_ref, dt) + jnp.matmul(z.astype(dt), jnp.asarray(self.basis.T, dt),
                                                            precision=jax.lax.Precision.HIGHEST)

    def to_z(self, theta: Any) -> jnp.ndarray:
        """z = B⁺ (θ − θ_ref) for θ of shape (..., D) (jittable)."""
        theta = jnp.asarray(theta)
        if theta.shape[-1:] != (self.dim,):
            raise ValueError(f"θ must have trailing dimension {self.dim}, got shape {tuple(theta.shape)}")
        dt = theta.dtype if jnp.issubdtype(theta.dtype, jnp.floating) else jnp.result_type(float)
        return jnp.matmul(theta.astype(dt) - jnp.asarray(self.theta_ref, dt), jnp.asarray(self._inverse().T, dt),
                          precision=jax.lax.Precision.HIGHEST)

    # ------------------------------------------------------------------ save / load
    @functools.cached_property
    def hash(self) -> str:
        """sha256 (first 16 hex chars) of the arrays (as float64) and the settings (computed once: every
        flatten of a Trace in this map asks for it)."""
        h = hashlib.sha256()
        for a in (self.theta_ref, self.basis, self.scale, self.eigenvalues, self.eigenvectors):
            h.update(np.ascontiguousarray(np.asarray(a, np.float64)).tobytes())
        h.update(json.dumps({"whiten": self.whiten, "truncate": self.truncate}, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for ``thetamap.npz``."""
        return {
            "theta_ref": np.asarray(self.theta_ref),
            "basis": np.asarray(self.basis),
            "scale": np.asarray(self.scale),
            "eigenvalues": np.asarray(self.eigenvalues),
            "eigenvectors": np.asarray(self.eigenvectors),
        }

    def describe(self) -> dict[str, Any]:
        """JSON-able description for ``meta.json`` (includes the hash that :meth:`from_arrays` checks)."""
        return {
            "eigenmap_schema": EIGENMAP_SCHEMA,
            "hash": self.hash,
            "whiten": self.whiten,
            "truncate": self.truncate,
            "dim": self.dim,
            "z_dim": self.z_dim,
            "log_abs_det": self.log_abs_det,
            "eigenvalue_range": [float(self.eigenvalues.min()), float(self.eigenvalues.max())],
        }

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], layout: Any = None
    ) -> EigenMap:
        """Rebuild from :meth:`to_arrays` / :meth:`describe`; ValueError when arrays are missing, shapes
        disagree or the hash does not match."""
        need = ("theta_ref", "basis", "scale", "eigenvalues", "eigenvectors")
        missing = [k for k in need if k not in arrays]
        if missing:
            raise ValueError(f"EigenMap arrays lack {missing}")
        if int(meta.get("eigenmap_schema", 1)) > EIGENMAP_SCHEMA:
            raise ValueError(
                f"EigenMap schema {meta.get('eigenmap_schema')} is newer than this gnomon's {EIGENMAP_SCHEMA}"
            )
        tr = meta.get("truncate")
        emap = cls(
            theta_ref=np.asarray(arrays["theta_ref"]),
            basis=np.asarray(arrays["basis"]),
            scale=np.asarray(arrays["scale"]),
            eigenvalues=np.asarray(arrays["eigenvalues"]),
            eigenvectors=np.asarray(arrays["eigenvectors"]),
            whiten=bool(meta.get("whiten", True)),
            truncate=tr,
            layout=layout,
        )
        d, k = emap.basis.shape if emap.basis.ndim == 2 else (-1, -1)
        if (
            emap.theta_ref.shape != (d,)
            or emap.scale.shape != (d,)
            or emap.eigenvalues.shape != (k,)
            or emap.eigenvectors.shape != (d, k)
        ):
            raise ValueError("EigenMap arrays have inconsistent shapes")
        for key, value in (("dim", d), ("z_dim", k)):
            if key in meta and int(meta[key]) != value:
                raise ValueError(f"EigenMap {key} is {value} but meta says {meta[key]}")
        if "hash" in meta and meta["hash"] != emap.hash:
            raise ValueError(f"EigenMap hash mismatch: arrays give {emap.hash}, meta says {meta['hash']}")
        return emap

    def __repr__(self) -> str:
        w = "whitened" if self.whiten else "unwhitened"
        return f"EigenMap(D={self.dim} -> K={self.z_dim}, {w}, hash={self.hash})"


def _kept(lam: np.ndarray, truncate: Any) -> int:
    d = lam.shape[0]
    if truncate is None:
        return d
    if isinstance(truncate, bool):
        raise ValueError(f"truncate must be None, an int mode count or a float threshold, got {truncate!r}")
    if isinstance(truncate, (int, np.integer)):
        if not 1 <= truncate <= d:
            raise ValueError(f"truncate={truncate} modes is outside 1..{d}")
        return int(truncate)
    if isinstance(truncate, (float, np.floating)):
        if not truncate > 0:
            raise ValueError(f"a truncation threshold must be positive, got {truncate!r}")
        k = int(np.sum(lam >= truncate))
        if k == 0:
            raise ValueError(
                f"truncate threshold {truncate} keeps no mode (largest normalised eigenvalue {lam[0]:.3g})"
            )
        return k
    raise ValueError(f"truncate must be None, an int mode count or a float threshold, got {truncate!r}")
