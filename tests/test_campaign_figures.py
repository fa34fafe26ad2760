"""Campaign figures (issue 13): an epoch time series per parameter and z against N(0, 1), from the table."""

import math

import numpy as np
import pytest

import gnomon as gn
from gnomon.interface.cli import main
from gnomon.plot import normal_ks

LAYOUT = gn.Layout({"sep": (), "pa": ()}, units={"sep": "µas", "pa": "deg"})
CRLB = {"sep": 50.0, "pa": 0.01}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """20 epochs: the truth moves, each MAP scatters about it by its CRLB."""
    rng = np.random.default_rng(11)
    exp = gn.Experiment(tmp_path_factory.mktemp("camp") / "exp")
    rows = []
    for e in rng.permutation(20):  # written out of epoch order
        truth = np.array([9.5e6 + 100.0 * e, 80.0 + 0.02 * e])
        est = truth + rng.normal(size=2) * [CRLB["sep"], CRLB["pa"]]
        theta = np.stack([est + 5.0, est + 1.0, est])  # the last row is the best (MAP)
        tr = gn.Trace(kind="optimization", theta=theta, loss=np.array([3.0, 2.0, 1.0]), step=np.arange(3),
                      status="converged", layout=LAYOUT)
        exp.save(f"epoch-{e:02d}", tr, meta={"epoch": float(e)}, crlb=CRLB, truth={"sep": truth[0], "pa": truth[1]})
        rows.append((e, est, truth))
    rows.sort(key=lambda r: r[0])
    return exp, rows


def _points(ax):
    """(x, y, yerr) of the errorbar container of a panel."""
    cont = ax.containers[0]
    line = cont.lines[0]
    seg = np.asarray(cont.lines[2][0].get_segments())
    return line.get_xdata(), line.get_ydata(), (seg[:, 1, 1] - seg[:, 0, 1]) / 2


def test_epoch_time_series_straight_from_the_table(series):
    from gnomon.plot._mpl import text_overlaps

    exp, rows = series
    fig = gn.plot.campaign(exp, x="user.epoch")
    ax_sep, ax_pa = fig.axes[:2]
    x, y, err = _points(ax_sep)
    np.testing.assert_array_equal(x, np.arange(20.0))
    np.testing.assert_allclose(y, [r[1][0] for r in rows])
    np.testing.assert_allclose(err, CRLB["sep"])
    truth_line = next(ln for ln in ax_sep.get_lines() if ln.get_label() == "truth")
    np.testing.assert_allclose(truth_line.get_ydata(), [r[2][0] for r in rows])
    assert ax_sep.get_ylabel() == "sep [µas]" and ax_pa.get_ylabel() == "pa [deg]"
    assert "rms z" in ax_sep.get_title() and "over 20 runs" in ax_sep.get_title()
    assert text_overlaps(fig) == []
    res = gn.plot.campaign(exp, "pa", x="user.epoch", residual=True)
    np.testing.assert_allclose(_points(res.axes[0])[1], [r[1][1] - r[2][1] for r in rows], atol=1e-9)
    assert res.axes[0].get_ylabel() == "pa − truth [deg]"
    with pytest.raises(ValueError, match="no column 'nope'"):
        gn.plot.campaign(exp.aggregate(params=True), x="nope")


def test_z_distribution_against_the_standard_normal(series):
    exp, rows = series
    z = np.array([[(r[1][k] - r[2][k]) / [CRLB["sep"], CRLB["pa"]][k] for k in range(2)] for r in rows])
    fig = gn.plot.z_distribution(exp)
    ax = fig.axes[0]
    d, p = normal_ks(z)
    assert "n 40" in ax.get_title() and f"KS D {d:.4g}" in ax.get_title() and f"p {p:.4g}" in ax.get_title()
    heights = np.array([b.get_height() * b.get_width() for b in ax.patches])
    assert heights.sum() == pytest.approx(1.0)  # a density histogram of all 40 z
    per = gn.plot.z_distribution(exp, per_parameter=True)
    assert [a.get_title().split(":")[0] for a in per.axes] == ["sep", "pa"]


def test_normal_ks_by_definition():
    rng = np.random.default_rng(0)
    z = rng.normal(size=200)
    d, p = normal_ks(z)
    s = np.sort(z)
    phi = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in s])
    i = np.arange(1, s.size + 1)
    assert d == pytest.approx(max((i / s.size - phi).max(), (phi - (i - 1) / s.size).max()))
    assert p > 0.05  # N(0, 1) draws pass
    assert normal_ks(z + 1.0)[1] < 1e-6 and normal_ks(1.5 * z)[1] < 0.01  # biased or overdispersed fail
    assert all(math.isnan(v) for v in normal_ks([np.nan, np.nan]))  # an empty sample


def test_cli_plot_campaign(series, tmp_path, capsys):
    exp, _ = series
    out = tmp_path / "camp.png"
    assert main(["plot", str(exp.path), "--campaign", "-o", str(out), "--x", "user.epoch"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(out) in printed and str(tmp_path / "camp-z.png") in printed
    assert out.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "camp-z.png").stat().st_size > 5000
    assert main(["plot", str(exp.run_dir("epoch-00")), "--campaign", "-o", str(out)]) == 1


# ---------------------------------------------------------------------------------------------- issue 21
def test_campaign_draws_derived_names_readable_keys_and_no_offset_text(tmp_path):
    """A derived quantity with estimate/sd/crlb/truth/z keys in summary.json (written here by hand, as
    save_run writes them for gn.cramer_rao(..., derived=...)) is a panel and a z like any named parameter;
    the epoch axis reads 'epoch', not 'user.epoch'; tick labels are absolute (no offset text)."""
    import json

    rng = np.random.default_rng(2)
    exp = gn.Experiment(tmp_path / "exp")
    dm = []
    for e in range(8):
        truth = np.array([9.5e6 + 100.0 * e, 80.0 + 0.02 * e])
        est = truth + rng.normal(size=2) * [CRLB["sep"], CRLB["pa"]]
        tr = gn.Trace(kind="optimization", theta=est[None], loss=np.ones(1), step=np.arange(1), status="converged",
                      layout=LAYOUT)
        run = exp.save(f"e{e}", tr, meta={"epoch": 2020.0 + 0.25 * e}, crlb=CRLB,
                       truth={"sep": truth[0], "pa": truth[1]})
        path = run / "summary.json"
        summary = json.loads(path.read_text())
        est_dm, truth_dm = 1.2 + 0.01 * rng.normal(), 1.2
        summary.update({"estimate.dm": est_dm, "sd.dm": 0.01, "crlb.dm": 0.01, "truth.dm": truth_dm,
                        "z.dm": (est_dm - truth_dm) / 0.01})
        path.write_text(json.dumps(summary))
        dm.append((2020.0 + 0.25 * e, est_dm, (est_dm - truth_dm) / 0.01))
    fig = gn.plot.campaign(exp, x="user.epoch", units={"dm": "mag"})
    fig.canvas.draw()
    titles = [ax.get_title().split(":")[0] for ax in fig.axes]
    assert titles == ["sep", "pa", "dm"]
    ax_dm = fig.axes[2]
    x, y, err = _points(ax_dm)
    np.testing.assert_allclose(x, [d[0] for d in dm])
    np.testing.assert_allclose(y, [d[1] for d in dm])
    np.testing.assert_allclose(err, 0.01)
    assert ax_dm.get_ylabel() == "dm [mag]" and ax_dm.get_xlabel() == "epoch"
    for ax in fig.axes:
        assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
    z = gn.plot.z_distribution(exp, "dm")
    assert f"n {len(dm)}" in z.axes[0].get_title()
    per = gn.plot.z_distribution(exp, per_parameter=True)
    assert [a.get_title().split(":")[0] for a in per.axes] == ["sep", "pa", "dm"]
