r"""One MCMC transition of a chain: BlackJAX's NUTS (with a depth cap that may change per step) and HMC.

NUTS doubles its trajectory until it turns back on itself, at most ``max_tree_depth`` times
(:math:`2^{d}-1` leapfrog steps). BlackJAX fixes that maximum when the kernel is built, because the U-turn
checkpoints are arrays of that length; :func:`build_step` keeps the arrays at the kernel's
``max_tree_depth`` but takes the cap of each step as a (traced) argument ``depth`` ≤ ``max_tree_depth``.
The seed check runs its first steps with a lower cap (see :mod:`gnomon.sampler.seed_check`), so a wrong
seed costs at most :math:`2^{d_{check}}-1` gradients per draw while it is being found out, and both phases
run in one compiled program. With ``depth = max_tree_depth`` the transition is BlackJAX's own
(``blackjax.nuts.build_kernel``), draw for draw.

Every step returns the new chain state and a :class:`StepInfo`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.sampler.config import HMC, NUTS


class StepInfo(NamedTuple):
    """What one transition reports (per chain)."""

    acceptance_rate: Any
    is_divergent: Any
    energy: Any
    num_integration_steps: Any  # leapfrog steps = gradient evaluations
    tree_depth: Any  # trajectory doublings (NUTS; 0 for HMC)


def build_step(kernel: NUTS | HMC) -> Callable:
    """``step(key, state, logdensity, step_size, inverse_mass_matrix, depth) -> (state, StepInfo)`` for one
    chain (``depth`` is ignored by HMC)."""
    if isinstance(kernel, NUTS):
        return _nuts_step(float(kernel.divergence_threshold), int(kernel.max_tree_depth))
    return _hmc_step(float(kernel.divergence_threshold), int(kernel.num_integration_steps))


def _hmc_step(divergence_threshold: float, num_integration_steps: int) -> Callable:
    from blackjax.mcmc import hmc

    kernel = hmc.build_kernel(divergence_threshold=divergence_threshold)

    def step(key, state, logdensity, step_size, imm, depth):
        new, info = kernel(key, state, logdensity, step_size, imm, num_integration_steps=num_integration_steps)
        n = jnp.asarray(info.num_integration_steps, jnp.int32)
        return new, StepInfo(info.acceptance_rate, info.is_divergent, info.energy, n, jnp.zeros((), jnp.int32))

    return step


def _nuts_step(divergence_threshold: float, max_depth: int) -> Callable:
    """BlackJAX's ``nuts.build_kernel`` + ``iterative_nuts_proposal`` with the expansion limit as an argument
    (same integrator, U-turn criterion, multinomial sampling and acceptance statistic)."""
    from blackjax.mcmc import hmc, integrators, metrics, proposal, termination, trajectory

    def step(key, state, logdensity, step_size, imm, depth):
        metric = metrics.default_metric(imm)
        integrator = integrators.velocity_verlet(logdensity, metric.kinetic_energy)
        new_termination_state, update_termination_state, is_criterion_met = termination.iterative_uturn_numpyro(
            metric.check_turning
        )
        trajectory_integrator = trajectory.dynamic_progressive_integration(
            integrator, metric.kinetic_energy, update_termination_state, is_criterion_met, divergence_threshold
        )
        expand = trajectory.dynamic_multiplicative_expansion(
            trajectory_integrator, metric.check_turning, jnp.minimum(depth, max_depth)
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
        expansion, (is_diverging, _) = expand(key_integrator, initial_expansion, initial_energy, step_size)
        num_doublings, sampled, traj, _ = expansion
        acceptance_rate = jnp.exp(sampled.sum_log_p_accept) / traj.num_states
        new = hmc.HMCState(sampled.state.position, sampled.state.logdensity, sampled.state.logdensity_grad)
        info = StepInfo(
            acceptance_rate,
            is_diverging,
            sampled.energy,
            jnp.asarray(traj.num_states, jnp.int32),
            jnp.asarray(num_doublings, jnp.int32),
        )
        return new, info

    return step
