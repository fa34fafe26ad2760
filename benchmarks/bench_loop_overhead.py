"""Loop overhead: gn.optimize(method="gd") vs a hand-written lax.scan doing the same update.

The baseline is one jitted ``lax.scan`` over ``num_steps`` steps of ``θ ← θ − lr ∇f(θ)`` that records θ_t and
f(θ_t) every step (plus the final point), i.e. what gnomon's loop records minus its extra channels
(|∇f|, step norm, learning rate), chunking and stopping tests. Both are compiled before timing (a warm-up
call); each timing is the best of several interleaved repetitions of a full call returning host numpy arrays
(the median ratio is printed too; medians are sensitive to other processes on a shared machine).
Goal (issue 10): ratio ≤ 1.1, cheap objectives included. gn.optimize records its default channels (the free
ones: learning rate; the O(D) norms only when asked, ``channels=``). The D = 10 quadratic at 20,000 and
200,000 steps separates the fixed cost of a call (planning, two dispatches, trace assembly: ≈ 0.5 ms) from the
per-step cost.

Run:  python benchmarks/bench_loop_overhead.py [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import gnomon as gn


def quadratic(d):
    # curvatures 1e-5…2e-5: at learning rate 0.1 θ shrinks by at most 2e-6 per step, so no run here reaches an
    # exactly zero gradient in float32 (with curvatures near 1 the loss underflows to 0 after ~400 steps and
    # gn.optimize stops there as converged — a run of a different length than the scan's)
    w = jnp.linspace(1e-5, 2e-5, d)
    return lambda t: 0.5 * jnp.sum(w * t * t)


def dense_quadratic(d):
    r = np.random.default_rng(1)
    a = r.standard_normal((d, d)) / np.sqrt(d)
    h = jnp.asarray(1e-5 * (a @ a.T + np.eye(d)), jnp.float32)  # small curvatures: no run reaches the loss floor
    return lambda t: 0.5 * t @ (h @ t)


def logistic(d, n=1000):
    r = np.random.default_rng(0)
    x = jnp.asarray(r.standard_normal((n, d)) / np.sqrt(d))
    y = jnp.asarray((r.uniform(size=n) < 0.5).astype(np.float32))
    return lambda t: jnp.mean(jnp.logaddexp(0.0, x @ t) - y * (x @ t))


def scan_gd(loss, lr, num_steps):
    vg = jax.value_and_grad(loss)

    @jax.jit
    def run(theta0):
        def step(th, _):
            f, g = vg(th)
            return th - lr * g, (th, f)

        last, (ths, fs) = jax.lax.scan(step, theta0, None, length=num_steps)
        return jnp.concatenate([ths, last[None]]), jnp.concatenate([fs, loss(last)[None]])

    return lambda th0: jax.device_get(run(th0))


def timed_pair(fa, fb, reps):
    """Best-of-``reps`` wall times of two calls, interleaved (robust against load from other processes)."""
    fa(), fb()  # warm-up / compile
    ta, tb = [], []
    for _ in range(reps):
        for fn, out in ((fa, ta), (fb, tb)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return min(ta), min(tb), statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    cases = [
        ("quadratic", 10, 20000),
        ("quadratic", 10, 200000),
        ("quadratic", 100, 20000),
        ("quadratic", 1000, 5000),
        ("dense quadratic", 200, 10000),
        ("logistic N=1000", 20, 5000),
        ("logistic N=1000", 200, 2000),
    ]
    print(
        f"# gn.optimize(method='gd') vs hand-written lax.scan; best of {args.reps} interleaved; "
        f"device {jax.devices()[0].platform}, dtype float32"
    )
    print(
        f"{'loss':<16} {'D':>5} {'steps':>6} {'scan ms':>9} {'gnomon ms':>10} {'ratio':>6} {'med.ratio':>9}"
    )
    for name, d, steps in cases:
        loss = {"quadratic": quadratic, "dense quadratic": dense_quadratic}.get(name, logistic)(d)
        obj = gn.Objective.from_loss(loss, d)
        th0 = jnp.ones(d)
        lr = 0.1 if "quadratic" in name else 0.002  # the logistic losses reach their float32 floor at 0.1
        base = scan_gd(loss, lr, steps)

        def ours(obj=obj, steps=steps, th0=th0, lr=lr):
            return gn.optimize(obj, th0, "gd", learning_rate=lr, num_steps=steps, progress=False, tol=0.0, ftol=0.0)

        t_scan, t_ours, m_scan, m_ours = timed_pair(lambda base=base, th0=th0: base(th0), ours, args.reps)
        ref_th, _ = base(th0)
        np.testing.assert_allclose(ours().theta, ref_th, rtol=1e-5, atol=1e-6)
        print(
            f"{name:<16} {d:>5} {steps:>6} {1e3 * t_scan:>9.1f} {1e3 * t_ours:>10.1f} {t_ours / t_scan:>6.2f}"
            f" {m_ours / m_scan:>9.2f}"
        )


if __name__ == "__main__":
    main()
