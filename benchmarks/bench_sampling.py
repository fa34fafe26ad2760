"""Gradient evaluations per effective sample: gnomon's MAP → NUTS hand-off vs BlackJAX and numpyro.

For each target (``sampling_targets.py``: a rotated ill-conditioned 100-d Gaussian, logistic regression on the
German credit data, eight schools centered and non-centered, a 2-d banana) and the same number of chains
and kept draws:

* **gnomon**: L-BFGS MAP from θ = 0, then ``gn.sample(obj, init=map_trace, key)`` with its defaults
  (curvature-seeded metric, Laplace-draw starts, short pooled warmup). Counted: MAP + curvature + chain
  starts + warmup + sampling gradients.
* **blackjax**: ``blackjax.window_adaptation(blackjax.nuts, ...)`` with 1000 warmup steps per chain (vmapped),
  then NUTS; starts uniform(−2, 2) as Stan/numpyro. Counted: starts + warmup + sampling leapfrog steps.
* **numpyro**: ``NUTS`` defaults (diagonal mass, target 0.8, 1000 warmup), ``chain_method="vectorized"``,
  same starts. Counted: warmup + sampling ``num_steps``.

Efficiency = gradient evaluations / min bulk ESS over all coordinates (arviz-stats); the printed ratio is
baseline / gnomon (> 1: gnomon needs fewer gradients per effective sample). Accuracy: the largest
|mean − reference mean| / reference sd over coordinates (exact moments for the Gaussian and the banana;
else a long BlackJAX run: 4 × 5000 draws after its adaptation; centered eight schools from the
non-centered reference), and the largest rank R-hat.

Run: ``python benchmarks/bench_sampling.py [--draws 1000] [--chains 4] [--targets a,b] [--seeds 2]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampling_targets import Target, all_targets  # noqa: E402

import gnomon as gn  # noqa: E402


def ess_rhat(theta: np.ndarray) -> tuple[float, float]:
    import arviz_stats as azs

    ess = azs.ess(np.asarray(theta, dtype=np.float64), chain_axis=0, draw_axis=1, method="bulk")
    rh = azs.rhat(np.asarray(theta, dtype=np.float64), chain_axis=0, draw_axis=1)
    return float(np.min(ess)), float(np.max(rh))


def starts(key, chains: int, dim: int) -> jnp.ndarray:
    return jax.random.uniform(key, (chains, dim), minval=-2.0, maxval=2.0)


# ------------------------------------------------------------------------------------------------- runners
def run_gnomon(t: Target, key, chains: int, draws: int) -> dict:
    obj = gn.Objective.from_log_prob(t.log_prob, t.dim)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp = gn.optimize(obj, jnp.zeros(t.dim), "lbfgs", num_steps=500, tol=1e-3)
        post = gn.sample(obj, mp, key, num_chains=chains, num_samples=draws)
    wall = time.perf_counter() - t0
    grads = int(mp.num_grad_evals) + int(post.num_grad_evals)
    return {
        "theta": np.asarray(post.theta),
        "grads": grads,
        "wall": wall,
        "divergences": int(np.sum(post.stats["diverging"])),
        "num_warmup": post.info["num_warmup"],
        "dense": post.info["metric"]["dense"],
        "warnings": [str(w.message)[:90] for w in caught],
        "ratio_spread": post.info["handoff"]["metric_ratio_spread"],
    }


def _blackjax_adapt(t: Target, key, chains: int, warmup: int):
    import blackjax

    k_init, k_warm = jax.random.split(key)
    pos = starts(k_init, chains, t.dim)

    def one(k, p):
        wa = blackjax.window_adaptation(blackjax.nuts, t.log_prob)
        (state, params), info = wa.run(k, p, num_steps=warmup)
        return state, params, jnp.sum(info.info.num_integration_steps)

    states, params, wsteps = jax.jit(jax.vmap(one))(jax.random.split(k_warm, chains), pos)
    return states, params, int(np.sum(wsteps)) + chains


def _blackjax_draws(t: Target, key, states, params, draws: int):
    import blackjax

    def chain(k, state, step_size, imm):
        kern = blackjax.nuts(t.log_prob, step_size, imm)

        def body(s, kk):
            s, info = kern.step(kk, s)
            return s, (s.position, info.num_integration_steps, info.is_divergent)

        _, (pos, n, div) = jax.lax.scan(body, state, jax.random.split(k, draws))
        return pos, jnp.sum(n), jnp.sum(div)

    keys = jax.random.split(key, states.position.shape[0])
    pos, n, div = jax.jit(jax.vmap(chain))(keys, states, params["step_size"], params["inverse_mass_matrix"])
    return np.asarray(pos), int(np.sum(n)), int(np.sum(div))


def run_blackjax(t: Target, key, chains: int, draws: int) -> dict:
    t0 = time.perf_counter()
    k_a, k_s = jax.random.split(key)
    states, params, wgrads = _blackjax_adapt(t, k_a, chains, 1000)
    pos, sgrads, div = _blackjax_draws(t, k_s, states, params, draws)
    return {
        "theta": pos,
        "grads": wgrads + sgrads,
        "wall": time.perf_counter() - t0,
        "divergences": div,
        "_states": states,
        "_params": params,
    }


def run_numpyro(t: Target, key, chains: int, draws: int) -> dict:
    from numpyro.infer import MCMC, NUTS

    t0 = time.perf_counter()
    k_init, k_run = jax.random.split(key)
    init = starts(k_init, chains, t.dim)
    mcmc = MCMC(
        NUTS(potential_fn=lambda th: -t.log_prob(th)),
        num_warmup=1000,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.warmup(k_run, init_params=init, extra_fields=("num_steps",), collect_warmup=True)
    wsteps = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    mcmc.run(mcmc.post_warmup_state.rng_key, init_params=init, extra_fields=("num_steps", "diverging"))
    ex = mcmc.get_extra_fields(group_by_chain=True)
    pos = np.asarray(mcmc.get_samples(group_by_chain=True))
    return {
        "theta": pos,
        "grads": wsteps + int(np.sum(ex["num_steps"])),
        "wall": time.perf_counter() - t0,
        "divergences": int(np.sum(ex["diverging"])),
    }


def reference(t: Target, by_name: dict, key, bj: dict) -> tuple[np.ndarray, np.ndarray]:
    """(mean, sd) of θ: exact when known, else a long BlackJAX run (from the baseline's adaptation)."""
    if t.mean is not None:
        return t.mean, t.sd
    if t.reference_from is not None:
        src = by_name[t.reference_from]
        k_a, k_s = jax.random.split(key)
        states, params, _ = _blackjax_adapt(src, k_a, 4, 1000)
        pos, _, _ = _blackjax_draws(src, k_s, states, params, 5000)
        th = t.to_this(pos.reshape(-1, src.dim))
        return th.mean(0), th.std(0)
    pos, _, _ = _blackjax_draws(t, key, bj["_states"], bj["_params"], 5000)
    th = np.concatenate([pos.reshape(-1, t.dim), bj["theta"].reshape(-1, t.dim)])
    return th.mean(0), th.std(0)


# ------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument(
        "--seeds", type=int, default=1, help="repeat each run with this many keys (medians reported)"
    )
    ap.add_argument("--targets", default="", help="comma-separated names (default: all five)")
    ap.add_argument("--skip-numpyro", action="store_true")
    args = ap.parse_args(argv)

    targets = all_targets()
    by_name = {t.name: t for t in targets}
    if args.targets:
        want = set(args.targets.split(","))
        targets = [t for t in targets if t.name in want or t.name.split("_")[0] in want]
    methods = ["gnomon", "blackjax"] + ([] if args.skip_numpyro else ["numpyro"])
    runners = {"gnomon": run_gnomon, "blackjax": run_blackjax, "numpyro": run_numpyro}
    print(
        f"{jax.devices()[0].platform}, {args.chains} chains × {args.draws} draws, {args.seeds} seed(s); "
        "eff = gradient evaluations / min bulk ESS (lower is better)"
    )
    rows = {}
    for t in targets:
        per = {m: [] for m in methods}
        ref = None
        for s in range(args.seeds):
            for m in methods:
                r = runners[m](t, jax.random.key(1000 * s + 17), args.chains, args.draws)
                ess, rhat = ess_rhat(r["theta"])
                r.update(ess=ess, rhat=rhat, eff=r["grads"] / ess)
                per[m].append(r)
            if ref is None:
                ref = reference(t, by_name, jax.random.key(99), per["blackjax"][0])
        out = {}
        for m in methods:
            rs = per[m]
            err = max(
                float(np.max(np.abs(r["theta"].reshape(-1, t.dim).mean(0) - ref[0]) / ref[1])) for r in rs
            )
            out[m] = {
                "eff": float(np.median([r["eff"] for r in rs])),
                "ess": float(np.median([r["ess"] for r in rs])),
                "grads": float(np.median([r["grads"] for r in rs])),
                "rhat": max(r["rhat"] for r in rs),
                "mean_err_sd": err,
                "divergences": int(np.median([r["divergences"] for r in rs])),
                "wall": float(np.median([r["wall"] for r in rs])),
            }
        g = per["gnomon"][0]
        out["gnomon"].update(
            num_warmup=g["num_warmup"],
            dense=g["dense"],
            warnings=g["warnings"],
            ratio_spread=g["ratio_spread"],
        )
        rows[t.name] = out
        line = f"{t.name:28s}"
        for m in methods:
            o = out[m]
            line += (
                f" | {m}: eff {o['eff']:7.1f} (grads {o['grads']:8.0f}, ESS {o['ess']:6.0f}, "
                f"R̂ {o['rhat']:.3f}, err {o['mean_err_sd']:.3f} sd, div {o['divergences']})"
            )
        print(line, flush=True)
        for m in methods[1:]:
            print(f"{'':28s}   ratio {m}/gnomon = {out[m]['eff'] / out['gnomon']['eff']:.2f}")
        if g["warnings"]:
            print(f"{'':28s}   gnomon warnings: {g['warnings']}")

    for m in methods[1:]:
        ratios = [rows[n][m]["eff"] / rows[n]["gnomon"]["eff"] for n in rows]
        gm = math.exp(np.mean(np.log(ratios)))
        print(f"geometric mean ratio {m}/gnomon: {gm:.2f} (min {min(ratios):.2f})")
    return rows


if __name__ == "__main__":
    main()
