r"""The kernel families :func:`gnomon.sample` ships: :func:`nuts`, :func:`hmc` and :func:`mclmc` (MAMS).

Each is a frozen dataclass that says *what* to run (its fields are the compiled program's cache key) and
follows the kernel protocol of :mod:`gnomon.sampler.protocol` — ``init``, ``build_step``, the statistics it
reports, how it is tuned — so the driver treats the three alike::

    post = gn.sample(obj, init=fit, key=key, kernel=gn.nuts(max_tree_depth=8, target_acceptance_rate=0.9))
    post = gn.sample(obj, init=fit, key=key, kernel=gn.mclmc())        # MAMS, BlackJAX's adjusted MCLMC

String shorthands work (``kernel="nuts"``, ``"hmc"``, ``"mclmc"``); an option given to the wrong kernel
raises a ``ValueError`` naming where it belongs (:func:`gnomon.sampler.config.misplaced`). A family of one's
own — any frozen dataclass with the protocol's attributes — is passed as ``kernel=`` the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from gnomon.sampler.config import Warmup, misplaced, positive
from gnomon.sampler.protocol import Tuning, check_family
from gnomon.util.validate import fraction, positive_int


def _check_common(k: Any) -> None:
    fraction(k.target_acceptance_rate, "target_acceptance_rate")
    positive("divergence_threshold", k.divergence_threshold)
    positive("step_size", k.step_size, allow_none=True)


def _hmc_init(position: Any, logdensity: Any) -> Any:
    from gnomon.sampler.kernels import hmc_init

    return hmc_init(position, logdensity)


@dataclass(frozen=True)
class NUTS:
    r"""The No-U-Turn sampler (BlackJAX's multinomial NUTS).

    Attributes:
      max_tree_depth: most trajectory doublings per draw (at most :math:`2^{d}-1` leapfrog steps).
      target_acceptance_rate: the mean acceptance probability dual averaging tunes the step size towards.
      divergence_threshold: energy error above which a transition counts as divergent.
      step_size: the initial leapfrog step size (default: the hand-off's, else 1); with ``num_warmup=0`` the
        one used.
    """

    max_tree_depth: int = 10
    target_acceptance_rate: float = 0.8
    divergence_threshold: float = 1000.0
    step_size: float | None = None
    name: ClassVar[str] = "nuts"
    extra_stats: ClassVar[tuple[str, ...]] = ("tree_depth",)
    has_energy: ClassVar[bool] = True
    tuning: ClassVar[Tuning] = Tuning.WINDOWS

    def __post_init__(self):
        positive_int(self.max_tree_depth, "max_tree_depth")
        if self.max_tree_depth > 16:
            raise ValueError(f"max_tree_depth must be ≤ 16 (65535 leapfrog steps), got {self.max_tree_depth}")
        _check_common(self)

    def init(self, position: Any, logdensity: Any) -> Any:
        return _hmc_init(position, logdensity)

    def build_step(self) -> Any:
        from gnomon.sampler.kernels import nuts_step

        return nuts_step(float(self.divergence_threshold), int(self.max_tree_depth))

    def initial_step_size(self, dim: int) -> float:
        return 1.0

    def expected(self, dim: int) -> tuple[float, float]:
        from gnomon.sampler.kernels import nuts_expected

        return nuts_expected(dim)


@dataclass(frozen=True)
class HMC:
    r"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps per draw.

    Attributes:
      num_integration_steps: leapfrog steps per draw.
      target_acceptance_rate, divergence_threshold, step_size: as for :class:`NUTS`.
    """

    num_integration_steps: int = 16
    target_acceptance_rate: float = 0.8
    divergence_threshold: float = 1000.0
    step_size: float | None = None
    name: ClassVar[str] = "hmc"
    extra_stats: ClassVar[tuple[str, ...]] = ()
    has_energy: ClassVar[bool] = True
    tuning: ClassVar[Tuning] = Tuning.WINDOWS
    max_tree_depth: ClassVar[None] = None

    def __post_init__(self):
        positive_int(self.num_integration_steps, "num_integration_steps")
        _check_common(self)

    def init(self, position: Any, logdensity: Any) -> Any:
        return _hmc_init(position, logdensity)

    def build_step(self) -> Any:
        from gnomon.sampler.kernels import hmc_step

        return hmc_step(float(self.divergence_threshold), int(self.num_integration_steps))

    def initial_step_size(self, dim: int) -> float:
        return 1.0

    def expected(self, dim: int) -> tuple[float, None]:
        from gnomon.sampler.kernels import nuts_expected

        return nuts_expected(dim)[0], None  # the step size of a leapfrog at 0.8; the cost is fixed


@dataclass(frozen=True)
class MCLMC:
    r"""Metropolis-adjusted microcanonical HMC (MAMS; BlackJAX's ``adjusted_mclmc``), tuned by BlackJAX's
    ``adjusted_mclmc_find_L_and_step_size`` in the seed's whitened coordinates (:mod:`gnomon.sampler.mclmc`).

    Attributes:
      num_integration_steps: the mean number of integration steps per draw, ``k = L/ε`` (BlackJAX's
        ``target_num_integration_steps``; its tuner keeps ``L = k·ε``; 2 is BlackJAX's default).
      target_acceptance_rate: what the step size is tuned towards (0.9, BlackJAX's choice for MAMS).
      divergence_threshold: energy error above which a transition counts as divergent.
      step_size: the first step size (default: the hand-off's from an MCLMC run, else
        :math:`0.2\sqrt{D}` — BlackJAX's — in the seed's whitened units).
      integrator: ``"mclachlan"`` (BlackJAX's default, 2 gradient evaluations per integration step) or
        ``"velocity_verlet"`` (1).
      random_trajectory_length: draw each transition's step count around ``k`` (True, BlackJAX's
        ``adjusted_mclmc_dynamic``) or use :math:`\lceil k\rceil`.
    """

    num_integration_steps: float = 2.0
    target_acceptance_rate: float = 0.9
    divergence_threshold: float = 1000.0
    step_size: float | None = None
    integrator: str = "mclachlan"
    random_trajectory_length: bool = True
    name: ClassVar[str] = "mclmc"
    extra_stats: ClassVar[tuple[str, ...]] = ("num_integration_steps",)
    has_energy: ClassVar[bool] = False
    tuning: ClassVar[Tuning] = Tuning.OWN
    max_tree_depth: ClassVar[None] = None

    def __post_init__(self):
        positive("num_integration_steps", self.num_integration_steps)
        if self.num_integration_steps < 1.1:
            raise ValueError("num_integration_steps must be ≥ 1.1 (BlackJAX's tuner keeps L/ε above 1.1), got "
                             f"{self.num_integration_steps!r}")
        from gnomon.sampler.mclmc import INTEGRATORS

        if self.integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {tuple(INTEGRATORS)}, got {self.integrator!r}")
        if not isinstance(self.random_trajectory_length, bool):
            raise ValueError(f"random_trajectory_length must be True or False, got {self.random_trajectory_length!r}")
        _check_common(self)

    def init(self, position: Any, logdensity: Any) -> Any:
        return _hmc_init(position, logdensity)

    def build_step(self) -> Any:
        from gnomon.sampler.mclmc import mclmc_step

        return mclmc_step(self.integrator, float(self.divergence_threshold), float(self.num_integration_steps),
                          self.random_trajectory_length)

    def build_tune(self, num_steps: int) -> Any:
        from gnomon.sampler.mclmc import build_tune

        return build_tune(self.integrator, float(self.divergence_threshold), float(self.num_integration_steps),
                          self.random_trajectory_length, float(self.target_acceptance_rate), int(num_steps))

    def initial_step_size(self, dim: int) -> float:
        return 0.2 * max(dim, 1) ** 0.5

    def expected(self, dim: int) -> tuple[float, None]:
        from gnomon.sampler.mclmc import mclmc_expected

        return mclmc_expected(dim)


FAMILIES = {"nuts": NUTS, "hmc": HMC, "mclmc": MCLMC}


def _build(cls: type, where: str, options: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    misplaced(where, {k: v for k, v in options.items() if k not in known})
    return cls(**options)


def nuts(**options: Any) -> NUTS:
    """The NUTS kernel for :func:`gnomon.sample`: ``gn.nuts(max_tree_depth=10, target_acceptance_rate=0.8,
    divergence_threshold=1000.0, step_size=None)`` (see :class:`NUTS`; the defaults live there)."""
    return _build(NUTS, "gn.nuts", options)


def hmc(**options: Any) -> HMC:
    """The HMC kernel for :func:`gnomon.sample`: ``gn.hmc(num_integration_steps=16,
    target_acceptance_rate=0.8, divergence_threshold=1000.0, step_size=None)`` (see :class:`HMC`)."""
    return _build(HMC, "gn.hmc", options)


def mclmc(**options: Any) -> MCLMC:
    """The MAMS kernel (BlackJAX's adjusted MCLMC) for :func:`gnomon.sample`: ``gn.mclmc(num_integration_steps=2.0,
    target_acceptance_rate=0.9, divergence_threshold=1000.0, step_size=None, integrator="mclachlan",
    random_trajectory_length=True)`` (see :class:`MCLMC`)."""
    return _build(MCLMC, "gn.mclmc", options)


def as_kernel(kernel: Any) -> Any:
    """A kernel family from a name (``"nuts"``, ``"hmc"``, ``"mclmc"``), one of gnomon's families or a user's
    family that follows the protocol (:func:`gnomon.sampler.protocol.check_family`)."""
    if isinstance(kernel, str):
        if kernel not in FAMILIES:
            raise ValueError(f"unknown kernel {kernel!r}; expected one of {tuple(FAMILIES)}, gn.nuts(...), "
                             "gn.hmc(...), gn.mclmc(...) or a kernel family (gnomon.sampler.protocol)")
        return FAMILIES[kernel]()
    if isinstance(kernel, (NUTS, HMC, MCLMC)):
        return kernel
    return check_family(kernel)


def defaults() -> dict[str, dict[str, Any]]:
    """Every kernel and warmup option with its default (the one source of them), for the docs."""
    return {cls.__name__: {f.name: f.default for f in fields(cls)} for cls in (*FAMILIES.values(), Warmup)}
