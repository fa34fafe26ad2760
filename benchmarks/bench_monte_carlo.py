"""Monte-Carlo validation of the binary-star fits against the Cramér–Rao bound.

N independent Poisson images of the same binary (the demo's truth) are fitted as ONE ensemble
(``gn.optimize_batch`` with the images batched on the data axis: one compiled program), in the whitened
eigen coordinates of the Fisher matrix at the common start (plain GD at 0.5). The fits are written as an
experiment (``Experiment.save_batch``: one run per realisation, each ``summary.json`` holding the estimates
``est.<parameter>`` and ``max_abs_z_vs_truth``), aggregated into one table, and the per-parameter scatter
of the estimates is compared with the marginal CRLB ``sqrt(diag F⁻¹)``: an efficient estimator gives
scatter / CRLB ≈ 1 (the check asks for 0.8–1.25; with N fits the ratio's own standard error is about
1/sqrt(2N), 7% at N = 100).

Usage::

    python benchmarks/bench_monte_carlo.py [--n 100] [--out mc-experiment] [--quick]

Writes ``<out>/`` (manifest, runs/mc-XXX/, ``table.csv``, ``scatter_over_crlb.csv`` and
``scatter_over_crlb.png``) and prints the table; exits 1 when a ratio is outside 0.8–1.25.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gnomon as gn
from gnomon.interface.demo import start_theta
from gnomon.models import astrometry as A

LOW, HIGH = 0.8, 1.25


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="number of noisy realisations (default 100)")
    p.add_argument("--out", default="mc-experiment", help="experiment directory to write")
    p.add_argument("--steps", type=int, default=60, help="GD steps per fit in whitened eigen coordinates")
    p.add_argument("--quick", action="store_true", help="32-px pupil, 48-px detector")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()

    setup = A.Setup(pupil_npix=32, detector_npix=48) if args.quick else A.Setup()
    model = A.BinaryStarModel(setup)
    layout = model.layout
    labels = layout.index_labels()
    truth = model.truth_theta()
    images = model.simulate(jax.random.key(args.seed), truth, num=args.n)  # (N, M, M)
    # weights from the expected image at the truth: the known noise model, identical for every realisation
    obj = A.make_objective(model, images[0], weights_at=truth)
    fisher = gn.estimate_curvature(obj, truth, method="gauss_newton", dense=True)
    crlb = np.sqrt(np.diag(np.linalg.inv(np.asarray(fisher.matrix, dtype=np.float64))))

    theta0 = jnp.asarray(start_theta(model, truth), dtype=truth.dtype)
    curv0 = gn.estimate_curvature(obj, theta0, method="gauss_newton", dense=True)
    emap = gn.EigenMap.from_matrix(np.asarray(curv0.matrix, dtype=np.float64), theta0, layout=layout)
    obj_z = obj.reparameterize(emap)
    z0s = jnp.zeros((args.n, obj_z.dim), dtype=truth.dtype)
    batch = gn.optimize_batch(obj_z, z0s, data=images, method="gd", learning_rate=0.5, num_steps=args.steps)
    t_fit = time.perf_counter() - t0

    estimates = np.stack([np.asarray(batch[i].decoded_theta()[-1], dtype=float) for i in range(args.n)])
    z = (estimates - np.asarray(truth, dtype=float)) / crlb
    summaries = [{"max_abs_z_vs_truth": float(np.abs(z[i]).max()),
                  **{f"est.{lab}": float(estimates[i, j]) for j, lab in enumerate(labels)}}
                 for i in range(args.n)]
    out = Path(args.out)
    exp = gn.Experiment(out, manifest={
        "description": "Monte-Carlo CRLB validation of the binary-star model (whitened eigen GD ensemble)",
        "sweep": {"n": args.n, "steps": args.steps, "seed": args.seed, "quick": args.quick},
        "datasets": {"images": f"{args.n} Poisson draws of BinaryStarModel at TRUTH, seed {args.seed}"},
    })
    exp.save_batch(batch, layout=layout, summary=summaries, prefix=f"mc-seed{args.seed}")
    table = exp.aggregate(output=out / "table.csv")
    mine = table[table["run_id"].str.startswith(f"mc-seed{args.seed}-")]
    est = mine[[f"est.{lab}" for lab in labels]].to_numpy(dtype=float)
    scatter = est.std(axis=0, ddof=1)
    ratio = scatter / crlb
    bias = (est.mean(axis=0) - np.asarray(truth, dtype=float)) / crlb

    import pandas as pd

    res = pd.DataFrame({"parameter": labels, "crlb": crlb, "scatter": scatter, "scatter_over_crlb": ratio,
                        "bias_over_crlb": bias})
    res.to_csv(out / "scatter_over_crlb.csv", index=False)
    _figure(res, args.n, out / "scatter_over_crlb.png")

    print(f"{args.n} fits of a {setup.detector_npix}×{setup.detector_npix} image in one batch: "
          f"{t_fit:.1f} s (compilation included); {len(mine)} runs aggregated from {out}")
    print(f"{'parameter':<32}{'CRLB':>11}{'scatter':>11}{'scatter/CRLB':>14}{'bias/CRLB':>11}")
    for r in res.itertuples():
        flag = "" if LOW <= r.scatter_over_crlb <= HIGH else "   <-- outside 0.8–1.25"
        print(f"{r.parameter:<32}{r.crlb:>11.3g}{r.scatter:>11.3g}{r.scatter_over_crlb:>14.2f}"
              f"{r.bias_over_crlb:>11.2f}{flag}")
    ok = bool(np.all((ratio >= LOW) & (ratio <= HIGH)))
    print(f"scatter / CRLB in [{ratio.min():.2f}, {ratio.max():.2f}]: {'PASS' if ok else 'FAIL'} "
          f"(expected within {LOW}–{HIGH}; standard error of each ratio ≈ {1 / np.sqrt(2 * args.n):.2f})")
    print(f"figure: {out / 'scatter_over_crlb.png'}   table: {out / 'scatter_over_crlb.csv'}")
    return 0 if ok else 1


def _figure(res, n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    x = np.arange(len(res))
    ax.axhspan(LOW, HIGH, color="0.9", label=f"{LOW}–{HIGH}")
    ax.axhline(1.0, color="k", lw=0.8)
    err = 1.0 / np.sqrt(2 * n)
    ax.errorbar(x, res["scatter_over_crlb"], yerr=err * res["scatter_over_crlb"], fmt="o", ms=4,
                label=f"scatter / CRLB (N = {n}, ±1/√(2N))")
    ax.set_xticks(x, res["parameter"], rotation=75, fontsize=8)
    ax.set_ylabel("Monte-Carlo scatter / marginal CRLB")
    ax.set_title("binary-star fits reach the Cramér–Rao bound")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
