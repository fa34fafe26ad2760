"""``gnomon demo``: interim end-to-end fit (replaced by the binary-star flagship as it lands).

Fits a logistic regression on the UCI German credit data (when ``../shared/data`` is reachable) or on
simulated data, by gradient descent, and writes a run directory.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np


def run_demo(out: str = "gnomon-demo", quick: bool = False, seed: int = 0) -> Path:
    import gnomon as gn

    rng = np.random.default_rng(seed)
    n, d = (200, 5) if quick else (1000, 10)
    x = rng.normal(size=(n, d))
    w_true = rng.normal(size=d)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-x @ w_true))).astype(float)
    layout = gn.Layout({"w": (d,)}, units={"w": ""})

    def log_density(params):
        logits = jnp.asarray(x) @ params["w"]
        return jnp.sum(y * logits - jnp.logaddexp(0.0, logits)) - 0.5 * jnp.sum(params["w"] ** 2)

    obj = gn.Objective.from_log_density(log_density, layout)
    trace = gn.run_simple_gd(obj, jnp.zeros(d), learning_rate=1.0 / n, num_steps=500 if quick else 2000, tol=1e-6)
    run_dir = gn.save_run(Path(out) / "runs" / "logreg-gd", trace, layout=layout,
                          meta={"demo": "interim logistic regression", "seed": seed}, overwrite=True)
    print(f"fit: {trace}")
    print(f"w_true: {np.round(w_true, 3)}")
    print(f"w_map:  {np.round(np.asarray(trace.final_theta), 3)}")
    print(f"run directory: {run_dir}")
    return run_dir
