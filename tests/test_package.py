"""Package-level checks: light import, lazy public names, the console entry points."""

import subprocess
import sys
from pathlib import Path

# the console script installed beside this interpreter (CI runs without an activated virtualenv)
GNOMON = str(Path(sys.executable).parent / "gnomon")

HEAVY = ("arviz", "arviz_base", "matplotlib", "blackjax", "numpyro", "pyarrow", "pandas", "dask", "tqdm")


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_gnomon_is_light():
    out = _run(
        "import sys, gnomon, gnomon.trace.trace, gnomon.optim.simple_gd, gnomon.io.run;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    assert out.strip() == "[]"


def test_public_names_resolve():
    import gnomon as gn

    for name in ("Layout", "Objective", "Trace", "run_simple_gd", "save_run", "load_run", "ArtifactError"):
        assert getattr(gn, name) is not None
    try:
        gn.not_a_name  # noqa: B018
    except AttributeError as exc:
        assert "not_a_name" in str(exc)
    else:
        raise AssertionError("unknown attribute should raise")


def test_console_entry_points():
    for cmd in ([sys.executable, "-m", "gnomon", "--version"], [GNOMON, "--version"]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout.strip() == "0.1.0"
    res = subprocess.run([GNOMON, "show", "/nonexistent/run"], capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" not in res.stderr
