r"""`sample`: NUTS/HMC chains (BlackJAX kernels) with a curvature-seeded, pooled window adaptation.

The MAP → NUTS hand-off
-----------------------
A posterior that is locally Gaussian around its mode θ* with precision :math:`H` has covariance
:math:`\Sigma \approx H^{-1}`. :func:`sample` uses that twice: the **metric** :math:`M^{-1}` is seeded from
the curvature at the start, and the **chains start** from "Laplace draws" :math:`θ^* + L\varepsilon_c`,
:math:`LL^T \approx H^{-1}`, inside the typical set rather than at the mode
(:mod:`gnomon.engines.sample_starts`). The warmup then *keeps adapting* (opt out with
``adapt_metric="none"``) but needs far fewer steps: it re-measures the scales of the whitened coordinates
:math:`u = L^{-1}θ`, so :math:`M^{-1} = L\,\mathrm{diag}(s)\,L^T` keeps the curvature's correlations
(:mod:`gnomon.engines.warmup`: Stan's windows, dual averaging, every chain's draws pooled).

This module is the driver: it checks the arguments, resolves the start and the metric seed, runs the warmup
(extending it while the metric is unsettled) and the sampling in compiled chunks
(:mod:`gnomon.engines.sample_loop`), and assembles the :class:`Trace` with the hand-off diagnostics
(:mod:`gnomon.engines.sample_diagnostics`).

Cost accounting: every log-density gradient counts one — the start of each chain, each leapfrog step
(NUTS ``num_integration_steps``) in warmup and sampling, plus the curvature's own cost.

Loops are compiled (``lax.scan`` over chunks of ``chunk_size`` steps, chains ``vmap``-ed, jitted once per
objective and settings); Python only draws the progress bar between chunks. With several devices and
``num_chains`` divisible by their number, the chains are sharded over them.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.curvature import mass_matrix as mmx
from gnomon.engines import warmup as wu
from gnomon.engines.handoff import HandOff
from gnomon.engines.sample_diagnostics import handoff_diagnostics
from gnomon.engines.sample_loop import SamplerSettings, compiled, run_chunks, shard, stack
from gnomon.engines.sample_starts import cold_start, resolve_init, seed_metric, start_center, start_positions
from gnomon.objective.objective import Objective
from gnomon.trace.trace import Trace
from gnomon.util.progress import Progress

ALGORITHMS = ("nuts", "hmc")
METRIC_ADAPTATIONS = ("diag", "dense", "none")
DEFAULT_WARMUP = {"identity": 1000, "curvature": 300, "array": 300, "handoff": 150, "frozen": 150}
_DEFAULT = object()


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
    if metric_shrinkage is not None and not (isinstance(metric_shrinkage, (int, float)) and metric_shrinkage >= 0):
        raise ValueError(f"metric_shrinkage must be a non-negative number, got {metric_shrinkage!r}")
    if dense not in (True, False, "auto"):
        raise ValueError(f"dense must be True, False or 'auto', got {dense!r}")
    if handoff is not None and not isinstance(handoff, HandOff):
        raise ValueError(f"handoff must be a gnomon.HandOff, got {type(handoff).__name__}")
    key = _as_key(key)
    data = obj.data if data is _DEFAULT else data
    start = resolve_init(obj, init, num_chains)
    warn: list[str] = []

    # --- poor MAP: fall back to a cold start --------------------------------------------------------------
    cold = cold_start(start) if fallback else None
    if cold is not None:
        start, msg = cold
        warn.append(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
        if isinstance(inverse_mass_matrix, str) and inverse_mass_matrix == "curvature":
            inverse_mass_matrix = None
    center = start_center(start, obj, num_chains)
    dtype = center.dtype
    center_np = np.asarray(center)

    # --- the metric seed and the settings ---------------------------------------------------------------
    k_curv, k_jit, k_warm, k_samp = jax.random.split(key, 4)
    seed, seed_kind, curvature = seed_metric(
        obj,
        center,
        inverse_mass_matrix,
        handoff,
        dense=dense,
        adapt_metric=adapt_metric,
        curvature_method=curvature_method,
        max_dense_dim=max_dense_dim,
        key=k_curv,
        data=None if data is obj.data else data,
    )
    curvature_cost = int(curvature.num_grad_evals) if curvature is not None else 0
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

    st = SamplerSettings(
        algorithm=algorithm,
        max_num_doublings=max_tree_depth,
        num_integration_steps=num_integration_steps,
        target_acceptance_rate=float(target_acceptance_rate),
        divergence_threshold=float(divergence_threshold),
        factor_dense=seed.dense,
        adapt=adapt,
        chunk=chunk_size,
    )
    fns = compiled(obj, st)
    factor = jnp.asarray(seed.factor, dtype)
    factor_inv = jnp.asarray(seed.factor_inv, dtype)

    # --- starts ---------------------------------------------------------------------------------------------
    if jitter is None:
        jitter = 1.0 if seeded else 0.1
    draw_factor = factor if seed.draw_factor is None else jnp.asarray(seed.draw_factor, dtype)
    states, positions, shrink_tries = start_positions(
        fns["init"], data, start, center, draw_factor, jitter, k_jit, num_chains
    )
    init_cost = num_chains + (shrink_tries * num_chains)
    states = shard(states, num_chains)

    # --- warmup ---------------------------------------------------------------------------------------------
    head, tail = wu.schedule(num_warmup, seeded, adapt)
    total = num_warmup + num_samples
    bar = Progress(
        total,
        f"{algorithm} ×{num_chains}",
        enabled=progress if progress is not None else (None if total * num_chains >= 2000 else False),
    )
    ad = fns["adapt_init"](positions, jnp.asarray(step_size, dtype), factor)
    args = (data, factor, factor_inv, jnp.asarray(shrink, dtype))
    warm_out: list[dict] = []
    tally = {"t": 0, "grads": 0, "div": 0}

    def on_warmup_chunk(outs: dict[str, np.ndarray], ad: wu.AdaptState) -> None:
        tally["t"] += len(outs["n_steps"])
        tally["grads"] += int(np.sum(outs["n_steps"]))
        tally["div"] += int(np.sum(outs["diverging"]))
        if keep_warmup:
            warm_out.append(outs)
        bar.update(tally["t"], phase="warmup", step_size=float(ad.step_size), divergences=tally["div"])

    def run_warmup(rows: np.ndarray) -> None:
        nonlocal states, ad
        states, ad = run_chunks(
            fns["chunk"], states, ad, k_warm, tally["t"], rows, True, args, chunk_size, on_warmup_chunk
        )

    run_warmup(head)
    extended = []
    if auto_warmup and seeded and adapt != "none" and len(head):
        last = wu.last_window(head)
        while wu.unsettled(ad, obj.dim) and tally["t"] + 2 * last + len(tail) <= max_warmup:
            last *= 2
            extended.append(last)
            bar.total += last
            run_warmup(wu.extra_window(last))
    run_warmup(tail)
    num_warmup = tally["t"]
    warm_steps, div_warm = tally["grads"], tally["div"]
    if num_warmup > 0:
        step_final, imm = fns["adapt_final"](ad)
    else:
        step_final, imm = jnp.asarray(step_size, dtype), jnp.asarray(seed.matrix, dtype)
    if not bool(np.isfinite(np.asarray(step_final))) or float(step_final) <= 0:
        raise ValueError(f"warmup ended with an unusable step size {float(step_final)!r}")

    # --- sampling -------------------------------------------------------------------------------------------
    ad = ad._replace(step_size=jnp.asarray(step_final, dtype), imm=jnp.asarray(imm, dtype))
    samp_out: list[dict] = []
    done = {"t": 0, "div": 0}

    def on_sampling_chunk(outs: dict[str, np.ndarray], ad: wu.AdaptState) -> None:
        done["t"] += len(outs["n_steps"])
        done["div"] += int(np.sum(outs["diverging"]))
        samp_out.append(outs)
        bar.update(
            num_warmup + done["t"],
            force=done["t"] == num_samples,
            phase="sampling",
            step_size=float(step_final),
            divergences=div_warm + done["div"],
        )

    states, ad = run_chunks(
        fns["chunk"],
        states,
        ad,
        k_samp,
        0,
        np.zeros((num_samples, 2), np.int32),
        False,
        args,
        chunk_size,
        on_sampling_chunk,
    )
    div_samp = done["div"]
    bar.close(f"{div_samp} divergences")

    # --- the trace ------------------------------------------------------------------------------------------
    draws = stack(samp_out)
    sample_steps = int(np.sum(draws["n_steps"]))
    theta = draws.pop("theta")
    log_prob = draws.pop("log_prob")
    warmup = None
    if keep_warmup and warm_out:
        w = stack(warm_out)
        warmup = {"z": w.pop("theta"), "log_prob": w.pop("log_prob"), "stats": w}
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
        "curvature": curvature.describe() if curvature is not None else None,
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
    if curvature is not None:
        extras["curvature_diag"] = np.asarray(curvature.diag)
        if getattr(curvature, "matrix", None) is not None:
            extras["curvature_matrix"] = np.asarray(curvature.matrix)
    return Trace(
        kind="sampling",
        z=theta,  # the engine's coordinates; Trace derives base θ when obj has a θ-map
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
