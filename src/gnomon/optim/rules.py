"""How a method configuration becomes an optax chain: its step rule and safeguards (``step_rule``, ``safeguard``),
where its curvature comes from, and the checks of its settings.

The chains (:func:`assemble`), with P the preconditioner (:func:`~gnomon.optim.scale_by_curvature`; none for
``gd``/``sgd``: P = 1):

* Barzilai–Borwein steps: ``P → scale_by_bb()``; with a learning rate other than 1, a schedule, clip bounds or the
  λ_max bound the learning-rate vector goes first: ``scale_by_lr_vector(P, η, flip_sign=False) → scale_by_bb()``;
* fixed steps: ``scale_by_lr_vector(P, η, lr_min=, lr_max=, power_iters=)``;
* then momentum (``optax.trace``), and the whole wrapped in ``nonmonotone_backtracking`` with the backtracking
  safeguard.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from gnomon.curvature.estimate import METHODS as CURVATURE_METHODS
from gnomon.curvature.estimate import Curvature
from gnomon.objective.objective import Objective
from gnomon.optim.backtracking import nonmonotone_backtracking
from gnomon.optim.estimator import NEGATIVE, CurvatureEstimator
from gnomon.optim.program import jsonable
from gnomon.optim.step_sizes import scale_by_bb, scale_by_lr_vector
from gnomon.util.validate import fraction, positive_float, positive_int

SAFEGUARDS = ("auto", "lambda_max", "backtrack", "both", "none")
LINESEARCHES = ("backtracking", "zoom")
STEP_RULES = ("bb", "fixed")


class Rules(NamedTuple):
    step_rule: str
    bb: bool
    bound: bool
    backtrack: bool
    window: int
    base: Any  # learning rate or schedule; ∞ with the bound and no learning rate (η_0 = 1/λ_max)


def resolve_rules(method: str, safeguard: str, lr: Any, momentum: Any, step_rule: str | None, window: int) -> Rules:
    """Resolve ``step_rule=None`` and ``safeguard="auto"`` (:mod:`gnomon.optim.methods`)."""
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
    return Rules(step_rule, bb, bound, backtrack, window if bb else 1, base)


def assemble(precond: Any, rules: Rules, *, momentum: Any = None, nesterov: bool = False, objective: Objective,
             data: Any, key: Any, power_iters: int, lr_min: float | None = None, lr_max: float | None = None) -> Any:
    """The chain of a gradient method (module docstring): ``precond`` (None: P = 1) → step rule [→ momentum],
    wrapped in the backtracking safeguard when asked."""
    clip = lr_min is not None or lr_max is not None
    plain = not callable(rules.base) and rules.base == 1.0
    if rules.bb and plain and not (rules.bound or clip):
        core = scale_by_bb() if precond is None else optax.chain(precond, scale_by_bb())
    else:
        core = scale_by_lr_vector(precond, rules.base, lr_min=lr_min, lr_max=lr_max, objective=objective,
                                  power_iters=power_iters if rules.bound else None, data=data, key=key,
                                  flip_sign=not rules.bb)
        if rules.bb:
            core = optax.chain(core, scale_by_bb())
    if momentum is not None:
        core = optax.chain(core, optax.trace(decay=momentum, nesterov=nesterov))
    if rules.backtrack:
        core = nonmonotone_backtracking(core, window=rules.window)
    return core


def rules_info(cfg: Any, rules: Rules) -> dict:
    """The step rule and safeguards of ``cfg`` as recorded in ``trace.info``."""
    return {
        "method": cfg.name,
        "learning_rate": jsonable(cfg.learning_rate),
        "step_rule": rules.step_rule,
        "safeguard": cfg.safeguard,
        "lambda_max_bound": rules.bound,
        "backtracking": rules.backtrack,
        "window": rules.window if rules.backtrack else None,
        "power_iters": cfg.power_iters if rules.bound else None,
    }


# -------------------------------------------------------------------------------------------- the curvature
class Source(NamedTuple):
    """Where a method's curvature comes from."""

    estimator: CurvatureEstimator | None  # estimated at refreshes (and at θ_0 when neither given nor `start`)
    given: Any  # a given diagonal (numpy), passed to the program as an argument; None for none
    method: str
    info: dict
    start: Mapping[str, Any] | None = None  # estimate c at θ_0 on the host (Program.start_curvature)


def curvature_source(cfg: Any, obj: Objective, curvature: Any, data: Any, *, refreshes: bool) -> Source:
    """Where preconditioned_gd's / lbfgs's curvature comes from (host side, validated). A method name (or None,
    auto) is estimated at θ_0 on the host before the loop (:func:`gnomon.optim.estimator.curvature_at_start`,
    with its fallbacks) and passed to the program like a given diagonal; refreshes re-run the method inside."""
    if isinstance(curvature, str) and curvature == "identity":
        if refreshes:
            raise ValueError("refresh_every needs a curvature method to re-run, not 'identity'")
        return Source(None, None, "identity", {"method": "identity", "num_grad_evals": 0})
    if curvature is None or isinstance(curvature, str):
        est = cfg._estimator(obj, curvature, data)  # validates the method and options for this objective
        info = dict(est.describe)
        if refreshes:
            info["refresh_cost"] = est.cost
        return Source(est if refreshes else None, None, est.method, info, cfg._start_options(curvature))
    given = curvature if isinstance(curvature, Curvature) else _as_curvature(curvature)
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
        return Source(None, d, given.method, info)
    if given.method not in CURVATURE_METHODS or given.method == "ema_grad2":
        raise ValueError(f"refresh_every needs a curvature method to re-run; the given Curvature is {given.method!r}")
    est = cfg._estimator(obj, given.method, data)
    info["refresh_cost"] = est.cost
    return Source(est, d, given.method, info)


def _as_curvature(curvature: Any) -> Curvature:
    arr = np.asarray(curvature)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(
            f"curvature must be None, a method name {CURVATURE_METHODS}, a Curvature or a (D,) array, got {curvature!r}"
        )
    return Curvature(diag=arr)


# ------------------------------------------------------------------------------------------------- checks
def check_lr(lr: Any, required: bool = False) -> None:
    """A learning rate: a finite number > 0 or an optax schedule (None where the method has a default rule)."""
    if (lr is None and not required) or callable(lr):
        return
    try:
        positive_float(lr, "learning_rate")
    except ValueError:
        raise ValueError(f"learning_rate must be a positive number or an optax schedule, got {lr!r}") from None


def below_one(value: Any, name: str, hint: str = "") -> float:
    """``value`` as a float in [0, 1) (:func:`gnomon.util.validate.fraction`, closed, and below 1)."""
    try:
        v = fraction(value, name, closed=True)
    except ValueError:
        v = 1.0
    if not v < 1:
        raise ValueError(f"{name} must be in [0, 1){hint}, got {value!r}")
    return v


def non_negative(value: Any, name: str, hint: str = "") -> None:
    """``value`` (unless None) is a number ≥ 0."""
    if value is not None and (isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0)):
        raise ValueError(f"{name} must be a non-negative number{hint}, got {value!r}")


def check_common(cfg: Any) -> None:
    """safeguard, step_rule (gd/sgd), momentum, power_iters and window of a gradient method."""
    if cfg.safeguard not in SAFEGUARDS:
        raise ValueError(f"unknown safeguard {cfg.safeguard!r}; expected one of {SAFEGUARDS}")
    if cfg.name != "preconditioned_gd" and cfg.step_rule not in STEP_RULES:
        raise ValueError(f"step_rule must be one of {STEP_RULES}, got {cfg.step_rule!r}")
    if cfg.momentum is not None:
        below_one(cfg.momentum, "momentum")
    positive_int(cfg.power_iters, "power_iters")
    positive_int(cfg.window, "window")


def check_estimator_options(cfg: Any) -> None:
    """negative and floor of a method that estimates a curvature (the rest is checked when it is planned)."""
    if cfg.negative not in NEGATIVE:
        raise ValueError(f"negative must be one of {NEGATIVE}, got {cfg.negative!r}")
    if cfg.floor is not None:
        below_one(cfg.floor, "floor", " (a fraction of the median) or None (by method)")


def precision_note(theta: Any, *, stacklevel: int = 3) -> str | None:
    """Warn (and return the sentence) when θ0 is of lower precision than float64 while ``jax_enable_x64`` is on:
    the fit then runs in that precision — the user asked for float64 elsewhere, so a float32 array (often
    ``astype`` by habit, or from float32 data) is most likely an accident, and ``gn.sample`` refuses such a
    start. None otherwise (x64 off: float32 is JAX's default and nothing is said)."""
    dt = np.dtype(getattr(theta, "dtype", np.float64))
    if not np.issubdtype(dt, np.floating) or dt.itemsize >= 8:
        return None
    if jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
        return None
    note = (f"θ0 is {dt.name} while jax_enable_x64 is on: the fit runs in {dt.name} (about "
            f"{int(np.finfo(dt).precision)} significant digits — on a loss of many counts it stalls or wanders "
            f"short of the optimum), and gn.sample refuses a {dt.name} start under x64. Pass θ0 as float64 "
            "(jnp.asarray(θ0, jnp.float64), with float64 data) to fit in float64")
    warnings.warn(note, RuntimeWarning, stacklevel=stacklevel)
    return note
