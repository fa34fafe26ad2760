"""Typed codes for what an engine decided and how it ended: the one convention, shared by every layer.

An engine's record keeps two things side by side: a **sentence** for people (``trace.status``, a decision's
``message``) and a **code** for programs. Codes are members of a :class:`Code` enumeration — a ``str``
enum, so that

* code compares codes, never sentences: ``d.action is Action.SEED_REJECTED``, not
  ``d.message.startswith("seed rejected")``;
* a code written to JSON (``summary.json``, ``meta.json``, ``trace.info``) is its readable value string
  (``"seed rejected"``) with no custom encoder, and old files — written before the codes existed, with the
  same strings — still load: :meth:`Code.parse` turns a stored string back into the member;
* a code still equals its value string (``Action.SEED_REJECTED == "seed rejected"``), so readers of old
  records that compare strings keep working while they move to the members.

Convention for a new set of codes (the sampler's are in :mod:`gnomon.sampler.decisions`; an optimizer's
status codes follow the same pattern)::

    class OptimStatus(Code):
        CONVERGED = "converged"
        DIVERGED = "diverged"

    trace.info["status_code"] = OptimStatus.DIVERGED   # beside trace.status = "diverged at step 12: ..."

The value is lower-case words separated by spaces or underscores, stable across versions (it is what files
hold); a member's name may change, its value may not.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

C = TypeVar("C", bound="Code")


class Code(StrEnum):
    """Base of gnomon's typed codes: a ``str`` enum whose value is what files hold (see the module
    docstring)."""

    @classmethod
    def parse(cls: type[C], value: Any) -> C:
        """The member for ``value`` (a member or its stored string); a ValueError naming the value and the
        codes this enumeration knows otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"{value!r} is not a {cls.__name__} code; expected one of {known}") from None

    @classmethod
    def get(cls: type[C], value: Any, default: Any = None) -> C | Any:
        """The member for ``value``, or ``default`` when it is not one (for reading records that may lack
        the field or come from another engine)."""
        try:
            return cls.parse(value)
        except ValueError:
            return default
