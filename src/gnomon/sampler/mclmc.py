r"""Metropolis-adjusted microcanonical HMC (MAMS; BlackJAX's ``adjusted_mclmc``) under the kernel protocol.

The kernel
----------
MAMS (Robnik, Cohn-Gordon & Seljak 2025) integrates the isokinetic (ESH) dynamics — the momentum is a unit
vector that the gradient turns, never speeds up — for ``n`` steps of size :math:`\epsilon` and accepts the
end by a Metropolis test on the energy error. As in BlackJAX's ``adjusted_mclmc_dynamic``, the number of
steps is random around its mean ``k = L/ε`` (:math:`n = \lceil U\,s(k)\rceil`, ``s`` BlackJAX's
``rescale``: :math:`E[n] = k`), which removes the resonances of a fixed trajectory length; here it is drawn
from the step's own key, so the chain state is BlackJAX's plain ``HMCState``. The momentum is refreshed
fully at each step (``L_proposal_factor = ∞``). The isokinetic McLachlan integrator (BlackJAX's default)
costs two gradient evaluations per integration step (velocity Verlet one), which ``StepStats.grad_evals``
counts.

The metric: BlackJAX's isokinetic integrators take a diagonal inverse mass matrix. A dense one (a dense
curvature seed, a dense or low-rank adapted metric) is applied by whitening: with :math:`M^{-1} = CC^T`
(Cholesky), the step runs on :math:`u = C^{-1}θ` with :math:`\log p(Cu)` and maps the position and the
gradient back (:math:`g_θ = C^{-T} g_u`) — exact, and no extra gradient evaluation.

The tuning (``Tuning.OWN``)
---------------------------
After gnomon's seed check (and a recovery when the seed fails), :func:`build_tune` runs BlackJAX's
``adjusted_mclmc_find_L_and_step_size`` on every chain (``vmap``) in the current metric's whitened
coordinates :math:`u = L^{-1}θ` — where a right curvature seed makes the target close to :math:`N(0, I)`,
so BlackJAX's tuner starts from the seed's knowledge rather than from unit scales — with its dual averaging
of the step size towards the kernel's target acceptance rate, its variance-based rescaling and its diagonal
preconditioning (the variances :math:`S` of u), at BlackJAX's avg-preserving trajectory length
``L = k·ε`` (``target_num_integration_steps = k``, the kernel's ``num_integration_steps``). The chains'
step sizes and variances are pooled by their mean (as BlackJAX's ``mclmc_lrd`` pools its multi-chain
tuning), and the metric becomes :math:`M^{-1} = L\,\mathrm{diag}(S)\,L^T`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gnomon.sampler.protocol import StepParams, StepStats, TuneResult

INTEGRATORS = {"mclachlan": 2, "velocity_verlet": 1}  # name -> gradient evaluations per integration step


def trajectory_steps(key: Any, avg: Any, random: bool) -> Any:
    """Integration steps of one transition: :math:`\\lceil U\\,s(k)\\rceil` (mean ``avg``; BlackJAX's
    ``make_random_trajectory_length_fn``) or :math:`\\lceil k\\rceil`; at least 1."""
    from blackjax.mcmc.adjusted_mclmc import rescale

    n = jnp.ceil(jax.random.uniform(key) * rescale(avg)) if random else jnp.ceil(jnp.asarray(avg, jnp.float32))
    return jnp.clip(n, 1).astype(jnp.int32)


def _proposal(integrator: str, divergence_threshold: float) -> Callable:
    """BlackJAX's adjusted MCLMC transition ``(key, state, logdensity, ε, n, diagonal M⁻¹) -> (state, info)``."""
    from blackjax.mcmc import adjusted_mclmc, integrators

    kernel = adjusted_mclmc.build_kernel(
        integrator=getattr(integrators, f"isokinetic_{integrator}"), divergence_threshold=divergence_threshold
    )

    def propose(key, state, logdensity, step_size, n, imm_diag):
        return kernel(key, state, logdensity, step_size, (n,), imm_diag)

    return propose


def _whitened(state: Any, chol: Any) -> Any:
    from blackjax.mcmc.hmc import HMCState

    u = jax.scipy.linalg.solve_triangular(chol, state.position, lower=True)
    return HMCState(u, state.logdensity, chol.T @ state.logdensity_grad)


def _unwhitened(state: Any, chol: Any) -> Any:
    from blackjax.mcmc.hmc import HMCState

    grad = jax.scipy.linalg.solve_triangular(chol.T, state.logdensity_grad, lower=False)
    return HMCState(chol @ state.position, state.logdensity, grad)


def mclmc_step(integrator: str, divergence_threshold: float, avg_steps: float, random_length: bool) -> Callable:
    """The MAMS step of the protocol: ``step(key, state, logdensity, params) -> (state, StepStats)``."""
    propose = _proposal(integrator, divergence_threshold)
    per_step = INTEGRATORS[integrator]

    def step(key, state, logdensity, params: StepParams):
        k_len, k_move = jax.random.split(key)
        n = trajectory_steps(k_len, jnp.asarray(avg_steps, params.step_size.dtype), random_length)
        imm = params.inverse_mass_matrix
        if imm.ndim == 1:
            new, info = propose(k_move, state, logdensity, params.step_size, n, imm)
        else:  # a dense metric: whiten with its Cholesky factor (see the module docstring)
            chol = jnp.linalg.cholesky(imm)
            new_u, info = propose(k_move, _whitened(state, chol), lambda u: logdensity(chol @ u), params.step_size,
                                  n, jnp.ones_like(state.position))
            new = _unwhitened(new_u, chol)
        nan = jnp.full((), jnp.nan, params.step_size.dtype)
        stats = StepStats(info.acceptance_rate, info.is_divergent, nan, n * per_step, {"num_integration_steps": n})
        return new, stats

    return step


def build_tune(integrator: str, divergence_threshold: float, avg_steps: float, random_length: bool,
               target: float, num_steps: int) -> Callable:
    """The MAMS tuning stage (see the module docstring): ``tune(keys, states_u, logdensity_u, step_size) ->
    TuneResult`` for ``num_steps`` steps per chain."""
    from blackjax.adaptation.adjusted_mclmc_adaptation import adjusted_mclmc_find_L_and_step_size
    from blackjax.adaptation.mclmc_adaptation import MCLMCAdaptationState

    propose = _proposal(integrator, divergence_threshold)
    per_step = INTEGRATORS[integrator]

    def blackjax_kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, integration_steps_params):
        (avg,) = integration_steps_params
        k_len, k_move = jax.random.split(rng_key)
        return propose(k_move, state, logdensity_fn, step_size, trajectory_steps(k_len, avg, random_length),
                       inverse_mass_matrix)

    def tune(keys, states, logdensity, step_size) -> TuneResult:
        dim = states.position.shape[-1]
        dtype = states.position.dtype

        def one(key, state):
            params = MCLMCAdaptationState(jnp.asarray(avg_steps * step_size, dtype), jnp.asarray(step_size, dtype),
                                          jnp.ones((dim,), dtype))
            # pass 1: (1/3 + 1/3) of the steps (dual averaging, then the variances), pass 2: 1/3 (dual averaging)
            return adjusted_mclmc_find_L_and_step_size(
                blackjax_kernel, logdensity, num_steps, state, key, target, frac_tune1=1 / 3, frac_tune2=1 / 3,
                diagonal_preconditioning=True, params=params, target_num_integration_steps=float(avg_steps),
            )

        states, params, steps = jax.vmap(one)(keys, states)
        eps = jnp.asarray(params.step_size, dtype)
        scale = jnp.asarray(params.inverse_mass_matrix, dtype)
        ok = jnp.isfinite(eps) & (eps > 0) & jnp.all(jnp.isfinite(scale) & (scale > 0), axis=1)
        # pooled over the chains whose tuning ended finite (all of them, unless one blew up)
        w = ok.astype(dtype) / jnp.maximum(jnp.sum(ok), 1)
        pooled_eps = jnp.sum(w * jnp.where(ok, eps, 0.0))
        pooled_scale = jnp.sum(w[:, None] * jnp.where(ok[:, None], scale, 0.0), axis=0)
        info = {"step_size": eps, "trajectory_length": jnp.asarray(params.L, dtype), "usable": ok}
        return TuneResult(states, pooled_eps, pooled_scale, jnp.asarray(steps, jnp.int32) * per_step, info)

    return tune


def mclmc_expected(dim: int) -> tuple[float, None]:
    r"""The MAMS step size on :math:`N(0, I_D)` at acceptance 0.9 with two integration steps per draw,
    :math:`\epsilon_D \approx 2.5\,D^{1/4}` (measured with BlackJAX's tuner: 4.1 at D = 10, 9.5 at D = 100 —
    the isokinetic momentum is a unit vector, so a step moves a distance ε in a typical set of radius
    :math:`\sqrt D`); the cost per draw is tuned (``k``), not a sign of the geometry (None)."""
    return 2.5 * max(dim, 1) ** 0.25, None
