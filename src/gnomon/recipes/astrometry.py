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

Error signals are NaN-filled (stable shapes) when the truth is missing; :func:`astrometry` then shows the
parameter values instead of errors. Error signals carry the Cramér–Rao bound of their parameter in their own
unit when the signals have one (``Signals.from_trace(..., crlb=...)``, or a run saved with ``crlb=``): the
figure then shades ±1σ and ±2σ and draws the errors on a symlog axis that is linear within the bound.
"""

from __future__ import annotations

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


def raw_flux(log_flux_total: Any, contrast: Any) -> np.ndarray:
    """Per-star photon counts ``[c·10^L/(1+c), 10^L/(1+c)]`` (stars A, B) on a new last axis."""
    total = np.power(10.0, np.asarray(log_flux_total, dtype=float))
    c = np.asarray(contrast, dtype=float)
    return np.stack([c * total / (1.0 + c), total / (1.0 + c)], axis=-1)


def _transforms(sig: Signals) -> list[tuple[str, tuple[str, ...], Any]]:
    """(output, inputs, transform) in dependency order."""
    out: list[tuple[str, tuple[str, ...], Any]] = [
        (X_ERR, (X,), error(X, X_ERR, units="µas")),
        (Y_ERR, (Y,), error(Y, Y_ERR, units="µas")),
        (SEP_ERR, (SEP,), error(SEP, SEP_ERR, units="µas")),
        (PA_ERR, (PA,), error(PA, PA_ERR, units="arcsec")),
        (PLATE_ERR, (PLATE,), fractional_error(PLATE, PLATE_ERR, units="ppm")),
        (
            RAW_FLUX,
            (LOGF, CONTRAST),
            derive(RAW_FLUX, raw_flux, [LOGF, CONTRAST], units="ph", labels=("A", "B")),
        ),
        (RAW_FLUX_ERR, (RAW_FLUX,), fractional_error(RAW_FLUX, RAW_FLUX_ERR, units="ppm")),
    ]
    if ZERN in sig and sig[ZERN].num_components == len(NOLL):
        out.append(("", (ZERN,), relabel(ZERN, NOLL)))
    out += [
        (ZERN_ERR, (ZERN,), error(ZERN, ZERN_ERR, units="nm")),
        (ZERN_RMS, (ZERN,), rms_error(ZERN, ZERN_RMS, units="nm")),
    ]
    return out


@register_transform("astrometry")
def add_signals(signals: Signals) -> Signals:
    """Add the astrometry derived signals (module docstring) whose inputs are present and that are missing."""
    sig = signals
    for name, inputs, fn in _transforms(sig):
        if (name and name in sig) or not all(i in sig for i in inputs):
            continue
        sig = sig.apply(fn)
    return sig


def panels(signals: Signals) -> list[dict[str, Any]]:
    """The panel specs of :func:`astrometry` for these signals (errors with truth, values without)."""
    sig = add_signals(signals)
    has = sig.__contains__
    truth = any(has(n) and sig[n].has_truth for n in (X, Y, SEP, PLATE, LOGF, ZERN))
    p: list[dict[str, Any]] = []
    if has("loss"):
        p.append({"names": ["loss"], "logy": "auto"})
    elif has("log_prob"):
        p.append({"names": ["log_prob"]})
    # optimizer paths span decades: symlog (linear within the bound); chains scatter about zero: linear
    fixed = {"auto_units": False, "residual": False, "logy": sig.kind == "optimization"}
    if truth:
        xy = [n for n in (X_ERR, Y_ERR) if has(n)]
        if xy:
            p.append({"names": xy, **fixed, "ylabel": "x / y error"})
        if has(SEP_ERR):
            p.append({"names": [SEP_ERR], **fixed, "ylabel": "separation error"})
        if has(PA_ERR):
            p.append({"names": [PA_ERR], **fixed, "ylabel": "position angle error"})
        if has(PLATE_ERR):
            p.append({"names": [PLATE_ERR], **fixed, "ylabel": "plate-scale error"})
        if has(RAW_FLUX_ERR):
            p.append({"names": [RAW_FLUX_ERR], **fixed, "mode": "components", "ylabel": "raw flux error"})
        if has(ZERN_ERR):
            p.append({"names": [ZERN_ERR], **fixed, "ylabel": "Zernike error"})
        if has(ZERN_RMS):
            p.append({"names": [ZERN_RMS], **fixed, "logy": "auto" if sig.kind == "sampling" else True,
                      "ylabel": "Zernike RMS error"})
    else:
        for group in ([X, Y], [SEP], [PA], [LOGF], [CONTRAST], [PLATE], [RAW_FLUX], [ZERN]):
            names = [n for n in group if has(n)]
            if names:
                p.append({"names": names, "residual": False})
    return p


def astrometry(
    signals: Signals,
    *,
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

    Without a truth the same layout shows parameter values. Works for optimizer paths and sampler chains
    (one line per chain). ``mode`` applies to vector panels (Zernikes); returns the matplotlib Figure."""
    from gnomon.plot import grid

    if not isinstance(signals, Signals):
        raise ValueError(f"the astrometry recipe takes gnomon.Signals, got {type(signals).__name__}")
    sig = add_signals(signals)
    specs = panels(sig)
    if not any(n in sig for n in (X, Y, SEP, PA, LOGF, CONTRAST, PLATE, ZERN)):
        # a figure of the loss alone, titled as astrometry, reads as if the parameters had been drawn
        params = [n for n in signals.names if signals[n].role == "parameter"]
        raise ValueError(
            "the astrometry recipe draws the parameters of gnomon.models.astrometry "
            f"({X}, {SEP}, {PLATE}, {ZERN}, ...) and found none of them; signals are {list(signals.names)}. "
            f"For your own layout draw with gn.plot.grid(sig, panels={params[:4]!r}) or gn.plot.history"
        )
    for s in specs:
        s.setdefault("mode", mode)
    if suptitle is None:
        suptitle = (
            "astrometry: errors vs truth"
            if any(n in sig and sig[n].has_truth for n in (X, SEP, PLATE, ZERN))
            else "astrometry: parameter values"
        )
    return grid(
        sig, specs, ncols=ncols, suptitle=suptitle, fig=fig, figsize=figsize, save=save, show=show, dpi=dpi
    )
