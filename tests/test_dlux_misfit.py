"""A fit of a real dLux binary-star model to the wrong data (its transposed image) is flagged by the goodness
of fit (issue 18, item 4): reduced deviance and Pearson χ² ≥ 2 and a MisfitWarning, ≈ 1 on the right data."""

import importlib.util
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.objective.goodness import MisfitWarning

pytest.importorskip("dLux")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dlux_binary.py"


def test_transposed_dlux_image_is_a_misfit():
    spec = importlib.util.spec_from_file_location("dlux_binary_gof", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    telescope = mod.build_telescope(24, 16)
    layout = mod.build_layout(telescope)
    truth = layout.pack({"position": jnp.array([120.0, -70.0]), "separation": 2.5e6, "position_angle": 80.0,
                         "log_flux": 6.5, "contrast": 3.2, "plate_scale": 40.0,
                         "zernikes": jnp.array([12.0, -8.0, 10.0, 6.0])})

    def predict(theta):
        return layout.apply(telescope, theta).model()

    y = np.random.default_rng(0).poisson(np.asarray(jax.jit(predict)(truth))).astype(np.float32)
    obj = gn.Objective.from_likelihood(predict, y, "poisson", layout)
    fisher = gn.estimate_curvature(obj, truth, method="fisher", dense=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MisfitWarning)
        right = gn.optimize(obj, truth, "preconditioned_gd", curvature=fisher, num_steps=60, ftol=1e-7)
    g = right.info["goodness_of_fit"]
    assert g["dof"] == y.size - layout.size and not g["misfit"]
    assert 0.5 < g["reduced_deviance"] < 1.5 and 0.5 < g["reduced_pearson_chi2"] < 1.5, g
    with pytest.warns(MisfitWarning, match="far above what the poisson noise allows"):
        wrong = gn.optimize(obj, truth, "preconditioned_gd", curvature=fisher, num_steps=60, ftol=1e-7,
                            data=np.ascontiguousarray(y.T))
    w = wrong.info["goodness_of_fit"]
    assert w["misfit"] and w["reduced_deviance"] >= 2 and w["reduced_pearson_chi2"] >= 2, w
