"""The pure function of each curvature method: ``(θ, data, key, extra) -> (raw diagonal, matrix | None)`` for a
planned :class:`~gnomon.curvature.plan.CurvaturePlan` (the math of each is in :mod:`gnomon.curvature.estimate`).
Uncleaned: :mod:`gnomon.curvature.numerics` cleans the diagonal, the callers decide what a non-finite entry means.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gnomon.curvature.fisher import expected_fisher
from gnomon.curvature.numerics import (
    ema_of_squares,
    exact_diag,
    exact_matrix,
    finite_difference_hessian,
    hutchinson_plain,
    hutchinson_variance_reduced,
    weighted_jacobian,
)
from gnomon.curvature.plan import CurvaturePlan
from gnomon.objective.objective import Objective


def fisher_prior(obj: Objective, include_prior: bool = True) -> Callable | None:
    """The model-free part whose exact Hessian the Fisher adds: the likelihood's negative log prior, less the
    layout's log-Jacobian where the loss includes it (a sampler's target: −log p(θ), its Hessian too, exactly — it
    never evaluates the model, so it costs no gradient evaluation of it); None for neither."""
    nlp = obj.likelihood.neg_log_prior
    if include_prior and obj.loss_includes_jacobian and obj.log_jacobian is not None:
        log_jac, prior = obj.log_jacobian, nlp

        def nlp(theta):
            return (0.0 if prior is None else prior(theta)) - log_jac(theta)

    return nlp


def method_fn(obj: Objective, settings: CurvaturePlan) -> Callable:
    """A pure ``(θ, data, key, extra) -> (diag, matrix|None)`` for the given static settings."""
    method, dense, num_probes, mode, batch_size, n_res, beta, fmode, include_prior = settings

    if method == "exact":

        def fn(theta, data, key, extra):
            f = lambda th: obj.loss(th, data)  # noqa: E731
            if dense:
                m = exact_matrix(f, theta, batch_size)
                return jnp.diagonal(m), m
            return exact_diag(f, theta, batch_size), None
    elif method == "hutchinson":

        def fn(theta, data, key, extra):
            f = lambda th: obj.loss(th, data)  # noqa: E731
            if mode == "plain":
                return hutchinson_plain(f, theta, key, num_probes)[0], None
            return hutchinson_variance_reduced(f, theta, key, num_probes, extra), None
    elif method == "gauss_newton":

        def fn(theta, data, key, extra):
            wj = weighted_jacobian(lambda th: obj.residual_fn(th, data), theta, obj.weights, n_res)
            if dense:
                m = jnp.matmul(wj.T, wj, precision=jax.lax.Precision.HIGHEST)
                return jnp.diagonal(m), m
            return jnp.sum(wj * wj, axis=0), None
    elif method == "empirical_fisher":

        def fn(theta, data, key, extra):
            g = weighted_jacobian(lambda th: obj.per_observation_fn(th, data), theta, None, n_res)
            if dense:
                m = jnp.matmul(g.T, g, precision=jax.lax.Precision.HIGHEST)
                return jnp.diagonal(m), m
            return jnp.sum(g * g, axis=0), None
    elif method == "fisher":
        lik = obj.likelihood
        nlp = fisher_prior(obj, include_prior)

        def fn(theta, data, key, extra):
            return expected_fisher(
                lik.mean, lambda mu: lik.fisher_weights(mu, data), nlp, theta, mode=fmode,
                dense=dense, key=key, num_probes=num_probes or None, batch_size=batch_size,
                include_prior=include_prior,
            )
    elif method == "finite_difference":

        def fn(theta, data, key, extra):
            return finite_difference_hessian(jax.grad(lambda th: obj.loss(th, data)), theta, dense, batch_size)
    elif method == "ema_grad2":

        def fn(theta, data, key, extra):
            if extra is None:
                g = jax.grad(obj.loss)(theta, data)
                v = g * g
            else:
                v = ema_of_squares(extra, beta)
            return v, (jnp.outer(jnp.sqrt(v), jnp.sqrt(v)) if dense else None)
    else:  # pragma: no cover - validated earlier
        raise AssertionError(method)
    return fn
