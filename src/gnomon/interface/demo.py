r"""``gnomon demo``: binary-star astrometry end to end (the README's first command).

Steps (each uses gnomon's public API; ``docs/getting-started.md`` walks through them):

1. **Simulate** a Poisson image of a binary star (:mod:`gnomon.models.astrometry`: 0.09 m aperture,
   0.355"/px, 64×64 pixels, 495/550/605 nm, separation 9.5", PA 80°, contrast 3.2, log10 flux 6.78, Noll 4–11
   aberrations plus a known static Noll 12–16 aberration that breaks the twin-image degeneracy).
2. **Objective** from residuals with inverse-variance weights ``1/max(μ_truth, 1)``, so the Gauss–Newton
   matrix :math:`F = J^T W J` is the Poisson Fisher information.
3. **Fisher / CRLB**: ``gn.estimate_curvature(obj, θ_truth, method="gauss_newton", dense=True)``; the
   marginal Cramér–Rao bounds are :math:`\sqrt{\mathrm{diag}\,F^{-1}}`
   (not :math:`\sqrt{1/\mathrm{diag}\,F}`).
4. **MAP** from a start tens to hundreds of σ away with the Zernikes unknown (zero), three ways:
   the legacy *lr_model* (``lr = 1/diag F(θ0)``, plain steps at 0.5), ``preconditioned_gd`` with its
   defaults (Gauss–Newton diagonal, λ_max bound, backtracking) and plain GD at 0.5 in the *whitened eigen*
   coordinates of :math:`F(θ_0)` (``gn.EigenMap``).
5. **NUTS** from the best MAP with the dense inverse Fisher at the MAP as the seeded mass matrix.
6. **Artifacts**: an experiment directory (``manifest.json``, ``runs/<id>/`` per fit and for the posterior
   with ``trace.npz``, ``meta.json``, ``summary.json`` holding ``max_abs_z_vs_truth`` and per parameter
   ``estimate``, ``crlb``, ``truth`` and ``z`` (``sd`` for the posterior), ``signals.npz``, curvature /
   learning-rate / hand-off files), the posterior as ArviZ netCDF with units, ``runs.csv`` and PNG figures
   (errors with ±1σ / ±2σ CRLB bands, the posterior in units of the CRLB); then a table per parameter:
   truth, MAP, CRLB, posterior mean ± sd (digits set by the sd) and the MAP's z-score.

z-scores are :math:`(\hat θ_i - θ_{\mathrm{true},i}) / \mathrm{CRLB}_i` in θ (the contrast enters θ as
log c); the table shows constrained values, with the contrast's CRLB mapped by the delta method.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of a demo run (``quick`` shrinks the optics and the sampling)."""

    pupil_npix: int
    detector_npix: int
    num_steps: int
    num_chains: int
    num_warmup: int
    num_samples: int

    @classmethod
    def for_mode(cls, quick: bool) -> DemoSettings:
        # enough draws that the run's own check passes the reporting bar (R̂ ≤ 1.01 on 15 parameters): with
        # 2 × 150 (quick) and 4 × 250 it warned on the default seed (R̂ 1.021 and 1.015), quick 4 × 700 once (1.011)
        if quick:
            return cls(pupil_npix=32, detector_npix=48, num_steps=150, num_chains=4, num_warmup=100,
                       num_samples=800)
        return cls(pupil_npix=64, detector_npix=64, num_steps=200, num_chains=4, num_warmup=100,
                   num_samples=1000)


#: start offsets from the truth (θ units; the Zernikes start at zero: the wavefront is unknown)
START_OFFSETS = {
    "binary.x_position_as": 0.05,
    "binary.y_position_as": -0.04,
    "binary.separation_as": 0.04,
    "binary.position_angle_deg": 0.3,
    "binary.log_flux_total": -0.02,
    "binary.contrast": 0.05,  # in log c
    "system.plate_scale_as_per_pix": 0.0005,
}

FITS = ("lr_model", "preconditioned_gd", "eigen_gd")


class _Clock:
    def __init__(self, stream: Any):
        self.t0 = time.perf_counter()
        self.stream = stream

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {text}", file=self.stream, flush=True)


def start_theta(model: Any, truth: Any) -> np.ndarray:
    """The demo's start: the truth moved by :data:`START_OFFSETS`, the Zernikes set to zero."""
    lay = model.layout
    th = np.array(truth, dtype=float)
    for name, off in START_OFFSETS.items():
        th[lay[name].start] += off
    z = lay["primary.zernike_coeffs_nm"]
    th[z.start:z.stop] = 0.0
    return th


def z_scores(theta: Any, truth: Any, crlb: np.ndarray) -> np.ndarray:
    """(θ − θ_true) / CRLB per θ index."""
    return (np.asarray(theta, dtype=float) - np.asarray(truth, dtype=float)) / crlb


def run_demo(out: str = "gnomon-demo", quick: bool = False, seed: int = 0, compile_cache: bool = True) -> Path:
    """Run the binary-star demo and write its experiment directory ``out``; return that path.

    Re-running into the same directory with the same settings overwrites its runs; other settings need
    another ``out`` (the manifest records them). ``compile_cache`` turns on JAX's persistent compilation
    cache (:func:`gnomon.enable_compilation_cache`), so that a second demo loads its compiled programs."""
    if compile_cache:
        from gnomon.util.compile_cache import enable_compilation_cache

        where = enable_compilation_cache()
        print(f"JAX compilation cache: {where} (--no-compile-cache to turn it off)", flush=True)
    return run_with_settings(out, DemoSettings.for_mode(quick), seed=seed, quick=quick)


class _Fits(NamedTuple):
    """The three MAP fits of the demo and what they started from."""

    theta0: Any  # the start
    curv0: Any  # the Gauss–Newton curvature at the start (dense)
    emap: Any  # the whitened eigen map of curv0
    traces: dict[str, Any]
    finals: dict[str, np.ndarray]  # each fit's best θ
    best: str  # the fit with the lowest loss


class _Posterior(NamedTuple):
    """The NUTS run from the best MAP and its summaries in θ."""

    trace: Any
    fisher_map: Any  # the Gauss–Newton curvature at the MAP (its inverse seeds the metric)
    mean: np.ndarray
    sd: np.ndarray


def run_with_settings(out: str | Path, cfg: DemoSettings, seed: int = 0, quick: bool = False) -> Path:
    """:func:`run_demo` with explicit sizes (tests use tiny ones)."""
    import jax
    import jax.numpy as jnp

    import gnomon as gn
    from gnomon.io.npzio import write_npz
    from gnomon.models import astrometry as A

    clock = _Clock(sys.stdout)
    out = Path(out)
    setup = A.Setup(pupil_npix=cfg.pupil_npix, detector_npix=cfg.detector_npix)
    exp = _experiment(gn, A, out, cfg, setup, seed, quick)

    # 1. simulate ------------------------------------------------------------------------------------
    model = A.BinaryStarModel(setup)
    layout = model.layout
    truth = model.truth_theta()
    data = model.simulate(jax.random.key(seed), truth)
    clock.say(f"simulated a {cfg.detector_npix}×{cfg.detector_npix} Poisson image, "
              f"{float(jnp.sum(data)):,.0f} photons (seed {seed})")

    # 2. objective -----------------------------------------------------------------------------------
    obj = A.make_objective(model, data, weights_at=truth)

    # 3. Fisher and CRLB at the truth ----------------------------------------------------------------
    fisher = gn.estimate_curvature(obj, truth, method="gauss_newton", dense=True)
    F = np.asarray(fisher.matrix, dtype=np.float64)
    crlb = np.sqrt(np.diag(np.linalg.inv(F)))
    conditional = np.sqrt(1.0 / np.diag(F))
    i_sep = layout["binary.separation_as"].start
    clock.say(f"Fisher matrix {F.shape[0]}×{F.shape[0]} (Gauss–Newton, {fisher.num_grad_evals} grad evals); "
              f"separation CRLB {crlb[i_sep] * 1e6:.0f} µas, {crlb[i_sep] / conditional[i_sep]:.1f}× "
              "sqrt(1/diag F) (separation and plate scale correlate)")

    fits = _maps(gn, obj, model, truth, crlb, cfg, clock)  # 4. MAP three ways
    post = _nuts(gn, obj, layout, fits, truth, crlb, cfg, seed, clock)  # 5. NUTS hand-off

    # 6. artifacts -----------------------------------------------------------------------------------
    write_npz(out / "data.npz", {"image": np.asarray(data), "truth_theta": np.asarray(truth),
                                 "fisher": F, "crlb": crlb, "theta0": np.asarray(fits.theta0)})
    signals, post_sig, run_dirs = _save_runs(gn, A, exp, layout, truth, crlb, fits, post, seed)
    table = exp.aggregate(output=out / "runs.csv")
    clock.say(f"wrote experiment {out} ({len(table)} runs, posterior netCDF, runs.csv)")

    # figures ----------------------------------------------------------------------------------------
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    written = _figures(gn, figs, signals, post_sig, fits.traces, fits.emap, fits.best,
                       gn.cramer_rao(F, truth, layout))
    clock.say(f"wrote {len(written)} figures to {figs}")

    # table ------------------------------------------------------------------------------------------
    print()
    print(_table(layout, layout.index_labels(), truth, fits.finals[fits.best], crlb, post.mean, post.sd, fits.best))
    print()
    print(f"experiment:  {out}/manifest.json, {out}/runs.csv, {out}/data.npz")
    for d in run_dirs.values():
        files = sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
        print(f"  {d.relative_to(out)}: {', '.join(files)}")
    print(f"figures:     {', '.join(str(p.relative_to(out)) for p in written)}")
    print(f"next:        gnomon show {run_dirs['nuts']}   ·   gnomon aggregate {out} --params binary.separation_as")
    return out


def _experiment(gn: Any, A: Any, out: Path, cfg: DemoSettings, setup: Any, seed: int, quick: bool) -> Any:
    """The demo's experiment, made first: a directory holding another demo's runs is refused before any
    work."""
    manifest = {
        "description": "gnomon demo: binary-star astrometry (simulate → Fisher → MAP ×3 → NUTS)",
        "datasets": {"simulated_image": f"BinaryStarModel Poisson draw, seed {seed}"},
        "sweep": {"quick": bool(quick), "seed": int(seed), "settings": asdict(cfg)},
        "setup": {k: getattr(setup, k) for k in ("diameter_m", "pupil_npix", "detector_npix",
                                                  "wavelengths_nm", "static_noll", "static_nm")},
        "truth": {k: (list(v) if isinstance(v, tuple) else v) for k, v in A.TRUTH.items()},
    }
    try:
        return gn.Experiment(out, manifest=manifest,
                             diagnostics=gn.DiagnosticsConfig(signals=True, curvature=True))
    except ValueError as exc:
        raise ValueError(f"{out} holds a demo run with other settings (quick/seed); choose another "
                         f"directory with --out DIR. Details: {exc}") from None


def _maps(gn: Any, obj: Any, model: Any, truth: Any, crlb: np.ndarray, cfg: DemoSettings, clock: _Clock) -> _Fits:
    """Step 4: the MAP three ways from :func:`start_theta` — lr_model, preconditioned_gd and plain GD in the
    whitened eigen coordinates of the Gauss–Newton matrix at the start."""
    import jax.numpy as jnp

    layout = model.layout
    theta0 = jnp.asarray(start_theta(model, truth), dtype=truth.dtype)
    curv0 = gn.estimate_curvature(obj, theta0, method="gauss_newton", dense=True)
    traces: dict[str, Any] = {}
    traces["lr_model"] = gn.optimize(
        obj, theta0, "preconditioned_gd", curvature=gn.Curvature.from_diag(curv0.diag, method="gauss_newton"),
        learning_rate=0.5, power=1.0, safeguard="none", num_steps=cfg.num_steps)
    traces["preconditioned_gd"] = gn.optimize(obj, theta0, "preconditioned_gd", num_steps=cfg.num_steps)
    emap = gn.EigenMap.from_matrix(np.asarray(curv0.matrix, dtype=np.float64), theta0, whiten=True,
                                   layout=layout)
    obj_z = obj.reparameterize(emap)
    traces["eigen_gd"] = gn.optimize(obj_z, jnp.zeros(obj_z.dim, truth.dtype), "gd", learning_rate=0.5,
                                     num_steps=cfg.num_steps)
    finals = {k: np.asarray(t.decoded_theta()[t.best_index]) for k, t in traces.items()}
    best = min(traces, key=lambda k: float(traces[k].best_loss))
    for k, t in traces.items():
        clock.say(f"MAP by {k:<17} loss {float(t.best_loss):.3f} after {t.num_steps} steps, "
                  f"max|z| {np.abs(z_scores(finals[k], truth, crlb)).max():.2f}")
    return _Fits(theta0, curv0, emap, traces, finals, best)


def _nuts(gn: Any, obj: Any, layout: Any, fits: _Fits, truth: Any, crlb: np.ndarray, cfg: DemoSettings, seed: int,
          clock: _Clock) -> _Posterior:
    """Step 5: NUTS from the best MAP, its metric seeded by the dense inverse of the Fisher matrix there (the
    curvature hand-off)."""
    import jax
    import jax.numpy as jnp

    theta_map = jnp.asarray(fits.finals[fits.best], dtype=truth.dtype)
    fisher_map = gn.estimate_curvature(obj, theta_map, method="gauss_newton", dense=True)
    posterior = gn.sample(obj, init=fits.traces[fits.best], key=jax.random.key(seed + 1),
                          num_chains=cfg.num_chains, num_warmup=cfg.num_warmup, num_samples=cfg.num_samples,
                          inverse_mass_matrix=fisher_map, warmup=gn.warmup(dense=True), progress=False)
    draws = np.asarray(posterior.theta, dtype=float).reshape(-1, layout.size)
    post_mean, post_sd = draws.mean(axis=0), draws.std(axis=0, ddof=1)
    n_steps = float(np.mean(np.asarray(posterior.stats["n_steps"])))
    clock.say(f"NUTS {cfg.num_chains}×{cfg.num_samples} draws (+{cfg.num_warmup} warmup), "
              f"{int(posterior.num_grad_evals):,} grad evals, {n_steps:.1f} leapfrog steps per draw, "
              f"posterior sd / CRLB {np.median(post_sd / crlb):.2f} (median)")
    return _Posterior(posterior, fisher_map, post_mean, post_sd)


def _save_runs(gn: Any, A: Any, exp: Any, layout: Any, truth: Any, crlb: np.ndarray, fits: _Fits,
               post: _Posterior, seed: int) -> tuple[dict[str, Any], Any, dict[str, Path]]:
    """Step 6: one run per MAP fit and one for the posterior, each with its signals, the true values and the
    marginal CRLB per named parameter; returns ``(signals per fit, posterior signals, run directories)``."""
    from gnomon.recipes.astrometry import add_signals

    # the true values exactly as set (float64), not θ_truth decoded at JAX's precision
    truth_params = {k: np.asarray(A.TRUTH[k], dtype=np.float64) for k in layout.names}
    # the marginal CRLB per named parameter in its own units (the contrast's through the delta method):
    # saved as crlb.<label> in summary.json, and drawn as ±1σ / ±2σ bands in the figures
    labels = layout.index_labels()
    crlb_params = {lab: float(crlb[i] * j)
                   for i, (lab, j) in enumerate(zip(labels, A.constrained_jacobian_diag(truth)))}
    signals: dict[str, Any] = {}
    run_dirs: dict[str, Path] = {}
    for k, t in fits.traces.items():
        decoder = fits.emap if k == "eigen_gd" else layout
        sig = gn.Signals.from_trace(t, decoder, truth=truth_params, crlb=crlb_params, transforms=[add_signals])
        signals[k] = sig
        z = z_scores(fits.finals[k], truth, crlb)
        extra: dict[str, Any] = {}
        if "lr_vec" in t.extras:
            extra = {"precond": t.extras["lr_vec"],
                     "diagnostics": gn.DiagnosticsConfig(signals=True, curvature=True, precond=True)}
        run_dirs[k] = exp.save(
            f"map-{k}", t, layout=layout, overwrite=True, signals=sig, crlb=crlb_params, truth=truth_params,
            curvature=fits.curv0 if k != "preconditioned_gd" else None,
            meta={"fit": k, "start": "truth + START_OFFSETS, Zernikes 0", "seed": seed},
            summary={"max_abs_z_vs_truth": float(np.abs(z).max()), "fit": k}, **extra)
    post_sig = gn.Signals.from_trace(post.trace, layout, truth=truth_params, crlb=crlb_params,
                                     transforms=[add_signals])
    z_post = z_scores(post.mean, truth, crlb)
    run_dirs["nuts"] = exp.save(
        "posterior-nuts", post.trace, layout=layout, overwrite=True, signals=post_sig, curvature=post.fisher_map,
        crlb=crlb_params, truth=truth_params,
        handoff=gn.HandOff.from_trace(post.trace), arviz=True,
        diagnostics=gn.DiagnosticsConfig(signals=True, curvature=True, handoff=True),
        meta={"fit": "nuts", "init": f"map-{fits.best}", "seed": seed},
        summary={"max_abs_z_vs_truth": float(np.abs(z_post).max()), "fit": "nuts",
                 "posterior_sd_over_crlb_median": float(np.median(post.sd / crlb))})
    return signals, post_sig, run_dirs


def _figures(gn: Any, figs: Path, signals: dict, post_sig: Any, traces: dict, emap: Any,
             best: str, cr: Any = None) -> list[Path]:
    import matplotlib.pyplot as plt

    written: list[Path] = []

    def keep(fig: Any, name: str) -> None:
        path = figs / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    recipe = gn.recipes.get_recipe("astrometry")
    keep(recipe(signals[best], suptitle=f"astrometry: MAP by {best}, errors vs truth"), "astrometry_map.png")
    keep(recipe(post_sig, suptitle="astrometry: NUTS chains, errors vs truth"), "astrometry_posterior.png")
    # loss histories of the three optimizers on one axis, relative to the best loss reached
    keep(gn.plot.loss(traces, relative_to="best", floor=1e-3, logy=True, figsize=(7.0, 4.2),
                      title="MAP: legacy lr_model vs preconditioned_gd vs whitened eigen GD"),
         "loss_histories.png")
    keep(gn.plot.eigen_spectrum(emap, title="Fisher eigen spectrum at the start (normalised)"),
         "eigen_spectrum.png")
    names = ["binary.separation_as", "system.plate_scale_as_per_pix", "binary.x_position_as",
             "binary.position_angle_deg"]
    keep(gn.plot.trace_dist(post_sig, names), "posterior_trace.png")
    keep(gn.plot.pair(post_sig, names[:3], crlb=cr), "posterior_pair.png")  # truth stars, CRLB ellipses
    # every parameter's posterior relative to the truth in units of its CRLB: one scale for all
    from gnomon.signals.transforms import residual_in_sigma

    params = list(post_sig.names_by_role("parameter"))
    zsig = post_sig.apply(*[residual_in_sigma(n) for n in params])
    forest = gn.plot.forest(zsig, [f"{n}_z" for n in params], figsize=(7.0, 6.8))
    forest.suptitle("NUTS posterior − truth in units of the CRLB (50% and 94% intervals)", fontsize=10)
    keep(forest, "posterior_forest.png")
    return written


def _table(layout: Any, labels: list[str], truth: Any, theta_map: Any, crlb: np.ndarray,
           post_mean: np.ndarray, post_sd: np.ndarray, best: str) -> str:
    from gnomon.models.astrometry import constrained_jacobian_diag, constrained_vector

    t_c = constrained_vector(truth)
    m_c = constrained_vector(theta_map)
    jac = constrained_jacobian_diag(truth)
    # posterior mean/sd of the constrained values: elementwise transforms, so map each draw summary by the
    # delta method (exact for the identity blocks)
    pm_c = constrained_vector(post_mean)
    ps_c = post_sd * constrained_jacobian_diag(post_mean)
    z = z_scores(theta_map, truth, crlb)
    map_head = f"MAP ({best})"
    mw = max(22, len(map_head) + 2)  # a column never runs into the one before it
    head = f"{'parameter':<34}{'truth':>12}{map_head:>{mw}}{'CRLB':>11}{'posterior mean ± sd':>26}{'z':>7}"
    from gnomon.util.format import format_uncertain

    rows = [head, "-" * len(head)]
    for i, lab in enumerate(labels):
        rows.append(f"{lab:<34}{t_c[i]:>12.6g}{m_c[i]:>{mw}.8g}{crlb[i] * jac[i]:>11.3g}"
                    f"{format_uncertain(pm_c[i], ps_c[i]):>26}{z[i]:>7.2f}")
    rows.append(f"max |z| of the MAP: {np.abs(z).max():.2f} over {len(labels)} parameters "
                "(z = (MAP − truth) / marginal CRLB)")
    return "\n".join(rows)
