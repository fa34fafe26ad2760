"""The ``signals.npz`` form of a :class:`~gnomon.Signals`: ``x``, ``values/<name>``, ``truth/<name>``,
``sigma/<name>`` and a JSON header ``__signals__`` stored as UTF-8 bytes (no pickle), schema-versioned
(:data:`SIGNALS_SCHEMA`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from gnomon.signals.signal import make_signal

SIGNALS_SCHEMA = 1
META_KEY = "__signals__"


def to_arrays(sig: Any) -> dict[str, np.ndarray]:
    """The body of :meth:`Signals.to_arrays <gnomon.Signals.to_arrays>`."""
    signals = [sig[n] for n in sig]
    header = {
        "signals_schema": SIGNALS_SCHEMA,
        "kind": sig.kind,
        "x_label": sig.x_label,
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
            for s in signals
        ],
    }
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    arrays: dict[str, np.ndarray] = {META_KEY: blob.copy(), "x": np.asarray(sig.x)}
    for s in signals:
        arrays[f"values/{s.name}"] = s.values
        if s.truth is not None:
            arrays[f"truth/{s.name}"] = s.truth_value
        if s.sigma is not None:
            arrays[f"sigma/{s.name}"] = s.sigma_value
    return arrays


def from_arrays(
    cls: Any,
    arrays: Mapping[str, np.ndarray],
    *,
    kind: str | None = None,
    units: Mapping[str, str] | None = None,
) -> Any:
    """The body of :meth:`Signals.from_arrays <gnomon.Signals.from_arrays>` (``cls`` is the Signals class)."""
    if META_KEY not in arrays:
        kind = kind or "optimization"
        plain = {k: v for k, v in arrays.items() if k != "step" and not k.startswith("__")}
        if not plain:
            raise ValueError(f"no signal arrays (has {sorted(arrays)[:8]})")
        return cls(plain, x=arrays.get("step"), kind=kind, units=dict(units or {}))
    header = _header(arrays)
    kind = header.get("kind")
    sig = cls((), x=arrays.get("x"), kind=kind, x_label=header.get("x_label"))
    out = []
    for entry in header.get("signals", []):
        n = entry["name"]
        if f"values/{n}" not in arrays:
            raise ValueError(f"signal {n!r} listed in the header has no 'values/{n}' array")
        out.append(
            make_signal(
                kind,
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


def _header(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The JSON header, refused when unreadable or written by a newer schema."""
    try:
        raw = np.asarray(arrays[META_KEY])
        text = raw.tobytes().decode("utf-8") if raw.dtype == np.uint8 else str(raw[()])
        header = json.loads(text)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable {META_KEY!r} header ({exc})") from None
    version = header.get("signals_schema")
    if not isinstance(version, int) or version > SIGNALS_SCHEMA:
        raise ValueError(f"signals_schema {version!r} is not readable by this gnomon (≤ {SIGNALS_SCHEMA})")
    return header
