"""Build the :class:`~gnomon.objective.objective.Objective` of :meth:`Objective.from_likelihood`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from gnomon.objective.family import resolve_family
from gnomon.objective.likelihood import Likelihood, check_likelihood_data, predicted_shape
from gnomon.thetaspace.layout import Layout


def likelihood_objective(
    cls: type,
    predict: Callable,
    data: Any,
    family: Any,
    layout: int | Layout,
    prior: Callable | None,
    loss_includes_jacobian: bool,
):
    if not callable(predict):
        raise ValueError(f"from_likelihood: predict must be a function θ -> model mean, got {predict!r}")
    if prior is not None and not callable(prior):
        raise ValueError(f"from_likelihood: prior must be a function params -> log density, got {prior!r}")
    fam = resolve_family(family)
    if isinstance(layout, Layout):
        dim, lay = layout.size, layout
    elif isinstance(layout, int) and not isinstance(layout, bool) and layout > 0:
        dim, lay = int(layout), None
    else:
        raise ValueError(f"from_likelihood: layout must be a gnomon.Layout or a positive int, got {layout!r}")
    shape, _ = predicted_shape(predict, dim)
    check_likelihood_data(fam, data, shape, "data")

    if prior is None:
        neg_log_prior = None
    elif lay is not None:
        def neg_log_prior(theta):
            return -prior(lay.unpack(theta))
    else:
        def neg_log_prior(theta):
            return -prior(theta)

    lik = Likelihood(mean=predict, family=fam, neg_log_prior=neg_log_prior, data_shape=shape)

    def model_log_density(theta, d):
        value = jnp.sum(lik.log_likelihood_terms(theta, d))
        if neg_log_prior is not None:
            value = value - neg_log_prior(theta)
        return value

    def per_observation(theta, d):
        return -jnp.ravel(lik.log_likelihood_terms(theta, d))

    residual_fn = None
    if fam.name == "gaussian":
        def residual_fn(theta, d):
            mu = predict(theta)
            y, p = lik.split(d, mu.dtype)
            return (y.astype(mu.dtype) - mu) / p["sigma"]

    use_jac = lay is not None and not lay.is_identity
    return cls(
        dim=dim,
        layout=lay,
        model_log_density=model_log_density,
        log_jacobian=lay.log_det_jacobian if use_jac else None,
        residual_fn=residual_fn,
        per_observation_fn=per_observation,
        data=data,
        takes_data=True,
        loss_includes_jacobian=bool(loss_includes_jacobian),
        info={
            "constructor": "from_likelihood",
            "loss_includes_jacobian": bool(loss_includes_jacobian),
            **fam.describe(),
            "prior": prior is not None,
            "num_data": int(math.prod(shape)),
        },
        likelihood=lik,
        key_parts=("from_likelihood", predict, fam.key, dim, lay, prior),
    )
