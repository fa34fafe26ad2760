r"""The NUTS and HMC steps under the kernel protocol (:mod:`gnomon.sampler.protocol`), from BlackJAX.

NUTS doubles its trajectory until it turns back on itself, at most ``max_tree_depth`` times
(:math:`2^{d}-1` leapfrog steps). BlackJAX fixes that maximum when the kernel is built, because the U-turn
checkpoints are arrays of that length; :func:`nuts_step` keeps the arrays at the kernel's
``max_tree_depth`` but takes the cap of each step as a (traced) argument ``params.max_depth`` ≤
``max_tree_depth``. The seed check runs its first steps with a lower cap (see
:mod:`gnomon.sampler.seed_check`), so a wrong seed costs at most :math:`2^{d_{check}}-1` gradients per draw
while it is being found out, and both phases run in one compiled program. With ``max_depth =
max_tree_depth`` the transition is BlackJAX's own (``blackjax.nuts.build_kernel``), draw for draw.

Each leapfrog step costs one gradient evaluation (``StepStats.grad_evals``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.sampler.protocol import StepParams, StepStats


def hmc_init(position: Any, logdensity: Callable) -> Any:
    """BlackJAX's ``HMCState(position, logdensity, logdensity_grad)``."""
    from blackjax.mcmc import hmc

    return hmc.init(position, logdensity)


def hmc_step(divergence_threshold: float, num_integration_steps: int) -> Callable:
    """BlackJAX's HMC transition with ``num_integration_steps`` leapfrog steps."""
    from blackjax.mcmc import hmc

    kernel = hmc.build_kernel(divergence_threshold=divergence_threshold)

    def step(key, state, logdensity, params: StepParams):
        new, info = kernel(key, state, logdensity, params.step_size, params.inverse_mass_matrix,
                           num_integration_steps=num_integration_steps)
        n = jnp.asarray(info.num_integration_steps, jnp.int32)
        return new, StepStats(info.acceptance_rate, info.is_divergent, info.energy, n, {})

    return step


def nuts_step(divergence_threshold: float, max_depth: int) -> Callable:
    """BlackJAX's ``nuts.build_kernel`` + ``iterative_nuts_proposal`` with the expansion limit as an argument
    (same integrator, U-turn criterion, multinomial sampling and acceptance statistic)."""
    from blackjax.mcmc import hmc, integrators, metrics, proposal, termination, trajectory

    def step(key, state, logdensity, params: StepParams):
        metric = metrics.default_metric(params.inverse_mass_matrix)
        integrator = integrators.velocity_verlet(logdensity, metric.kinetic_energy)
        new_termination_state, update_termination_state, is_criterion_met = termination.iterative_uturn_numpyro(
            metric.check_turning
        )
        trajectory_integrator = trajectory.dynamic_progressive_integration(
            integrator, metric.kinetic_energy, update_termination_state, is_criterion_met, divergence_threshold
        )
        expand = trajectory.dynamic_multiplicative_expansion(
            trajectory_integrator, metric.check_turning, jnp.minimum(params.max_depth, max_depth)
        )
        key_momentum, key_integrator = jax.random.split(key, 2)
        position, logdensity_value, logdensity_grad = state
        momentum = metric.sample_momentum(key_momentum, position)
        initial_state = integrators.IntegratorState(position, momentum, logdensity_value, logdensity_grad)
        initial_energy = -initial_state.logdensity + metric.kinetic_energy(initial_state.momentum)
        initial_proposal = proposal.Proposal(initial_state, initial_energy, 0.0, -np.inf)
        initial_trajectory = trajectory.Trajectory(initial_state, initial_state, initial_state.momentum, 0)
        initial_expansion = trajectory.DynamicExpansionState(
            0, initial_proposal, initial_trajectory, new_termination_state(initial_state, max_depth)
        )
        expansion, (is_diverging, _) = expand(key_integrator, initial_expansion, initial_energy, params.step_size)
        num_doublings, sampled, traj, _ = expansion
        acceptance_rate = jnp.exp(sampled.sum_log_p_accept) / traj.num_states
        new = hmc.HMCState(sampled.state.position, sampled.state.logdensity, sampled.state.logdensity_grad)
        stats = StepStats(
            acceptance_rate,
            is_diverging,
            sampled.energy,
            jnp.asarray(traj.num_states, jnp.int32),
            {"tree_depth": jnp.asarray(num_doublings, jnp.int32)},
        )
        return new, stats

    return step


def nuts_expected(dim: int) -> tuple[float, float]:
    r"""``(step size, leapfrog steps per draw)`` of NUTS on :math:`N(0, I_D)` at acceptance 0.8.

    Fitted to runs of this sampler on standard normals (D = 2 … 1000, measured: step size 0.93, 0.90, 0.70,
    0.43, 0.27 and 3.8, 5.5, 7.5, 15.7, 18.3 leapfrog steps per draw at D = 2, 10, 50, 200, 1000):
    :math:`\epsilon_D \approx 1.6\,D^{-1/4}` and about :math:`2\pi/\epsilon_D` steps per draw (NUTS
    rounds a trajectory up to :math:`2^d - 1` steps)."""
    eps = 1.6 * max(dim, 1) ** -0.25
    return eps, max(3.0, 2 * np.pi / eps)
