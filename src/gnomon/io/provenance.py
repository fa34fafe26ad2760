"""Provenance for ``meta.json``: package versions, platform, git hash of the caller's repository.

Each is computed once per process (a campaign writing 10,000 runs must not run ``git`` 10,000 times).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata

_PACKAGES = ("gnomon", "jax", "jaxlib", "optax", "blackjax", "numpyro", "numpy", "arviz")


@functools.cache
def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def platform_info() -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "system": platform.system(),
        "machine": platform.machine(),
        "node": platform.node(),
    }


@functools.cache
def _git_hash(cwd: str) -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    h = res.stdout.strip()
    try:
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True,
            text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return h + ("-dirty" if dirty else "")


def git_hash() -> str | None:
    """HEAD of the git repository containing the current directory (``-dirty`` if modified), or None."""
    return _git_hash(os.getcwd())
