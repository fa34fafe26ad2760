"""A small terminal progress bar driven between compiled chunks (no dependency, quiet off a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Progress bar on ``stream`` (stderr). ``enabled=None`` means: only when ``stream`` is a terminal.

    ``update(done, **fields)`` redraws at most ~10 times a second; ``close(message)`` ends the line."""

    def __init__(self, total: int, desc: str, enabled: bool | None = None, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.total = max(int(total), 1)
        self.desc = desc
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int, force: bool = False, **fields: object) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        frac = min(max(done / self.total, 0.0), 1.0)
        width = 24
        filled = int(round(frac * width))
        bar = "█" * filled + "·" * (width - filled)
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        extra = "  ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        line = f"\r{self.desc} |{bar}| {done}/{self.total} [{elapsed:5.1f}s, {rate:,.0f}/s] {extra}"
        self.stream.write(line[:160].ljust(60))
        self.stream.flush()
        self._drawn = True

    def close(self, message: str = "") -> None:
        if self.enabled and self._drawn:
            self.stream.write(f"  {message}\n" if message else "\n")
            self.stream.flush()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
