r"""Diagonal preconditioners from a curvature, as optax transformations (no sign flip, no learning rate).

:func:`scale_by_curvature`
    :math:`g ↦ P ⊙ g`, :math:`P = s ⊙ (c + \mathrm{eps})^{-p}` — optax's ``scale_by_*`` convention: chain the
    step after it (``optax.scale_by_learning_rate``, :func:`~gnomon.optim.scale_by_bb`, or
    :func:`~gnomon.optim.scale_by_lr_vector` for the clipped vector and the λ_max bound), as
    ``optax.adam = chain(scale_by_adam, scale_by_learning_rate)``.
:func:`precondition_by_curvature`
    a wrapper: runs an inner transformation (L-BFGS) in the coordinates :math:`u = c^{1/2} ⊙ θ`.

A curvature is *fixed* (a :class:`gnomon.Curvature`, a (D,) array, a scalar, or a pytree of arrays shaped like
the parameters) or *estimated* inside the compiled program by a :class:`~gnomon.optim.CurvatureEstimator` (or a
method name with ``objective=``), which carries its objective and data: each value has one home.

States hold what the next update needs; what a run reports (the estimate at θ_0, its cleaning counts and cost)
sits in a typed ``info`` field (:class:`CurvatureInfo`, as optax's line search keeps ``ZoomLinesearchInfo``) that
``update`` never reads, and :mod:`gnomon.optim.readout` reads it by type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from gnomon.curvature.estimate import Curvature, default_power
from gnomon.objective.objective import Objective
from gnomon.optim.estimator import CurvatureEstimator, curvature_estimator
from gnomon.optim.precondition import block_scales, preconditioner_shape
from gnomon.util.validate import as_key, positive_int

_UNSET = object()


class CurvatureInfo(NamedTuple):
    """What a curvature-based transformation reports (never read by its ``update``)."""

    diag0: Any  # the curvature diagonal c at θ_0 (flat, (D,))
    shape0: Any  # P at θ_0 when refreshes may replace it (else None: the state's ``shape`` is P at θ_0)
    counts: Any  # (3,) non-finite, negative, floored entries of the estimate at θ_0
    num_grad_evals: Any  # gradient evaluations spent on estimates (cumulative since init)


class ScaleByCurvatureState(NamedTuple):
    """State of :func:`scale_by_curvature`: P, and with ``refresh_every`` what a refresh needs (else None)."""

    count: Any  # updates applied (None without refreshes)
    diag: Any  # curvature diagonal c in use (None without refreshes: c enters only through P)
    shape: Any  # P = s ⊙ (c + eps)^(-p), flat (D,) (the parameters' own shape for a single array)
    key: Any  # raw PRNG key data for the next refresh (None without refreshes)
    info: CurvatureInfo


# ----------------------------------------------------------------------------------------- old spellings
#: arguments that left scale_by_curvature (issue 19): where each one lives now
_CLIP = ("the clip applies to the learning-rate vector: gn.optim.scale_by_lr_vector(gn.optim.scale_by_curvature(c), "
         "learning_rate, lr_min=..., lr_max=...)")
MOVED = {
    "learning_rate": "chain the learning rate after it: optax.chain(gn.optim.scale_by_curvature(c), "
                     "optax.scale_by_learning_rate(learning_rate)) (a float or an optax schedule)",
    "flip_sign": "the sign is the step's: optax.scale_by_learning_rate(learning_rate, flip_sign=False)",
    "lambda_max_iters": "the λ_max bound is a step rule: gn.optim.scale_by_lr_vector("
                        "gn.optim.scale_by_curvature(c), learning_rate, power_iters=n, objective=obj)",
    "lr_min": _CLIP,
    "lr_max": _CLIP,
}


def moved_arguments(fn: Callable) -> Callable:
    """Refuse the old spellings of :func:`scale_by_curvature` (a learning rate, ``flip_sign``, the λ_max bound, the
    clip) with an error naming the composition that replaces them: a silent change of sign or step is never made."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        found = sorted(set(kwargs) & set(MOVED))
        if len(args) > 1:
            found = ["learning_rate", *[k for k in found if k != "learning_rate"]]
        if found:
            homes = "; ".join(f"{k}: {MOVED[k]}" for k in found)
            raise ValueError(
                f"scale_by_curvature no longer applies a learning rate or flips the sign (optax's convention: it "
                f"returns +P ⊙ g and the step is chained after it); got {', '.join(found)}. {homes}"
            )
        return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------- scale_by_curvature
@moved_arguments
def scale_by_curvature(
    curvature: Any,
    *,
    objective: Objective | None = None,
    data: Any = _UNSET,
    initial: Any = None,
    power: float | None = None,
    eps: float = 0.0,
    layout: Any = None,
    block_scale: Mapping[str, float] | None = None,
    refresh_every: int | None = None,
    ema: float = 0.0,
    key: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Precondition by a curvature diagonal: :math:`g ↦ P ⊙ g` (optax's ``scale_by_*`` convention).

    .. math:: P = s ⊙ (\max(c, \text{tiny}) + \mathrm{eps})^{-p}

    c is the curvature diagonal, p its power (default by method, :func:`gnomon.curvature.estimate.default_power`:
    1 for Hessian/Gauss–Newton/Fisher diagonals, where :math:`-P ⊙ g` is the diagonal Newton step; ½ for g²
    statistics, Adam's convention), s per-block multipliers (``block_scale`` over the ``layout``'s parameters or
    groups; :func:`gnomon.optim.precondition.block_scales`). It neither flips the sign nor applies a step length:

    .. code-block:: python

        optax.chain(gn.optim.scale_by_curvature(c), optax.scale_by_learning_rate(lr))   # θ ← θ − lr · P ⊙ g
        optax.chain(gn.optim.scale_by_curvature(est), gn.optim.scale_by_bb())          # Barzilai–Borwein steps
        gn.optim.scale_by_lr_vector(gn.optim.scale_by_curvature(c), lr, lr_max=..., power_iters=20, objective=obj)

    ``curvature``: fixed — a :class:`gnomon.Curvature`, a (D,) array, a scalar, or a pytree of arrays shaped like
    the parameters (then the parameters may be any pytree: a fixed (D,) vector or an estimate is laid out as
    ``jax.flatten_util.ravel_pytree`` orders them) — or estimated: a :class:`~gnomon.optim.CurvatureEstimator`
    (it carries its objective and data) or a method name with ``objective=`` (and ``data=``, default the
    objective's bound data). An estimate is taken at θ_0 by ``init`` (inside the compiled program; ``initial=``
    starts from a given diagonal instead) and, with ``refresh_every = K``, again every K updates at the current
    parameters (the ``data`` extra argument of ``update`` when given), smoothed as
    :math:`c ← \mathrm{ema} · c + (1 - \mathrm{ema}) · c_\mathrm{new}` (variance-reduced Hutchinson restarts from c).
    Inside a compiled program an estimate cannot fall back: at ``init`` non-finite entries become the largest
    finite entry (:func:`finite_diagonal`; none finite: the identity), at a refresh they keep the entry in use;
    ``info.counts`` reports them (``gn.optimize`` estimates c at θ_0 on the host instead, with the fallbacks of
    :mod:`gnomon.curvature.choice`). The estimates' cost is ``info.num_grad_evals``
    (:func:`gnomon.optim.readout.own_grad_evals`).

    References: Nocedal & Wright, *Numerical Optimization*, 2nd ed. (2006), §2.2 (scaling) and §5.1 (diagonal
    preconditioning); Barzilai & Borwein, IMA J. Numer. Anal. 8 (1988) 141–148, for the step ``scale_by_bb``
    chains after it.
    """
    estimator, fixed, p, every, initial, scales = _settings(curvature, objective, data, initial, power, eps,
                                                            layout, block_scale, refresh_every, ema)
    key0 = as_key(key, optional=True)

    def make_shape(diag):
        if scales is not None and scales.shape != (diag.size,):
            raise ValueError(f"block_scale's layout has size {scales.shape[0]} but the parameters have {diag.size}")
        return preconditioner_shape(diag, p, eps, 1.0 if scales is None else scales)

    def init_fn(params):
        flat, _ = flatten(params)
        if estimator is not None:
            k_est, _, k_next = jax.random.split(key0, 3)
        else:  # nothing random to estimate: no PRNG in the program (each split is code to compile)
            k_est = k_next = key0
        cost, counts = 0, jnp.zeros((3,), jnp.int32)
        if estimator is not None and initial is None:
            diag, counts = estimator.estimate(flat, estimator.data, k_est, None)
            diag, cost = finite_diagonal(diag), estimator.cost
        else:
            diag = given_diagonal(fixed if estimator is None else initial, params, flat)
        diag = diag.astype(flat.dtype)
        shape = make_shape(diag)
        info = CurvatureInfo(diag, shape if every else None, counts, jnp.asarray(cost, jnp.int32))
        if every is None:
            return ScaleByCurvatureState(None, None, shape, None, info)
        return ScaleByCurvatureState(jnp.zeros((), jnp.int32), diag, shape, jax.random.key_data(k_next), info)

    def update_fn(updates, state, params=None, **extra):
        if every is not None:
            if params is None:
                raise ValueError("scale_by_curvature with refresh_every needs params in update()")
            at, d = flatten(params)[0], extra.get("data", estimator.data)

            def refresh(st):
                return _refreshed(st, estimator, at, d, ema, make_shape)

            due = (state.count > 0) & (state.count % every == 0)
            state = jax.lax.cond(due, refresh, lambda st: st, state)
            state = state._replace(count=state.count + 1)
        u, unravel = flatten(updates)
        out = (state.shape * u).astype(u.dtype)
        return (out if unravel is None else unravel(out)), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _settings(curvature: Any, objective: Any, data: Any, initial: Any, power: Any, eps: Any, layout: Any,
              block_scale: Any, refresh_every: Any, ema: Any) -> tuple:
    """:func:`scale_by_curvature`'s arguments, checked: ``(estimator, fixed, power, every, initial, scales)``."""
    estimator, fixed, method = curvature_source(curvature, objective, data)
    p = default_power(method) if power is None else power
    if isinstance(p, bool) or not (isinstance(p, (int, float)) and p > 0):
        raise ValueError(f"power must be a positive number (1 for Hessian-like, 0.5 for g²), got {p!r}")
    _check_non_negative("eps", eps)
    every = None if refresh_every is None else positive_int(refresh_every, "refresh_every")
    if every is not None and estimator is None:
        raise ValueError("refresh_every needs a curvature to re-estimate (a method name or a CurvatureEstimator)")
    if isinstance(ema, bool) or not (isinstance(ema, (int, float)) and 0 <= ema < 1):
        raise ValueError(f"ema must be in [0, 1), got {ema!r}")
    if initial is not None:
        if estimator is None:
            raise ValueError("initial= is a starting diagonal for an estimated curvature; give the curvature itself")
        _, initial, _ = curvature_source(initial, None, _UNSET)
    scales = block_scales(0 if layout is None else layout.size, layout, block_scale) if block_scale else None
    return estimator, fixed, p, every, initial, scales


def _refreshed(st: ScaleByCurvatureState, estimator: CurvatureEstimator, at: Any, data: Any, ema: float,
               make_shape: Callable) -> ScaleByCurvatureState:
    """The state after a refresh at ``at``: c re-estimated (seeded by the c in use), smoothed by ``ema``, P rebuilt,
    the key advanced (the keys split are: the next key, the estimate's, the λ_max bound's)."""
    k, k_est, _ = jax.random.split(jax.random.wrap_key_data(st.key), 3)
    new, _ = estimator.estimate(at, data, k_est, st.diag)
    new = jnp.where(jnp.isfinite(new), new, st.diag)  # a non-finite entry keeps the one in use
    diag = (ema * st.diag + (1 - ema) * new).astype(st.diag.dtype)
    spent = st.info.num_grad_evals + estimator.cost
    return st._replace(diag=diag, shape=make_shape(diag), key=jax.random.key_data(k),
                       info=st.info._replace(num_grad_evals=spent))


def finite_diagonal(diag: Any) -> jnp.ndarray:
    """An estimate's non-finite entries replaced by its largest finite one (the smallest learning rate), or by
    1 (the identity) when none is finite — inside the compiled program an estimate cannot raise, and a NaN
    preconditioner would turn the first step into NaN. The estimate's counts still report them."""
    ok = jnp.isfinite(diag)
    big = jnp.max(jnp.where(ok, diag, -jnp.inf))
    return jnp.where(ok, diag, jnp.where(jnp.any(ok), big, jnp.ones_like(diag)))


# ------------------------------------------------------------------------------- precondition_by_curvature
class PreconditionState(NamedTuple):
    """State of :func:`precondition_by_curvature`."""

    scale: jnp.ndarray  # S = c^(-1/2): θ = S ⊙ u
    inner_state: Any
    info: CurvatureInfo


def precondition_by_curvature(
    inner: optax.GradientTransformation,
    curvature: Any,
    *,
    objective: Objective | None = None,
    data: Any = _UNSET,
    key: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Run ``inner`` in the coordinates :math:`u = c^{1/2} ⊙ θ` (θ = S ⊙ u, :math:`S = c^{-1/2}`).

    ``inner`` sees the parameters :math:`S^{-1} ⊙ θ` and the gradient :math:`∇_u f = S ⊙ ∇_θ f`; its update
    :math:`Δu` becomes :math:`S ⊙ Δu`. For L-BFGS this is a diagonal initial inverse Hessian
    :math:`H_0 = \mathrm{diag}(1/c)`: where the curvature diagonal spans orders of magnitude the inverse
    Hessian approximation starts at the right scale in every direction instead of one scalar (Nocedal & Wright
    2006, §7.2). ``curvature`` as in :func:`scale_by_curvature` (fixed, or estimated at θ_0 by ``init``; its cost
    is ``info.num_grad_evals``). Only ``params`` and the updates are mapped: put line searches (which call
    ``value_fn`` in θ) outside the wrapper. Parameters are one array.
    """
    estimator, fixed, _ = curvature_source(curvature, objective, data)
    key0 = as_key(key, optional=True)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        params = jnp.asarray(params)
        if estimator is not None:
            diag, counts = estimator.estimate(params, estimator.data, jax.random.split(key0, 3)[0], None)
            diag, cost = finite_diagonal(diag), estimator.cost
        else:
            diag, counts, cost = given_diagonal(fixed, params, params), jnp.zeros((3,), jnp.int32), 0
        diag = diag.astype(params.dtype)
        scale = preconditioner_shape(diag, 0.5)
        info = CurvatureInfo(diag, None, counts, jnp.asarray(cost, jnp.int32))
        return PreconditionState(scale, inner.init(params / scale), info)

    def update_fn(updates, state, params=None, **extra):
        s = state.scale
        u_params = None if params is None else params / s
        if extra.get("grad") is not None:
            extra["grad"] = extra["grad"] * s
        if extra.get("value_fn") is not None:
            fn = extra["value_fn"]
            extra["value_fn"] = lambda u, *a, **kw: fn(s * u, *a, **kw)
        step, inner_new = inner.update(updates * s, state.inner_state, u_params, **extra)
        return (s * step).astype(updates.dtype), state._replace(inner_state=inner_new)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ---------------------------------------------------------------------------------------------- helpers
def flatten(tree: Any) -> tuple[jnp.ndarray, Callable | None]:
    """``(flat, unravel)`` of a pytree of arrays (``jax.flatten_util.ravel_pytree``); one array is used as it is
    (``unravel`` None)."""
    if isinstance(tree, (jax.Array, np.ndarray, np.generic, float, int)):
        return jnp.asarray(tree), None
    return ravel_pytree(tree)


def given_diagonal(diag: Any, params: Any, flat: jnp.ndarray) -> jnp.ndarray:
    """A fixed diagonal laid out like ``flat`` (the flattened ``params``): a scalar, an array of the parameters'
    shape (one array) or of the flat size, or a pytree shaped like the parameters."""
    if _is_tree(diag):
        if jax.tree.structure(diag) != jax.tree.structure(params):
            raise ValueError(f"the curvature pytree has structure {jax.tree.structure(diag)} but the parameters "
                             f"have {jax.tree.structure(params)}")
        return ravel_pytree(diag)[0].astype(flat.dtype)
    d = jnp.asarray(diag, flat.dtype)
    if d.ndim and d.shape != flat.shape:
        raise ValueError(f"params have shape {tuple(flat.shape)} but the curvature has shape {tuple(d.shape)}")
    return jnp.broadcast_to(d, flat.shape)


def curvature_source(curvature: Any, objective: Objective | None, data: Any
                     ) -> tuple[CurvatureEstimator | None, Any, str]:
    """(estimator carrying its data, fixed diagonal, method name) of a ``curvature`` argument. Each value has one
    home: an estimator's objective and data are its own (``objective=``/``data=`` beside one are refused), a
    method name takes them from ``objective=``/``data=``, a fixed diagonal takes neither."""
    if isinstance(curvature, CurvatureEstimator):
        if objective is not None and objective is not curvature.objective:
            raise ValueError("objective= beside a CurvatureEstimator: the estimator carries its objective "
                             "(gn.optim.curvature_estimator(objective, ...))")
        if data is not _UNSET:
            raise ValueError("data= beside a CurvatureEstimator: the estimator carries its data "
                             "(gn.optim.curvature_estimator(objective, data=...) or estimator._replace(data=...))")
        return curvature, None, curvature.method
    if isinstance(curvature, str):
        if objective is None:
            raise ValueError(f"curvature={curvature!r} is a method to estimate: pass objective= as well")
        est = curvature_estimator(objective, curvature)
        return (est if data is _UNSET else est._replace(data=data)), None, est.method
    if data is not _UNSET:
        raise ValueError("data= is the data of an estimated curvature; a given diagonal uses none")
    if isinstance(curvature, Curvature):
        d, method = curvature.diag, curvature.method
    else:
        d, method = curvature, "user"
    leaves = jax.tree.leaves(d)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return None, d, method
    if _is_tree(d):
        for x in leaves:
            _check_positive(np.asarray(x), curvature)
        return None, d, method
    arr = np.asarray(d)
    if arr.ndim > 1 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"curvature must be a Curvature, a vector (D,), a scalar, a pytree of arrays or an "
                         f"estimator, got {curvature!r}")
    _check_positive(arr, curvature)
    return None, jnp.asarray(d), method


def _check_positive(arr: np.ndarray, curvature: Any) -> None:
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"a given curvature must be numbers, got {curvature!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        finite = np.isfinite(arr)
        low = float(arr[finite].min()) if finite.any() else None
        raise ValueError(
            f"a given curvature must be finite and positive (min finite {low!r}, {int(np.sum(~finite))} non-finite)"
        )


def _is_tree(x: Any) -> bool:
    """A container of arrays (a dict, a list of arrays, ...) rather than one array, a number or a list of numbers."""
    if isinstance(x, (jax.Array, np.ndarray, np.generic, float, int)):
        return False
    if isinstance(x, (list, tuple)) and all(isinstance(v, (int, float, np.number)) for v in x):
        return False
    return len(jax.tree.leaves(x)) > 0 and jax.tree.structure(x).num_nodes > 1


def _check_non_negative(name: str, v: Any) -> None:
    if isinstance(v, bool) or not (isinstance(v, (int, float)) and v >= 0):
        raise ValueError(f"{name} must be a non-negative number, got {v!r}")
