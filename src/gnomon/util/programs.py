"""The one home of gnomon's in-memory caches: compiled programs and what building them found.

Engines compile one program per *compile key* — what determines the program: the objective's
:attr:`~gnomon.Objective.compile_key` (the identity of the user's functions, the data's shapes and dtypes) and
the engine's static settings — and reuse it for every later call with an equal key, so a time series of
epochs compiles once. Every such cache is a :class:`ProgramCache`; :func:`clear_caches` (``gn.clear_caches()``)
empties them all.

What a cache holds, and for how long:

* **Keys hold the user's objects weakly.** A leaf of a key that hashes by identity — a function, an
  objective without function identity, an optax transformation's closures — is kept as a weak reference; leaves
  that compare by value (numbers, strings, a :class:`~gnomon.Layout`, frozen settings) are kept as they are.
  When such an object is garbage-collected, every entry whose key names it is dropped at once: deleting the
  objective and its loss function frees the program and whatever it held (the arrays a loss's closure captured
  become constants of the compiled program), without a call to :func:`clear_caches`.
* **Values hold no objective and no bound data.** A program compiled ahead of time keeps no Python function;
  a program traced later (new argument shapes) reaches the objective through a :class:`Live` — weak
  references to the objectives its callers passed, each caller binding its own — and takes the data as an
  argument.
* **Least recently used entries are dropped** past each cache's ``maxsize``.

Small memos of pure host-side facts (a run's provenance, a layout's JSON) are :func:`memoized`: an
``functools.lru_cache`` that :func:`clear_caches` empties too. JAX's own caches (of your own jitted functions)
are JAX's: ``jax.clear_caches()``.
"""

from __future__ import annotations

import collections
import functools
import threading
import types
import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

V = TypeVar("V")

_CACHES: list[ProgramCache] = []
_MEMOS: list[Any] = []


def clear_caches() -> None:
    """Free every compiled program gnomon holds and everything it held.

    Empties each :class:`ProgramCache` (optimizer loops, sampler programs, curvature estimators, the shapes
    and sizes found while planning them) and each :func:`memoized` memo. Arrays that a loss function's
    closure captured live on in a compiled program only as long as the program; after ``del`` of your
    objects and this call, nothing you passed is kept alive by gnomon. The next call of an engine compiles
    again. JAX's caches of your own jitted functions are untouched (``jax.clear_caches()`` clears those)."""
    for cache in list(_CACHES):
        cache.clear()
    for memo in list(_MEMOS):
        memo.cache_clear()


def memoized(maxsize: int = 64) -> Callable[[Callable[..., V]], Callable[..., V]]:
    """``functools.lru_cache(maxsize)`` that :func:`clear_caches` empties (for host-side facts only: the
    arguments are held strongly, so never pass user data)."""

    def wrap(fn: Callable[..., V]) -> Callable[..., V]:
        memo = functools.lru_cache(maxsize=maxsize)(fn)
        _MEMOS.append(memo)
        return memo

    return wrap


# ---------------------------------------------------------------------------------------------- weak keys
class _WeakLeaf:
    """A key leaf that hashes by identity, held weakly: equal to another only while both name the same live
    object."""

    __slots__ = ("ref", "hash")

    def __init__(self, obj: Any):
        self.ref = weakref.ref(obj)
        self.hash = id(obj)

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _WeakLeaf) or other.hash != self.hash:
            return False
        obj = self.ref()
        return obj is not None and obj is other.ref()

    def __repr__(self) -> str:
        obj = self.ref()
        return f"<weak {getattr(obj, '__qualname__', type(obj).__name__) if obj is not None else 'dead'}>"


def _by_identity(x: Any) -> bool:
    return type(x).__hash__ is object.__hash__


def weak_key(key: Hashable) -> tuple[Hashable, list[Any]]:
    """``(key with identity-hashed leaves held weakly, those leaves)``.

    Tuples (named tuples included) and frozensets are walked; a bound method becomes its object and function;
    a leaf that hashes by identity and can be weakly referenced becomes a weak reference (its object is an
    *anchor* of the entry); every other leaf (numbers, strings, value-hashed objects) is kept as it is."""
    anchors: list[Any] = []

    def walk(x: Any) -> Any:
        if isinstance(x, tuple):
            return ("t", tuple(walk(v) for v in x))
        if isinstance(x, frozenset):
            return ("s", frozenset(walk(v) for v in x))
        if isinstance(x, types.MethodType):
            return ("m", walk(x.__self__), walk(x.__func__))
        if _by_identity(x):
            try:
                leaf = _WeakLeaf(x)
            except TypeError:  # not weakly referenceable (a slotted object, a ufunc): kept as it is
                return x
            anchors.append(x)
            return leaf
        return x

    return walk(key), anchors


class ProgramCache[V]:
    """A least-recently-used map from compile keys to programs (or facts found while building them) whose keys
    hold the user's objects weakly (:func:`weak_key`): an entry goes when any object its key names is
    garbage-collected, when it is the least recently used one past ``maxsize``, or at :func:`clear_caches`.

    Values must not hold what the key names (an objective, the user's functions): a program that traces later
    reaches its objective through a :class:`Live`."""

    def __init__(self, name: str, maxsize: int):
        self.name = name
        self.maxsize = int(maxsize)
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._guards: dict[Any, list[weakref.ref]] = {}
        self._lock = threading.RLock()
        _CACHES.append(self)

    def get(self, key: Hashable) -> V | None:
        """The value cached under ``key`` (now the most recently used), or None."""
        wkey, _ = weak_key(key)
        with self._lock:
            hit = self._entries.get(wkey)
            if hit is not None:
                self._entries.move_to_end(wkey)
            return hit

    def put(self, key: Hashable, value: V) -> V:
        """Cache ``value`` under ``key`` (dropping the least recently used entries past ``maxsize``); returns
        ``value``."""
        wkey, anchors = weak_key(key)
        me = weakref.ref(self)

        def drop(_ref: Any, wkey: Any = wkey) -> None:  # an object the key names is gone
            cache = me()
            if cache is not None:
                cache._drop(wkey)

        with self._lock:
            self._drop(wkey)
            self._entries[wkey] = value
            self._guards[wkey] = [weakref.ref(a, drop) for a in anchors]
            while len(self._entries) > self.maxsize:
                self._drop(next(iter(self._entries)))
        return value

    def _drop(self, wkey: Any) -> None:
        with self._lock:
            self._entries.pop(wkey, None)
            self._guards.pop(wkey, None)

    def clear(self) -> None:
        with self._lock:  # swap first: freeing a value may run a callback that drops another entry
            entries, guards = self._entries, self._guards
            self._entries, self._guards = collections.OrderedDict(), {}
        del entries, guards

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ProgramCache({self.name!r}, {len(self)}/{self.maxsize} entries)"


class Live:
    """Weak references to the objects (objectives) that callers of one cached program passed: the program's
    functions trace with :meth:`get` instead of closing over an objective, so the cache holds none.

    Every caller :meth:`bind`\\ s its own objective before running the program (all of them share the program's
    compile key, so any one traces the same function); while a caller runs, its objective is alive."""

    __slots__ = ("_objects", "what")

    def __init__(self, what: str = "objective"):
        self._objects: weakref.WeakSet = weakref.WeakSet()
        self.what = what

    def bind(self, obj: Any) -> Any:
        """Add ``obj`` (held weakly); returns it."""
        self._objects.add(obj)
        return obj

    def get(self) -> Any:
        """One live bound object; RuntimeError when every one has been deleted (a program called after its
        callers' objects are gone: fetch it again from its cache with a live objective)."""
        for obj in self._objects:
            return obj
        raise RuntimeError(f"this compiled program's {self.what} has been deleted: look the program up again "
                           f"with a live {self.what} before calling it")
