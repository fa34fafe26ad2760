r"""From ``gn.optimize``'s method and options to an :class:`~gnomon.engines.loop.OptimizerSpec`.

Each spec carries a hashable key of every setting that shapes the compiled program (the loop's compile cache
key), a lazy ``build()`` and the JSON-able ``info`` recorded in the trace:

``adam``, ``rmsprop``
    optax's, default learning rate 1e-3.
``lbfgs``
    ``optax.lbfgs`` (zoom line search); the line-search evaluations are counted and its value and gradient at
    the accepted point are reused.
``gd`` with a learning rate (``safeguard`` ``"auto"``/``"none"``, no momentum)
    ``optax.sgd``: :math:`θ_{t+1} = θ_t - η ∇f(θ_t)`.
``gd``, ``sgd`` (momentum default 0.9), ``preconditioned_gd``
    the safeguarded transformation of :mod:`gnomon.engines.safeguarded_gd` with the step-size rules of
    :mod:`gnomon.engines.stepsize`; identity curvature for ``gd``/``sgd``, for ``preconditioned_gd`` a
    curvature diagonal from :mod:`gnomon.engines.curvature_choice` and the power p of its method
    (:func:`gnomon.curvature.precondition.default_power`).
``preconditioned_gd`` with ``curvature="ema_grad2"``
    :math:`θ_{t+1} = θ_t - η\, g_t / (\sqrt{\hat v_t} + \text{eps})`, :math:`v_t = β v_{t-1} + (1-β) g_t^2`
    bias-corrected (``optax.scale_by_rms``; power ½), default η = 1e-2, eps = 1e-8.
an optax ``GradientTransformation``
    run as given.
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from gnomon.curvature.precondition import block_scales, default_power
from gnomon.engines.curvature_choice import IDENTITY, choose_curvature
from gnomon.engines.loop import Built, OptimizerSpec
from gnomon.engines.safeguarded_gd import build_safeguarded
from gnomon.engines.stepsize import SAFEGUARDS, choose_step_rules
from gnomon.objective.objective import Objective

METHODS = ("gd", "preconditioned_gd", "adam", "rmsprop", "sgd", "lbfgs")


class MethodSpec(NamedTuple):
    """The loop's spec plus the JSON description of the curvature (``trace.info["curvature"]``; None
    without a curvature)."""

    spec: OptimizerSpec
    curvature_info: dict | None


def build_spec(obj: Objective, method: Any, theta_probe: Any, data_probe: Any, opts: dict) -> MethodSpec:
    """Validate ``method`` and ``opts`` (gn.optimize's options) and build its spec; ``theta_probe`` and
    ``data_probe`` (one member's start and data) plan the curvature estimator."""
    lr = opts["learning_rate"]
    _check_lr(lr)
    sg = opts["safeguard"]
    if sg not in SAFEGUARDS:
        raise ValueError(f"unknown safeguard {sg!r}; expected one of {SAFEGUARDS}")
    key_t = tuple(np.asarray(jax.random.key_data(opts["key"])).ravel().tolist())  # raw key: hashable
    is_optax = isinstance(method, (optax.GradientTransformation, optax.GradientTransformationExtraArgs))
    if not is_optax and (not isinstance(method, str) or method not in METHODS):
        raise ValueError(
            f"unknown optimizer method {method!r}; expected one of {METHODS} or an optax GradientTransformation"
        )
    if opts.get("refresh_every") is not None and method != "preconditioned_gd":
        name = "an optax transformation" if is_optax else repr(method)
        raise ValueError(f"refresh_every applies to preconditioned_gd, not {name}")
    if is_optax:
        return _optax_spec(method)
    if method in ("adam", "rmsprop"):
        return _adaptive_spec(method, lr)
    if method == "lbfgs":
        return _lbfgs_spec(lr, opts["memory_size"])
    return _gradient_descent_spec(obj, method, lr, sg, key_t, theta_probe, data_probe, opts)


def _optax_spec(tx: Any) -> MethodSpec:
    return MethodSpec(
        OptimizerSpec(
            name="optax",
            key=("optax", tx),
            build=lambda: (tx, None, None),
            info={"method": "optax", "transform": repr(type(tx).__name__)},
        ),
        None,
    )


def _adaptive_spec(method: str, lr: Any) -> MethodSpec:
    rate = 1e-3 if lr is None else lr
    fn = optax.adam if method == "adam" else optax.rmsprop
    info = {"method": method, "learning_rate": _jsonable_lr(rate)}

    def build():
        tx = fn(rate)
        return tx, (lambda st, t: rate(t) if callable(rate) else rate), None

    return MethodSpec(OptimizerSpec(method, (method, _hashable(rate)), build, info), None)


def _lbfgs_spec(lr: Any, mem: Any) -> MethodSpec:
    if isinstance(mem, bool) or not isinstance(mem, int) or mem < 1:
        raise ValueError(f"memory_size must be a positive int, got {mem!r}")
    info = {"method": "lbfgs", "memory_size": mem, "learning_rate": _jsonable_lr(lr), "linesearch": "zoom"}

    def build():
        tx = optax.lbfgs(learning_rate=lr, memory_size=mem)

        def extra(old, new):
            return optax.tree.get(new, "num_linesearch_steps")

        def reuse(state):
            return optax.tree.get(state, "value"), optax.tree.get(state, "grad")

        def lr_fn(state, t):
            return optax.tree.get(state, "learning_rate")

        return Built(tx, lr_fn, extra, None, reuse, None)

    return MethodSpec(OptimizerSpec("lbfgs", ("lbfgs", mem, _hashable(lr)), build, info), None)


def _plain_gd_spec(rate: Any) -> MethodSpec:
    info = {"method": "gd", "learning_rate": _jsonable_lr(rate)}

    def build():
        return optax.sgd(rate), (lambda st, t: rate(t) if callable(rate) else rate), None

    return MethodSpec(OptimizerSpec("gd", ("gd", _hashable(rate)), build, info), None)


def _gradient_descent_spec(
    obj: Objective, method: str, lr: Any, sg: str, key_t: tuple, theta_probe: Any, data_probe: Any, opts: dict
) -> MethodSpec:
    """gd / sgd / preconditioned_gd: the safeguarded transformation (identity curvature for gd/sgd)."""
    momentum = opts["momentum"]
    if method == "sgd" and momentum is None:
        momentum = 0.9
    if momentum is not None and not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    nesterov = bool(opts["nesterov"])
    if method == "gd" and lr is not None and sg in ("auto", "none") and momentum is None:
        return _plain_gd_spec(lr)  # plain gradient descent, exactly optax.sgd

    refresh_every = opts["refresh_every"]
    if refresh_every is not None and (
        isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1
    ):
        raise ValueError(f"refresh_every must be a positive int or None, got {refresh_every!r}")
    ema = opts["ema"]
    if not (isinstance(ema, (int, float)) and 0 <= ema < 1):
        raise ValueError(f"ema must be in [0, 1), got {ema!r}")
    power_iters = opts["power_iters"]
    if isinstance(power_iters, bool) or not isinstance(power_iters, int) or power_iters < 1:
        raise ValueError(f"power_iters must be a positive int, got {power_iters!r}")
    eps = opts["eps"]
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    step_size = opts["step_size"]
    if step_size not in (None, "fixed", "bb"):
        raise ValueError(f"step_size must be 'fixed', 'bb' or None (default by method), got {step_size!r}")
    window = opts["window"]
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")

    curvature_info = None
    if method == "preconditioned_gd":
        if isinstance(opts["curvature"], str) and opts["curvature"] == "ema_grad2":
            return _ema_grad2_spec(opts, lr)
        curv, cmethod, curvature_info = choose_curvature(
            obj, opts["curvature"], theta_probe, data_probe, opts, refreshes=refresh_every is not None
        )
        power = default_power(cmethod) if opts["power"] is None else opts["power"]
        if not (isinstance(power, (int, float)) and power > 0):
            raise ValueError(f"power must be a positive number, got {power!r}")
    else:
        if refresh_every is not None:
            raise ValueError(f"refresh_every applies to preconditioned_gd, not {method!r}")
        curv = IDENTITY
        power = 1.0
    rules = choose_step_rules(method, sg, learning_rate=lr, momentum=momentum, step_size=step_size, window=window)
    scales = block_scales(obj.dim, opts["layout"], opts["block_scale"])
    lr_min, lr_max = opts["lr_min"], opts["lr_max"]
    settings_key = (
        method,
        curv.source,
        curv.settings,
        _hashable(curv.given),
        curv.floor,
        curv.prior_precision,
        curv.negative,
        _hashable(rules.base_lr),
        float(power),
        float(eps),
        lr_min,
        lr_max,
        _hashable(scales),
        rules.bound,
        rules.backtrack,
        rules.bb,
        rules.window,
        refresh_every,
        float(ema),
        power_iters,
        momentum,
        nesterov,
        key_t,
    )
    info = {
        "method": method,
        "learning_rate": _jsonable_lr(lr),
        "step_size": rules.step_size,
        "safeguard": sg,
        "lambda_max_bound": rules.bound,
        "backtracking": rules.backtrack,
        "window": rules.window if rules.backtrack else None,
        "power_iters": power_iters if rules.bound else None,
    }
    if method == "preconditioned_gd":
        info.update(
            power=float(power),
            eps=float(eps),
            lr_min=lr_min,
            lr_max=lr_max,
            refresh_every=refresh_every,
            ema=float(ema),
            curvature_fixed=refresh_every is None,
            block_scale=dict(opts["block_scale"]) if opts["block_scale"] else None,
        )
    if momentum is not None:
        info.update(momentum=float(momentum), nesterov=nesterov)

    def build():
        return build_safeguarded(
            obj,
            curv,
            rules,
            power=float(power),
            eps=float(eps),
            lr_min=lr_min,
            lr_max=lr_max,
            scales=scales,
            refresh_every=refresh_every,
            ema=float(ema),
            power_iters=power_iters,
            momentum=momentum,
            nesterov=nesterov,
            key_data=key_t,
        )

    return MethodSpec(OptimizerSpec(method, settings_key, build, info), curvature_info)


def _ema_grad2_spec(opts: dict, lr: Any) -> MethodSpec:
    beta = opts["beta"]
    if not (isinstance(beta, (int, float)) and 0 <= beta < 1):
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    rate = 1e-2 if lr is None else lr
    eps = opts["eps"] or 1e-8
    info = {"method": "preconditioned_gd", "learning_rate": _jsonable_lr(rate)}
    cinfo = {
        "method": "ema_grad2",
        "beta": float(beta),
        "eps": float(eps),
        "power": 0.5,
        "init": "zeros, bias-corrected (first step: g0²)",
        "num_grad_evals": 0,
        "updated": "every step",
    }

    def build():
        tx = optax.chain(
            optax.scale_by_rms(decay=beta, eps=eps, eps_in_sqrt=False, bias_correction=True),
            optax.scale_by_learning_rate(rate),
        )
        return tx, (lambda st, t: rate(t) if callable(rate) else rate), None

    return MethodSpec(
        OptimizerSpec("preconditioned_gd", ("ema_grad2", float(beta), float(eps), _hashable(rate)), build, info),
        cinfo,
    )


def _hashable(x: Any) -> Any:
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    if callable(x):
        return ("callable", x)
    a = np.asarray(x)
    return ("array", a.shape, str(a.dtype), hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())


def _check_lr(lr: Any) -> None:
    if lr is None or callable(lr):
        return
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"learning_rate must be a positive number or an optax schedule, got {lr!r}")


def _jsonable_lr(lr: Any) -> Any:
    if lr is None or isinstance(lr, (int, float)):
        return lr
    return "schedule"
