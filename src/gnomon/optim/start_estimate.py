r"""The curvature at θ_0 from the optimizer loop's own program: one linearisation of the model serves the gradient
and, once, the D Jacobian-vector products of the Fisher / Gauss–Newton diagonal.

``gn.optimize``'s default curvature for a likelihood (the expected Fisher :math:`J^T W J` + the prior's Hessian) or
residuals (Gauss–Newton :math:`J^T W J`) needs the model's Jacobian at θ_0. Computed by a program of its own
(:func:`gnomon.curvature.estimate.estimate_curvature`) it costs a second compiled copy of the model — on a dLux
binary 0.7 s of a first call's 2.2 s (issue 18, item 9). Here the loop body evaluates the objective as

.. math::

    \mu, \dot\mu = \operatorname{linearize}(\text{model}, θ), \qquad
    f = \ell(\mu, θ), \qquad \nabla f = \dot\mu^T \partial_\mu \ell + \partial_θ \ell,

(the same operations ``jax.value_and_grad`` performs) and, in a branch taken only when the loop is called to
estimate (``num_steps = ESTIMATE``), :math:`\operatorname{diag}(J^T W J)_j = \sum_n w_n (\dot\mu\, e_j)_n^2` from the
same linearisation (:func:`gnomon.curvature.fisher.diagonal_from_jvp`). The raw diagonal goes back to the host,
which judges and cleans it exactly as an estimate computed on its own (:func:`gnomon.curvature.choice.
choose_curvatures` with ``first_raw``); where it is not finite the fallback chain runs as before, with programs of
its own.

Used (:func:`in_loop_link`) where the first link is the Fisher or Gauss–Newton in forward mode (N ≥ D), the loop
keeps the model's output (a noise model), no probes or batch size were asked for, the method has no line search
of its own (zoom) and no λ_max bound (whose power iterations in ``init`` the estimating call would run once more;
``gn.optimize`` checks that), and the backend is the CPU (on a GPU the estimate's matmuls must run at the highest
precision, which its own program sets and the loop's gradient should not pay for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gnomon.curvature.choice import auto_method
from gnomon.curvature.compute import fisher_prior
from gnomon.curvature.fisher import _default_batch, _prior_terms, diagonal_from_jvp
from gnomon.curvature.plan import plan_curvature

#: ``num_steps`` of the chunk call that estimates (a probe is −1): evaluates θ, takes no step
ESTIMATE = -2
LINKS = ("fisher", "gauss_newton")


def in_loop_link(obj: Any, spec: Any, theta: Any, data: Any, *, output: bool, zoom: bool,
                 exact_max_dim: int) -> str | None:
    """The first link of the start curvature when the loop can estimate it itself (module docstring), else None.
    ``spec``: the program's ``start_curvature`` options; ``theta``/``data``: one member's, for shapes."""
    if spec is None or not output or zoom or jax.default_backend() != "cpu":
        return None
    if any(spec.get(k) is not None for k in ("num_probes", "batch_size")):
        return None
    first = auto_method(obj, exact_max_dim=exact_max_dim) if spec.get("method") is None else spec["method"]
    if first not in LINKS or (first == "gauss_newton" and obj.info.get("constructor") != "from_residuals"):
        return None
    try:
        _, _, config = plan_curvature(obj, theta, data, first)
    except (ValueError, TypeError):
        return None
    return first if config.get("jacobian_mode") == "forward" else None


def evaluator(obj: Any, link: str) -> Callable:
    """``fn(θ, data, estimate) -> (loss, output, grad, raw_diag)``: the loss composed as
    :func:`gnomon.objective.goodness.loss_and_output` composes it (the model's output is the likelihood's mean or
    the residuals), its gradient through one linearisation of the model, and — where ``estimate`` (a traced bool)
    holds — the raw ``link`` diagonal at θ (zeros otherwise)."""
    jac = obj.log_jacobian if obj.loss_includes_jacobian else None
    if link == "fisher":
        lik = obj.likelihood
        prior = fisher_prior(obj, True)

        def model(theta, data):
            return lik.mean(theta)

        def rest(out, theta, data):
            y, p = lik.split(data, out.dtype)
            value = jnp.sum(lik.family.log_likelihood(y.astype(out.dtype), out, p))
            if lik.neg_log_prior is not None:
                value = value - lik.neg_log_prior(theta)
            loss = -value
            return loss - jac(theta) if jac is not None else loss

        def weights(out, data):
            return jnp.ravel(lik.fisher_weights(out, data))
    elif link == "gauss_newton":
        prior = None

        def model(theta, data):
            return obj.residual_fn(theta, data)

        def rest(out, theta, data):
            terms = 0.5 * out**2 if obj.weights is None else 0.5 * obj.weights * out**2
            loss = jnp.sum(jnp.ravel(terms))
            return loss - jac(theta) if jac is not None else loss

        def weights(out, data):  # √w, as the Gauss–Newton estimate's √W J (weighted_jacobian)
            if obj.weights is None:
                return jnp.ones((out.size,), out.dtype)
            return jnp.sqrt(jnp.ravel(jnp.broadcast_to(obj.weights, out.shape)).astype(out.dtype))
    else:  # pragma: no cover - in_loop_link chose it
        raise ValueError(f"the loop estimates only {LINKS}, not {link!r}")

    def fn(theta, data, estimate):
        out, jvp = jax.linearize(lambda t: model(t, data), theta)
        loss, (g_out, g_theta) = jax.value_and_grad(rest, argnums=(0, 1))(out, theta, data)
        (g_model,) = jax.linear_transpose(jvp, theta)(g_out)
        grad = g_model + g_theta

        def diagonal(_):
            w = jax.lax.stop_gradient(weights(out, data)).astype(theta.dtype)
            d = diagonal_from_jvp(jvp, w, theta, sqrt_weights=link == "gauss_newton")
            if prior is not None:
                d = d + _prior_terms(prior, theta, False, _default_batch(theta.shape[-1]))[0]
            return d.astype(theta.dtype)

        raw = jax.lax.cond(estimate, diagonal, lambda _: jnp.zeros_like(theta), None)
        return loss, out, grad, raw

    return fn
