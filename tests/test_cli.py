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
    code, _, err = _run(capsys, "plot", run, "-o", str(tmp_path / "x.png"), "--x", "epoch")
    _one_line_error(code, err, "--x only go with --campaign")
    (tmp_path / "adir.png").mkdir()  # an output path that is a directory: one line, not a traceback
    code, _, err = _run(capsys, "plot", run, "-o", str(tmp_path / "adir.png"))
    _one_line_error(code, err, "adir.png")
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


def test_show_and_aggregate_print_parameters_with_their_uncertainty(capsys, tmp_path):
    lay = gn.Layout({"sep": (), "v": (2,)}, units={"sep": "arcsec", "v": "nm"})
    rng = np.random.default_rng(0)
    draws = np.concatenate([0.120212 + 0.0004 * rng.standard_normal((2, 400, 1)),
                            rng.standard_normal((2, 400, 2))], axis=-1)
    post = gn.Trace(kind="sampling", theta=draws, log_prob=rng.normal(size=(2, 400)), status="sampled", layout=lay)
    exp = gn.Experiment(tmp_path / "e")
    exp.save("nuts", post, crlb={"sep": 0.00041, "v": [1.0, 1.0]}, truth={"sep": 0.1202, "v": [0.0, 0.0]},
             summary={"my_score": 1.5})
    code, out, _ = _run(capsys, "show", str(exp.run_dir("nuts")))
    assert code == 0
    from gnomon.util.format import format_uncertain

    flat = draws[..., 0].ravel()
    want = format_uncertain(flat.mean(), flat.std(ddof=1))
    assert want.startswith("0.120") and want.count("±") == 1 and len(want.split(" ± ")[1]) == 7  # 0.000xx
    row = next(line for line in out.splitlines() if line.strip().startswith("sep "))
    assert want in row and "arcsec" in row
    import arviz_stats as azs

    ess = float(azs.ess(draws[..., :1], chain_axis=0, draw_axis=1, method="bulk")[0])
    assert f"{ess:.0f}" in row.split()  # ESS bulk of the parameter
    assert "ESS bulk" in out and "R-hat" in out
    assert "written_utc_unix" in out and "e+09" not in out and "T" in out.split("written_utc_unix")[1][:30]
    assert "user summary:" in out and "my_score" in out.split("user summary:")[1]
    code, out, _ = _run(capsys, "show", str(exp.path))
    assert code == 0 and "min_ess_bulk" in out and "max_rhat" in out and "my_score" in out
    code, out, err = _run(capsys, "aggregate", str(exp.path))
    assert code == 0 and "nuts" in out and "1 runs" in out and "estimate.sep" not in out
    code, out, err = _run(capsys, "aggregate", str(exp.path), "--params", "sep")
    assert code == 0 and "estimate.sep" in out and "crlb.sep" in out and "z.sep" in out and "estimate.v" not in out


def test_plot_signals_texts_do_not_overlap(capsys, experiment, tmp_path, monkeypatch):
    """`gnomon plot --signals`: the suptitle and the y-labels of every panel stay apart (1 and 5 panels)."""
    from matplotlib.figure import Figure

    from gnomon.plot._mpl import text_overlaps

    figs = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figs.append(self), real(self, *a, **k))[1])
    run = str(experiment / "runs" / "fit-0")
    for names in (["loss"], ["loss", A.X, A.SEP, A.PLATE, A.ZERN]):
        assert _run(capsys, "plot", run, "-o", str(tmp_path / "s.png"), "--signals", *names)[0] == 0
    assert len(figs) == 2
    for fig in figs:
        assert text_overlaps(fig) == [], fig.get_suptitle()


def test_show_names_a_kept_transport_map_and_says_none_otherwise():
    """Found by a new user: `gnomon show`'s engine line dropped a kept transport map (a dict) and printed
    'transport=None' for a refused one."""
    from gnomon.interface.commands import _engine_with_transport, _scalars

    kept = {"kernel": "nuts", "transport": {"type": "affine autoregressive", "hash": "97086fe734a65670", "dim": 3}}
    assert _scalars(_engine_with_transport(kept))["transport"] == "affine autoregressive 97086fe7"
    assert _scalars(_engine_with_transport({"kernel": "nuts", "transport": None}))["transport"] == "none"
    assert "transport" not in _engine_with_transport({"kernel": "nuts"})


def test_show_and_aggregate_a_folder_of_run_directories(capsys, tmp_path):
    """``gn.save_run`` into ``folder/<run>`` without an experiment: ``show`` and ``aggregate`` list the runs (a
    corrupt one is named; a folder of figures beside them is neither a run nor a problem)."""
    import pandas as pd

    folder = tmp_path / "fits"
    for i in range(3):
        gn.save_run(folder / f"fit-{i}", _trace(i))
    (folder / "figs").mkdir()
    (folder / "figs" / "a.png").write_bytes(PNG)
    (folder / "fit-2" / "summary.json").write_text("{truncated")
    code, out, err = _run(capsys, "show", str(folder))
    assert code == 0, err
    assert "folder of runs" in out and "runs: 2 complete, 0 incomplete, 1 corrupt" in out
    assert "corrupt fit-2" in out and "figs" not in out
    assert "fit-0" in out and "fit-1" in out and "status: converged 2" in out
    table = tmp_path / "t.csv"
    code, out, err = _run(capsys, "aggregate", str(folder), "-o", str(table))
    assert code == 0 and "wrote 2 runs" in out
    assert "fit-2" in err and "figs" not in err
    df = pd.read_csv(table)
    np.testing.assert_allclose(df["final_loss"], [float(_trace(i).loss[-1]) for i in range(2)])
