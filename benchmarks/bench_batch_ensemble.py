"""Batched ensemble: B = 256 small fits in one compiled program vs a loop of single fits (goal ≥ 10×).

The fits: an exponential-decay regression ``y = A·exp(−k·x) + c`` (D = 3, 40 noisy points per member, each
member its own data set and start), Adam at 0.05 for 300 steps. ``gn.optimize_batch(obj, θ0s, data=...)``
runs all members under one ``vmap``; the baseline calls ``gn.optimize(obj, θ0_i, data=d_i)`` per member
(same objective and settings, so it compiles once and reuses). Both are warmed up first (compilation is not
counted); the best of ``--repeats`` is reported, with a hand-written ``vmap(lax.scan)`` of the same Adam
fits recording (θ_t, loss_t), results copied to the host, as the floor of what the hardware does (goal:
``optimize_batch`` ≤ 1.5× that, measured interleaved). Then the ensemble is written as B run directories with
``Experiment.save_batch`` and, for comparison, with B calls of ``Experiment.save``.

Run: ``python benchmarks/bench_batch_ensemble.py [--batch 256] [--steps 300] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import jax.numpy as jnp

    import gnomon as gn

    B, N = args.batch, 40
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 4.0, N)
    truth = np.column_stack([rng.uniform(1, 3, B), rng.uniform(0.5, 2, B), rng.uniform(-0.5, 0.5, B)])
    y = truth[:, :1] * np.exp(-truth[:, 1:2] * x) + truth[:, 2:] + 0.02 * rng.normal(size=(B, N))
    data = jnp.asarray(y, jnp.float32)
    theta0 = jnp.asarray(truth + rng.normal(scale=0.3, size=truth.shape), jnp.float32)
    xs = jnp.asarray(x, jnp.float32)

    def loss(theta, yobs):
        pred = theta[0] * jnp.exp(-theta[1] * xs) + theta[2]
        return 0.5 * jnp.sum((pred - yobs) ** 2)

    obj = gn.Objective.from_loss(loss, 3, data=data[0])
    kw = dict(method="adam", num_steps=args.steps, learning_rate=0.05)

    def batched():
        return gn.optimize_batch(obj, theta0, data=data, **kw)

    def looped():
        return [gn.optimize(obj, theta0[i], data=data[i], **kw) for i in range(B)]

    import jax
    import optax

    tx = optax.adam(0.05)

    @jax.jit
    def reference(th0, ys):
        """What the hardware does: the same B Adam fits as one vmapped lax.scan recording (θ_t, loss_t)."""

        def one(th, yobs):
            def step(carry, _):
                th, st = carry
                val, g = jax.value_and_grad(loss)(th, yobs)
                upd, st = tx.update(g, st, th)
                return (optax.apply_updates(th, upd), st), (th, val)

            (thf, _), (ths, vals) = jax.lax.scan(step, (th, tx.init(th)), None, length=args.steps)
            return thf, ths, vals

        return jax.vmap(one)(th0, ys)

    jax.device_get(reference(theta0, data))
    bt = batched()  # warm-up (compile)
    gn.optimize(obj, theta0[0], data=data[0], **kw)
    t_ref, t_batch = [], []
    for _ in range(max(args.repeats, 5)):  # interleaved: load from other processes hits both alike
        t_ref.append(_timed(lambda: jax.device_get(reference(theta0, data))))
        t_batch.append(_timed(batched))
    t_ref, t_batch = min(t_ref), min(t_batch)
    t_loop = min(_timed(looped) for _ in range(max(1, args.repeats - 1)))
    singles = looped()
    agree = max(
        float(np.max(np.abs(np.asarray(bt[i].final_theta) - np.asarray(s.final_theta))))
        for i, s in enumerate(singles)
    )

    root = Path(tempfile.mkdtemp(prefix="gnomon-bench-ens-"))
    try:
        exp = gn.Experiment(root / "exp", manifest={"description": "ensemble benchmark"})
        t = time.perf_counter()
        exp.save_batch(bt, meta=[{"member": i} for i in range(B)])
        t_save_batch = time.perf_counter() - t
        t = time.perf_counter()
        for i, s in enumerate(singles):
            exp.save(None, s, meta={"member": i})
        t_save_loop = time.perf_counter() - t
        t = time.perf_counter()
        df = exp.aggregate(meta_keys=["user.member"])
        t_agg = time.perf_counter() - t
        assert len(df) == 2 * B
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"B={B} fits, D=3, N={N} points each, adam {args.steps} steps (compilation excluded, best of runs)")
    print(f"  loop of gn.optimize      : {t_loop:8.3f} s  ({t_loop / B * 1e3:.2f} ms/fit)")
    print(f"  gn.optimize_batch        : {t_batch:8.3f} s  ({t_batch / B * 1e3:.3f} ms/fit)")
    print(f"  speed-up                 : {t_loop / t_batch:8.1f}×   (goal ≥ 10×)")
    print(
        f"  hand-written vmap(scan)  : {t_ref:8.3f} s  (the same fits with no engine around them, results on the "
        f"host; loop / this = {t_loop / t_ref:.1f}×)"
    )
    print(f"  optimize_batch / vmap(scan): {t_batch / t_ref:6.2f}×   (goal ≤ 1.5×)")
    print(f"  max |θ_batch − θ_single| : {agree:.2e}")
    print(f"  save_batch, {B} run dirs  : {t_save_batch:8.3f} s  ({t_save_batch / B * 1e3:.2f} ms/run)")
    print(f"  {B} × Experiment.save     : {t_save_loop:8.3f} s  ({t_save_loop / B * 1e3:.2f} ms/run)")
    print(f"  aggregate {2 * B} runs       : {t_agg:8.3f} s")


def _timed(fn) -> float:
    t = time.perf_counter()
    out = fn()
    _ = out  # results are host arrays already (the Trace is assembled on the host)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
