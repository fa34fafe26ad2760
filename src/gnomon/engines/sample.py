r"""`sample`: NUTS/HMC chains (BlackJAX kernels) with a curvature-seeded, pooled window adaptation.

The MAP → NUTS hand-off
-----------------------
A posterior that is locally Gaussian around its mode θ* with precision :math:`H` has covariance
:math:`\Sigma \approx H^{-1}`. :func:`sample` uses that twice:

* the **metric** :math:`M^{-1}` is seeded from the curvature at the start (marginal variances
  :math:`\mathrm{diag}(H^{-1})`, the dense :math:`H^{-1}`, or :math:`1/\mathrm{diag}\,H` for large D; see
  :mod:`gnomon.curvature.mass_matrix`), and
* the **chains start** from "Laplace draws" :math:`θ^* + L\varepsilon_c`, :math:`LL^T \approx H^{-1}`, so they
  begin inside the typical set rather than at the mode.

The warmup then *keeps adapting* (opt out with ``adapt_metric="none"``) but needs far fewer steps: it
estimates the variances of the whitened coordinates :math:`u = L^{-1}θ` (ideally all 1), so the metric is
:math:`M^{-1} = L\,\mathrm{diag}(s)\,L^T` — the curvature's correlations are kept and only the scales are
re-measured; ``adapt_metric="dense"`` estimates the full covariance of ``u`` instead.

Adaptation
----------
Stan's windowed schedule (:func:`blackjax.adaptation.window_adaptation.build_schedule`: a fast buffer, slow
windows doubling in size, a final fast buffer) with BlackJAX's dual averaging of the step size towards
``target_acceptance_rate``. The chains share one adaptation: dual averaging sees the mean acceptance rate
across chains and each slow window pools every chain's draws (Chan's parallel Welford update), so a short
warmup still estimates the metric from ``num_chains ×`` window draws. At the end of a window the whitened
variances are regularised as in Stan, :math:`s = (n\,\hat s + k\,s_{prev} + 5\cdot10^{-3})/(n + 5 + k)`
with ``k = metric_shrinkage`` pseudo-draws of the previous value, and dual averaging restarts from the
window's average step size. The final step size is the dual-averaging average.

Cost accounting: every log-density gradient counts one — the start of each chain, each leapfrog step
(NUTS ``num_integration_steps``) in warmup and sampling, plus the curvature's own cost.

Loops are compiled (``lax.scan`` over chunks of ``chunk_size`` steps, chains ``vmap``-ed, jitted once per
objective and settings); Python only draws the progress bar between chunks. With several devices and
``num_chains`` divisible by their number, the chains are sharded over them.
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gnomon._progress import Progress
from gnomon.curvature import mass_matrix as mmx
from gnomon.objective.objective import Objective
from gnomon.trace.trace import Trace

ALGORITHMS = ("nuts", "hmc")
METRIC_ADAPTATIONS = ("diag", "dense", "none")
DEFAULT_WARMUP = {"identity": 1000, "curvature": 300, "array": 300, "handoff": 150, "frozen": 150}
_DEFAULT = object()


class _Static(NamedTuple):
    """Everything that changes the compiled program (the compile-cache key)."""

    algorithm: str
    max_num_doublings: int
    num_integration_steps: int
    target_acceptance_rate: float
    divergence_threshold: float
    factor_dense: bool
    adapt: str
    chunk: int


class _Welford(NamedTuple):
    n: Any
    mean: Any
    m2: Any


class _Adapt(NamedTuple):
    ss: Any  # blackjax DualAveragingAdaptationState
    step_size: Any
    scale: Any  # (D,) whitened variances, or (D, D) whitened covariance (adapt="dense")
    wf: _Welford
    imm: Any
    change_std: Any  # std over coordinates of log(new/previous variance) at the last window end
    change_max: Any  # max over coordinates of |log(new/previous variance)|
    last_n: Any  # pooled draws of the last window


# ----------------------------------------------------------------------------------------------- kernels
def _kernel_fn(st: _Static, logdensity):
    from blackjax.mcmc import hmc, nuts

    if st.algorithm == "nuts":
        kernel = nuts.build_kernel(divergence_threshold=st.divergence_threshold)

        def step(key, state, step_size, imm):
            return kernel(key, state, logdensity, step_size, imm, max_num_doublings=st.max_num_doublings)
    else:
        kernel = hmc.build_kernel(divergence_threshold=st.divergence_threshold)

        def step(key, state, step_size, imm):
            return kernel(
                key, state, logdensity, step_size, imm, num_integration_steps=st.num_integration_steps
            )

    return step


def _stats(st: _Static, info, step_size, num_chains: int) -> dict[str, Any]:
    out = {
        "acceptance_rate": info.acceptance_rate,
        "diverging": info.is_divergent,
        "energy": info.energy,
        "n_steps": jnp.asarray(info.num_integration_steps, jnp.int32) * jnp.ones((num_chains,), jnp.int32),
        "step_size": jnp.broadcast_to(step_size, (num_chains,)),
    }
    if st.algorithm == "nuts":
        out["tree_depth"] = jnp.asarray(info.num_trajectory_expansions, jnp.int32)
    return out


def _imm_from(st: _Static, factor, scale):
    """``M⁻¹ = L S Lᵀ`` for the whitening factor ``L`` and the whitened (co)variance ``S``."""
    if st.adapt == "dense":
        if st.factor_dense:
            m = factor @ scale @ factor.T
        else:
            m = factor[:, None] * scale * factor[None, :]
        return 0.5 * (m + m.T)
    if st.factor_dense:
        m = (factor * scale[None, :]) @ factor.T
        return 0.5 * (m + m.T)
    return factor * factor * scale


def _whiten(st: _Static, factor_inv, x):
    return x @ factor_inv.T if st.factor_dense else x * factor_inv


def _welford_init(st: _Static, dim: int, dtype) -> _Welford:
    m2 = jnp.zeros((dim, dim) if st.adapt == "dense" else (dim,), dtype)
    return _Welford(jnp.zeros((), dtype), jnp.zeros((dim,), dtype), m2)


def _welford_add(st: _Static, w: _Welford, u) -> _Welford:
    """Chan et al.'s parallel update: merge a batch of rows ``u`` (C, D) into the running moments."""
    nb = u.shape[0]
    mb = jnp.mean(u, axis=0)
    du = u - mb
    m2b = du.T @ du if st.adapt == "dense" else jnp.sum(du * du, axis=0)
    n = w.n + nb
    delta = mb - w.mean
    mean = w.mean + delta * (nb / n)
    corr = jnp.outer(delta, delta) if st.adapt == "dense" else delta * delta
    return _Welford(n, mean, w.m2 + m2b + corr * (w.n * nb / n))


# ------------------------------------------------------------------------------------------- compilation
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(obj: Objective, st: _Static) -> dict[str, Any]:
    per = _CACHE.setdefault(obj, {})
    hit = per.get(st)
    if hit is not None:
        return hit
    from blackjax.adaptation.step_size import dual_averaging_adaptation
    from blackjax.mcmc import hmc

    da_init, da_update, da_final = dual_averaging_adaptation(st.target_acceptance_rate)

    def init(positions, data):
        logdensity = lambda th: obj.log_prob(th, data)  # noqa: E731
        return jax.vmap(lambda p: hmc.init(p, logdensity))(positions)

    def adapt_init(positions, step_size, factor):
        dim = positions.shape[-1]
        dtype = positions.dtype
        scale = jnp.eye(dim, dtype=dtype) if st.adapt == "dense" else jnp.ones((dim,), dtype)
        zero = jnp.zeros((), dtype)
        return _Adapt(
            ss=da_init(jnp.asarray(step_size, dtype)),
            step_size=jnp.asarray(step_size, dtype),
            scale=scale,
            wf=_welford_init(st, dim, dtype),
            imm=_imm_from(st, factor, scale),
            change_std=zero,
            change_max=zero,
            last_n=zero,
        )

    def chunk(states, ad, key, t0, sched, active, adapting, data, factor, factor_inv, shrink):
        """``len(active)`` steps; with ``adapting`` (warmup) the step size and the metric adapt."""
        logdensity = lambda th: obj.log_prob(th, data)  # noqa: E731
        step = _kernel_fn(st, logdensity)
        num_chains = states.position.shape[0]

        def window_end(ad: _Adapt) -> _Adapt:
            w = ad.wf
            n = w.n
            cov = w.m2 / jnp.maximum(n - 1, 1)
            reg = 5e-3 * jnp.eye(cov.shape[0], dtype=cov.dtype) if st.adapt == "dense" else 5e-3
            scale = (n * cov + shrink * ad.scale + reg) / (n + 5 + shrink)
            ss = da_init(da_final(ad.ss))
            diag = (lambda a: jnp.diagonal(a)) if st.adapt == "dense" else (lambda a: a)
            lr = jnp.log(diag(scale) / diag(ad.scale))
            return _Adapt(
                ss=ss,
                step_size=jnp.exp(ss.log_step_size),
                scale=scale,
                wf=_welford_init(st, w.mean.shape[0], w.mean.dtype),
                imm=_imm_from(st, factor, scale),
                change_std=jnp.std(lr),
                change_max=jnp.max(jnp.abs(lr)),
                last_n=n,
            )

        def adapt(ad: _Adapt, stage, is_end, positions, acceptance) -> _Adapt:
            ss = da_update(ad.ss, jnp.mean(acceptance))
            ad = ad._replace(ss=ss, step_size=jnp.exp(ss.log_step_size))
            if st.adapt != "none":
                u = _whiten(st, factor_inv, positions)
                ad = ad._replace(
                    wf=jax.lax.cond(stage == 1, lambda w: _welford_add(st, w, u), lambda w: w, ad.wf)
                )
                ad = jax.lax.cond(is_end, window_end, lambda a: a, ad)
            return ad

        def body(carry, xs):
            t, (stage, is_end), act = xs

            def run(carry):
                states, ad = carry
                keys = jax.random.split(jax.random.fold_in(key, t), num_chains)
                new, info = jax.vmap(lambda k, s: step(k, s, ad.step_size, ad.imm))(keys, states)
                out = _stats(st, info, ad.step_size, num_chains)
                out["log_prob"] = new.logdensity
                out["theta"] = new.position
                ad = jax.lax.cond(
                    adapting,
                    lambda a: adapt(a, stage, is_end, new.position, info.acceptance_rate),
                    lambda a: a,
                    ad,
                )
                return (new, ad), out

            shapes = jax.eval_shape(run, carry)[1]
            return jax.lax.cond(
                act, run, lambda c: (c, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)), carry
            )

        ts = t0 + jnp.arange(sched.shape[0])
        (states, ad), outs = jax.lax.scan(
            body, (states, ad), (ts, (sched[:, 0], sched[:, 1].astype(bool)), active)
        )
        return states, ad, outs

    def adapt_final(ad: _Adapt):
        # the dual-averaging average; right after a window end (no update since the restart) the restart value
        avg = jnp.where(ad.ss.step > 1, ad.ss.log_step_size_avg, ad.ss.log_step_size)
        return jnp.exp(avg), ad.imm

    hit = {
        "init": jax.jit(init),
        "adapt_init": jax.jit(adapt_init),
        "chunk": jax.jit(chunk),
        "adapt_final": jax.jit(adapt_final),
    }
    per[st] = hit
    return hit


# ------------------------------------------------------------------------------------------ input checks
def _as_key(key: Any):
    """A PRNG key from a typed key, a legacy uint32 (2,) key or an int seed."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return key
    if dtype is not None and np.dtype(dtype) == np.uint32 and np.shape(key) == (2,):
        return jnp.asarray(key)
    raise ValueError(f"key must be a jax PRNG key (jax.random.key(seed)) or an int seed, got {key!r}")


def _key_data(key) -> np.ndarray:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key))
    return np.asarray(key)


def _int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an int ≥ {lo}, got {v!r}")
    return int(v)


def _map_theta(theta: Any, src_map: Any, obj: Objective):
    """θ from a trace in ``src_map``'s coordinates, expressed in ``obj``'s coordinates."""
    theta = jnp.asarray(theta)
    if src_map is obj.thetamap:
        return theta
    if src_map is not None:
        theta = src_map.to_theta(theta)
    if obj.thetamap is not None:
        theta = obj.thetamap.to_z(theta)
    return theta


class _Init(NamedTuple):
    center: Any  # (D,) or None
    starts: Any  # (C, D) or None
    source: str
    map_info: dict


def _resolve_init(obj: Objective, init: Any, num_chains: int) -> _Init:
    from gnomon.engines.handoff import HandOff

    d = obj.dim
    if isinstance(init, HandOff):
        if init.dim != d:
            raise ValueError(f"the hand-off is for θ of dimension {init.dim}, but the objective has dim {d}")
        pos = init.positions
        starts = jnp.asarray(pos) if pos is not None and np.shape(pos)[0] == num_chains else None
        return _Init(jnp.asarray(init.theta), starts, "handoff", {})
    if isinstance(init, Trace):
        if init.kind == "sampling":
            last = _map_theta(np.asarray(init.theta)[:, -1], init.thetamap, obj)
            if last.shape[0] == num_chains:
                return _Init(_map_theta(init.best_theta, init.thetamap, obj), last, "sampling trace", {})
            return _Init(_map_theta(init.best_theta, init.thetamap, obj), None, "sampling trace", {})
        info = {"map_num_grad_evals": int(np.sum(np.asarray(init.num_grad_evals)))}
        if init.is_batched:
            best = np.asarray(init.best_theta)
            losses = np.asarray(init.best_loss, dtype=float)
            order = np.argsort(np.where(np.isfinite(losses), losses, np.inf))
            status = init.status[int(order[0])] if isinstance(init.status, (tuple, list)) else init.status
            info.update(map_status=status, map_loss=float(losses[order[0]]))
            center = _map_theta(best[order[0]], init.thetamap, obj)
            starts = _map_theta(best, init.thetamap, obj) if best.shape[0] == num_chains else None
            return _Init(center, starts, "optimization trace", info)
        info.update(
            map_status=init.status,
            map_loss=float(np.asarray(init.best_loss)),
            map_first_theta=np.asarray(_map_theta(init.theta[0], init.thetamap, obj)),
        )
        return _Init(_map_theta(init.best_theta, init.thetamap, obj), None, "optimization trace", info)
    try:
        arr = jnp.asarray(init)
    except TypeError:
        raise ValueError(
            f"init must be a θ ({d},), per-chain starts ({num_chains}, {d}), a Trace or a HandOff; got "
            f"{type(init).__name__}"
        ) from None
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    if arr.ndim == 1 and arr.shape[0] == d:
        return _Init(arr, None, "theta", {})
    if arr.ndim == 2 and arr.shape == (num_chains, d):
        return _Init(None, arr, "per-chain starts", {})
    raise ValueError(
        f"init has shape {tuple(arr.shape)}; expected a θ of shape ({d},) or per-chain starts of shape "
        f"({num_chains}, {d}) (num_chains={num_chains})"
    )


# ------------------------------------------------------------------------------------------ the engine
def sample(
    obj: Objective,
    init: Any,
    key: Any,
    num_chains: int = 4,
    num_warmup: int | None = None,
    num_samples: int = 1000,
    *,
    algorithm: str = "nuts",
    inverse_mass_matrix: Any = "curvature",
    dense: bool | str = "auto",
    adapt_metric: str | None = None,
    metric_shrinkage: float | None = None,
    handoff: Any = None,
    step_size: float | None = None,
    target_acceptance_rate: float = 0.8,
    max_tree_depth: int = 10,
    num_integration_steps: int = 16,
    divergence_threshold: float = 1000.0,
    curvature_method: str | None = None,
    max_dense_dim: int = mmx.DEFAULT_MAX_DENSE_DIM,
    jitter: float | None = None,
    fallback: bool = True,
    max_warmup: int = 1000,
    keep_warmup: bool = False,
    chunk_size: int = 100,
    data: Any = _DEFAULT,
    progress: bool | None = None,
) -> Trace:
    r"""Draw ``num_samples`` per chain from ``exp(obj.log_prob)`` with NUTS (or HMC).

    Args:
      obj: the :class:`gnomon.Objective`; its ``log_prob`` (Jacobian included) is the target.
      init: a θ ``(D,)`` (each chain starts from a jittered copy), per-chain starts ``(C, D)``, an
        optimization :class:`Trace` (its best θ — the MAP hand-off; a batch of ``C`` fits gives one start
        per chain), a sampling Trace (continue from its last draws) or a :class:`gnomon.HandOff`.
      key: a ``jax.random.key`` (or an int seed).
      num_chains: chains ``C`` (vmapped; sharded over devices when there are several).
      num_warmup: warmup steps; default 1000 for the identity metric, 300 when the metric is seeded from the
        curvature or an array, 150 from a hand-off or with ``adapt_metric="none"``. With the default, a
        seeded warmup whose last window still moved the metric by more than its noise gets further windows
        (doubling) up to ``max_warmup``; an explicit ``num_warmup`` is run as given.
      num_samples: draws kept per chain.
      algorithm: ``"nuts"`` or ``"hmc"`` (``num_integration_steps`` leapfrog steps per draw).
      inverse_mass_matrix: ``"curvature"`` (from the curvature of ``−log_prob`` at the start: see
        :mod:`gnomon.curvature.mass_matrix`), an array ``(D,)``/``(D, D)``, a :class:`gnomon.Curvature`, an
        ``InverseMassMatrix``, or None / ``"identity"``.
      dense: metric shape from a dense curvature: False (marginal variances), True (the dense inverse), or
        ``"auto"`` (dense when correlations matter: largest variance inflation factor above 1.25).
      adapt_metric: ``"diag"`` (default: re-estimate the scales in the seed's whitened coordinates),
        ``"dense"`` (the full whitened covariance; default for a dense identity), ``"none"`` (freeze the
        seeded metric; only the step size adapts).
      metric_shrinkage: pseudo-draws ``k`` of the previous metric in each window's regularisation (default 0
        — Stan's rule).
      handoff: a :class:`gnomon.HandOff` from an earlier fit: seeds the metric and the step size with its
        adapted ones (and the warmup is short).
      step_size: initial step size (default: the hand-off's, else 1); with ``num_warmup=0`` the one used.
      target_acceptance_rate: dual-averaging target.
      max_tree_depth: NUTS maximum number of trajectory doublings.
      num_integration_steps: HMC leapfrog steps per draw.
      divergence_threshold: energy error that flags a divergent transition.
      curvature_method: curvature estimator for ``"curvature"`` (default Gauss–Newton with residuals, else
        exact up to ``max_dense_dim``, else Hutchinson).
      max_dense_dim: largest D for which a dense curvature is formed and inverted.
      jitter: spread of jittered starts around a θ in units of the metric's Laplace draw ``Lε`` (default 1
        with a seeded metric, 0.1 with the identity).
      fallback: when the start is an optimization trace that diverged (no usable mode), start from its first
        point with the identity metric and the full warmup instead (with a warning).
      max_warmup: the most warmup steps an automatically extended warmup may take.
      keep_warmup: also return the warmup draws (``trace.warmup``).
      chunk_size: steps per compiled chunk (the progress bar moves between chunks).
      data: data for objectives that take it (default: the objective's bound data).
      progress: progress bar on stderr (default: on a terminal).

    Returns:
      a sampling :class:`Trace`: ``theta`` ``(C, N, D)`` unconstrained draws, ``log_prob`` ``(C, N)``,
      ``stats`` (``acceptance_rate``, ``diverging``, ``energy``, ``n_steps``, ``step_size``, ``tree_depth``),
      ``warmup`` when kept, ``num_grad_evals`` (curvature + starts + warmup + sampling), ``info`` (settings,
      adapted step size, cost breakdown, hand-off diagnostics and warnings) and ``extras`` (the adapted and
      seeded inverse mass matrices, θ*, last positions, key) from which :meth:`gnomon.HandOff.from_trace`
      builds the hand-off bundle.
    """
    from gnomon.engines.handoff import HandOff

    t_start = time.perf_counter()
    if not isinstance(obj, Objective):
        raise ValueError(f"sample needs a gnomon.Objective, got {type(obj).__name__}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    num_chains = _int("num_chains", num_chains, 1)
    num_samples = _int("num_samples", num_samples, 1)
    chunk_size = _int("chunk_size", chunk_size, 1)
    max_tree_depth = _int("max_tree_depth", max_tree_depth, 1)
    num_integration_steps = _int("num_integration_steps", num_integration_steps, 1)
    if adapt_metric is not None and adapt_metric not in METRIC_ADAPTATIONS:
        raise ValueError(f"unknown adapt_metric {adapt_metric!r}; expected one of {METRIC_ADAPTATIONS}")
    if not (isinstance(target_acceptance_rate, (int, float)) and 0 < target_acceptance_rate < 1):
        raise ValueError(f"target_acceptance_rate must be in (0, 1), got {target_acceptance_rate!r}")
    if step_size is not None and not (isinstance(step_size, (int, float)) and step_size > 0):
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    if jitter is not None and not (isinstance(jitter, (int, float)) and jitter >= 0):
        raise ValueError(f"jitter must be a non-negative number, got {jitter!r}")
    if metric_shrinkage is not None and not (
        isinstance(metric_shrinkage, (int, float)) and metric_shrinkage >= 0
    ):
        raise ValueError(f"metric_shrinkage must be a non-negative number, got {metric_shrinkage!r}")
    if dense not in (True, False, "auto"):
        raise ValueError(f"dense must be True, False or 'auto', got {dense!r}")
    if handoff is not None and not isinstance(handoff, HandOff):
        raise ValueError(f"handoff must be a gnomon.HandOff, got {type(handoff).__name__}")
    key = _as_key(key)
    data = obj.data if data is _DEFAULT else data
    start = _resolve_init(obj, init, num_chains)
    warn: list[str] = []

    # --- poor MAP: fall back to a cold start --------------------------------------------------------
    if (
        fallback
        and start.source == "optimization trace"
        and isinstance(start.map_info.get("map_status"), str)
        and start.map_info["map_status"].startswith("diverged")
    ):
        first = start.map_info.get("map_first_theta")
        msg = (
            f"the optimization did not reach a mode ({start.map_info['map_status']}); its best point is a "
            "poor start, so sampling starts from the optimizer's first point with the identity metric and a "
            "full warmup"
        )
        warn.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
        start = _Init(
            jnp.asarray(first) if first is not None else start.center, None, "fallback", start.map_info
        )
        if isinstance(inverse_mass_matrix, str) and inverse_mass_matrix == "curvature":
            inverse_mass_matrix = None

    center = start.center
    if center is None:  # per-chain starts: the curvature is taken at the first chain's start
        center = start.starts[0]
    if center.shape != (obj.dim,):
        raise ValueError(f"the start θ has shape {tuple(center.shape)}, expected ({obj.dim},) for {obj!r}")
    if start.starts is not None and tuple(start.starts.shape) != (num_chains, obj.dim):
        raise ValueError(
            f"per-chain starts have shape {tuple(start.starts.shape)}, expected ({num_chains}, {obj.dim})"
        )
    dtype = center.dtype
    center_np = np.asarray(center)
    if not np.all(np.isfinite(center_np)):
        raise ValueError(
            f"the start θ has non-finite entries: {center_np[~np.isfinite(center_np)][:3].tolist()}"
        )

    # --- the metric seed ------------------------------------------------------------------------------
    k_curv, k_jit, k_warm, k_samp = jax.random.split(key, 4)
    curvature = None
    use_handoff_metric = (
        handoff is not None and isinstance(inverse_mass_matrix, str) and inverse_mass_matrix == "curvature"
    )
    if use_handoff_metric:
        if handoff.dim != obj.dim:
            raise ValueError(
                f"the hand-off is for θ of dimension {handoff.dim}, but the objective has dim {obj.dim}"
            )
        seed = mmx.from_array(np.asarray(handoff.inverse_mass_matrix, dtype=dtype), source="handoff")
        seed_kind = "handoff"
    elif isinstance(inverse_mass_matrix, str):
        if inverse_mass_matrix == "curvature":
            seed, curvature = mmx.curvature_metric(
                obj,
                center,
                method=curvature_method,
                dense=dense,
                max_dense_dim=max_dense_dim,
                key=k_curv,
                data=None if data is obj.data else data,
            )
            seed_kind = "curvature"
        elif inverse_mass_matrix == "identity":
            seed, seed_kind = mmx.identity(obj.dim, dense=adapt_metric == "dense", dtype=dtype), "identity"
        else:
            raise ValueError(
                f"unknown inverse_mass_matrix {inverse_mass_matrix!r}; expected 'curvature', 'identity', "
                "None, an array (D,) or (D, D), or a gnomon.Curvature"
            )
    elif inverse_mass_matrix is None:
        seed, seed_kind = mmx.identity(obj.dim, dense=adapt_metric == "dense", dtype=dtype), "identity"
    elif isinstance(inverse_mass_matrix, mmx.InverseMassMatrix):
        seed, seed_kind = inverse_mass_matrix, "array"
    elif hasattr(inverse_mass_matrix, "diag") and hasattr(inverse_mass_matrix, "method"):
        curvature = inverse_mass_matrix
        seed = mmx.from_curvature(curvature, dense=dense, max_dense_dim=max_dense_dim, dtype=dtype)
        seed_kind = "curvature"
    else:
        seed, seed_kind = mmx.from_array(np.asarray(inverse_mass_matrix, dtype=dtype)), "array"
    if seed.dim != obj.dim:
        raise ValueError(
            f"the inverse mass matrix has dimension {seed.dim}, but the objective has dim {obj.dim}"
        )
    curvature_cost = (
        int(curvature.num_grad_evals) if curvature is not None and seed_kind == "curvature" else 0
    )

    adapt = adapt_metric or ("dense" if (seed_kind == "identity" and seed.dense) else "diag")
    if adapt == "dense" and not seed.dense:
        seed = seed.as_dense()
    auto_warmup = num_warmup is None
    if num_warmup is None:
        num_warmup = DEFAULT_WARMUP["frozen" if adapt == "none" and seed_kind != "identity" else seed_kind]
    num_warmup = _int("num_warmup", num_warmup, 0)
    seeded = seed_kind != "identity"
    shrink = float(metric_shrinkage if metric_shrinkage is not None else 0.0)
    if step_size is None:
        step_size = float(handoff.step_size) if handoff is not None else 1.0

    st = _Static(
        algorithm=algorithm,
        max_num_doublings=max_tree_depth,
        num_integration_steps=num_integration_steps,
        target_acceptance_rate=float(target_acceptance_rate),
        divergence_threshold=float(divergence_threshold),
        factor_dense=seed.dense,
        adapt=adapt,
        chunk=chunk_size,
    )
    fns = _compiled(obj, st)
    factor = jnp.asarray(seed.factor, dtype)
    factor_inv = jnp.asarray(seed.factor_inv, dtype)

    # --- starts ------------------------------------------------------------------------------------------
    if jitter is None:
        jitter = 1.0 if seeded else 0.1
    draw_factor = factor if seed.draw_factor is None else jnp.asarray(seed.draw_factor, dtype)
    if start.starts is not None:
        positions = jnp.asarray(start.starts, dtype)
        jittered = False
    else:
        eps = jax.random.normal(k_jit, (num_chains, obj.dim), dtype)
        offsets = eps @ draw_factor.T if draw_factor.ndim == 2 else eps * draw_factor
        positions = center[None, :] + jitter * offsets
        jittered = jitter > 0
    states = fns["init"](positions, data)
    bad = ~(
        np.isfinite(np.asarray(states.logdensity))
        & np.all(np.isfinite(np.asarray(states.logdensity_grad)), axis=1)
    )
    shrink_tries = 0
    while jittered and bad.any() and shrink_tries < 6:  # pull jittered starts towards the centre
        shrink_tries += 1
        positions = jnp.where(
            jnp.asarray(bad)[:, None], center[None, :] + (positions - center[None, :]) * 0.25, positions
        )
        states = fns["init"](positions, data)
        bad = ~(
            np.isfinite(np.asarray(states.logdensity))
            & np.all(np.isfinite(np.asarray(states.logdensity_grad)), axis=1)
        )
    if bad.any():
        c = int(np.flatnonzero(bad)[0])
        lp = float(np.asarray(states.logdensity)[c])
        what = f"log_prob = {lp}" if not math.isfinite(lp) else "a non-finite gradient"
        raise ValueError(
            f"chain {c} starts where the target has {what} (start θ[:5] = "
            f"{np.asarray(positions[c])[:5].tolist()}); give a start inside the support"
        )
    init_cost = num_chains + (shrink_tries * num_chains)
    states = _shard(states, num_chains)

    # --- warmup --------------------------------------------------------------------------------------
    head, tail = _schedule(num_warmup, seeded, adapt)
    total = num_warmup + num_samples
    bar = Progress(
        total,
        f"{algorithm} ×{num_chains}",
        enabled=progress if progress is not None else (None if total * num_chains >= 2000 else False),
    )
    ad = fns["adapt_init"](positions, jnp.asarray(step_size, dtype), factor)
    warm_out: list[dict] = []
    tally = {"t": 0, "grads": 0, "div": 0}
    shrink_arr = jnp.asarray(shrink, dtype)

    def run_warmup(rows: np.ndarray) -> None:
        nonlocal states, ad
        for c0 in range(0, len(rows), chunk_size):
            n = min(chunk_size, len(rows) - c0)
            sch = np.zeros((chunk_size, 2), np.int32)
            sch[:n] = rows[c0 : c0 + n]
            active = np.arange(chunk_size) < n
            states, ad, outs = fns["chunk"](
                states,
                ad,
                k_warm,
                jnp.int32(tally["t"]),
                jnp.asarray(sch),
                jnp.asarray(active),
                True,
                data,
                factor,
                factor_inv,
                shrink_arr,
            )
            outs = jax.device_get(outs)
            outs = {k: v[:n] for k, v in outs.items()}
            tally["t"] += n
            tally["grads"] += int(np.sum(outs["n_steps"]))
            tally["div"] += int(np.sum(outs["diverging"]))
            if keep_warmup:
                warm_out.append(outs)
            bar.update(tally["t"], phase="warmup", step_size=float(ad.step_size), divergences=tally["div"])

    run_warmup(head)
    extended = []
    if auto_warmup and seeded and adapt != "none" and len(head):
        last = _last_window(head)
        while _unsettled(ad, obj.dim) and tally["t"] + 2 * last + len(tail) <= max_warmup:
            last *= 2
            extended.append(last)
            bar.total += last
            run_warmup(np.asarray([(1, 0)] * (last - 1) + [(1, 1)], np.int32))
    run_warmup(tail)
    num_warmup = tally["t"]
    warm_steps, div_warm = tally["grads"], tally["div"]
    if num_warmup > 0:
        step_final, imm = fns["adapt_final"](ad)
    else:
        step_final, imm = jnp.asarray(step_size, dtype), jnp.asarray(seed.matrix, dtype)
    if not bool(np.isfinite(np.asarray(step_final))) or float(step_final) <= 0:
        raise ValueError(f"warmup ended with an unusable step size {float(step_final)!r}")

    # --- sampling ------------------------------------------------------------------------------------
    ad = ad._replace(step_size=jnp.asarray(step_final, dtype), imm=jnp.asarray(imm, dtype))
    no_sched = np.zeros((chunk_size, 2), np.int32)
    samp_out: list[dict] = []
    div_samp = 0
    for c0 in range(0, num_samples, chunk_size):
        n = min(chunk_size, num_samples - c0)
        active = np.arange(chunk_size) < n
        states, ad, outs = fns["chunk"](
            states,
            ad,
            k_samp,
            jnp.int32(c0),
            jnp.asarray(no_sched),
            jnp.asarray(active),
            False,
            data,
            factor,
            factor_inv,
            shrink_arr,
        )
        outs = jax.device_get(outs)
        outs = {k: v[:n] for k, v in outs.items()}
        div_samp += int(np.sum(outs["diverging"]))
        samp_out.append(outs)
        bar.update(
            num_warmup + c0 + n,
            force=c0 + n == num_samples,
            phase="sampling",
            step_size=float(step_final),
            divergences=div_warm + div_samp,
        )
    bar.close(f"{div_samp} divergences")

    draws = _stack(samp_out)
    sample_steps = int(np.sum(draws["n_steps"]))
    theta = draws.pop("theta")
    log_prob = draws.pop("log_prob")
    warmup = None
    if keep_warmup and warm_out:
        w = _stack(warm_out)
        warmup = {"theta": w.pop("theta"), "log_prob": w.pop("log_prob"), "stats": w}
    imm_np = np.asarray(imm)
    step_np = float(step_final)

    diag = handoff_diagnostics(center_np, seed, imm_np, theta, div_samp)
    for m in diag.pop("warnings"):
        warn.append(m)
        warnings.warn(m, UserWarning, stacklevel=2)
    grad_evals = {
        "curvature": curvature_cost,
        "init": init_cost,
        "warmup": warm_steps,
        "sampling": sample_steps,
    }
    if "map_num_grad_evals" in start.map_info:
        grad_evals["map"] = start.map_info["map_num_grad_evals"]
    info = {
        "engine": algorithm,
        "objective": dict(obj.info),
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "warmup_extended_by": extended,
        "num_samples": num_samples,
        "step_size": step_np,
        "initial_step_size": float(step_size),
        "target_acceptance_rate": float(target_acceptance_rate),
        "max_tree_depth": max_tree_depth if algorithm == "nuts" else None,
        "num_integration_steps": num_integration_steps if algorithm == "hmc" else None,
        "init": start.source,
        "jitter": float(jitter) if start.starts is None else None,
        "metric": {
            "seed": seed_kind,
            "dense": bool(imm_np.ndim == 2),
            "adapt": adapt,
            "shrinkage": shrink,
            "pooled_chains": True,
            **seed.info,
        },
        "curvature": curvature.describe() if curvature is not None and seed_kind == "curvature" else None,
        "grad_evals": grad_evals,
        "handoff": diag,
        "warnings": warn,
        "map_status": start.map_info.get("map_status"),
    }
    extras = {
        "step_size": step_np,
        "inverse_mass_matrix": imm_np,
        "seed_inverse_mass_matrix": np.asarray(seed.matrix),
        "theta_star": center_np,
        "positions": np.asarray(states.position),
        "key": _key_data(key),
    }
    if curvature is not None and seed_kind == "curvature":
        extras["curvature_diag"] = np.asarray(curvature.diag)
        if getattr(curvature, "matrix", None) is not None:
            extras["curvature_matrix"] = np.asarray(curvature.matrix)
    return Trace(
        kind="sampling",
        theta=theta,
        log_prob=log_prob,
        stats=draws,
        warmup=warmup,
        status="sampled",
        num_grad_evals=int(sum(v for k, v in grad_evals.items() if k != "map")),
        runtime_s=time.perf_counter() - t_start,
        info=info,
        layout=obj.base_layout,
        thetamap=obj.thetamap,
        extras=extras,
    ).validate()


def _stack(chunks: list[dict]) -> dict[str, np.ndarray]:
    """Concatenate chunk outputs (steps, chains, ...) and move chains first: (chains, steps, ...)."""
    out = {}
    for k in chunks[0]:
        a = np.concatenate([c[k] for c in chunks], axis=0)
        out[k] = np.swapaxes(a, 0, 1)
    return out


def _schedule(num_warmup: int, seeded: bool, adapt: str) -> tuple[np.ndarray, np.ndarray]:
    """Stan's window schedule as int rows (slow?, window end?), split before the final fast buffer.

    Seeded metrics start inside the typical set (Laplace draws), so the initial buffer is 10 % of the
    warmup instead of 75 steps and the first slow window 20 %. Extra windows (see :func:`_unsettled`) go
    between the two parts."""
    if num_warmup == 0:
        return np.zeros((0, 2), np.int32), np.zeros((0, 2), np.int32)
    if adapt == "none":
        return np.zeros((num_warmup, 2), np.int32), np.zeros((0, 2), np.int32)
    from blackjax.adaptation.window_adaptation import build_schedule

    if seeded:
        init_buf = max(5, int(round(0.1 * num_warmup)))
        sched = build_schedule(
            num_warmup,
            initial_buffer_size=init_buf,
            final_buffer_size=init_buf,
            first_window_size=max(10, int(round(0.2 * num_warmup))),
        )
    else:
        sched = build_schedule(num_warmup)
    sched = np.asarray(sched, dtype=np.int32).reshape(num_warmup, 2)
    ends = np.flatnonzero(sched[:, 1])
    cut = int(ends[-1]) + 1 if ends.size else num_warmup
    return sched[:cut], sched[cut:]


def _last_window(head: np.ndarray) -> int:
    ends = np.flatnonzero(head[:, 1])
    if ends.size == 0:
        return 0
    return int(ends[-1] - ends[-2]) if ends.size > 1 else int(ends[-1] + 1 - np.argmax(head[:, 0] == 1))


def _unsettled(ad: _Adapt, dim: int) -> bool:
    r"""Did the last window still move the metric materially, beyond its own noise?

    ``r = log(s_new / s_prev)`` over coordinates at the last window end. With ``n`` pooled draws a log
    variance has a standard error of about :math:`se = \sqrt{2/n}` (more with autocorrelation). Unsettled:
    some variance still moved by more than 4× (``max|r| > log 4 + 2·se·√(2 log D)``) or the scales moved
    broadly (``std(r) > 0.5 + 3·se``) — a seed that was badly wrong, not the ordinary refinement of a
    good one."""
    n = float(ad.last_n)
    if n < 2:
        return False
    se = math.sqrt(2.0 / n)
    return bool(
        float(ad.change_std) > 0.5 + 3 * se
        or float(ad.change_max) > math.log(4.0) + 2 * se * math.sqrt(2 * math.log(max(dim, 2)))
    )


def _shard(states: Any, num_chains: int) -> Any:
    """Spread the chain axis over the available devices (when there are several and they divide C)."""
    devices = jax.devices()
    if len(devices) < 2 or num_chains % len(devices):
        return states
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("chain",))
    sharding = NamedSharding(mesh, PartitionSpec("chain"))
    return jax.device_put(states, sharding)


# ------------------------------------------------------------------------------------------ diagnostics
def handoff_diagnostics(
    theta_star: np.ndarray, seed: mmx.InverseMassMatrix, imm: np.ndarray, draws: np.ndarray, divergences: int
) -> dict[str, Any]:
    """How well the start and its metric matched the posterior the chains found.

    * ``metric_ratio_*``: adapted / seeded marginal variances per coordinate; ``metric_ratio_spread`` is its
      geometric standard deviation (1 = the seed was right up to one overall scale).
    * ``start_max_abs_z``: the largest :math:`|θ^*_i − \\bar θ_i| / \\mathrm{sd}_i` over coordinates — how far
      into the tails the start sits.
    * ``warnings``: a ratio spread above 3 or a single coordinate off by 30× (a funnel or strongly
      non-Gaussian posterior: the curvature at the mode does not describe it), or a start more than 4 sd
      away.
    """
    draws = np.asarray(draws, dtype=np.float64).reshape(-1, np.shape(draws)[-1])
    adapted = np.diagonal(imm) if np.ndim(imm) == 2 else np.asarray(imm, dtype=np.float64)
    seeded = seed.variances.astype(np.float64)
    ratio = adapted / seeded
    mean = draws.mean(axis=0)
    sd = draws.std(axis=0)
    z = np.abs(theta_star - mean) / np.where(sd > 0, sd, np.inf)
    zmax = float(np.max(z)) if z.size else 0.0
    out: dict[str, Any] = {
        "metric_ratio_spread": mmx.spread(ratio),
        "metric_ratio_min": float(np.min(ratio)),
        "metric_ratio_max": float(np.max(ratio)),
        "start_max_abs_z": zmax,
        "start_argmax_z": int(np.argmax(z)) if z.size else None,
        "divergences": int(divergences),
        "warnings": [],
    }
    if seed.source != "identity":
        lr = np.abs(np.log(ratio[np.isfinite(ratio) & (ratio > 0)]))
        if out["metric_ratio_spread"] > 3.0 or (lr.size and float(np.max(lr)) > math.log(30.0)):
            out["warnings"].append(
                "the seeded metric and the adapted one disagree (ratio spread "
                f"{out['metric_ratio_spread']:.3g}, range {out['metric_ratio_min']:.3g}…"
                f"{out['metric_ratio_max']:.3g}): the curvature at the start does not describe the posterior "
                "(a funnel or strongly non-Gaussian shape); the MAP is a poor start"
            )
    if zmax > 4.0:
        out["warnings"].append(
            f"the start θ* lies {zmax:.3g} posterior sd from the posterior mean in coordinate "
            f"{out['start_argmax_z']}: a start far in the tails"
        )
    return out
