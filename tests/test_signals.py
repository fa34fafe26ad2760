"""Signals: decoding traces into named, unit-carrying arrays; truth and residuals; transforms; units; npz."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gnomon as gn
from gnomon.signals import transforms as tf
from gnomon.signals.signals import Signals
from gnomon.thetaspace import units as U


def _layout():
    return gn.Layout(
        {"x": (), "z": (3,), "s": ()},
        transforms={"s": "positive"},
        units={"x": "arcsec", "z": "nm", "s": "arcsec/pix"},
    )


def _opt_trace(T=12, seed=0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=(T, 5))
    return gn.Trace(
        kind="optimization",
        theta=theta,
        loss=np.linspace(10.0, 1.0, T),
        step=np.arange(T) * 5,
        stats={"grad_norm": np.geomspace(1.0, 1e-3, T)},
        layout=_layout(),
    )


def _sample_trace(C=3, N=20, seed=1):
    rng = np.random.default_rng(seed)
    return gn.Trace(
        kind="sampling",
        theta=rng.normal(size=(C, N, 5)),
        log_prob=rng.normal(size=(C, N)),
        stats={"diverging": np.zeros((C, N), bool)},
        layout=_layout(),
    )


# ---------------------------------------------------------------------------------------------- decoding
def test_from_trace_decodes_named_constrained_values_with_units():
    tr = _opt_trace()
    sig = Signals.from_trace(tr, tr.layout)
    th = np.asarray(tr.theta)
    assert sig.kind == "optimization" and sig.x_label == "step"
    np.testing.assert_array_equal(sig.x, np.arange(12) * 5)
    np.testing.assert_array_equal(sig.values("x"), th[:, 0])
    np.testing.assert_array_equal(sig.values("z"), th[:, 1:4])
    np.testing.assert_allclose(sig.values("s"), np.exp(th[:, 4]), rtol=1e-6)  # positive = exp bijector
    assert sig["z"].shape == (12, 3) and sig["x"].shape == (12,)
    assert (sig.units("x"), sig.units("z"), sig.units("s")) == ("arcsec", "nm", "arcsec/pix")
    assert sig["z"].labels == ("z[0]", "z[1]", "z[2]")
    assert sig.names_by_role("parameter") == ("x", "z", "s")
    assert sig.names_by_role("diagnostic") == ("loss", "grad_norm")
    np.testing.assert_array_equal(sig.values("loss"), tr.loss)


def test_float64_trace_keeps_precision_of_identity_blocks():
    # 9.5 arcsec + 1e-10: float32 would quantise the residual to ~1 µas (1e-6 arcsec)
    layout = gn.Layout({"sep": ()}, units={"sep": "arcsec"})
    theta = np.array([[9.5 + 1e-10], [9.5 + 3e-10]])
    tr = gn.Trace(kind="optimization", theta=theta, loss=np.zeros(2))
    sig = Signals.from_trace(tr, layout, truth={"sep": 9.5})
    np.testing.assert_allclose(sig.residual("sep"), [1e-10, 3e-10], rtol=1e-5)


def test_sampling_signals_have_chain_axis_and_posterior_mean_final():
    tr = _sample_trace()
    sig = Signals.from_trace(tr)
    assert sig.kind == "sampling" and sig.x_label == "draw" and sig.num_chains == 3
    assert sig["x"].shape == (3, 20) and sig["z"].shape == (3, 20, 3)
    np.testing.assert_array_equal(sig.x, np.arange(20))
    np.testing.assert_allclose(sig.final("z"), np.asarray(tr.theta)[..., 1:4].reshape(-1, 3).mean(0))
    assert sig.values("diverging").dtype.kind == "f"


def test_truth_gives_residuals_and_missing_truth_gives_nan_of_same_shape():
    tr = _opt_trace()
    truth = {"x": 0.5, "z": [1.0, 2.0, 3.0], "s": 2.0, "loss": 0.25}
    sig = Signals.from_trace(tr, tr.layout, truth=truth)
    np.testing.assert_allclose(sig.residual("z"), sig.values("z") - np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(sig.residual("x"), sig.values("x") - 0.5)
    assert sig.truth("loss") == 0.25 and sig.truth("x").shape == ()
    bare = Signals.from_trace(tr, tr.layout)
    for name in ("x", "z", "s"):
        r = bare.residual(name)
        assert r.shape == bare.values(name).shape and np.isnan(r).all()
        assert bare.truth(name) is None
    chains = Signals.from_trace(_sample_trace())
    assert chains.residual("z").shape == (3, 20, 3) and np.isnan(chains.residual("z")).all()


def test_truth_as_flat_theta_equals_truth_as_mapping():
    tr = _opt_trace()
    params = {"x": 0.5, "z": np.array([1.0, 2.0, 3.0]), "s": 2.0}
    theta_true = np.asarray(tr.layout.pack(params))
    a = Signals.from_trace(tr, tr.layout, truth=theta_true)
    b = Signals.from_trace(tr, tr.layout, truth=params)
    for n in ("x", "z", "s"):
        np.testing.assert_allclose(a.residual(n), b.residual(n), rtol=1e-6, atol=1e-6)


def test_eigen_trace_decodes_through_the_map():
    layout = _layout()
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 5))
    F = a @ a.T + 5 * np.eye(5)
    ref = rng.normal(size=5)
    emap = gn.EigenMap.from_matrix(F, ref, layout=layout)
    z = rng.normal(size=(7, 5))
    tr = gn.Trace(kind="optimization", z=z, loss=np.zeros(7), thetamap=emap, layout=layout)
    want = np.asarray(emap.to_theta(z))
    for spec in (None, emap):
        sig = Signals.from_trace(tr, spec)
        np.testing.assert_allclose(sig.values("x"), want[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sig.values("z"), want[:, 1:4], rtol=1e-5, atol=1e-6)


def test_callable_decoder_and_no_layout():
    tr = _opt_trace()
    sig = Signals.from_trace(tr, lambda th: {"sum": th.sum(-1)}, units={"sum": "nm"})
    np.testing.assert_allclose(sig.values("sum"), np.asarray(tr.theta).sum(-1))
    assert sig.units("sum") == "nm"
    raw = gn.Trace(kind="optimization", theta=np.ones((4, 2)), loss=np.zeros(4))
    assert Signals.from_trace(raw)["theta"].shape == (4, 2)


def test_diagnostic_renamed_when_a_parameter_has_its_name():
    layout = gn.Layout({"loss": ()})
    tr = gn.Trace(kind="optimization", theta=np.ones((3, 1)), loss=np.arange(3.0))
    sig = Signals.from_trace(tr, layout)
    assert sig["loss"].role == "parameter" and sig["trace.loss"].role == "diagnostic"


def test_invalid_inputs_raise_clear_errors():
    batched = gn.Trace(kind="optimization", theta=np.zeros((2, 3, 5)), loss=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="batched"):
        Signals.from_trace(batched, _layout())
    sig = Signals({"a": np.zeros(4)})
    with pytest.raises(ValueError, match="rows"):
        sig.add("b", np.zeros(5))
    with pytest.raises(ValueError, match="already exists"):
        sig.add("a", np.zeros(4))
    with pytest.raises(ValueError, match="truth has shape"):
        sig.add("v", np.zeros((4, 3)), truth=[1.0, 2.0])
    with pytest.raises(ValueError, match="unknown signal"):
        sig.with_truth({"nope": 1.0})
    with pytest.raises(KeyError, match="signals are"):
        sig["nope"]
    with pytest.raises(ValueError, match="kind"):
        Signals({}, kind="mcmc")


# ---------------------------------------------------------------------------------------------- npz cache
def _assert_same(a: Signals, b: Signals):
    assert a.names == b.names and a.kind == b.kind and a.x_label == b.x_label
    np.testing.assert_array_equal(a.x, b.x)
    for n in a.names:
        sa, sb = a[n], b[n]
        np.testing.assert_array_equal(sa.values, sb.values)
        assert sa.values.dtype == sb.values.dtype
        assert (sa.units, sa.labels, sa.role, sa.scalar) == (sb.units, sb.labels, sb.role, sb.scalar)
        assert (sa.sigma_source, sa.is_error) == (sb.sigma_source, sb.is_error)
        for x, y in ((sa.truth, sb.truth), (sa.sigma, sb.sigma)):
            if x is None:
                assert y is None
            else:
                np.testing.assert_array_equal(x, y)


def test_signals_npz_round_trip(tmp_path):
    tr = _opt_trace()
    sig = Signals.from_trace(tr, tr.layout, truth={"x": 0.5, "z": [1.0, 2.0, 3.0]}, crlb={"x": 1e-4, "z[1]": 0.2})
    sig = sig.apply(tf.summary("z", "rms"), tf.error("x", "x_err", units="µas"))
    assert sig["x_err"].is_error and sig["x_err"].sigma_value == pytest.approx(100.0)
    sig.save(tmp_path / "signals.npz")
    _assert_same(sig, Signals.load(tmp_path / "signals.npz"))
    chains = Signals.from_trace(_sample_trace(), truth={"s": 1.0})
    chains.save(tmp_path / "chains.npz")
    _assert_same(chains, Signals.load(tmp_path / "chains.npz"))
    with np.load(tmp_path / "signals.npz", allow_pickle=False) as z:  # no pickle needed to read it
        assert "values/z" in z.files and "truth/x" in z.files and "truth/s" not in z.files


def test_signals_cache_in_a_run_directory(tmp_path):
    tr = _opt_trace()
    sig = Signals.from_trace(tr, tr.layout, truth={"x": 0.5})
    gn.save_run(tmp_path / "r", tr, extra_arrays={"signals": sig.to_arrays()})
    back = Signals.from_run(gn.load_run(tmp_path / "r"))
    _assert_same(sig, gn.load_run(tmp_path / "r").signals())
    with pytest.raises(ValueError, match=r"takes a loaded run.*gn.load_run\(path\)"):
        Signals.from_run(tmp_path / "r")
    _assert_same(sig, back)
    # a plain {name: array, step} cache (DiagnosticsConfig's default) is read too, with the layout's units
    plain = {"x": np.asarray(tr.theta)[:, 0], "step": np.asarray(tr.step)}
    gn.save_run(tmp_path / "p", tr, extra_arrays={"signals": plain})
    p = Signals.from_run(gn.load_run(tmp_path / "p"), truth={"x": 0.0})
    assert p.units("x") == "arcsec" and "loss" in p
    np.testing.assert_array_equal(p.x, tr.step)
    np.testing.assert_array_equal(p.residual("x"), plain["x"])


def test_corrupt_signals_file_names_the_file(tmp_path):
    path = tmp_path / "signals.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(gn.ArtifactError, match="signals.npz"):
        Signals.load(path)
    np.savez(path, **{"__signals__": np.array("{bad json")})
    with pytest.raises(gn.ArtifactError, match="not a signals file"):
        Signals.load(path)


# ---------------------------------------------------------------------------------------------- transforms
def test_transforms_map_values_and_truth():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(10, 4)) + 5.0
    t = np.array([5.0, 5.5, 4.5, 6.0])
    sig = Signals({"v": v, "a": v[:, 0] * 1e-5}, units={"v": "nm", "a": "arcsec"}, truth={"v": t, "a": 2e-5})
    sig = sig.apply(
        tf.derive("double", lambda x: 2 * x, ["v"], units="nm"),
        tf.error("a", "a_err", units="µas"),
        tf.fractional_error("v", "v_ppm", units="ppm"),
        tf.summary("v", "rms"),
        tf.summary("v", "norm", name="v_norm"),
        tf.summary("v", "meanabs", name="v_ma"),
        tf.rms_error("v", "v_rmse", units="pm"),
        tf.component("v", 2, "v2"),
    )
    np.testing.assert_allclose(sig.values("double"), 2 * v)
    np.testing.assert_allclose(sig.truth("double"), 2 * t)
    np.testing.assert_allclose(sig.values("a_err"), (v[:, 0] * 1e-5 - 2e-5) * 1e6)  # arcsec -> µas
    assert sig.units("a_err") == "µas" and sig.truth("a_err") == 0.0
    np.testing.assert_allclose(sig.values("v_ppm"), 1e6 * (v - t) / t)
    np.testing.assert_allclose(sig.values("v_rms"), np.sqrt((v**2).mean(1)))
    np.testing.assert_allclose(sig.truth("v_rms"), np.sqrt((t**2).mean()))
    np.testing.assert_allclose(sig.values("v_norm"), np.linalg.norm(v, axis=1))
    np.testing.assert_allclose(sig.values("v_ma"), np.abs(v).mean(1))
    np.testing.assert_allclose(sig.values("v_rmse"), 1e3 * np.sqrt(((v - t) ** 2).mean(1)))
    np.testing.assert_allclose(sig.values("v2"), v[:, 2])
    assert sig.truth("v2") == t[2] and sig["double"].role == "derived"


def test_sigma_from_a_crlb_follows_the_transforms():
    """σ (a CRLB) set by name, by component label or from a CRLB result maps through the transforms: an
    error in µas carries σ in µas, a fractional error σ/|t|, a component its own σ, an RMS error
    sqrt(mean σ²); residual_in_sigma is (v − t)/σ."""
    rng = np.random.default_rng(1)
    v = rng.normal(size=(10, 3)) + 5.0
    t = np.array([5.0, 4.0, 6.0])
    a = 0.12 + 1e-5 * rng.normal(size=10)
    sig = Signals({"v": v, "a": a}, units={"v": "nm", "a": "arcsec"}, truth={"v": t, "a": 0.12})
    crlb = type("CRLB", (), {"labels": ["a", "v[0]", "v[1]", "v[2]", "not_plotted"],
                             "marginal": np.array([2e-6, 0.5, 1.0, 2.0, 9.0])})()
    sig = sig.with_sigma(crlb)
    assert sig["a"].sigma_source == "CRLB" and sig["v"].sigma.tolist() == [0.5, 1.0, 2.0]
    sig = sig.apply(
        tf.error("a", "a_err", units="µas"),
        tf.fractional_error("v", "v_ppm", units="ppm"),
        tf.component("v", 1, "v1"),
        tf.rms_error("v", "v_rmse"),
        tf.residual_in_sigma("v"),
        tf.residual_in_sigma("a_err", name="a_z"),
    )
    assert sig["a_err"].sigma_value == pytest.approx(2.0) and sig["a_err"].is_error
    np.testing.assert_allclose(sig["v_ppm"].sigma, 1e6 * np.array([0.5, 1.0, 2.0]) / t)
    assert sig["v1"].sigma_value == 1.0 and sig["v_rmse"].sigma_value == pytest.approx(np.sqrt(5.25 / 3))
    np.testing.assert_allclose(sig.values("v_z"), (v - t) / [0.5, 1.0, 2.0])
    np.testing.assert_allclose(sig.values("a_z"), (a - 0.12) / 2e-6, rtol=1e-9)
    assert sig.units("v_z") == "σ" and sig.truth("v_z").tolist() == [0, 0, 0]
    # chains without a CRLB: residuals in posterior sds; an explicit sigma wins
    ch = Signals({"p": rng.normal(size=(3, 50)) * 2.0 + 1.0}, kind="sampling", truth={"p": 1.0})
    z = ch.apply(tf.residual_in_sigma("p")).values("p_z")
    np.testing.assert_allclose(z, (ch.values("p") - 1.0) / ch.values("p").std(ddof=1))
    np.testing.assert_allclose(ch.apply(tf.residual_in_sigma("p", sigma=4.0)).values("p_z"),
                               (ch.values("p") - 1.0) / 4.0)
    with pytest.raises(ValueError, match=r"sigma given for \['w'\]"):
        sig.with_sigma({"w": 1.0})


def test_run_crlb_and_truth_from_the_summary(tmp_path):
    tr = _opt_trace()
    gn.save_run(tmp_path / "r", tr, crlb={"x": 0.01, "z": [0.1, 0.2, 0.3]}, truth={"x": 0.5, "z": [1, 2, 3],
                                                                                      "s": 1.0})
    sig = gn.load_run(tmp_path / "r").signals()
    assert sig["x"].sigma_value == 0.01 and sig["z"].sigma.tolist() == [0.1, 0.2, 0.3]
    assert sig["x"].truth_value == 0.5 and sig["z"].truth_value.tolist() == [1, 2, 3]
    assert sig["s"].sigma is None and sig["s"].truth_value == 1.0


def test_error_transforms_without_truth_are_nan_with_stable_shape():
    sig = Signals({"v": np.ones((6, 2)), "a": np.ones(6)}, units={"a": "arcsec"})
    sig = sig.apply(
        tf.error("a", units="µas"),
        tf.fractional_error("v"),
        tf.rms_error("v"),
        tf.derive("d", lambda x: x + 1, ["v"]),
    )
    assert sig["a_error"].shape == (6,) and np.isnan(sig.values("a_error")).all()
    assert sig["v_error_ppm"].shape == (6, 2) and np.isnan(sig.values("v_error_ppm")).all()
    assert sig["v_rms_error"].shape == (6,) and np.isnan(sig.values("v_rms_error")).all()
    assert sig.truth("d") is None and not np.isnan(sig.values("d")).any()


def test_transform_registry():
    sig = Signals({"v": np.ones((3, 2))})

    def double(s):
        return {"vv": s._make("vv", 2 * s.values("v"))}

    tf.register_transform("test_double", double, overwrite=True)
    assert "test_double" in tf.available_transforms()
    np.testing.assert_array_equal(sig.apply("test_double").values("vv"), 2 * np.ones((3, 2)))
    with pytest.raises(ValueError, match="unknown transform"):
        sig.apply("no_such_transform")
    with pytest.raises(ValueError, match="already registered"):
        tf.register_transform("test_double", lambda s: s)
    with pytest.raises(ValueError, match="needs signal"):
        sig.apply(tf.derive("x", lambda a: a, ["missing"]))


def test_lazy_transforms_and_providers_import_their_module_on_first_use(tmp_path, monkeypatch):
    """A name registered as "module:attr" imports that module only when first used; an unknown name imports
    the providers once, which may declare it lazily; the module's own registration replaces the lazy one."""
    import sys

    pkg = "gnomon_test_lazy_tf"
    (tmp_path / f"{pkg}_mod.py").write_text(
        "from gnomon.signals.transforms import register_transform\n"
        "@register_transform('test_lazy_self')\n"
        "def triple(s):\n    return {'vvv': s._make('vvv', 3 * s.values('v'))}\n"
        "def square(s):\n    return {'v2': s._make('v2', s.values('v') ** 2)}\n"
    )
    (tmp_path / f"{pkg}_provider.py").write_text(
        "from gnomon.signals.transforms import register_transform\n"
        f"register_transform('test_lazy_square', '{pkg}_mod:square')\n"
        f"register_transform('test_lazy_self', '{pkg}_mod')\n"
    )
    from gnomon.signals import registry as reg

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(reg, "_PROVIDERS", list(reg._PROVIDERS))
    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))
    tf.add_transform_provider(f"{pkg}_provider")
    v = np.arange(6.0).reshape(3, 2)
    sig = Signals({"v": v})
    assert f"{pkg}_mod" not in sys.modules
    np.testing.assert_array_equal(sig.apply("test_lazy_square").values("v2"), v**2)
    assert f"{pkg}_mod" in sys.modules and callable(reg._REGISTRY["test_lazy_square"])
    np.testing.assert_array_equal(sig.apply("test_lazy_self").values("vvv"), 3 * v)
    assert reg._REGISTRY["test_lazy_self"] is sys.modules[f"{pkg}_mod"].triple
    # a lazy declaration after the module registered the callable keeps the callable
    tf.register_transform("test_lazy_self", f"{pkg}_mod")
    assert reg._REGISTRY["test_lazy_self"] is sys.modules[f"{pkg}_mod"].triple
    tf.register_transform("test_lazy_missing", f"{pkg}_mod:nope")
    with pytest.raises(ValueError, match="no attribute 'nope'"):
        sig.apply("test_lazy_missing")
    with pytest.raises(ValueError, match="package.module"):
        tf.register_transform("test_lazy_bad", "a:b:c")
    for m in (f"{pkg}_mod", f"{pkg}_provider"):
        sys.modules.pop(m)


# ---------------------------------------------------------------------------------------------- units
@pytest.mark.parametrize(
    "a, b, f",
    [
        ("arcsec", "mas", 1e3),
        ("arcsec", "µas", 1e6),
        ("as", "uas", 1e6),
        ("deg", "arcsec", 3600.0),
        ("rad", "deg", 180.0 / math.pi),
        ("nm", "m", 1e-9),
        ("m", "nm", 1e9),
        ("frac", "ppm", 1e6),
        ("%", "ppm", 1e4),
        ("arcsec/pix", "mas/pix", 1e3),
    ],
)
def test_conversion_factors(a, b, f):
    assert U.conversion_factor(a, b) == pytest.approx(f, rel=1e-12)


def test_conversion_refuses_other_families():
    for a, b in (("arcsec", "nm"), ("arcsec/pix", "arcsec"), ("log10_ph", "ph"), ("nm", "ppm")):
        with pytest.raises(ValueError, match="cannot convert"):
            U.conversion_factor(a, b)


@pytest.mark.parametrize(
    "unit, values, want",
    [
        ("arcsec", [2e-5, -1e-5], "µas"),
        ("arcsec", [0.02, 0.01], "mas"),
        ("arcsec", [3.0, 1.0], "arcsec"),
        ("nm", [0.3], "pm"),
        ("frac", [4e-7], "ppb"),
        ("frac", [4e-5], "ppm"),
        ("deg", [1e-3], "arcsec"),  # 3.6 arcsec
        ("arcsec/pix", [1e-5], "µas/pix"),
        ("log10_ph", [1e-9], "log10_ph"),
        ("arcsec", [np.nan, 0.0], "arcsec"),
    ],
)
def test_auto_unit(unit, values, want):
    assert U.auto_unit(unit, values) == want


@given(st.floats(min_value=1.5e-6, max_value=900.0), st.sampled_from(["arcsec", "mas", "µas"]))
def test_auto_unit_puts_magnitude_in_one_to_thousand(mag, unit):
    values = np.array([mag, -0.5 * mag])
    target = U.auto_unit(unit, U.convert(values, "arcsec", unit))
    shown = U.typical_magnitude(U.convert(values, "arcsec", target))
    assert 1.0 <= shown < 1000.0 + 1e-9
    back = U.convert(U.convert(values, "arcsec", target), target, "arcsec")
    np.testing.assert_allclose(back, values, rtol=1e-12)
