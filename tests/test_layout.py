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
