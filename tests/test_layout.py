"""Layout: pack/unpack round trips, Jacobians against closed forms, index maps, hashes, bad input."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gnomon as gn

SPECS = ["identity", "positive", ("interval", -2.0, 3.0), ("greater_than", 1.5), ("less_than", -1.0),
         "unit_interval", "softplus_positive"]


def _feasible(spec, u):
    """Map an arbitrary real u into the support of spec (independent of numpyro)."""
    name = spec if isinstance(spec, str) else spec[0]
    if name == "identity":
        return u
    if name in ("positive", "softplus_positive"):
        return np.exp(u)
    if name == "unit_interval":
        return 1 / (1 + np.exp(-u))
    if name == "interval":
        return spec[1] + (spec[2] - spec[1]) / (1 + np.exp(-u))
    if name == "greater_than":
        return spec[1] + np.exp(u)
    if name == "less_than":
        return spec[1] - np.exp(u)
    raise AssertionError(name)


shape_st = st.sampled_from([(), (1,), (3,), (2, 2)])


@given(
    blocks=st.lists(st.tuples(shape_st, st.sampled_from(range(len(SPECS)))), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_pack_unpack_round_trip(blocks, seed):
    rng = np.random.default_rng(seed)
    shapes = {f"p{i}": s for i, (s, _) in enumerate(blocks)}
    transforms = {f"p{i}": SPECS[k] for i, (_, k) in enumerate(blocks)}
    layout = gn.Layout(shapes, transforms=transforms)
    params = {n: _feasible(transforms[n], rng.uniform(-2, 2, size=s)) for n, s in shapes.items()}
    with jax.enable_x64(True):
        theta = layout.pack({k: np.asarray(v, np.float64) for k, v in params.items()})
        assert theta.shape == (layout.size,)
        back = layout.unpack(theta)
        for n in shapes:
            np.testing.assert_allclose(np.asarray(back[n]), params[n], rtol=1e-9, atol=1e-12)
        # θ -> params -> θ as well
        np.testing.assert_allclose(np.asarray(layout.pack(back)), np.asarray(theta), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("spec", SPECS)
def test_log_det_jacobian_matches_autodiff(spec):
    """log|det J| of the unconstrained->constrained map equals log|det jax.jacobian(unpack)|."""
    layout = gn.Layout({"a": (3,)}, transforms={"a": spec})
    with jax.enable_x64(True):
        theta = jnp.array([-0.7, 0.1, 1.3])
        jac = jax.jacobian(lambda t: layout.unpack(t)["a"])(theta)
        expected = np.linalg.slogdet(np.asarray(jac))[1]
        np.testing.assert_allclose(float(layout.log_det_jacobian(theta)), expected, rtol=1e-10, atol=1e-12)


def test_log_det_jacobian_closed_forms():
    with jax.enable_x64(True):
        lay = gn.Layout({"s": ()}, transforms={"s": "positive"})
        assert float(lay.log_det_jacobian(jnp.array([0.3]))) == pytest.approx(0.3)  # d exp(u)/du = exp(u)
        lay = gn.Layout({"p": ()}, transforms={"p": ("interval", 0.0, 4.0)})
        u = 0.4
        s = 1 / (1 + np.exp(-u))
        assert float(lay.log_det_jacobian(jnp.array([u]))) == pytest.approx(np.log(4 * s * (1 - s)))


def test_simplex_changes_theta_size_and_round_trips():
    layout = gn.Layout({"w": (4,), "x": ()}, transforms={"w": "simplex"})
    assert layout.size == 4  # 3 for the simplex + 1
    w = np.array([0.1, 0.2, 0.3, 0.4])
    theta = layout.pack({"w": w, "x": 2.0})
    np.testing.assert_allclose(np.asarray(layout.unpack(theta)["w"]), w, rtol=1e-5)
    assert layout.index_map()[0]["theta_shape"] == [3]


def test_batched_unpack_and_ldj():
    layout = gn.Layout({"x": (), "s": (2,)}, transforms={"s": "positive"})
    theta = jnp.arange(12.0).reshape(4, 3) / 10
    out = layout.unpack(theta)
    assert out["x"].shape == (4,) and out["s"].shape == (4, 2)
    np.testing.assert_allclose(np.asarray(out["s"]), np.exp(np.asarray(theta[:, 1:])), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(layout.log_det_jacobian(theta)), np.asarray(theta[:, 1:].sum(1)), rtol=1e-6)


def test_index_map_and_labels():
    layout = gn.Layout({"x": (), "z": (2, 2), "sigma": ()}, transforms={"sigma": "positive"},
                       units={"x": "arcsec", "z": "nm"}, blocks={"x": "astrometry", "z": "wavefront"})
    im = layout.index_map()
    assert [(e["name"], e["start"], e["stop"]) for e in im] == [("x", 0, 1), ("z", 1, 5), ("sigma", 5, 6)]
    assert im[0]["units"] == "arcsec" and im[1]["block"] == "wavefront" and im[2]["transform"] == "positive"
    assert layout.index_labels() == ["x", "z[0,0]", "z[0,1]", "z[1,0]", "z[1,1]", "sigma"]
    groups = layout.group_indices()
    assert list(groups["wavefront"]) == [1, 2, 3, 4] and list(groups["sigma"]) == [5]


def test_to_dict_round_trip_and_hash():
    layout = gn.Layout({"x": (), "z": (3,), "p": ()}, transforms={"p": ("interval", 0, 2)}, units={"x": "m"},
                       blocks={"z": "w"})
    again = gn.Layout.from_dict(layout.to_dict())
    assert again == layout and again.hash == layout.hash
    assert again.index_map() == layout.index_map()
    other = gn.Layout({"x": (), "z": (3,), "p": ()}, transforms={"p": ("interval", 0, 3)})
    assert other.hash != layout.hash


def test_hash_is_stable_across_processes():
    code = ("import gnomon as gn; print(gn.Layout({'x': (), 'z': (3,), 's': ()}, transforms={'s': 'positive'}, "
            "units={'x': 'arcsec'}).hash)")
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
           for _ in range(2)}
    here = gn.Layout({"x": (), "z": (3,), "s": ()}, transforms={"s": "positive"}, units={"x": "arcsec"}).hash
    assert out == {here}


def test_numpyro_constraint_accepted():
    from numpyro.distributions import constraints

    layout = gn.Layout({"a": (), "b": (2,)},
                       transforms={"a": constraints.positive, "b": constraints.interval(1.0, 5.0)})
    assert layout.index_map()[1]["transform"] == ["interval", 1.0, 5.0]
    theta = layout.pack({"a": 2.0, "b": np.array([2.0, 4.0])})
    np.testing.assert_allclose(np.asarray(layout.unpack(theta)["b"]), [2.0, 4.0], rtol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda L: L.pack({"x": 1.0, "z": np.zeros(3)}), r"missing parameter\(s\) \['s'\]"),
        (lambda L: L.pack({"x": 1.0, "z": np.zeros(3), "s": 1.0, "q": 2.0}), r"unexpected parameter\(s\) \['q'\]"),
        (lambda L: L.pack({"x": 1.0, "z": np.zeros(4), "s": 1.0}), r"'z' has shape \(4,\), expected \(3,\)"),
        (lambda L: L.pack({"x": 1.0, "z": np.zeros(3), "s": -1.0}), r"'s'.*outside the support.*positive"),
        (lambda L: L.unpack(np.zeros(4)), r"θ has shape \(4,\), expected \(5,\)"),
        (lambda L: L.log_det_jacobian(np.zeros(6)), r"expected \(5,\)"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    layout = gn.Layout({"x": (), "z": (3,), "s": ()}, transforms={"s": "positive"})
    with pytest.raises(ValueError, match=match):
        call(layout)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shapes={"x": ()}, transforms={"x": "bogus"}), r"'x': unknown transform 'bogus'"),
        (dict(shapes={"x": ()}, transforms={"y": "positive"}), r"transforms name\(s\) \['y'\] are not parameters"),
        (dict(shapes={"x": ()}, transforms={"x": ("interval", 3, 1)}), r"'x': interval needs lower < upper"),
        (dict(shapes={"x": ()}, transforms={"x": "interval"}), r"'x': transform 'interval' needs 2 bound"),
        (dict(shapes={"x": (-1,)}), r"'x': shape \(-1,\) has a negative"),
        (dict(shapes={}), r"non-empty mapping"),
        (dict(shapes={"x": ()}, units={"x": 3}), r"'x': units must be a string"),
    ],
)
def test_bad_layout_definitions(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gn.Layout(**kwargs)


# ---------------------------------------------------------------------------------------------- units, labels, maps
def test_hash_of_plain_layouts_is_unchanged_by_the_new_fields():
    """Layouts without labels/maps/paths hash as before (stored runs keep their hash): values from v0.1."""
    from gnomon.models.astrometry import binary_layout

    plain = gn.Layout({"x": (), "z": (3,), "s": ()}, transforms={"s": "positive"}, units={"x": "arcsec"},
                      blocks={"z": "w"})
    assert plain.hash == "cc86dac6cf4ac28e"
    from gnomon.models import astrometry as A

    unlabelled = gn.Layout(A._SHAPES, transforms={A.CONTRAST: "positive"}, units=A._UNITS, blocks=A._BLOCKS)
    assert unlabelled.hash == "a1e3c30ccd95a7c4"  # the demo's layout as v0.1 wrote it
    assert binary_layout().hash != unlabelled.hash  # its Noll labels (Z4…) are content: a different layout


def test_unknown_units_are_refused_with_the_known_ones_listed():
    with pytest.raises(ValueError, match=r"parameter 'x': unknown unit 'arcsex' \(did you mean 'arcsec'.*\?\); "
                                         r"known units: \[.*'arcsec'.*register"):
        gn.Layout({"x": ()}, units={"x": "arcsex"})
    with pytest.raises(ValueError, match=r"unknown unit 'uass' \(did you mean 'uas'"):
        gn.Layout({"x": ()}, units={"x": "uass"})
    with pytest.raises(ValueError, match=r"unknown unit 'furlong/pix'"):
        gn.Layout({"x": ()}, units={"x": "furlong/pix"})
    # compound units of known parts, aliases and '' pass, and are kept exactly as written
    lay = gn.Layout({"a": (), "b": (), "c": (), "d": ()},
                    units={"a": "arcsec/pix", "b": "uas", "c": "μas", "d": ""})
    assert [b.units for b in lay.blocks] == ["arcsec/pix", "uas", "μas", ""]


def test_units_spelled_out_convert_at_their_own_scale():
    """'nanometers' must be nm, not be 'corrected' to 'meter' (a 1e9 error): words are aliases of their unit."""
    from gnomon.thetaspace.units import conversion_factor

    assert conversion_factor("nanometers", "m") == pytest.approx(1e-9)
    assert conversion_factor("microarcseconds", "arcsec") == pytest.approx(1e-6)
    assert conversion_factor("milliradian", "rad") == pytest.approx(1e-3)
    assert conversion_factor("arcsecs", "mas") == pytest.approx(1e3)


def test_register_unit_extends_the_registry():
    from gnomon.thetaspace import units as U

    name = "furlong_test"
    gn.register_unit(name, "length", 201.168, aliases=("fur_test",))
    gn.register_unit(name, "length", 201.168)  # the same definition again: a no-op
    assert U.conversion_factor("fur_test", "m") == pytest.approx(201.168)
    lay = gn.Layout({"x": ()}, units={"x": "fur_test"}, model_units={"x": "m"})
    assert float(lay.to_model({"x": 2.0})["x"]) == pytest.approx(402.336, rel=1e-6)
    with pytest.raises(ValueError, match="already defined"):
        gn.register_unit(name, "length", 200.0)
    with pytest.raises(ValueError, match="already"):
        gn.register_unit("other_test", "length", 1.0, aliases=("µas",))
    with pytest.raises(ValueError, match="positive"):
        gn.register_unit("bad_test", "length", -1.0)


def test_component_labels_name_index_labels_and_are_stored():
    lay = gn.Layout({"pos": (2,), "zern": (3,), "w": (3,)}, transforms={"w": "simplex"},
                    labels={"pos": ["x", "y"], "zern": ["Z4", "Z5", "Z6"], "w": ["a", "b", "c"]})
    assert lay.index_labels() == ["pos[x]", "pos[y]", "zern[Z4]", "zern[Z5]", "zern[Z6]", "w[0]", "w[1]"]
    assert lay.element_labels() == ["pos[x]", "pos[y]", "zern[Z4]", "zern[Z5]", "zern[Z6]", "w[a]", "w[b]", "w[c]"]
    im = lay.index_map()
    assert im[1]["labels"] == ["Z4", "Z5", "Z6"] and "labels" in im[2]
    again = gn.Layout.from_dict(lay.to_dict())
    assert again == lay and again.index_labels() == lay.index_labels()
    assert gn.Layout({"pos": (2,)}, labels={"pos": ["x", "y"]}).hash != gn.Layout({"pos": (2,)}).hash
    theta = lay.pack({"pos": np.array([1.0, 2.0]), "zern": np.zeros(3), "w": np.array([0.2, 0.3, 0.5])})
    np.testing.assert_allclose(np.asarray(lay.element_values(theta)), [1, 2, 0, 0, 0, 0.2, 0.3, 0.5], rtol=1e-5)


@pytest.mark.parametrize(
    "labels, match",
    [
        ({"pos": ["x"]}, r"'pos': 1 labels for 2 elements"),
        ({"pos": ["x", "x"]}, r"'pos': repeated labels \['x'\]"),
        ({"pos": "xy"}, r"'pos': labels must be a sequence of strings"),
        ({"s": ["a"]}, r"'s' is a scalar"),
        ({"pos": ["x", ""]}, r"non-empty strings"),
    ],
)
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        gn.Layout({"pos": (2,), "s": ()}, labels=labels)


def test_affine_maps_user_units_to_model_units_and_back():
    ARC = np.pi / 180 / 3600
    lay = gn.Layout(
        {"pos": (2,), "plate": (), "flux": (), "zern": (2,), "c": ()},
        units={"pos": "µas", "plate": "ppm", "flux": "log10_ph", "zern": "nm"},
        model_units={"pos": "rad", "zern": "m"},
        affine={"plate": gn.Affine.relative(0.355, "ppm"), "flux": gn.Affine(0.5, log10=True),
                "c": (2.0, 1.0)},
        transforms={"c": "positive"},
    )
    user = {"pos": np.array([100.0, -50.0]), "plate": 40.0, "flux": 6.5, "zern": np.array([12.0, -8.0]), "c": 3.0}
    with jax.enable_x64(True):
        theta = lay.pack(user)
        np.testing.assert_allclose(np.asarray(theta), [100, -50, 40, 6.5, 12, -8, np.log(3.0)], rtol=1e-12)
        model = lay.unpack_model(theta)
        np.testing.assert_allclose(np.asarray(model["pos"]), np.array([100.0, -50.0]) * 1e-6 * ARC, rtol=1e-12)
        assert float(model["plate"]) == pytest.approx(0.355 * (1 + 40e-6), rel=1e-14)
        assert float(model["flux"]) == pytest.approx(0.5 * 10**6.5, rel=1e-12)
        np.testing.assert_allclose(np.asarray(model["zern"]), [12e-9, -8e-9], rtol=1e-12)
        assert float(model["c"]) == pytest.approx(2 * 3.0 + 1, rel=1e-12)  # the transform acts on user units
        back = lay.from_model(model)
        for k, v in user.items():
            np.testing.assert_allclose(np.asarray(back[k]), v, rtol=1e-10)
    again = gn.Layout.from_dict(lay.to_dict())
    assert again == lay and again.index_map() == lay.index_map()
    assert lay.index_map()[0]["to_model"]["scale"] == pytest.approx(1e-6 * ARC)
    assert lay.index_map()[0]["model_units"] == "rad"


def test_user_units_make_theta_well_scaled():
    """The same physical point in model units spans 13 decades; in user units the entries are O(1–1e3)."""
    ARC = np.pi / 180 / 3600
    lay = gn.Layout({"pos": (2,), "zern": (2,)}, units={"pos": "µas", "zern": "nm"},
                    model_units={"pos": "rad", "zern": "m"})
    with jax.enable_x64(True):
        theta = lay.pack(lay.from_model({"pos": np.array([1e-4, 3e-4]) * ARC, "zern": np.array([1e-8, 2e-8])}))
    np.testing.assert_allclose(np.asarray(theta), [100, 300, 10, 20], rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(units={"x": "nm"}, model_units={"x": "rad"}), r"'x': cannot convert 'nm' to 'rad'.*affine="),
        (dict(model_units={"x": "rad"}), r"'x': model_units 'rad' needs the user's units"),
        (dict(affine={"x": gn.Affine(scale=[1.0, 2.0, 3.0])}), r"'x': Affine scale of shape \(3,\)"),
        (dict(affine={"x": "big"}), r"'x': a model map must be a gnomon.Affine"),
    ],
)
def test_bad_model_maps(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gn.Layout({"x": (2,)}, **kwargs)


def test_affine_rejects_zero_scale_and_nonfinite():
    with pytest.raises(ValueError, match="non-zero"):
        gn.Affine(scale=0.0)
    with pytest.raises(ValueError, match="finite"):
        gn.Affine(offset=float("nan"))
    with pytest.raises(ValueError, match="non-zero nominal"):
        gn.Affine.relative(0.0)


def test_unit_denominators_take_aliases_too():
    from gnomon.thetaspace.units import conversion_factor, normalize_unit

    assert normalize_unit("as/px") == "arcsec/pix"
    assert conversion_factor("arcsec/px", "mas/pix") == pytest.approx(1e3)
    with pytest.raises(ValueError, match=r"known families: .*pixel.*time"):
        conversion_factor("nm", "s")
