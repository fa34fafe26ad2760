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

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import optax

from gnomon.curvature.estimate import default_power
from gnomon.objective.objective import Objective
from gnomon.optim.backtracking import nonmonotone_backtracking, restart_lbfgs
from gnomon.optim.estimator import CurvatureEstimator, curvature_estimator
from gnomon.optim.precondition import check_bounds
from gnomon.optim.preconditioners import precondition_by_curvature, scale_by_curvature
from gnomon.optim.program import Method, Program, hashable, jsonable  # noqa: F401 (Program re-exported)
from gnomon.optim.rules import (
    LINESEARCHES,
    SAFEGUARDS,  # noqa: F401 (re-exported)
    STEP_RULES,
    assemble,
    below_one,
    check_common,
    check_estimator_options,
    check_lr,
    curvature_source,
    non_negative,
    resolve_rules,
    rules_info,
)
from gnomon.util.validate import positive_float, positive_int


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
        check_lr(self.learning_rate)
        check_common(self)

    def program(self, obj: Objective, theta: Any, data: Any) -> Program:
        rules = resolve_rules(self.name, self.safeguard, self.learning_rate, self.momentum, self.step_rule,
                              self.window)
        info = {**rules_info(self, rules), "momentum": self.momentum, "nesterov": self.nesterov}
        lr, mom, nest, iters = self.learning_rate, self.momentum, self.nesterov, self.power_iters
        if not (rules.bb or rules.bound or rules.backtrack):  # exactly optax.sgd
            static = ("momentum", "nesterov")

            def make(data, key, arrays):
                return optax.inject_hyperparams(optax.sgd, static_args=static)(lr, momentum=mom, nesterov=nest)

            return Program(self.name, self._key(), make, None, info)

        def make(data, key, arrays):  # P = 1: the learning rate (or its λ_max bound) alone
            return assemble(None, rules, momentum=mom, nesterov=nest, objective=obj, data=data, key=key,
                            power_iters=iters)

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
        check_lr(self.learning_rate, required=True)

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
        check_lr(self.learning_rate, required=True)

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
        check_lr(self.learning_rate)
        positive_int(self.memory_size, "memory_size")
        if self.linesearch not in LINESEARCHES:
            raise ValueError(f"linesearch must be one of {LINESEARCHES}, got {self.linesearch!r}")
        check_estimator_options(self)

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
        source = curvature_source(self, obj, self.curvature, data, refreshes=False)

        def make(data, key, arrays):  # an estimator carries its data; a diagonal (arrays) needs none
            curv = source.estimator._replace(data=data) if source.estimator is not None else arrays
            return assemble(precondition_by_curvature(lbfgs_core(), curv, key=key))

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
        check_lr(self.learning_rate)
        check_common(self)
        check_estimator_options(self)
        if self.step_rule not in (None, *STEP_RULES):
            raise ValueError(f"step_rule must be one of {STEP_RULES} or None (by method), got {self.step_rule!r}")
        if self.refresh_every is not None:
            positive_int(self.refresh_every, "refresh_every")
        below_one(self.ema, "ema")
        below_one(self.beta, "beta")
        non_negative(self.eps, "eps")
        if self.power is not None:
            positive_float(self.power, "power")
        non_negative(self.lr_min, "lr_min", " or None")
        non_negative(self.lr_max, "lr_max", " or None")
        check_bounds(self.lr_min, self.lr_max)

    def program(self, obj: Objective, theta: Any, data: Any) -> Program:
        if isinstance(self.curvature, str) and self.curvature == "ema_grad2":
            return self._ema_grad2()
        source = curvature_source(self, obj, self.curvature, data, refreshes=self.refresh_every is not None)
        power = default_power(source.method) if self.power is None else float(self.power)
        rules = resolve_rules(self.name, self.safeguard, self.learning_rate, self.momentum, self.step_rule,
                              self.window)
        info = {**rules_info(self, rules), "power": power, "eps": float(self.eps), "lr_min": self.lr_min,
                "lr_max": self.lr_max, "refresh_every": self.refresh_every, "ema": float(self.ema),
                "curvature_fixed": self.refresh_every is None, "momentum": self.momentum, "nesterov": self.nesterov,
                "block_scale": dict(self.block_scale) if self.block_scale else None}
        layout = obj.base_layout if obj.thetamap is None else None
        if self.block_scale and layout is None:
            raise ValueError("block_scale needs an objective with a layout naming the blocks")
        shaping = dict(power=power, eps=float(self.eps), layout=layout, block_scale=self.block_scale,
                       refresh_every=self.refresh_every, ema=float(self.ema))
        step = dict(momentum=self.momentum, nesterov=self.nesterov, objective=obj, power_iters=self.power_iters,
                    lr_min=self.lr_min, lr_max=self.lr_max)

        def make(data, key, arrays):
            if source.estimator is None:  # a given diagonal (or the identity)
                curv, initial = (1.0 if arrays is None else arrays), None
            else:  # the estimator carries each member's data
                curv, initial = source.estimator._replace(data=data), arrays
            precond = scale_by_curvature(curv, initial=initial, key=key, **shaping)
            return assemble(precond, rules, data=data, key=key, **step)

        return Program(self.name, self._key(), make, source.given, info, source.info, source.start)

    def _ema_grad2(self) -> Program:
        rate = 1e-2 if self.learning_rate is None else self.learning_rate
        beta, eps = float(self.beta), float(self.eps) or 1e-8
        info = {"method": self.name, "learning_rate": jsonable(rate)}
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

    The configuration's field is each value's one home: ``gn.optimize(obj, θ0, "gd", learning_rate=0.1)`` is an
    alias of ``gd(learning_rate=0.1)``, and an option beside a configuration fills a field left at its default.
    An option the method does not take raises a ValueError naming the methods it belongs to; one that contradicts
    the configuration's own setting raises one naming both."""
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
    if not isinstance(method, Method):
        return cls(**options)
    twice = [k for k in sorted(options) if _set(method, k) and hashable(options[k]) != hashable(getattr(method, k))]
    if twice:
        given = ", ".join(f"{k}={getattr(method, k)!r}" for k in twice)
        asked = ", ".join(f"{k}={options[k]!r}" for k in twice)
        raise ValueError(f"{', '.join(twice)} given twice: {cls.__name__}({given}) and {asked} beside it; give each "
                         f"value once, in the configuration (gn.optim.{cls.__name__}(...)) or as an option of a "
                         "method name")
    return dataclasses.replace(method, **options)


def _set(cfg: Method, name: str) -> bool:
    """Whether ``cfg``'s field ``name`` differs from its default."""
    field = next(f for f in dataclasses.fields(cfg) if f.name == name)
    default = field.default if field.default is not dataclasses.MISSING else dataclasses.MISSING
    return default is dataclasses.MISSING or hashable(getattr(cfg, name)) != hashable(default)


def _misplaced(option: str, method: str) -> str:
    owners = [n for n, c in METHODS.items() if option in {f.name for f in dataclasses.fields(c)}]
    if not owners:
        return f"unknown option {option!r} for {method}"
    return f"{option} is an option of {', '.join(owners)}, not {method}"
