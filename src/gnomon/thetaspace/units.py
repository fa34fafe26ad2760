"""Unit strings, conversion factors and automatic display scaling.

A unit string names a quantity's unit (``"arcsec"``, ``"nm"``, ``"ppm"``, ``"arcsec/pix"``, ``"deg"``). Units
of one *family* convert by a constant factor::

    value_in_b = value_in_a * factor(a, b),     factor(a, b) = scale(a) / scale(b)

where ``scale(u)`` is the size of ``u`` in the family's base unit (radian, metre, second, 1). A compound unit
``"num/den"`` scales through its numerator (``"arcsec/pix"`` → ``"µas/pix"``). Unknown units (``"log10_ph"``,
``""``) are left alone.

:func:`auto_unit` picks the display unit for a set of values: among the family's display candidates for the
source unit (arcsec → arcsec, mas, µas; nm → m … pm; deg → deg, arcsec, mas, µas; ppm → %, ppm, ppb) the
largest one in which the magnitude (the largest finite ``|value|``, which sets the axis range) is at least 1.
So an arcsec residual of 2e-5 is shown as 20 µas, a 0.3 nm residual as 300 pm and a 4e-5 fractional error
(unit ``"frac"``) as 40 ppm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

_ARCSEC = math.pi / (180.0 * 3600.0)

# canonical unit -> (family, size in the family's base unit)
_UNITS: dict[str, tuple[str, float]] = {
    # angle (base: radian)
    "rad": ("angle", 1.0),
    "mrad": ("angle", 1e-3),
    "µrad": ("angle", 1e-6),
    "nrad": ("angle", 1e-9),
    "deg": ("angle", math.pi / 180.0),
    "arcmin": ("angle", 60.0 * _ARCSEC),
    "arcsec": ("angle", _ARCSEC),
    "mas": ("angle", 1e-3 * _ARCSEC),
    "µas": ("angle", 1e-6 * _ARCSEC),
    # length (base: metre)
    "km": ("length", 1e3),
    "m": ("length", 1.0),
    "mm": ("length", 1e-3),
    "µm": ("length", 1e-6),
    "nm": ("length", 1e-9),
    "pm": ("length", 1e-12),
    # time (base: second)
    "s": ("time", 1.0),
    "ms": ("time", 1e-3),
    "µs": ("time", 1e-6),
    "ns": ("time", 1e-9),
    # dimensionless fractions (base: 1)
    "frac": ("fraction", 1.0),
    "%": ("fraction", 1e-2),
    "ppm": ("fraction", 1e-6),
    "ppb": ("fraction", 1e-9),
}

_ALIASES = {
    "radian": "rad",
    "radians": "rad",
    "urad": "µrad",
    "μrad": "µrad",
    "degree": "deg",
    "degrees": "deg",
    "°": "deg",
    "as": "arcsec",
    '"': "arcsec",
    "arcsecond": "arcsec",
    "arcseconds": "arcsec",
    "milliarcsec": "mas",
    "uas": "µas",
    "μas": "µas",
    "microarcsec": "µas",
    "meter": "m",
    "metre": "m",
    "um": "µm",
    "μm": "µm",
    "micron": "µm",
    "sec": "s",
    "us": "µs",
    "μs": "µs",
    "fraction": "frac",
    "percent": "%",
}

# source unit -> display candidates tried by auto_unit, largest first
_AUTO = {
    "angle_arcsec": ("arcsec", "mas", "µas"),
    "angle_rad": ("rad", "mrad", "µrad", "nrad"),
    "angle_deg": ("deg", "arcsec", "mas", "µas"),
    "length": ("km", "m", "mm", "µm", "nm", "pm"),
    "time": ("s", "ms", "µs", "ns"),
    "fraction": ("%", "ppm", "ppb"),
}


def _auto_key(canon: str) -> str:
    fam = _UNITS[canon][0]
    if fam == "angle":
        if canon in ("deg", "arcmin"):
            return "angle_deg"
        if canon in ("rad", "mrad", "µrad", "nrad"):
            return "angle_rad"
        return "angle_arcsec"
    return fam


def _split(unit: str) -> tuple[str, str]:
    """``"arcsec/pix"`` -> ``("arcsec", "/pix")``; ``"nm"`` -> ``("nm", "")``."""
    unit = (unit or "").strip()
    if "/" in unit:
        num, den = unit.split("/", 1)
        return num.strip(), "/" + den.strip()
    return unit, ""


def normalize_unit(unit: str | None) -> str:
    """Canonical spelling of a unit string (``"uas"`` → ``"µas"``, ``"as/pix"`` → ``"arcsec/pix"``).

    Unknown units are returned stripped but otherwise unchanged."""
    if unit is None:
        return ""
    if not isinstance(unit, str):
        raise ValueError(f"a unit must be a string, got {unit!r}")
    num, den = _split(unit)
    canon = _ALIASES.get(num, num)
    return canon + den


def family(unit: str | None) -> str | None:
    """The unit's family (``"angle"``, ``"length"``, ``"time"``, ``"fraction"``) or None when unknown."""
    num, _ = _split(normalize_unit(unit))
    return _UNITS[num][0] if num in _UNITS else None


def is_known(unit: str | None) -> bool:
    return family(unit) is not None


def conversion_factor(from_unit: str, to_unit: str) -> float:
    """Factor ``f`` with ``value_in_to = value_in_from * f``.

    Raises ValueError when the units are not of one family (or their denominators differ)."""
    a_num, a_den = _split(normalize_unit(from_unit))
    b_num, b_den = _split(normalize_unit(to_unit))
    if a_num == b_num and a_den == b_den:
        return 1.0
    if a_num not in _UNITS or b_num not in _UNITS or _UNITS[a_num][0] != _UNITS[b_num][0] or a_den != b_den:
        raise ValueError(
            f"cannot convert {from_unit!r} to {to_unit!r}: not units of one family "
            f"(known families: angle, length, time, fraction; compound units must share the denominator)"
        )
    return _UNITS[a_num][1] / _UNITS[b_num][1]


def convert(values, from_unit: str, to_unit: str) -> np.ndarray:
    """``values`` (in ``from_unit``) expressed in ``to_unit``."""
    return np.asarray(values, dtype=float) * conversion_factor(from_unit, to_unit)


def typical_magnitude(values) -> float:
    """Largest finite non-zero ``|value|`` (NaN when there are none)."""
    a = np.abs(np.asarray(values, dtype=float)).ravel()
    a = a[np.isfinite(a) & (a > 0)]
    return float(a.max()) if a.size else math.nan


def auto_unit(unit: str | None, values) -> str:
    """Display unit for ``values`` given in ``unit`` (module docstring); ``unit`` itself when not scalable."""
    canon = normalize_unit(unit)
    num, den = _split(canon)
    if num not in _UNITS:
        return canon
    mag = typical_magnitude(values)
    if not math.isfinite(mag):
        return canon
    candidates = _AUTO[_auto_key(num)]
    base = mag * _UNITS[num][1]
    for c in candidates:
        if base / _UNITS[c][1] >= 1.0:
            return c + den
    return candidates[-1] + den


def resolve_unit(
    unit: str | None, values, override: str | None = None, auto: bool = True
) -> tuple[str, float]:
    """``(display_unit, factor)`` for ``values`` in ``unit``: ``override`` if given, else :func:`auto_unit`
    (when ``auto``), else the unit itself."""
    canon = normalize_unit(unit)
    if override is not None:
        target = normalize_unit(override)
        return target, conversion_factor(canon, target)
    if not auto:
        return canon, 1.0
    target = auto_unit(canon, values)
    return target, conversion_factor(canon, target) if target != canon else 1.0


def unit_override(units: str | Mapping[str, str] | None, name: str) -> str | None:
    """The override for signal ``name`` from a mapping (``{name: unit}``) or one unit for all."""
    if units is None:
        return None
    if isinstance(units, str):
        return units
    if isinstance(units, Mapping):
        return units.get(name)
    raise ValueError(f"units must be a unit string or a mapping name -> unit, got {units!r}")


def label(unit: str | None) -> str:
    """Axis-label suffix: ``" [µas]"``, or ``""`` for dimensionless / empty units."""
    canon = normalize_unit(unit)
    return f" [{canon}]" if canon and canon not in ("1", "frac") else ""
