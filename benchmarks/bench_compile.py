"""Compile time: the first ``gn.optimize(method="preconditioned_gd", num_steps=100)`` vs a bare jitted gradient.

Each measurement runs in a fresh Python process (nothing cached in memory; JAX's persistent compilation cache
is off), on the demo's binary-star astrometry model (``gnomon.models.astrometry``: 64 × 64 Poisson image,
3 wavelengths, D = 15) and, when dLux is installed, a dLux binary (``AngularOpticalSystem`` with an
``AberratedAperture`` of 8 Zernikes and a ``BinarySource``, D = 14; both as weighted-residual objectives):

* **bare**: ``jax.jit(jax.value_and_grad(obj.loss)).lower(θ0, data).compile()``, then 100 calls — what a user's
  own hand-written gradient descent would cost at least;
* **gnomon**: the wall time of the first ``gn.optimize(obj, θ0, "preconditioned_gd", num_steps=100)`` (its
  curvature estimate, compilation of the init and loop programs, and 100 steps), with the trace's own
  ``info["compile_s"]`` and ``info["run_s"]``.

Goal (issue 12): gnomon ≤ 2× bare. Each figure is the best of ``--repeats`` fresh processes, bare and gnomon
interleaved (other jobs on a shared machine only ever slow a run down, and interleaving exposes both to the
same load). Besides wall time, the CPU time of the same span (``time.process_time``, all threads) is printed:
on a loaded machine it is the steadier measure of how much work each side does.

A last line per model: the same first call in a *second* process with ``gn.enable_compilation_cache`` on (a
first process filled the cache), what a user of the CLI or of a campaign pays from the second run on.

Run: ``python benchmarks/bench_compile.py [--repeats 3] [--method preconditioned_gd]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

ARCSEC = 3.141592653589793 / 180 / 3600


def astrometry():
    import jax

    from gnomon.models import astrometry as A

    model = A.BinaryStarModel()
    truth = model.truth_theta()
    data = model.simulate(jax.random.key(0), truth)
    obj = A.make_objective(model, data, weights_at=truth)
    return obj, truth + 0.01 * abs(truth) + 1e-3, data


def dlux():
    """The forward model ``image(θ)`` and its truth (D = 14)."""
    import dLux as dl
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np


    ap = dl.layers.AberratedAperture(dl.layers.CircularAperture(0.045), noll_inds=np.arange(4, 12),
                                     coefficients=np.zeros(8))
    optics = dl.AngularOpticalSystem(64, 0.09, [("aperture", ap)], 32, 0.355, oversample=2)
    source = dl.BinarySource(wavelengths=np.linspace(495e-9, 605e-9, 3), position=np.zeros(2), mean_flux=1e6,
                             separation=3.0 * ARCSEC, position_angle=np.deg2rad(80.0), contrast=3.2)
    telescope = dl.Telescope(optics, source)

    def image(theta):  # θ in user units: arcsec, arcsec, deg, log10 photons, log contrast, Zernikes in nm
        m = eqx.tree_at(
            lambda m: (m.source.position, m.source.separation, m.source.position_angle, m.source.mean_flux,
                       m.source.contrast, m.optics.aperture.coefficients),
            telescope,
            (theta[0:2] * ARCSEC, theta[2] * ARCSEC, jnp.deg2rad(theta[3]), 10.0 ** theta[4], jnp.exp(theta[5]),
             theta[6:14] * 1e-9),
        )
        return m.model()

    truth = jnp.asarray([0.1, -0.05, 3.0, 80.0, 6.0, np.log(3.2), 5.0, -3.0, 2.0, 0.0, 1.0, -2.0, 4.0, 3.0])
    return image, truth


def dlux_residuals():
    import jax
    import jax.numpy as jnp

    import gnomon as gn

    image, truth = dlux()
    data = jax.random.poisson(jax.random.key(0), image(truth) + 1.0).astype(truth.dtype)
    weights = 1.0 / jnp.maximum(image(truth) + 1.0, 1.0)
    obj = gn.Objective.from_residuals(lambda t, d: image(t) + 1.0 - d, 14, weights=weights, data=data)
    return obj, truth + 0.01 * jnp.abs(truth) + 1e-3, data


def dlux_likelihood():
    """The documented path: ``from_likelihood`` (Poisson, the image plus a background of 1 photon per pixel)."""
    import jax
    import jax.numpy as jnp

    import gnomon as gn

    image, truth = dlux()
    predict = _predict(image)
    data = jax.random.poisson(jax.random.key(0), predict(truth)).astype(truth.dtype)
    obj = gn.Objective.from_likelihood(predict, data, "poisson", 14)
    return obj, truth + 0.01 * jnp.abs(truth) + 1e-3, data


def _predict(image):
    def predict(theta):
        return image(theta) + 1.0

    return predict


MODELS = {"astrometry": astrometry, "dlux": dlux_likelihood, "dlux_residuals": dlux_residuals}


def one(model: str, mode: str, method: str) -> dict:
    start = time.perf_counter()
    import jax

    import gnomon as gn

    if mode.startswith("cached:"):  # gnomon with JAX's persistent cache in the given directory
        gn.enable_compilation_cache(mode.split(":", 1)[1], min_compile_time_s=0.0)
    obj, theta0, data = MODELS[model]()
    setup = time.perf_counter() - start
    t, cpu = time.perf_counter(), time.process_time()
    if mode == "bare":
        f = jax.jit(jax.value_and_grad(obj.loss)).lower(theta0, data).compile()
        compile_s = time.perf_counter() - t
        for _ in range(100):
            _, g = f(theta0, data)
        jax.block_until_ready(g)
        total = time.perf_counter() - t
        return {"total": total, "cpu": time.process_time() - cpu, "compile_s": compile_s,
                "run_s": total - compile_s, "setup": setup}
    tr = gn.optimize(obj, theta0, method, num_steps=100)
    total = time.perf_counter() - t
    return {"total": total, "cpu": time.process_time() - cpu, "compile_s": tr.info["compile_s"],
            "run_s": tr.info["run_s"], "setup": setup, "num_grad_evals": int(tr.num_grad_evals)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", default="preconditioned_gd")
    ap.add_argument("--models", default="astrometry,dlux")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.method)))
        return
    models = [m for m in args.models.split(",") if m != "dlux" or _has_dlux()]
    print(f"# first gn.optimize(method={args.method!r}, num_steps=100) vs bare jit(value_and_grad) compile + 100 "
          f"calls; best of {args.repeats} fresh processes")
    print(f"{'model':<12} {'bare s':>8} {'(compile)':>10} {'gnomon s':>9} {'(compile':>9} {'run)':>6} {'ratio':>6}"
          f" {'bare cpu':>9} {'gnomon cpu':>11} {'cpu ratio':>10}")
    for model in models:
        runs = {"bare": [], "gnomon": []}
        for _ in range(args.repeats):  # interleaved: both sides see the same load
            for mode in runs:
                runs[mode].append(_fresh(model, mode, args.method))
        b, g = (min(runs[m], key=lambda r: r["total"]) for m in ("bare", "gnomon"))
        bc, gc = (min(r["cpu"] for r in runs[m]) for m in ("bare", "gnomon"))
        print(f"{model:<12} {b['total']:>8.2f} {b['compile_s']:>10.2f} {g['total']:>9.2f} {g['compile_s']:>9.2f} "
              f"{g['run_s']:>6.2f} {g['total'] / b['total']:>6.2f} {bc:>9.2f} {gc:>11.2f} {gc / bc:>10.2f}")
        with tempfile.TemporaryDirectory() as cache:  # a second process, the persistent cache filled by a first
            _fresh(model, f"cached:{cache}", args.method)
            c = min((_fresh(model, f"cached:{cache}", args.method) for _ in range(args.repeats)),
                    key=lambda r: r["total"])
        print(f"{'':<12} second process with gn.enable_compilation_cache: {c['total']:.2f} s (compile_s "
              f"{c['compile_s']:.2f}, run_s {c['run_s']:.2f}), {c['total'] / b['total']:.2f}× bare")


def _fresh(model: str, mode: str, method: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", model, mode, "--method", method], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _has_dlux() -> bool:
    try:
        import dLux  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
