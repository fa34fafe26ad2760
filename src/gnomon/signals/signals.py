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

This module holds the container; one :class:`Signal` and how it is made live in
:mod:`gnomon.signals.signal`, decoding a trace in :mod:`gnomon.signals.decode`, truth and σ of saved runs in
:mod:`gnomon.signals.attach` and the ``signals.npz`` form in :mod:`gnomon.signals.arrays`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from gnomon.signals.arrays import SIGNALS_SCHEMA
from gnomon.signals.arrays import from_arrays as _from_arrays
from gnomon.signals.arrays import to_arrays as _to_arrays
from gnomon.signals.attach import sigma_mapping, signals_from_run
from gnomon.signals.decode import signals_from_trace
from gnomon.signals.signal import KINDS, ROLES, Signal, lead_ndim, make_signal
from gnomon.util.files import ArtifactError, read_npz, write_npz

__all__ = ["Signal", "Signals", "ROLES", "SIGNALS_SCHEMA"]


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
        if kind not in KINDS:
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
        return lead_ndim(self._kind)

    def _make(self, name: str, values: Any, **kwargs: Any) -> Signal:
        """A :class:`Signal` that fits these signals' rows, from natural-shape ``values`` (keywords ``units``,
        ``truth``, ``labels``, ``role``, ``sigma``, ``sigma_source``, ``is_error``: see
        :func:`~gnomon.signals.signal.make_signal`)."""
        return make_signal(self._kind, name, values, **kwargs)

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
        mapping, lenient = sigma_mapping(sigma)
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
        return signals_from_trace(cls, trace, layout_or_decoder, truth, transforms, units, diagnostics, crlb)

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
        return signals_from_run(cls, run, truth, transforms, use_cache=use_cache, **kwargs)

    # ------------------------------------------------------------------ npz round trip
    def to_arrays(self) -> dict[str, np.ndarray]:
        """``{array_name: array}`` for ``signals.npz``: ``x``, ``values/<name>``, ``truth/<name>``,
        ``sigma/<name>`` and a JSON header ``__signals__`` (units, labels, roles, σ sources, error flags, order)
        stored as UTF-8 bytes (no pickle)."""
        return _to_arrays(self)

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
        return _from_arrays(cls, arrays, kind=kind, units=units)

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
