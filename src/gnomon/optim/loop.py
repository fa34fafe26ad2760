"""The compiled optimizer loop shared by every gradient-based engine.

One driver runs any optax transformation (a :class:`gnomon.optim.Program`) over an :class:`~gnomon.Objective`:

* two compiled programs per (objective, method settings, recording settings, argument shapes), lowered ahead of
  time, compiled in background threads (:class:`gnomon.optim.background.Pending`; :func:`prepare` starts them
  before a caller's other work) and cached, so that a second call does not recompile: ``init`` (the
  transformation's ``init`` at θ_0 — power iterations, in-program estimates — and no loss evaluation) and
  ``chunk``, a
  ``lax.while_loop`` over at most one chunk of steps whose body evaluates ``value_and_grad`` once: the
  objective's model is inlined at as few sites as the method needs (the body, plus its estimators);
* each body iteration evaluates θ_t, records row t (θ_t, loss(θ_t) and the asked channels), tests the stop
  rules and applies the update: ``loss[t]`` is the loss at ``θ[t]`` and the last row is the final point;
* Python runs only between chunks (rows to the host, progress bar); a batch of fits is the same body
  under ``jax.vmap``, stepping its members in lockstep;
* compilation and execution are timed apart (``info["compile_s"]``, ``info["run_s"]``; ``runtime_s`` is the
  wall time, compilation that overlapped other work counted once);
* the compiled chunk also evaluates the loss and gradient at given points (:attr:`LoopResult.probe`, with
  ``num_steps = −1``) for the checks at the end of a run, compiling nothing new.

Channels (:func:`resolve_channels`): ``grad_norm`` (|∇loss(θ_t)|), ``step_norm`` (|θ_{t+1} − θ_t|),
``learning_rate`` (the product of the state's ``learning_rate`` fields after the update from θ_t) and
``accepted`` (a backtracking rule's verdict on θ_t), where asked and available (:mod:`gnomon.optim.readout`);
the final row holds NaN for the channels that describe a step. By default only the ones that cost nothing per
step are recorded (a norm is an O(D) pass per step: on cheap objectives it is a measurable share of the loop);
the gradient norm at the final point is always reported (``info["final_grad_norm"]``).

Stopping: the gradient-norm tolerance ``tol`` (|∇loss| ≤ tol), the relative loss change ``ftol``
(|f_{t-1} − f_t| ≤ ftol · max(|f_{t-1}|, |f_t|, 1)), ``num_steps``, a non-finite loss/gradient (status
names the step; the trace keeps every finite point before it), or a stall: ``STALL_STEPS`` updates in a row
that leave θ bit-for-bit unchanged (status ``"stalled at step t: ..."``; float32 on a large loss does this).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gnomon.objective.objective import Objective
from gnomon.optim import readout
from gnomon.optim.background import Pending
from gnomon.optim.methods import Program
from gnomon.trace.trace import Trace
from gnomon.util.programs import ProgramCache
from gnomon.util.progress import Progress
from gnomon.util.validate import default_key

RUNNING, CONVERGED, NONFINITE, MAX_STEPS, STALLED = 0, 1, 2, 3, 4
STALL_STEPS = 20  # updates in a row that leave θ bit-for-bit unchanged: the run has stalled
CHANNELS = ("grad_norm", "step_norm", "learning_rate", "accepted")

# Rows buffered on the device per chunk: bounded by memory (≈ 64 MB of θ rows) and by the run length.
_ROW_BYTES_BUDGET = 64 * 2**20
_MAX_ROWS = 1024  # per chunk while a progress bar is drawn
_MAX_ROWS_QUIET = 1 << 16  # without a bar: few chunks (each costs a dispatch and a host copy)


class LoopSettings(NamedTuple):
    """Static recording and stopping settings (part of the compile key)."""

    rows: int
    record_every: int
    tol: float | None
    ftol: float | None
    batched: bool
    channels: tuple[str, ...]


class LoopResult(NamedTuple):
    """What :func:`run_loop` returns: the trace, the final optimizer state (numpy), the timings and ``probe``:
    ``probe(thetas) -> (losses, grads)`` evaluates the loss and its gradient at points ``(K, D)`` (``(K, B, D)``
    for a batch, one point per member) with the compiled loop itself — no new compilation — for checks at the
    end of a run (:mod:`gnomon.optim.verdict`); each point costs one gradient evaluation."""

    trace: Trace
    state: Any
    compile_s: float
    run_s: float
    probe: Any = None


class _Carry(NamedTuple):
    theta: Any  # θ_t, not yet evaluated
    opt_state: Any
    t: Any
    status: Any
    prev_loss: Any  # f_{t-1} (ftol)
    n_evals: Any  # evaluations when a line search reuses its own (else unused: t + 1, one per evaluated point)
    grad: Any  # ∇loss at the latest finite point (its norm is the final gradient norm)
    last: Any  # thinned batched runs: (θ, f, t) of the latest finite point; else None
    still: Any  # updates in a row that left θ bit-for-bit unchanged (STALL_STEPS of them stop the run)


class _Summary(NamedTuple):
    """The small part of the carry the host reads after each chunk."""

    status: Any
    t: Any
    loss: Any  # the loss at the last evaluated point
    num_grad_evals: Any  # the loop's evaluations plus the optimizer's own (num_grad_evals fields)
    grad_norm: Any  # |∇loss| at the final point (the latest finite one)
    last: Any  # thinned batches: (θ, f, t) of the latest finite point (else the last recorded row is final)


class _Rows(NamedTuple):
    theta: Any
    scalars: Any  # (rows, [B,] 1 + channels): loss and channels in one buffer, one write per step
    step: Any  # batched runs: (rows, B) step of each member's row (−1: none); None for a single run


class _Compiled(NamedTuple):
    init: Any  # Pending: compiled in a background thread, waited for at the first call
    chunk: Any
    chunk_steps: int
    channels: tuple[str, ...]
    has_report: bool  # the state holds nodes that readout.report reads (else it is not copied to the host)
    lower_s: float = 0.0  # seconds spent tracing and lowering (in the caller's thread)
    unreported: list = [True]  # [True] until a run has reported this build's compile time


# (compile key, method, settings, argument shapes) -> init and chunk compiled ahead of time (no Python function
# kept: the objective's arrays are constants of the executables, freed with the entry)
_PROGRAMS: ProgramCache = ProgramCache("optimizer loops", maxsize=64)


def compile_key(obj: Objective) -> Hashable:
    """The objective's compile key: ``obj.compile_key`` (shared by objectives that differ only in bound data)
    when it has one, else the objective itself."""
    key = getattr(obj, "compile_key", None)
    return obj if key is None else key


def _rows_for(dim: int, itemsize: int, num_steps: int, record_every: int, progress_on: bool = True) -> int:
    most = _MAX_ROWS if progress_on else _MAX_ROWS_QUIET
    cap = max(1, min(most, _ROW_BYTES_BUDGET // max(1, dim * itemsize)))
    need = max(1, math.ceil((num_steps + 1) / record_every))
    return min(cap, _round_up(need))


def _round_up(n: int) -> int:
    """``n`` rounded up to 2^k or 1.5 · 2^k: few distinct compilations, under ⅓ of the rows unused."""
    grain = 1 << max(0, n.bit_length() - 2)
    return -(-n // grain) * grain


def _avals(tree: Any) -> Hashable:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)


def _build(obj: Objective, program: Program, settings: LoopSettings, example: tuple) -> tuple[_Compiled, float]:
    """Lower and compile init and chunk for the example arguments; returns them and the seconds it took."""
    start = time.perf_counter()
    rows, record_every, tol, ftol, batched, asked = settings
    chunk_steps = rows * record_every
    theta0, data, key, arrays = example

    def make(data, key, arrays):
        return optax.with_extra_args_support(program.make(data, key, arrays))

    track_last = batched and record_every > 1

    def init(theta0, data, key, arrays):
        st = make(data, key, arrays).init(theta0)
        dt = theta0.dtype
        nan = jnp.full((), jnp.nan, dt)
        last = (theta0, nan, jnp.zeros((), jnp.int32)) if track_last else None
        return _Carry(theta0, st, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), nan,
                      jnp.zeros((), jnp.int32), jnp.full_like(theta0, jnp.nan), last, jnp.zeros((), jnp.int32))

    # init first: its lowered output shapes tell which channels the state provides (no separate trace)
    init_v = jax.vmap(init, in_axes=(0, 0, None, 0)) if batched else init  # arrays: one row per member
    init_lowered = jax.jit(init_v).lower(theta0, data, key, arrays)
    carry_shape = init_lowered.out_info
    state_shape = carry_shape.opt_state
    if batched:
        state_shape = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state_shape)
    has = {"learning_rate": bool(readout.scalar_fields(state_shape, "learning_rate")),
           "accepted": readout.step_accepted(state_shape) is not None}
    channels = tuple(c for c in asked if has.get(c, True))
    reuse = readout.linesearch_state(state_shape) is not None
    can_reject = readout.step_accepted(state_shape) is not None  # backtracking: steps back from a bad point
    need_gnorm = "grad_norm" in channels or tol is not None
    has_report = any(readout.report_nodes(state_shape))
    # the update computed at the stopping point is discarded; only a state that is read afterwards (a report,
    # evaluation counters) needs the per-step select that keeps it out (on a cheap loss it costs ~25 % a step)
    keep_state = has_report or bool(optax.tree.get_all_with_path(state_shape, "num_grad_evals"))
    init_c = Pending(init_lowered)

    def member_step(c: _Carry, data, key, arrays, num_steps, first, record_now):
        """One step of one fit: evaluate θ_t, record its row, test the stop rules, update. Branch-free except
        for reusing a line search's evaluation."""
        tx = make(data, key, arrays)
        dtype = c.theta.dtype

        def value_fn(theta, data=data):
            return obj.loss(theta, data)

        if reuse:
            def fresh(_):
                return jax.value_and_grad(obj.loss)(c.theta, data)

            def reused(_):
                ls = readout.linesearch_state(c.opt_state)
                return ls.value, ls.grad

            f, g = jax.lax.cond(first, fresh, reused, None)
            evaluated = first.astype(jnp.int32)
        else:
            f, g = jax.value_and_grad(obj.loss)(c.theta, data)
            evaluated = 1
        f = f.astype(dtype)
        g = g.astype(dtype)
        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(g))
        gnorm = jnp.linalg.norm(g) if need_gnorm else None
        # an exactly zero gradient is a stationary point whatever the tolerances (not a float32 stall)
        converged = jnp.all(g == 0)
        if tol is not None:
            converged = converged | (gnorm <= tol)
        if ftol is not None:
            scale = jnp.maximum(jnp.maximum(jnp.abs(c.prev_loss), jnp.abs(f)), 1.0)
            converged = converged | ((c.t > 0) & (jnp.abs(c.prev_loss - f) <= ftol * scale))
        stalled = c.still >= STALL_STEPS
        # a backtracking method rejects a non-finite trial point and steps back from it (NaN counts as a rise),
        # so the run goes on; only a non-finite start, or one at the last step, stops it
        backs_off = (~finite & (c.t > 0) & (c.t < num_steps)) if can_reject else jnp.zeros((), bool)
        stop = jnp.where(~finite & ~backs_off, NONFINITE,
                         jnp.where(converged, CONVERGED, jnp.where(stalled, STALLED,
                                                                   jnp.where(c.t >= num_steps, MAX_STEPS, RUNNING))))
        running = stop == RUNNING

        if can_reject:  # a finite loss with a non-finite gradient is rejected too; the inner state never sees NaN
            f_tx, g_tx = jnp.where(finite, f, jnp.nan).astype(dtype), jnp.where(finite, g, 0).astype(dtype)
        else:
            f_tx, g_tx = f, g

        def update(_):
            return tx.update(g_tx, c.opt_state, c.theta, value=f_tx, grad=g_tx, value_fn=value_fn, data=data)

        if reuse:  # a probe (num_steps < 0, :func:`_probe`) needs f and g only: skip the line search's evaluations
            updates, st = jax.lax.cond(num_steps >= 0, update, lambda _: (jnp.zeros_like(g_tx), c.opt_state), None)
        else:
            updates, st = update(None)
        theta = (c.theta + updates).astype(dtype)
        nan = jnp.full((), jnp.nan, dtype)
        cols = [f]
        for name in channels:
            if name == "grad_norm":
                cols.append(gnorm)
            elif name == "step_norm":
                cols.append(jnp.where(running, jnp.linalg.norm(theta - c.theta).astype(dtype), nan))
            elif name == "learning_rate":
                cols.append(jnp.where(running, jnp.asarray(readout.step_learning_rate(st), dtype), nan))
            else:
                cols.append(jnp.where(running, jnp.asarray(readout.step_accepted(st), dtype), nan))
        extra = 0
        if reuse:
            extra = jnp.where(running, readout.linesearch_state(st).info.num_linesearch_steps, 0)
        if keep_state and not batched:  # the state of the step it stopped at (a batch selects in the chunk)
            st = jax.tree.map(lambda new, old: jnp.where(running, new, old), st, c.opt_state)
        last = c.last
        if track_last:
            last = jax.tree.map(lambda new, old: jnp.where(finite | backs_off, new, old), (c.theta, f, c.t), c.last)
        n_evals = c.n_evals + evaluated + jnp.asarray(extra, jnp.int32) if reuse else c.n_evals
        still = jnp.where(running & jnp.all(theta == c.theta), c.still + 1, 0).astype(jnp.int32)
        c_next = _Carry(theta, st, c.t + running.astype(jnp.int32), stop.astype(jnp.int32), f, n_evals,
                        jnp.where(finite, g, c.grad), last, still)
        row = (c.theta, jnp.stack(cols).astype(dtype))
        return c_next, row, finite | backs_off  # a rejected non-finite trial point is a row like any other

    step_fn = (jax.vmap(member_step, in_axes=(0, 0, None, 0, None, None, None)) if batched else member_step)

    def chunk(carry: _Carry, data, key, arrays, num_steps, first_chunk):
        # Single runs write row t at k // record_every, an unrecorded finite row at the scratch index `rows` and
        # a non-finite one at `rows + 1`. A batch steps in lockstep under the shared counter k and writes one
        # shared index (a dynamic_update_slice, not a per-member scatter); its final points come from `last`.
        lead = carry.prev_loss.shape
        dtype = carry.theta.dtype
        dim = carry.theta.shape[-1]
        bufs = _Rows(jnp.zeros((rows + 2, *lead, dim), dtype), jnp.full((rows + 2, *lead, 1 + len(channels)),
                     jnp.nan, dtype), jnp.full((rows + 2, *lead), -1, jnp.int32) if batched else None)
        put = jax.lax.dynamic_update_index_in_dim

        def cond(state):
            c, _, k = state
            return jnp.any(c.status == RUNNING) & (k < chunk_steps)

        def body(state):
            c, b, k = state
            record_now = k % record_every == 0
            first = first_chunk & (k == 0)
            c_next, (th, scal), finite = step_fn(c, data, key, arrays, num_steps, first, record_now)
            if batched:
                active = c.status == RUNNING  # a member that stopped keeps its carry
                moved = active & (c_next.status == RUNNING)  # ... and its optimizer state the step it stopped at
                keep = jax.vmap(lambda a, n, o: jnp.where(a, n, o))
                masks = _Carry(*(jax.tree.map(lambda _, m=(moved if f == "opt_state" else active): m, getattr(c, f))
                                 for f in c._fields))
                c_next = jax.tree.map(keep, masks, c_next, c)
                step = jnp.where(active & finite & record_now, c.t, -1).astype(jnp.int32)
                idx = jnp.where(record_now, k // record_every, rows)
                b = _Rows(put(b.theta, th, idx, 0), put(b.scalars, scal, idx, 0), put(b.step, step, idx, 0))
            else:  # a single run's row t is at a known slot (its step is implied): no step buffer
                idx = jnp.where(finite, jnp.where(record_now, k // record_every, rows), rows + 1)
                b = _Rows(put(b.theta, th, idx, 0), put(b.scalars, scal, idx, 0), None)
            return c_next, b, k + 1

        c, b, _ = jax.lax.while_loop(cond, body, (carry, bufs, jnp.zeros((), jnp.int32)))
        own = (jax.vmap(readout.own_grad_evals) if batched else readout.own_grad_evals)(c.opt_state)
        gnorm = jnp.linalg.norm(c.grad, axis=-1)
        if batched:  # members first, as the trace holds them (a transpose on the device is cheaper than on the host)
            b = _Rows(jnp.swapaxes(b.theta, 0, 1), jnp.swapaxes(b.scalars, 0, 1), jnp.swapaxes(b.step, 0, 1))
        evals = c.n_evals if reuse else c.t + 1
        return c, b, _Summary(c.status, c.t, c.prev_loss, evals + own, gnorm, c.last)

    n = jax.ShapeDtypeStruct((), jnp.int32)
    flag = jax.ShapeDtypeStruct((), jnp.bool_)
    chunk_c = Pending(jax.jit(chunk).lower(carry_shape, data, key, arrays, n, flag))
    lower_s = time.perf_counter() - start
    return _Compiled(init_c, chunk_c, chunk_steps, channels, has_report, lower_s, [True]), lower_s


def _compiled(obj: Objective, program: Program, settings: LoopSettings, example: tuple) -> tuple[_Compiled, float]:
    key = (compile_key(obj), program.name, program.cache_key, settings, _avals(example))
    hit = _PROGRAMS.get(key)
    if hit is not None:
        return hit, 0.0
    built, seconds = _build(obj, program, settings, example)
    return _PROGRAMS.put(key, built), seconds


def _status_text(code: int, t: int, loss: float, dtype: Any = None) -> str:
    """``loss``: the value at the point where the run stopped (a finite one at a non-finite stop means the
    gradient was not finite); ``dtype``: θ's (the float32 advice only where θ is in low precision)."""
    if code == CONVERGED:
        return "converged"
    if code == MAX_STEPS:
        return "max_steps"
    if code == STALLED:
        low = dtype is not None and np.dtype(dtype).itemsize < 8
        why = ("e.g. float32 on a large loss: use float64, or stop earlier with ftol or a larger tol" if low
               else "at or next to an optimum, or along a flat direction: set tol or ftol to stop earlier")
        return (f"stalled at step {t}: {STALL_STEPS} updates in a row left θ unchanged (the loss is flat to working "
                f"precision, {why})")
    what = "loss" if not math.isfinite(loss) else "gradient"
    return f"diverged at step {t}: non-finite {what} ({loss if what == 'loss' else 'grad'})"


def run_loop(
    obj: Objective,
    theta0: Any,
    program: Program,
    *,
    num_steps: int,
    record_every: int = 1,
    tol: float | None = None,
    ftol: float | None = None,
    data: Any = None,
    key: Any = None,
    batched: bool = False,
    progress: bool | None = None,
    channels: str | tuple[str, ...] | None = None,
) -> LoopResult:
    """Run ``program`` from ``theta0`` (``(D,)``, or ``(B, D)`` with ``batched``) -> :class:`LoopResult`."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative int, got {num_steps!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, (int, np.integer)) or record_every < 1:
        raise ValueError(f"record_every must be a positive int, got {record_every!r}")
    for name, v in (("tol", tol), ("ftol", ftol)):
        if v is not None and (isinstance(v, bool) or not (isinstance(v, (int, float)) and v >= 0)):
            raise ValueError(f"{name} must be a non-negative number or None, got {v!r}")
    channels = resolve_channels(channels, tol)
    theta0 = jnp.asarray(theta0)
    if not jnp.issubdtype(theta0.dtype, jnp.floating):
        theta0 = theta0.astype(jnp.result_type(float))
    want = 2 if batched else 1
    if theta0.ndim != want or theta0.shape[-1] != obj.dim:
        expected = f"(B, {obj.dim})" if batched else f"({obj.dim},)"
        raise ValueError(f"θ0 has shape {tuple(theta0.shape)}, expected {expected} for {obj!r}")
    key = default_key() if key is None else key

    start = time.perf_counter()
    bar = Progress(num_steps, f"{program.name}",
                   enabled=progress if progress is not None else (None if num_steps >= 2000 else False))
    settings = _settings(obj, theta0, num_steps, record_every, tol, ftol, batched, channels, bar.enabled)
    compiled, _ = _compiled(obj, program, settings, (theta0, data, key, program.arrays))
    compiled.init.executable()
    compiled.chunk.executable()
    compile_s = 0.0
    if compiled.unreported[0]:  # this build's first run: its lowering and compiles (maybe begun by prepare())
        compiled.unreported[0] = False
        compile_s = compiled.lower_s + compiled.init.seconds + compiled.chunk.seconds
    run_start = time.perf_counter()
    carry = compiled.init(theta0, data, key, program.arrays)
    pieces: list[_Rows] = []
    n_steps = np.int32(num_steps)
    first = np.bool_(True)
    while True:
        carry, bufs, summary = compiled.chunk(carry, data, key, program.arrays, n_steps, first)
        first = np.bool_(False)
        bufs, summary = jax.device_get((bufs, summary))
        pieces.append(bufs)
        bar.update(int(np.min(summary.t)), loss=_mean_finite(np.asarray(summary.loss)))
        if np.all(summary.status != RUNNING):
            break
    bar.close()
    state = jax.device_get(carry.opt_state) if compiled.has_report else None
    runtime = time.perf_counter() - start
    run_s = time.perf_counter() - run_start
    info = {"engine": program.name, **program.info, "num_steps": int(num_steps), "record_every": int(record_every),
            "tol": settings.tol, "ftol": settings.ftol, "objective": dict(obj.info),
            "compile_s": compile_s, "run_s": run_s}
    rows_all = pieces[0] if len(pieces) == 1 else _Rows(  # chunks follow each other on the row axis
        *(None if getattr(pieces[0], f) is None else
          np.concatenate([np.asarray(getattr(p, f)) for p in pieces], axis=int(batched)) for f in _Rows._fields))
    assemble = _assemble_batch if batched else _assemble
    if not batched:
        info["final_grad_norm"] = float(summary.grad_norm)
    trace = assemble(rows_all, pieces, summary, obj, info, runtime, compiled.channels, theta0)

    def probe(thetas: Any) -> tuple[np.ndarray, np.ndarray]:
        return _probe(compiled, carry, np.asarray(thetas), data, key, program.arrays)

    return LoopResult(trace, state, compile_s, run_s, probe)


def _settings(obj: Objective, theta0: Any, num_steps: int, record_every: int, tol: float | None, ftol: float | None,
              batched: bool, channels: tuple[str, ...], bar_enabled: bool) -> LoopSettings:
    width = obj.dim * (theta0.shape[0] if batched else 1)
    rows = _rows_for(width, theta0.dtype.itemsize, num_steps, record_every, bar_enabled)
    return LoopSettings(rows, int(record_every), None if tol is None else float(tol),
                        None if ftol is None else float(ftol), batched, channels)


def prepare(obj: Objective, theta0: Any, program: Program, *, num_steps: int, record_every: int = 1,
            tol: float | None = None, ftol: float | None = None, data: Any = None, key: Any = None,
            batched: bool = False, progress: bool | None = None, channels: str | tuple[str, ...] | None = None,
            ) -> None:
    """Lower the programs :func:`run_loop` will run with these arguments and start compiling them in the background
    (``program.arrays`` may be placeholders of the right shapes and dtypes): a caller that has other work before the
    run — ``gn.optimize``'s curvature estimate at θ_0 — overlaps it with the compilation. Arguments as
    :func:`run_loop`, which finds the programs in its cache; invalid arguments are left for it to report."""
    try:
        channels = resolve_channels(channels, tol)
        theta0 = jnp.asarray(theta0)
        if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
            return
        enabled = progress if progress is not None else (None if num_steps >= 2000 else False)
        if enabled is None:  # Progress's own rule (a terminal draws), without drawing anything
            isatty = getattr(sys.stderr, "isatty", None)
            enabled = bool(isatty()) if callable(isatty) else False
        settings = _settings(obj, theta0, num_steps, record_every, tol, ftol, batched, channels, bool(enabled))
        _compiled(obj, program, settings, (theta0, data, default_key() if key is None else key, program.arrays))
    except (ValueError, TypeError):
        return


def _probe(compiled: _Compiled, carry: _Carry, thetas: np.ndarray, data: Any, key: Any, arrays: Any
           ) -> tuple[np.ndarray, np.ndarray]:
    """Loss and gradient at each of ``thetas`` by one call of the compiled chunk each, from ``carry`` with θ set
    and ``num_steps = −1``: the body evaluates θ, stops before any step and leaves the gradient in the carry
    (a non-finite one as NaN)."""
    losses, grads = [], []
    running = np.zeros(np.shape(carry.status), np.int32)
    for theta in thetas:
        th = jnp.asarray(theta, carry.theta.dtype)
        c = carry._replace(theta=th, status=running, t=np.zeros_like(running), still=np.zeros_like(running),
                           prev_loss=jnp.full(np.shape(carry.prev_loss), jnp.nan, carry.prev_loss.dtype),
                           grad=jnp.full(th.shape, jnp.nan, th.dtype))
        out, _, summary = compiled.chunk(c, data, key, arrays, np.int32(-1), np.bool_(True))
        f, g = jax.device_get((summary.loss, out.grad))
        losses.append(np.asarray(f))
        grads.append(np.asarray(g))
    return np.stack(losses), np.stack(grads)


def resolve_channels(channels: str | tuple[str, ...] | None, tol: float | None = None) -> tuple[str, ...]:
    """The recorded channels: None → the ones that cost nothing per step (``learning_rate``, ``accepted``, and
    ``grad_norm`` when ``tol`` is set, since the stop test computes it); ``"all"`` → :data:`CHANNELS`; or a
    subset of :data:`CHANNELS`."""
    if channels is None:
        return ("grad_norm", "learning_rate", "accepted") if tol is not None else ("learning_rate", "accepted")
    if isinstance(channels, str):
        if channels != "all":
            raise ValueError(f"channels must be None, 'all' or a subset of {CHANNELS}, got {channels!r}")
        return CHANNELS
    unknown = set(channels) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channels {sorted(unknown)}; expected a subset of {CHANNELS} (or 'all')")
    return tuple(c for c in CHANNELS if c in channels)


def _mean_finite(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if x.size else float("nan")


def _named(scalars: np.ndarray, channels: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {name: np.array(scalars[..., j]) for j, name in enumerate(("loss", *channels))}  # writable copies


def _assemble(rows: _Rows, pieces: list[_Rows], summary: _Summary, obj: Objective, info: dict, runtime: float,
              channels: tuple[str, ...], theta0: Any = None) -> Trace:
    """The trace of one fit: each chunk's recorded prefix, then the latest scratch row when it is the final
    point (thinned runs), or the non-finite start when nothing finite was evaluated."""
    n = len(pieces)
    size = np.asarray(pieces[0].theta).shape[0]
    per = size - 2
    every = int(info["record_every"])
    code, t = int(summary.status), int(summary.t)
    final_t = t - 1 if code == NONFINITE else t  # the latest finite point
    if final_t < 0:  # nothing finite: the start, with its non-finite loss
        theta = np.asarray(theta0)[None]
        named = {"loss": np.asarray([summary.loss], np.asarray(rows.scalars).dtype)}
        named.update({c: np.full(1, np.nan, named["loss"].dtype) for c in channels})
        idx, step = None, np.zeros(1, np.int32)
    else:
        # row t of a single run sits at chunk t // (per · every), slot (t mod per · every) / every (recorded steps
        # are the multiples of every); the latest unrecorded finite row is in its chunk's scratch slot `per`
        recorded = np.arange(0, final_t + 1, every)
        idx = (recorded // (per * every)) * size + (recorded % (per * every)) // every
        step = recorded
        if final_t % every:
            idx = np.append(idx, (final_t // (per * every)) * size + per)
            step = np.append(step, final_t)
        if n == 1 and not final_t % every:
            idx = slice(0, len(recorded))  # the common case: a recorded prefix (views, no gather)
    if idx is not None:
        theta = np.asarray(rows.theta)[idx]
        named = _named(np.asarray(rows.scalars)[idx], channels)
    for name in ("step_norm", "learning_rate", "accepted"):
        if name in named:
            named[name][-1] = np.nan  # no step was taken from the final point (named holds copies)
    stats = {name: named[name] for name in channels if name in ("grad_norm", "step_norm")
             or not np.all(np.isnan(named[name]))}
    loss_now = float(summary.loss)
    return Trace(
        kind="optimization",
        z=theta,  # the engine's coordinates; Trace derives base θ when obj has a θ-map
        loss=named["loss"],
        stats=stats,
        step=np.asarray(step, np.int32),
        status=_status_text(code, t, loss_now, np.asarray(theta).dtype),
        num_grad_evals=int(summary.num_grad_evals),
        runtime_s=runtime,
        info=info,
        layout=obj.base_layout,
        thetamap=obj.thetamap,
    )


def _assemble_batch(rows: _Rows, pieces: list[_Rows], summary: _Summary, obj: Objective, info: dict,
                    runtime: float, channels: tuple[str, ...], theta0: Any = None) -> Trace:
    """The (B, T, D) trace of a batch, vectorised over members (same rows as :func:`_assemble` per member).

    Each member's recorded rows are a prefix of the joined recorded slots (a stopped fit records nothing
    more); its final point (``summary.last``) is appended where it was not recorded, and shorter members are
    padded by repeating their final row (``extras["num_rows"]`` says how many rows are real)."""
    n = len(pieces)
    size = np.asarray(pieces[0].step).shape[1]
    per = size - 2
    slots = slice(0, per) if n == 1 else np.concatenate([np.arange(c * size, c * size + per) for c in range(n)])
    step_all = np.asarray(rows.step)[:, slots]  # (B, R); the recorded rows of every member are a prefix
    R = int(np.count_nonzero(np.any(step_all >= 0, axis=0)))
    step_rows = step_all[:, :R]
    theta_rows = np.asarray(rows.theta)[:, slots][:, :R]  # (B, R, D)
    scal_rows = np.asarray(rows.scalars)[:, slots][:, :R]
    B = step_all.shape[0]
    nrec = np.count_nonzero(step_rows >= 0, axis=1)
    last_gnorm = np.asarray(summary.grad_norm)
    status = np.asarray(summary.status)
    t = np.asarray(summary.t)
    members = np.arange(B)
    prev = np.maximum(nrec - 1, 0)
    last_step = np.where(nrec > 0, step_rows[members, prev] if R else -1, -1)
    if summary.last is not None:
        last_theta, last_loss, last_t = (np.asarray(x) for x in summary.last)
    else:  # every finite point was recorded: the final point is the last recorded row (or a non-finite start)
        last_theta, last_loss = np.asarray(theta0), np.asarray(summary.loss)
        last_t = np.where(nrec > 0, last_step, 0)
    append = last_step != last_t
    length = nrec + append
    T = int(max(length.max(), 1))
    dtype = scal_rows.dtype
    # the final row of each member: the appended point, or its last recorded row
    fin_theta = np.where(append[:, None], last_theta, theta_rows[members, prev] if R else last_theta)
    fin_scal = np.full((B, 1 + len(channels)), np.nan, dtype)
    if R:
        fin_scal = np.where(append[:, None], fin_scal, scal_rows[members, prev])
    fin_scal[:, 0] = np.where(append, last_loss, fin_scal[:, 0])
    if "grad_norm" in channels:
        j = 1 + channels.index("grad_norm")
        fin_scal[:, j] = np.where(append, last_gnorm, fin_scal[:, j])
    fin_step = np.where(append, last_t, last_step).astype(np.int32)
    if T <= R:  # views of the recorded rows, padded in place below (copies: the host buffers are read-only)
        theta, scalars, steps = theta_rows[:, :T].copy(), scal_rows[:, :T].copy(), step_rows[:, :T].copy()
    else:
        theta = np.concatenate([theta_rows, np.empty((B, T - R, theta_rows.shape[2]), theta_rows.dtype)], axis=1)
        scalars = np.concatenate([scal_rows, np.empty((B, T - R, scal_rows.shape[2]), dtype)], axis=1)
        steps = np.concatenate([step_rows, np.empty((B, T - R), np.int32)], axis=1)
    pad = np.arange(T)[None, :] >= nrec[:, None]  # (B, T): the final row (appended point or repeat) from here
    who = np.nonzero(pad)[0]
    theta[pad] = fin_theta[who]
    scalars[pad] = fin_scal[who]
    steps[pad] = fin_step[who]
    named = _named(scalars, channels)
    at_or_after_final = np.arange(T)[None, :] >= (length - 1)[:, None]
    stats = {}
    for name in channels:
        if name in ("step_norm", "learning_rate", "accepted"):
            named[name][at_or_after_final] = np.nan
        if name in ("grad_norm", "step_norm") or not np.all(np.isnan(named[name])):
            stats[name] = named[name]
    statuses = tuple(_status_text(int(status[i]), int(t[i]), float(np.asarray(summary.loss)[i]), theta.dtype)
                     for i in range(B))
    return Trace(
        kind="optimization",
        z=theta,  # the engine's coordinates; Trace derives base θ when obj has a θ-map
        loss=named["loss"],
        stats=stats,
        step=steps,
        status=statuses,
        num_grad_evals=np.asarray(summary.num_grad_evals, dtype=np.int64),
        runtime_s=runtime,
        info=info,
        layout=obj.base_layout,
        thetamap=obj.thetamap,
        extras={"num_rows": length.astype(np.int64), "final_grad_norm": last_gnorm.astype(np.float64)},
    )
