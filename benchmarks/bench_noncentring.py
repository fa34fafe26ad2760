"""A numpyro model's own non-centring (issue 20, item 2): centred hierarchical models written in numpyro, sampled with
the defaults, against a long run of their non-centred form.

Models: the hierarchical regression of ``sampling_targets`` (20 groups × 5 observations, τ ~ half-N(0, 1), the
group scale 0.3 against a noise of 1: τ reaches into the neck) and Stan's eight schools with a half-Cauchy(5) τ —
the two targets the fitted transport map gets wrong when they are written as log densities (docs/sampling.md).
For each key: ``gn.optimize(obj, 0, "lbfgs", num_steps=500, tol=1e-3)`` then ``gn.sample(obj, init=fit, key)``
(4 × 1000 draws), and per key the largest |mean error| (in reference sd), the largest sd error, log τ's sd ratio,
the divergences, the gradient evaluations, the status and whether the stage took the model's non-centring.
``--fitted`` turns that off (the fitted map, as before Dec 8) for a comparison in the same process.

Run: ``python benchmarks/bench_noncentring.py [--keys 6] [--fitted]``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampling_targets import SCHOOLS_SIGMA, SCHOOLS_Y, _hreg_data  # noqa: E402

import gnomon as gn  # noqa: E402


def hreg(centred: bool):
    import numpyro
    import numpyro.distributions as dist

    def model(x, y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        beta = numpyro.sample("beta", dist.Normal(0.0, 2.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        with numpyro.plate("g", x.shape[0]):
            if centred:
                alpha = numpyro.sample("alpha", dist.Normal(mu, tau))
            else:
                alpha = mu + tau * numpyro.sample("alpha_raw", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(alpha[:, None] + beta * x, sigma), obs=y)

    x, y = _hreg_data()
    return gn.Objective.from_numpyro(model, x, y=y, data_argnames="y")


def schools(centred: bool):
    import numpyro
    import numpyro.distributions as dist

    sigma = jnp.asarray(SCHOOLS_SIGMA, jnp.float32)

    def model(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("school", 8):
            if centred:
                theta = numpyro.sample("theta", dist.Normal(mu, tau))
            else:
                theta = mu + tau * numpyro.sample("theta_raw", dist.Normal(0.0, 1.0))
            numpyro.sample("y", dist.Normal(theta, sigma), obs=y)

    return gn.Objective.from_numpyro(model, y=jnp.asarray(SCHOOLS_Y, jnp.float32), data_argnames="y")


MODELS = {"hierarchical_regression": (hreg, "alpha"), "eight_schools_halfcauchy": (schools, "theta")}


def centred_from(obj_nc, th: np.ndarray, site: str) -> np.ndarray:
    """Draws of the non-centred model (N, D) → the centred model's θ (the site = μ + τ·raw)."""
    lay = obj_nc.layout
    raw = lay[f"{site}_raw"]
    mu, log_tau = th[:, lay["mu"].start], th[:, lay["tau"].start]
    out = th.copy()
    out[:, raw.start : raw.stop] = mu[:, None] + np.exp(log_tau)[:, None] * th[:, raw.start : raw.stop]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=6)
    ap.add_argument("--fitted", action="store_true", help="the fitted map instead of the model's non-centring")
    args = ap.parse_args(argv)
    if args.fitted:
        from gnomon.sampler import transport_stage

        transport_stage.structural_map = lambda *a, **k: (None, "off (--fitted)", [])
    results = {}
    for name, (build, site) in MODELS.items():
        ref_obj = build(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = gn.sample(ref_obj, jnp.zeros(ref_obj.dim), jax.random.key(12345), num_chains=4, num_samples=5000,
                            progress=False)
        ref_th = centred_from(ref_obj, np.asarray(ref.theta).reshape(-1, ref_obj.dim), site)
        mean, sd = ref_th.mean(0), ref_th.std(0)
        obj = build(True)
        lt = obj.layout["tau"].start
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = gn.optimize(obj, jnp.zeros(obj.dim), "lbfgs", num_steps=500, tol=1e-3)
            rows = []
            for k in range(args.keys):
                post = gn.sample(obj, fit, jax.random.key(k), num_chains=4, num_samples=1000, progress=False)
                th = np.asarray(post.theta).reshape(-1, obj.dim)
                structural = any((d.get("transport") or {}).get("structural") for d in post.info["decisions"])
                row = {"key": k, "mean_err": float(np.max(np.abs(th.mean(0) - mean) / sd)),
                       "sd_err": float(np.max(np.abs(th.std(0) / sd - 1))),
                       "log_tau_sd_ratio": float(th[:, lt].std() / sd[lt]),
                       "divergences": int(np.sum(post.stats["diverging"])), "grads": int(post.num_grad_evals),
                       "status": str(post.info.get("status_code")), "structural": structural}
                rows.append(row)
                print(f"  {name:26s} key {k}: mean {row['mean_err']:.3f} sd  sd {100 * row['sd_err']:4.1f} %  "
                      f"log τ sd ratio {row['log_tau_sd_ratio']:.2f}  div {row['divergences']:3d}  "
                      f"grads {row['grads']:6d}  {row['status']:10s} "
                      f"{'model non-centring' if structural else 'fitted map / none'}", flush=True)
        ok = sum(r["mean_err"] <= 0.1 and r["sd_err"] <= 0.1 for r in rows)
        print(f"  {name}: accurate (means within 0.1 sd, sds within 10 %) on {ok} of {len(rows)} keys", flush=True)
        results[name] = rows
    return results


if __name__ == "__main__":
    main()
