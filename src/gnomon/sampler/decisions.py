"""What the sampler decided, typed: actions, seed kinds, start sources, the run's status code, the ledger.

Every choice :func:`gnomon.sample` makes on its own — keep or reject the metric seed, recover, extend the
warmup, move a stuck chain, tune a kernel — is a :class:`Decision` with a typed :class:`Action`, the warmup
step it was made at, a sentence and its details; they go to ``trace.info["decisions"]`` in order. The codes
are :class:`gnomon.util.codes.Code` members (``str`` enums): the sampler compares members, JSON holds their
value strings (``"seed rejected"``), and records written before the codes existed load with
``Action.parse(...)``.

``trace.status`` stays a sentence (``"sampled"``, ``"sampled after a recovery: ..."``) with its code beside
it in ``trace.info["status_code"]`` (:class:`SampleStatus`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gnomon.optim.status import StatusCode, code_of
from gnomon.util.codes import Code


class Action(Code):
    """What a :class:`Decision` did."""

    SEED_KEPT = "seed kept"
    SEED_REJECTED = "seed rejected"
    NO_MODE = "no mode"
    RECOVERY = "recovery"
    WARMUP_EXTENDED = "warmup extended"
    CHAINS_MOVED = "chains moved"
    BUDGET = "budget"  # something not done because the warmup budget was spent
    KERNEL_TUNED = "kernel tuned"  # a kernel family's own tuning stage (MCLMC: blackjax's step size and L)
    STEP_SIZE_RESET = "step size reset"  # a hand-off from another kernel family: its step size is not reused
    # the transport stage (gnomon.sampler.transport_stage): a map θ = T(z) learned from the draws and gradients
    TRANSPORT_KEPT = "transport kept"  # the map helps: warmup and sampling continue in z
    TRANSPORT_REFUSED = "transport refused"  # trained, judged no better than a linear map: not used
    TRANSPORT_ABANDONED = "transport abandoned"  # kept, but the run in z failed its checks: back to θ
    TRANSPORT_REUSED = "transport reused"  # a hand-off's map: no training, the compiled program reused
    TRANSPORT_STEP_REDUCED = "transport step reduced"  # the probe in z diverged: a smaller step size passed it


# the decisions that say the seed failed (the run's diagnosis explains them)
FAILED_SEED = (Action.SEED_REJECTED, Action.NO_MODE)


class SeedKind(Code):
    """Where the metric seed came from (``trace.info["metric"]["seed"]``)."""

    CURVATURE = "curvature"
    HANDOFF = "handoff"
    ARRAY = "array"
    IDENTITY = "identity"


class StartSource(Code):
    """Where the chains' start came from (``trace.info["init"]``)."""

    THETA = "theta"
    PER_CHAIN = "per-chain starts"
    OPTIMIZATION = "optimization trace"
    SAMPLING = "sampling trace"
    HANDOFF = "handoff"
    NO_MODE = "no mode"  # an optimization without a usable mode: dispersed starts around its first point


class SampleStatus(Code):
    """How a sampling run ended (``trace.info["status_code"]``, beside the sentence ``trace.status``)."""

    SAMPLED = "sampled"  # the draws passed every health check
    RECOVERED = "recovered"  # the seed failed (rejected, or no mode) and the recovery's draws are healthy
    UNHEALTHY = "unhealthy"  # a health check found a problem (``trace.info["health"]["problems"]``)


class MapEnd(Code):
    """How the optimization behind a start ended, as far as the sampler needs to know."""

    DIVERGED = "diverged"
    RAN_OFF = "ran off"  # the loss kept falling at a steady rate (a neck): no mode either
    SADDLE_POINT = "saddle point"
    NO_PROGRESS = "no progress"
    MAX_STEPS = "max_steps"
    OTHER = "other"

    @classmethod
    def of(cls, status: Any, code: Any = None) -> MapEnd | None:
        """The end of an optimizer whose ``trace.status`` is ``status`` (None: no optimizer). ``code`` is the
        optimizer's own status code (``trace.info["status_code"]``, :class:`gnomon.optim.StatusCode`); without
        one the sentence is read by :func:`gnomon.optim.status.code_of` — the optimizer's own reader."""
        if status is None and code is None:
            return None
        found = cls.get(code)
        if found is not None:
            return found
        try:
            optimizer_code = StatusCode(code) if code is not None else code_of(status)
        except ValueError:
            optimizer_code = code_of(status)
        if optimizer_code is not None and optimizer_code.name in cls.__members__:
            return cls[optimizer_code.name]
        return cls.OTHER

    @property
    def found_no_mode(self) -> bool:
        """The optimizer ran away from any mode (non-finite, or steadily down a neck)."""
        return self in (MapEnd.DIVERGED, MapEnd.RAN_OFF)


class Decision(NamedTuple):
    """One thing the sampler decided, when (warmup step) and why."""

    step: int
    action: Action
    message: str
    details: dict

    def as_info(self) -> dict[str, Any]:
        return {"step": self.step, "action": self.action, "message": self.message, **self.details}


@dataclass
class Ledger:
    """What the run has spent and decided so far (host side)."""

    steps: int = 0  # warmup steps
    grads: int = 0  # warmup gradient evaluations
    divergences: int = 0  # warmup divergences
    rejected_grads: int = 0  # of which spent around a seed that was then rejected
    restart_grads: int = 0  # new chain states: the recovery's restart, moved chains
    check_grads: int = 0  # the improper-direction check and the mode probe
    transport_grads: int = 0  # the transport stage: new chain states in z and the warmup run in z
    windows: int = 0
    kept: list = field(default_factory=list)  # warmup ChunkOuts kept (keep_warmup)
    decisions: list[Decision] = field(default_factory=list)
    extended: list[int] = field(default_factory=list)
    estimator: Any = None  # the recovery's warmup.Estimator, once there is one
    rhat: list[tuple[int, float, int]] = field(default_factory=list)  # per window: (step, max R̂, coordinate)
    recent: list = field(default_factory=list)  # the latest warmup ChunkOuts since the last restart (transport)
    transport: Any = None  # the kept transport stage (gnomon.sampler.transport_stage.InZ), once there is one
    kept_z_from: int | None = None  # the first of the kept warmup outputs that ran in z
    z_grad_cost: float = 1.0  # gradients of the log density per gradient in z (a conditional map's: ~7-10)
    z_grads_from: int = 0  # ``grads`` when the run entered z (later warmup gradients are in z)

    def decide(self, action: Action, message: str, **details: Any) -> Decision:
        d = Decision(self.steps, Action.parse(action), message, details)
        self.decisions.append(d)
        return d

    def any(self, *actions: Action) -> bool:
        return any(d.action in actions for d in self.decisions)

    def first(self, *actions: Action) -> Decision | None:
        return next((d for d in self.decisions if d.action in actions), None)
