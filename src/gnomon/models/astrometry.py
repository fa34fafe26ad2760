r"""Binary-star astrometry: a polychromatic diffraction-limited imager, written from the physics in JAX.

Two point sources (a primary A and a companion B) are imaged through a circular aperture of diameter
:math:`D` whose wavefront carries Zernike aberrations. For each wavelength :math:`\lambda` the pupil field is

.. math::  E_\lambda(\mathbf{x}) = A(\mathbf{x})\,\exp\!\big(2\pi i\,\mathrm{OPD}(\mathbf{x})/\lambda\big),
           \qquad \mathrm{OPD} = \sum_{j=4}^{11} a_j Z_j + \mathrm{OPD}_\mathrm{static},

with :math:`A` the (anti-aliased) aperture transmission and :math:`Z_j` the Noll-ordered, unit-RMS Zernike
polynomials (coefficients in nm of RMS optical path difference). Fraunhofer propagation to the detector is a
*matrix Fourier transform* evaluated directly at the detector pixel centres: for a source at angle
:math:`\mathbf{s}` the field at pixel angle :math:`\mathbf{u}` is

.. math::  \tilde E_\lambda(\mathbf{u}) = \sum_{k,l} E_\lambda(x_k, y_l)\,
           e^{-2\pi i\,[x_k (u-s_x) + y_l (v-s_y)]/\lambda}
           = B_y\,E_\lambda\,B_x^{\mathsf T},

two small matrix products (:math:`M\times N` by :math:`N\times N` by :math:`N\times M`) instead of a padded
FFT, so any plate scale and any sub-pixel source offset are exact. The fraction of the source's light in a
pixel of solid angle :math:`p^2` is

.. math::  \mathrm{PSF}_\lambda(\mathbf{u}) = \frac{|\tilde E_\lambda(\mathbf{u})|^2\,\Delta x^2\,p^2}
           {\lambda^2 \sum A\,}\,,

normalised by the aperture's area :math:`\sum A\,\Delta x^2` (the power a uniform plane wave sends through
it), so an unaberrated centred source puts :math:`\pi D^2 p^2/(4\lambda^2)` of its light in the central pixel,
as the Airy pattern does. Pixels are point-sampled at their centres (the detector samples above Nyquist for
0.355"/px and 0.09 m). The image in photons is

.. math::  \mu(\mathbf{u}) = F_A\,\overline{\mathrm{PSF}}(\mathbf{u}-\mathbf{s}_A)
           + F_B\,\overline{\mathrm{PSF}}(\mathbf{u}-\mathbf{s}_B) + b,
           \qquad F_A = \frac{c\,10^L}{1+c},\; F_B = \frac{10^L}{1+c},

:math:`\overline{\mathrm{PSF}}` the spectrally weighted mean over the wavelengths, :math:`c` the contrast
A:B and :math:`L` the log10 total photon count. The pair's midpoint is :math:`(x, y)`; the companion sits
at :math:`+\tfrac{\rho}{2}(\sin\phi, \cos\phi)` from it and the primary at the opposite point
(:math:`\rho` the separation, :math:`\phi` the position angle from +y towards +x).

Twin-image degeneracy: for a centrosymmetric pupil, the phase :math:`-\varphi(-\mathbf{x})` gives the
same intensity as :math:`\varphi(\mathbf{x})`, so negating the even-n Zernikes (Z4, Z5, Z6, Z11) leaves the
image unchanged: an exact second minimum. A known static aberration (default Noll 12–16 of 30, −20, 25,
15, −30 nm) is not mapped onto itself by that symmetry and the fitted modes cannot absorb its twin, so the
degeneracy is broken.

Parameters (the :class:`gnomon.Layout` of :func:`binary_layout`, in θ order):

===============================  ===============  ============  ===========================================
name                             units            block         meaning
===============================  ===============  ============  ===========================================
``binary.x_position_as``         arcsec           astrometry    midpoint of the pair, x
``binary.y_position_as``         arcsec           astrometry    midpoint of the pair, y
``binary.separation_as``         arcsec           astrometry    separation ρ
``binary.position_angle_deg``    deg              astrometry    position angle of B from A, +y towards +x
``binary.log_flux_total``        log10_ph         photometry    log10 of the total photon count
``binary.contrast``              (ratio)          photometry    flux ratio A:B (θ holds log c: positive)
``system.plate_scale_as_per_pix``  arcsec/pix     system        detector plate scale
``primary.zernike_coeffs_nm``    nm               wavefront     Noll 4–11 coefficients, shape (8,)
===============================  ===============  ============  ===========================================
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ARCSEC = math.pi / (180.0 * 3600.0)  # radians per arcsecond

X_POS = "binary.x_position_as"
Y_POS = "binary.y_position_as"
SEPARATION = "binary.separation_as"
POSITION_ANGLE = "binary.position_angle_deg"
LOG_FLUX = "binary.log_flux_total"
CONTRAST = "binary.contrast"
PLATE_SCALE = "system.plate_scale_as_per_pix"
ZERNIKES = "primary.zernike_coeffs_nm"

FIT_NOLL = tuple(range(4, 12))  # the fitted modes: Noll 4–11
EVEN_N_FIT_NOLL = (4, 5, 6, 11)  # their even-radial-order members (negated by the twin-image map)

_SHAPES = {
    X_POS: (),
    Y_POS: (),
    SEPARATION: (),
    POSITION_ANGLE: (),
    LOG_FLUX: (),
    CONTRAST: (),
    PLATE_SCALE: (),
    ZERNIKES: (len(FIT_NOLL),),
}
_UNITS = {
    X_POS: "arcsec",
    Y_POS: "arcsec",
    SEPARATION: "arcsec",
    POSITION_ANGLE: "deg",
    LOG_FLUX: "log10_ph",
    CONTRAST: "",
    PLATE_SCALE: "arcsec/pix",
    ZERNIKES: "nm",
}
_BLOCKS = {
    X_POS: "astrometry",
    Y_POS: "astrometry",
    SEPARATION: "astrometry",
    POSITION_ANGLE: "astrometry",
    LOG_FLUX: "photometry",
    CONTRAST: "photometry",
    PLATE_SCALE: "system",
    ZERNIKES: "wavefront",
}

#: Truth of the testbed-like demo (FACTS.md, "The SHERA domain"); Zernikes in nm RMS.
TRUTH: dict[str, Any] = {
    X_POS: 0.12,
    Y_POS: -0.07,
    SEPARATION: 9.5,
    POSITION_ANGLE: 80.0,
    LOG_FLUX: 6.78,
    CONTRAST: 3.2,
    PLATE_SCALE: 0.355,
    ZERNIKES: (12.0, -8.0, 10.0, 6.0, -9.0, 5.0, -4.0, 7.0),
}


@functools.cache
def binary_layout():
    """The :class:`gnomon.Layout` of the binary-star model (names, units, blocks; contrast positive)."""
    from gnomon.thetaspace.layout import Layout

    return Layout(_SHAPES, transforms={CONTRAST: "positive"}, units=_UNITS, blocks=_BLOCKS,
                  labels={ZERNIKES: [f"Z{j}" for j in FIT_NOLL]})  # Noll indices name the components


# ---------------------------------------------------------------------------------------------- Zernikes
def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order n and signed azimuthal order m of Noll index ``j`` (≥ 1).

    ``m > 0`` is a cos(mφ) term, ``m < 0`` a sin(|m|φ) term; Noll puts cosines at even j and sines at
    odd j."""
    if not isinstance(j, (int, np.integer)) or j < 1:
        raise ValueError(f"Noll index must be an integer >= 1, got {j!r}")
    n, j1 = 0, int(j) - 1
    while j1 > n:
        n += 1
        j1 -= n
    m = (-1) ** j * ((n % 2) + 2 * ((j1 + ((n + 1) % 2)) // 2))
    return n, m


def zernike(j: int, rho: np.ndarray, phi: np.ndarray) -> np.ndarray:
    r"""Noll-normalised Zernike polynomial :math:`Z_j(\rho, \varphi)` (unit RMS over the unit disk).

    :math:`Z_j = \sqrt{n+1}\,R_n^0(\rho)` for m = 0, else :math:`\sqrt{2(n+1)}\,R_n^{|m|}(\rho)\cos(m\varphi)`
    (m > 0) or :math:`\sin(|m|\varphi)` (m < 0), with
    :math:`R_n^{m}(\rho)=\sum_{k=0}^{(n-m)/2}
    \frac{(-1)^k (n-k)!}{k!\,(\frac{n+m}{2}-k)!\,(\frac{n-m}{2}-k)!}\rho^{n-2k}`."""
    n, m = noll_to_nm(j)
    am = abs(m)
    rho = np.asarray(rho, dtype=float)
    phi = np.asarray(phi, dtype=float)
    radial = np.zeros_like(rho)
    for k in range((n - am) // 2 + 1):
        coef = (-1) ** k * math.factorial(n - k) / (
            math.factorial(k) * math.factorial((n + am) // 2 - k) * math.factorial((n - am) // 2 - k)
        )
        radial = radial + coef * rho ** (n - 2 * k)
    if m == 0:
        return math.sqrt(n + 1) * radial
    ang = np.cos(am * phi) if m > 0 else np.sin(am * phi)
    return math.sqrt(2 * (n + 1)) * radial * ang


# ---------------------------------------------------------------------------------------------- set-up
@dataclass(frozen=True)
class Setup:
    """Optical and detector configuration (hashable; defaults: the testbed of FACTS.md).

    Attributes:
      diameter_m: aperture diameter D.
      pupil_npix: pupil samples across D (the pupil grid spans exactly the diameter).
      detector_npix: detector pixels per side (the image is ``(detector_npix, detector_npix)``, rows = y).
      wavelengths_nm: wavelengths of the band (default three over 495–605 nm).
      spectral_weights: relative photon weights per wavelength (default equal); normalised to sum 1.
      static_noll, static_nm: the known static aberration (Noll indices and nm RMS); it breaks the
        twin-image degeneracy. Empty tuples give a centrosymmetric (degenerate) system.
      pupil_supersample: sub-samples per pupil pixel side used to anti-alias the aperture edge.
      background: constant photons per pixel added to the image.
    """

    diameter_m: float = 0.09
    pupil_npix: int = 64
    detector_npix: int = 64
    wavelengths_nm: tuple[float, ...] = (495.0, 550.0, 605.0)
    spectral_weights: tuple[float, ...] | None = None
    static_noll: tuple[int, ...] = (12, 13, 14, 15, 16)
    static_nm: tuple[float, ...] = (30.0, -20.0, 25.0, 15.0, -30.0)
    pupil_supersample: int = 9
    background: float = 0.0

    def __post_init__(self):
        if not self.diameter_m > 0:
            raise ValueError(f"diameter_m must be positive, got {self.diameter_m!r}")
        for name in ("pupil_npix", "detector_npix", "pupil_supersample"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if len(self.wavelengths_nm) < 1 or any(not w > 0 for w in self.wavelengths_nm):
            raise ValueError(f"wavelengths_nm must be positive wavelengths, got {self.wavelengths_nm!r}")
        if self.spectral_weights is not None and (
            len(self.spectral_weights) != len(self.wavelengths_nm)
            or any(w < 0 for w in self.spectral_weights)
            or not sum(self.spectral_weights) > 0
        ):
            raise ValueError(
                f"spectral_weights must be {len(self.wavelengths_nm)} non-negative numbers (one per "
                f"wavelength) with a positive sum, got {self.spectral_weights!r}"
            )
        if len(self.static_noll) != len(self.static_nm):
            raise ValueError(
                f"static_noll {self.static_noll!r} and static_nm {self.static_nm!r} must have equal lengths"
            )
        for j in self.static_noll:
            noll_to_nm(j)

    @property
    def weights(self) -> np.ndarray:
        if self.spectral_weights is None:
            return np.full(len(self.wavelengths_nm), 1.0 / len(self.wavelengths_nm))
        w = np.asarray(self.spectral_weights, dtype=float)
        return w / w.sum()


def testbed_setup(**overrides: Any) -> Setup:
    """The testbed-like set-up of FACTS.md (0.09 m, 64×64 px, 495/550/605 nm), with ``overrides``."""
    return Setup(**overrides)


def circular_pupil(npix: int, supersample: int = 9) -> np.ndarray:
    """Transmission of a circular aperture filling an ``npix × npix`` grid: the area fraction of each pixel
    inside the circle, from ``supersample²`` sub-samples (exactly centrosymmetric)."""
    s = int(supersample)
    # integer sub-sample coordinates in units of 1/(2 s) pixel, centred on the grid centre
    k = np.arange(npix)[:, None] * 2 * s + (2 * np.arange(s)[None, :] - (s - 1)) - (npix - 1) * s
    sub = k.reshape(-1)  # (npix * s,)
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= (npix * s) ** 2
    return inside.reshape(npix, s, npix, s).mean(axis=(1, 3))


# ---------------------------------------------------------------------------------------------- model
class BinaryStarModel:
    """The forward model ``θ -> expected photons per pixel`` for a :class:`Setup`.

    The model is a pure function of θ (jit/grad/vmap friendly); constants (aperture, Zernike basis,
    static OPD, coordinates) are precomputed once in float64 and cast to θ's dtype when traced.

    Example:
      >>> model = BinaryStarModel(testbed_setup(pupil_npix=32, detector_npix=32))
      >>> image = model.image_theta(model.truth_theta())    # (32, 32) expected photons
    """

    def __init__(self, setup: Setup | None = None):
        self.setup = setup = setup if setup is not None else Setup()
        n = setup.pupil_npix
        self.dx = setup.diameter_m / n
        self.pupil_coords = (np.arange(n) - (n - 1) / 2.0) * self.dx  # metres
        self.aperture = circular_pupil(n, setup.pupil_supersample)
        yy, xx = np.meshgrid(self.pupil_coords, self.pupil_coords, indexing="ij")
        rho = np.hypot(xx, yy) / (setup.diameter_m / 2.0)
        phi = np.arctan2(yy, xx)
        self.basis = np.stack([zernike(j, rho, phi) for j in FIT_NOLL]) * (self.aperture > 0)  # (8, n, n)
        static = np.zeros((n, n))
        for j, a in zip(setup.static_noll, setup.static_nm):
            static = static + a * zernike(j, rho, phi)
        self.static_opd_nm = static * (self.aperture > 0)
        self.wavelengths_m = np.asarray(setup.wavelengths_nm, dtype=float) * 1e-9
        self.pixel_offsets = np.arange(setup.detector_npix) - (setup.detector_npix - 1) / 2.0  # in pixels
        self.area_sum = float(self.aperture.sum())
        self._jit_image = jax.jit(self.image_theta)

    # ------------------------------------------------------------------ parameters
    @property
    def layout(self):
        """The model's :class:`gnomon.Layout` (see :func:`binary_layout`)."""
        return binary_layout()

    @staticmethod
    def truth_params(**overrides: Any) -> dict[str, np.ndarray]:
        """The demo truth as constrained values ``{name: array}`` (with ``overrides``)."""
        unknown = sorted(set(overrides) - set(_SHAPES))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; parameters are {list(_SHAPES)}")
        return {k: np.asarray(v, dtype=float) for k, v in {**TRUTH, **overrides}.items()}

    def truth_theta(self, dtype: Any = None, **overrides: Any) -> jnp.ndarray:
        """θ (flat, unconstrained) of :meth:`truth_params`."""
        theta = self.layout.pack(self.truth_params(**overrides))
        return theta if dtype is None else theta.astype(dtype)

    @staticmethod
    def star_positions(params: Mapping[str, Any]) -> jnp.ndarray:
        """Positions (arcsec) of A and B, shape ``(..., 2, 2)``: ``[[x_A, y_A], [x_B, y_B]]``.

        B − A = ρ (sin φ, cos φ) and the midpoint is (x, y)."""
        pa = jnp.deg2rad(params[POSITION_ANGLE])
        half = 0.5 * params[SEPARATION]
        dx, dy = half * jnp.sin(pa), half * jnp.cos(pa)
        x, y = params[X_POS], params[Y_POS]
        a = jnp.stack([x - dx, y - dy], axis=-1)
        b = jnp.stack([x + dx, y + dy], axis=-1)
        return jnp.stack([a, b], axis=-2)

    @staticmethod
    def raw_fluxes(params: Mapping[str, Any]) -> jnp.ndarray:
        """Photon counts ``(..., 2)`` of A and B: ``[c·10^L/(1+c), 10^L/(1+c)]``."""
        total = 10.0 ** params[LOG_FLUX]
        c = params[CONTRAST]
        return jnp.stack([c * total / (1.0 + c), total / (1.0 + c)], axis=-1)

    # ------------------------------------------------------------------ optics
    def opd_nm(self, zernike_coeffs_nm: Any) -> jnp.ndarray:
        """Pupil optical path difference (nm): fitted Noll 4–11 modes plus the static aberration."""
        z = jnp.asarray(zernike_coeffs_nm)
        dt = z.dtype
        return jnp.tensordot(z, jnp.asarray(self.basis, dt), axes=1) + jnp.asarray(self.static_opd_nm, dt)

    def psfs(self, positions_as: Any, zernike_coeffs_nm: Any, plate_scale_as: Any) -> jnp.ndarray:
        """Band-averaged PSFs of point sources at ``positions_as`` ``(S, 2)`` as fractions of each source's
        light per detector pixel, shape ``(S, M, M)``."""
        pos = jnp.asarray(positions_as)
        dt = jnp.result_type(pos.dtype, jnp.asarray(zernike_coeffs_nm).dtype,
                             jnp.asarray(plate_scale_as).dtype)
        cdt = jnp.complex128 if dt == jnp.float64 else jnp.complex64
        lam = jnp.asarray(self.wavelengths_m, dt)  # (L,)
        xp = jnp.asarray(self.pupil_coords, dt)  # (N,)
        opd_m = self.opd_nm(jnp.asarray(zernike_coeffs_nm, dt)) * 1e-9
        phase = (2.0 * jnp.pi / lam)[:, None, None] * opd_m[None]
        field = jnp.asarray(self.aperture, dt)[None] * jnp.exp(1j * phase.astype(cdt))  # (L, N, N) rows = y
        ps = jnp.asarray(plate_scale_as, dt)
        det = jnp.asarray(self.pixel_offsets, dt) * ps  # (M,) arcsec
        u = (det[None, :] - pos[:, 0:1]) * ARCSEC  # (S, M) radians
        v = (det[None, :] - pos[:, 1:2]) * ARCSEC
        # matrix Fourier transform: B[s, l, m, n] = exp(-2πi u_m x_n / λ_l)
        arg_x = (-2.0 * jnp.pi) * u[:, None, :, None] * xp[None, None, None, :] / lam[None, :, None, None]
        arg_y = (-2.0 * jnp.pi) * v[:, None, :, None] * xp[None, None, None, :] / lam[None, :, None, None]
        bx = jax.lax.complex(jnp.cos(arg_x), jnp.sin(arg_x))
        by = jax.lax.complex(jnp.cos(arg_y), jnp.sin(arg_y))
        tmp = jnp.einsum("slyk,lkn->slyn", by, field)  # (S, L, M, N)
        out = jnp.einsum("slyn,slxn->slyx", tmp, bx)  # (S, L, M, M)
        inten = jnp.real(out) ** 2 + jnp.imag(out) ** 2
        scale = jnp.asarray(self.setup.weights, dt) * (self.dx * ps * ARCSEC / lam) ** 2 / self.area_sum
        return jnp.einsum("slyx,l->syx", inten, scale)

    # ------------------------------------------------------------------ image
    def image(self, params: Mapping[str, Any]) -> jnp.ndarray:
        """Expected photons per pixel, ``(M, M)`` (rows = y, columns = x), from constrained values."""
        pos = self.star_positions(params)
        psf = self.psfs(pos, params[ZERNIKES], params[PLATE_SCALE])
        flux = self.raw_fluxes(params).astype(psf.dtype)
        return jnp.einsum("s,syx->yx", flux, psf) + jnp.asarray(self.setup.background, psf.dtype)

    def image_theta(self, theta: Any) -> jnp.ndarray:
        """Expected photons per pixel from flat unconstrained θ."""
        return self.image(self.layout.unpack(theta))

    def simulate(self, key: Any, theta: Any | None = None, num: int | None = None) -> jnp.ndarray:
        """Poisson photon counts (as θ's float dtype) drawn around the image at θ (default: the truth).

        ``num`` draws ``num`` independent images, shape ``(num, M, M)``."""
        theta = self.truth_theta() if theta is None else jnp.asarray(theta)
        mu = self._jit_image(theta)
        shape = mu.shape if num is None else (int(num), *mu.shape)
        return jax.random.poisson(key, mu, shape=shape).astype(mu.dtype)

    def __repr__(self) -> str:
        return f"BinaryStarModel({self.setup!r})"


# ---------------------------------------------------------------------------------------------- objective
def make_objective(model: BinaryStarModel, data: Any, weights_at: Any | None = None):
    r"""Least-squares objective of an image, ``loss(θ) = ½ Σ_p w_p (d_p − μ_p(θ))²``.

    The weights are inverse variances :math:`w_p = 1/\max(\mu_p(\theta_\mathrm{ref}), 1)` fixed at
    ``weights_at`` (a θ: for a simulation, the truth — the known Poisson noise model); with
    ``weights_at=None`` they come from the data, :math:`1/\max(d_p, 1)` (Neyman's χ², biased low in flux
    by about one photon per pixel). Because the weights do not depend on θ, the Gauss–Newton matrix
    :math:`J^\mathsf{T} W J` is exactly the Hessian of this loss at zero residual, and at
    :math:`\theta_\mathrm{ref}` it is the Poisson Fisher information (pixels with μ ≥ 1).

    The objective takes data (``obj.with_data(other_image)``, or batched data in ``optimize_batch``)."""
    from gnomon.objective.objective import Objective

    data = jnp.asarray(data)
    m = model.setup.detector_npix
    if data.shape[-2:] != (m, m):
        raise ValueError(
            f"data must be {m}×{m} images (the set-up's detector), got shape {tuple(data.shape)}")
    if weights_at is None:
        variance = jnp.maximum(data, 1.0)
    else:
        variance = jnp.maximum(model.image_theta(jnp.asarray(weights_at)), 1.0)
    weights = (1.0 / variance).astype(data.dtype)

    def residuals(theta, d):
        return d - model.image_theta(theta)

    return Objective.from_residuals(residuals, model.layout, weights=weights, data=data)


def twin_theta(model: BinaryStarModel, theta: Any) -> jnp.ndarray:
    """θ with the even-radial-order fitted Zernikes (Noll 4, 5, 6, 11) negated: the twin image, identical
    to θ's image when the system is centrosymmetric (no static aberration)."""
    lay = model.layout
    b = lay[ZERNIKES]
    sign = np.ones(lay.size)
    for j in EVEN_N_FIT_NOLL:
        sign[b.start + FIT_NOLL.index(j)] = -1.0
    theta = jnp.asarray(theta)
    return theta * jnp.asarray(sign, theta.dtype)


def constrained_jacobian_diag(theta: Any) -> np.ndarray:
    """d(constrained value)/dθ per θ index (all blocks are elementwise): 1 except c for the log-contrast."""
    lay = binary_layout()
    out = np.ones(lay.size)
    i = lay[CONTRAST].start
    out[i] = float(np.exp(np.asarray(theta)[i]))
    return out


def constrained_vector(theta: Any) -> np.ndarray:
    """The constrained parameter values of θ as one flat vector in θ order (contrast as c, not log c)."""
    lay = binary_layout()
    params = lay.unpack(jnp.asarray(theta))
    return np.concatenate([np.ravel(np.asarray(params[n], dtype=float)) for n in lay.names])


__all__: Sequence[str] = (
    "ARCSEC",
    "BinaryStarModel",
    "Setup",
    "TRUTH",
    "binary_layout",
    "circular_pupil",
    "constrained_jacobian_diag",
    "constrained_vector",
    "make_objective",
    "noll_to_nm",
    "testbed_setup",
    "twin_theta",
    "zernike",
)
