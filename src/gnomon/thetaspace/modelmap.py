r"""`Affine`: the per-block map between the units a user thinks in and the units a model takes.

A layout block holds values in the **user's units** (µas, nm, ppm, log10 photons): that is what
``layout.unpack(θ)`` returns and what every table, plot and bound reports. A forward model often takes other
units (dLux: radians, metres, the mean flux of the pair). Each block may carry one map

.. math::  m = s\,u + o \qquad\text{or, with ``log10=True},}\qquad m = s\,10^{u} + o,

from the user value :math:`u` to the model value :math:`m` (scale :math:`s \ne 0`, offset :math:`o`; both
scalars or arrays of the block's shape). The full chain from θ is

.. math::  θ \xrightarrow{\text{bijection (numpyro)}} u \xrightarrow{\text{Affine}} m ,

so θ is well scaled by construction (a µas is a µas whatever the model's radians), and the transform
(``"positive"``, intervals, ...) acts on the user's values. Typical maps:

====================================  ===========================================================
``Affine.units("µas", "rad")``        µas ↔ rad (scale from the unit registry)
``Affine.units("nm", "m")``           nm ↔ m
``Affine.relative(0.355, "ppm")``     a ppm offset around a nominal: m = 0.355·(1 + 10⁻⁶ u)
``Affine(scale=0.5)``                 total flux ↔ dLux's mean flux of a pair
``Affine(scale=0.5, log10=True)``     log10 total flux ↔ mean flux: m = 0.5·10^u
====================================  ===========================================================

The map is plain JSON (``to_json``) and part of the layout's content hash, so ``meta.json`` records how the
saved θ relates to the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np


def _param(value: Any, what: str) -> float | tuple:
    """A scale/offset as a float (scalar) or a nested tuple of floats (array), checked finite."""
    a = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"Affine {what} must be finite, got {value!r}")
    return float(a) if a.ndim == 0 else _tuples(a.tolist())


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else float(v)


@dataclass(frozen=True)
class Affine:
    """Map from user values ``u`` to model values ``m = scale·u + offset`` (``scale·10**u + offset`` with
    ``log10=True``), applied after the layout transform (docs/theta-space.md, "The model's units").

    Args:
      scale: non-zero factor (a float, or an array of the block's shape for per-element scales).
      offset: added after scaling (a float or an array of the block's shape).
      log10: the user value is the log10 of ``(m − offset)/scale``.

    Build unit conversions with :meth:`units` and relative (ppm, %) offsets around a nominal with
    :meth:`relative`.
    """

    scale: Any = 1.0
    offset: Any = 0.0
    log10: bool = False

    def __post_init__(self):
        scale = _param(self.scale, "scale")
        if np.any(np.asarray(scale) == 0):
            raise ValueError(f"Affine scale must be non-zero, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "offset", _param(self.offset, "offset"))
        object.__setattr__(self, "log10", bool(self.log10))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def units(cls, user_unit: str, model_unit: str) -> Affine:
        """The conversion from ``user_unit`` to ``model_unit`` (``Affine.units("nm", "m")``: scale 1e-9)."""
        from gnomon.thetaspace.units import conversion_factor

        return cls(scale=conversion_factor(user_unit, model_unit))

    @classmethod
    def relative(cls, nominal: Any, unit: str = "ppm") -> Affine:
        """A fractional offset around ``nominal`` in ``unit`` (``"ppm"``, ``"%"``, ``"ppb"``, ``"frac"``):
        ``m = nominal·(1 + f·u)`` with ``f`` the size of ``unit`` (1e-6 for ppm)."""
        from gnomon.thetaspace.units import conversion_factor

        f = conversion_factor(unit, "frac")
        nominal_a = np.asarray(nominal, dtype=float)
        if np.any(nominal_a == 0):
            raise ValueError(f"Affine.relative needs a non-zero nominal, got {nominal!r}")
        return cls(scale=nominal_a * f, offset=nominal_a)

    @classmethod
    def from_json(cls, d: Any) -> Affine:
        """Inverse of :meth:`to_json`."""
        if not isinstance(d, dict) or "scale" not in d:
            raise ValueError(f"an Affine map is written as {{'scale', 'offset', 'log10'}}, got {d!r}")
        return cls(scale=d["scale"], offset=d.get("offset", 0.0), log10=bool(d.get("log10", False)))

    @classmethod
    def coerce(cls, spec: Any, name: str = "?") -> Affine:
        """An Affine from an Affine, a scale (float/array), a ``(scale, offset)`` pair or a dict."""
        if isinstance(spec, Affine):
            return spec
        if isinstance(spec, dict):
            return cls.from_json(spec)
        if isinstance(spec, tuple) and len(spec) == 2:
            return cls(scale=spec[0], offset=spec[1])
        try:
            return cls(scale=spec)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"parameter {name!r}: a model map must be a gnomon.Affine, a scale or a (scale, offset) pair; "
                f"got {spec!r} ({exc})"
            ) from None

    # ------------------------------------------------------------------ properties
    @property
    def is_identity(self) -> bool:
        return not self.log10 and np.all(np.asarray(self.scale) == 1.0) and np.all(np.asarray(self.offset) == 0.0)

    def check_shape(self, shape: tuple[int, ...], name: str) -> None:
        """ValueError unless scale and offset are scalars or broadcast to the block ``shape`` exactly."""
        for what, v in (("scale", self.scale), ("offset", self.offset)):
            vs = np.shape(v)
            try:
                out = np.broadcast_shapes(vs, shape)
            except ValueError:
                out = None
            if out != tuple(shape):
                raise ValueError(
                    f"parameter {name!r}: Affine {what} of shape {vs} does not fit the block shape {shape}"
                )

    def to_json(self) -> dict:
        """``{"scale", "offset", "log10"}`` with floats or nested lists."""
        conv = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        return {"scale": _nested(conv(self.scale)), "offset": _nested(conv(self.offset)), "log10": self.log10}

    def describe(self) -> str:
        s = _short(self.scale)
        o = _short(self.offset)
        core = f"{s}·10^u" if self.log10 else f"{s}·u"
        return core if o == "0" else f"{core} + {o}"

    # ------------------------------------------------------------------ maps
    def _arrays(self, like: Any) -> tuple[Any, Any]:
        dt = jnp.result_type(like) if jnp.issubdtype(jnp.result_type(like), jnp.floating) else jnp.result_type(float)
        return jnp.asarray(self.scale, dt), jnp.asarray(self.offset, dt)

    def to_model(self, u: Any) -> Any:
        """User value → model value (jittable; keeps the dtype of ``u``)."""
        u = jnp.asarray(u)
        s, o = self._arrays(u)
        return s * (jnp.power(jnp.asarray(10.0, s.dtype), u) if self.log10 else u) + o

    def to_user(self, m: Any) -> Any:
        """Model value → user value (inverse of :meth:`to_model`)."""
        m = jnp.asarray(m)
        s, o = self._arrays(m)
        x = (m - o) / s
        return jnp.log10(x) if self.log10 else x

    def derivative(self, u: Any) -> Any:
        """``dm/du`` at ``u`` (``scale`` or ``scale·ln10·10^u``)."""
        u = jnp.asarray(u)
        s, _ = self._arrays(u)
        if self.log10:
            return s * math.log(10.0) * jnp.power(jnp.asarray(10.0, s.dtype), u)
        return jnp.broadcast_to(s, jnp.shape(u)) if s.ndim <= jnp.ndim(u) else s


def _nested(v: Any) -> Any:
    if isinstance(v, list):
        return [_nested(x) for x in v]
    if isinstance(v, tuple):
        return [_nested(x) for x in v]
    return float(v)


def _short(v: Any) -> str:
    a = np.asarray(v)
    return f"{float(a):.6g}" if a.ndim == 0 else f"array{tuple(a.shape)}"
