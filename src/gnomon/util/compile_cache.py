"""JAX's persistent compilation cache, opt-in for the library and on by default in the CLI and the demo.

Compilation dominates the first call of a fit on a forward model (tens of seconds against under a second of
running). JAX can keep compiled programs on disk, keyed by the program and the compiler, so that a second
process running the same program (the same objective and settings, shapes and dtypes) loads it instead of
compiling it again. :func:`enable_compilation_cache` switches that on for this process::

    import gnomon as gn
    gn.enable_compilation_cache()          # ~/.cache/gnomon/jax (or $GNOMON_CACHE_DIR, $XDG_CACHE_HOME/gnomon/jax)

The library never enables it on import (it writes to disk); ``gnomon demo`` and the ``gnomon`` command do,
unless ``--no-compile-cache`` is given. :func:`disable_compilation_cache` switches it off again.

Entries are written for programs that took at least ``min_compile_time_s`` to compile (default 0.5 s: smaller
ones are cheaper to recompile than to read back), of any size. The cache directory grows with every new
program; delete it to reclaim the space.
"""

from __future__ import annotations

import os
from pathlib import Path

#: seconds a program must take to compile before it is written to the cache
DEFAULT_MIN_COMPILE_TIME_S = 0.5


def default_cache_dir() -> Path:
    """``$GNOMON_CACHE_DIR``, else ``$XDG_CACHE_HOME/gnomon/jax``, else ``~/.cache/gnomon/jax``."""
    env = os.environ.get("GNOMON_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gnomon" / "jax"


def _reset() -> None:
    """Make JAX re-read its cache settings (a process that compiled before has decided already)."""
    try:
        from jax.experimental.compilation_cache import compilation_cache as cc

        cc.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - older/newer JAX without reset_cache
        pass


def enable_compilation_cache(
    path: str | os.PathLike | None = None,
    *,
    min_compile_time_s: float = DEFAULT_MIN_COMPILE_TIME_S,
    min_entry_size_bytes: int = -1,
) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default :func:`default_cache_dir`, created if
    missing) for this process; return the directory.

    Sets ``jax_compilation_cache_dir``, ``jax_persistent_cache_min_compile_time_secs`` (``min_compile_time_s``)
    and ``jax_persistent_cache_min_entry_size_bytes`` (``min_entry_size_bytes``; -1: no size limit). A second
    process that enables the same directory and compiles the same program reads it from there. Raises
    ValueError for a negative threshold and OSError when the directory cannot be created."""
    if not min_compile_time_s >= 0:
        raise ValueError(f"min_compile_time_s must be ≥ 0, got {min_compile_time_s!r}")
    if not isinstance(min_entry_size_bytes, int) or min_entry_size_bytes < -1:
        raise ValueError(f"min_entry_size_bytes must be an int ≥ -1, got {min_entry_size_bytes!r}")
    import jax

    where = Path(path).expanduser() if path is not None else default_cache_dir()
    where.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(where))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
    _reset()
    return where


def disable_compilation_cache() -> None:
    """Turn JAX's persistent compilation cache off for this process (the files stay on disk)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", None)
    _reset()


def compilation_cache_dir() -> Path | None:
    """The directory JAX's persistent compilation cache uses in this process, or None when it is off."""
    import jax

    value = jax.config.jax_compilation_cache_dir
    return Path(value) if value else None


__all__ = [
    "enable_compilation_cache",
    "disable_compilation_cache",
    "compilation_cache_dir",
    "default_cache_dir",
    "DEFAULT_MIN_COMPILE_TIME_S",
]
