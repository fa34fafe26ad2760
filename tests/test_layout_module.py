"""Layout.from_module / apply on equinox pytrees (zodiax-style dotted paths), and on a dLux telescope."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gnomon as gn

eqx = pytest.importorskip("equinox")

ARC = np.pi / 180 / 3600


class Source(eqx.Module):
    position: jax.Array
    flux: jax.Array


class Optics(eqx.Module):
    layers: dict
    pixel_scale: float
    npix: int

    def __getattr__(self, key):  # dLux-style forwarding of layer names
        layers = self.__dict__.get("layers", {})
        if key in layers:
            return layers[key]
        raise AttributeError(key)


class Aperture(eqx.Module):
    coefficients: jax.Array


class Scope(eqx.Module):
    source: Source
    optics: Optics
    extras: list

    def model(self):
        x, y = self.source.position
        c = self.optics.aperture.coefficients
        return self.source.flux * (x * 1e6 + y * 2e6 + jnp.sum(c) * 1e9 + self.optics.pixel_scale + self.extras[0])


def _scope():
    return Scope(
        Source(jnp.array([1e-7, -2e-7]), jnp.array(50.0)),
        Optics({"aperture": Aperture(jnp.array([1e-8, 2e-8, 3e-8]))}, 0.355, 16),
        [jnp.array(0.5)],
    )


def _layout(scope):
    return gn.Layout.from_module(
        scope,
        {"pos": "source.position", "zern": "optics.aperture.coefficients", "plate": "optics.pixel_scale",
         "extra": "extras.0"},
        units={"pos": "µas", "zern": "nm", "plate": "ppm"},
        model_units={"pos": "rad", "zern": "m"},
        affine={"plate": gn.Affine.relative(0.355, "ppm")},
        labels={"pos": ["x", "y"], "zern": ["Z4", "Z5", "Z6"]},
    )


def test_from_module_reads_shapes_paths_and_round_trips():
    scope = _scope()
    lay = _layout(scope)
    assert [(b.name, b.shape, b.path) for b in lay.blocks] == [
        ("pos", (2,), "source.position"), ("zern", (3,), "optics.aperture.coefficients"),
        ("plate", (), "optics.pixel_scale"), ("extra", (), "extras.0")]
    assert lay["pos"].dtype == str(scope.source.position.dtype)
    with jax.enable_x64(True):
        theta = lay.theta_from_module(scope)
        np.testing.assert_allclose(np.asarray(theta), [1e-7 / (1e-6 * ARC), -2e-7 / (1e-6 * ARC), 10, 20, 30, 0, 0.5],
                                   rtol=1e-6, atol=1e-9)
        new = lay.apply(scope, theta + 1.0)
    # a new module; the old one is unchanged
    assert float(scope.source.position[0]) == pytest.approx(1e-7)
    np.testing.assert_allclose(np.asarray(new.source.position), np.array([1e-7, -2e-7]) + 1e-6 * ARC, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new.optics.aperture.coefficients), [11e-9, 21e-9, 31e-9], rtol=1e-6)
    assert float(new.optics.pixel_scale) == pytest.approx(0.355 * (1 + 1e-6), rel=1e-12)
    assert float(new.extras[0]) == pytest.approx(1.5)
    assert new.optics.npix == 16


def test_apply_works_under_jit_grad_and_vmap():
    scope = _scope()
    lay = _layout(scope)
    theta = lay.theta_from_module(scope)

    def f(th):
        return lay.apply(scope, th).model()

    expected = f(theta)
    assert float(jax.jit(f)(theta)) == pytest.approx(float(expected), rel=1e-5)
    g = jax.grad(f)(theta)
    # d model / d pos_x[µas] = flux · 1e6 · (1e-6 · ARC); d/d zern[nm] = flux · 1e9 · 1e-9
    np.testing.assert_allclose(np.asarray(g[:5]), [50 * ARC, 100 * ARC, 50, 50, 50], rtol=1e-4)
    batch = jnp.stack([theta, theta + 1.0])
    out = jax.vmap(f)(batch)
    assert out.shape == (2,) and float(out[0]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(
    "paths, match",
    [
        (["source.velocity"],
         r"module path 'source.velocity': source \(Source\) has no 'velocity'; it has \['position', 'flux'\]"),
        (["optics.npix"], r"'optics.npix' holds"),
        (["source"], r"'source' holds a Source object, not an array leaf"),
        (["source..flux"], r"empty part"),
        ({"a": "source.flux", "b": "source.flux"}, r"'a' and 'b' name the same module path"),
        (["optics.aperture.coefficients", "optics.layers.aperture.coefficients"], r"reach the same leaf"),
        ("source.flux", r"a list of dotted paths"),
    ],
)
def test_bad_paths_name_the_problem(paths, match):
    with pytest.raises(ValueError, match=match):
        gn.Layout.from_module(_scope(), paths)


def test_physical_units_without_model_units_are_refused_naming_model_units():
    """θ in µas must never reach a model that reads radians unconverted (issue 18, item 6)."""
    scope = _scope()
    paths = {"pos": "source.position", "zern": "optics.aperture.coefficients", "plate": "optics.pixel_scale"}
    with pytest.raises(ValueError) as err:
        gn.Layout.from_module(scope, paths, units={"pos": "µas", "zern": "nm"}, model_units={"zern": "m"})
    msg = str(err.value)
    assert "'pos' in 'µas' (path 'source.position')" in msg and "zern" not in msg.split("has units")[0]
    assert "model_units={'pos': 'rad'}" in msg and "affine=" in msg and "model_units={'pos': 'same'}" in msg
    # a ppm is a scale too: a bare ppm block without a map is refused as well; "1" and no unit need nothing
    with pytest.raises(ValueError, match="'plate' in 'ppm'"):
        gn.Layout.from_module(scope, paths, units={"plate": "ppm"})
    for unit in ("1", "frac", ""):
        assert gn.Layout.from_module(scope, {"flux": "source.flux"}, units={"flux": unit}).size == 1


def test_model_units_same_says_the_model_takes_the_users_units():
    scope = _scope()
    lay = gn.Layout.from_module(scope, {"pos": "source.position", "flux": "source.flux"},
                                units={"pos": "µas", "flux": "ph"}, model_units={"pos": "same", "flux": "ph"})
    theta = lay.pack({"pos": np.array([3.0, -2.0]), "flux": 7.0})
    out = lay.apply(scope, theta)
    np.testing.assert_allclose(np.asarray(out.source.position), [3.0, -2.0])  # no conversion: µas in, µas used
    assert float(out.source.flux) == 7.0
    entries = {e["name"]: e for e in lay.index_map()}
    assert entries["pos"]["model_units"] == "µas" and "to_model" not in entries["pos"]
    assert gn.Layout.from_dict(lay.to_dict()) == lay and gn.Layout.from_dict(lay.to_dict()).hash == lay.hash


def test_apply_refuses_batches_and_layouts_without_paths():
    scope = _scope()
    lay = _layout(scope)
    with pytest.raises(ValueError, match="one θ.*jax.vmap"):
        lay.apply(scope, jnp.zeros((2, lay.size)))
    with pytest.raises(ValueError, match="no block of this layout has a module path"):
        gn.Layout({"x": ()}).apply(scope, jnp.zeros(1))


def test_import_gnomon_does_not_import_equinox_or_dlux():
    code = ("import sys, gnomon; gnomon.Layout({'x': ()}); "
            "print([m for m in ('equinox', 'dLux', 'zodiax') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_dlux_telescope_apply_matches_zodiax_set():
    """On a real dLux model: apply(θ) in user units equals zodiax's set() with hand-converted values."""
    dl = pytest.importorskip("dLux")
    dlu = pytest.importorskip("dLux.utils")
    x, y = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 16))
    pupil = jnp.asarray((x**2 + y**2 <= 1).astype(float))
    basis = jnp.asarray(np.stack([2 * x**2 + 2 * y**2 - 1, x * y]))  # numpy: dLux's eager Zernikes are slow
    optics = dl.AngularOpticalSystem(
        16, 0.09, [("pupil", dl.BasisOptic(basis, pupil, jnp.zeros(2), normalise=True))], 8, 0.355)
    source = dl.BinarySource(wavelengths=jnp.array([550e-9]), separation=dlu.arcsec2rad(1.0), contrast=2.0)
    tel = dl.Telescope(optics, source)
    lay = gn.Layout.from_module(
        tel, {"pos": "source.position", "sep": "source.separation", "pa": "source.position_angle",
              "flux": "source.mean_flux", "zern": "pupil.coefficients"},
        units={"pos": "µas", "sep": "arcsec", "pa": "deg", "flux": "log10_ph", "zern": "nm"},
        model_units={"pos": "rad", "sep": "rad", "pa": "rad", "zern": "m"},
        affine={"flux": gn.Affine(0.5, log10=True)})
    user = {"pos": np.array([30.0, -20.0]), "sep": 1.2, "pa": 70.0, "flux": 5.0, "zern": np.array([10.0, -5.0])}
    theta = lay.pack(user)
    by_hand = tel.set(["source.position", "source.separation", "source.position_angle", "source.mean_flux",
                       "pupil.coefficients"],
                      [jnp.array([30.0, -20.0]) * 1e-6 * ARC, 1.2 * ARC, np.deg2rad(70.0), 0.5 * 1e5,
                       jnp.array([10e-9, -5e-9])])
    model = eqx.filter_jit(lambda m: m.model())  # dLux is slow op by op
    np.testing.assert_allclose(np.asarray(model(lay.apply(tel, theta))), np.asarray(model(by_hand)), rtol=2e-4)
    back = lay.read_module(by_hand)
    for k, v in user.items():
        np.testing.assert_allclose(np.asarray(back[k]), v, rtol=1e-4)


def test_saved_run_keeps_paths_labels_and_model_maps(tmp_path):
    scope = _scope()
    lay = _layout(scope)
    obj = gn.Objective.from_loss(lambda t: jnp.sum((t - 1.0) ** 2), lay)
    trace = gn.optimize(obj, jnp.zeros(lay.size), "gd", num_steps=2, learning_rate=0.1)
    run = gn.load_run(gn.save_run(tmp_path / "r", trace, lay))
    assert run.layout == lay and run.layout.hash == lay.hash
    assert [b.path for b in run.layout.blocks] == [b.path for b in lay.blocks]
    assert run.layout["zern"].labels == ("Z4", "Z5", "Z6") and run.layout["plate"].affine == lay["plate"].affine
    th = jnp.arange(lay.size, dtype=jnp.float32)
    np.testing.assert_allclose(np.asarray(run.layout.apply(scope, th).optics.pixel_scale),
                               np.asarray(lay.apply(scope, th).optics.pixel_scale))
