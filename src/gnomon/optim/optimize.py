r"""`gn.optimize` / `gn.optimize_batch`: gradient-based optimizers over an :class:`~gnomon.Objective`.

The default method is ``"lbfgs"`` (:data:`DEFAULT_METHOD`). A method is a string shorthand (``"gd"``,
``"preconditioned_gd"``, ``"adam"``, ``"rmsprop"``, ``"sgd"``, ``"lbfgs"``), a configuration object of
:mod:`gnomon.optim` (``gn.optim.preconditioned_gd(curvature=...)``; the methods, their defaults and safeguards
are documented there) or any optax transformation (including chains of :mod:`gnomon.optim.transforms` pieces).
Options not named here (``momentum``, ``memory_size``, ...) are forwarded to the method's factory; an option the
method does not take is an error naming the methods it belongs to.

Every method runs in the shared compiled loop (:mod:`gnomon.optim.loop`). This module validates the inputs,
turns the method into its program, runs the loop and turns the final optimizer state into the typed
:class:`~gnomon.optim.readout.OptimizerReport` recorded in ``info``/``extras``:

* ``trace.info["curvature"]``: the curvature's method, how it was chosen, cost and cleaning counts;
  ``info["lambda_max"]``, ``info["base_lr_used"]``, ``info["num_backtracks"]``, ``info["backtrack_factor"]``;
* ``trace.extras["curvature"]`` (the diagonal at θ_0) and ``trace.extras["lr_vec"]`` (the learning-rate
  vector of the first update; ``*_final`` too when refreshed) — save them with :func:`precond_arrays`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.curvature.choice import forward_mode_unsupported
from gnomon.objective.checks import check_batch_data, check_finite_data
from gnomon.objective.goodness import available as has_noise_model
from gnomon.objective.goodness import goodness_of_fit, goodness_of_fit_batch
from gnomon.objective.objective import Objective
from gnomon.optim import runoff as runoff_test
from gnomon.optim.estimator import EXACT_MAX_DIM, curvature_at_start
from gnomon.optim.loop import estimate_start, prepare, run_loop
from gnomon.optim.methods import Program, make_method
from gnomon.optim.readout import OptimizerReport, report
from gnomon.optim.rules import precision_note
from gnomon.optim.simple_gd import as_objective
from gnomon.optim.start_estimate import in_loop_link
from gnomon.optim.verdict import review
from gnomon.trace.trace import Trace
from gnomon.util.validate import as_key

_UNSET = object()
# The default method (issue 22): L-BFGS preconditioned by the curvature diagonal at θ0 — the fewest gradient
# evaluations or within 30 % of them on every target of benchmarks/bench_optimizers.py --defaults (numpyro models,
# a badly scaled logistic regression, ill-conditioned quadratics, a dLux binary), and the only candidate that
# converges on a rotated, ill-conditioned problem; plain gd stalled on all but one.
DEFAULT_METHOD = "lbfgs"


def optimize(
    obj: Objective | Callable,
    theta0: Any,
    method: Any = DEFAULT_METHOD,
    *,
    num_steps: int = 1000,
    learning_rate: float | Callable | None = None,
    curvature: Any = None,
    key: Any = None,
    tol: float | None = None,
    ftol: float | None = None,
    record_every: int = 1,
    data: Any = _UNSET,
    progress: bool | None = None,
    channels: str | tuple[str, ...] | None = None,
    runoff: bool | None = None,
    **method_options: Any,
) -> Trace:
    """Minimise ``obj.loss`` from ``theta0``.

    Args:
      obj: a :class:`gnomon.Objective` or a loss function of flat θ.
      theta0: ``(D,)`` start, or a previous optimization :class:`Trace` to continue from its final point
        (the result is the joined trace, :meth:`Trace.concatenate`).
      method: a name, a :mod:`gnomon.optim` method configuration or an optax ``GradientTransformation``;
        default ``"lbfgs"`` (:data:`DEFAULT_METHOD`: preconditioned by the curvature diagonal at θ0 — the one
        rule of :mod:`gnomon.curvature.choice` — with a backtracking line search).
      num_steps: maximum number of updates.
      learning_rate: the method's learning rate (float or optax schedule; None: the method's default).
      curvature: for ``preconditioned_gd`` and ``lbfgs``: None (auto), a method name, a :class:`Curvature`
        or a (D,) array.
      key: PRNG key or int seed (Hutchinson probes, power iteration); default ``jax.random.key(0)``.
      tol: stop when |∇loss| ≤ tol; ftol: stop when the relative loss change ≤ ftol.
      record_every: keep every k-th row (the final point is always kept).
      data: data for objectives taking ``(θ, data)`` (default the objective's bound data).
      progress: progress bar between chunks (default: on a terminal for runs ≥ 2,000 steps).
      channels: per-step diagnostics to record besides θ and the loss: ``"all"`` or a subset of
        ``("grad_norm", "step_norm", "learning_rate", "accepted")``; default: the free ones (learning rate,
        accept flags, and the gradient norm when ``tol`` is set). ``info["final_grad_norm"]`` is always there.
      runoff: stop (status code ``ran_off``) when the loss keeps falling at a steady rate along one coordinate —
        a density without a mode within reach (:mod:`gnomon.optim.runoff`); None (default): on for objectives
        built from a log density (``from_log_prob``, ``from_log_density``, ``from_numpyro``) under a method that
        chooses its own step lengths (``lbfgs``, ``preconditioned_gd``, ``gd`` without a learning rate).
      **method_options: the method's other options (:mod:`gnomon.optim.methods`), e.g. ``momentum``,
        ``step_rule``, ``safeguard``, ``refresh_every``, ``memory_size``, ``num_probes``.

    Returns:
      an optimization :class:`Trace`; ``status`` is a sentence and ``info["status_code"]`` its
      :class:`~gnomon.optim.status.StatusCode`; ``info`` holds the settings, ``compile_s``/``run_s``, for
      curvature methods ``info["curvature"]`` and for likelihood and residual objectives
      ``info["goodness_of_fit"]``; ``extras`` the curvature and lr_vec arrays.
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
    try:
        start = jnp.asarray(start)
    except (TypeError, ValueError):
        raise ValueError(f"θ0 must be a flat vector (D,) of numbers (named values: layout.pack(...)), got "
                         f"{type(start).__name__}") from None
    if start.ndim != 1:
        raise ValueError(f"θ0 must be a flat vector (D,), got shape {tuple(start.shape)}")
    bad = ~np.isfinite(np.asarray(start))
    if bad.any():
        raise ValueError(f"θ0 has non-finite entries at indices {np.flatnonzero(bad)[:5].tolist()}: "
                         f"{np.asarray(start)[bad][:5].tolist()}")
    precision = precision_note(start)
    obj = as_objective(obj, int(start.shape[0]))
    if data is not _UNSET and obj.takes_data:  # per-call data checked like bound data before compiling
        if obj.likelihood is not None:
            obj.with_data(data)  # finite, the predicted shape, inside the family
        else:
            check_finite_data(data, "data")
    d = obj.data if data is _UNSET else data
    key = _as_key(key)
    program = _program(obj, method, start, d, learning_rate, curvature, method_options)
    loop_args = dict(num_steps=num_steps, record_every=record_every, tol=tol, ftol=ftol, data=d, key=key,
                     progress=progress, channels=channels, runoff=runoff_test.enabled(obj, runoff, program),
                     output=has_noise_model(obj))
    loop_args["start_curvature"] = _in_loop(obj, program, start, d, loop_args)
    raw, spent = _start_in_loop(obj, start, program, loop_args)
    program = _with_start_curvature(obj, program, [start], [None if data is _UNSET else d], key, method,
                                    learning_rate, curvature, method_options, batched=False,
                                    first_raw=None if raw is None else raw[None], spent_s=spent)
    result = run_loop(obj, start, program, **loop_args)
    trace = _finish(result.trace, program, report(result.state), batched=False)
    trace = review(trace, result.probe, obj, _diag_of(program), tol=tol, learning_rate=learning_rate)
    trace = previous.concatenate(trace) if previous is not None else trace
    if precision is not None:
        trace = replace(trace, info={**trace.info, "precision_note": precision})
    return _record_outputs(obj, trace, d, result.output, batched=False)


def optimize_batch(
    obj: Objective | Callable,
    theta0s: Any,
    method: Any = DEFAULT_METHOD,
    *,
    num_steps: int = 1000,
    learning_rate: float | Callable | None = None,
    curvature: Any = None,
    key: Any = None,
    tol: float | None = None,
    ftol: float | None = None,
    record_every: int = 1,
    data: Any = None,
    progress: bool | None = None,
    channels: str | tuple[str, ...] | None = None,
    runoff: bool | None = None,
    **method_options: Any,
) -> Trace:
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
    precision = precision_note(th)
    obj = as_objective(obj, int(th.shape[1]))
    if data is None:
        if obj.data is not None:
            data = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (b, *jnp.shape(a))), obj.data)
    else:
        if not obj.takes_data:
            raise ValueError(
                "data= needs an objective whose functions take (θ, data) (build it with takes_data=True or data=)"
            )
        check_batch_data(obj, data, b)  # finite, shape and family domain per member, naming the member
    probe = None if data is None else jax.tree.map(lambda a: a[0], data)
    key = _as_key(key)
    program = _program(obj, method, th[0], probe, learning_rate, curvature, method_options)
    loop_args = dict(num_steps=num_steps, record_every=record_every, tol=tol, ftol=ftol, data=data, key=key,
                     batched=True, progress=progress, channels=channels, output=has_noise_model(obj),
                     runoff=runoff_test.enabled(obj, runoff, program))
    if program.start_curvature is not None:
        loop_args["start_curvature"] = _in_loop(obj, program, th[0], probe, loop_args)
        raw, spent = _start_in_loop(obj, th, program, loop_args)
        host = None if data is None else jax.device_get(data)
        datas = [None if host is None else jax.tree.map(lambda a, i=i: a[i], host) for i in range(b)]
        program = _with_start_curvature(obj, program, np.asarray(th), datas, key, method, learning_rate,
                                        curvature, method_options, batched=True, first_raw=raw, spent_s=spent)
    elif program.arrays is not None:  # a given diagonal: one row per member
        program = program._replace(arrays=np.broadcast_to(np.asarray(program.arrays), (b, *np.shape(program.arrays))))
    result = run_loop(obj, th, program, **loop_args)
    trace = _finish(result.trace, program, report(result.state, batched=True), batched=True)
    trace = review(trace, result.probe, obj, _diag_of(program), tol=tol, learning_rate=learning_rate)
    if precision is not None:
        trace = replace(trace, info={**trace.info, "precision_note": precision})
    return _record_outputs(obj, trace, data, result.output, batched=True)


def _program(obj: Objective, method: Any, theta: Any, data: Any, learning_rate: Any, curvature: Any,
             options: dict) -> Program:
    """The method's :class:`Program`, planned on each call (a Program closes over the objective, so no cache
    keeps one; what planning traces — residual counts — is cached in ``gnomon.util.programs``)."""
    if isinstance(method, (optax.GradientTransformation, optax.GradientTransformationExtraArgs)):
        given = {k: v for k, v in dict(options, learning_rate=learning_rate, curvature=curvature).items()
                 if v is not None}
        if given:
            raise ValueError(
                f"options {sorted(given)} do not apply to a given optax transformation; set them in the "
                "transformation itself"
            )
        return Program("optax", ("optax", method), lambda data, key, arrays: method, None,
                       {"method": "optax", "transform": type(method).__name__})
    cfg = make_method(method, learning_rate=learning_rate, curvature=curvature, **options)
    return cfg.program(obj, theta, data)


def _in_loop(obj: Objective, program: Program, theta: Any, data: Any, loop_args: dict) -> str | None:
    """The start curvature's first link when the loop's own program can estimate it (one compiled copy of the model
    instead of two: :mod:`gnomon.optim.start_estimate`), else None — also where the transformation's ``init``
    evaluates the model (the λ_max bound's power iterations), which the estimating call would run once more."""
    if (program.info or {}).get("lambda_max_bound"):
        return None
    return in_loop_link(obj, program.start_curvature, theta, data, output=loop_args["output"],
                        zoom=(program.info or {}).get("linesearch") == "zoom", exact_max_dim=EXACT_MAX_DIM)


def _start_in_loop(obj: Objective, theta: Any, program: Program, loop_args: dict) -> tuple[Any, float]:
    """``(raw diagonal(s) at θ_0 or None, seconds)``: from the loop's own chunk where ``loop_args`` says it can
    (the compile waited for counts here), else None after starting the loop's compile in the background, which
    the host's own estimate then overlaps."""
    if program.start_curvature is None:
        return None, 0.0
    placeholder = program._replace(arrays=np.ones_like(_placeholder(theta)))
    t0 = time.perf_counter()
    prepare(obj, theta, placeholder, **loop_args)  # lowered here, compiling in background threads from now on
    if loop_args.get("start_curvature") is None:
        return None, 0.0
    try:
        raw = estimate_start(obj, theta, placeholder, **loop_args)
    except TypeError as exc:  # a model without JVPs (jax.custom_vjp): the host's chain says so and falls back
        if not forward_mode_unsupported(exc):
            raise
        loop_args["start_curvature"] = None
        prepare(obj, theta, placeholder, **loop_args)
        return None, time.perf_counter() - t0
    return raw, time.perf_counter() - t0


def _with_start_curvature(obj: Objective, program: Program, thetas: Any, datas: list, key: Any, method: Any,
                          learning_rate: Any, curvature: Any, options: dict, *, batched: bool,
                          first_raw: Any = None, spent_s: float = 0.0) -> Program:
    """``program`` with its curvature at θ_0 chosen on the host (:func:`curvature_at_start`: the auto rule and
    the fallback chain; ``first_raw``: the first link's raw diagonals (B, D) from the loop's own program, which
    took ``spent_s``) and passed as its ``arrays``; a refreshing program whose method fell back is planned again
    for the method used."""
    spec = program.start_curvature
    if spec is None:
        return program
    t0 = time.perf_counter()
    sc = curvature_at_start(obj, spec["method"], thetas, datas, key=key, stacklevel=4, first_raw=first_raw,
                            **{k: v for k, v in spec.items() if k != "method"})
    seconds = time.perf_counter() - t0 + spent_s
    refresh = program.info.get("refresh_every")
    planned = (program.curvature_info or {}).get("method")
    if refresh and sc.method != planned:
        cfg = make_method(method, learning_rate=learning_rate, curvature=curvature, **options)
        replan = {"curvature": sc.method} if sc.method != "identity" else {"curvature": "identity",
                                                                         "refresh_every": None}
        program = dataclasses.replace(cfg, **replan).program(obj, thetas[0], datas[0])
    info = dict(program.info)
    if info.get("curvature") is not None:  # lbfgs names its curvature's method in its own info
        info["curvature"] = sc.method
    cinfo = {**(program.curvature_info or {}), **sc.info, "estimate_s": seconds}
    if refresh:
        cinfo["refresh_cost"] = (program.curvature_info or {}).get("refresh_cost")
    dtype = _placeholder(np.asarray(thetas[0])).dtype
    diag = (sc.diag if batched else sc.diag[0]).astype(dtype)
    return program._replace(arrays=diag, info=info, curvature_info=cinfo, start_curvature=None, start_cost=sc.cost)


def _placeholder(theta: Any) -> np.ndarray:
    """Zeros shaped and typed as the curvature diagonal a program will get for starts ``theta``."""
    dt = np.asarray(theta).dtype
    return np.zeros(np.shape(theta), dt if np.issubdtype(dt, np.floating) else jnp.result_type(float))


def _diag_of(program: Program) -> Any:
    """The curvature diagonal a preconditioned method used at θ_0 ((D,) or (B, D)), or None."""
    if program.curvature_info is None or program.arrays is None:
        return None
    return np.asarray(program.arrays)


def _as_key(key: Any) -> Any:
    return as_key(key, optional=True)  # None: jax.random.key(0)


def _finish(trace: Trace, program: Program, rep: OptimizerReport, *, batched: bool) -> Trace:
    """info/extras of the trace from the program's description and the typed report."""
    info = dict(trace.info)
    extras = dict(trace.extras)
    if program.curvature_info is not None:
        info["curvature"] = dict(program.curvature_info)
    if program.start_cost:  # the estimate at θ0 ran before the loop: its cost and time belong to the run
        seconds = float(program.curvature_info.get("estimate_s", 0.0))
        info["curvature_s"] = seconds
        trace = replace(trace, num_grad_evals=trace.num_grad_evals + program.start_cost,
                        runtime_s=trace.runtime_s + seconds)
    if program.curvature_info is not None or program.name == "optax":  # gd/sgd: P = 1 is not an artifact
        for name in ("curvature", "lr_vec", "curvature_final", "lr_vec_final"):
            v = getattr(rep, name)
            if v is not None:
                extras[name] = np.asarray(v)
        if info.get("refresh_every") is None:
            extras.pop("curvature_final", None)
            extras.pop("lr_vec_final", None)
    lam = None if rep.lambda_max is None else np.asarray(rep.lambda_max)
    if info.get("lambda_max_bound") and lam is not None and not np.all(np.isfinite(lam) & (lam > 0)):
        info["lambda_max_fallback"] = "the λ_max bound was not finite: η0 = 1 (backtracking guards the steps)"
        warnings.warn(
            "the λ_max bound of the learning rate is not finite (power iteration on Hessian-vector products, which "
            "are NaN where the model's second derivatives are — e.g. a dLux optical model on some CPUs): η0 = 1 "
            "was used, guarded by backtracking. Give a learning_rate, or use preconditioned_gd/lbfgs (their "
            "default curvature needs no Hessian for likelihood objectives)", RuntimeWarning, stacklevel=3)
    scalars = {"lambda_max": rep.lambda_max, "base_lr_used": rep.base_lr_used,
               "num_backtracks": rep.num_backtracks, "backtrack_factor": rep.backtrack_factor}
    for name, v in scalars.items():
        if v is None:
            continue
        if batched:
            extras[name] = np.asarray(v)
        elif name == "num_backtracks":
            info[name] = int(v)
        else:
            info[name] = None if not np.isfinite(v) else float(v)
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


def _record_outputs(obj: Objective, trace: Trace, data: Any, output: Any, *, batched: bool) -> Trace:
    """What a fit records beside its rows (issue 18, items 4 and 7): ``info["goodness_of_fit"]`` at the best point
    (:mod:`gnomon.objective.goodness`; a list, one per member, for a batch), from the model's output there as the
    loop kept it from its own evaluation (``output``: :attr:`LoopResult.output`; a best point elsewhere — a
    continued or thinned run — is evaluated by the goodness module's program), and, for a batch, each member's
    share of the cost (``runtime_s``, ``compile_s``, ``run_s`` divided by B) beside the batch's totals
    (``batch_runtime_s``, ``batch_compile_s``, ``batch_run_s``, ``batch_size``)."""
    info = dict(trace.info)
    runtime = trace.runtime_s
    if batched:
        b = trace.batch_size
        info.update(batch_size=b, batch_runtime_s=float(runtime))
        for k in ("compile_s", "run_s"):
            if isinstance(info.get(k), (int, float)):
                info[f"batch_{k}"], info[k] = float(info[k]), float(info[k]) / b
        runtime = float(runtime) / b
        best = np.asarray(trace.coords_in(obj.thetamap, "best"))
        known = output(best) if output is not None and np.all(np.isfinite(best)) else None
        gof = goodness_of_fit_batch(obj, best, data, stacklevel=4, model_outputs=known)
    else:
        best = np.asarray(trace.coords_in(obj.thetamap, "best"))
        known = output(best) if output is not None and np.all(np.isfinite(best)) else None
        gof = goodness_of_fit(obj, best, data, stacklevel=4, model_output=known)
    if gof is not None:
        info["goodness_of_fit"] = gof
    return replace(trace, info=info, runtime_s=runtime)
