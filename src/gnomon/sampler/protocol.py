r"""The kernel protocol: what a kernel family tells :func:`gnomon.sample`, so that a new one is an entry.

In blackjax's spirit (an algorithm is ``init`` + a pure ``step``; its adaptation takes the kernel as a
parameter), a **kernel family** is a small frozen, hashable value — its fields are part of the compiled
program's cache key — with:

``name``
    a short name (``"nuts"``, ``"hmc"``, ``"mclmc"``): ``trace.info["engine"]``, the progress line.
``init(position, logdensity) -> state``
    one chain's state at ``position`` (D,). The state is any pytree with the fields ``position``,
    ``logdensity`` and ``logdensity_grad`` (blackjax's ``HMCState`` has them): the loop reads the draw, its
    log density and its gradient from there (the gradient goes to ``ChunkOut.grad`` for a later transport
    stage, never re-evaluated).
``build_step() -> step``
    ``step(key, state, logdensity, params: StepParams) -> (state, StepStats)`` for one chain, pure and
    jittable (the loop ``vmap``\s it over chains and ``scan``\s it over steps).
``target_acceptance_rate``, ``step_size``
    what dual averaging tunes the step size towards, and the first step size (None: the hand-off's when it
    came from the same family, else :meth:`initial_step_size`).
``initial_step_size(dim) -> float``
    the first step size when nothing else gives one (in the seed's whitened units).
``extra_stats``, ``has_energy``
    the names of the kernel-specific statistics in ``StepStats.extras`` (saved as ``trace.stats`` and in
    ArviZ's ``sample_stats``; NUTS: ``("tree_depth",)``), and whether ``StepStats.energy`` is a Hamiltonian
    energy (E-BFMI is judged only then; otherwise ``energy`` is NaN and not saved).
``max_tree_depth``
    the cap on trajectory doublings for kernels that have one (NUTS), else None. The seed check lowers it
    (``StepParams.max_depth``) while it judges a seed, so that a wrong seed is cheap to find out.
``expected(dim) -> (step size, gradient evaluations per draw | None) | None``
    the kernel's behaviour on :math:`N(0, I_D)` at its default target — what a right seed makes the
    posterior look like in whitened coordinates. The seed check compares the dual-averaging step size with
    the first and, where the cost per draw *emerges* from the geometry (NUTS), the gradient evaluations per
    draw with the second; a family whose cost is fixed (HMC) or tuned (MCLMC) returns None for it and the
    cost criterion is recorded as not applicable; None altogether: only the scales are judged.
``tuning``
    :attr:`Tuning.WINDOWS` — gnomon's pooled windows tune the step size (dual averaging on the acceptance
    rate) and the metric (:mod:`gnomon.sampler.warmup`), around the seed check and the recovery — or
    :attr:`Tuning.OWN` — the windows run the seed check (and a recovery when the seed fails), then the
    family's own ``build_tune(num_steps)`` stage tunes it (MCLMC: blackjax's step size and L tuning).
``build_tune(num_steps) -> tune`` (only with :attr:`Tuning.OWN`)
    ``tune(keys (C,), states, logdensity_u, step_size) -> TuneResult``: ``num_steps`` steps of every chain
    on the target in the current metric's whitened coordinates :math:`u = L^{-1}θ` (states given and
    returned in u; close to :math:`N(0, I)` when the metric is right), returning the tuned step size and the
    diagonal metric :math:`S` of u (ones: keep the metric), pooled over chains, and each chain's gradient
    evaluations. The driver forms :math:`M^{-1} = L\,\mathrm{diag}(S)\,L^T`.

Every step reports :class:`StepStats`: the common core the loop, the seed check, the stuck-chain test, the
health checks, the Trace and the ArviZ export rely on — acceptance rate, divergence, energy (or NaN),
gradient evaluations of the step — plus the family's ``extras``. A user's own kernel that follows this
protocol runs through ``gn.sample(..., kernel=my_kernel)`` unchanged (docs/sampling.md has a random-walk
Metropolis example; :func:`check_family` says what is missing).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, NamedTuple, Protocol, runtime_checkable


class Tuning(Enum):
    """How a kernel family is tuned (see the module docstring)."""

    WINDOWS = "windows"
    OWN = "own"


class StepParams(NamedTuple):
    """What one step is tuned by — arguments of the compiled program, never compiled in."""

    step_size: Any  # () the integrator's step size
    inverse_mass_matrix: Any  # (D,) or (D, D): M⁻¹ = L S Lᵀ
    max_depth: Any  # () int32: the cap on trajectory doublings (kernels with a max_tree_depth; others ignore it)


class StepStats(NamedTuple):
    """What one step of one chain reports (the common core, then the family's extras)."""

    acceptance_rate: Any  # () the Metropolis acceptance probability (NUTS: averaged over the trajectory)
    diverging: Any  # () bool: the energy error exceeded the divergence threshold
    energy: Any  # () the Hamiltonian at the new state, NaN where the kernel has none
    grad_evals: Any  # () int32: log-density gradient evaluations of this step
    extras: dict  # {name: ()} as listed in the family's extra_stats


class TuneResult(NamedTuple):
    """What a family's own tuning stage returns (states in the whitened coordinates u)."""

    states: Any
    step_size: Any  # () pooled over chains
    scale: Any  # (D,) the diagonal metric S of u (pooled)
    grad_evals: Any  # (C,) per chain
    info: dict  # {name: (C,)} per-chain tuned values, for the record


COMMON_STATS = ("acceptance_rate", "diverging", "energy", "n_steps", "step_size")


@runtime_checkable
class KernelFamily(Protocol):
    """The protocol (see the module docstring)."""

    name: str
    target_acceptance_rate: float
    step_size: float | None
    extra_stats: tuple[str, ...]
    has_energy: bool
    max_tree_depth: int | None
    tuning: Tuning

    def init(self, position: Any, logdensity: Callable) -> Any: ...

    def build_step(self) -> Callable: ...

    def initial_step_size(self, dim: int) -> float: ...

    def expected(self, dim: int) -> tuple[float, float | None] | None: ...


_NEEDED = ("name", "target_acceptance_rate", "step_size", "extra_stats", "has_energy", "max_tree_depth", "tuning",
           "init", "build_step", "initial_step_size", "expected")


def check_family(kernel: Any) -> Any:
    """``kernel`` when it follows the protocol, else a ValueError naming what is missing or wrong."""
    missing = [n for n in _NEEDED if not hasattr(kernel, n)]
    if missing:
        raise ValueError(f"kernel {kernel!r} does not follow gnomon's kernel protocol (gnomon.sampler.protocol): it "
                         f"lacks {', '.join(missing)}; expected 'nuts', 'hmc', 'mclmc', gn.nuts(...), gn.hmc(...), "
                         "gn.mclmc(...) or a kernel family")
    try:
        hash(kernel)
    except TypeError:
        raise ValueError(f"kernel {type(kernel).__name__} must be hashable (a frozen dataclass): it keys the compiled "
                         "program") from None
    if not isinstance(kernel.tuning, Tuning):
        raise ValueError(f"kernel {kernel.name!r}: tuning must be a gnomon.sampler.protocol.Tuning, got "
                         f"{kernel.tuning!r}")
    if kernel.tuning is Tuning.OWN and not hasattr(kernel, "build_tune"):
        raise ValueError(f"kernel {kernel.name!r} says Tuning.OWN but has no build_tune(num_steps)")
    t = kernel.target_acceptance_rate
    if not (isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1):
        raise ValueError(f"kernel {kernel.name!r}: target_acceptance_rate must be in (0, 1), got {t!r}")
    clash = set(kernel.extra_stats) & {*COMMON_STATS, "lp", "grad"}
    if clash:
        raise ValueError(f"kernel {kernel.name!r}: extra_stats {sorted(clash)} clash with the common statistics")
    return kernel
