r"""Likelihood families for :meth:`gnomon.Objective.from_likelihood`: the noise model of each datum.

A family gives, for an observation :math:`y_n` with model mean :math:`\mu_n(θ)`, the log likelihood
:math:`\log p(y_n \mid \mu_n)` and the **expected Fisher weight** :math:`w_n` with
:math:`E_y[-\partial^2_{\mu} \log p(y \mid \mu)] = w_n`, so that the expected Fisher information of θ is

.. math::  F(θ) = J^T W J,\qquad J = \partial\mu/\partial θ,\quad W = \mathrm{diag}(w).

* ``poisson(floor=None)``: :math:`\log p = y\log\mu - \mu - \log y!`, :math:`w = 1/\mu`;
* ``gaussian(sigma)``: :math:`\log p = -\tfrac12 r^2 - \log\sigma - \tfrac12\log 2\pi`, :math:`w = 1/\sigma^2`;
* ``student_t(nu, sigma)``: :math:`\log p = \log\Gamma(\tfrac{\nu+1}2) - \log\Gamma(\tfrac\nu2)
  - \tfrac12\log(\nu\pi\sigma^2) - \tfrac{\nu+1}2\log(1 + r^2/\nu)`,
  :math:`w = \frac{\nu+1}{(\nu+3)\sigma^2}`;

with :math:`r = (y-\mu)/\sigma`. Poisson evaluates :math:`\mu` as :math:`\max(\mu, \text{floor})` in both the
likelihood and the weight (default floor :math:`\sqrt{\text{tiny}}` of the dtype, about 1e-19 in float32):
pixels the model predicts as exactly dark then contribute a finite term instead of :math:`0 \cdot \infty`.

``sigma`` may be a scalar or an array of the data's shape (per-pixel noise). When it varies from call to call
(one σ map per epoch) leave it out of the family and pass data as a mapping ``{"y": y, "sigma": σ}``: per-call
values are arguments of the compiled program, so a time series compiles once. A value given per call
overrides the family's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

__all__ = ["Family", "poisson", "gaussian", "student_t", "resolve_family"]

NAMES = ("poisson", "gaussian", "student_t")


def _digest(value: Any) -> Any:
    """A hashable stand-in for a parameter value (floats as such, arrays by dtype, shape and bytes)."""
    if value is None:
        return None
    a = np.asarray(value)
    if a.ndim == 0:
        return float(a)
    return (str(a.dtype), a.shape, hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest())


@dataclass(frozen=True, eq=False)
class Family:
    """A likelihood family (build with :func:`poisson`, :func:`gaussian`, :func:`student_t`).

    Attributes:
      name: ``"poisson"``, ``"gaussian"`` or ``"student_t"``.
      params: fixed parameters (``sigma``, ``nu``, ``floor``), scalars or arrays; None where not fixed.
      per_call: names of the parameters that data may carry per call (``{"y": ..., "sigma": ...}``).
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    per_call: tuple[str, ...] = ()

    # ------------------------------------------------------------------ identity
    @property
    def key(self) -> tuple:
        """Hashable identity by value (part of an objective's ``compile_key``)."""
        return (self.name, tuple(sorted((k, _digest(v)) for k, v in self.params.items())))

    def describe(self) -> dict[str, Any]:
        """JSON-able description (arrays as ``"array(shape)"``)."""
        out: dict[str, Any] = {"family": self.name}
        for k, v in self.params.items():
            if v is None:
                continue
            a = np.asarray(v)
            out[k] = float(a) if a.ndim == 0 else f"array{tuple(a.shape)}"
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.describe().items() if k != "family")
        return f"family.{self.name}({args})"

    # ------------------------------------------------------------------ parameters
    def resolve(self, overrides: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
        """The family's parameters for one call: per-call ``overrides`` win over the fixed ones."""
        out = {}
        for k, v in self.params.items():
            v = overrides.get(k, v)
            if v is None:
                raise ValueError(
                    f"the {self.name} family needs {k!r}: give it to the family "
                    f"(gn.family.{self.name}({k}=...)) or with the data ({{'y': y, {k!r}: ...}})"
                )
            out[k] = jnp.asarray(v, dtype)
        return out

    def check(self, y: Any, params: Mapping[str, Any], where: str) -> None:
        """ValueError for concrete values outside the family's domain (negative counts, σ ≤ 0, ν ≤ 0)."""
        checks = []
        if self.name == "poisson":
            checks.append(("y", y, "non-negative counts", lambda a: a >= 0))
        for k in ("sigma", "nu", "floor"):
            if params.get(k) is not None:
                checks.append((k, params[k], "positive", lambda a: a > 0))
        for what, v, expect, ok in checks:
            try:
                a = np.asarray(v)
            except Exception:  # a tracer: nothing to check
                continue
            good = ok(a)
            if not np.all(good):
                idx = np.argwhere(~np.asarray(good))
                at = f" at index {tuple(int(i) for i in idx[0])}" if a.ndim else ""
                bad = a[tuple(idx[0])] if a.ndim else a
                raise ValueError(f"{where}: the {self.name} family needs {what} {expect}; got {float(bad)!r}{at}")

    # ------------------------------------------------------------------ the noise model
    def _mu(self, mu: Any, p: Mapping[str, Any]) -> Any:
        floor = p.get("floor")
        if floor is None:
            floor = jnp.asarray(math.sqrt(float(jnp.finfo(mu.dtype).tiny)), mu.dtype)
        return jnp.maximum(mu, floor)

    def log_likelihood(self, y: Any, mu: Any, p: Mapping[str, Any]) -> Any:
        """Elementwise :math:`\\log p(y \\mid \\mu)` (the module table), same shape as ``y``."""
        if self.name == "poisson":
            # Near the data (|m/y − 1| < ½) as y·log1p((m−y)/y) + (y − m) ≈ −(m−y)²/2y plus the θ-free constant
            # y·log y − y − log y!: written as y·log m − m, both terms are ~10⁷ for bright pixels and float32 loses loss
            # differences below ~1 to rounding (measured: wrong-signed steps near a fit). Far from the data the
            # plain form (its derivatives stay finite for a mean clamped at the floor).
            m = self._mu(mu, p)
            safe_y = jnp.where(y > 0, y, jnp.ones_like(y))
            near = (y > 0) & (jnp.abs(m / safe_y - 1.0) < 0.5)
            d = jnp.where(near, (m - y) / safe_y, 0.0)
            # the constant y·log y − y − log y! ≈ −½·log(2πy) is small, so adding it keeps the small part's digits
            close = y * jnp.log1p(d) + (y - m) + (y * jnp.log(safe_y) - y - gammaln(y + 1.0))
            return jnp.where(near, close, y * jnp.log(m) - m - gammaln(y + 1.0))
        sigma = p["sigma"]
        r = (y - mu) / sigma
        if self.name == "gaussian":
            return -0.5 * r * r - jnp.log(sigma) - 0.5 * math.log(2 * math.pi)
        nu = p["nu"]
        return (gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * jnp.log(nu * math.pi * sigma * sigma)
                - (nu + 1) / 2 * jnp.log1p(r * r / nu))

    def fisher_weights(self, mu: Any, p: Mapping[str, Any]) -> Any:
        """Elementwise expected Fisher weight :math:`w(\\mu)` (the module table), shape of ``mu``."""
        if self.name == "poisson":
            m = self._mu(mu, p)  # below the floor the mean is clamped: no information, as in the loss
            return jnp.where(mu >= m, 1.0 / m, jnp.zeros_like(m))
        sigma = p["sigma"]
        w = 1.0 / (sigma * sigma)
        if self.name == "student_t":
            nu = p["nu"]
            w = w * (nu + 1) / (nu + 3)
        return jnp.broadcast_to(w, jnp.shape(mu)).astype(mu.dtype)

    def sample(self, key: Any, mu: Any, p: Mapping[str, Any] | None = None) -> Any:
        """Simulated data ``y ~ p(· | μ)`` (for tests and simulation studies)."""
        mu = jnp.asarray(mu)
        p = self.resolve(dict(p or {}), mu.dtype)
        if self.name == "poisson":
            return jax.random.poisson(key, self._mu(mu, p), shape=mu.shape).astype(mu.dtype)
        noise = jax.random.normal(key, mu.shape, mu.dtype) if self.name == "gaussian" else \
            jax.random.t(key, p["nu"], mu.shape, mu.dtype)
        return mu + p["sigma"] * noise


def poisson(floor: float | None = None) -> Family:
    """Poisson counts: :math:`\\log p = y\\log\\mu - \\mu - \\log y!`, Fisher weight :math:`1/\\mu`.

    ``floor``: the smallest mean used (default :math:`\\sqrt{\\text{tiny}}` of the dtype): the model's mean is
    clamped there, so a datum whose model lies below the floor carries no information — in the loss (its
    gradient is zero) and in the expected Fisher and CRLB alike. It is a clamp of the mean, not of a
    variance."""
    if floor is not None and not (isinstance(floor, (int, float)) and math.isfinite(floor) and floor > 0):
        raise ValueError(f"poisson floor must be a positive number, got {floor!r}")
    return Family("poisson", {"floor": None if floor is None else float(floor)}) if floor is not None \
        else Family("poisson", {})


def gaussian(sigma: Any = None) -> Family:
    """Gaussian noise of known standard deviation ``sigma`` (scalar or per-datum array): Fisher weight
    :math:`1/\\sigma^2`. Without ``sigma`` here, data must carry it per call (``{"y": y, "sigma": σ}``)."""
    _check_positive("gaussian sigma", sigma)
    return Family("gaussian", {"sigma": sigma}, per_call=("sigma",))


def student_t(nu: float, sigma: Any = None) -> Family:
    """Student-t noise with ``nu`` degrees of freedom and scale ``sigma``: Fisher weight
    :math:`(\\nu+1)/((\\nu+3)\\sigma^2)` (robust to outliers; ν → ∞ is the Gaussian)."""
    if not (isinstance(nu, (int, float)) and math.isfinite(nu) and nu > 0):
        raise ValueError(f"student_t nu must be a positive number, got {nu!r}")
    _check_positive("student_t sigma", sigma)
    return Family("student_t", {"nu": float(nu), "sigma": sigma}, per_call=("sigma",))


def _check_positive(what: str, v: Any) -> None:
    if v is None:
        return
    a = np.asarray(v, dtype=float)
    bad = ~(np.isfinite(a) & (a > 0))
    if np.any(bad):
        idx = np.argwhere(bad)[0] if a.ndim else ()
        at = f" at index {tuple(int(i) for i in idx)}" if a.ndim else ""
        raise ValueError(f"{what} must be finite and positive; got {float(a[tuple(idx)])!r}{at}")


def resolve_family(family: Any) -> Family:
    """A :class:`Family` from a Family or a name (``"poisson"``, ``"gaussian"``, ``"student_t"``; the last two
    then take σ, ν from the data or fail with a clear error)."""
    if isinstance(family, Family):
        return family
    if family == "poisson":
        return poisson()
    if family == "gaussian":
        return gaussian()
    if family == "student_t":
        raise ValueError(
            "the student_t family needs its degrees of freedom: family=gn.family.student_t(nu=..., sigma=...)"
        )
    raise ValueError(
        f"unknown likelihood family {family!r}; expected one of {NAMES} or a gn.family.<name>(...) object"
    )
