"""Truth and 1σ scales for signals: what a ``sigma=`` / ``crlb=`` argument names (:func:`sigma_mapping`), and
the signals of a saved run with the truth and Cramér–Rao bounds it was saved with (:func:`signals_from_run`,
the body of :meth:`gnomon.Signals.from_run`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gnomon.util.files import ArtifactError


def sigma_mapping(sigma: Any) -> tuple[dict[str, Any], bool]:
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


def signals_from_run(
    cls: Any,
    run: Any,
    truth: Mapping[str, Any] | Any = None,
    transforms: Sequence[Any] = (),
    *,
    use_cache: bool = True,
    **kwargs: Any,
) -> Any:
    """The body of :meth:`Signals.from_run <gnomon.Signals.from_run>` (``cls`` is the Signals class)."""
    if isinstance(run, (str, os.PathLike)) or not hasattr(run, "trace"):
        raise ValueError(
            f"Signals.from_run takes a loaded run, got {type(run).__name__} {str(run)[:80]!r}: "
            "Signals.from_run(gn.load_run(path)), or gn.load_run(path).signals()"
        )
    if truth is None:
        truth = run_truth(run)
    if use_cache and "signals" in run.files:
        sig = _cached_signals(cls, run)
        if not truth:
            truth = truth_from_labels(sig, run_label_values(run, "truth"))
        if truth:
            sig = sig.with_truth({k: v for k, v in truth.items() if k in sig})
    else:
        sig = cls.from_trace(run.trace, run.layout, truth=truth or None, **kwargs)
        if not truth:
            found = truth_from_labels(sig, run_label_values(run, "truth"))
            if found:
                sig = sig.with_truth(found)
    sig = with_run_sigma(sig, run)
    return sig.apply(*transforms) if transforms else sig


def _cached_signals(cls: Any, run: Any) -> Any:
    """The run's ``signals.npz`` as Signals, with the trace's diagnostic channels added to a cache of
    parameters only."""
    units = {b.name: b.units for b in run.layout.blocks} if run.layout is not None else {}
    try:
        sig = cls.from_arrays(run.load_extra("signals"), kind=run.trace.kind, units=units)
    except ValueError as exc:
        raise ArtifactError(f"{run.files['signals']}: not a signals file ({exc})") from None
    if not sig.names_by_role("diagnostic"):  # a cache of parameters only: add the trace's channels
        diag = cls.from_trace(run.trace, lambda th: {}, diagnostics=True)
        if diag.num_rows == sig.num_rows and diag.num_chains == sig.num_chains:
            sig = sig.with_signals([s for n, s in diag.items() if n not in sig])
    return sig


def run_truth(run: Any) -> dict[str, Any]:
    """The truth a run was saved with: its ``truth.npz``, else ``meta.json`` ``user.truth`` (or ``truth``)."""
    if "truth" in run.files:
        return dict(run.load_extra("truth"))
    user = run.meta.get("user") or {}
    truth = user.get("truth") if isinstance(user, Mapping) else None
    if truth is None:
        truth = run.meta.get("truth")
    return dict(truth) if isinstance(truth, Mapping) else {}


def run_label_values(run: Any, prefix: str) -> dict[str, float]:
    """``{label: value}`` of the ``<prefix>.<label>`` keys of a run's summary.json."""
    head = prefix + "."
    return {k[len(head) :]: v for k, v in (run.summary or {}).items() if k.startswith(head)
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def truth_from_labels(sig: Any, by_label: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Truth per parameter signal whose every component label has a value in ``by_label``."""
    out = {}
    for n in sig.names_by_role("parameter"):
        labs = sig[n].labels
        if by_label and all(lab in by_label for lab in labs):
            out[n] = np.asarray([by_label[lab] for lab in labs], dtype=float)
            if sig[n].scalar:
                out[n] = out[n][0]
    return out


def with_run_sigma(sig: Any, run: Any) -> Any:
    """σ from the run's ``crlb.<label>`` summary keys for signals that have none yet."""
    bounds = run_label_values(run, "crlb")
    if not bounds:
        return sig
    missing = {lab: v for n, s in sig.items() if s.sigma is None for lab, v in bounds.items() if lab in s.labels}
    return sig.with_sigma(missing, "CRLB", strict=False) if missing else sig
