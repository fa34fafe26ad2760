"""`Progress`: a tqdm progress bar driven between compiled chunks, quiet when stderr is not a terminal.

Engines call it from Python between compiled chunks (never inside jitted code)::

    bar = Progress(num_steps, "lbfgs", enabled=progress)   # enabled=None: only on a terminal
    bar.update(t, loss=...)                                 # t = steps done so far (not an increment)
    bar.total += extra                                      # the sampler extends its warmup
    bar.close("12 divergences")

tqdm is imported only when a bar is actually drawn, so ``import gnomon`` and quiet runs never load it.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


class Progress:
    """A progress bar of ``total`` items on ``stream`` (default stderr), drawn by tqdm.

    Args:
      total: number of items (steps, draws, runs); at least 1. Settable (``bar.total += n``).
      desc: label at the left of the bar.
      enabled: True draws, False is silent, None (auto) draws only when ``stream`` is a terminal.
      stream: where to draw (default ``sys.stderr``).

    ``update(n, force=False, **postfix)`` moves the bar to ``n`` items done (an absolute position; redrawn at
    most every 0.1 s unless ``force``) and shows ``postfix`` as ``key=value``; ``close(msg=None)`` appends
    ``msg`` and ends the line. A disabled bar does nothing and imports nothing.
    """

    def __init__(self, total: int, desc: str, enabled: bool | None = None, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty()) if callable(isatty) else False
        self._enabled = bool(enabled)
        self._total = max(int(total), 1)
        self.desc = desc
        self._bar: Any = None
        if self._enabled:
            self._bar = _tqdm_class()(
                total=self._total, desc=desc, file=self.stream, leave=True, dynamic_ncols=True, mininterval=0.1,
                smoothing=0.1,
            )

    @property
    def enabled(self) -> bool:
        """Whether the bar draws (decided at construction)."""
        return self._enabled

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = max(int(value), 1)
        if self._bar is not None:
            self._bar.total = self._total

    def update(self, n: int, force: bool = False, **postfix: Any) -> None:
        """Move to ``n`` items done (absolute), showing ``postfix``; redraw now when ``force``."""
        bar = self._bar
        if bar is None:
            return
        if postfix:
            bar.set_postfix(postfix, refresh=False)
        step = int(n) - bar.n
        if step >= 0 and not force:
            bar.update(step)  # tqdm redraws at most every mininterval
        else:
            bar.n = int(n)
            bar.refresh()

    def close(self, msg: str | None = None) -> None:
        """End the bar (once), appending ``msg`` to its postfix."""
        bar = self._bar
        if bar is None:
            return
        if msg:
            bar.set_postfix_str(f"{bar.postfix}, {msg}" if bar.postfix else str(msg), refresh=False)
        bar.close()
        self._bar = None


_TQDM: Any = None


def _tqdm_class():
    """tqdm without its monitor thread (no background thread outlives a run), imported on first use."""
    global _TQDM
    if _TQDM is None:
        from tqdm import tqdm

        class _Bar(tqdm):
            monitor_interval = 0

        _TQDM = _Bar
    return _TQDM
