"""What a method configuration turns into: a :class:`Program` (the loop's compile key, its JSON description and a
factory of the optax transformation), and the :class:`Method` base of the configurations."""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from collections.abc import Callable, Hashable, Mapping
from typing import Any, ClassVar, NamedTuple

import numpy as np

from gnomon.curvature.estimate import Curvature
from gnomon.objective.objective import Objective


class Program(NamedTuple):
    """What the optimizer loop runs for one method and its settings.

    ``make(data, key, arrays)`` returns the optax transformation; it is called inside the compiled program
    (``data`` one member's data, ``key`` the PRNG key, ``arrays`` :attr:`arrays` — runtime arrays such as a
    given curvature, passed as arguments so that new values do not recompile; one member's under a batch).
    ``cache_key`` identifies the program's structure; ``info`` is its JSON description (→ ``trace.info``),
    ``curvature_info`` the curvature's (→ ``trace.info["curvature"]``, None without one). ``start_curvature``
    (None for none): the options of the curvature to estimate at θ_0 on the host
    (:func:`gnomon.optim.estimator.curvature_at_start`) — the driver fills :attr:`arrays` with it before running;
    ``start_cost`` is what that estimate cost (per member)."""

    name: str
    cache_key: Hashable
    make: Callable[[Any, Any, Any], Any]
    arrays: Any
    info: Mapping[str, Any]
    curvature_info: Mapping[str, Any] | None = None
    start_curvature: Mapping[str, Any] | None = None
    start_cost: int = 0


class Method(abc.ABC):
    """Base of the method configurations (frozen dataclasses); each one builds its :class:`Program`."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def program(self, obj: Objective, theta: Any, data: Any) -> Program:
        """The :class:`Program` for ``obj`` (``theta``/``data``: one member's start and data, for planning)."""

    def describe(self) -> dict[str, Any]:
        """JSON-able settings (field values; arrays and schedules by kind)."""
        return {"method": self.name, **{f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    def _key(self) -> tuple:
        """Hashable settings: the compile-cache key (a given curvature diagonal is a runtime argument of the
        program, so only its shape enters)."""
        return (self.name, *(hashable(getattr(self, f.name), by_value=f.name != "curvature")
                             for f in dataclasses.fields(self)))


def hashable(x: Any, by_value: bool = True) -> Any:
    """A hashable stand-in for a setting (arrays by content, or by shape only when not ``by_value``)."""
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, Mapping):
        return tuple(sorted((k, hashable(v)) for k, v in x.items()))
    if isinstance(x, Curvature):
        return ("curvature", x.method, np.shape(x.diag))  # values are passed as arguments, not compiled in
    if callable(x):
        return ("callable", x)
    a = np.asarray(x)
    if not by_value:
        return ("array", a.shape)
    return ("array", a.shape, str(a.dtype), hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())


def jsonable(x: Any) -> Any:
    """A JSON-able description of a setting (arrays by shape, schedules as ``"schedule"``)."""
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, Curvature):
        return f"Curvature({x.method})"
    if callable(x):
        return "schedule"
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else f"array{tuple(a.shape)}"
