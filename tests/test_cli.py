"""``gnomon show | plot | aggregate``: output, files, exit codes, one-line errors without traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import gnomon as gn
from gnomon.interface.cli import main
from gnomon.recipes import astrometry as A

PNG = b"\x89PNG\r\n\x1a\n"


def _layout():
    return gn.Layout(
        {A.X: (), A.SEP: (), A.PLATE: (), A.ZERN: (8,)},
        units={A.X: "arcsec", A.SEP: "arcsec", A.PLATE: "arcsec/pix", A.ZERN: "nm"},
    )


TRUTH = {A.X: 0.1, A.SEP: 9.5, A.PLATE: 0.355, A.ZERN: [1.0] * 8}


def _trace(seed=0, T=20):
    rng = np.random.default_rng(seed)
    th = np.concatenate([[0.1, 9.5, 0.355], np.ones(8)])
    decay = np.exp(-np.arange(T) / 4.0)[:, None]
    theta = th + decay * np.array([1e-5, 1e-5, 1e-6] + [0.3] * 8) * rng.normal(size=(1, 11))
    return gn.Trace(
        kind="optimization",
        theta=theta,
        loss=1.0 + 50 * decay[:, 0],
        step=np.arange(T),
        status="converged",
        layout=_layout(),
    )


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    exp = gn.Experiment(root / "exp", manifest={"description": "cli test", "sweep": {"seed": [0, 1]}})
    for i in range(2):
        exp.save(f"fit-{i}", _trace(i), _layout(), meta={"seed": i, "truth": TRUTH})
    (exp.runs_dir / "crashed").mkdir()  # an incomplete run
    return root / "exp"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, *needles):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


def test_show_run(capsys, experiment):
    code, out, err = _run(capsys, "show", str(experiment / "runs" / "fit-0"))
    assert code == 0 and err == ""
    assert "run fit-0" in out and "status: converged" in out
    assert "final_loss" in out and "seed=0" in out
    final_x = np.asarray(_trace(0).theta)[-1, 0]
    assert A.X in out and f"{final_x:.8g}" in out and "arcsec" in out


def test_show_experiment(capsys, experiment):
    code, out, err = _run(capsys, "show", str(experiment))
    assert code == 0
    assert "description: cli test" in out
    assert "runs: 2 complete, 1 incomplete" in out and "incomplete crashed" in out
    assert "fit-0" in out and "fit-1" in out and "final_loss" in out
    assert "status: converged 2" in out


def test_plot_default_signals_and_recipe(capsys, experiment, tmp_path):
    run = experiment / "runs" / "fit-0"
    code, out, _ = _run(capsys, "plot", str(run), "-o", str(tmp_path / "all.png"))
    assert code == 0 and out.strip() == f"wrote {tmp_path / 'all.png'}"
    assert (tmp_path / "all.png").read_bytes()[:8] == PNG
    code, _, _ = _run(
        capsys,
        "plot",
        str(run),
        "-o",
        str(tmp_path / "some.pdf"),
        "--signals",
        "loss",
        A.ZERN,
        "--mode",
        "hybrid",
    )
    assert code == 0 and (tmp_path / "some.pdf").read_bytes()[:4] == b"%PDF"
    code, _, _ = _run(capsys, "plot", str(run), "-o", str(tmp_path / "astro.png"), "--recipe", "astrometry")
    assert code == 0 and (tmp_path / "astro.png").stat().st_size > 10_000


def test_plot_errors(capsys, experiment, tmp_path):
    run = str(experiment / "runs" / "fit-0")
    code, _, err = _run(capsys, "plot", run, "-o", str(tmp_path / "x.png"), "--signals", "nope")
    _one_line_error(code, err, "gnomon plot: error", "unknown signal", "nope")
    code, _, err = _run(capsys, "plot", run, "-o", str(tmp_path / "x.png"), "--recipe", "nope")
    _one_line_error(code, err, "unknown recipe")
    code, _, err = _run(capsys, "plot", run, "-o", str(tmp_path / "x.txt"))
    _one_line_error(code, err, "x.txt", ".png")
    code, _, err = _run(capsys, "plot", str(experiment), "-o", str(tmp_path / "x.png"))
    _one_line_error(code, err, "experiment")
    assert not (tmp_path / "x.png").exists()


def test_aggregate(capsys, experiment, tmp_path):
    import pandas as pd

    out_csv = tmp_path / "table.csv"
    code, out, err = _run(
        capsys, "aggregate", str(experiment), "-o", str(out_csv), "--meta-keys", "user.seed"
    )
    assert code == 0 and "wrote 2 runs" in out and "crashed" in err
    df = pd.read_csv(out_csv)
    assert list(df["run_id"]) == ["fit-0", "fit-1"] and list(df["user.seed"]) == [0, 1]
    np.testing.assert_allclose(df["final_loss"], [float(_trace(i).loss[-1]) for i in range(2)])
    code, _, err = _run(capsys, "aggregate", str(experiment), "-o", str(tmp_path / "t.xlsx"))
    _one_line_error(code, err, ".parquet", ".csv")
    code, _, err = _run(capsys, "aggregate", str(experiment / "runs" / "fit-0"), "-o", str(out_csv))
    _one_line_error(code, err, "run directory")


@pytest.mark.parametrize("command", ["show", "plot", "aggregate"])
def test_missing_directory(capsys, tmp_path, command):
    extra = ["-o", str(tmp_path / ("x.png" if command == "plot" else "x.csv"))] if command != "show" else []
    code, _, err = _run(capsys, command, str(tmp_path / "nowhere"), *extra)
    _one_line_error(code, err, f"gnomon {command}: error", "nowhere", "no such directory")


def test_corrupt_and_foreign_directories(capsys, experiment, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(experiment / "runs" / "fit-1", bad)
    (bad / "trace.npz").write_bytes((bad / "trace.npz").read_bytes()[:100])  # truncated
    code, _, err = _run(capsys, "plot", str(bad), "-o", str(tmp_path / "x.png"))
    _one_line_error(code, err, "trace.npz", "corrupt")
    (bad / "meta.json").write_text("{not json")
    code, _, err = _run(capsys, "show", str(bad))
    _one_line_error(code, err, "meta.json", "not valid JSON")
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "show", str(tmp_path / "empty"))
    _one_line_error(code, err, "neither a run directory")
    (tmp_path / "file.txt").write_text("x")
    code, _, err = _run(capsys, "show", str(tmp_path / "file.txt"))
    _one_line_error(code, err, "not a directory")


def test_entry_point_prints_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "gnomon", "show", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"gnomon show: error: {tmp_path / 'missing'}: no such directory"
    assert proc.stdout == ""
