"""The transport stage (issue 20), composed from public pieces: gnomon's default against gnomon + a learned map.

For each target (``sampling_targets.NECKS`` by default) and key:

* **gnomon**: the default — ``gn.optimize(obj, x0, "lbfgs", num_steps=500, tol=1e-3)`` then
  ``gn.sample(obj, init=fit, key)`` (curvature seed, seed check, recovery).
* **gnomon_transport**: the same MAP, then a *pilot* ``gn.sample(obj, init=fit, key, num_warmup=W,
  num_samples=S, keep_warmup=True)`` (the seed check and a short recovery), the gradients at the pilot's last
  draws (one evaluation each, counted — once the stage is inside the sampler they come with the leapfrog steps),
  :func:`gnomon.sampler.transport.fit_transport` on them, and, when the map is kept,
  ``gn.sample(transported(obj, map), init=z_starts, key, inverse_mass_matrix=ones)``: NUTS in z, whose seed
  (the identity) is checked like any other; the Trace's ``theta`` is base θ. A refused map continues the pilot
  with gnomon's default sampler.

Counted: every gradient (MAP, curvature, pilot, the training draws' gradients, the run in z); the training itself
evaluates no log density (its seconds are in the wall time). Accuracy against ``sampling_targets`` references
(exact for the funnels; long runs of the non-centred models, cached in ``sampling_references.json``).
Baselines (nutpie low-rank and flow, blackjax dense / low-rank / pathfinder) are read from a cache written by
``bench_sampling.py --cache benchmarks/transport_baselines.json`` (their runs take minutes each).

Run: ``python benchmarks/bench_transport.py [--targets a,b] [--keys 3] [--methods gnomon,gnomon_transport]``.
``--step-sizes`` adds the per-chain step-size study (item 3): the leapfrog step per draw in neck and mouth.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sampling import Result, reference, run_gnomon, score  # noqa: E402
from sampling_targets import NECKS, Target, load  # noqa: E402

import gnomon as gn  # noqa: E402
from gnomon.sampler import transport as tp  # noqa: E402

BASELINE_CACHE = Path(__file__).resolve().parent / "transport_baselines.json"
PILOT_WARMUP, PILOT_SAMPLES, TRAIN_DRAWS = 150, 50, 600


def _grads(obj, theta: np.ndarray) -> np.ndarray:
    g = jax.jit(jax.vmap(jax.grad(obj.log_prob)))
    return np.concatenate([np.asarray(g(jnp.asarray(theta[i : i + 2048]))) for i in range(0, len(theta), 2048)])


def run_transport(t: Target, key, chains: int, draws: int, *, pilot_warmup: int = PILOT_WARMUP,
                  pilot_samples: int = PILOT_SAMPLES, train_draws: int = TRAIN_DRAWS) -> Result:
    obj = gn.Objective.from_log_prob(t.log_prob, t.dim)
    k_pilot, k_main = jax.random.split(key)
    notes: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp = gn.optimize(obj, jnp.asarray(t.start), "lbfgs", num_steps=500, tol=1e-3)
        try:
            pilot = gn.sample(obj, mp, k_pilot, num_chains=chains, num_warmup=pilot_warmup,
                              num_samples=pilot_samples, keep_warmup=True)
        except ValueError as exc:  # e.g. a curvature that overflows at a mode deep in the neck (funnel_100d)
            notes["pilot_fallback"] = f"gn.sample from the MAP failed ({str(exc)[:80]}): pilot from the start"
            pilot = gn.sample(obj, jnp.asarray(t.start), k_pilot, num_chains=chains, num_warmup=pilot_warmup,
                              num_samples=pilot_samples, keep_warmup=True, inverse_mass_matrix="identity")
        w = pilot.warmup
        wth = np.asarray(w.get("theta", w.get("z")))  # (C, W, D)
        pool = np.concatenate([wth, np.asarray(pilot.theta)], axis=1)
        per_chain = max(train_draws // chains, 10)
        train = pool[:, -per_chain:].reshape(-1, t.dim)
        t0 = time.perf_counter()
        g = _grads(obj, train)
        grad_s = time.perf_counter() - t0
        tmap, decision = tp.fit_transport(train, g, seed=int(np.asarray(jax.random.randint(key, (), 0, 2**30))))
        notes["transport"] = decision.as_info()
        if tmap is not None:
            tobj = tp.transported(obj, tmap)
            z0 = np.asarray(tmap.to_z(pilot.theta[:, -1]))
            post = gn.sample(tobj, jnp.asarray(z0, jnp.float32), k_main, num_chains=chains, num_samples=draws,
                             inverse_mass_matrix=np.ones(t.dim, np.float32))
        else:
            post = gn.sample(obj, pilot, k_main, num_chains=chains, num_samples=draws)
    ge = {"map": int(mp.num_grad_evals), "pilot": int(pilot.num_grad_evals), "train_grads": len(train),
          "main": int(post.num_grad_evals)}
    grads = sum(ge.values())
    info, pi, mi = post.info, pilot.info, mp.info or {}
    run_s = (float(mi.get("run_s", mp.runtime_s)) + float(pi.get("run_s", 0)) + float(info.get("run_s", 0))
             + grad_s + decision.details["train_s"])
    compile_s = float(mi.get("compile_s", 0)) + float(pi.get("compile_s", 0)) + float(info.get("compile_s", 0))
    notes.update({
        "decision": ("map kept; " if tmap is not None else "map refused; ")
        + ((info.get("decisions") or [{}])[-1].get("message") or "")[:90],
        "pilot_decisions": [d.get("action") for d in pi.get("decisions", [])],
        "main_decisions": [d.get("action") for d in info.get("decisions", [])],
        "step_size": info.get("step_size"),
        "n_steps": np.asarray(post.stats["n_steps"]),
        "warnings": [str(x.message)[:100] for x in caught],
    })
    return Result("gnomon_transport", np.asarray(post.theta), grads, run_s, compile_s,
                  int(np.sum(post.stats["diverging"])), parts=ge, notes=notes)


RUNNERS = {"gnomon": run_gnomon, "gnomon_transport": run_transport}


def step_size_study(t: Target, key, chains: int = 4, draws: int = 1000) -> dict:
    """Item 3: how much step size the chains want in the neck vs the mouth, with the pooled step size in θ and in
    the map's z. Proxy: NUTS' leapfrog steps per draw binned by the neck coordinate (coordinate 1 = log τ, or 0
    = v for the funnels) — with one step size, a region that wants a 10× smaller step pays ~10× the steps."""
    obj = gn.Objective.from_log_prob(t.log_prob, t.dim)
    ic = 0 if t.family == "funnel" else 1
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp = gn.optimize(obj, jnp.asarray(t.start), "lbfgs", num_steps=500, tol=1e-3)
        base = gn.sample(obj, mp, key, num_chains=chains, num_samples=draws)
        r = run_transport(t, key, chains, draws)
    out["theta"] = _binned(np.asarray(base.theta)[..., ic], np.asarray(base.stats["n_steps"]))
    out["theta"]["step_size"] = base.info["step_size"]
    if "n_steps" in r.notes:
        out["z"] = _binned(r.theta[..., ic], r.notes["n_steps"])
        out["z"]["step_size"] = r.notes.get("step_size")
    out["transport"] = r.notes.get("transport", {}).get("action")
    print(f"  {t.name}: leapfrog steps per draw, lowest / highest decile of coordinate {ic}: "
          f"θ {out['theta']['neck_steps']:.1f} / {out['theta']['mouth_steps']:.1f} (step size "
          f"{out['theta']['step_size']:.3g})" + (f"; z {out['z']['neck_steps']:.1f} / {out['z']['mouth_steps']:.1f} "
                                                 f"(step size {out['z']['step_size']:.3g})" if "z" in out else ""),
          flush=True)
    return out


def detect_runoff(theta: np.ndarray, loss: np.ndarray, window: int = 10, min_move: float = 2.0,
                  min_slope: float = 1.0) -> tuple[int, int] | None:
    """Item 4 (a prototype for the optimizer's stop test): the first step at which the path has run off along one
    coordinate for ``window`` steps — it moved monotonically by more than ``min_move``, the loss fell by at
    least ``min_slope`` nats per unit of that movement, and the fall did not slow down (the second half of the
    window fell at ≥ half the rate of the first). A density ∝ e^{−k·logτ} along log τ → −∞ (a centred model
    without a mode: the loss falls by k = J − 1 nats per unit, forever) fires this; a mode does not (the fall
    stops). Returns ``(step, coordinate)`` or None."""
    th, lo = np.asarray(theta, np.float64), np.asarray(loss, np.float64)
    for s in range(window, len(th)):
        seg, ls = th[s - window : s + 1], lo[s - window : s + 1]
        if not (np.all(np.isfinite(seg)) and np.all(np.isfinite(ls))):
            return None
        d = np.diff(seg, axis=0)
        mono = np.all(d <= 0, axis=0) | np.all(d >= 0, axis=0)
        move = np.abs(seg[-1] - seg[0])
        cand = np.flatnonzero(mono & (move > min_move))
        if not len(cand):
            continue
        i = int(cand[np.argmax(move[cand])])
        fall = ls[0] - ls[-1]
        half = window // 2
        first, second = ls[0] - ls[half], ls[half] - ls[-1]
        if fall >= min_slope * move[i] and second >= 0.5 * first * (window - half) / half and first > 0:
            return s, i
    return None


def runoff_study(names: list[str]) -> None:
    """Where :func:`detect_runoff` fires on the default MAP (L-BFGS, 500 steps) of each target."""
    for t in load(names):
        obj = gn.Objective.from_log_prob(t.log_prob, t.dim)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mp = gn.optimize(obj, jnp.asarray(t.start), "lbfgs", num_steps=500, tol=1e-3)
        th, lo = np.asarray(mp.theta), np.asarray(mp.loss)
        hit = detect_runoff(th, lo)
        per_row = mp.num_grad_evals / max(len(th), 1)
        where = (f"fires at step {hit[0]} along coordinate {hit[1]} (≈ {int(hit[0] * per_row)} gradients)"
                 if hit else "does not fire")
        print(f"  {t.name:34s} MAP {str(mp.status)[:40]:40s} {mp.num_grad_evals:6d} gradients; runoff test {where}",
              flush=True)


def _binned(neck: np.ndarray, n: np.ndarray) -> dict:
    q = np.quantile(neck, [0.0, 0.1, 0.5, 0.9, 1.0])
    lo, hi = neck <= q[1], neck >= q[3]
    return {"neck_steps": float(np.mean(n[lo])), "mouth_steps": float(np.mean(n[hi])),
            "ratio": float(np.mean(n[lo]) / max(np.mean(n[hi]), 1e-9)), "quantiles": q.round(2).tolist()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="", help=f"comma-separated (default {','.join(NECKS)})")
    ap.add_argument("--methods", default="gnomon,gnomon_transport")
    ap.add_argument("--keys", type=int, default=1)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--baselines", default=str(BASELINE_CACHE), help="bench_sampling --cache file to read")
    ap.add_argument("--json", default="")
    ap.add_argument("--runoff", action="store_true", help="only the MAP run-off study (item 4)")
    ap.add_argument("--step-sizes", action="store_true", help="only the neck/mouth step-size study (item 3)")
    args = ap.parse_args(argv)
    names = args.targets.split(",") if args.targets else list(NECKS)
    if args.step_sizes:
        return {t.name: step_size_study(t, jax.random.key(17)) for t in load(names)}
    if args.runoff:
        runoff_study(names + ["eight_schools_noncentered_lognormal", "banana_2d", "rotated_gaussian_100d"])
        return {}
    methods = args.methods.split(",")
    cache = json.loads(Path(args.baselines).read_text()) if Path(args.baselines).exists() else {}
    targets = load(names)
    by_name = {t.name: t for t in targets}
    table: dict = {}
    for t in targets:
        ref = reference(t, by_name)
        rows: dict[str, list[Result]] = {}
        for k in range(args.keys):
            key = jax.random.key(1000 * k + 17)
            for m in methods:
                try:
                    r = score(RUNNERS[m](t, key, args.chains, args.draws), t, ref)
                except Exception as exc:  # reported, not fatal: gnomon's default fails on funnel_100d
                    print(f"  {t.name:34s} {m:17s} key {k}: failed ({type(exc).__name__}: {str(exc)[:150]})",
                          flush=True)
                    continue
                rows.setdefault(m, []).append(r)
                _print(t, m, k, r)
        for ck, v in cache.items():
            parts = ck.split("|")
            if parts[0] == t.name and int(parts[4]) < args.keys:
                r = Result(**{**v, "theta": np.zeros((1, 1, t.dim))})
                rows.setdefault(parts[3], []).append(r)
                _print(t, parts[3], int(parts[4]), r, cached=True)
        table[t.name] = {m: _summary(rs) for m, rs in rows.items()}
        table[t.name]["per_key"] = {m: [_row(r) for r in rs] for m, rs in rows.items()}
        table[t.name]["reference"] = ref[2]
        _ratio(t.name, table[t.name])
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1, default=float))
    return table


def _print(t, m, k, r, cached=False):
    print(f"  {t.name:34s} {m:17s} key {k}: eff {r.eff:8.2f}  ESS {r.ess:6.0f}  grads {r.grads:8d}  R̂ {r.rhat:.3f}  "
          f"mean {r.mean_err:.2f} sd  sd {100 * r.sd_err:4.0f} %  div {r.divergences:4d}  wall {r.wall:6.1f} s  "
          f"compile {r.compile_s:5.1f} s "
          + ("" if cached or "train_s" not in r.notes else
             f"train {r.notes['train_s']:4.1f} s  stage grads {r.notes['stage_grads']:6d}  ")
          + f"{'(cached)' if cached else r.notes.get('status_code', '')} "
          f"{'' if cached else (r.notes.get('decision') or '')[:80]}", flush=True)


def _row(r: Result) -> dict:
    return {"eff": r.eff, "rhat": r.rhat, "mean_err": r.mean_err, "sd_err": r.sd_err, "divergences": r.divergences,
            "wall": r.wall, "compile_s": r.compile_s, "grads": r.grads, "train_s": r.notes.get("train_s"),
            "stage_grads": r.notes.get("stage_grads"), "decision": r.notes.get("decision")}


def _summary(rs: list[Result]) -> dict:
    return {"eff": float(np.median([r.eff for r in rs])), "rhat": max(r.rhat for r in rs),
            "mean_err": max(r.mean_err for r in rs), "sd_err": max(r.sd_err for r in rs),
            "grads": float(np.median([r.grads for r in rs])), "wall": float(np.median([r.wall for r in rs])),
            "divergences": int(np.median([r.divergences for r in rs])), "keys": len(rs),
            "parts": rs[0].parts,
            "notes": {k: v for k, v in rs[0].notes.items() if k not in ("warnings", "n_steps")}}


def _ratio(name: str, row: dict) -> None:
    base = {m: v for m, v in row.items() if isinstance(v, dict) and not m.startswith("gnomon") and m != "per_key"}
    ok = {m: v for m, v in base.items() if v["rhat"] <= 1.05}
    for m in ("gnomon", "gnomon_transport"):
        if m in row and ok:
            best = max(ok, key=lambda b: ok[b]["eff"])
            row[f"{m}_ratio"] = row[m]["eff"] / ok[best]["eff"]
            print(f"  {name}: {m} / best baseline with R̂ ≤ 1.05 ({best}) = {row[f'{m}_ratio']:.2f}", flush=True)
    if not math.isfinite(sum(v["eff"] for v in base.values())):
        print(f"  {name}: a baseline has no finite eff", flush=True)


if __name__ == "__main__":
    main()
