r"""Optimizer methods as small configuration objects: ``gn.optim.gd(...)``, ``sgd``, ``adam``, ``rmsprop``,
``lbfgs``, ``preconditioned_gd``.

Each is a frozen dataclass whose field defaults are the method's only defaults (``gn.optimize(obj, θ0,
"adam", learning_rate=0.1)`` is ``gn.optimize(obj, θ0, gn.optim.adam(learning_rate=0.1))``). A method turns
into a :class:`Program` — the loop's compile-cache key, its JSON description and a factory of the optax
transformation, called inside the compiled program with each member's data and the PRNG key:

``gd``
    :math:`θ_{t+1} = θ_t - η ∇f(θ_t)` (``optax.sgd``). Without a learning rate :math:`η = 1/λ_\max(∇^2 f(θ_0))`
    (power iteration) with monotone backtracking; ``step_rule="bb"`` for Barzilai–Borwein steps.
``sgd``
    ``optax.sgd`` with momentum (default 0.9); without a learning rate η = 1/λ_max.
``adam``, ``rmsprop``
    optax's (learning rate 1e-3).
``lbfgs``
    ``optax.scale_by_lbfgs`` run in the coordinates :math:`u = c^{1/2} ⊙ θ` of a curvature diagonal c at θ_0
    (:func:`~gnomon.optim.precondition_by_curvature`; a diagonal initial inverse Hessian): on badly scaled
    problems plain L-BFGS stalls, this does not. ``curvature="identity"``: no preconditioner. Step lengths from
    the loop's backtracking (``linesearch="backtracking"``, default; :func:`~gnomon.optim.restart_lbfgs`) or
    optax's zoom line search (``"zoom"``).
``preconditioned_gd``
    :math:`θ_{t+1} = θ_t - η_t\, P ⊙ ∇f(θ_t)`, the chain of :mod:`gnomon.optim.transforms`: P from a curvature
    diagonal (auto: Gauss–Newton with residuals, exact for D ≤ 16, Hutchinson otherwise) and its power; step
    rule ``"bb"`` (default without a learning rate: η_0 = 1, the diagonal Newton step, then Barzilai–Borwein
    steps in the metric P⁻¹) or ``"fixed"`` (default with a learning rate or momentum: η = min(learning_rate,
    1/λ_max(P^½ H P^½))); non-monotone backtracking (window 10 with BB steps, monotone with fixed steps).
    ``curvature="ema_grad2"``: :math:`θ_{t+1} = θ_t - η\, g_t / (\sqrt{\hat v_t} + \text{eps})`, the
    bias-corrected EMA of g² (β = ``beta``, ``optax.scale_by_rms``; default η = 1e-2, eps = 1e-8).

Safeguards (``safeguard=``, gd / sgd / preconditioned_gd): ``"lambda_max"`` (the bound above, at θ_0 and each
refresh), ``"backtrack"`` (:func:`~gnomon.optim.nonmonotone_backtracking`), ``"both"``, ``"none"``; ``"auto"``:
backtracking for preconditioned_gd (plus the bound with fixed steps) and for gd/sgd without a learning rate
(with the bound), nothing otherwise. Backtracking and BB steps are not combined with momentum.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import optax

from gnomon.curvature.estimate import METHODS as CURVATURE_METHODS
from gnomon.curvature.estimate import Curvature, default_power
from gnomon.objective.objective import Objective
from gnomon.optim.estimator import NEGATIVE, CurvatureEstimator, curvature_estimator
from gnomon.optim.transforms import (
    nonmonotone_backtracking,
    precondition_by_curvature,
    restart_lbfgs,
    scale_by_bb,
    scale_by_curvature,
)

SAFEGUARDS = ("auto", "lambda_max", "backtrack", "both", "none")
LINESEARCHES = ("backtracking", "zoom")
STEP_RULES = ("bb", "fixed")


class Program(NamedTuple):
    """What the optimizer loop runs for one method and its settings.

    ``make(data, key, arrays)`` returns the optax transformation; it is called inside the compiled program
    (``data`` one member's data, ``key`` the PRNG key, ``arrays`` :attr:`arrays` — runtime arrays such as a
    given curvature, passed as arguments so that new values do not recompile; one member's under a batch).
    ``cache_key`` identifies the program's structure; ``info`` is its JSON description (→ ``trace.info``),
    ``curvature_info`` the curvature's (→ ``trace.info["curvature"]``, None without one). ``start_curvature``
    (None for none): the options of the curvature to estimate at θ_0 on the host
    (:func:`gnomon.optim.estimator.curvature_at_start`) — the driver fills :attr:`arrays` with it before running;
    ``start_cost`` is what that estimate cost (per member)."""

    name: str
    cache_key: Hashable
    make: Callable[[Any, Any, Any], Any]
    arrays: Any
    info: Mapping[str, Any]
    curvature_info: Mapping[str, Any] | None = None
    start_curvature: Mapping[str, Any] | None = None
    start_cost: int = 0


class Method(abc.ABC):
    """Base of the method configurations (frozen dataclasses); each one builds its :class:`Program`."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def program(self, obj: Objective, theta: Any, data: Any) -> Program:
        """The :class:`Program` for ``obj`` (``theta``/``data``: one member's start and data, for planning)."""

    def describe(self) -> dict[str, Any]:
        """JSON-able settings (field values; arrays and schedules by kind)."""
        return {"method": self.name, **{f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}}

    def _key(self) -> tuple:
        """Hashable settings: the compile-cache key (a given curvature diagonal is a runtime argument of the
        program, so only its shape enters)."""
        return (self.name, *(_hashable(getattr(self, f.name), by_value=f.name != "curvature")
                             for f in dataclasses.fields(self)))


@dataclass(frozen=True, kw_only=True)
class _CurvatureOptions:
    """Curvature-estimator options of the methods that estimate one (:func:`gnomon.optim.curvature_estimator`)."""

    num_probes: int | None = None
    hutchinson_mode: str = "variance_reduced"
    floor: float | None = None
    prior_precision: Any = None
    negative: str = "abs"
    batch_size: int | None = None

    def _estimator(self, obj: Objective, method: str | None, data: Any) -> CurvatureEstimator:
        return curvature_estimator(obj, method, data=data, num_probes=self.num_probes,
                                   hutchinson_mode=self.hutchinson_mode, floor=self.floor,
                                   prior_precision=self.prior_precision, negative=self.negative,
                                   batch_size=self.batch_size)

    def _start_options(self, method: str | None) -> dict[str, Any]:
        """What :func:`gnomon.optim.estimator.curvature_at_start` needs to estimate c at θ_0."""
        return {"method": method, "num_probes": self.num_probes, "hutchinson_mode": self.hutchinson_mode,
                "floor": self.floor, "prior_precision": self.prior_precision, "negative": self.negative,
                "batch_size": self.batch_size}


class _Rules(NamedTuple):
    step_rule: str
    bb: bool
    bound: bool
    backtrack: bool
    window: int
    base: Any  # learning rate or schedule; ∞ with the bound and no learning rate (η_0 = 1/λ_max)


# ------------------------------------------------------------------------------------------------ gd / sgd
@dataclass(frozen=True)
class gd(Method):
    """Gradient descent, :math:`θ_{t+1} = θ_t - η ∇f(θ_t)` (module docstring: defaults and safeguards).

    Args:
      learning_rate: η (float or optax schedule); None: :math:`1/λ_\\max(∇^2 f(θ_0))` with backtracking.
      step_rule: ``"fixed"`` or ``"bb"`` (Barzilai–Borwein steps).
      safeguard: ``"auto"``, ``"lambda_max"``, ``"backtrack"``, ``"both"`` or ``"none"``.
      momentum, nesterov: heavy-ball / Nesterov momentum (``optax.trace``).
      power_iters: power iterations of the λ_max bound (2 gradient evaluations each).
      window: M of the non-monotone backtracking test with BB steps (fixed steps: 1, monotone).
    """

    name: ClassVar[str] = "gd"
    learning_rate: float | Callable | None = None
    step_rule: str = "fixed"
    safeguard: str = "auto"
    momentum: float | None = None
    nesterov: bool = False
    power_iters: int = 20
    window: int = 10

    def __post_init__(self):
        _check_lr(self.learning_rate)
        _check_common(self)

    def program(self, obj: Objective, theta: Any, data: Any) -> Program:
        rules = _rules(self.name, self.safeguard, self.learning_rate, self.momentum, self.step_rule, self.window)
        info = {**_rules_info(self, rules), "momentum": self.momentum, "nesterov": self.nesterov}
        lr, mom, nest, iters = self.learning_rate, self.momentum, self.nesterov, self.power_iters
        if not (rules.bb or rules.bound or rules.backtrack):  # exactly optax.sgd
            static = ("momentum", "nesterov")

            def make(data, key, arrays):
                return optax.inject_hyperparams(optax.sgd, static_args=static)(lr, momentum=mom, nesterov=nest)

            return Program(self.name, self._key(), make, None, info)

        def make(data, key, arrays):
            core = scale_by_curvature(1.0, rules.base, objective=obj, data=data, key=key,
                                      lambda_max_iters=iters if rules.bound else None)
            return _assemble(core, rules, mom, nest)

        return Program(self.name, self._key(), make, None, info)


@dataclass(frozen=True)
class sgd(gd):
    """``optax.sgd`` with momentum (default 0.9); arguments as :class:`gd`."""

    name: ClassVar[str] = "sgd"
    momentum: float | None = 0.9


# ---------------------------------------------------------------------------------------------- adam / rmsprop
@dataclass(frozen=True)
class adam(Method):
    """``optax.adam(learning_rate, b1, b2, eps)``."""

    name: ClassVar[str] = "adam"
    learning_rate: float | Callable = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        _check_lr(self.learning_rate, required=True)

    def program(self, obj: Objective, theta: Any, data: Any) -> Program:
        lr, b1, b2, eps = self.learning_rate, self.b1, self.b2, self.eps

        def make(data, key, arrays):
            return optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps"))(lr, b1=b1, b2=b2, eps=eps)

        return Program(self.name, self._key(), make, None, self.describe())


@dataclass(frozen=True)
class rmsprop(Method):
    """``optax.rmsprop(learning_rate, decay, eps)``."""

    name: ClassVar[str] = "rmsprop"
    learning_rate: float | Callable = 1e-3
    decay: float = 0.9
    eps: float = 1e-8

    def __post_init__(self):
        _check_lr(self.learning_rate, required=True)

    def program(self, obj: Objective, theta: Any, data: Any) -> Program:
        lr, decay, eps = self.learning_rate, self.decay, self.eps

        def make(data, key, arrays):
            return optax.inject_hyperparams(optax.rmsprop, static_args=("decay", "eps"))(lr, decay=decay, eps=eps)

        return Program(self.name, self._key(), make, None, self.describe())


# ------------------------------------------------------------------------------------------------------ lbfgs
@dataclass(frozen=True)
class lbfgs(_CurvatureOptions, Method):
    """L-BFGS (``optax.scale_by_lbfgs``) preconditioned by a curvature diagonal at θ_0.

    Args:
      learning_rate: None (the line search's step) or a scale before the line search, as optax's.
      memory_size: pairs kept.
      curvature: None (auto, as preconditioned_gd), a method name, a Curvature or (D,) array, or
        ``"identity"`` for no preconditioner.
      linesearch: ``"backtracking"`` (the default: the loop's monotone Armijo backtracking with
        :func:`~gnomon.optim.restart_lbfgs`: one evaluation per step and one compiled site — a third less
        compilation and lockstep batches — the same or fewer evaluations on every benchmark target) or ``"zoom"``
        (optax's zoom line search: strong Wolfe, extrapolates; the model is compiled at three sites).
      num_probes, hutchinson_mode, floor, prior_precision, negative, batch_size: the curvature estimator.
    """

    name: ClassVar[str] = "lbfgs"
    learning_rate: float | Callable | None = None
    memory_size: int = 10
    curvature: Any = None
    linesearch: str = "backtracking"

    def __post_init__(self):
        _check_lr(self.learning_rate)
        if isinstance(self.memory_size, bool) or not isinstance(self.memory_size, int) or self.memory_size < 1:
            raise ValueError(f"memory_size must be a positive int, got {self.memory_size!r}")
        if self.linesearch not in LINESEARCHES:
            raise ValueError(f"linesearch must be one of {LINESEARCHES}, got {self.linesearch!r}")
        _check_estimator_options(self)

    def program(self, obj: Objective, theta: Any, data: Any) -> Program:
        lr, mem, zoom = self.learning_rate, self.memory_size, self.linesearch == "zoom"
        info = {**self.describe(), "backtracking": not zoom, "window": None if zoom else 1}

        def assemble(direction):
            scaling = optax.scale(-1.0) if lr is None else optax.scale_by_learning_rate(lr)
            if zoom:
                search = optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")
                return optax.chain(direction, scaling, search)
            return nonmonotone_backtracking(optax.chain(direction, scaling), window=1)

        def lbfgs_core():
            return optax.scale_by_lbfgs(memory_size=mem) if zoom else restart_lbfgs(mem)

        if isinstance(self.curvature, str) and self.curvature == "identity":
            info["curvature"] = "identity"

            def make(data, key, arrays):
                return assemble(lbfgs_core())

            return Program(self.name, self._key(), make, None, info)
        source = _curvature_source(self, obj, self.curvature, data, refreshes=False)

        def make(data, key, arrays):
            curv = source.estimator._replace(data=data) if source.estimator is not None else arrays
            return assemble(precondition_by_curvature(lbfgs_core(), curv, data=data, key=key))

        info["curvature"] = source.info.get("method")
        return Program(self.name, self._key(), make, source.given, info, source.info, source.start)


# ------------------------------------------------------------------------------------------ preconditioned_gd
@dataclass(frozen=True)
class preconditioned_gd(_CurvatureOptions, Method):
    r"""Preconditioned gradient descent :math:`θ_{t+1} = θ_t - η_t\, P ⊙ ∇f(θ_t)` (module docstring).

    Args:
      curvature: None (auto), a method name (:data:`gnomon.curvature.estimate.METHODS`), a
        :class:`gnomon.Curvature` or a (D,) array (used as given; re-estimated by its method with
        ``refresh_every``), ``"ema_grad2"`` or ``"identity"``.
      learning_rate: η_0 of a fixed step (bounded by 1/λ_max unless ``safeguard="none"``) or a schedule;
        None: BB steps from η_0 = 1.
      step_rule: ``"bb"`` or ``"fixed"`` (None: ``"bb"`` without a learning rate and momentum).
      safeguard: ``"auto"``, ``"lambda_max"``, ``"backtrack"``, ``"both"``, ``"none"``.
      refresh_every, ema: re-estimate the curvature every K accepted steps, smoothed.
      power, eps, lr_min, lr_max, block_scale: the learning-rate vector
        ``clip(η · s · (c + eps)^(-power), lr_min, lr_max)``; ``block_scale`` maps layout parameter or group
        names to multipliers s.
      momentum, nesterov: heavy-ball/Nesterov momentum (fixed steps, no backtracking).
      beta: EMA decay of ``curvature="ema_grad2"``.
      power_iters: power iterations of the λ_max bound; window: M of the backtracking test with BB steps.
      num_probes, hutchinson_mode, floor, prior_precision, negative, batch_size: the curvature estimator
        (:func:`gnomon.optim.curvature_estimator`; Hutchinson defaults to 16 probes here).
    """

    name: ClassVar[str] = "preconditioned_gd"
    curvature: Any = None
    learning_rate: float | Callable | None = None
    step_rule: str | None = None
    safeguard: str = "auto"
    refresh_every: int | None = None
    ema: float = 0.0
    power: float | None = None
    eps: float = 0.0
    lr_min: float | None = None
    lr_max: float | None = None
    block_scale: Mapping[str, float] | None = None
    momentum: float | None = None
    nesterov: bool = False
    beta: float = 0.999
    power_iters: int = 20
    window: int = 10

    def __post_init__(self):
        _check_lr(self.learning_rate)
        _check_common(self)
        _check_estimator_options(self)
        if self.step_rule not in (None, *STEP_RULES):
            raise ValueError(f"step_rule must be one of {STEP_RULES} or None (by method), got {self.step_rule!r}")
        r = self.refresh_every
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise ValueError(f"refresh_every must be a positive int or None, got {r!r}")
        for name in ("ema", "beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        if isinstance(self.eps, bool) or not (isinstance(self.eps, (int, float)) and self.eps >= 0):
            raise ValueError(f"eps must be a non-negative number, got {self.eps!r}")
        if self.power is not None and (isinstance(self.power, bool) or not (
                isinstance(self.power, (int, float)) and self.power > 0)):
            raise ValueError(f"power must be a positive number, got {self.power!r}")
        for name in ("lr_min", "lr_max"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not (isinstance(v, (int, float)) and v >= 0)):
                raise ValueError(f"{name} must be a non-negative number or None, got {v!r}")

    def program(self, obj: Objective, theta: Any, data: Any) -> Program:
        if isinstance(self.curvature, str) and self.curvature == "ema_grad2":
            return self._ema_grad2()
        source = _curvature_source(self, obj, self.curvature, data, refreshes=self.refresh_every is not None)
        power = default_power(source.method) if self.power is None else float(self.power)
        rules = _rules(self.name, self.safeguard, self.learning_rate, self.momentum, self.step_rule, self.window)
        info = {**_rules_info(self, rules), "power": power, "eps": float(self.eps), "lr_min": self.lr_min,
                "lr_max": self.lr_max, "refresh_every": self.refresh_every, "ema": float(self.ema),
                "curvature_fixed": self.refresh_every is None, "momentum": self.momentum, "nesterov": self.nesterov,
                "block_scale": dict(self.block_scale) if self.block_scale else None}
        layout = obj.base_layout if obj.thetamap is None else None
        if self.block_scale and layout is None:
            raise ValueError("block_scale needs an objective with a layout naming the blocks")
        opts = dict(power=power, eps=float(self.eps), lr_min=self.lr_min, lr_max=self.lr_max, layout=layout,
                    block_scale=self.block_scale, refresh_every=self.refresh_every, ema=float(self.ema),
                    lambda_max_iters=self.power_iters if rules.bound else None)
        mom, nest = self.momentum, self.nesterov

        def make(data, key, arrays):
            if source.estimator is None:  # a given diagonal (or the identity)
                curv, initial = (1.0 if arrays is None else arrays), None
            else:
                curv, initial = source.estimator._replace(data=data), arrays
            core = scale_by_curvature(curv, rules.base, objective=obj, data=data, initial=initial, key=key, **opts)
            return _assemble(core, rules, mom, nest)

        return Program(self.name, self._key(), make, source.given, info, source.info, source.start)

    def _ema_grad2(self) -> Program:
        rate = 1e-2 if self.learning_rate is None else self.learning_rate
        beta, eps = float(self.beta), float(self.eps) or 1e-8
        info = {"method": self.name, "learning_rate": _jsonable(rate)}
        cinfo = {"method": "ema_grad2", "beta": beta, "eps": eps, "power": 0.5, "num_grad_evals": 0,
                 "init": "zeros, bias-corrected (first step: g0²)", "updated": "every step"}

        def ema_grad2(learning_rate):
            return optax.chain(optax.scale_by_rms(decay=beta, eps=eps, eps_in_sqrt=False, bias_correction=True),
                               optax.scale_by_learning_rate(learning_rate))

        def make(data, key, arrays):
            return optax.inject_hyperparams(ema_grad2)(rate)

        return Program(self.name, self._key(), make, None, info, cinfo)


METHODS: dict[str, type[Method]] = {m.name: m for m in (gd, preconditioned_gd, adam, rmsprop, sgd, lbfgs)}


def make_method(method: Any, **options: Any) -> Method:
    """A method configuration from a name or a configuration plus options (``None`` values are dropped).

    An option the method does not take raises a ValueError naming the methods it belongs to."""
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(method, Method):
        cls = type(method)
    elif isinstance(method, str) and method in METHODS:
        cls = METHODS[method]
    else:
        raise ValueError(
            f"unknown optimizer method {method!r}; expected one of {tuple(METHODS)}, a gn.optim method "
            "configuration or an optax GradientTransformation"
        )
    names = {f.name for f in dataclasses.fields(cls)}
    wrong = sorted(set(options) - names)
    if wrong:
        raise ValueError("; ".join(_misplaced(k, cls.name) for k in wrong))
    return dataclasses.replace(method, **options) if isinstance(method, Method) else cls(**options)


def _misplaced(option: str, method: str) -> str:
    owners = [n for n, c in METHODS.items() if option in {f.name for f in dataclasses.fields(c)}]
    if not owners:
        return f"unknown option {option!r} for {method}"
    return f"{option} is an option of {', '.join(owners)}, not {method}"


# ---------------------------------------------------------------------------------------------- helpers
class _Source(NamedTuple):
    estimator: CurvatureEstimator | None  # estimated at refreshes (and at θ_0 when neither given nor `start`)
    given: Any  # a given diagonal (numpy), passed to the program as an argument; None for none
    method: str
    info: dict
    start: Mapping[str, Any] | None = None  # estimate c at θ_0 on the host (Program.start_curvature)


def _curvature_source(cfg: Any, obj: Objective, curvature: Any, data: Any, *, refreshes: bool) -> _Source:
    """Where preconditioned_gd's / lbfgs's curvature comes from (host side, validated). A method name (or None,
    auto) is estimated at θ_0 on the host before the loop (:func:`gnomon.optim.estimator.curvature_at_start`,
    with its fallbacks) and passed to the program like a given diagonal; refreshes re-run the method inside."""
    if isinstance(curvature, str) and curvature == "identity":
        if refreshes:
            raise ValueError("refresh_every needs a curvature method to re-run, not 'identity'")
        return _Source(None, None, "identity", {"method": "identity", "num_grad_evals": 0})
    if curvature is None or isinstance(curvature, str):
        est = cfg._estimator(obj, curvature, data)  # validates the method and options for this objective
        info = dict(est.describe)
        if refreshes:
            info["refresh_cost"] = est.cost
        return _Source(est if refreshes else None, None, est.method, info, cfg._start_options(curvature))
    if isinstance(curvature, Curvature):
        given = curvature
    else:
        arr = np.asarray(curvature)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"curvature must be None, a method name {CURVATURE_METHODS}, a Curvature or a (D,) array, "
                f"got {curvature!r}"
            )
        given = Curvature(diag=arr)
    d = np.asarray(given.diag)
    if d.shape != (obj.dim,):
        raise ValueError(f"the given Curvature has dim {d.shape}, expected ({obj.dim},)")
    finite = np.isfinite(d)
    if not np.all(finite) or np.any(d <= 0):
        low = float(d[finite].min()) if finite.any() else None
        raise ValueError(
            "the given Curvature's diagonal must be finite and positive "
            f"(min finite {low!r}, {int(np.sum(~finite))} non-finite)"
        )
    info = {**given.describe(), "source": "given", "estimate_cost": int(given.num_grad_evals)}
    if not refreshes:
        return _Source(None, d, given.method, info)
    if given.method not in CURVATURE_METHODS or given.method == "ema_grad2":
        raise ValueError(f"refresh_every needs a curvature method to re-run; the given Curvature is {given.method!r}")
    est = cfg._estimator(obj, given.method, data)
    info["refresh_cost"] = est.cost
    return _Source(est, d, given.method, info)


def _rules(method: str, safeguard: str, lr: Any, momentum: Any, step_rule: str | None, window: int) -> _Rules:
    """Resolve ``step_rule=None`` and ``safeguard="auto"`` (module docstring)."""
    if method == "preconditioned_gd":
        if step_rule is None:
            step_rule = "fixed" if (momentum is not None or lr is not None) else "bb"
        bb = step_rule == "bb"
        bound = safeguard in ("lambda_max", "both") or (safeguard == "auto" and not bb)
        backtrack = safeguard in ("backtrack", "both") or (safeguard == "auto" and momentum is None)
        base = 1.0 if lr is None else lr
    else:
        auto = lr is None
        bb = step_rule == "bb"
        bound = safeguard in ("lambda_max", "both") or (safeguard == "auto" and auto)
        backtrack = safeguard in ("backtrack", "both") or (safeguard == "auto" and (auto or bb) and momentum is None)
        if lr is None and not bound and not bb:
            raise ValueError(f"{method} without a learning_rate needs the lambda_max safeguard (safeguard='auto')")
        base = (np.inf if bound else 1.0) if lr is None else lr
    if backtrack and momentum is not None:
        raise ValueError("the backtracking safeguard cannot be combined with momentum; use safeguard='lambda_max'")
    if bb and momentum is not None:
        raise ValueError("step_rule='bb' cannot be combined with momentum; use step_rule='fixed'")
    return _Rules(step_rule, bb, bound, backtrack, window if bb else 1, base)


def _assemble(core: Any, rules: _Rules, momentum: Any, nesterov: bool) -> Any:
    """core [→ scale_by_bb] [→ optax.trace], wrapped in nonmonotone_backtracking when asked."""
    if rules.bb:
        core = optax.chain(core, scale_by_bb())
    if momentum is not None:
        core = optax.chain(core, optax.trace(decay=momentum, nesterov=nesterov))
    if rules.backtrack:
        core = nonmonotone_backtracking(core, window=rules.window)
    return core


def _rules_info(cfg: Any, rules: _Rules) -> dict:
    return {
        "method": cfg.name,
        "learning_rate": _jsonable(cfg.learning_rate),
        "step_rule": rules.step_rule,
        "safeguard": cfg.safeguard,
        "lambda_max_bound": rules.bound,
        "backtracking": rules.backtrack,
        "window": rules.window if rules.backtrack else None,
        "power_iters": cfg.power_iters if rules.bound else None,
    }


def _check_lr(lr: Any, required: bool = False) -> None:
    if (lr is None and not required) or callable(lr):
        return
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"learning_rate must be a positive number or an optax schedule, got {lr!r}")


def _check_common(cfg: Any) -> None:
    if cfg.safeguard not in SAFEGUARDS:
        raise ValueError(f"unknown safeguard {cfg.safeguard!r}; expected one of {SAFEGUARDS}")
    if cfg.name != "preconditioned_gd" and cfg.step_rule not in STEP_RULES:
        raise ValueError(f"step_rule must be one of {STEP_RULES}, got {cfg.step_rule!r}")
    m = cfg.momentum
    if m is not None and (isinstance(m, bool) or not (isinstance(m, (int, float)) and 0 <= m < 1)):
        raise ValueError(f"momentum must be in [0, 1), got {m!r}")
    for name in ("power_iters", "window"):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def _check_estimator_options(cfg: Any) -> None:
    if cfg.negative not in NEGATIVE:
        raise ValueError(f"negative must be one of {NEGATIVE}, got {cfg.negative!r}")
    f = cfg.floor
    if f is not None and (isinstance(f, bool) or not (isinstance(f, (int, float)) and 0 <= f < 1)):
        raise ValueError(f"floor must be a fraction of the median in [0, 1) or None (by method), got {f!r}")


def _hashable(x: Any, by_value: bool = True) -> Any:
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    if isinstance(x, Curvature):
        return ("curvature", x.method, np.shape(x.diag))  # values are passed as arguments, not compiled in
    if callable(x):
        return ("callable", x)
    a = np.asarray(x)
    if not by_value:
        return ("array", a.shape)
    return ("array", a.shape, str(a.dtype), hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())


def _jsonable(x: Any) -> Any:
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, Curvature):
        return f"Curvature({x.method})"
    if callable(x):
        return "schedule"
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else f"array{tuple(a.shape)}"
