"""An experiment's ``manifest.json``: built once, created atomically by the first writer, read with upgrades.

The manifest records the settings of an experiment (``description``, ``sweep``, ``time_series``, ``datasets``
and any other JSON-able keys) plus what gnomon sets itself (``schema_version``, ``kind``, ``created_utc``,
``gnomon_version``). It is written once and never rewritten:

* :func:`manifest_doc` validates the user's keys and builds the document;
* :func:`create_manifest` creates the file iff it does not exist, atomically (a hard ``link`` of a written
  temporary file: the first creator wins, the others read what it wrote);
* :func:`read_manifest` reads it, upgrading an older schema version in memory through
  ``_MANIFEST_UPGRADES`` and refusing a newer one;
* :func:`check_manifest_agrees` refuses settings that differ from the stored ones.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gnomon.io.jsonio import ArtifactError, read_json, to_jsonable
from gnomon.io.provenance import package_versions

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_KIND",
    "MANIFEST_SCHEMA_VERSION",
    "check_manifest_agrees",
    "create_manifest",
    "manifest_doc",
    "read_manifest",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
MANIFEST_KIND = "gnomon.experiment"
# Upgrades of older manifests, applied in order on read: {old_version: fn(doc) -> doc of old_version + 1}.
_MANIFEST_UPGRADES: dict[int, Callable[[dict], dict]] = {}
_MANIFEST_RESERVED = ("schema_version", "kind", "created_utc", "gnomon_version")
_MANIFEST_STANDARD = ("description", "sweep", "time_series", "datasets")


def manifest_doc(manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    """The manifest document for the user's settings ``manifest`` (ValueError if a key is reserved or a value
    is not JSON-able): the standard keys first, then gnomon's, then the user's others."""
    manifest = dict(manifest or {})
    bad = [k for k in manifest if k in _MANIFEST_RESERVED]
    if bad:
        raise ValueError(f"manifest keys {bad} are set by gnomon; leave them out")
    try:
        user = to_jsonable(manifest)
    except TypeError as exc:
        raise ValueError(f"manifest must be JSON-able: {exc}") from None
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "kind": MANIFEST_KIND,
        **{k: user.pop(k, None) for k in _MANIFEST_STANDARD},
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "gnomon_version": package_versions().get("gnomon"),
        **user,
    }


def create_manifest(path: Path, doc: Mapping[str, Any]) -> bool:
    """Write ``doc`` to ``path`` iff the file does not exist yet, atomically; True if this call created it."""
    return _create_exclusive(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` iff it does not exist, atomically; True if this call created it."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # readable like any file (umask applies)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            os.link(tmp, path)  # atomic: fails if path exists; readers never see a partial file
            return True
        except FileExistsError:
            return False
        except OSError:  # filesystems without hard links: exclusive create (readers retry a partial read)
            try:
                fd2 = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd2, "w", encoding="utf-8") as fh:
                fh.write(text)
            return True
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def read_manifest(path: str | os.PathLike, *, retries: int = 5) -> dict[str, Any]:
    """Read ``manifest.json``: older schema versions are upgraded, newer ones refused (ArtifactError)."""
    path = Path(path)
    for attempt in range(retries + 1):
        try:
            doc = read_json(path, max_schema=MANIFEST_SCHEMA_VERSION)
            break
        except ArtifactError as exc:
            if "newer" in str(exc) or "missing" in str(exc) or attempt == retries:
                raise
            time.sleep(0.02 * (attempt + 1))  # a creator without hard links may be mid-write
    if doc.get("kind", MANIFEST_KIND) != MANIFEST_KIND:
        raise ArtifactError(f"{path}: not a gnomon experiment manifest (kind {doc.get('kind')!r})")
    version = doc["schema_version"]
    while version < MANIFEST_SCHEMA_VERSION:
        upgrade = _MANIFEST_UPGRADES.get(version)
        if upgrade is not None:
            doc = upgrade(doc)
        version += 1
    doc["schema_version"] = MANIFEST_SCHEMA_VERSION
    return doc


def check_manifest_agrees(path: Path, stored: Mapping[str, Any] | None, manifest: Mapping[str, Any]) -> None:
    """Raise ValueError unless every key of ``manifest`` has its value in the ``stored`` manifest (of file
    ``path``): an existing experiment is never given other settings."""
    stored = stored or {}
    for key, value in to_jsonable(dict(manifest)).items():
        if stored.get(key) != value:
            raise ValueError(
                f"{path}: this experiment already exists with "
                f"{key}={stored.get(key)!r}, "
                f"not {value!r}; open it with manifest=None or use another directory"
            )
