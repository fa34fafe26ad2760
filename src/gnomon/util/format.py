"""Numbers and times as people read them: uncertainty-aware significant figures, ISO dates.

:func:`format_uncertain` prints a value with the number of digits its uncertainty supports — the uncertainty
to two significant figures and the value to the same decimal place::

    format_uncertain(0.120212, 0.0004)      -> "0.12021 ± 0.00040"
    format_uncertain(9.50000123, 2.3e-6)    -> "9.5000012 ± 0.0000023"
    format_uncertain(-1.2345e-7, 3.2e-10)   -> "(-1.2345 ± 0.0032)e-07"
    format_uncertain(12345.6, 230.0)        -> "12350 ± 230"

The value's last printed digit is at ``10^(floor(log10 σ) − 1)``. Very large or very small numbers (outside
``[1e-4, 1e6)``) share one power of ten. A missing or non-positive uncertainty falls back to
:func:`format_number` (six significant figures). Pure Python, imported by the command line and the plots.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def format_number(v: Any, sig: int = 6) -> str:
    """A number to ``sig`` significant figures (``"nan"``, ``"inf"`` spelled out); other values as ``str``."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f"{f:.{sig}g}"


def format_uncertain(value: Any, sd: Any, unit: str = "") -> str:
    """``value ± sd`` with the digits the uncertainty supports (module docstring), then `` unit``."""
    tail = f" {unit}" if unit else ""
    if not _finite(value):
        return format_number(value) + (f" ± {format_number(sd, 2)}" if _finite(sd) else "") + tail
    v = float(value)
    if not _finite(sd) or float(sd) <= 0:
        return format_number(v) + tail
    s = float(sd)
    e = math.floor(math.log10(s))
    s_round = round(s, 1 - e)
    if s_round >= 10.0 ** (e + 1):  # 0.000996 rounds to 0.0010: one decade up
        e += 1
    last = e - 1  # exponent of the last printed digit
    big = max(abs(v), s)
    if 1e-4 <= big < 1e6:
        decimals = max(0, -last)
        q = 10.0**last
        vr, sr = round(v / q) * q, round(s / q) * q
        return f"{vr:.{decimals}f} ± {sr:.{decimals}f}{tail}"
    p = math.floor(math.log10(big))
    m_v, m_s = v / 10.0**p, s / 10.0**p
    decimals = max(0, p - last)
    return f"({m_v:.{decimals}f} ± {m_s:.{decimals}f})e{p:+03d}{tail}"


def iso_time(unix: Any) -> str:
    """A UNIX time as an ISO 8601 UTC date (``2026-11-30T10:48:02+00:00``); the input as text if it is not a
    number."""
    if not _finite(unix):
        return str(unix)
    return datetime.fromtimestamp(float(unix), UTC).isoformat(timespec="seconds")


__all__ = ["format_number", "format_uncertain", "iso_time"]
