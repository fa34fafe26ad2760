"""`Signal`: one named, unit-carrying series in canonical form ``data[c, t, k]``, and how one is made.

:func:`make_signal` builds a :class:`Signal` from values in their natural shape (``(T,)``/``(T, …)`` for an
optimization path, ``(C, T)``/``(C, T, …)`` for sampler chains), with its truth and 1σ scale one value per
component (or one for all); :class:`~gnomon.signals.signals.Signals` holds many that share one x axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gnomon.signals.labels import default_component_labels

ROLES = ("parameter", "derived", "diagnostic")
KINDS = ("optimization", "sampling")


@dataclass(frozen=True, eq=False)
class Signal:
    """One named signal, stored in canonical form ``data[c, t, k]``.

    Attributes:
      name: the signal's name (``"binary.x_position_as"``).
      data: ``(C, T, K)`` array; ``C = 1`` for an optimization path, ``K = 1`` for a scalar signal.
      units: unit string (see :mod:`gnomon.thetaspace.units`).
      truth: ``(K,)`` true value (constant over rows) or None.
      labels: ``K`` component labels.
      role: ``"parameter"`` (decoded from θ), ``"derived"`` (made by a transform) or ``"diagnostic"``
        (loss, log_prob, engine statistics).
      scalar: True when the signal has no component axis.
      chains: True when the leading axis is a chain axis (sampling).
      sigma: ``(K,)`` the 1σ scale of this signal's errors in its units — a Cramér–Rao bound or a posterior
        sd — or None. Plots draw it as bands and measure residuals in it (``residual="sigma"``).
      sigma_source: what ``sigma`` is (``"CRLB"``, ``"posterior sd"``, ...), for labels.
      is_error: the values are already deviations from the truth (made by an error transform such as
        :func:`~gnomon.signals.transforms.error`; its truth is 0): plots label the values by the signal's
        name, never as the residual of a residual.
    """

    name: str
    data: np.ndarray
    units: str = ""
    truth: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    role: str = "parameter"
    scalar: bool = True
    chains: bool = False
    sigma: np.ndarray | None = None
    sigma_source: str = ""
    is_error: bool = False

    # ------------------------------------------------------------------ natural-shape views
    def _natural(self, a: np.ndarray) -> np.ndarray:
        if self.scalar:
            a = a[..., 0]
        return a if self.chains else a[0]

    @property
    def values(self) -> np.ndarray:
        """``(T,)``, ``(T, K)``, ``(C, T)`` or ``(C, T, K)``."""
        return self._natural(self.data)

    @property
    def residual(self) -> np.ndarray:
        """``values − truth`` with the shape of :attr:`values`; NaN-filled when the truth is unknown."""
        if self.truth is None:
            return self._natural(np.full(self.data.shape, np.nan))
        return self._natural(self.data - self.truth)

    @property
    def truth_value(self) -> np.ndarray | None:
        """The truth as ``()`` (scalar signal) or ``(K,)``; None when unknown."""
        if self.truth is None:
            return None
        return self.truth[0] if self.scalar else self.truth

    @property
    def has_truth(self) -> bool:
        return self.truth is not None

    @property
    def sigma_value(self) -> np.ndarray | None:
        """The 1σ scale as ``()`` (scalar signal) or ``(K,)``; None when unknown."""
        if self.sigma is None:
            return None
        return self.sigma[0] if self.scalar else self.sigma

    def spread(self) -> np.ndarray | None:
        """The posterior sd per component ``(K,)`` of a sampler signal (over chains and draws); None for an
        optimization path."""
        if not self.chains:
            return None
        flat = self.data.reshape(-1, self.data.shape[-1])
        with np.errstate(all="ignore"):
            return np.nanstd(flat, axis=0, ddof=1) if flat.shape[0] > 1 else np.full(flat.shape[-1], np.nan)

    @property
    def num_components(self) -> int:
        return int(self.data.shape[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def final(self, residual: bool = False) -> np.ndarray:
        """Final value per component, ``()`` or ``(K,)``.

        Optimization: the last row whose values are all finite (a diverged run ends in NaN rows).
        Sampling: the mean over chains and draws (the posterior mean)."""
        a = (self.data - self.truth) if residual and self.truth is not None else self.data
        if residual and self.truth is None:
            a = np.full(self.data.shape, np.nan)
        if self.chains:
            with np.errstate(all="ignore"):
                out = np.nanmean(a.reshape(-1, a.shape[-1]), axis=0) if np.isfinite(a).any() else a[0, -1]
        else:
            rows = a[0]
            ok = np.flatnonzero(np.isfinite(self.data[0]).all(axis=-1))
            out = rows[ok[-1]] if ok.size else rows[-1]
        return out[0] if self.scalar else out

    def __repr__(self) -> str:
        t = "" if self.truth is None else ", truth"
        t += "" if self.sigma is None else f", σ ({self.sigma_source or 'given'})"
        return f"Signal({self.name!r}, shape={self.shape}, units={self.units!r}, role={self.role}{t})"


def lead_ndim(kind: str) -> int:
    """The leading (row) dimensions of a signal's natural shape: 2 for sampler chains ``(C, T)``, else 1."""
    return 2 if kind == "sampling" else 1


def as_float(a: Any) -> np.ndarray:
    """``a`` as a floating array (integers and bools become float64); object arrays refused."""
    arr = np.asarray(a)
    if arr.dtype == object:
        raise ValueError("signal values must be numeric arrays, got dtype object")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def per_component(name: str, what: str, value: Any, comp_shape: tuple[int, ...], k: int) -> np.ndarray | None:
    """``value`` as a float64 ``(K,)`` array (one per component, or one for all); None stays None."""
    if value is None:
        return None
    v = as_float(value)
    if v.shape != comp_shape and v.size != 1 and v.size != k:
        raise ValueError(f"signal {name!r}: {what} has shape {v.shape}, expected {comp_shape} (one per component)")
    return np.array(np.broadcast_to(v.reshape(-1) if v.size != 1 else v.reshape(()), (k,)), np.float64)


def make_signal(
    kind: str,
    name: str,
    values: Any,
    *,
    units: str = "",
    truth: Any = None,
    labels: Sequence[str] | None = None,
    role: str = "derived",
    sigma: Any = None,
    sigma_source: str = "",
    is_error: bool = False,
) -> Signal:
    """A :class:`Signal` of a ``kind`` collection from natural-shape ``values`` (``(T,)``/``(T, …)`` or
    ``(C, T)``/``(C, T, …)``).

    Trailing dimensions beyond one are flattened (labels ``name[i,j]``). ``truth`` and ``sigma`` are one
    value per component (or one for all)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"signal names must be non-empty strings, got {name!r}")
    if role not in ROLES:
        raise ValueError(f"signal {name!r}: role must be one of {ROLES}, got {role!r}")
    if not isinstance(units, str):
        raise ValueError(f"signal {name!r}: units must be a string, got {units!r}")
    arr = as_float(values)
    lead = lead_ndim(kind)
    if arr.ndim < lead:
        want = "(T,) or (T, K)" if lead == 1 else "(C, T) or (C, T, K)"
        raise ValueError(f"signal {name!r}: values of shape {arr.shape} do not fit {kind} rows {want}")
    comp_shape = tuple(arr.shape[lead:])
    scalar = comp_shape == ()
    k = int(np.prod(comp_shape)) if comp_shape else 1
    data = arr.reshape(arr.shape[:lead] + (k,))
    if lead == 1:
        data = data[None]
    if labels is None:
        labels = default_component_labels(name, comp_shape)
    labels = tuple(str(lab) for lab in labels)
    if len(labels) != k:
        raise ValueError(f"signal {name!r}: {len(labels)} labels given for {k} components")
    t = None
    if truth is not None:
        t = as_float(truth)
        if t.shape != comp_shape and t.size != 1:
            raise ValueError(
                f"signal {name!r}: truth has shape {t.shape}, expected {comp_shape} (one value per component)"
            )
        # the truth stays float64 (a float32 trace must not quantise e.g. a 3.2 contrast)
        t = np.array(np.broadcast_to(t.reshape(-1) if t.size != 1 else t.reshape(()), (k,)), np.float64)
    sg = per_component(name, "sigma", sigma, comp_shape, k)
    return Signal(name, data, units, t, labels, role, scalar, lead == 2, sg, str(sigma_source or ""),
                  bool(is_error))
