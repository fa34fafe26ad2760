"""Quickstart: one objective → MAP by two optimizers → NUTS hand-off → run directories → ArviZ.

A normal model with unknown mean and scale (σ > 0 through a ``positive`` transform), fitted in the flat
unconstrained θ-space. Run: ``python examples/quickstart.py [--out quickstart-runs]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gnomon as gn


def main(out: str = "quickstart-runs") -> None:
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.normal(1.3, 0.6, size=50))

    # θ-space: named blocks with units and transforms; θ = (mu, log sigma)
    layout = gn.Layout({"mu": (), "sigma": ()}, transforms={"sigma": "positive"},
                       units={"mu": "m", "sigma": "m"})

    def log_density(p):  # over constrained values: N(y | mu, sigma) with weak priors
        like = jnp.sum(-0.5 * ((y - p["mu"]) / p["sigma"]) ** 2 - jnp.log(p["sigma"]))
        return like - 0.5 * (p["mu"] / 10.0) ** 2 - p["sigma"]

    # loss(θ) for optimizers, log_prob(θ) (Jacobian of the transform included) for NUTS
    obj = gn.Objective.from_log_density(log_density, layout)
    theta0 = layout.pack({"mu": 0.0, "sigma": 1.0})

    # MAP: plain GD at one global rate, preconditioned GD (exact Hessian diagonal, power 1, safeguarded) and
    # L-BFGS — a method is a name or a small configuration object of gn.optim
    gd = gn.run_simple_gd(obj, theta0, learning_rate=0.005, num_steps=2000, tol=1e-3)
    pgd = gn.optimize(obj, theta0, "preconditioned_gd", num_steps=200, tol=1e-3)
    lbfgs = gn.optimize(obj, theta0, gn.optim.lbfgs(memory_size=5), num_steps=200, tol=1e-3)
    for name, t in (("run_simple_gd", gd), ("preconditioned_gd", pgd), ("lbfgs", lbfgs)):
        print(f"{name:<18} {t.status:<10} steps {t.num_steps:>5}  grad evals {int(t.num_grad_evals):>5}  "
              f"MAP {({k: round(float(v), 4) for k, v in layout.unpack(t.final_theta).items()})}")

    # NUTS from the MAP: the curvature at the MAP seeds the mass matrix, the warmup is short
    post = gn.sample(obj, init=pgd, key=jax.random.key(1), num_chains=4, num_samples=500)
    draws = layout.unpack(post.theta)
    print(f"NUTS: {post.num_chains}×{post.num_draws} draws, {int(post.num_grad_evals)} grad evals; "
          f"mu = {float(draws['mu'].mean()):.3f} ± {float(draws['mu'].std()):.3f}, "
          f"sigma = {float(draws['sigma'].mean()):.3f} ± {float(draws['sigma'].std()):.3f}")

    # artifacts: one experiment, one run per fit; the posterior also as ArviZ netCDF
    exp = gn.Experiment(out, manifest={"description": "gnomon quickstart"})
    exp.save("map-simple_gd", gd, overwrite=True)
    exp.save("map-preconditioned_gd", pgd, overwrite=True)
    exp.save("posterior-nuts", post, overwrite=True, arviz=True)
    print(exp.aggregate()[["run_id", "kind", "status", "num_grad_evals"]].to_string(index=False))

    import arviz as az

    print(az.summary(post.to_arviz()))
    print(f"runs written to {Path(out).resolve()}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="quickstart-runs")
    main(p.parse_args().out)
