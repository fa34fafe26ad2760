"""A dLux binary star in the user's units, end to end through gnomon's public API.

The workflow of a binary-star astrometry study (FACTS.md, "The SHERA domain") on a differentiable optics model:

1. a dLux ``Telescope`` (``AngularOpticalSystem`` + ``BinarySource``) — the model takes radians, metres and
   the *mean* flux of the pair;
2. ``gn.Layout.from_module``: θ names leaves of the model by zodiax paths and holds them in the user's units
   (µas, arcsec, deg, log10 photons, ppm of the nominal plate scale, nm), with Noll labels on the Zernikes;
3. ``gn.Objective.from_likelihood`` with Poisson noise;
4. the expected Fisher (``method="fisher"``) and the Cramér–Rao bound per named parameter, plus a derived
   quantity (the companion's offset from the primary along x, by the delta method);
5. a preconditioned MAP fit and NUTS seeded by the curvature at the MAP — with the defaults only: for a likelihood
   objective both take its expected Fisher (``info["curvature"]`` says so; a curvature that came out non-finite
   would fall back with a warning rather than be used);
6. a run directory per fit (``gn.save_run``, the bounds in summary.json) and figures.

Small on purpose (48-px pupil, 24×24 detector, two wavelengths): about a minute on two CPU cores.
Run: ``python examples/dlux_binary.py [--out dlux-runs] [--samples 300]``. Needs ``pip install gnomon[dlux]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gnomon as gn

NOLL = (4, 5, 6, 7)  # fitted Zernike modes
STATIC_NOLL, STATIC_NM = (8, 9, 10), (25.0, -20.0, 15.0)  # a known static aberration: breaks the twin image
PLATE_SCALE = 0.355  # arcsec / pixel, nominal


def zernikes(noll, npix: int) -> np.ndarray:
    """Unit-RMS Noll Zernikes 4–10 on an ``npix`` grid over the unit disk (numpy; ``dLux.utils.zernike_basis``
    gives the same modes but takes seconds evaluated op by op)."""
    c = (np.arange(npix) + 0.5) / npix * 2 - 1
    x, y = np.meshgrid(c, c)
    r, phi = np.hypot(x, y), np.arctan2(y, x)
    modes = {4: np.sqrt(3) * (2 * r**2 - 1), 5: np.sqrt(6) * r**2 * np.sin(2 * phi),
             6: np.sqrt(6) * r**2 * np.cos(2 * phi), 7: np.sqrt(8) * (3 * r**3 - 2 * r) * np.sin(phi),
             8: np.sqrt(8) * (3 * r**3 - 2 * r) * np.cos(phi), 9: np.sqrt(8) * r**3 * np.sin(3 * phi),
             10: np.sqrt(8) * r**3 * np.cos(3 * phi)}
    return np.stack([modes[j] * (r <= 1) for j in noll])


def build_telescope(wf_npixels: int = 48, psf_npixels: int = 24):
    """A 0.09 m circular pupil with four free Zernikes (in metres, as dLux takes them) and a binary."""
    import dLux as dl

    diameter = 0.09
    c = (np.arange(wf_npixels) + 0.5) / wf_npixels * 2 - 1
    pupil = jnp.asarray((np.hypot(*np.meshgrid(c, c)) <= 1).astype(float))
    basis = jnp.asarray(zernikes(NOLL, wf_npixels))
    static = jnp.asarray(np.tensordot(np.asarray(STATIC_NM) * 1e-9, zernikes(STATIC_NOLL, wf_npixels), 1))
    layers = [
        ("pupil", dl.BasisOptic(basis, pupil, jnp.zeros(len(NOLL)), normalise=True)),
        ("static", dl.Optic(opd=static)),
    ]
    optics = dl.AngularOpticalSystem(wf_npixels, diameter, layers, psf_npixels, PLATE_SCALE)
    source = dl.BinarySource(wavelengths=jnp.array([520e-9, 580e-9]), contrast=3.2)
    return dl.Telescope(optics, source)


def build_layout(telescope) -> gn.Layout:
    """θ in the user's units: every conversion to dLux's units is declared once, here."""
    return gn.Layout.from_module(
        telescope,
        {
            "position": "source.position",  # midpoint of the pair, (x, y)
            "separation": "source.separation",
            "position_angle": "source.position_angle",
            "log_flux": "source.mean_flux",  # log10 of the *total* photon count
            "contrast": "source.contrast",
            "plate_scale": "optics.psf_pixel_scale",
            "zernikes": "pupil.coefficients",
        },
        units={"position": "µas", "separation": "µas", "position_angle": "deg", "log_flux": "log10_ph",
               "plate_scale": "ppm", "zernikes": "nm"},
        model_units={"position": "rad", "separation": "rad", "position_angle": "rad", "zernikes": "m",
                     "plate_scale": "arcsec"},
        affine={"log_flux": gn.Affine(scale=0.5, log10=True),  # mean flux = 10^L / 2
                "plate_scale": gn.Affine.relative(PLATE_SCALE, "ppm")},  # ppm around the nominal
        transforms={"contrast": "positive"},
        labels={"position": ["x", "y"], "zernikes": [f"Z{j}" for j in NOLL]},
        blocks={"position": "astrometry", "separation": "astrometry", "position_angle": "astrometry",
                "log_flux": "photometry", "contrast": "photometry", "plate_scale": "system",
                "zernikes": "wavefront"},
    )


def companion_dx(p):
    """Derived quantity: x offset of the companion from the primary, in µas (sep·sin PA)."""
    return p["separation"] * jnp.sin(jnp.deg2rad(p["position_angle"]))


def main(out: str = "dlux-runs", num_samples: int = 300, seed: int = 0, *, num_warmup: int = 150,
         wf_npixels: int = 48, psf_npixels: int = 24, figures: bool = True) -> dict:
    t_start = time.perf_counter()
    telescope = build_telescope(wf_npixels, psf_npixels)
    layout = build_layout(telescope)
    print(layout)

    truth = {"position": jnp.array([120.0, -70.0]), "separation": 2.5e6, "position_angle": 80.0, "log_flux": 6.5,
             "contrast": 3.2, "plate_scale": 40.0, "zernikes": jnp.array([12.0, -8.0, 10.0, 6.0])}
    theta_true = layout.pack(truth)

    def predict(theta):  # θ (user units) -> expected photons per pixel
        return layout.apply(telescope, theta).model()

    key_start, key_nuts = jax.random.split(jax.random.key(seed))
    data = np.random.default_rng(seed).poisson(np.asarray(jax.jit(predict)(theta_true))).astype(np.float32)
    obj = gn.Objective.from_likelihood(predict, data, "poisson", layout)

    # the expected Fisher at the truth and the Cramér–Rao bound per named parameter
    fisher = gn.estimate_curvature(obj, theta_true, method="fisher", dense=True)
    crlb = gn.cramer_rao(fisher, theta_true, layout, derived={"companion_dx": (companion_dx, "µas")})
    print(crlb)
    d = np.asarray(fisher.diag)
    print(f"Fisher diagonal in θ (user units) spans {d.max() / d.min():.2g}; condition number "
          f"{np.linalg.cond(np.asarray(fisher.matrix, float)):.2g}")

    # a MAP fit from a start 3 bounds off the truth; the preconditioner is the Fisher diagonal at θ0 by default
    theta0 = theta_true + 3.0 * jnp.sqrt(jnp.diag(jnp.linalg.inv(fisher.matrix))) * jax.random.normal(
        key_start, theta_true.shape, theta_true.dtype)
    fit = gn.optimize(obj, theta0, "preconditioned_gd", num_steps=300, ftol=1e-7)
    z = (np.asarray(layout.unpack(fit.best_theta)["separation"]) - truth["separation"]) / crlb["separation"]
    print(f"MAP: {fit.status} after {fit.num_steps} steps ({fit.info['curvature']['method']} preconditioner); "
          f"separation off the truth by {z:+.2f} bounds")

    # NUTS from the MAP, the metric seeded by the curvature there
    post = gn.sample(obj, init=fit, key=key_nuts, num_chains=2, num_warmup=num_warmup, num_samples=num_samples)
    values = np.asarray(layout.element_values(post.theta)).reshape(-1, len(layout.element_labels()))
    ratios = values.std(0) / crlb.marginal[: values.shape[1]]  # posterior sd / bound, in the user's units
    print(f"NUTS: {post.num_chains}×{post.num_draws} draws; posterior sd / CRLB: "
          + ", ".join(f"{lab} {r:.2f}" for lab, r in zip(layout.element_labels(), ratios)))

    # run directories (bounds and truth in summary.json) and figures
    exp = gn.Experiment(out, manifest={"description": "gnomon dLux binary example"})
    for name, trace in (("map", fit), ("nuts", post)):  # summary.json: estimate./crlb./truth./z.<label>
        gn.save_run(exp.new_run(name), trace, layout, meta={"model": "dLux binary", "seed": seed},
                    crlb=crlb, truth=truth, extra_arrays={"curvature": fisher.to_arrays()})
    if figures:
        sig = gn.Signals.from_trace(fit, layout, truth=truth, crlb=crlb)  # residuals with ±1σ (CRLB) bands
        figs = Path(out) / "figures"
        figs.mkdir(parents=True, exist_ok=True)
        gn.plot.grid(sig, save=figs / "map_grid.png")
        gn.plot.loss(fit, save=figs / "map_loss.png")
        gn.plot.curvature(fisher, layout=layout, save=figs / "fisher_diag.png")
    print(f"runs and figures under {out}/ in {time.perf_counter() - t_start:.0f} s")
    return {"crlb": crlb, "fit": fit, "post": post, "ratios": ratios, "z_separation": float(z), "experiment": exp,
            "objective": obj, "theta_true": theta_true}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="dlux-runs")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    main(a.out, a.samples, a.seed)
