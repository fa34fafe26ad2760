"""Compile time of the documented path: the first ``gn.optimize`` / ``optimize_batch`` vs a bare jitted gradient.

Each measurement runs in a fresh Python process (nothing cached in memory; JAX's persistent compilation cache
is off), on the demo's binary-star astrometry model (``gnomon.models.astrometry``: 64 × 64 Poisson image,
3 wavelengths, D = 15, weighted residuals) and, when dLux is installed, a dLux binary (``AngularOpticalSystem``
with an ``AberratedAperture`` of 8 Zernikes and a ``BinarySource``, D = 14) through the documented path:
``Objective.from_likelihood`` (Poisson), the default curvature (its expected Fisher), ``preconditioned_gd`` or
``lbfgs`` (``lbfgs[backtracking]``: its backtracking line search), and ``optimize_batch`` (``batch:<method>``,
``--batch`` members):

* **bare**: ``jax.jit(jax.value_and_grad(obj.loss)).lower(θ0, data).compile()`` (``vmap``-ed for a batch), then
  100 calls — what a user's own hand-written gradient descent would cost at least;
* **gnomon**: the wall time of the first call with ``num_steps=100``: the curvature estimate at θ0 (its own
  compiled program: ``curv``), the loop's programs (``compile``) and the steps (``run``).

Goal (issue 18): gnomon ≤ 2× bare. ``ratio`` is best gnomon / best bare; ``ratios`` each repeat's gnomon / bare
pair, bare and gnomon interleaved (other jobs on a shared machine only ever slow a run down, and interleaving
exposes both to the same load); the CPU time ratio (``time.process_time``, all threads: best / best, then each
repeat's, then the best CPU seconds of each side) is steadier on a loaded machine. ``traces`` counts how often the
model's forward function was traced (gnomon / bare): each trace is one more copy of the model for XLA to compile
(dLux model only). The gnomon side includes everything the first call does: the goodness of fit at the end (the
model's mean evaluated by the loop's own chunk: one more copy of the forward model in that program, no program of
its own) and the end-of-run checks.

``--cache``: the same first call in a *second* process with ``gn.enable_compilation_cache`` on (a first process
filled the cache), what a user of the CLI or of a campaign pays from the second run on.

Run: ``python benchmarks/bench_compile.py [--repeats 3] [--models dlux] [--batch 8]
[--methods preconditioned_gd,lbfgs,batch:lbfgs]``.
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
        TRACES[0] += 1
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


TRACES = [0]  # how many times the model's forward function was traced (each trace is one more inlined copy)


def one(model: str, mode: str, method: str, batch: int = 8) -> dict:
    """One measurement in this (fresh) process: ``mode`` is ``bare``, ``gnomon`` or ``cached:<dir>``; a method
    ``batch:<name>`` runs ``optimize_batch`` over ``batch`` members (bare: ``jit(vmap(value_and_grad))``)."""
    start = time.perf_counter()
    import jax
    import numpy as np

    import gnomon as gn

    if mode.startswith("cached:"):  # gnomon with JAX's persistent cache in the given directory
        gn.enable_compilation_cache(mode.split(":", 1)[1], min_compile_time_s=0.0)
    obj, theta0, data = MODELS[model]()
    batched = method.startswith("batch:")
    name = method.split(":", 1)[-1]
    options = {}
    if name.endswith("]"):  # lbfgs[backtracking]: a line search
        name, ls = name[:-1].split("[")
        options["linesearch"] = ls
    if batched:
        theta0 = theta0[None] * (1 + 1e-3 * np.arange(batch))[:, None]
        data = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (batch, *np.shape(a))), data)
    setup = time.perf_counter() - start
    TRACES[0] = 0
    t, cpu = time.perf_counter(), time.process_time()
    if mode == "bare":
        vg = jax.value_and_grad(obj.loss)
        f = jax.jit(jax.vmap(vg) if batched else vg).lower(theta0, data).compile()
        compile_s = time.perf_counter() - t
        for _ in range(100):
            _, g = f(theta0, data)
        jax.block_until_ready(g)
        total = time.perf_counter() - t
        return {"total": total, "cpu": time.process_time() - cpu, "compile_s": compile_s,
                "run_s": total - compile_s, "setup": setup, "traces": TRACES[0]}
    if batched:
        tr = gn.optimize_batch(obj, theta0, name, num_steps=100, data=data, **options)
    else:
        tr = gn.optimize(obj, theta0, name, num_steps=100, **options)
    total = time.perf_counter() - t
    return {"total": total, "cpu": time.process_time() - cpu, "compile_s": tr.info["compile_s"],
            "run_s": tr.info["run_s"], "curvature_s": tr.info.get("curvature_s", 0.0), "setup": setup,
            "num_grad_evals": int(np.max(tr.num_grad_evals)), "traces": TRACES[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="preconditioned_gd,lbfgs,lbfgs[backtracking],batch:preconditioned_gd,"
                                         "batch:lbfgs",
                    help="comma-separated; batch:<method> runs optimize_batch; lbfgs[backtracking] a line search")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", default="astrometry,dlux")
    ap.add_argument("--cache", action="store_true", help="also time a second process with the persistent cache")
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "MODE", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, batch=args.batch)))
        return
    models = [m for m in args.models.split(",") if not m.startswith("dlux") or _has_dlux()]
    print(f"# first gn.optimize(..., num_steps=100) vs bare jit(value_and_grad) compile + 100 calls, fresh processes "
          f"(bare and gnomon interleaved, {args.repeats} repeats); batch: {args.batch} members (bare: vmap)")
    print(f"{'model':<12} {'method':<20} {'bare s':>7} {'(compile)':>9} {'gnomon s':>9} {'(curv':>6} {'compile':>8} "
          f"{'run)':>5} {'ratio':>6} {'ratios':>16} {'cpu ratio':>9} {'cpu ratios':>16} {'cpu s b/g':>11} "
          f"{'traces':>7}")
    for model in models:
        for method in args.methods.split(","):
            runs = {"bare": [], "gnomon": []}
            for _ in range(args.repeats):  # interleaved: both sides see the same load
                for mode in runs:
                    runs[mode].append(_fresh(model, mode, method, args.batch))
            pairs = list(zip(runs["bare"], runs["gnomon"], strict=True))
            ratios = sorted(g["total"] / b["total"] for b, g in pairs)
            cpu_ratios = sorted(g["cpu"] / b["cpu"] for b, g in pairs)
            b, g = (min(runs[m], key=lambda r: r["total"]) for m in ("bare", "gnomon"))
            bc, gc = (min(r["cpu"] for r in runs[m]) for m in ("bare", "gnomon"))
            shown = ",".join(f"{r:.2f}" for r in ratios)
            shown_cpu = ",".join(f"{r:.2f}" for r in cpu_ratios)
            print(f"{model:<12} {method:<20} {b['total']:>7.2f} {b['compile_s']:>9.2f} {g['total']:>9.2f} "
                  f"{g['curvature_s']:>6.2f} {g['compile_s']:>8.2f} {g['run_s']:>5.2f} {g['total'] / b['total']:>6.2f} "
                  f"{shown:>16} {gc / bc:>9.2f} {shown_cpu:>16} {bc:>5.2f}/{gc:<5.2f} {g['traces']:>3}/{b['traces']}",
                  flush=True)
            if args.cache:
                with tempfile.TemporaryDirectory() as cache:  # a second process, the cache filled by a first
                    _fresh(model, f"cached:{cache}", method, args.batch)
                    c = min((_fresh(model, f"cached:{cache}", method, args.batch) for _ in range(args.repeats)),
                            key=lambda r: r["total"])
                print(f"{'':<12} second process with gn.enable_compilation_cache: {c['total']:.2f} s (compile_s "
                      f"{c['compile_s']:.2f}, run_s {c['run_s']:.2f}), {c['total'] / b['total']:.2f}× bare")


def _fresh(model: str, mode: str, method: str, batch: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", model, mode, method, "--batch", str(batch)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _has_dlux() -> bool:
    try:
        import dLux  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
