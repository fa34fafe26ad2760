"""Logistic regression on the German credit data with badly scaled features: preconditioned GD vs Adam.

Data: ../shared/data/german.data-numeric (1000 × 24 numeric features, label 1/2 in the last column). The
features are standardised and then multiplied by scales log-spaced over 1e-2 … 1e2 (a fixed permutation),
plus an intercept column. Loss: mean logistic NLL + ½·1e-3·|θ|² (a unique optimum). The reference optimum
comes from Newton's method with the exact Hessian (float64). Target: relative gap
(f(θ_t) − f*) / |f*| ≤ 1e-8.

Cost = every gradient evaluation (curvature estimation and power iterations included). Adam is run over a
learning-rate grid and the best is taken; the goal is ≥ 3× fewer gradient evaluations for preconditioned GD.
Each row is re-run with num_steps = first hitting step so that num_grad_evals is exact.

Run:  python benchmarks/bench_logreg.py [--data PATH] [--max-steps N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gnomon as gn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling_targets import GERMAN as DATA  # noqa: E402  (one lookup of the shared data: $GNOMON_SHARED first)

TARGET = 1e-8
RIDGE = 1e-3
ADAM_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def load(path: Path):
    raw = np.loadtxt(path)
    x, y = raw[:, :-1], (raw[:, -1] == 2).astype(float)
    x = (x - x.mean(0)) / x.std(0)
    scales = 10.0 ** np.linspace(-2, 2, x.shape[1])
    scales = scales[np.random.default_rng(0).permutation(x.shape[1])]
    x = np.hstack([x * scales, np.ones((x.shape[0], 1))])
    return jnp.asarray(x), jnp.asarray(y)


def make_objective(x, y):
    n = x.shape[0]

    def per_obs(t):
        z = x @ t
        return (jnp.logaddexp(0.0, z) - y * z) / n

    def loss(t):
        return jnp.sum(per_obs(t)) + 0.5 * RIDGE * t @ t

    return gn.Objective.from_loss(loss, x.shape[1], per_observation=per_obs)


def newton_optimum(obj, d):
    th = jnp.zeros(d)
    for _ in range(50):
        g = jax.grad(obj.loss)(th)
        h = jax.hessian(obj.loss)(th)
        th = th - jnp.linalg.solve(h, g)
    return th, float(obj.loss(th))


def evals_to_target(obj, th0, fstar, max_steps, **kw):
    tr = gn.optimize(obj, th0, num_steps=max_steps, **kw)
    gap = (np.asarray(tr.loss) - fstar) / abs(fstar)
    hit = np.nonzero(gap <= TARGET)[0]
    if hit.size == 0:
        return None, None, float(np.min(gap))
    t = int(tr.step[hit[0]])
    tr2 = gn.optimize(obj, th0, num_steps=t, **kw)
    return int(tr2.num_grad_evals), t, float(gap[hit[0]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--max-steps", type=int, default=20000)
    args = ap.parse_args()
    start = time.perf_counter()
    x, y = load(args.data)
    obj = make_objective(x, y)
    d = obj.dim
    _, fstar = newton_optimum(obj, d)
    th0 = jnp.zeros(d)
    rows = {}
    pgd = "preconditioned_gd"
    variants = {
        "pgd (default: hutchinson VR 16, BB)": dict(method=pgd),
        "pgd (hutchinson VR 8, BB)": dict(method=pgd, curvature="hutchinson", num_probes=8),
        "pgd (hutchinson VR 32, BB)": dict(method=pgd, curvature="hutchinson", num_probes=32),
        "pgd (exact diag, BB)": dict(method=pgd, curvature="exact"),
        "pgd (exact diag, BB, refresh 25)": dict(method=pgd, curvature="exact", refresh_every=25),
        "pgd (exact diag, fixed step 1/λmax)": dict(method=pgd, curvature="exact", step_rule="fixed"),
        "pgd (empirical_fisher, BB)": dict(method=pgd, curvature="empirical_fisher"),
        "lbfgs (default: preconditioned)": dict(method="lbfgs"),
        "lbfgs (plain, curvature='identity')": dict(method="lbfgs", curvature="identity"),
        "gd (default η = 1/λmax)": dict(method="gd"),
        "gd (BB steps)": dict(method="gd", step_rule="bb"),
    }
    for name, kw in variants.items():
        rows[name] = evals_to_target(obj, th0, fstar, args.max_steps, **kw)
    adam = {}
    for lr in ADAM_GRID:
        adam[lr] = evals_to_target(obj, th0, fstar, args.max_steps, method="adam", learning_rate=lr)
    reached = {lr: r for lr, r in adam.items() if r[0] is not None}
    if reached:
        best_lr = min(reached, key=lambda lr: reached[lr][0])
        best = reached[best_lr]
    else:
        best_lr = min(adam, key=lambda lr: adam[lr][2])
        best = adam[best_lr]
    rows[f"adam (best of grid, lr={best_lr:g})"] = best
    print(
        f"# German credit logistic regression, D={d}, N={x.shape[0]}, feature scales 1e-2…1e2, "
        f"f*={fstar:.10f}; evals to relative gap ≤ {TARGET:g} (max {args.max_steps} steps)"
    )
    adam_evals = best[0] if best[0] is not None else None
    print(f"{'method':<40} {'evals':>8} {'steps':>7} {'adam/evals':>11}")
    for name, (ev, t, gap) in rows.items():
        if ev is None:
            print(f"{name:<40} {'—':>8} {'—':>7} {'—':>11}  (best gap {gap:.2e})")
            continue
        if adam_evals is None:
            ratio = f">{(args.max_steps + 1) / ev:.3g}"
        else:
            ratio = f"{adam_evals / ev:.3g}"
        print(f"{name:<40} {ev:>8} {t:>7} {ratio:>11}")
    print(
        "# adam grid: "
        + ", ".join(
            f"lr={lr:g}: {'—' if r[0] is None else r[0]}" + ("" if r[0] is not None else f" (gap {r[2]:.1e})")
            for lr, r in adam.items()
        )
    )
    print(f"# wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
