r"""`gn.optimize` / `gn.optimize_batch`: gradient-based optimizers over an :class:`~gnomon.Objective`.

Every method runs in the shared compiled loop (:mod:`gnomon.engines.loop`): chunks of a
``lax.while_loop``, a compile cache per (objective, settings), vmap for batches, recording
``θ_t, loss(θ_t), |∇loss(θ_t)|, |θ_{t+1}−θ_t|`` and the (scalar) learning rate of each row.

Methods
-------
``gd``
    :math:`θ_{t+1} = θ_t - η ∇f(θ_t)`. Without ``learning_rate``: :math:`η = 1/λ_\max(∇^2 f(θ_0))`
    from power iteration on HVPs, with the loss-increase backtracking safeguard.
``preconditioned_gd``
    :math:`θ_{t+1} = θ_t - η_t\, P ⊙ ∇f(θ_t)`, :math:`P = c^{-p}` from a curvature diagonal c (power p by
    method, see :mod:`gnomon.curvature.precondition`), estimated at θ_0 inside the compiled program and
    optionally refreshed every K steps with EMA smoothing. Default curvature: Gauss–Newton when the
    objective has residuals, the exact diagonal for D ≤ 16, variance-reduced Hutchinson (16 probes, 32
    gradient evaluations) otherwise.
    Step size (``step_size=``): ``"bb"`` (the default without ``learning_rate``) starts with η_0 = 1 (the
    diagonal Newton step) and then takes Barzilai–Borwein steps in the metric :math:`P^{-1}`,
    :math:`η_t = s^T P^{-1} s / s^T y` (s, y the last accepted step and gradient change) — a scalar
    secant estimate of the remaining curvature that costs no extra evaluations; ``"fixed"`` (the default
    when a ``learning_rate`` is given, or momentum) keeps
    :math:`η = \min(\text{learning\_rate}, 1/λ_\max(P^{1/2} H P^{1/2}))` (``safeguard="none"``: exactly
    ``learning_rate``, the classical per-index learning-rate model).
    ``curvature="ema_grad2"`` is the optimizer-side EMA of g² (power ½, ``optax.scale_by_rms``).
``adam``, ``rmsprop``
    optax's, default learning rate 1e-3.
``sgd``
    optax's with ``momentum`` (default 0.9) and ``nesterov``; without ``learning_rate``,
    :math:`η = 1/λ_\max` as for ``gd``.
``lbfgs``
    ``optax.lbfgs`` (zoom line search); the line search's evaluations are counted and its value and
    gradient at the accepted point are reused (so each step costs its line-search evaluations only).
an optax ``GradientTransformation``
    run as given.

Safeguards (``safeguard=``): ``"lambda_max"`` bounds η by :math:`1/λ_\max` of the (preconditioned)
Hessian at θ_0 and at each refresh (power iteration, 2 gradient evaluations per iteration, counted);
``"backtrack"`` rejects a point whose loss exceeds the largest of the last M accepted losses plus an
Armijo term (M = ``window``: 10 for BB steps, 1 — monotone — for fixed steps); the next update returns
along the step to the minimiser of the quadratic through f, its slope and the rejected value (clipped
to ½ … ⅒ of the step) and shrinks η accordingly. This costs nothing extra: the loop evaluates the loss
at every point anyway (a rejected point stays in the trace as its own row). ``"both"``; ``"none"``;
``"auto"``: backtracking for ``preconditioned_gd`` (plus the λ_max bound with fixed steps) and for
``gd``/``sgd`` without a learning rate (with the λ_max bound), nothing otherwise. A step to a non-finite
loss still ends the run.

Curvature artifacts: ``trace.extras["curvature"]`` (the diagonal used at θ_0) and
``trace.extras["lr_vec"]`` (the learning-rate vector at θ_0) are numpy arrays; the method, its parameters,
cost and safeguard counts are in ``trace.info["curvature"]`` (→ meta.json). Save them with
:func:`precond_arrays`: ``gn.save_run(dir, trace, extra_arrays=precond_arrays(trace))``.

Implementation: :mod:`gnomon.engines.methods` turns a method and its options into the loop's
``OptimizerSpec``; :mod:`gnomon.engines.curvature_choice` picks the curvature diagonal;
:mod:`gnomon.engines.stepsize` holds the step-size rules and safeguards (with their math);
:mod:`gnomon.engines.safeguarded_gd` is the transformation behind ``gd``/``sgd``/``preconditioned_gd``. This
module validates the inputs, runs the loop and turns the final optimizer state into ``info``/``extras``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.engines.loop import run_loop
from gnomon.engines.methods import MethodSpec, build_spec
from gnomon.engines.simple_gd import as_objective
from gnomon.objective.objective import Objective
from gnomon.trace.trace import Trace

_UNSET = object()
_DEFAULTS = dict(
    learning_rate=None,
    curvature=None,
    key=None,
    refresh_every=None,
    momentum=None,
    nesterov=False,
    power=None,
    eps=0.0,
    lr_min=None,
    lr_max=None,
    block_scale=None,
    safeguard="auto",
    num_probes=None,
    hutchinson_mode="variance_reduced",
    floor=1e-6,
    prior_precision=None,
    negative="abs",
    ema=0.0,
    beta=0.999,
    memory_size=10,
    power_iters=20,
    batch_size=None,
    layout=None,
    step_size=None,
    window=10,
)


def optimize(
    obj: Objective | Callable,
    theta0: Any,
    method: Any = "gd",
    *,
    num_steps: int = 1000,
    learning_rate: float | Callable | None = None,
    curvature: Any = None,
    key: Any = None,
    tol: float | None = None,
    ftol: float | None = None,
    record_every: int = 1,
    refresh_every: int | None = None,
    progress: bool | None = None,
    data: Any = _UNSET,
    momentum: float | None = None,
    nesterov: bool = False,
    power: float | None = None,
    eps: float = 0.0,
    lr_min: float | None = None,
    lr_max: float | None = None,
    block_scale: dict | None = None,
    safeguard: str = "auto",
    num_probes: int | None = None,
    hutchinson_mode: str = "variance_reduced",
    floor: float = 1e-6,
    prior_precision: Any = None,
    negative: str = "abs",
    ema: float = 0.0,
    beta: float = 0.999,
    memory_size: int = 10,
    power_iters: int = 20,
    batch_size: int | None = None,
    step_size: str | None = None,
    window: int = 10,
) -> Trace:
    """Minimise ``obj.loss`` from ``theta0`` (see the module docstring for methods and safeguards).

    Args:
      obj: a :class:`gnomon.Objective` or a loss function of flat θ.
      theta0: ``(D,)`` start, or a previous optimization :class:`Trace` to continue from its final point
        (the result is the joined trace, :meth:`Trace.concatenate`).
      method: ``"gd"``, ``"preconditioned_gd"``, ``"adam"``, ``"rmsprop"``, ``"sgd"``, ``"lbfgs"`` or an optax
        ``GradientTransformation``.
      num_steps: maximum number of updates.
      learning_rate: float or optax schedule; for ``preconditioned_gd`` the base_lr of a fixed step (bounded
        by 1/λ_max unless ``safeguard="none"``; without it: BB steps from η_0 = 1, the diagonal Newton step);
        for ``gd``/``sgd`` default 1/λ_max of the Hessian at θ0.
      curvature: for ``preconditioned_gd``: None (auto), a method name, a :class:`Curvature` or a (D,) array.
      key: PRNG key (Hutchinson probes, power iteration); default ``jax.random.key(0)``.
      tol: stop when |∇loss| ≤ tol; ftol: stop when the relative loss change ≤ ftol.
      record_every: keep every k-th row (the final point is always kept).
      refresh_every: re-estimate the curvature every K steps (``ema`` smooths old and new).
      progress: progress bar between chunks (default: on a terminal for runs ≥ 2,000 steps).
      data: data for objectives taking ``(θ, data)`` (default the objective's bound data).
      momentum, nesterov: heavy-ball/Nesterov momentum (``sgd``; also ``gd`` and ``preconditioned_gd``).
      power, eps, lr_min, lr_max, block_scale: learning-rate vector
        ``clip(η · s · (c + eps)^(-power), lr_min, lr_max)`` (:func:`gnomon.learning_rates`); ``block_scale``
        maps layout parameter or group names to multipliers s.
      safeguard: ``"auto"``, ``"lambda_max"``, ``"backtrack"``, ``"both"`` or ``"none"``.
      num_probes, hutchinson_mode, floor, prior_precision, negative, batch_size: curvature estimation
        (:func:`gnomon.estimate_curvature`; here Hutchinson defaults to 16 probes).
      beta: EMA decay of ``curvature="ema_grad2"``.
      memory_size: L-BFGS memory.
      power_iters: power iterations for the λ_max bound (2 gradient evaluations each).
      step_size: ``"bb"`` (Barzilai–Borwein; default for ``preconditioned_gd`` without a learning_rate) or
        ``"fixed"`` (default for ``gd``/``sgd``, and whenever a learning_rate or momentum is given).
      window: M of the nonmonotone backtracking test with BB steps.

    Returns:
      an optimization :class:`Trace` (``info`` holds the settings and, for preconditioned GD, the
      curvature description under ``"curvature"``; ``extras`` the curvature and lr_vec arrays).
    """
    previous = theta0 if isinstance(theta0, Trace) else None
    if previous is not None:
        if previous.kind != "optimization" or previous.is_batched:
            raise ValueError(
                "optimize continues from a single optimization Trace; got a "
                f"{'batched ' if previous.is_batched else ''}{previous.kind} trace"
            )
        start = previous.coords_in(getattr(obj, "thetamap", None), "final")
    else:
        start = theta0
    start = jnp.asarray(start)
    if start.ndim != 1:
        raise ValueError(f"θ0 must be a flat vector (D,), got shape {tuple(start.shape)}")
    obj = as_objective(obj, int(start.shape[0]))
    if obj.dim != start.shape[0]:
        raise ValueError(f"θ0 has length {start.shape[0]} but the objective has dim {obj.dim}")
    d = obj.data if data is _UNSET else data
    opts = _opts(locals())
    st = build_spec(obj, method, start, d, opts)
    trace = run_loop(
        obj,
        start,
        st.spec,
        num_steps=num_steps,
        record_every=record_every,
        gtol=tol,
        ftol=ftol,
        data=d,
        progress=progress,
    )
    trace = _finish(trace, st, batched=False)
    return previous.concatenate(trace) if previous is not None else trace


def optimize_batch(obj: Objective | Callable, theta0s: Any, data: Any = None, **kwargs: Any) -> Trace:
    """B fits in one compiled program (vmap): ``theta0s`` is ``(B, D)``; ``data`` (optional) is batched on
    its leading axis (objectives taking ``(θ, data)``); without it the objective's own data is shared.
    Other arguments as :func:`optimize`. Returns a batched Trace ``(B, T, D)`` (shorter members padded
    with their final row; ``extras["num_rows"]`` gives their lengths).

    Note: under vmap a curvature refresh (``refresh_every``) is evaluated at every step and selected, so it
    costs its full price each step in time (not in the counted gradient evaluations); prefer fixed curvature.
    """
    if isinstance(theta0s, Trace):
        raise ValueError("optimize_batch starts from a (B, D) array; continue single fits with optimize")
    th = jnp.asarray(theta0s)
    if th.ndim != 2:
        raise ValueError(f"theta0s must be (B, D), got shape {tuple(th.shape)}")
    b = int(th.shape[0])
    obj = as_objective(obj, int(th.shape[1]))
    if obj.dim != th.shape[1]:
        raise ValueError(f"theta0s have dimension {th.shape[1]} but the objective has dim {obj.dim}")
    if data is None:
        if obj.data is not None:
            data = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (b, *jnp.shape(a))), obj.data)
    else:
        if not obj.takes_data:
            raise ValueError(
                "data= needs an objective whose functions take (θ, data) (build it with takes_data=True or data=)"
            )
        leading = {int(jnp.shape(a)[0]) if jnp.ndim(a) else -1 for a in jax.tree.leaves(data)}
        if leading != {b}:
            raise ValueError(f"every data leaf must have leading axis B={b}; got leading sizes {sorted(leading)}")
    probe_data = None if data is None else jax.tree.map(lambda a: a[0], data)
    opts = _opts({**_DEFAULTS, **kwargs, "obj": obj})
    unknown = set(kwargs) - set(_DEFAULTS) - {"num_steps", "record_every", "tol", "ftol", "progress", "method"}
    if unknown:
        raise ValueError(f"optimize_batch got unknown arguments {sorted(unknown)}")
    method = kwargs.get("method", "gd")
    st = build_spec(obj, method, th[0], probe_data, opts)
    trace = run_loop(
        obj,
        th,
        st.spec,
        num_steps=kwargs.get("num_steps", 1000),
        record_every=kwargs.get("record_every", 1),
        gtol=kwargs.get("tol"),
        ftol=kwargs.get("ftol"),
        data=data,
        batched=True,
        progress=kwargs.get("progress"),
    )
    return _finish(trace, st, batched=True)


def _opts(values: dict) -> dict:
    opts = {k: values.get(k, v) for k, v in _DEFAULTS.items()}
    if opts["key"] is None:
        opts["key"] = jax.random.key(0)
    obj = values.get("obj")
    if opts["layout"] is None and isinstance(obj, Objective):
        opts["layout"] = obj.base_layout if obj.thetamap is None else None
    if opts["negative"] not in ("abs", "floor"):
        raise ValueError(f"negative must be 'abs' or 'floor', got {opts['negative']!r}")
    if not (isinstance(opts["floor"], (int, float)) and 0 <= opts["floor"] < 1):
        raise ValueError(f"floor must be a fraction of the median in [0, 1), got {opts['floor']!r}")
    for name in ("lr_min", "lr_max"):
        v = opts[name]
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"{name} must be a non-negative number or None, got {v!r}")
    return opts


def _finish(trace: Trace, st: MethodSpec, *, batched: bool) -> Trace:
    info = dict(trace.info)
    extras = dict(trace.extras)
    if st.curvature_info is not None:
        cinfo = dict(st.curvature_info)
        if "curvature" in extras and not batched:
            for k in ("num_nonfinite", "num_negative", "num_floored"):
                if cinfo.get("source") != "given":
                    cinfo[k] = int(extras[k])
        info["curvature"] = cinfo
    if "lambda_max" in extras:
        lam = np.asarray(extras.pop("lambda_max"))
        base = np.asarray(extras.pop("base_lr_used"))
        nb = np.asarray(extras.pop("num_backtracks"))
        fac = np.asarray(extras.pop("backtrack_factor"))
        if not batched:
            info["lambda_max"] = None if not np.isfinite(lam) else float(lam)
            info["base_lr_used"] = float(base)
            info["num_backtracks"] = int(nb)
            info["backtrack_factor"] = float(fac)
        else:
            extras.update(lambda_max=lam, base_lr_used=base, num_backtracks=nb)
        for k in ("num_nonfinite", "num_negative", "num_floored"):
            extras.pop(k, None)
        if st.curvature_info is None:  # gd/sgd: the identity "curvature" is not an artifact
            for k in ("curvature", "lr_vec", "curvature_final", "lr_vec_final"):
                extras.pop(k, None)
        elif st.curvature_info.get("method") is not None and info.get("refresh_every") is None:
            extras.pop("curvature_final", None)
            extras.pop("lr_vec_final", None)
    extras = {k: np.asarray(v) if not isinstance(v, (str, int, float, bool)) else v for k, v in extras.items()}
    return replace(trace, info=info, extras=extras)


def precond_arrays(trace: Trace) -> dict[str, dict[str, np.ndarray]]:
    """``extra_arrays`` for :func:`gnomon.save_run`:
    ``{"curvature": {"diag": ...}, "precond": {"lr_vec": ...}}``
    from a preconditioned-GD trace (refreshed runs add the final ones); ``{}`` when there are none."""
    ex = trace.extras
    out: dict[str, dict[str, np.ndarray]] = {}
    if "curvature" in ex:
        out["curvature"] = {"diag": np.asarray(ex["curvature"])}
        if "curvature_final" in ex:
            out["curvature"]["diag_final"] = np.asarray(ex["curvature_final"])
    if "lr_vec" in ex:
        out["precond"] = {"lr_vec": np.asarray(ex["lr_vec"])}
        if "lr_vec_final" in ex:
            out["precond"]["lr_vec_final"] = np.asarray(ex["lr_vec_final"])
    return out
