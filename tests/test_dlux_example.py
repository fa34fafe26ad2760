"""examples/dlux_binary.py, tiny: from_module → from_likelihood → Fisher/CRLB → fit → NUTS → run dirs (needs dLux).

Everything runs with the defaults: the curvature behind the fit's preconditioner and the sampler's metric is the
expected Fisher (a dLux Hessian is NaN on some CPUs; the Fisher is finite wherever the gradient is)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import gnomon as gn

pytest.importorskip("dLux")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dlux_binary.py"


def test_dlux_example_end_to_end(tmp_path):
    spec = importlib.util.spec_from_file_location("dlux_binary", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(str(tmp_path / "runs"), num_samples=60, num_warmup=60, wf_npixels=24, psf_npixels=16,
                   figures=False)
    crlb = out["crlb"]
    assert crlb.labels[:3] == ("position[x]", "position[y]", "separation") and crlb.units[0] == "µas"
    assert crlb.labels[-5:-1] == ("zernikes[Z4]", "zernikes[Z5]", "zernikes[Z6]", "zernikes[Z7]")
    # a derived quantity's conditional bound is NaN; every other marginal bound is at least its conditional one
    assert np.all((crlb.marginal >= crlb.conditional * (1 - 1e-12)) | np.isnan(crlb.conditional))
    assert abs(out["z_separation"]) < 4  # the MAP lies within a few bounds of the truth
    assert out["fit"].status == "converged"
    assert out["fit"].info["curvature"]["method"] == "fisher" and out["fit"].info["curvature"]["fallback"] is None
    assert out["post"].info["curvature"]["method"] == "fisher"  # the sampler's seed: the same rule
    assert np.all((out["ratios"] > 0.5) & (out["ratios"] < 2.0)), out["ratios"]  # posterior sd ≈ the bound
    # both preconditioned methods reach the MLE, with defaults only, from starts several bounds away
    obj, truth = out["objective"], np.asarray(out["theta_true"])
    bound = np.sqrt(np.diag(np.linalg.inv(np.asarray(
        gn.estimate_curvature(obj, truth, "fisher", dense=True, include_prior=False).matrix, float))))
    mle = np.asarray(out["fit"].best_theta)
    for k, method in enumerate(("preconditioned_gd", "lbfgs")):
        signs = np.where(np.random.default_rng(k).random(truth.size) < 0.5, -1.0, 1.0)
        fit = gn.optimize(obj, truth + 5.0 * signs * bound, method, num_steps=300, tol=1e-3)
        assert fit.info["curvature"]["method"] == "fisher"
        assert np.max(np.abs(np.asarray(fit.best_theta) - mle) / bound) <= 0.05, (method, fit.status)
    summary = json.loads((tmp_path / "runs" / "runs" / "map" / "summary.json").read_text())
    assert summary["crlb.separation"] == pytest.approx(crlb["separation"])
    assert "crlb.zernikes[Z4]" in summary and summary["truth.position[x]"] == pytest.approx(120.0)
    assert summary["crlb.companion_dx"] == pytest.approx(crlb["companion_dx"])  # the derived bound too
    assert summary["z.separation"] == pytest.approx(out["z_separation"], rel=1e-3)  # (MAP − truth) / bound
