"""JAX's persistent compilation cache: the library opt-in, its settings, and a second process that reuses it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import gnomon as gn
from gnomon.util.compile_cache import compilation_cache_dir, default_cache_dir

SECOND = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    from jax import monitoring
    import gnomon as gn
    hits = []
    monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
    gn.enable_compilation_cache(sys.argv[1], min_compile_time_s=0.0)
    f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 0.123456)
    f(jnp.ones((7, 5))).block_until_ready()
    print(len(hits))
    """
)


@pytest.fixture
def restore_cache():
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs,
              jax.config.jax_persistent_cache_min_entry_size_bytes)
    yield
    gn.disable_compilation_cache()
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", before[2])


def test_settings_are_set_and_unset(tmp_path, monkeypatch, restore_cache):
    where = gn.enable_compilation_cache(tmp_path / "c", min_compile_time_s=2.0)
    assert where == tmp_path / "c" and where.is_dir() and compilation_cache_dir() == where
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1
    gn.disable_compilation_cache()
    assert compilation_cache_dir() is None
    monkeypatch.setenv("GNOMON_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("GNOMON_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "gnomon" / "jax"
    with pytest.raises(ValueError, match="min_compile_time_s"):
        gn.enable_compilation_cache(tmp_path, min_compile_time_s=-1)


def test_a_second_process_reuses_the_compiled_program(tmp_path, restore_cache):
    cache = tmp_path / "cache"
    gn.enable_compilation_cache(cache, min_compile_time_s=0.0)
    f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 0.123456)  # the same program as SECOND's
    f(jnp.ones((7, 5))).block_until_ready()
    gn.disable_compilation_cache()
    assert any(cache.iterdir()), "nothing was written to the cache"
    env = {**os.environ, "PYTHONPATH": str(Path(gn.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", SECOND, str(cache)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) >= 1  # a cache hit: loaded, not compiled


def test_cli_turns_it_on_unless_asked_not_to(tmp_path, monkeypatch, restore_cache, capsys):
    from gnomon.interface.cli import main

    monkeypatch.setenv("GNOMON_CACHE_DIR", str(tmp_path / "cli-cache"))
    gn.disable_compilation_cache()
    assert main(["plot", str(tmp_path / "missing"), "-o", str(tmp_path / "x.png"), "--no-compile-cache"]) == 1
    assert compilation_cache_dir() is None
    assert main(["plot", str(tmp_path / "missing"), "-o", str(tmp_path / "x.png")]) == 1
    assert compilation_cache_dir() == tmp_path / "cli-cache"
    capsys.readouterr()
