"""``gnomon plot`` with a recipe on the user's own names (issue 21): ``--recipe NAME --map ROLE=NAME``."""

from __future__ import annotations

import numpy as np
import pytest

import gnomon as gn
from gnomon.interface.cli import main
from gnomon.interface.commands import _role_map

LAYOUT = gn.Layout({"sep": (), "pa": (), "w": ()}, units={"sep": "µas", "pa": "deg", "w": "nm"})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    t = np.arange(30)
    truth = np.array([9.5e6, 80.0, 1.0])
    theta = truth + np.exp(-t / 5.0)[:, None] * [2000.0, 0.01, 0.5] + np.cos(t)[:, None] * [5.0, 1e-6, 0.001]
    tr = gn.Trace(kind="optimization", theta=theta, loss=1 + 100 * np.exp(-t / 5.0), step=t, layout=LAYOUT,
                  status="converged")
    path = tmp_path_factory.mktemp("plotcli") / "run"
    gn.save_run(path, tr, crlb={"sep": 38.0, "pa": 1e-5, "w": 0.01},
                truth={"sep": truth[0], "pa": truth[1], "w": truth[2]})
    return path


def test_recipe_on_the_users_names_from_the_command_line(run_dir, tmp_path, capsys):
    out = tmp_path / "astro.png"
    # without a map the recipe finds none of its roles: refused, and told how to map them
    assert main(["plot", str(run_dir), "--recipe", "astrometry", "-o", str(out)]) == 1
    assert "--map separation=" in capsys.readouterr().err
    code = main(["plot", str(run_dir), "--recipe", "astrometry", "--map", "separation=sep", "--map",
                 "position_angle=pa", "-o", str(out)])
    cap = capsys.readouterr()
    assert code == 0 and out.read_bytes()[:4] == b"\x89PNG"
    notes = [ln for ln in cap.err.splitlines() if ln.startswith("gnomon plot: note: ")]
    assert len(notes) == 1 and "['position', 'log_flux', 'contrast', 'plate_scale', 'zernikes']" in notes[0]


@pytest.mark.parametrize("argv, message", [
    (["--map", "separation=sep"], "give it with --recipe"),
    (["--recipe", "astrometry", "--map", "separation"], "expected ROLE=NAME"),
    (["--recipe", "astrometry", "--map", "separation=sep", "--map", "separation=pa"], "mapped twice"),
    (["--recipe", "astrometry", "--map", "sepration=sep"], "unknown astrometry role"),
    (["--recipe", "astrometry", "--map", "separation=nope"], "roles['separation'] names ['nope']"),
])
def test_bad_maps_are_refused_by_name(run_dir, tmp_path, capsys, argv, message):
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "x.png"), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gnomon plot: error: ") and message in err


def test_role_map_parsing():
    assert _role_map(["position=x,y", " separation = sep "]) == {"position": "x,y", "separation": "sep"}
    assert _role_map(None) == {}
