"""The one JSON reader/writer of gnomon artifacts: atomic, schema-versioned, NaN-safe, no pickle.

* Non-finite floats are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (valid JSON)
  and read back as floats; numpy/jax scalars and arrays become plain numbers and lists.
* Writes go to a temporary file in the same folder, are flushed, then ``os.replace``-d over the target, so
  a crash never leaves a half-written file (orphan ``*.tmp-*`` files may remain; readers ignore them).
* Every artifact carries ``schema_version``; :func:`read_json` refuses a newer one with a clear error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# the error type and the atomic writes live in the bottom layer (gnomon.util.files) so that every layer can use
# them; they are re-exported here, where artifacts have always found them
from gnomon.util.files import ArtifactError, atomic_path, atomic_write_bytes  # noqa: F401

SCHEMA_VERSION = 2  # 2: trace.npz 'theta' is base θ, 'z' the θ-map rows (1 stored z as theta)
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def to_jsonable(x: Any) -> Any:
    """Plain-JSON form of ``x``: dicts, lists, str, int, float (non-finite as strings), bool, None."""
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "Infinity" if f > 0 else "-Infinity"
        return f
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "__array__") or hasattr(x, "shape"):
        arr = np.asarray(x)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return to_jsonable(arr.tolist())
    raise TypeError(f"cannot store {type(x).__name__} {x!r} in JSON")


def from_jsonable(x: Any) -> Any:
    """Inverse of the non-finite encoding of :func:`to_jsonable`."""
    if isinstance(x, dict):
        return {k: from_jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [from_jsonable(v) for v in x]
    if isinstance(x, str) and x in _NONFINITE:
        return _NONFINITE[x]
    return x


def _default(x: Any) -> Any:
    """``json.dumps`` fallback for what the C encoder does not know (numpy scalars and arrays, paths)."""
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "__array__") or hasattr(x, "shape"):
        arr = np.asarray(x)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    raise TypeError(f"cannot store {type(x).__name__} {x!r} in JSON")


_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, default=_default)  # built once, not per call
_line = _ENCODER.encode
_string = json.encoder.encode_basestring  # the C escaper (ensure_ascii=False)
_NONFINITE_TEXT = {math.inf: '"Infinity"', -math.inf: '"-Infinity"'}


def _value(v: Any) -> str:
    """JSON text of one top-level value: plain scalars by hand (most of a summary), the rest by the encoder."""
    t = type(v)
    if t is float:
        return float.__repr__(v) if v - v == 0.0 else (_NONFINITE_TEXT.get(v, '"NaN"'))
    if t is str:
        return _string(v)
    if t is int:
        return int.__repr__(v)
    if t is bool:
        return "true" if v else "false"
    if v is None:
        return "null"
    try:
        return _line(v)
    except (ValueError, TypeError):  # NaN/inf inside (written as strings), keys the encoder refuses, mappings...
        return _line(to_jsonable(v))


def encode_json(obj: Mapping[str, Any], *, schema_version: int = SCHEMA_VERSION) -> bytes:
    """The bytes gnomon writes for a JSON artifact: ``schema_version`` first, one top-level key per line.

    Nested values are written on their key's line by the C encoder (an indented dump runs the pure-Python
    encoder, several times slower; summary.json is flat, so it reads as before). Non-finite floats, numpy
    values and other non-JSON types go through :func:`to_jsonable` (only when the fast path meets one)."""
    lines = [f' "schema_version": {int(schema_version)}']
    lines += [f" {_string(str(k))}: {_value(v)}" for k, v in obj.items() if k != "schema_version"]
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def write_json(path: str | os.PathLike, obj: Mapping[str, Any], *, schema_version: int = SCHEMA_VERSION,
               fsync: bool = False) -> None:
    """Atomically write ``obj`` (with ``schema_version`` first) as JSON, one top-level key per line
    (:func:`encode_json`)."""
    atomic_write_bytes(path, encode_json(obj, schema_version=schema_version), fsync=fsync)


class NewerSchemaError(ArtifactError):
    """An artifact was written by a newer gnomon (its ``schema_version`` is above what this one reads)."""


def describe_json_error(exc: json.JSONDecodeError) -> str:
    """``"Expecting value at line 1, column 5"`` (Python's own message reads "... starting at: line ...")."""
    msg = exc.msg.rstrip(": ")
    where = f"line {exc.lineno}, column {exc.colno}"
    return f"{msg} {where}" if msg.endswith(" at") else f"{msg} at {where}"


def parse_json_doc(raw: bytes | str, path: str | os.PathLike, *, max_schema: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON object in ``raw`` (the bytes of ``path``), checked to be a gnomon artifact this gnomon reads.

    Non-finite markers are left as strings (callers that need floats apply :func:`from_jsonable`). Raises
    :class:`ArtifactError` naming ``path`` (:class:`NewerSchemaError` for a newer ``schema_version``)."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON, truncated or corrupt ({describe_json_error(exc)})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON, truncated or corrupt ({exc})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    version = obj.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactError(f"{path}: no integer schema_version (found {version!r}); not a gnomon artifact?")
    if version > max_schema:
        raise NewerSchemaError(
            f"{path}: schema_version {version} is newer than this gnomon reads (≤ {max_schema}); "
            "upgrade gnomon to read it"
        )
    return obj


def read_json_raw(path: str | os.PathLike, *, max_schema: int = SCHEMA_VERSION) -> dict[str, Any]:
    """:func:`parse_json_doc` of the file ``path``; FileNotFoundError when it does not exist."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory, expected a JSON file") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_json_doc(raw, path, max_schema=max_schema)


def read_json(path: str | os.PathLike, *, max_schema: int = SCHEMA_VERSION) -> dict[str, Any]:
    """Read a gnomon JSON artifact; :class:`ArtifactError` naming the file when it cannot be used."""
    try:
        obj = read_json_raw(path, max_schema=max_schema)
    except FileNotFoundError:
        raise ArtifactError(f"{Path(path)}: file is missing") from None
    return from_jsonable(obj)
