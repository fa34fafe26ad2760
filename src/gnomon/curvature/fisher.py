r"""The expected Fisher information of a likelihood objective, from Jacobian-vector products.

For :meth:`gnomon.Objective.from_likelihood` with mean :math:`\mu(θ)` (N data) and family weights
:math:`w(\mu)` (:mod:`gnomon.objective.family`: Poisson :math:`1/\mu`, Gaussian :math:`1/\sigma^2`, Student-t
:math:`(\nu+1)/((\nu+3)\sigma^2)`),

.. math::

    F(θ) = J^T W J + H_π, \qquad J = \partial\mu/\partial θ \in \mathbb R^{N\times D},
    \quad W = \mathrm{diag}(w(\mu(θ))),

where :math:`H_π = \nabla^2_θ(-\log π)` is the exact Hessian of the negative log prior over θ (no
log-Jacobian term; zero without a prior; it is added when ``include_prior`` and counted at no cost, as it
never evaluates the model). :math:`J^T W J` is the *expected* Hessian of the negative log likelihood: it
does not depend on the observed data, is positive semi-definite and has no noise.

J is never formed when it is not needed:

* **forward** (N ≥ D): ``jax.linearize`` once, then D Jacobian-vector products :math:`J e_j` in batches of
  ``batch_size`` (``lax.map``); the diagonal accumulates :math:`\sum_n w_n (J e_j)_n^2` per column, the dense
  matrix :math:`(J e_j)^T W (J e_k)`. Cost D.
* **reverse** (N < D): N vector-Jacobian products :math:`J^T e_n` (rows). Cost N.
* **probes** (diagonal only, ``num_probes=k``): :math:`u = J^T (\sqrt{w} \odot z)` with Rademacher
  :math:`z \in \{\pm1\}^N`; :math:`E[u \odot u] = \mathrm{diag}(J^T W J)` exactly, averaged over k probes.
  Cost k VJPs — for D in the thousands and large images, where D JVPs would cost too much.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gnomon.curvature.numerics import exact_matrix

MODES = ("forward", "reverse", "probes")
_HIGHEST = jax.lax.Precision.HIGHEST  # full float32 products on GPUs (not TF32): F feeds inverses and bounds


def fisher_mode(num_data: int, dim: int, num_probes: int | None, dense: bool) -> str:
    """``"probes"`` when asked (diagonal only), else the cheaper exact mode (module docstring)."""
    if num_probes is not None:
        if dense:
            raise ValueError("num_probes estimates the Fisher diagonal only; drop it for dense=True")
        return "probes"
    return "forward" if num_data >= dim else "reverse"


def fisher_cost(mode: str, num_data: int, dim: int, num_probes: int | None) -> int:
    """Gradient-evaluation equivalents of one estimate (a JVP or VJP of the model counts 1)."""
    return {"forward": dim, "reverse": num_data, "probes": num_probes or 0}[mode]


def _default_batch(dim: int) -> int:
    return dim if dim <= 64 else 32


def _prior_terms(neg_log_prior: Callable | None, theta: Any, dense: bool, batch_size: int) -> tuple[Any, Any]:
    """(diag, matrix|None) of the prior's Hessian at θ, or (0, None/0) without a prior."""
    if neg_log_prior is None:
        return 0.0, (0.0 if dense else None)
    m = exact_matrix(neg_log_prior, theta, batch_size)
    return jnp.diagonal(m), (m if dense else None)


def diagonal_from_jvp(jvp: Callable, w: Any, theta: Any, batch_size: int | None = None, *,
                      sqrt_weights: bool = False) -> Any:
    r""":math:`\operatorname{diag}(J^T W J)_j = \sum_n w_n (J e_j)_n^2` from a linearised model's ``jvp`` (θ's
    tangents to the model's output, of any shape) and the flat weights ``w`` (N,): D JVPs in batches of
    ``batch_size`` (``lax.map``; default: all D at once up to 64, else 32). ``sqrt_weights``: ``w`` holds
    :math:`\sqrt{w_n}` and the sum is :math:`\sum_n (\sqrt{w_n} (J e_j)_n)^2`, rounded as the Gauss–Newton
    estimate's :math:`\sqrt{W} J` is."""
    d = theta.shape[-1]
    bs = batch_size or _default_batch(d)
    col = lambda e: jnp.ravel(jvp(e)).astype(theta.dtype)  # noqa: E731
    term = (lambda e: (w * col(e)) ** 2) if sqrt_weights else (lambda e: w * col(e) ** 2)
    return jax.lax.map(lambda e: jnp.sum(term(e)), jnp.eye(d, dtype=theta.dtype), batch_size=bs)


def expected_fisher(
    mean: Callable,
    weights: Callable,
    neg_log_prior: Callable | None,
    theta: Any,
    *,
    mode: str,
    dense: bool,
    key: Any = None,
    num_probes: int | None = None,
    batch_size: int | None = None,
    include_prior: bool = True,
) -> tuple[Any, Any]:
    """``(diag, matrix | None)`` of :math:`J^T W J (+ H_π)` at θ (jittable; see the module docstring).

    ``mean(θ) -> μ`` (any shape), ``weights(μ) -> w`` (shape of μ)."""
    d = theta.shape[-1]
    bs = batch_size or _default_batch(d)
    if mode == "forward":
        mu, jvp = jax.linearize(mean, theta)
        w = jax.lax.stop_gradient(jnp.ravel(weights(mu))).astype(theta.dtype)
        col = lambda e: jnp.ravel(jvp(e)).astype(theta.dtype)  # noqa: E731
        if dense:
            cols = jax.lax.map(col, jnp.eye(d, dtype=theta.dtype), batch_size=bs)  # (D, N)
            m = jnp.matmul(cols * w, cols.T, precision=_HIGHEST)
            diag = jnp.diagonal(m)
        else:
            diag = diagonal_from_jvp(jvp, w, theta, bs)
            m = None
    elif mode == "reverse":
        mu, vjp = jax.vjp(mean, theta)
        n = math.prod(mu.shape)
        w = jax.lax.stop_gradient(jnp.ravel(weights(mu))).astype(theta.dtype)
        row = lambda e: vjp(jnp.reshape(e, mu.shape).astype(mu.dtype))[0].astype(theta.dtype)  # noqa: E731
        rows = jax.lax.map(row, jnp.eye(n, dtype=theta.dtype), batch_size=min(n, 256))  # (N, D)
        if dense:
            m = jnp.matmul(rows.T * w, rows, precision=_HIGHEST)
            diag = jnp.diagonal(m)
        else:
            diag = jnp.sum(w[:, None] * rows * rows, axis=0)
            m = None
    elif mode == "probes":
        mu, vjp = jax.vjp(mean, theta)
        sw = jnp.sqrt(jax.lax.stop_gradient(weights(mu))).astype(mu.dtype)
        z = jax.random.rademacher(key, (int(num_probes), *mu.shape), dtype=mu.dtype)
        u = jax.lax.map(lambda zk: vjp(sw * zk)[0].astype(theta.dtype), z, batch_size=min(int(num_probes), bs))
        diag = jnp.mean(u * u, axis=0)
        m = None
    else:  # pragma: no cover - validated by the planner
        raise AssertionError(mode)
    if include_prior and neg_log_prior is not None:
        pd, pm = _prior_terms(neg_log_prior, theta, dense, bs)
        diag = diag + pd
        if dense:
            m = m + pm
    return diag, m
