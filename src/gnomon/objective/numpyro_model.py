"""Build an :class:`~gnomon.objective.objective.Objective` from a numpyro model (numpyro imported lazily).

The layout is read off the model trace that numpyro's own ``initialize_model`` produces: one block per
latent (non-observed, continuous) sample site, in trace order, with the site's support as transform.
Densities come from numpyro's ``log_density`` so that nothing of the model is re-implemented here.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gnomon.thetaspace.layout import Layout


def _latent_sites(model_trace: dict) -> list[tuple[str, dict]]:
    sites = []
    for name, site in model_trace.items():
        if site["type"] != "sample" or site.get("is_observed", False):
            continue
        fn = site["fn"]
        if getattr(fn, "is_discrete", False) or getattr(fn.support, "is_discrete", False):
            raise ValueError(
                f"numpyro model: latent site {name!r} is discrete ({type(fn).__name__}); gnomon's θ is "
                "continuous — marginalise it or make it observed"
            )
        sites.append((name, site))
    if not sites:
        raise ValueError("numpyro model has no latent continuous sample sites to infer")
    return sites


def numpyro_objective(cls: type, model: Any, args: tuple, kwargs: dict, loss_includes_jacobian: bool):
    from numpyro import handlers
    from numpyro.infer.util import initialize_model, log_density

    try:
        info = initialize_model(jax.random.PRNGKey(0), model, model_args=args, model_kwargs=kwargs)
    except RuntimeError:  # "Cannot find valid initial parameters": non-finite data is the usual cause; name it
        from gnomon.objective.checks import check_finite_data

        check_finite_data({"args": args, "kwargs": kwargs}, "the numpyro model's arguments")
        raise
    model_trace = info.model_trace
    shapes, transforms = {}, {}
    for name, site in _latent_sites(model_trace):
        shapes[name] = tuple(jnp.shape(site["value"]))
        transforms[name] = site["fn"].support  # a support that depends on other sites is not supported
    layout = Layout(shapes, transforms=transforms)
    observed = {
        name: site["value"] for name, site in model_trace.items()
        if site["type"] == "sample" and site.get("is_observed", False)
    }

    def model_log_density(theta, data):
        del data
        return log_density(model, args, kwargs, layout.unpack(theta))[0]

    def per_observation(theta, data):
        del data
        tr = handlers.trace(handlers.substitute(model, data=layout.unpack(theta))).get_trace(*args, **kwargs)
        terms = [
            -jnp.ravel(site["fn"].log_prob(site["value"]))
            for site in tr.values()
            if site["type"] == "sample" and site.get("is_observed", False)
        ]
        if not terms:
            raise ValueError("numpyro model has no observed sites: no per-observation terms")
        return jnp.concatenate(terms)

    return cls(
        dim=layout.size,
        layout=layout,
        model_log_density=model_log_density,
        log_jacobian=None if layout.is_identity else layout.log_det_jacobian,
        per_observation_fn=per_observation if observed else None,
        takes_data=False,
        loss_includes_jacobian=bool(loss_includes_jacobian),
        observed=observed or None,
        info={
            "constructor": "from_numpyro",
            "model": getattr(model, "__name__", type(model).__name__),
            "loss_includes_jacobian": bool(loss_includes_jacobian),
        },
    )
