"""Compiling in the background: XLA releases the GIL while it compiles, so a lowered program can compile in a thread
while the caller does other work (``gn.optimize`` estimates the curvature at θ_0 meanwhile)."""

from __future__ import annotations

import threading
import time
from typing import Any


class Pending:
    """A lowered program compiling in a background thread (XLA releases the GIL while it compiles): the caller
    lowers init and chunk, both compile concurrently — and concurrently with whatever the caller does next (the
    curvature estimate at θ_0) — and the first call waits for the executable. An error in the compile is raised
    at that call."""

    def __init__(self, lowered: Any):
        self._lowered = lowered
        self._result: Any = None
        self._error: BaseException | None = None
        self.seconds = 0.0  # the compile's own duration
        self._thread = threading.Thread(target=self._compile, name="gnomon-compile", daemon=True)
        self._thread.start()

    def _compile(self) -> None:
        start = time.perf_counter()
        try:
            self._result = self._lowered.compile()
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            self._error = exc
        self.seconds = time.perf_counter() - start
        self._lowered = None

    def executable(self) -> Any:
        if self._thread.is_alive():
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def __call__(self, *args: Any) -> Any:
        return self.executable()(*args)
