"""Astrometry recipe: the SHERA-style diagnostic figure set for a binary-star fit, built from Signals only.

Parameter names and units (the flagship binary-star model's layout):

=================================  ============  =====================================================
``binary.x_position_as``            arcsec        x of the pair's midpoint
``binary.y_position_as``            arcsec        y of the pair's midpoint
``binary.separation_as``            arcsec        separation
``binary.position_angle_deg``       deg           position angle, from +y towards +x
``binary.log_flux_total``           log10 ph      log10 of the total photon count
``binary.contrast``                 (ratio)       flux ratio A:B
``system.plate_scale_as_per_pix``   arcsec/pix    plate scale
``primary.zernike_coeffs_nm``       nm, (8,)      Zernike coefficients, Noll 4–11
=================================  ============  =====================================================

Derived signals (:func:`add_signals`, registered as the transform ``"astrometry"``), each present when its
inputs are:

* ``binary.x_position_error_uas``, ``binary.y_position_error_uas``, ``binary.separation_error_uas`` —
  ``v − v_true`` in µas;
* ``binary.position_angle_error_as`` — ``PA − PA_true`` in arcsec;
* ``system.plate_scale_error_ppm`` — ``10⁶ (s − s_true) / s_true``;
* ``binary.raw_flux`` — ``F = [c·10^L/(1+c), 10^L/(1+c)]`` (stars A and B, photons);
* ``raw_flux_error_ppm`` — ``10⁶ (F_est − F_true) / F_true`` per star, shape ``(T, 2)``;
* ``primary.zernike_error_nm`` (components labelled ``Z4 … Z11``) and ``primary.zernike_rms_error_nm`` —
  ``sqrt(mean_k (z_k − z_k,true)²)`` in nm.

**Roles.** The recipe draws *roles* — ``position``, ``separation``, ``position_angle``, ``log_flux``,
``contrast``, ``plate_scale``, ``zernikes`` — which default to the names above. A layout of your own maps its
names onto them: ``astrometry(sig, roles={"separation": "sep", "position_angle": "pa"})`` (``position``: a
pair of scalar names ``("x", "y")`` or one 2-vector name; on the command line ``--map separation=sep
--map position=x,y``). Errors of your names are called ``<name>_error`` (``<name>_error_ppm`` for the plate
scale, ``<name>_rms_error`` for the Zernike RMS) and converted through the unit registry to the recipe's
units (µas for positions and separation, arcsec for the position angle, nm for Zernikes) when your unit is of
the same family; otherwise they stay in your unit and a warning says so. Roles that no signal fills are named
in a warning and left out; the others are drawn.

Error signals are NaN-filled (stable shapes) when the truth is missing; :func:`astrometry` then shows the
parameter values instead of errors. Error signals carry the Cramér–Rao bound of their parameter in their own
unit when the signals have one (``Signals.from_trace(..., crlb=...)``, or a run saved with ``crlb=``): the
figure then shades ±1σ and ±2σ and draws the errors on a symlog axis that is linear within the bound.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gnomon.signals.signals import Signals
from gnomon.signals.transforms import (
    derive,
    error,
    fractional_error,
    register_transform,
    relabel,
    rms_error,
)
from gnomon.thetaspace import units as U

X, Y = "binary.x_position_as", "binary.y_position_as"
SEP, PA = "binary.separation_as", "binary.position_angle_deg"
LOGF, CONTRAST = "binary.log_flux_total", "binary.contrast"
PLATE = "system.plate_scale_as_per_pix"
ZERN = "primary.zernike_coeffs_nm"
NOLL = tuple(f"Z{j}" for j in range(4, 12))

X_ERR, Y_ERR = "binary.x_position_error_uas", "binary.y_position_error_uas"
SEP_ERR = "binary.separation_error_uas"
PA_ERR = "binary.position_angle_error_as"
PLATE_ERR = "system.plate_scale_error_ppm"
RAW_FLUX, RAW_FLUX_ERR = "binary.raw_flux", "raw_flux_error_ppm"
ZERN_ERR, ZERN_RMS = "primary.zernike_error_nm", "primary.zernike_rms_error_nm"

#: the recipe's roles, in panel order
ROLES = ("position", "separation", "position_angle", "log_flux", "contrast", "plate_scale", "zernikes")
#: the names of the built-in binary-star model (:mod:`gnomon.models.astrometry`) that fill each role
DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "position": (X, Y),
    "separation": (SEP,),
    "position_angle": (PA,),
    "log_flux": (LOGF,),
    "contrast": (CONTRAST,),
    "plate_scale": (PLATE,),
    "zernikes": (ZERN,),
}
#: the unit each role's error is drawn in (when the user's unit converts to it)
ROLE_UNITS = {"position": "µas", "separation": "µas", "position_angle": "arcsec", "zernikes": "nm"}


def raw_flux(log_flux_total: Any, contrast: Any) -> np.ndarray:
    """Per-star photon counts ``[c·10^L/(1+c), 10^L/(1+c)]`` (stars A, B) on a new last axis."""
    total = np.power(10.0, np.asarray(log_flux_total, dtype=float))
    c = np.asarray(contrast, dtype=float)
    return np.stack([c * total / (1.0 + c), total / (1.0 + c)], axis=-1)


@dataclass
class RoleMap:
    """Which signals fill the recipe's roles (:func:`resolve_roles`).

    Attributes:
      names: role → the signal names filling it (``position``: two scalars or one 2-vector).
      missing: the roles no signal fills, in :data:`ROLES` order.
      notes: what the recipe did that a reader should know (an error left in the user's unit).
    """

    names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def get(self, role: str) -> tuple[str, ...]:
        return self.names.get(role, ())


def _as_names(role: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        names = tuple(v.strip() for v in value.split(",")) if role == "position" else (value,)
    elif isinstance(value, Sequence):
        names = tuple(value)
    else:
        names = ()
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"roles[{role!r}] must be a signal name (position: 'x,y', ('x', 'y') or one 2-vector), "
                         f"got {value!r}")
    if len(names) > (2 if role == "position" else 1):
        raise ValueError(f"roles[{role!r}] takes {'two names' if role == 'position' else 'one name'}, got {names}")
    return names


def resolve_roles(signals: Signals, roles: Mapping[str, Any] | None = None) -> RoleMap:
    """The signals filling each role: ``roles`` (role → the user's name(s)) where given, else the built-in
    model's names when present. An unknown role, or a mapped name that is no signal, is a ValueError."""
    roles = dict(roles or {})
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown astrometry role(s) {unknown}; the roles are {list(ROLES)}")
    out = RoleMap()
    for role in ROLES:
        if role in roles:
            names = _as_names(role, roles[role])
            absent = [n for n in names if n not in signals]
            if absent:
                raise ValueError(f"roles[{role!r}] names {absent}, which {'is' if len(absent) == 1 else 'are'} not "
                                 f"among the signals {list(signals.names)[:12]}")
            if role == "position" and len(names) == 1 and signals[names[0]].num_components != 2:
                raise ValueError(f"roles['position'] = {names[0]!r} has {signals[names[0]].num_components} "
                                 "components; give a 2-vector or two scalar names ('x,y')")
            out.names[role] = names
            continue
        present = tuple(n for n in DEFAULT_ROLES[role] if n in signals)
        if present:
            out.names[role] = present
        else:
            out.missing.append(role)
    return out


def _error_units(sig: Signals, name: str, role: str, notes: list[str]) -> str | None:
    """The unit the error of ``name`` is drawn in: the role's (µas, arcsec, nm) when ``name``'s unit converts
    to it, else ``None`` (its own unit), with a note."""
    want = ROLE_UNITS[role]
    unit = sig[name].units
    try:
        U.conversion_factor(unit, want)
        return want
    except ValueError:
        notes.append(f"{role} {name!r} is in {unit!r}, which does not convert to {want!r}: its error is drawn in "
                     f"{unit!r}" if unit else f"{role} {name!r} has no unit: its error is drawn unconverted")
        return None


#: the built-in model's error signals, by the name they are the error of
_BUILTIN_ERRORS = {X: X_ERR, Y: Y_ERR, SEP: SEP_ERR, PA: PA_ERR, PLATE: PLATE_ERR, ZERN: ZERN_ERR}


def _outputs(rm: RoleMap, sig: Signals) -> dict[str, Any]:
    """Derived signal names per role (the built-in names for the built-in model's, ``<name>_error...`` for
    yours)."""
    out: dict[str, Any] = {}
    if rm.get("position"):
        out["position"] = tuple(_BUILTIN_ERRORS.get(n, f"{n}_error") for n in rm.get("position"))
    for role, suffix in (("separation", "_error"), ("position_angle", "_error"), ("plate_scale", "_error_ppm")):
        if rm.get(role):
            n = rm.get(role)[0]
            out[role] = _BUILTIN_ERRORS.get(n, n + suffix)
    if rm.get("log_flux") and rm.get("contrast"):
        builtin = rm.get("log_flux") == (LOGF,) and rm.get("contrast") == (CONTRAST,)
        out["raw_flux"] = (RAW_FLUX if builtin else "raw_flux", RAW_FLUX_ERR)
    if rm.get("zernikes"):
        z = rm.get("zernikes")[0]
        out["zernikes"] = (ZERN_ERR, ZERN_RMS) if z == ZERN else (f"{z}_error", f"{z}_rms_error")
    return out


def _transforms(sig: Signals, rm: RoleMap) -> list[tuple[str, tuple[str, ...], Any]]:
    """(output, inputs, transform) in dependency order; notes on unit fallbacks go to ``rm.notes``."""
    outs = _outputs(rm, sig)
    tf: list[tuple[str, tuple[str, ...], Any]] = []
    for n, o in zip(rm.get("position"), outs.get("position", ()), strict=False):
        tf.append((o, (n,), error(n, o, units=_error_units(sig, n, "position", rm.notes))))
    for role in ("separation", "position_angle"):
        if role in outs:
            n = rm.get(role)[0]
            tf.append((outs[role], (n,), error(n, outs[role], units=_error_units(sig, n, role, rm.notes))))
    if "plate_scale" in outs:
        n = rm.get("plate_scale")[0]
        tf.append((outs["plate_scale"], (n,), fractional_error(n, outs["plate_scale"], units="ppm")))
    if "raw_flux" in outs:
        flux, flux_err = outs["raw_flux"]
        logf, con = rm.get("log_flux")[0], rm.get("contrast")[0]
        tf.append((flux, (logf, con), derive(flux, raw_flux, [logf, con], units="ph", labels=("A", "B"))))
        tf.append((flux_err, (flux,), fractional_error(flux, flux_err, units="ppm")))
    if "zernikes" in outs:
        z = rm.get("zernikes")[0]
        if z == ZERN and sig[z].num_components == len(NOLL):
            tf.append(("", (z,), relabel(z, NOLL)))
        unit = _error_units(sig, z, "zernikes", rm.notes)
        zerr, zrms = outs["zernikes"]
        tf += [(zerr, (z,), error(z, zerr, units=unit)), (zrms, (z,), rms_error(z, zrms, units=unit))]
    return tf


@register_transform("astrometry")
def add_signals(signals: Signals, roles: Mapping[str, Any] | None = None) -> Signals:
    """Add the astrometry derived signals (module docstring) whose inputs are present and that are missing;
    ``roles`` maps the recipe's roles to your names (default: the built-in model's names)."""
    return _add(signals, resolve_roles(signals, roles))


def _add(signals: Signals, rm: RoleMap) -> Signals:
    sig = signals
    for name, inputs, fn in _transforms(signals, rm):
        if (name and name in sig) or not all(i in sig for i in inputs):
            continue
        sig = sig.apply(fn)
    return sig


def panels(signals: Signals, roles: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The panel specs of :func:`astrometry` for these signals (errors with truth, values without)."""
    rm = resolve_roles(signals, roles)
    return _panels(_add(signals, rm), rm)


def _panels(sig: Signals, rm: RoleMap) -> list[dict[str, Any]]:
    has = sig.__contains__
    outs = _outputs(rm, sig)
    inputs = [n for role in ROLES for n in rm.get(role)]
    truth = any(has(n) and sig[n].has_truth for n in inputs)
    p: list[dict[str, Any]] = []
    if has("loss"):
        p.append({"names": ["loss"], "logy": "auto"})
    elif has("log_prob"):
        p.append({"names": ["log_prob"]})
    # optimizer paths span decades: symlog (linear within the bound); chains scatter about zero: linear
    fixed = {"auto_units": False, "residual": False, "logy": sig.kind == "optimization"}
    if truth:
        labels = {"position": "x / y error", "separation": "separation error",
                  "position_angle": "position angle error", "plate_scale": "plate-scale error"}
        for role in ("position", "separation", "position_angle", "plate_scale"):
            names = [n for n in np.atleast_1d(outs.get(role, ())).tolist() if has(n)]
            if names:
                p.append({"names": names, **fixed, "ylabel": labels[role]})
        if "raw_flux" in outs and has(outs["raw_flux"][1]):
            p.append({"names": [outs["raw_flux"][1]], **fixed, "mode": "components", "ylabel": "raw flux error"})
        if "zernikes" in outs:
            zerr, zrms = outs["zernikes"]
            if has(zerr):
                p.append({"names": [zerr], **fixed, "ylabel": "Zernike error"})
            if has(zrms):
                p.append({"names": [zrms], **fixed, "logy": "auto" if sig.kind == "sampling" else True,
                          "ylabel": "Zernike RMS error"})
    else:
        for group in ([*rm.get("position")], rm.get("separation"), rm.get("position_angle"), rm.get("log_flux"),
                      rm.get("contrast"), rm.get("plate_scale"), [outs["raw_flux"][0]] if "raw_flux" in outs
                      else [], rm.get("zernikes")):
            names = [n for n in group if has(n)]
            if names:
                p.append({"names": names, "residual": False})
    return p


def astrometry(
    signals: Signals,
    *,
    roles: Mapping[str, Any] | None = None,
    mode: str = "components",
    ncols: int | None = 3,
    suptitle: str | None = None,
    fig: Any = None,
    figsize: tuple[float, float] | None = None,
    save: Any = None,
    show: bool = False,
    dpi: int | None = None,
):
    """The SHERA-style figure: loss, x/y errors [µas], separation error [µas], position-angle error [arcsec],
    plate-scale error [ppm], raw-flux errors of stars A and B [ppm], Zernike errors and their RMS [nm], on
    symlog axes with ±1σ / ±2σ bands where the signals carry a CRLB.

    ``roles`` maps the recipe's roles (:data:`ROLES`) to your own names, e.g.
    ``{"separation": "sep", "position_angle": "pa", "position": ("x", "y")}``; roles not mapped use the built-in
    model's names when present. Roles that no signal fills are named in a warning and left out. Without a truth
    the same layout shows parameter values. Works for optimizer paths and sampler chains (one line per chain).
    ``mode`` applies to vector panels (Zernikes); returns the matplotlib Figure."""
    from gnomon.plot import grid

    if not isinstance(signals, Signals):
        raise ValueError(f"the astrometry recipe takes gnomon.Signals, got {type(signals).__name__}")
    rm = resolve_roles(signals, roles)
    if len(rm.missing) == len(ROLES):
        # a figure of the loss alone, titled as astrometry, reads as if the parameters had been drawn
        params = [n for n in signals.names if signals[n].role == "parameter"]
        raise ValueError(
            "the astrometry recipe draws the parameters of gnomon.models.astrometry "
            f"({X}, {SEP}, {PLATE}, {ZERN}, ...) and found none of them; signals are {list(signals.names)}. "
            f"Map your names to its roles {list(ROLES)}: roles={{'separation': 'your_name', ...}} "
            f"(gnomon plot RUN --recipe astrometry --map separation=your_name), or draw with "
            f"gn.plot.grid(sig, panels={params[:4]!r}) or gn.plot.history"
        )
    sig = _add(signals, rm)
    if rm.missing:
        warnings.warn(
            f"astrometry recipe: no signal fills the role(s) {rm.missing} (looked for "
            + ", ".join(f"{r}: {' / '.join(DEFAULT_ROLES[r])}" for r in rm.missing)
            + "); map your names with roles={...} (--map ROLE=NAME); drawing the others",
            stacklevel=2,
        )
    for note in rm.notes:
        warnings.warn(f"astrometry recipe: {note}", stacklevel=2)
    specs = _panels(sig, rm)
    for s in specs:
        s.setdefault("mode", mode)
    if suptitle is None:
        inputs = [n for role in ROLES for n in rm.get(role)]
        suptitle = (
            "astrometry: errors vs truth"
            if any(sig[n].has_truth for n in inputs)
            else "astrometry: parameter values"
        )
    return grid(
        sig, specs, ncols=ncols, suptitle=suptitle, fig=fig, figsize=figsize, save=save, show=show, dpi=dpi
    )
