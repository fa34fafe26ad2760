r"""Where a recovery restarts: the best Gaussian along the optimizer's path (Pathfinder's choice).

An optimizer that runs into a funnel's neck, or off to a boundary, passes through the posterior's bulk on
its way. Pathfinder (Zhang et al. 2022) uses that: at points :math:`θ_k` of the path it forms a Gaussian
:math:`q_k = N(θ_k, \Sigma_k)` and keeps the one with the largest evidence lower bound

.. math:: \mathrm{ELBO}(q_k) = E_{q_k}[\log p(θ)] + \mathrm{H}[q_k] \approx
          \frac1M \sum_m \left(\log p(θ_k + L_k\varepsilon_m) + \tfrac12|\varepsilon_m|^2\right)
          + \log|L_k| + c,

the Gaussian closest to the posterior in KL(q‖p). Here :math:`\Sigma_k = L_kL_k^T` is the inverse of the
exact curvature of :math:`-\log p` at :math:`θ_k` (negative eigenvalues flipped, flat ones filled: see
:mod:`gnomon.curvature.mass_matrix`) rather than L-BFGS's estimate, because the optimization Trace keeps the
path but not the optimizer's memory. :func:`best_on_path` looks at up to ``max_points`` evenly spaced rows
of the path (the start and the end included) with ``num_draws`` draws each; its cost, :math:`2D + M` gradient
evaluations per point, is counted in the warmup. Measured on the benchmark's funnels (Neal's, centred eight
schools, a latent Brownian motion with unknown scales) the choice was the optimizer's start or a point near
it: the recovery then starts inside the bulk, with that Gaussian's scales as its metric.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.curvature import mass_matrix as mmx
from gnomon.objective.objective import Objective

MAX_POINTS = 6
NUM_DRAWS = 32


class PathGaussian(NamedTuple):
    """The chosen Gaussian: its centre (a row of the path), metric (covariance and factors), ELBO."""

    center: np.ndarray
    imm: mmx.InverseMassMatrix
    elbo: float
    row: int


class PathChoice(NamedTuple):
    """The outcome of :func:`best_on_path`: the best Gaussian (None when none was usable), the ELBO of
    every row looked at, and the gradient evaluations spent."""

    best: PathGaussian | None
    elbos: dict[int, float]
    num_grad_evals: int


def path_rows(path: np.ndarray, max_points: int) -> np.ndarray:
    """Up to ``max_points`` evenly spaced rows of the finite part of ``path`` (first and last included)."""
    finite = np.flatnonzero(np.all(np.isfinite(path), axis=1))
    if finite.size == 0:
        return finite
    picks = np.unique(np.linspace(0, finite.size - 1, min(max_points, finite.size)).round().astype(int))
    return finite[picks]


def best_on_path(
    obj: Objective,
    path: Any,
    key: Any,
    *,
    data: Any = None,
    max_points: int = MAX_POINTS,
    num_draws: int = NUM_DRAWS,
    dense: bool | str = "auto",
) -> PathChoice:
    """The largest-ELBO Gaussian at up to ``max_points`` rows of ``path`` ``(T, D)`` (see the module
    docstring); ``data`` None for the objective's bound data."""
    path = np.asarray(path)
    rows = path_rows(path, max_points)
    dtype = path.dtype if np.issubdtype(path.dtype, np.floating) else np.float32
    d = path.shape[1]
    cost = 0
    best: PathGaussian | None = None
    elbos: dict[int, float] = {}
    lp = jax.vmap(lambda th: obj.log_prob(th, data)) if data is not None else jax.vmap(obj.log_prob)
    for i, row in enumerate(rows):
        theta = jnp.asarray(path[row], dtype)
        try:
            imm, curv = mmx.curvature_metric(obj, theta, method="exact", dense=dense, data=data)
        except ValueError:  # a non-finite curvature: not a usable Gaussian
            cost += 2 * d
            elbos[int(row)] = -math.inf
            continue
        cost += int(curv.num_grad_evals)
        lfac = np.asarray(imm.draw_factor if imm.draw_factor is not None else imm.factor, np.float64)
        lmat = lfac if lfac.ndim == 2 else np.diag(lfac)
        eps = np.asarray(jax.random.normal(jax.random.fold_in(key, i), (num_draws, d)), np.float64)
        draws = np.asarray(path[row], np.float64)[None, :] + eps @ lmat.T
        vals = np.asarray(lp(jnp.asarray(draws, dtype)), np.float64)
        cost += num_draws
        sign, logdet = np.linalg.slogdet(lmat)
        elbo = float(np.mean(vals + 0.5 * np.sum(eps * eps, axis=1)) + logdet) if sign != 0 else -math.inf
        if not math.isfinite(elbo):
            elbo = -math.inf
        elbos[int(row)] = elbo
        if math.isfinite(elbo) and (best is None or elbo > best.elbo):
            best = PathGaussian(np.asarray(path[row]), imm, elbo, int(row))
    return PathChoice(best, elbos, cost)
