"""`Signals`: named, unit-carrying time series derived from a :class:`~gnomon.Trace` for plotting.

A trace holds θ rows in optimizer coordinates and knows no names. Signals decode it into named arrays:

* optimization paths: ``values[t]`` (scalar signal) or ``values[t, k]`` (vector signal), one row per
  recorded step; ``x`` holds the step index of each row and is labelled ``"step"``;
* sampler chains: ``values[c, t]`` or ``values[c, t, k]`` (chain ``c``, draw ``t``); ``x`` is the draw
  index, labelled ``"draw"``.

Each :class:`Signal` carries a unit string, optional component labels and an optional truth (constant over
rows, shape ``()`` or ``(K,)``). The residual is ``values − truth``; without a truth it is NaN-filled with the
same shape as ``values``, so code that consumes residuals never branches on their presence.

Derived signals (raw fluxes from ``log_flux_total`` and ``contrast``, fractional errors in ppm, RMS of a
vector, ...) are added by transforms (:mod:`gnomon.signals.transforms`): callables ``Signals -> {name:
Signal}`` applied in order, which map truth through the same function as the values.

Signals round-trip through a ``signals.npz`` file (:meth:`Signals.save` / :meth:`Signals.load`, or
``save_run(..., extra_arrays={"signals": sig.to_arrays()})`` and :meth:`Signals.from_run`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gnomon.signals.labels import block_labels
from gnomon.util.files import ArtifactError, read_npz, write_npz

SIGNALS_SCHEMA = 1
ROLES = ("parameter", "derived", "diagnostic")
_META_KEY = "__signals__"


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


def _component_labels(name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    if shape == ():
        return (name,)
    return tuple(f"{name}[{','.join(str(i) for i in idx)}]" for idx in np.ndindex(*shape))


def _per_component(name: str, what: str, value: Any, comp_shape: tuple[int, ...], k: int) -> np.ndarray | None:
    """``value`` as a float64 ``(K,)`` array (one per component, or one for all); None stays None."""
    if value is None:
        return None
    v = _as_float(value)
    if v.shape != comp_shape and v.size != 1 and v.size != k:
        raise ValueError(f"signal {name!r}: {what} has shape {v.shape}, expected {comp_shape} (one per component)")
    return np.array(np.broadcast_to(v.reshape(-1) if v.size != 1 else v.reshape(()), (k,)), np.float64)


def _as_float(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == object:
        raise ValueError("signal values must be numeric arrays, got dtype object")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


class Signals(Mapping[str, Signal]):
    """An ordered, immutable collection of :class:`Signal` sharing one x axis (steps or draws).

    Build one with :meth:`from_trace`, :meth:`from_run`, :meth:`load` or directly::

        sig = Signals({"x": xs}, x=steps)                      # optimization, x in steps
        sig = Signals({"z": draws}, kind="sampling")           # draws (C, N, K)
        sig = sig.add("x_rms", values, units="nm", truth=0.0)  # returns a new Signals

    Args:
      signals: ``{name: array}`` (natural shapes) or an iterable of :class:`Signal`.
      x: the x coordinate of each row (steps; default ``0..T-1``).
      kind: ``"optimization"`` (rows are steps) or ``"sampling"`` (leading chain axis, rows are draws).
      units, truth, labels: optional ``{name: ...}`` for signals given as arrays.
      x_label: axis label of ``x`` (default ``"step"`` / ``"draw"``).
    """

    def __init__(
        self,
        signals: Mapping[str, Any] | Iterable[Signal] = (),
        x: Any = None,
        kind: str = "optimization",
        *,
        units: Mapping[str, str] | None = None,
        truth: Mapping[str, Any] | None = None,
        labels: Mapping[str, Sequence[str]] | None = None,
        x_label: str | None = None,
    ):
        if kind not in ("optimization", "sampling"):
            raise ValueError(f"Signals kind must be 'optimization' or 'sampling', got {kind!r}")
        self._kind = kind
        self._signals: dict[str, Signal] = {}
        self._x = None if x is None else np.asarray(x)
        if self._x is not None and self._x.ndim != 1:
            raise ValueError(f"x must be one-dimensional (one entry per row), got shape {self._x.shape}")
        self._x_label = x_label or ("draw" if kind == "sampling" else "step")
        if isinstance(signals, Mapping):
            units, truth, labels = dict(units or {}), dict(truth or {}), dict(labels or {})
            for name, values in signals.items():
                self._insert(
                    self._make(
                        name,
                        values,
                        units=units.get(name, ""),
                        truth=truth.get(name),
                        labels=labels.get(name),
                        role="parameter",
                    )
                )
        else:
            for s in signals:
                if not isinstance(s, Signal):
                    raise ValueError(f"Signals expects a mapping name -> array or Signal objects, got {s!r}")
                self._insert(s)
        if self._x is None:
            self._x = np.arange(self.num_rows) if self._signals else np.arange(0)

    # ------------------------------------------------------------------ construction helpers
    def _lead_ndim(self) -> int:
        return 2 if self._kind == "sampling" else 1

    def _make(
        self,
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
        """A :class:`Signal` from natural-shape ``values`` (``(T,)``/``(T, …)`` or ``(C, T)``/``(C, T, …)``).

        Trailing dimensions beyond one are flattened (labels ``name[i,j]``). ``truth`` and ``sigma`` are one
        value per component (or one for all)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"signal names must be non-empty strings, got {name!r}")
        if role not in ROLES:
            raise ValueError(f"signal {name!r}: role must be one of {ROLES}, got {role!r}")
        if not isinstance(units, str):
            raise ValueError(f"signal {name!r}: units must be a string, got {units!r}")
        arr = _as_float(values)
        lead = self._lead_ndim()
        if arr.ndim < lead:
            want = "(T,) or (T, K)" if lead == 1 else "(C, T) or (C, T, K)"
            raise ValueError(
                f"signal {name!r}: values of shape {arr.shape} do not fit {self._kind} rows {want}"
            )
        comp_shape = tuple(arr.shape[lead:])
        scalar = comp_shape == ()
        k = int(np.prod(comp_shape)) if comp_shape else 1
        data = arr.reshape(arr.shape[:lead] + (k,))
        if lead == 1:
            data = data[None]
        if labels is None:
            labels = _component_labels(name, comp_shape)
        labels = tuple(str(lab) for lab in labels)
        if len(labels) != k:
            raise ValueError(f"signal {name!r}: {len(labels)} labels given for {k} components")
        t = None
        if truth is not None:
            t = _as_float(truth)
            if t.shape != comp_shape and t.size != 1:
                raise ValueError(
                    f"signal {name!r}: truth has shape {t.shape}, expected {comp_shape} "
                    "(one value per component)"
                )
            # the truth stays float64 (a float32 trace must not quantise e.g. a 3.2 contrast)
            t = np.array(np.broadcast_to(t.reshape(-1) if t.size != 1 else t.reshape(()), (k,)), np.float64)
        sg = _per_component(name, "sigma", sigma, comp_shape, k)
        return Signal(name, data, units, t, labels, role, scalar, lead == 2, sg, str(sigma_source or ""),
                      bool(is_error))

    def _insert(self, s: Signal) -> None:
        if s.name in self._signals:
            raise ValueError(f"duplicate signal name {s.name!r}")
        if s.chains != (self._kind == "sampling"):
            raise ValueError(
                f"signal {s.name!r} is {'chain' if s.chains else 'path'}-shaped; Signals is {self._kind}"
            )
        if self._signals:
            ref = next(iter(self._signals.values()))
            if s.data.shape[:2] != ref.data.shape[:2]:
                raise ValueError(
                    f"signal {s.name!r} has rows {s.values.shape[: self._lead_ndim()]}, but the others "
                    f"have {ref.values.shape[: self._lead_ndim()]}"
                )
        if self._x is not None and len(self._x) != s.data.shape[1]:
            raise ValueError(f"signal {s.name!r} has {s.data.shape[1]} rows but x has {len(self._x)}")
        self._signals[s.name] = s

    def _copy(self, signals: Iterable[Signal]) -> Signals:
        return Signals(list(signals), x=self._x, kind=self._kind, x_label=self._x_label)

    # ------------------------------------------------------------------ mapping protocol
    def __getitem__(self, name: str) -> Signal:
        try:
            return self._signals[name]
        except KeyError:
            raise KeyError(f"no signal {name!r}; signals are {list(self._signals)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._signals)

    def __len__(self) -> int:
        return len(self._signals)

    def __repr__(self) -> str:
        body = ", ".join(f"{n}{list(s.shape[self._lead_ndim() :])}" for n, s in self._signals.items())
        return f"Signals({self._kind}, rows={self.num_rows}, chains={self.num_chains}: {body})"

    # ------------------------------------------------------------------ properties
    @property
    def kind(self) -> str:
        return self._kind

    @property
    def x(self) -> np.ndarray:
        """Step index (optimization) or draw index (sampling) of each row."""
        return self._x

    @property
    def x_label(self) -> str:
        return self._x_label

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._signals)

    @property
    def num_rows(self) -> int:
        if not self._signals:
            return 0 if self._x is None else len(self._x)
        return int(next(iter(self._signals.values())).data.shape[1])

    @property
    def num_chains(self) -> int:
        if not self._signals:
            return 1
        return int(next(iter(self._signals.values())).data.shape[0])

    def names_by_role(self, *roles: str) -> tuple[str, ...]:
        """Names of the signals with one of ``roles`` (in order)."""
        return tuple(n for n, s in self._signals.items() if s.role in roles)

    def values(self, name: str) -> np.ndarray:
        return self[name].values

    def residual(self, name: str) -> np.ndarray:
        return self[name].residual

    def truth(self, name: str) -> np.ndarray | None:
        return self[name].truth_value

    def units(self, name: str) -> str:
        return self[name].units

    def final(self, name: str, residual: bool = False) -> np.ndarray:
        return self[name].final(residual=residual)

    # ------------------------------------------------------------------ functional updates
    def add(
        self,
        name: str,
        values: Any,
        units: str = "",
        truth: Any = None,
        labels: Sequence[str] | None = None,
        role: str = "derived",
        *,
        replace_existing: bool = False,
    ) -> Signals:
        """A new :class:`Signals` with one more signal (natural-shape ``values``)."""
        s = self._make(name, values, units=units, truth=truth, labels=labels, role=role)
        return self.with_signals([s], replace_existing=replace_existing)

    def with_signals(
        self, signals: Iterable[Signal] | Mapping[str, Signal], *, replace_existing: bool = False
    ) -> Signals:
        """A new :class:`Signals` with ``signals`` appended (or replacing same-named ones if allowed)."""
        new = list(signals.values()) if isinstance(signals, Mapping) else list(signals)
        kept = dict(self._signals)
        for s in new:
            if s.name in kept and not replace_existing:
                raise ValueError(
                    f"signal {s.name!r} already exists (pass replace_existing=True to replace it)"
                )
            kept[s.name] = s
        return self._copy(kept.values())

    def with_truth(self, truth: Mapping[str, Any]) -> Signals:
        """A new :class:`Signals` with truth set for the named signals (unknown names raise ValueError)."""
        unknown = sorted(set(truth) - set(self._signals))
        if unknown:
            raise ValueError(
                f"truth given for unknown signal(s) {unknown}; signals are {list(self._signals)}"
            )
        out = []
        for n, s in self._signals.items():
            if n in truth and truth[n] is not None:
                t = self._make(
                    n,
                    np.zeros((1,) * self._lead_ndim() + s.values.shape[self._lead_ndim() :]),
                    truth=truth[n],
                    labels=s.labels,
                )
                s = replace(s, truth=t.truth)
            out.append(s)
        return self._copy(out)

    def with_sigma(self, sigma: Any, source: str = "CRLB", *, strict: bool | None = None) -> Signals:
        """A new :class:`Signals` with the 1σ scale (``Signal.sigma``) set where ``sigma`` names it.

        ``sigma`` is a mapping signal name → value (one per component, or one for all) or component label →
        value (a scalar signal's label is its name), or a CRLB result (an object with ``labels`` and
        ``marginal``, or with ``to_summary() -> {"crlb.<label>": value}``). ``source`` says what it is
        (``"CRLB"``, ``"posterior sd"``). Names or labels that match no signal raise a ValueError for a
        mapping (``strict``, default) and are skipped for a CRLB result, which may bound more than is
        plotted."""
        mapping, lenient = _sigma_mapping(sigma)
        strict = (not lenient) if strict is None else strict
        used: set[str] = set()
        out = []
        for n, s in self._signals.items():
            if n in mapping and (s.scalar or np.size(mapping[n]) != 1 or n not in s.labels):
                val = mapping[n]
                used.add(n)
            elif any(lab in mapping for lab in s.labels):
                val = [mapping.get(lab, np.nan) for lab in s.labels]
                used.update(lab for lab in s.labels if lab in mapping)
            else:
                out.append(s)
                continue
            made = self._make(n, np.zeros((1,) * self._lead_ndim() + s.values.shape[self._lead_ndim() :]),
                              sigma=val, labels=s.labels)
            out.append(replace(s, sigma=made.sigma, sigma_source=source))
        unknown = sorted(set(mapping) - used)
        if strict and unknown:
            labels = [lab for s in self._signals.values() for lab in s.labels]
            raise ValueError(
                f"sigma given for {unknown[:8]}, which name no signal or component; signals are "
                f"{list(self._signals)[:12]}, component labels {labels[:12]}"
            )
        return self._copy(out)

    def select(self, names: str | Sequence[str]) -> Signals:
        """A new :class:`Signals` holding only ``names`` (in the given order)."""
        names = [names] if isinstance(names, str) else list(names)
        return self._copy([self[n] for n in names])

    def rename(self, mapping: Mapping[str, str]) -> Signals:
        return self._copy([replace(s, name=mapping.get(n, n)) for n, s in self._signals.items()])

    def apply(self, *transforms: Any) -> Signals:
        """Apply transforms in order (callables ``Signals -> {name: Signal} | Signals`` or registered names).

        Each transform sees the signals added by the ones before it."""
        from gnomon.signals.registry import get_transform

        out = self
        for spec in transforms:
            if isinstance(spec, (list, tuple)):
                out = out.apply(*spec)
                continue
            fn = get_transform(spec)
            result = fn(out)
            if isinstance(result, Signals):
                out = result
            elif isinstance(result, Mapping):
                out = out.with_signals(result)
            elif isinstance(result, Signal):
                out = out.with_signals([result])
            else:
                raise ValueError(
                    f"transform {spec!r} returned {type(result).__name__}; expected a Signals, a Signal or a "
                    "mapping name -> Signal"
                )
        return out

    # ------------------------------------------------------------------ from a trace
    @classmethod
    def from_trace(
        cls,
        trace: Any,
        layout_or_decoder: Any = None,
        truth: Mapping[str, Any] | Any = None,
        transforms: Sequence[Any] = (),
        *,
        units: Mapping[str, str] | None = None,
        diagnostics: bool = True,
        crlb: Any = None,
    ) -> Signals:
        """Decode a trace into named signals.

        Args:
          trace: an unbatched :class:`~gnomon.Trace` (optimization ``(T, D)`` or sampling ``(C, N, D)``).
          layout_or_decoder: how θ becomes named values:

            * a :class:`~gnomon.Layout`: ``layout.unpack(θ)`` (constrained values), units from the layout;
            * a θ-map (anything with ``to_theta``, e.g. :class:`~gnomon.EigenMap`): the trace's rows are
              its coordinates z, decoded ``θ = map.to_theta(z)`` and then unpacked with the map's
              ``layout`` (or ``trace.layout``);
            * a callable ``θ -> {name: array}`` (leading row/chain dimensions kept), units from ``units``;
            * None: ``trace.layout`` (an eigen-space trace is decoded through ``trace.thetamap``); a trace
              without a layout gives one vector signal ``"theta"``.
          truth: true values for residuals — a mapping ``name -> value`` (constrained values, any signal,
            e.g. ``{"loss": loss_at_truth}``), or a flat base-θ vector decoded like the rows.
          transforms: derived-signal transforms applied after decoding (see :meth:`apply`).
          units: unit strings for decoded names (overrides the layout's).
          diagnostics: also add ``loss`` / ``log_prob`` and the trace's stats channels (role
            ``"diagnostic"``; renamed ``trace.<name>`` if a parameter has the same name).
          crlb: Cramér–Rao bounds for the parameters (see :meth:`with_sigma`): a CRLB result or a mapping
            label → value; plots then draw bands and residuals in σ.

        Component labels of the parameter signals are the layout's (its index labels, which carry the
        component labels a layout was given, e.g. Noll indices).
        """
        from gnomon.trace.trace import Trace

        if not isinstance(trace, Trace):
            raise ValueError(f"Signals.from_trace expects a gnomon.Trace, got {type(trace).__name__}")
        if trace.is_batched:
            raise ValueError("Signals.from_trace: a batched trace holds B fits; decode one member (trace[i])")
        kind = trace.kind
        decode, layout = _decoder(trace, layout_or_decoder)
        raw = trace.z if trace.z is not None else trace.theta  # a θ-map decodes the engine's rows
        if hasattr(layout_or_decoder, "to_theta"):
            theta = np.asarray(layout_or_decoder.to_theta(raw))
        else:
            theta = np.asarray(trace.decoded_theta())
        decoded = decode(theta)
        unit_map = {b.name: b.units for b in layout.blocks} if layout is not None else {}
        unit_map.update(dict(units or {}))
        if kind == "optimization":
            x = np.asarray(trace.step) if trace.step is not None else np.arange(theta.shape[0])
        else:
            x = np.arange(theta.shape[1])
        sig = cls((), x=x, kind=kind)
        out: list[Signal] = []
        for name, values in decoded.items():
            arr = np.asarray(values)
            out.append(sig._make(name, arr, units=unit_map.get(name, ""), role="parameter",
                                 labels=_layout_labels(layout, name, arr.shape[sig._lead_ndim() :])))
        if diagnostics:
            taken = {s.name for s in out}
            diag: dict[str, Any] = {}
            if trace.loss is not None:
                diag["loss"] = trace.loss
            if trace.log_prob is not None:
                diag["log_prob"] = trace.log_prob
            for k, v in trace.stats.items():
                arr = np.asarray(v)
                if arr.dtype.kind in "biuf":
                    diag[k] = arr
            for k, v in diag.items():
                out.append(sig._make(f"trace.{k}" if k in taken else k, v, role="diagnostic"))
        sig = sig.with_signals(out)
        if truth is not None:
            if not isinstance(truth, Mapping):
                truth = {k: np.asarray(v) for k, v in decode(np.asarray(truth)).items()}
            sig = sig.with_truth(truth)
        if crlb is not None:
            sig = sig.with_sigma(crlb, "CRLB")
        return sig.apply(*transforms) if transforms else sig

    @classmethod
    def from_run(
        cls,
        run: Any,
        truth: Mapping[str, Any] | Any = None,
        transforms: Sequence[Any] = (),
        *,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> Signals:
        """Signals of a loaded run: ``Signals.from_run(gn.load_run(run_dir))``, or ``run.signals()``.

        ``run`` is a :class:`~gnomon.Run` (anything with its ``trace``, ``layout``, ``meta``, ``summary``,
        ``files`` and ``load_extra``): Signals sit below the artifacts layer and read no files of their own.
        Uses the run's cached ``signals.npz`` when present (and ``use_cache``), else decodes the trace with
        the run's layout. The truth, unless given, comes from the run's ``truth.npz`` (``{name: value}``),
        from ``meta.json`` ``user.truth`` (a mapping ``name -> value``) or from the ``truth.<label>`` keys of
        ``summary.json``, when any exists; the σ of each parameter from its ``crlb.<label>`` keys
        (``save_run(crlb=...)``), unless the cache already carries one."""
        if isinstance(run, (str, os.PathLike)) or not hasattr(run, "trace"):
            raise ValueError(
                f"Signals.from_run takes a loaded run, got {type(run).__name__} {str(run)[:80]!r}: "
                "Signals.from_run(gn.load_run(path)), or gn.load_run(path).signals()"
            )
        if truth is None:
            truth = _run_truth(run)
        if use_cache and "signals" in run.files:
            units = {b.name: b.units for b in run.layout.blocks} if run.layout is not None else {}
            try:
                sig = cls.from_arrays(run.load_extra("signals"), kind=run.trace.kind, units=units)
            except ValueError as exc:
                raise ArtifactError(f"{run.files['signals']}: not a signals file ({exc})") from None
            if not sig.names_by_role("diagnostic"):  # a cache of parameters only: add the trace's channels
                diag = cls.from_trace(run.trace, lambda th: {}, diagnostics=True)
                if diag.num_rows == sig.num_rows and diag.num_chains == sig.num_chains:
                    sig = sig.with_signals([s for n, s in diag.items() if n not in sig])
            if not truth:
                truth = _truth_from_labels(sig, _run_label_values(run, "truth"))
            if truth:
                sig = sig.with_truth({k: v for k, v in truth.items() if k in sig})
            sig = _with_run_sigma(sig, run)
            return sig.apply(*transforms) if transforms else sig
        sig = cls.from_trace(run.trace, run.layout, truth=truth or None, **kwargs)
        if not truth:
            found = _truth_from_labels(sig, _run_label_values(run, "truth"))
            if found:
                sig = sig.with_truth(found)
        sig = _with_run_sigma(sig, run)
        return sig.apply(*transforms) if transforms else sig

    # ------------------------------------------------------------------ npz round trip
    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{array_name: array}`` for ``signals.npz``: ``x``, ``values/<name>``, ``truth/<name>``,
        ``sigma/<name>`` and a JSON header ``__signals__`` (units, labels, roles, σ sources, error flags, order)
        stored as UTF-8 bytes (no pickle)."""
        header = {
            "signals_schema": SIGNALS_SCHEMA,
            "kind": self._kind,
            "x_label": self._x_label,
            "signals": [
                {
                    "name": s.name,
                    "units": s.units,
                    "labels": list(s.labels),
                    "role": s.role,
                    "scalar": s.scalar,
                    "sigma_source": s.sigma_source,
                    "is_error": s.is_error,
                }
                for s in self._signals.values()
            ],
        }
        blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
        arrays: dict[str, np.ndarray] = {_META_KEY: blob.copy(), "x": np.asarray(self._x)}
        for n, s in self._signals.items():
            arrays[f"values/{n}"] = s.values
            if s.truth is not None:
                arrays[f"truth/{n}"] = s.truth_value
            if s.sigma is not None:
                arrays[f"sigma/{n}"] = s.sigma_value
        return arrays

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        *,
        kind: str | None = None,
        units: Mapping[str, str] | None = None,
    ) -> Signals:
        """Inverse of :meth:`to_arrays`; ValueError naming what is missing or inconsistent.

        A plain ``{name: array}`` mapping without the ``__signals__`` header (e.g. the default
        ``signals.npz`` of :class:`gnomon.DiagnosticsConfig`: constrained blocks plus ``step``) is read as
        parameter signals of ``kind`` (default ``"optimization"``) with ``units`` and x from ``step``."""
        if _META_KEY not in arrays:
            kind = kind or "optimization"
            plain = {k: v for k, v in arrays.items() if k != "step" and not k.startswith("__")}
            if not plain:
                raise ValueError(f"no signal arrays (has {sorted(arrays)[:8]})")
            return cls(plain, x=arrays.get("step"), kind=kind, units=dict(units or {}))
        try:
            raw = np.asarray(arrays[_META_KEY])
            text = raw.tobytes().decode("utf-8") if raw.dtype == np.uint8 else str(raw[()])
            header = json.loads(text)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"unreadable {_META_KEY!r} header ({exc})") from None
        version = header.get("signals_schema")
        if not isinstance(version, int) or version > SIGNALS_SCHEMA:
            raise ValueError(
                f"signals_schema {version!r} is not readable by this gnomon (≤ {SIGNALS_SCHEMA})"
            )
        kind = header.get("kind")
        sig = cls((), x=arrays.get("x"), kind=kind, x_label=header.get("x_label"))
        out = []
        for entry in header.get("signals", []):
            n = entry["name"]
            if f"values/{n}" not in arrays:
                raise ValueError(f"signal {n!r} listed in the header has no 'values/{n}' array")
            out.append(
                sig._make(
                    n,
                    arrays[f"values/{n}"],
                    units=entry.get("units", ""),
                    truth=arrays.get(f"truth/{n}"),
                    labels=entry.get("labels"),
                    role=entry.get("role", "parameter"),
                    sigma=arrays.get(f"sigma/{n}"),
                    sigma_source=entry.get("sigma_source", ""),
                    is_error=bool(entry.get("is_error", False)),
                )
            )
        return sig.with_signals(out)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``signals.npz`` atomically (no pickle)."""
        write_npz(path, self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Signals:
        """Read a file written by :meth:`save`; :class:`~gnomon.ArtifactError` naming the file on failure."""
        arrays = read_npz(path)
        try:
            return cls.from_arrays(arrays)
        except (ValueError, KeyError) as exc:
            raise ArtifactError(f"{path}: not a signals file ({exc})") from None


def _decoder(trace: Any, spec: Any) -> tuple[Callable[[np.ndarray], Mapping[str, Any]], Any]:
    """``(decode, layout)``: ``decode(θ_base)`` -> ``{name: values}``."""
    from gnomon.thetaspace.layout import Layout

    if spec is None or hasattr(spec, "to_theta"):
        layout = getattr(spec, "layout", None) if spec is not None else None
        layout = layout if isinstance(layout, Layout) else trace.layout
        if layout is None:
            return (lambda th: {"theta": th}), None
        spec = layout
    if isinstance(spec, Layout):
        layout = spec

        def decode(th: np.ndarray) -> dict[str, np.ndarray]:
            # identity blocks are sliced in numpy so that a float64 trace keeps float64 precision even when
            # JAX runs in float32 (an arcsec position near 9.5" would otherwise be quantized to ~1 µas)
            th = np.asarray(th)
            constrained = layout.unpack(th) if not layout.is_identity else {}
            return {
                b.name: th[..., b.start : b.stop].reshape(th.shape[:-1] + b.shape)
                if b.is_identity
                else np.asarray(constrained[b.name], dtype=th.dtype)
                for b in layout.blocks
            }

        return decode, layout
    if callable(spec):

        def decode_fn(th: np.ndarray) -> Mapping[str, Any]:
            out = spec(th)
            if not isinstance(out, Mapping):
                raise ValueError(f"a decoder must return a mapping name -> array, got {type(out).__name__}")
            return {k: np.asarray(v) for k, v in out.items()}

        return decode_fn, trace.layout
    raise ValueError(
        "layout_or_decoder must be a Layout, a θ-map with to_theta, a callable θ -> {name: array} or None; "
        f"got {type(spec).__name__}"
    )


def _run_truth(run: Any) -> dict[str, Any]:
    if "truth" in run.files:
        return dict(run.load_extra("truth"))
    user = run.meta.get("user") or {}
    truth = user.get("truth") if isinstance(user, Mapping) else None
    if truth is None:
        truth = run.meta.get("truth")
    return dict(truth) if isinstance(truth, Mapping) else {}


def _layout_labels(layout: Any, name: str, comp_shape: tuple[int, ...]) -> list[str] | None:
    """The layout's component labels of block ``name`` when its values have ``comp_shape``, else None."""
    if layout is None or name not in layout or comp_shape == ():
        return None
    b = layout[name]
    labs = block_labels(layout, b)
    return labs if tuple(b.shape) == tuple(comp_shape) and len(labs) == int(np.prod(comp_shape)) else None


def _sigma_mapping(sigma: Any) -> tuple[dict[str, Any], bool]:
    """``({key: value}, lenient)`` from a mapping or a CRLB-like object (lenient: it may bound more than is
    plotted)."""
    if isinstance(sigma, Mapping):
        return dict(sigma), False
    labels = getattr(sigma, "labels", None)
    marginal = getattr(sigma, "marginal", None)
    if labels is not None and marginal is not None:
        vals = np.asarray(marginal, dtype=float).reshape(-1)
        labels = [str(x) for x in labels]
        if len(labels) != vals.size:
            raise ValueError(f"sigma: {len(labels)} labels but {vals.size} marginal bounds")
        return dict(zip(labels, vals.tolist())), True
    if callable(getattr(sigma, "to_summary", None)):
        raw = sigma.to_summary()
        return {k[len("crlb.") :] if k.startswith("crlb.") else k: v for k, v in raw.items()}, True
    raise ValueError(
        "sigma must be a mapping (signal name or component label -> value) or a CRLB result with labels and "
        f"marginal (or to_summary()), got {type(sigma).__name__}"
    )


def _run_label_values(run: Any, prefix: str) -> dict[str, float]:
    """``{label: value}`` of the ``<prefix>.<label>`` keys of a run's summary.json."""
    head = prefix + "."
    return {k[len(head) :]: v for k, v in (run.summary or {}).items() if k.startswith(head)
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _truth_from_labels(sig: Signals, by_label: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Truth per parameter signal whose every component label has a value in ``by_label``."""
    out = {}
    for n in sig.names_by_role("parameter"):
        labs = sig[n].labels
        if by_label and all(lab in by_label for lab in labs):
            out[n] = np.asarray([by_label[lab] for lab in labs], dtype=float)
            if sig[n].scalar:
                out[n] = out[n][0]
    return out


def _with_run_sigma(sig: Signals, run: Any) -> Signals:
    """σ from the run's ``crlb.<label>`` summary keys for signals that have none yet."""
    bounds = _run_label_values(run, "crlb")
    if not bounds:
        return sig
    missing = {lab: v for n, s in sig.items() if s.sigma is None for lab, v in bounds.items() if lab in s.labels}
    return sig.with_sigma(missing, "CRLB", strict=False) if missing else sig

