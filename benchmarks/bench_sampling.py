"""Effective samples per gradient: gnomon's MAP → NUTS hand-off against the strongest warmups.

For each target (``sampling_targets.py``) and the same number of chains and kept draws:

* **gnomon**: L-BFGS MAP from the target's start, then ``gn.sample(obj, init=map_trace, key)`` with its
  defaults (curvature seed, seed check, recovery). Counted: MAP + curvature + chain starts + warmup (the
  failed seed check included) + sampling gradients.
* **gnomon_mclmc**: the same hand-off with ``kernel=gn.mclmc()`` (MAMS, BlackJAX's adjusted MCLMC, tuned by
  BlackJAX's step size / L tuning in the seed's whitened coordinates), counted the same way (two gradients
  per isokinetic McLachlan step). Not a baseline: the table's ratio stays gnomon (NUTS) / best baseline, and
  ``mclmc / nuts`` is reported beside it.
* **bj_diag**, **bj_dense**: ``blackjax.window_adaptation`` (1000 steps per chain, vmapped) with a diagonal /
  dense metric, then NUTS.
* **bj_lowrank**: ``blackjax.window_adaptation_low_rank`` (nutpie's algorithm in blackjax, 1000 steps).
* **bj_pathfinder**: ``blackjax.pathfinder_adaptation`` (multi-path Pathfinder, PSIS starts, a fixed L-BFGS
  inverse-Hessian metric, 400 dual-averaging steps). Counted: the L-BFGS paths (``≈ 2`` evaluations per
  iteration, estimated from a single path), every ELBO draw's log density (counted as one gradient), the
  dual averaging and sampling leapfrog steps.
* **nutpie_diag**, **nutpie_lowrank**, **nutpie_flow**: ``nutpie.sample`` on the same JAX log density
  (``nutpie.compiled_pyfunc.from_pyfunc`` calling a jitted ``value_and_grad``), 1000 tuning steps, its
  diagonal / low-rank / normalizing-flow adaptation (``adaptation="flow"``: flowjax, trained by Fisher
  divergence on the draws and gradients; the adapter evaluates the JAX function itself). Counted: the sum of
  ``n_steps`` over warmup and sampling.

Baselines start from uniform(−2, 2) draws (Stan's default). Measures:

* ``eff``: min bulk ESS (arviz-stats, over all θ coordinates) per 1000 gradient evaluations, everything
  counted. The ratio ``gnomon / best baseline`` (> 1: gnomon is ahead) per target; the goal is a geometric
  mean ≥ 1.5 with no target below 0.9.
* ``wall/1k``: seconds of execution (compilation excluded) per 1000 min-ESS.
* accuracy: the largest |mean − reference| / reference sd and |sd / reference sd − 1| over the reported
  quantities (the constrained parameters for inference-gym targets), the largest rank R̂, divergences.
  References: exact, inference-gym's ground truth, or a long BlackJAX dense-metric run (4 × 10000 draws,
  cached in ``sampling_references.json``).

Run: ``python benchmarks/bench_sampling.py --quick`` (four targets, one key, gnomon and the two strongest
baselines) or ``python benchmarks/bench_sampling.py`` (all targets and baselines; ``--keys 3`` for medians;
``--targets a,b`` and ``--methods m,n`` select). ``--json out.json`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampling_targets import QUICK, TARGETS, Target, load  # noqa: E402

import gnomon as gn  # noqa: E402

REFERENCES = Path(__file__).resolve().parent / "sampling_references.json"
GNOMON = ("gnomon", "gnomon_mclmc")  # gnomon's own kernels (not baselines)
BASELINES = ("bj_diag", "bj_dense", "bj_lowrank", "bj_pathfinder", "nutpie_diag", "nutpie_lowrank", "nutpie_flow")
QUICK_METHODS = ("gnomon", "bj_dense", "nutpie_lowrank")


@dataclass
class Result:
    method: str
    theta: np.ndarray  # (C, N, D)
    grads: int
    wall: float  # execution seconds, compilation excluded
    compile_s: float
    divergences: int
    parts: dict = field(default_factory=dict)  # gradient breakdown
    notes: dict = field(default_factory=dict)
    ess: float = math.nan
    rhat: float = math.nan
    mean_err: float = math.nan
    sd_err: float = math.nan

    @property
    def eff(self) -> float:
        return 1000.0 * self.ess / self.grads if self.grads else math.nan

    @property
    def wall_per_1k(self) -> float:
        return 1000.0 * self.wall / self.ess if self.ess > 0 else math.inf


def ess_rhat(theta: np.ndarray) -> tuple[float, float]:
    import arviz_stats as azs

    th = np.asarray(theta, dtype=np.float64)
    ess = azs.ess(th, chain_axis=0, draw_axis=1, method="bulk")
    rh = azs.rhat(th, chain_axis=0, draw_axis=1)
    return float(np.nanmin(ess)), float(np.nanmax(rh))


def uniform_starts(key, chains: int, dim: int) -> jnp.ndarray:
    return jax.random.uniform(key, (chains, dim), minval=-2.0, maxval=2.0)


def _timed(fn, *args):
    """AOT-compile ``fn(*args)``, then run it: (outputs, compile seconds, run seconds)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, t1 - t0, time.perf_counter() - t1


# ------------------------------------------------------------------------------------------------- gnomon
def run_gnomon(t: Target, key, chains: int, draws: int, kernel: str = "nuts") -> Result:
    obj = gn.Objective.from_log_prob(t.log_prob, t.dim)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp = gn.optimize(obj, jnp.asarray(t.start), "lbfgs", num_steps=500, tol=1e-3)
        post = gn.sample(obj, mp, key, num_chains=chains, num_samples=draws, kernel=kernel)
    ge = dict(post.info["grad_evals"])
    grads = int(post.num_grad_evals) + int(ge.get("map", 0))
    mi, si = mp.info or {}, post.info
    map_run = float(mi.get("run_s", mp.runtime_s))
    map_compile = float(mi.get("compile_s", 0.0))
    run_s = float(si.get("run_s", post.runtime_s))
    compile_s = float(si.get("compile_s", 0.0))
    hand = si.get("handoff") or {}
    stage = [d.get("transport") for d in si.get("decisions") or [] if isinstance(d.get("transport"), dict)]
    return Result(
        "gnomon" if kernel == "nuts" else f"gnomon_{kernel}",
        np.asarray(post.theta),
        grads,
        map_run + run_s,
        map_compile + compile_s,
        int(np.sum(post.stats["diverging"])),
        parts=ge,
        notes={
            "map_status": str(mp.status),
            "num_warmup": si.get("num_warmup"),
            "decision": "; ".join(str(d.get("action")) for d in si.get("decisions") or []) or None,
            "status_code": str(si.get("status_code")),
            "steps_per_draw": float(np.mean(post.stats["n_steps"])),
            "seed": (si.get("metric") or {}).get("seed"),
            "metric": (si.get("metric") or {}).get("adapt"),
            "step_size": si.get("step_size"),
            "ratio_spread": hand.get("metric_ratio_spread"),
            "warnings": [str(w.message)[:100] for w in caught],
            # the transport stage's share: its training seconds (summed over tries) and gradients
            "train_s": float(sum(d.get("train_s", 0.0) for d in stage)),
            "stage_grads": int(ge.get("transport", 0)),
        },
    )


# ------------------------------------------------------------------------------------------------- blackjax
def run_blackjax_window(t: Target, key, chains: int, draws: int, kind: str, warmup: int = 1000) -> Result:
    import blackjax

    k_init, k_warm, k_samp = jax.random.split(key, 3)
    pos0 = uniform_starts(k_init, chains, t.dim)

    def program(k_warm, k_samp, pos0):
        def adapt(k, p):
            if kind == "lowrank":
                wa = blackjax.window_adaptation_low_rank(blackjax.nuts, t.log_prob)
            else:
                wa = blackjax.window_adaptation(blackjax.nuts, t.log_prob, is_mass_matrix_diagonal=kind == "diag")
            (state, params), info = wa.run(k, p, num_steps=warmup)
            return state, params["step_size"], params["inverse_mass_matrix"], jnp.sum(
                info.info.num_integration_steps
            ), jnp.sum(info.info.is_divergent)

        states, eps, imm, wsteps, wdiv = jax.vmap(adapt)(jax.random.split(k_warm, chains), pos0)
        pos, n, div = _nuts_draws_any(t.log_prob, k_samp, states, eps, imm, draws)
        return pos, wsteps, n, div

    (pos, wsteps, n, div), c_s, r_s = _timed(program, k_warm, k_samp, pos0)
    extra = chains * (2 if kind == "lowrank" else 1)  # chain inits (+ the low-rank re-init at μ*)
    grads = int(np.sum(wsteps)) + int(np.sum(n)) + extra
    return Result(
        f"bj_{kind}",
        np.asarray(pos),
        grads,
        r_s,
        c_s,
        int(np.sum(div)),
        parts={"warmup": int(np.sum(wsteps)) + extra, "sampling": int(np.sum(n))},
    )


def _nuts_draws_any(logdensity, key, states, step_size, imm, draws: int):
    """Like :func:`_nuts_draws` for any per-chain metric pytree (diag, dense or low-rank)."""
    import blackjax

    def chain(k, state, eps, m):
        kern = blackjax.nuts(logdensity, eps, m)

        def body(s, kk):
            s, info = kern.step(kk, s)
            return s, (s.position, info.num_integration_steps, info.is_divergent)

        _, (pos, n, div) = jax.lax.scan(body, state, jax.random.split(k, draws))
        return pos, jnp.sum(n), jnp.sum(div)

    keys = jax.random.split(key, states.position.shape[0])
    return jax.vmap(chain)(keys, states, step_size, imm)


def run_blackjax_pathfinder(t: Target, key, chains: int, draws: int, warmup: int = 400) -> Result:
    import blackjax
    from blackjax.vi import pathfinder

    k_init, k_warm, k_samp = jax.random.split(key, 3)
    x0 = uniform_starts(k_init, 1, t.dim)[0]

    def program(k_warm, k_samp, x0):
        pa = blackjax.pathfinder_adaptation(blackjax.nuts, t.log_prob, num_chains=chains)
        (states, params), info = pa.run(k_warm, x0, num_steps=warmup)
        wsteps = jnp.sum(info.info.num_integration_steps)
        wdiv = jnp.sum(info.info.is_divergent)
        eps = params["step_size"]
        imm = jnp.broadcast_to(params["inverse_mass_matrix"], (chains, t.dim, t.dim))
        pos, n, div = _nuts_draws_any(t.log_prob, k_samp, states, eps, imm, draws)
        return pos, wsteps, n, div + 0 * wdiv

    (pos, wsteps, n, div), c_s, r_s = _timed(program, k_warm, k_samp, x0)
    # the cost of the paths: one single path from the same start gives the L-BFGS iterations
    _, pinfo = pathfinder.approximate(k_warm, t.log_prob, x0)
    iters = int(np.sum(np.isfinite(np.asarray(pinfo.path.elbo)))) or 30
    n_paths, per_path_samples, maxiter = chains, 200, 30
    path_cost = n_paths * (2 * iters + (maxiter + 1) * per_path_samples)
    grads = path_cost + int(np.sum(wsteps)) + int(np.sum(n)) + chains
    return Result(
        "bj_pathfinder",
        np.asarray(pos),
        grads,
        r_s,
        c_s,
        int(np.sum(div)),
        parts={"pathfinder": path_cost, "warmup": int(np.sum(wsteps)) + chains, "sampling": int(np.sum(n))},
    )


# ------------------------------------------------------------------------------------------------- nutpie
def run_nutpie(t: Target, key, chains: int, draws: int, adaptation: str, tune: int = 1000) -> Result:
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    vg = jax.jit(jax.value_and_grad(t.log_prob))
    x = np.zeros(t.dim, np.float32)
    t0 = time.perf_counter()
    jax.block_until_ready(vg(x))
    c_s = time.perf_counter() - t0

    def make_logp():
        def logp(th):
            v, g = vg(th)
            return float(v), np.ascontiguousarray(np.asarray(g, dtype=np.float64))

        return logp

    def make_expand(seed1, seed2, chain):
        def expand(th):
            return {"theta": np.asarray(th, dtype=np.float64)}

        return expand

    seed = int(np.asarray(jax.random.randint(key, (), 0, 2**30)))
    flow = {}
    if adaptation == "flow":  # nutpie's normalizing-flow adaptation (flowjax): the adapter calls the JAX function
        import nutpie.transform_adapter as nta

        flow = {"make_transform_adapter": nta.make_transform_adapter(),
                "raw_logp_fn": lambda th: (t.log_prob(th), None)}
    model = from_pyfunc(
        t.dim,
        make_logp,
        make_expand,
        [np.dtype("float64")],
        [(t.dim,)],
        ["theta"],
        make_initial_point_fn=lambda s: np.random.default_rng(s).uniform(-2, 2, t.dim),
        **flow,
    )
    t0 = time.perf_counter()
    tr = nutpie.sample(
        model,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        adaptation={"lowrank": "low_rank"}.get(adaptation, adaptation),
        progress_bar=False,
        save_warmup=True,
        cores=1,
    )
    r_s = time.perf_counter() - t0
    theta = np.asarray(tr.posterior["theta"].values)
    wn = int(tr.warmup_sample_stats["n_steps"].values.sum())
    sn = int(tr.sample_stats["n_steps"].values.sum())
    div = int(tr.sample_stats["diverging"].values.sum())
    return Result(
        f"nutpie_{adaptation}",
        theta,
        wn + sn + chains,
        r_s,
        c_s,
        div,
        parts={"warmup": wn + chains, "sampling": sn},
    )


RUNNERS = {
    "gnomon": run_gnomon,
    "gnomon_mclmc": lambda t, k, c, d: run_gnomon(t, k, c, d, "mclmc"),
    "bj_diag": lambda t, k, c, d: run_blackjax_window(t, k, c, d, "diag"),
    "bj_dense": lambda t, k, c, d: run_blackjax_window(t, k, c, d, "dense"),
    "bj_lowrank": lambda t, k, c, d: run_blackjax_window(t, k, c, d, "lowrank"),
    "bj_pathfinder": run_blackjax_pathfinder,
    "nutpie_diag": lambda t, k, c, d: run_nutpie(t, k, c, d, "diag"),
    "nutpie_lowrank": lambda t, k, c, d: run_nutpie(t, k, c, d, "lowrank"),
    "nutpie_flow": lambda t, k, c, d: run_nutpie(t, k, c, d, "flow"),
}


# ------------------------------------------------------------------------------------------------- references
def _load_refs() -> dict:
    if REFERENCES.exists():
        return json.loads(REFERENCES.read_text())
    return {"schema_version": 1, "targets": {}}


def reference(t: Target, by_name: dict[str, Target]) -> tuple[np.ndarray, np.ndarray, str]:
    """(mean, sd, source) of the reported quantities: exact / inference-gym, else a cached long run."""
    if t.mean is not None:
        return t.mean, t.sd, t.ref_source
    refs = _load_refs()
    hit = refs["targets"].get(t.name)
    if hit is not None:
        return np.asarray(hit["mean"]), np.asarray(hit["sd"]), hit["source"]
    src = by_name.get(t.reference_from) if t.reference_from else t
    if src is None:
        src = TARGETS[t.reference_from]()
    r = run_blackjax_window(src, jax.random.key(12345), 4, 10000, "dense")
    th = r.theta.reshape(-1, src.dim)
    if t.to_this is not None:
        th = t.to_this(th)
    x = np.asarray(t.report(th), np.float64)
    ess, rhat = ess_rhat(r.theta)
    source = (
        f"long run: blackjax dense window adaptation, 4 × 10000 draws of {src.name} "
        f"(min ESS {ess:.0f}, R̂ {rhat:.3f})"
    )
    refs = _load_refs()  # again: another process may have added a reference during the long run
    refs["targets"][t.name] = {"mean": x.mean(0).tolist(), "sd": x.std(0).tolist(), "source": source}
    tmp = REFERENCES.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(refs, indent=1))
    tmp.replace(REFERENCES)
    return x.mean(0), x.std(0), source


def score(r: Result, t: Target, ref: tuple[np.ndarray, np.ndarray, str]) -> Result:
    r.ess, r.rhat = ess_rhat(r.theta)
    x = np.asarray(t.report(r.theta.reshape(-1, t.dim)), np.float64)
    mean, sd = ref[0], ref[1]
    r.mean_err = float(np.max(np.abs(x.mean(0) - mean) / sd))
    r.sd_err = float(np.max(np.abs(x.std(0) / sd - 1)))
    return r


# ------------------------------------------------------------------------------------------------- main
def _versions() -> str:
    """The baselines' library versions (part of the --cache key: a cached result is reused only for them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("blackjax", "nutpie", "jax", "flowjax"):
        try:
            out.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            out.append(f"{name}=-")
    return ",".join(out)


_VERSIONS = _versions()


def _median(rs: list[Result], attr: str) -> float:
    return float(np.median([getattr(r, attr) for r in rs]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"targets {QUICK}, methods {QUICK_METHODS}, one key")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--keys", type=int, default=1, help="repeat each run with this many keys (medians reported)")
    ap.add_argument("--targets", default="", help="comma-separated names (default: all)")
    ap.add_argument("--methods", default="", help=f"comma-separated from {','.join(GNOMON + BASELINES)}")
    ap.add_argument("--json", default="", help="write all numbers to this file")
    ap.add_argument(
        "--cache",
        default="",
        help="reuse and store baseline results (not gnomon's) in this JSON file, keyed by target, method, key",
    )
    args = ap.parse_args(argv)
    cache = json.loads(Path(args.cache).read_text()) if args.cache and Path(args.cache).exists() else {}

    names = args.targets.split(",") if args.targets else (list(QUICK) if args.quick else list(TARGETS))
    methods = args.methods.split(",") if args.methods else list(QUICK_METHODS if args.quick else ("gnomon", *BASELINES))
    targets = load(names)
    by_name = {t.name: t for t in targets}
    print(
        f"{jax.devices()[0].platform}, {args.chains} chains × {args.draws} draws, {args.keys} key(s); "
        "eff = min bulk ESS per 1000 gradient evaluations (everything counted); wall/1k = execution s per 1000 ESS",
        flush=True,
    )
    table: dict = {}
    for t in targets:
        ref = reference(t, by_name)
        per: dict[str, list[Result]] = {m: [] for m in methods}
        for k in range(args.keys):
            for m in methods:
                key = jax.random.key(1000 * k + 17)
                ck = f"{t.name}|{t.dim}|{t.note}|{m}|{k}|{args.chains}|{args.draws}|{_VERSIONS}"
                if m not in GNOMON and ck in cache:
                    r = Result(**cache[ck])
                    r.notes = {**r.notes, "cached": True}
                    per[m].append(r)
                else:
                    try:
                        r = RUNNERS[m](t, key, args.chains, args.draws)
                    except Exception as exc:  # a baseline that cannot run is reported, not fatal
                        print(f"  {t.name} {m}: failed ({type(exc).__name__}: {str(exc)[:200]})", flush=True)
                        continue
                    per[m].append(score(r, t, ref))
                    if args.cache and m not in GNOMON:
                        cache[ck] = {**{k2: v for k2, v in r.__dict__.items() if k2 != "theta"}, "theta": None}
                        tmp = Path(args.cache + ".tmp")
                        tmp.write_text(json.dumps(cache, default=float))
                        tmp.replace(args.cache)
                print(
                    f"  {t.name:34s} {m:15s} key {k}: eff {r.eff:8.3f}  ESS {r.ess:7.0f}  grads {r.grads:9d}  "
                    f"R̂ {r.rhat:.3f}  mean {r.mean_err:.2f} sd  sd {100 * r.sd_err:4.0f} %  div {r.divergences:4d}  "
                    f"wall/1k {r.wall_per_1k:7.2f} s  compile {r.compile_s:5.1f} s  {r.notes.get('decision') or ''}"
                    f"{'(cached)' if r.notes.get('cached') else ''}",
                    flush=True,
                )
        row = {}
        for m, rs in per.items():
            if not rs:
                continue
            row[m] = {
                "eff": _median(rs, "eff"),
                "ess": _median(rs, "ess"),
                "grads": _median(rs, "grads"),
                "rhat": max(r.rhat for r in rs),
                "mean_err": max(r.mean_err for r in rs),
                "sd_err": max(r.sd_err for r in rs),
                "divergences": int(np.median([r.divergences for r in rs])),
                "wall_per_1k": _median(rs, "wall_per_1k"),
                "compile_s": _median(rs, "compile_s"),
                "parts": rs[0].parts,
                "notes": rs[0].notes,
                "per_key_eff": [r.eff for r in rs],
            }
        base = {m: v for m, v in row.items() if m not in GNOMON}
        if "gnomon" in row and "gnomon_mclmc" in row:
            row["mclmc_vs_nuts"] = row["gnomon_mclmc"]["eff"] / row["gnomon"]["eff"]
            print(f"  {t.name}: gnomon mclmc / gnomon nuts = {row['mclmc_vs_nuts']:.2f}", flush=True)
        if "gnomon" in row and base:
            best = max(base, key=lambda m: base[m]["eff"])
            row["best_baseline"] = best
            row["ratio"] = row["gnomon"]["eff"] / base[best]["eff"]
            print(f"  {t.name}: gnomon / best baseline ({best}) = {row['ratio']:.2f}", flush=True)
        row["reference"] = ref[2]
        table[t.name] = row

    kernel_ratios = [v["mclmc_vs_nuts"] for v in table.values() if isinstance(v, dict) and "mclmc_vs_nuts" in v]
    if kernel_ratios:
        gk = math.exp(float(np.mean(np.log(kernel_ratios))))
        print(f"geometric mean gnomon mclmc / nuts: {gk:.2f} (min {min(kernel_ratios):.2f}, max "
              f"{max(kernel_ratios):.2f} over {len(kernel_ratios)} targets)")
        table["_mclmc_vs_nuts"] = gk
    ratios = [v["ratio"] for v in table.values() if isinstance(v, dict) and "ratio" in v]
    if ratios:
        gm = math.exp(float(np.mean(np.log(ratios))))
        print(f"geometric mean gnomon / best baseline: {gm:.2f} (min {min(ratios):.2f} over {len(ratios)} targets)")
        table["_geometric_mean"] = gm
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1, default=float))
    return table


if __name__ == "__main__":
    main()
