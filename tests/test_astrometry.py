"""Binary-star astrometry model: physics against independent references (closed forms, Airy, Parseval,
exact symmetries, autodiff Hessians, dLux when installed)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import j1

import gnomon as gn
from gnomon.models import astrometry as A

SMALL = dict(pupil_npix=32, detector_npix=32)
Z_TEST = np.array([12.0, -8.0, 10.0, 6.0, -9.0, 5.0, -4.0, 7.0])


def _airy_fraction(r_rad, lam, d):
    """Fraction of a point source's light per unit solid angle of the Airy pattern (∫ = 1)."""
    x = np.pi * d * np.asarray(r_rad, float) / lam
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(x == 0, 1.0, (2 * j1(x) / np.where(x == 0, 1.0, x)) ** 2)
    return a * np.pi * d**2 / (4 * lam**2)


def _params(**kw):
    return A.BinaryStarModel.truth_params(**kw)


# ------------------------------------------------------------------------------------------ Zernikes
def test_noll_indices_match_the_published_table():
    table = {1: (0, 0), 2: (1, 1), 3: (1, -1), 4: (2, 0), 5: (2, -2), 6: (2, 2), 7: (3, -1), 8: (3, 1),
             9: (3, -3), 10: (3, 3), 11: (4, 0), 12: (4, 2), 13: (4, -2), 14: (4, 4), 15: (4, -4),
             16: (5, 1), 22: (6, 0)}
    for j, nm in table.items():
        assert A.noll_to_nm(j) == nm, j
    with pytest.raises(ValueError, match="Noll index"):
        A.noll_to_nm(0)


def test_zernikes_match_closed_forms_and_are_orthonormal():
    rng = np.random.default_rng(1)
    rho, phi = rng.uniform(0, 1, 50), rng.uniform(-np.pi, np.pi, 50)
    closed = {
        4: np.sqrt(3) * (2 * rho**2 - 1),
        5: np.sqrt(6) * rho**2 * np.sin(2 * phi),
        6: np.sqrt(6) * rho**2 * np.cos(2 * phi),
        7: np.sqrt(8) * (3 * rho**3 - 2 * rho) * np.sin(phi),
        8: np.sqrt(8) * (3 * rho**3 - 2 * rho) * np.cos(phi),
        9: np.sqrt(8) * rho**3 * np.sin(3 * phi),
        10: np.sqrt(8) * rho**3 * np.cos(3 * phi),
        11: np.sqrt(5) * (6 * rho**4 - 6 * rho**2 + 1),
        12: np.sqrt(10) * (4 * rho**4 - 3 * rho**2) * np.cos(2 * phi),
        16: np.sqrt(12) * (10 * rho**5 - 12 * rho**3 + 3 * rho) * np.cos(phi),
    }
    for j, ref in closed.items():
        np.testing.assert_allclose(A.zernike(j, rho, phi), ref, atol=1e-12, err_msg=f"Z{j}")
    # orthonormal over the unit disk (midpoint rule on a fine grid)
    g = (np.arange(600) + 0.5) / 300 - 1
    xx, yy = np.meshgrid(g, g)
    inside = xx**2 + yy**2 <= 1
    r, p = np.hypot(xx, yy)[inside], np.arctan2(yy, xx)[inside]
    zs = np.stack([A.zernike(j, r, p) for j in range(2, 17)])
    gram = zs @ zs.T / inside.sum()
    np.testing.assert_allclose(gram, np.eye(len(zs)), atol=3e-3)


# ------------------------------------------------------------------------------------------ flux
def test_total_flux_is_exact_over_one_alias_period_parseval():
    """With plate scale λ/D and M = N pixels the detector samples one full period of the MFT, so by
    Parseval Σ image = 10^L · ΣA²/ΣA exactly — for any aberration and any sub-pixel source offsets."""
    lam = 550.0
    n = 24
    ps = lam * 1e-9 / 0.09 / A.ARCSEC
    model = A.BinaryStarModel(A.Setup(pupil_npix=n, detector_npix=n, wavelengths_nm=(lam,)))
    with jax.enable_x64(True):
        params = _params(**{A.PLATE_SCALE: ps, A.SEPARATION: 3.3, A.X_POS: 0.21, A.Y_POS: -0.4})
        img = np.asarray(model.image({k: jnp.asarray(v) for k, v in params.items()}))
    expected = 10**6.78 * (model.aperture**2).sum() / model.aperture.sum()
    assert img.sum() == pytest.approx(expected, rel=1e-10)


def test_unaberrated_psf_is_the_airy_pattern():
    """Centre pixel = πD²p²/(4λ²) and every pixel within 2e-4 of the peak of the analytic Airy pattern."""
    lam = 550e-9
    model = A.BinaryStarModel(A.Setup(pupil_npix=64, detector_npix=33, wavelengths_nm=(550.0,),
                                      static_noll=(), static_nm=()))
    ps = 0.355 * A.ARCSEC
    with jax.enable_x64(True):
        psf = np.asarray(model.psfs(jnp.zeros((1, 2)), jnp.zeros(8), 0.355))[0]
    off = model.pixel_offsets * ps
    airy = _airy_fraction(np.hypot(off[:, None], off[None, :]), lam, 0.09) * ps**2
    np.testing.assert_allclose(psf.max(), np.pi * 0.09**2 * ps**2 / (4 * lam**2), rtol=2e-4)
    assert np.abs(psf - airy).max() < 2e-4 * airy.max()


def test_testbed_counts_match_the_airy_light_on_the_detector():
    """Σ image ≈ Σ_stars F_s · (fraction of the polychromatic Airy pattern on the detector square), the
    fraction integrated independently on a fine grid."""
    setup = A.Setup(static_noll=(), static_nm=())
    model = A.BinaryStarModel(setup)
    params = _params(**{A.ZERNIKES: np.zeros(8)})
    with jax.enable_x64(True):
        img = np.asarray(model.image({k: jnp.asarray(v) for k, v in params.items()}))
        pos = np.asarray(model.star_positions(params))
        flux = np.asarray(model.raw_fluxes(params))
    half = 32 * 0.355
    k = 1200
    g = ((np.arange(k) + 0.5) / k * 2 - 1) * half
    expected = 0.0
    for (sx, sy), f in zip(pos, flux):
        r = np.hypot(g[None, :] - sx, g[:, None] - sy) * A.ARCSEC
        frac = np.mean([_airy_fraction(r, lam * 1e-9, 0.09).sum() for lam in setup.wavelengths_nm])
        expected += f * frac * (2 * half / k * A.ARCSEC) ** 2
    assert 0.9 < expected / 10**6.78 < 0.99  # a few per cent of the light falls off the detector
    assert img.sum() == pytest.approx(expected, rel=3e-3)


# ------------------------------------------------------------------------------------------ geometry
def test_translation_by_whole_pixels_shifts_the_image():
    model = A.BinaryStarModel(A.Setup(**SMALL))
    ps = 0.355
    with jax.enable_x64(True):
        p0 = _params(**{A.ZERNIKES: Z_TEST, A.SEPARATION: 4.0})
        p1 = {**p0, A.X_POS: p0[A.X_POS] + 3 * ps, A.Y_POS: p0[A.Y_POS] - 2 * ps}
        im0 = np.asarray(model.image({k: jnp.asarray(v) for k, v in p0.items()}))
        im1 = np.asarray(model.image({k: jnp.asarray(v) for k, v in p1.items()}))
    # new[i, j] = old[i + 2, j − 3]
    np.testing.assert_allclose(im1[:-2, 3:], im0[2:, :-3], rtol=1e-9, atol=1e-9 * im0.max())
    assert np.abs(im1 - im0).max() > 0.1 * im0.max()


def test_star_positions_follow_separation_and_position_angle():
    rng = np.random.default_rng(3)
    for _ in range(5):
        x, y, rho, pa = rng.normal(), rng.normal(), rng.uniform(1, 10), rng.uniform(-180, 360)
        pos = np.asarray(A.BinaryStarModel.star_positions(
            {A.X_POS: x, A.Y_POS: y, A.SEPARATION: rho, A.POSITION_ANGLE: pa}))
        np.testing.assert_allclose(pos.mean(axis=0), [x, y], atol=1e-5)
        d = pos[1] - pos[0]  # B − A
        assert np.hypot(*d) == pytest.approx(rho, rel=1e-5)
        assert math.degrees(math.atan2(d[0], d[1])) % 360 == pytest.approx(pa % 360, abs=1e-3)
    f = np.asarray(A.BinaryStarModel.raw_fluxes({A.LOG_FLUX: 6.0, A.CONTRAST: 3.0}))
    np.testing.assert_allclose(f, [7.5e5, 2.5e5], rtol=1e-5)


def test_image_places_the_brighter_star_at_its_pixel():
    """Unaberrated, PA 90° (B towards +x), stars on pixel centres: the peaks sit on the expected pixels."""
    model = A.BinaryStarModel(A.Setup(static_noll=(), static_nm=(), **SMALL))
    ps = 0.355
    p = _params(**{A.ZERNIKES: np.zeros(8), A.X_POS: 0.5 * ps, A.Y_POS: 0.5 * ps,
                   A.SEPARATION: 10 * ps, A.POSITION_ANGLE: 90.0})
    img = np.asarray(model.image(p))
    assert np.unravel_index(np.argmax(img), img.shape) == (16, 11)  # A at column 16 − 5
    assert np.unravel_index(np.argmax(img[:, 16:]), img[:, 16:].shape) == (16, 21 - 16)
    peak_ratio = img[16, 11] / img[16, 21]
    assert peak_ratio == pytest.approx(3.2, rel=2e-2)  # contrast (apart from the other star's wings)


def test_swapping_the_stars_and_rotating_the_pair_are_exact_symmetries():
    model = A.BinaryStarModel(A.Setup(static_noll=(), static_nm=(), **SMALL))
    with jax.enable_x64(True):
        base = {k: jnp.asarray(v) for k, v in _params(**{A.ZERNIKES: Z_TEST, A.POSITION_ANGLE: 30.0}).items()}
        im = np.asarray(model.image(base))
        # PA + 180° with contrast 1/c is the same pair with A and B relabelled
        swapped = {**base, A.POSITION_ANGLE: base[A.POSITION_ANGLE] + 180.0, A.CONTRAST: 1 / base[A.CONTRAST]}
        np.testing.assert_allclose(np.asarray(model.image(swapped)), im, rtol=1e-9, atol=1e-9 * im.max())
        # unaberrated and centred, PA + 90° turns the image by a quarter turn: new[i, j] = old[j, M−1−i]
        flat = {**base, A.ZERNIKES: jnp.zeros(8), A.X_POS: jnp.asarray(0.0), A.Y_POS: jnp.asarray(0.0)}
        im0 = np.asarray(model.image(flat))
        im90 = np.asarray(model.image({**flat, A.POSITION_ANGLE: flat[A.POSITION_ANGLE] + 90.0}))
    np.testing.assert_allclose(im90, im0[:, ::-1].T, rtol=1e-9, atol=1e-9 * im0.max())


# ------------------------------------------------------------------------------------------ twin image
def test_twin_image_degeneracy_exists_without_and_is_broken_by_the_static_aberration():
    sym = A.BinaryStarModel(A.Setup(static_noll=(), static_nm=(), **SMALL))
    brk = A.BinaryStarModel(A.Setup(**SMALL))
    with jax.enable_x64(True):
        th = sym.truth_theta(dtype=jnp.float64)
        tw = A.twin_theta(sym, th)
        z = np.asarray(tw[-8:])
        np.testing.assert_allclose(z, Z_TEST * np.array([-1, -1, -1, 1, 1, 1, 1, -1]))
        im, im_tw = np.asarray(sym.image_theta(th)), np.asarray(sym.image_theta(tw))
        np.testing.assert_allclose(im_tw, im, rtol=1e-9, atol=1e-10 * im.max())  # an exact second minimum
        obj = A.make_objective(brk, brk.image_theta(th), weights_at=th)
        assert float(obj.loss(th)) == pytest.approx(0.0, abs=1e-12)
        # with the static aberration the twin is a poor fit: Δχ² in the thousands (noise gives ~1 per pixel)
        assert float(obj.loss(A.twin_theta(brk, th))) > 1e3


# ------------------------------------------------------------------------------------------ objective
def test_gradients_are_finite_and_match_finite_differences():
    model = A.BinaryStarModel(A.Setup(**SMALL))
    with jax.enable_x64(True):
        th = model.truth_theta(dtype=jnp.float64)
        data = model.simulate(jax.random.key(0), th)
        obj = A.make_objective(model, data, weights_at=th)
        th1 = th + 1e-3 * jnp.arange(th.size)
        loss = jax.jit(obj.loss)
        g = np.asarray(jax.jit(jax.grad(obj.loss))(th1))
        assert np.all(np.isfinite(g))
        for i in (0, 3, 5, 6, 10):
            e = jnp.zeros_like(th).at[i].set(1e-6)
            fd = (float(loss(th1 + e)) - float(loss(th1 - e))) / 2e-6
            assert g[i] == pytest.approx(fd, rel=1e-4, abs=1e-4), i
    with jax.enable_x64(False):  # float32 runs and stays finite too
        th32 = model.truth_theta(dtype=jnp.float32)
        obj32 = A.make_objective(model, model.simulate(jax.random.key(0), th32), weights_at=th32)
        val, g32 = jax.jit(obj32.value_and_grad)(th32)
        assert g32.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(g32)))


def test_gauss_newton_is_the_hessian_at_zero_residual_and_the_poisson_fisher():
    model = A.BinaryStarModel(A.Setup(background=2.0, **SMALL))  # μ ≥ 2: the max(μ, 1) floor is inactive
    with jax.enable_x64(True):
        th = model.truth_theta(dtype=jnp.float64)
        mu = model.image_theta(th)
        obj = A.make_objective(model, mu, weights_at=th)
        jac = jax.jit(jax.jacfwd(lambda t: obj.residuals(t).ravel()))(th)
        gn_mat = np.asarray(jac.T @ (obj.weights.ravel()[:, None] * jac))
        hess = np.asarray(jax.jit(jax.hessian(obj.loss))(th))
        np.testing.assert_allclose(gn_mat, hess, rtol=1e-7, atol=1e-9 * np.abs(hess).max())

        def poisson_nll(t):  # expected Poisson NLL Hessian at d = μ is the Fisher information JᵀM⁻¹J
            m = model.image_theta(t)
            return jnp.sum(m - mu * jnp.log(m))

        fisher = np.asarray(jax.jit(jax.hessian(poisson_nll))(th))
        np.testing.assert_allclose(gn_mat, fisher, rtol=1e-7, atol=1e-9 * np.abs(fisher).max())
        assert np.all(np.linalg.eigvalsh(gn_mat) > 0)


def test_simulate_draws_poisson_counts_around_the_image():
    model = A.BinaryStarModel(A.Setup(pupil_npix=16, detector_npix=8))
    th = model.truth_theta(**{A.LOG_FLUX: 3.0, A.SEPARATION: 1.0})
    mu = np.asarray(model.image_theta(th))
    draws = np.asarray(model.simulate(jax.random.key(1), th, num=2000))
    assert draws.shape == (2000, 8, 8) and draws.dtype == np.float32
    assert np.all(draws == np.round(draws)) and draws.min() >= 0
    se = np.sqrt(mu / 2000)
    assert np.abs(draws.mean(0) - mu).max() < 5 * se.max()
    big = mu > 20
    np.testing.assert_allclose(draws.var(0)[big], mu[big], rtol=0.2)  # Poisson: variance = mean
    np.testing.assert_array_equal(model.simulate(jax.random.key(1), th, num=2000), draws)  # reproducible


def test_layout_names_units_blocks_and_truth():
    lay = A.binary_layout()
    assert isinstance(lay, gn.Layout) and lay.size == 15
    assert lay.names == (
        "binary.x_position_as", "binary.y_position_as", "binary.separation_as",
        "binary.position_angle_deg", "binary.log_flux_total", "binary.contrast",
        "system.plate_scale_as_per_pix", "primary.zernike_coeffs_nm",
    )
    assert lay["primary.zernike_coeffs_nm"].shape == (8,)
    assert {b.name: b.units for b in lay.blocks}["binary.separation_as"] == "arcsec"
    assert lay["primary.zernike_coeffs_nm"].units == "nm"
    assert lay["system.plate_scale_as_per_pix"].units == "arcsec/pix"
    assert set(lay.group_indices()) == {"astrometry", "photometry", "system", "wavefront"}
    th = A.BinaryStarModel(A.Setup(**SMALL)).truth_theta()
    assert float(th[lay["binary.contrast"].start]) == pytest.approx(math.log(3.2), rel=1e-6)
    back = lay.unpack(th)
    for k, v in A.TRUTH.items():
        np.testing.assert_allclose(np.asarray(back[k]), np.asarray(v), rtol=1e-6)
    np.testing.assert_allclose(A.constrained_vector(th)[5], 3.2, rtol=1e-6)
    np.testing.assert_allclose(A.constrained_jacobian_diag(th)[5], 3.2, rtol=1e-6)


def test_float32_image_agrees_with_float64():
    model = A.BinaryStarModel(A.Setup(**SMALL))
    im32 = np.asarray(model.image_theta(model.truth_theta(dtype=jnp.float32)))
    with jax.enable_x64(True):
        im64 = np.asarray(model.image_theta(model.truth_theta(dtype=jnp.float64)))
    assert im32.dtype == np.float32
    np.testing.assert_allclose(im32, im64, rtol=1e-3, atol=2e-5 * im64.max())


def test_bad_configuration_and_data_raise_clear_errors():
    with pytest.raises(ValueError, match="static_noll"):
        A.Setup(static_noll=(12,), static_nm=(1.0, 2.0))
    with pytest.raises(ValueError, match="spectral_weights"):
        A.Setup(spectral_weights=(1.0,))
    with pytest.raises(ValueError, match="pupil_npix"):
        A.Setup(pupil_npix=0)
    model = A.BinaryStarModel(A.Setup(**SMALL))
    with pytest.raises(ValueError, match="32×32"):
        A.make_objective(model, np.zeros((10, 10)))
    with pytest.raises(ValueError, match="unknown parameter"):
        A.BinaryStarModel.truth_params(separation=1.0)


def test_agrees_with_dlux_to_1e6():
    """Cross-check the propagation against dLux (same aperture and OPD arrays; dLux normalises by the
    transmitted power ΣA², gnomon by the aperture area ΣA)."""
    dl = pytest.importorskip("dLux")
    model = A.BinaryStarModel(A.Setup(pupil_npix=32, detector_npix=24))
    pos = np.array([[0.8, -0.45], [-2.1, 1.3]])
    with jax.enable_x64(True):
        mine = np.asarray(model.psfs(jnp.asarray(pos), jnp.asarray(Z_TEST), 0.355))
        opd = np.asarray(model.opd_nm(jnp.asarray(Z_TEST))) * 1e-9
        optics = dl.AngularOpticalSystem(
            wf_npixels=32, diameter=0.09,
            layers=[("pupil", dl.layers.Optic(transmission=jnp.asarray(model.aperture), opd=jnp.asarray(opd),
                                              normalise=True))],
            psf_npixels=24, psf_pixel_scale=0.355, oversample=1)
        wl = jnp.asarray(model.wavelengths_m)
        ref = np.stack([np.asarray(optics.propagate(wl, offset=jnp.asarray(p * A.ARCSEC))) for p in pos])
    ref = ref * (model.aperture**2).sum() / model.aperture.sum()
    np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-6 * ref.max())
