"""Write docs/api.md from the docstrings of gnomon's public names.

Run: ``python scripts/gen_api_docs.py``. tests/test_docs.py checks that docs/api.md is current.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import gnomon

SKIP_MEMBERS = {"tree_flatten", "tree_unflatten"}


def _signature(obj) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return re.sub(r"<object object at 0x[0-9a-f]+>", "<objective's data>", text)  # sentinel defaults


def _doc(obj) -> str:
    return inspect.cleandoc(obj.__doc__ or "(no docstring)")


def render() -> str:
    out = ["# API reference", "", "Generated from docstrings by `scripts/gen_api_docs.py`; do not edit by hand.", ""]
    for name in sorted(n for n in gnomon.__all__ if not n.startswith("_")):
        obj = getattr(gnomon, name)
        if inspect.ismodule(obj):
            out += [f"## `gnomon.{name}` (module)", "", _doc(obj), ""]
            for sub in sorted(getattr(obj, "__all__", [])):
                f = getattr(obj, sub)
                out += [f"### `gnomon.{name}.{sub}{_signature(f)}`", "", _doc(f), ""]
            continue
        if inspect.isclass(obj):
            out += [f"## `gnomon.{name}`", "", "```python", f"class {name}{_signature(obj)}", "```", "", _doc(obj), ""]
            for mname, member in sorted(vars(obj).items()):
                if mname.startswith("_") or mname in SKIP_MEMBERS:
                    continue
                if isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                if isinstance(member, property):
                    if member.__doc__:
                        out += [f"- `{name}.{mname}` (property): {inspect.cleandoc(member.__doc__).splitlines()[0]}"]
                    continue
                if callable(member) and member.__doc__:
                    out += ["", f"### `{name}.{mname}{_signature(member)}`", "", _doc(member), ""]
            out.append("")
            continue
        if callable(obj):
            out += [f"## `gnomon.{name}{_signature(obj)}`", "", _doc(obj), ""]
        else:
            out += [f"## `gnomon.{name}`", "", f"`{obj!r}`", ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    path = Path(__file__).resolve().parent.parent / "docs" / "api.md"
    text = render()
    if "--check" in sys.argv:
        return 0 if path.exists() and path.read_text() == text else 1
    path.write_text(text)
    print(f"wrote {path} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
