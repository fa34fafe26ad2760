"""Astrometry recipe: derived SHERA signals against closed forms, and the figure built from Signals only."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn
from gnomon.recipes import astrometry as A
from gnomon.signals.signals import Signals

UNITS = {
    A.X: "arcsec",
    A.Y: "arcsec",
    A.SEP: "arcsec",
    A.PA: "deg",
    A.LOGF: "log10_ph",
    A.CONTRAST: "",
    A.PLATE: "arcsec/pix",
    A.ZERN: "nm",
}
SHAPES = {A.X: (), A.Y: (), A.SEP: (), A.PA: (), A.LOGF: (), A.CONTRAST: (), A.PLATE: (), A.ZERN: (8,)}
TRUTH = {
    A.X: 0.12,
    A.Y: -0.07,
    A.SEP: 9.5,
    A.PA: 80.0,
    A.LOGF: 6.78,
    A.CONTRAST: 3.2,
    A.PLATE: 0.355,
    A.ZERN: np.array([12.0, -8.0, 10.0, 6.0, -9.0, 5.0, -4.0, 7.0]),
}
SCALE = np.array([1e-5, 1e-5, 2e-5, 1e-4, 1e-4, 1e-3, 1e-6] + [0.5] * 8)


def _trace(kind="optimization", T=25, C=2, seed=0):
    layout = gn.Layout(SHAPES, transforms={A.CONTRAST: "positive"}, units=UNITS)
    th_true = np.asarray(layout.pack(TRUTH), dtype=np.float64)
    rng = np.random.default_rng(seed)
    if kind == "optimization":
        decay = np.exp(-np.arange(T) / 5.0)[:, None]
        theta = th_true + decay * SCALE * rng.normal(size=(1, 15))
        return gn.Trace(kind=kind, theta=theta, loss=1 + 100 * decay[:, 0], step=np.arange(T), layout=layout)
    theta = th_true + SCALE * rng.normal(size=(C, T, 15))
    return gn.Trace(kind=kind, theta=theta, log_prob=rng.normal(size=(C, T)), layout=layout)


def test_derived_signals_match_closed_forms():
    tr = _trace()
    sig = A.add_signals(Signals.from_trace(tr, truth=TRUTH))
    x, sep, plate = sig.values(A.X), sig.values(A.SEP), sig.values(A.PLATE)
    np.testing.assert_allclose(sig.values(A.X_ERR), (x - 0.12) * 1e6, rtol=1e-9)
    np.testing.assert_allclose(sig.values(A.SEP_ERR), (sep - 9.5) * 1e6, rtol=1e-9)
    np.testing.assert_allclose(sig.values(A.PLATE_ERR), 1e6 * (plate - 0.355) / 0.355, rtol=1e-9)
    assert (sig.units(A.X_ERR), sig.units(A.PLATE_ERR), sig.units(A.RAW_FLUX_ERR)) == ("µas", "ppm", "ppm")

    L, c = sig.values(A.LOGF), sig.values(A.CONTRAST).astype(np.float64)  # decoded by JAX (maybe f32)
    F = np.stack([c * 10**L / (1 + c), 10**L / (1 + c)], axis=-1)
    Ft = np.array([3.2 * 10**6.78 / 4.2, 10**6.78 / 4.2])
    np.testing.assert_allclose(sig.values(A.RAW_FLUX), F, rtol=1e-9)
    np.testing.assert_allclose(sig.truth(A.RAW_FLUX), Ft, rtol=1e-9)
    assert sig[A.RAW_FLUX_ERR].shape == (25, 2) and sig[A.RAW_FLUX_ERR].labels == ("A", "B")
    np.testing.assert_allclose(sig.values(A.RAW_FLUX_ERR), 1e6 * (F - Ft) / Ft, rtol=1e-6, atol=1e-6)

    z = sig.values(A.ZERN)
    np.testing.assert_allclose(sig.values(A.ZERN_ERR), z - TRUTH[A.ZERN], atol=1e-12)
    np.testing.assert_allclose(
        sig.values(A.ZERN_RMS), np.sqrt(((z - TRUTH[A.ZERN]) ** 2).mean(1)), atol=1e-12
    )
    assert sig[A.ZERN].labels == A.NOLL == ("Z4", "Z5", "Z6", "Z7", "Z8", "Z9", "Z10", "Z11")
    # idempotent: applying again adds nothing (cached signals already hold them)
    assert A.add_signals(sig).names == sig.names


def test_missing_truth_gives_nan_errors_of_stable_shape():
    sig = A.add_signals(Signals.from_trace(_trace()))
    for name, shape in (
        (A.X_ERR, (25,)),
        (A.PLATE_ERR, (25,)),
        (A.RAW_FLUX_ERR, (25, 2)),
        (A.ZERN_ERR, (25, 8)),
        (A.ZERN_RMS, (25,)),
    ):
        assert sig[name].shape == shape and np.isnan(sig.values(name)).all()
    assert np.isfinite(sig.values(A.RAW_FLUX)).all()  # not an error: defined without truth


def _data_lines(ax):
    return [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("data:")]


def test_astrometry_figure_with_truth(tmp_path):
    sig = Signals.from_trace(_trace(), truth=TRUTH)
    fig = A.astrometry(sig, save=tmp_path / "astro.png")
    assert (tmp_path / "astro.png").stat().st_size > 10_000
    axes = fig.axes
    ylabels = [ax.get_ylabel() for ax in axes]
    # the loss (101 → 1.8, within two decades) as its excess over its minimum, the axis saying so
    assert ylabels[0].replace("\n", " ") == f"loss − {sig.values('loss').min():.4g} (its minimum) (floored at " \
        f"{np.sort(sig.values('loss') - sig.values('loss').min())[1]:.4g})"
    assert ylabels[1:] == [
        "x / y error [µas]",
        "separation error [µas]",
        "position angle error [arcsec]",
        "plate-scale error [ppm]",
        "raw flux error [ppm]",
        "Zernike error [nm]",
        "Zernike RMS error [nm]",
    ]
    assert [len(_data_lines(ax)) for ax in axes] == [1, 2, 1, 1, 1, 2, 8, 1]
    fin = sig.values(A.X)[-1]
    assert f"final {(fin - 0.12) * 1e6:+.4g} µas" in axes[1].get_title()
    assert fig.get_suptitle() == "astrometry: errors vs truth"


def test_astrometry_figure_without_truth_shows_values_and_chains():
    fig = A.astrometry(Signals.from_trace(_trace()))
    assert fig.get_suptitle() == "astrometry: parameter values"
    assert fig.axes[1].get_ylabel() == "value [arcsec]"
    fig = A.astrometry(Signals.from_trace(_trace("sampling", C=3), truth=TRUTH))
    assert [len(_data_lines(ax)) for ax in fig.axes][:3] == [3, 2 * 3, 3]  # one line per chain
    assert fig.axes[0].get_xlabel() in ("", "draw")


def test_recipe_registry_and_errors():
    assert gn.recipes.get_recipe("astrometry") is A.astrometry
    with pytest.raises(ValueError, match="unknown recipe"):
        gn.recipes.get_recipe("nope")
    with pytest.raises(ValueError, match="found none"):
        A.astrometry(Signals({"a": np.zeros(3)}))
    # a layout of one's own has a loss but none of the model's parameters: refused, not a loss-only figure
    # titled as astrometry (which read as if the parameters had been drawn)
    lay = gn.Layout({"separation": (), "zern": (2,)}, units={"separation": "µas", "zern": "nm"})
    own = gn.optimize(gn.Objective.from_loss(lambda t: jnp.sum(t**2), lay), jnp.ones(3), "gd", learning_rate=0.1,
                      num_steps=3)
    with pytest.raises(ValueError, match=r"found none of them.*gn.plot.grid\(sig, panels=\['separation', 'zern'\]\)"):
        A.astrometry(Signals.from_trace(own, lay))
    sig = Signals.from_trace(_trace(), truth=TRUTH, transforms=["astrometry"])
    assert A.RAW_FLUX_ERR in sig


def test_astrometry_transform_by_name_without_importing_the_recipe_first():
    """In a fresh interpreter: gnomon.signals imports no recipe (no upward import), so the name is unknown
    (the error says what to import) until the gnomon.recipes package is imported; then transforms=["astrometry"]
    resolves lazily (the recipe module is imported on demand) and gives the closed-form errors."""
    import subprocess
    import sys

    code = """
import sys
import numpy as np
import gnomon as gn
from gnomon.signals import Signals
assert not any(m.startswith("gnomon.recipes") for m in sys.modules), "recipes imported too early"
layout = gn.Layout({"binary.x_position_as": (), "system.plate_scale_as_per_pix": ()},
                   units={"binary.x_position_as": "arcsec", "system.plate_scale_as_per_pix": "arcsec/pix"})
theta = np.array([[0.1, 0.36], [0.12, 0.355]])
tr = gn.Trace(kind="optimization", theta=theta, loss=np.array([2.0, 1.0]), step=np.arange(2), layout=layout)
truth = {"binary.x_position_as": 0.11, "system.plate_scale_as_per_pix": 0.355}
try:
    Signals.from_trace(tr, truth=truth, transforms=["astrometry"])
except ValueError as exc:
    assert "import gnomon.recipes" in str(exc), exc
else:
    raise AssertionError("an unknown transform name must raise")
assert not any(m.startswith("gnomon.recipes") for m in sys.modules), "signals imported a recipe"
gn.recipes  # importing the package declares its transforms (lazily: the module is not imported yet)
assert "gnomon.recipes.astrometry" not in sys.modules
sig = Signals.from_trace(tr, truth=truth, transforms=["astrometry"])
assert "gnomon.recipes.astrometry" in sys.modules
x = sig.values("binary.x_position_as").astype(float)
np.testing.assert_allclose(sig.values("binary.x_position_error_uas"), (x - 0.11) * 1e6, rtol=1e-6)
s = sig.values("system.plate_scale_as_per_pix").astype(float)
np.testing.assert_allclose(sig.values("system.plate_scale_error_ppm"), 1e6 * (s - 0.355) / 0.355, rtol=1e-6)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_recipe_names_match_the_flagship_model_layout():
    models = pytest.importorskip("gnomon.models.astrometry")
    layout = models.binary_layout()
    for name, shape in SHAPES.items():
        assert layout[name].shape == shape and layout[name].units == UNITS[name]


# ---------------------------------------------------------------------------------------------- roles (issue 21)
OWN = gn.Layout({"x": (), "y": (), "sep": (), "pa": (), "scale": (), "zern": (3,), "pix": ()},
                units={"x": "mas", "y": "mas", "sep": "µas", "pa": "deg", "scale": "arcsec/pix", "zern": "µm",
                       "pix": "pix"})
OWN_TRUTH = {"x": 120.0, "y": -70.0, "sep": 9.5e6, "pa": 80.0, "scale": 0.355, "zern": [0.01, -0.02, 0.005],
             "pix": 3.0}
OWN_ROLES = {"separation": "sep", "position_angle": "pa", "position": ("x", "y"), "plate_scale": "scale",
             "zernikes": "zern"}


def own_signals(T=60):
    """A fit on the user's own names: the separation starts 2000 µas off and converges within its ±38 µas
    bound; positions in mas, Zernikes in µm."""
    t = np.arange(T)
    decay = np.exp(-t / 6.0)[:, None]
    truth = np.concatenate([np.ravel(np.asarray(OWN_TRUTH[n], dtype=np.float64)) for n in OWN.names])  # identity
    start = np.array([0.5, -0.4, 2000.0, 0.01, 1e-4, 0.003, 0.002, -0.001, 0.5])
    wiggle = np.array([0.01, 0.01, 20.0, 1e-5, 1e-6, 1e-4, 1e-4, 1e-4, 0.01]) * np.cos(t)[:, None]
    theta = truth + decay * start + wiggle
    tr = gn.Trace(kind="optimization", theta=theta, loss=1 + 1e3 * decay[:, 0], step=t, layout=OWN)
    crlb = {"x": 0.03, "y": 0.03, "sep": 38.0, "pa": 2e-5, "scale": 5e-5, "zern[0]": 1e-3, "zern[1]": 1e-3,
            "zern[2]": 1e-3, "pix": 0.1}
    return Signals.from_trace(tr, truth=OWN_TRUTH, crlb=crlb), theta, truth


def _band_fraction(ax, sigma):
    """The height of the ±1σ band about zero as a fraction of the axis height (display coordinates)."""
    lo, hi = ax.transData.transform([[0.0, -sigma], [0.0, sigma]])[:, 1]
    return (hi - lo) / ax.get_window_extent().height


def test_recipe_on_the_users_names_with_roles():
    sig, theta, truth = own_signals()
    with pytest.warns(UserWarning, match=r"no signal fills the role\(s\) \['log_flux', 'contrast'\]"):
        fig = A.astrometry(sig, roles=OWN_ROLES)
    ylab = [ax.get_ylabel().replace("\n", " ") for ax in fig.axes]
    assert ylab[1:] == ["x / y error [µas]", "separation error [µas]", "position angle error [arcsec]",
                        "plate-scale error [ppm]", "Zernike error [nm]", "Zernike RMS error [nm]"]
    xy = _data_lines(fig.axes[1])
    np.testing.assert_allclose(xy[0].get_ydata(), (theta[:, 0] - truth[0]) * 1e3)  # mas → µas
    np.testing.assert_allclose(_data_lines(fig.axes[2])[0].get_ydata(), theta[:, 2] - truth[2])
    np.testing.assert_allclose(_data_lines(fig.axes[3])[0].get_ydata(), (theta[:, 3] - truth[3]) * 3600.0)
    np.testing.assert_allclose(_data_lines(fig.axes[5])[1].get_ydata(), (theta[:, 6] - truth[6]) * 1e3)  # µm→nm
    # the ±38 µas band of a 2000 µas start is not a line: symlog, linear within ±σ, the band ≥ a tenth
    sep_ax = fig.axes[2]
    assert sep_ax.get_yscale() == "symlog" and sep_ax.yaxis.get_transform().linthresh == pytest.approx(38.0)
    assert _band_fraction(sep_ax, 38.0) > 0.1
    assert "sep_error: final" in sep_ax.get_title() and "(CRLB 38 µas)" in sep_ax.get_title()


def test_roles_refusals_and_unit_fallbacks():
    sig, _, _ = own_signals(T=10)
    with pytest.raises(ValueError, match=r"unknown astrometry role\(s\) \['sepration'\]"):
        A.astrometry(sig, roles={"sepration": "sep"})
    with pytest.raises(ValueError, match=r"roles\['separation'\] names \['spe'\]"):
        A.astrometry(sig, roles={"separation": "spe"})
    with pytest.raises(ValueError, match="2-vector or two scalar names"):
        A.astrometry(sig, roles={"position": "zern"})
    with pytest.warns(UserWarning) as caught:
        fig = A.astrometry(sig, roles={"separation": "pix"})
    said = [str(w.message) for w in caught]
    assert any("separation 'pix' is in 'pix', which does not convert to 'µas'" in m for m in said)
    assert any("no signal fills the role(s) ['position', 'position_angle'," in m for m in said)
    assert fig.axes[1].get_ylabel() == "separation error [pix]"
    rm = A.resolve_roles(sig, {"position": "x, y"})
    assert rm.get("position") == ("x", "y") and "separation" in rm.missing
