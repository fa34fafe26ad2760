"""The binary-star demo end to end on tiny settings: every artifact exists, reads back, and agrees with an
independent recomputation (Fisher from jax.jacfwd, z-scores from the saved traces)."""

import contextlib
import io
import json

import jax
import numpy as np
import pytest

import gnomon as gn
from gnomon.interface.demo import FITS, DemoSettings, run_with_settings, start_theta
from gnomon.models import astrometry as A

TINY = DemoSettings(pupil_npix=16, detector_npix=40, num_steps=150, num_chains=2, num_warmup=40,
                    num_samples=40)
LABELS = A.binary_layout().index_labels()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "exp"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        path = run_with_settings(out, TINY, seed=3)
    return path, buf.getvalue()


def test_experiment_layout_and_runs(demo):
    out, _ = demo
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] >= 1 and manifest["sweep"]["seed"] == 3
    exp = gn.Experiment(out, create=False)
    assert sorted(exp.runs()) == sorted([f"map-{k}" for k in FITS] + ["posterior-nuts"])
    for rid in exp.runs():
        run = exp.load(rid)
        assert run.layout == A.binary_layout()
        assert np.isfinite(run.summary["max_abs_z_vs_truth"])
        assert "signals" in run.files
    table = exp.aggregate()
    assert len(table) == 4 and "max_abs_z_vs_truth" in table.columns
    assert (out / "runs.csv").exists() and (out / "data.npz").exists()


def test_fisher_and_crlb_match_an_independent_jacobian(demo):
    out, _ = demo
    saved = np.load(out / "data.npz")
    model = A.BinaryStarModel(A.Setup(pupil_npix=TINY.pupil_npix, detector_npix=TINY.detector_npix))
    truth = saved["truth_theta"]
    mu = model.image_theta(truth)
    w = 1.0 / np.maximum(np.asarray(mu, dtype=float), 1.0)
    jac = np.asarray(jax.jit(jax.jacfwd(lambda t: model.image_theta(t).ravel()))(truth), dtype=float)
    fisher = jac.T @ (w.ravel()[:, None] * jac)
    np.testing.assert_allclose(saved["fisher"], fisher, rtol=2e-3, atol=1e-6 * np.abs(fisher).max())
    np.testing.assert_allclose(saved["crlb"], np.sqrt(np.diag(np.linalg.inv(fisher))), rtol=1e-2)
    np.testing.assert_allclose(saved["theta0"], start_theta(model, truth), rtol=1e-6, atol=1e-7)


def test_summary_z_scores_are_recomputable_from_the_saved_traces(demo):
    out, _ = demo
    saved = np.load(out / "data.npz")
    truth, crlb = saved["truth_theta"], saved["crlb"]
    exp = gn.Experiment(out, create=False)
    finals = {}
    for k in FITS:
        run = exp.load(f"map-{k}")
        th = np.asarray(run.trace.decoded_theta()[run.trace.best_index], dtype=float)
        finals[k] = th
        z = (th - truth) / crlb
        assert run.summary["max_abs_z_vs_truth"] == pytest.approx(np.abs(z).max(), rel=1e-5)
        assert run.summary["max_abs_z_vs_truth"] < 5  # a fit at the Cramér–Rao bound
    # the three optimizers reach the same MAP (within a small fraction of the CRLB)
    for k in FITS[1:]:
        assert np.abs((finals[k] - finals[FITS[0]]) / crlb).max() < 0.1
    post = exp.load("posterior-nuts")
    draws = np.asarray(post.trace.theta, dtype=float).reshape(-1, truth.size)
    assert post.summary["max_abs_z_vs_truth"] == pytest.approx(np.abs((draws.mean(0) - truth) / crlb).max(),
                                                               rel=1e-4)
    assert post.trace.theta.shape == (TINY.num_chains, TINY.num_samples, truth.size)
    # the posterior spread is the CRLB (a Gaussian likelihood with a flat prior), to sampling noise
    ratio = draws.std(0) / crlb
    assert 0.5 < np.median(ratio) < 1.5
    hand = gn.HandOff.load(post)
    assert hand.dim == truth.size


def test_signals_netcdf_and_figures(demo):
    out, _ = demo
    run = gn.load_run(out / "runs" / "map-eigen_gd")
    assert (run.path / "thetamap.npz").exists()
    sig = gn.Signals.from_run(run)
    assert "binary.separation_as" in sig and sig["binary.separation_as"].has_truth
    saved = np.load(out / "data.npz")
    i = LABELS.index("binary.separation_as")
    assert sig["binary.separation_as"].sigma_value == pytest.approx(float(saved["crlb"][i]))  # the CRLB band
    assert run.summary["crlb.binary.separation_as"] == pytest.approx(float(saved["crlb"][i]))
    assert run.summary["truth.binary.separation_as"] == pytest.approx(A.TRUTH["binary.separation_as"])
    from gnomon.io.netcdf import read_netcdf

    dt = read_netcdf(out / "runs" / "posterior-nuts" / "posterior.nc")
    sep = dt["posterior"]["binary.separation_as"]
    assert sep.shape == (TINY.num_chains, TINY.num_samples) and sep.attrs["units"] == "arcsec"
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figs == sorted(["astrometry_map.png", "astrometry_posterior.png", "loss_histories.png",
                           "eigen_spectrum.png", "posterior_trace.png", "posterior_pair.png",
                           "posterior_forest.png"])
    for name in figs:
        head = (out / "figures" / name).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and (out / "figures" / name).stat().st_size > 5000


def test_printed_table_lists_every_parameter(demo):
    out, text = demo
    lines = text.splitlines()
    for lab in LABELS:
        assert any(line.startswith(lab + " ") for line in lines), lab
    assert "max |z| of the MAP" in text and str(out) in text
    assert "posterior mean ± sd" in text


def test_other_settings_in_the_same_directory_are_refused_before_any_work(demo):
    out, _ = demo
    with pytest.raises(ValueError, match="another directory"):
        run_with_settings(out, TINY, seed=4)
