"""Unit strings, conversion factors and automatic display scaling.

A unit string names a quantity's unit (``"arcsec"``, ``"nm"``, ``"ppm"``, ``"arcsec/pix"``, ``"deg"``). Units
of one *family* convert by a constant factor::

    value_in_b = value_in_a * factor(a, b),     factor(a, b) = scale(a) / scale(b)

where ``scale(u)`` is the size of ``u`` in the family's base unit (radian, metre, second, 1). A compound unit
``"num/den"`` scales through its numerator (``"arcsec/pix"`` → ``"µas/pix"``). Units that form a family of
their own (``"ph"``, ``"pix"``, ``"log10_ph"``, ``"dex"``) convert only to themselves; ``""`` means "no unit".

The registry is open: :func:`register_unit` adds a unit (and aliases) to a family, new or existing.
:func:`check_unit` refuses a unit string the registry does not know, listing the known ones — a
:class:`gnomon.Layout` checks every block's units with it, so ``"arcsecs"`` is an error, not a silent label.
Aliases (``"uas"``, ``"μas"`` with a Greek mu, ``"µas"`` with the micro sign) normalise for conversion only:
layouts and tables keep the string exactly as the user wrote it.

:func:`auto_unit` picks the display unit for a set of values: among the family's display candidates for the
source unit (arcsec → arcsec, mas, µas; nm → m … pm; deg → deg, arcsec, mas, µas; ppm → %, ppm, ppb) the
largest one in which the magnitude (the largest finite ``|value|``, which sets the axis range) is at least 1.
So an arcsec residual of 2e-5 is shown as 20 µas, a 0.3 nm residual as 300 pm and a 4e-5 fractional error
(unit ``"frac"``) as 40 ppm.
"""

from __future__ import annotations

import math
import re
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
    "1": ("fraction", 1.0),
    # units that convert only to themselves (one family each)
    "pix": ("pixel", 1.0),
    "ph": ("photon", 1.0),
    "e-": ("electron", 1.0),
    "adu": ("adu", 1.0),
    "counts": ("count", 1.0),
    "log10_ph": ("log10_photon", 1.0),
    "dex": ("dex", 1.0),
    "mag": ("magnitude", 1.0),
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
    "px": "pix",
    "pixel": "pix",
    "pixels": "pix",
    "photon": "ph",
    "photons": "ph",
    "electron": "e-",
    "electrons": "e-",
    "ADU": "adu",
    "DN": "adu",
    "count": "counts",
    "cts": "counts",
    # spelled out (a unit written in words must never be "corrected" to another scale)
    "meters": "m",
    "metres": "m",
    "kilometer": "km",
    "kilometers": "km",
    "kilometre": "km",
    "kilometres": "km",
    "millimeter": "mm",
    "millimeters": "mm",
    "millimetre": "mm",
    "millimetres": "mm",
    "micrometer": "µm",
    "micrometers": "µm",
    "micrometre": "µm",
    "micrometres": "µm",
    "nanometer": "nm",
    "nanometers": "nm",
    "nanometre": "nm",
    "nanometres": "nm",
    "picometer": "pm",
    "picometers": "pm",
    "picometre": "pm",
    "picometres": "pm",
    "milliradian": "mrad",
    "milliradians": "mrad",
    "microradian": "µrad",
    "microradians": "µrad",
    "nanoradian": "nrad",
    "nanoradians": "nrad",
    "arcminute": "arcmin",
    "arcminutes": "arcmin",
    "milliarcsecond": "mas",
    "milliarcseconds": "mas",
    "microarcsecond": "µas",
    "microarcseconds": "µas",
    "second": "s",
    "seconds": "s",
    "millisecond": "ms",
    "milliseconds": "ms",
    "microsecond": "µs",
    "microseconds": "µs",
    "nanosecond": "ns",
    "nanoseconds": "ns",
    "arcmins": "arcmin",
    "microarcsecs": "µas",
    "milliarcsecs": "mas",
    "arcsecs": "arcsec",
    "secs": "s",
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


def _auto_key(canon: str) -> str | None:
    fam = _UNITS[canon][0]
    if fam == "angle":
        if canon in ("deg", "arcmin"):
            return "angle_deg"
        if canon in ("rad", "mrad", "µrad", "nrad"):
            return "angle_rad"
        return "angle_arcsec"
    return fam if fam in _AUTO else None


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
    return canon + ("/" + _ALIASES.get(den[1:], den[1:]) if den else "")


def family(unit: str | None) -> str | None:
    """The unit's family (``"angle"``, ``"length"``, ``"time"``, ``"fraction"``, ``"pixel"``, ...) or None when
    unknown."""
    num, _ = _split(normalize_unit(unit))
    return _UNITS[num][0] if num in _UNITS else None


def is_known(unit: str | None) -> bool:
    """True for ``""`` (no unit) and for units the registry knows (a compound ``num/den`` needs both parts)."""
    num, den = _split(normalize_unit(unit))
    if num == "" and den == "":
        return True
    if num not in _UNITS:
        return False
    return den == "" or _ALIASES.get(den[1:], den[1:]) in _UNITS


def known_units() -> list[str]:
    """Every unit string the registry accepts (canonical names and aliases), sorted."""
    return sorted(set(_UNITS) | set(_ALIASES))


def check_unit(unit: str | None, what: str = "unit") -> str:
    """Return ``unit`` unchanged when the registry knows it (or it is ``""``/None → ``""``); else ValueError
    naming ``what`` and listing the known units and how to register more."""
    if unit is None:
        return ""
    if not isinstance(unit, str):
        raise ValueError(f"{what}: units must be a string, got {unit!r}")
    if not is_known(unit):
        raise ValueError(
            f"{what}: unknown unit {unit!r}{_did_you_mean(unit)}; known units: {known_units()} "
            "(a compound unit is 'num/den' of known units, '' means none; register more with "
            "gnomon.register_unit(name, family, scale))"
        )
    return unit


def _did_you_mean(unit: str) -> str:
    """`` (did you mean 'uas'?)`` for the closest known unit names, or ``""``."""
    import difflib

    known = known_units()
    close = difflib.get_close_matches(unit, known, n=3, cutoff=0.6)
    if not close:  # case and separators: 'Micro-Arcsec' -> 'microarcsec'
        squashed = {re.sub(r"[^0-9a-zµμ]", "", k.lower()): k for k in known}
        key = re.sub(r"[^0-9a-zµμ]", "", unit.lower())
        close = [squashed[k] for k in difflib.get_close_matches(key, list(squashed), n=3, cutoff=0.75)]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def register_unit(name: str, family: str, scale: float = 1.0, *, aliases: tuple[str, ...] | list[str] = ()) -> None:
    """Add the unit ``name`` to the registry: ``scale`` is its size in ``family``'s base unit.

    ``register_unit("R_sun", "length", 6.957e8)`` makes ``"R_sun"`` convertible to ``"m"``, ``"nm"``, ...;
    a new family name starts a family of its own (``register_unit("Jy", "flux_density")``). ``aliases``
    are other spellings that normalise to ``name`` for conversion. Registering an identical definition again
    is a no-op; redefining an existing unit or alias differently is a ValueError."""
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise ValueError(f"register_unit: name must be a non-empty string without '/', got {name!r}")
    if not isinstance(family, str) or not family:
        raise ValueError(f"register_unit: family must be a non-empty string, got {family!r}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"register_unit: scale must be finite and positive, got {scale!r}")
    old = _UNITS.get(name)
    if name in _ALIASES or (old is not None and (old[0] != family or not math.isclose(old[1], scale, rel_tol=1e-12))):
        current = _ALIASES.get(name, old)
        raise ValueError(f"register_unit: {name!r} is already defined as {current!r}")
    for a in aliases:
        if not isinstance(a, str) or not a or "/" in a:
            raise ValueError(f"register_unit: alias must be a non-empty string without '/', got {a!r}")
        if (a in _UNITS and a != name) or _ALIASES.get(a, name) != name:
            raise ValueError(f"register_unit: alias {a!r} is already a unit or an alias of another unit")
    _UNITS[name] = (family, scale)
    for a in aliases:
        _ALIASES[a] = name


def conversion_factor(from_unit: str, to_unit: str) -> float:
    """Factor ``f`` with ``value_in_to = value_in_from * f``.

    Raises ValueError when the units are not of one family (or their denominators differ)."""
    a_num, a_den = _split(normalize_unit(from_unit))
    b_num, b_den = _split(normalize_unit(to_unit))
    if a_num == b_num and a_den == b_den:
        return 1.0
    if a_num not in _UNITS or b_num not in _UNITS or _UNITS[a_num][0] != _UNITS[b_num][0] or a_den != b_den:
        raise ValueError(
            f"cannot convert {from_unit!r} to {to_unit!r}: not units of one family (known families: "
            f"{', '.join(sorted({fam for fam, _ in _UNITS.values()}))}; compound units must share the denominator)"
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
    key = _auto_key(num)
    if not math.isfinite(mag) or key is None or num == "1":
        return canon
    candidates = _AUTO[key]
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
