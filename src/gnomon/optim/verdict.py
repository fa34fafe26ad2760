r"""What a finished fit is: checks at the end of ``gn.optimize`` that replace a status the evidence contradicts.

The loop stops on simple rules (a vanished gradient, a relative loss change, ``num_steps``, θ no longer
changing). Three checks on the host then look at what the run did, evaluating gradients with the compiled loop
itself (:attr:`gnomon.optim.loop.LoopResult.probe`: nothing new to compile; every evaluation is counted in
``num_grad_evals``):

**No progress** (status ``"no progress in t steps: ..."``). A run of at least :data:`NO_PROGRESS_STEPS` steps that
stopped as ``max_steps``, ``stalled`` or ``converged`` by ``ftol`` although no point it evaluated had a lower loss
than its start, with a gradient at the
start that is not zero (nor within ``tol``), did not converge and did not stall at an optimum: it never moved.
The status names the likely cause (a curvature that fell back, float32 steps below θ's resolution, a learning
rate, every trial step rejected). Where a curvature diagonal c is known and its Newton step
:math:`\tfrac12 \sum_i g_i^2/c_i` predicts a decrease below the loss's resolution (:math:`8ε\max(|f|,1)`), the
start is a minimum to working precision and the status is kept.

**A stationary point that is not a minimum** (status ``"saddle point at step t: ..."``). For a run that stopped as
``converged`` or ``stalled``, the smallest eigenvalue of the Hessian at the final point, in the coordinates
:math:`u = θ/s` scaled by :math:`s = c^{-1/2}` (or by |θ| where no curvature is known): from central
differences of the gradient (reverse mode only, so a model whose Hessian-vector products are NaN — dLux — raises
no false alarm), the dense matrix for D ≤ :data:`DENSE_MAX_DIM` (2D evaluations) and :data:`LANCZOS_STEPS`
Lanczos steps beyond (2 each). It is a saddle (or a maximum) when
:math:`λ_\min < -\max(10^{-4} \max|λ|, 10\,\text{noise})`, noise the asymmetry of the differenced matrix; a
non-finite gradient next to the point skips the check, and ``info["stationary_check"]`` says so.

**A stall at a minimum is convergence** (status ``"converged at step t, at the precision limit: ..."``). A run that
stalled (:data:`~gnomon.optim.status.STALL_STEPS` updates without progress the loss resolves) where the check above
finds a minimum and the Newton step at the final point — bounded with the check's smallest eigenvalue,
:math:`\tfrac12\|s \odot g\|^2/λ_\min` in the scaled coordinates — predicts a decrease below the loss's
resolution has converged as far as the precision allows (1 evaluation; where no curvature diagonal is known the
status stays ``stalled``).

**A near-degenerate direction at max_steps** (a ``RuntimeWarning`` and ``info["degenerate_direction"]``; the
status stays ``"max_steps"``). When the last fifth of the improving points moved along one direction v (net
displacement at least half the path, in the curvature-scaled coordinates) and the curvature along v is below
:data:`DEGENERATE_RATIO` of what the diagonal predicts (:math:`v^T \tilde H v`, 2 evaluations) — the marginal
spread along v at least 10× the conditional one — the fit is creeping along a valley the data barely constrain:
the warning names the parameters that trade off.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from gnomon.optim.assemble import coordinate_labels
from gnomon.optim.status import STALL_STEPS, StatusCode, codes_info, status_code
from gnomon.trace.trace import Trace

DENSE_MAX_DIM = 32
LANCZOS_STEPS = 16
SADDLE_TOL = 1e-4  # λ_min below −SADDLE_TOL · max|λ| (and below the noise) is negative curvature
DEGENERATE_RATIO = 1e-2  # curvature along the direction / the diagonal's prediction: marginal/conditional ≥ 10
NO_PROGRESS = "no progress"
NO_PROGRESS_STEPS = 10  # steps without a better point before a run is called stuck (a first rejection is normal)
SADDLE = "saddle point"


def review(trace: Trace, probe: Any, obj: Any, curvature: Any, *, tol: float | None, learning_rate: Any = None
           ) -> Trace:
    """``trace`` with its status and ``info`` revised by the checks of the module docstring.

    ``probe`` evaluates (losses, gradients) at points (:attr:`LoopResult.probe`); ``curvature`` the diagonal the
    method used ((D,), (B, D) or None)."""
    batched = trace.is_batched
    rows = np.asarray(trace.z if trace.z is not None else trace.theta)
    losses = np.asarray(trace.loss, np.float64)
    statuses = list(trace.status) if batched else [trace.status]
    codes = list(status_code(trace)) if batched else [status_code(trace)]
    b = len(statuses)
    if not batched:
        rows, losses = rows[None], losses[None]
    counts = np.asarray(trace.extras["num_rows"]) if batched else np.array([rows.shape[1]])
    steps = np.asarray(trace.step).reshape(b, -1)
    c = None if curvature is None else np.broadcast_to(np.asarray(curvature, np.float64), (b, rows.shape[-1]))
    dtype = rows.dtype
    labels = coordinate_labels(obj, rows.shape[-1])
    info = dict(trace.info)
    found: dict[str, list] = {"no_progress": [None] * b, "stationary_check": [None] * b,
                              "degenerate_direction": [None] * b}
    finals = np.stack([rows[i, counts[i] - 1] for i in range(b)])
    probes = _Probes(probe, finals, batched)
    t_end = [int(steps[i, counts[i] - 1]) for i in range(b)]

    # ---- no progress
    stuck = [i for i in range(b) if _could_be_stuck(codes[i], t_end[i], losses[i, :counts[i]])]
    if stuck:
        f0s, g0s = probes.at({i: rows[i, 0] for i in stuck})
        for i in stuck:
            g0 = g0s[i]
            gn0 = float(np.linalg.norm(g0)) if np.all(np.isfinite(g0)) else math.nan
            if gn0 == 0 or (tol is not None and gn0 <= tol):
                continue
            decrease = None if c is None else float(0.5 * np.sum(g0 * g0 / c[i]))
            resolution = 8 * float(np.finfo(dtype).eps) * max(abs(float(f0s[i])), 1.0)
            if decrease is not None and math.isfinite(decrease) and decrease <= resolution:
                continue  # a minimum to working precision
            moved = bool(np.any(rows[i, 1:counts[i]] != rows[i, 0]))
            cause = _cause(info, moved, dtype, learning_rate)
            what = ("every point it tried had a higher loss" if moved else "θ never left it")
            predicted = "" if decrease is None else f"; a Newton step predicts a decrease of {decrease:.3g}"
            statuses[i] = (f"{NO_PROGRESS} in {t_end[i]} steps: no point had a lower loss than the start ({what}; "
                           f"|∇loss| = {gn0:.3g} there{predicted}); likely cause: {cause}")
            codes[i] = StatusCode.NO_PROGRESS
            found["no_progress"][i] = {"grad_norm_at_start": gn0, "predicted_decrease": decrease, "moved": moved,
                                       "cause": cause}
    # ---- stationary points that are not minima
    still = [i for i in range(b) if codes[i] in (StatusCode.CONVERGED, StatusCode.STALLED)]
    if still:
        checks = _curvature_checks(probes, finals, still, c)
        for i in still:
            chk = checks[i]
            found["stationary_check"][i] = chk
            if chk.get("result") == "saddle":
                codes[i] = StatusCode.SADDLE_POINT
                where = ", ".join(labels[j] for j in chk["direction_top"])
                statuses[i] = (
                    f"{SADDLE} at step {t_end[i]}: the gradient vanished but the loss decreases along a direction "
                    f"(smallest curvature {chk['lambda_min']:.3g} against a largest {chk['lambda_max']:.3g}, in "
                    f"coordinates scaled by {chk['scaled_by']}; mostly {where}): a saddle or a maximum, not a minimum "
                    "— start elsewhere, e.g. a small step along that direction")
    # ---- a stall at a minimum, to working precision, is convergence
    if c is not None:
        _stall_at_minimum(probes, finals, still, c, codes, statuses, found["stationary_check"], t_end, dtype)
    # ---- max_steps along a near-degenerate direction
    if c is not None:
        ends = {i: d for i in range(b) if codes[i] == StatusCode.MAX_STEPS
                and (d := _tail_direction(rows[i, :counts[i]], losses[i, :counts[i]], c[i])) is not None}
        if ends:
            ratios = _rayleigh(probes, finals, ends, c)
            for i, v in ends.items():
                r = ratios.get(i)
                if r is None or not r < DEGENERATE_RATIO:
                    continue
                top = list(np.argsort(-np.abs(v))[:3])
                top = [j for j in top if abs(v[j]) >= 0.2 * abs(v[top[0]])]
                found["degenerate_direction"][i] = {"curvature_ratio": r, "parameters": [labels[j] for j in top],
                                                    "direction": [float(x) for x in v]}
    # ---- record, warn
    for name, per in found.items():
        if any(x is not None for x in per):
            info[name] = per if batched else per[0]
    if probes.cost:
        info["end_check_grad_evals"] = probes.cost
    info["status_code"] = codes_info(codes, batched)
    _warn(found, statuses, b)
    status = tuple(statuses) if batched else statuses[0]
    nge = np.asarray(trace.num_grad_evals) + probes.cost if batched else int(trace.num_grad_evals) + probes.cost
    return replace(trace, status=status, info=info, num_grad_evals=nge)


def _stall_at_minimum(probes: _Probes, finals: np.ndarray, still: list[int], c: np.ndarray, codes: list,
                      statuses: list, checks: list, t_end: list[int], dtype: Any) -> None:
    r"""Members that stalled where the Hessian check found a minimum and a Newton step predicts a decrease below
    the loss's resolution: converged, at the precision limit (in place). The prediction bounds the Newton
    decrement with the check's own smallest eigenvalue, :math:`\tfrac12\|s \odot g\|^2/λ_\min` in the scaled
    coordinates — not with the diagonal c alone, which a floored or badly scaled entry makes optimistic (a
    float32 fit 0.14 sd from its optimum along a coordinate whose c was floored 10⁹-fold looked converged)."""
    at_minimum = [i for i in still if codes[i] == StatusCode.STALLED and (checks[i] or {}).get("result") == "minimum"
                  and checks[i].get("lambda_min", 0) > 0]
    if not at_minimum:
        return
    fs, gs = probes.at({i: finals[i] for i in at_minimum})
    for i in at_minimum:
        s, _ = _scales(finals[i], c[i])
        decrease = float(0.5 * np.sum((s * gs[i]) ** 2) / checks[i]["lambda_min"])
        resolution = 8 * float(np.finfo(dtype).eps) * max(abs(fs[i]), 1.0)
        if not (math.isfinite(decrease) and decrease <= resolution):
            continue
        codes[i] = StatusCode.CONVERGED
        statuses[i] = (f"converged at step {t_end[i]}, at the precision limit: a Newton step from the final point "
                       f"predicts a decrease of {decrease:.2g}, below the loss's resolution ({resolution:.2g}), and "
                       f"{STALL_STEPS} updates in a row made no progress the loss can resolve (set tol or ftol to stop "
                       "earlier)")
        checks[i] = {**checks[i], "predicted_decrease": decrease, "resolution": resolution}


class _Probes:
    """Gradient evaluations at one point per member (members not asked for are evaluated at their final point)."""

    def __init__(self, probe: Any, finals: np.ndarray, batched: bool):
        self.probe, self.finals, self.batched = probe, finals, batched
        self.cost = 0

    def at(self, points: dict[int, np.ndarray]) -> tuple[dict[int, float], dict[int, np.ndarray]]:
        return self.many([points])[0]

    def many(self, batches: list[dict[int, np.ndarray]]) -> list[tuple[dict[int, float], dict[int, np.ndarray]]]:
        """Each element of ``batches`` maps members to a point; one probe row (one evaluation each) per element."""
        if not batches:
            return []
        b, d = self.finals.shape
        pts = np.repeat(self.finals[None], len(batches), axis=0)
        for k, batch in enumerate(batches):
            for i, p in batch.items():
                pts[k, i] = p
        f, g = self.probe(pts if self.batched else pts[:, 0])
        f, g = np.asarray(f).reshape(len(batches), b), np.asarray(g).reshape(len(batches), b, d)
        self.cost += len(batches)
        return [({i: float(f[k, i]) for i in batch}, {i: g[k, i].astype(np.float64) for i in batch})
                for k, batch in enumerate(batches)]


def _could_be_stuck(code: StatusCode | None, t: int, loss: np.ndarray) -> bool:
    if t < NO_PROGRESS_STEPS or code not in (StatusCode.CONVERGED, StatusCode.MAX_STEPS, StatusCode.STALLED):
        return False
    later = loss[1:]
    return not bool(np.any(np.isfinite(later) & (later < loss[0])))


def _cause(info: dict, moved: bool, dtype: Any, learning_rate: Any) -> str:
    cinfo = info.get("curvature") if isinstance(info.get("curvature"), dict) else None
    if cinfo and cinfo.get("fallback"):
        return (f"the {cinfo['fallback']['from']} curvature was not finite and the {cinfo['method']} one was used "
                f"({cinfo['fallback']['reason']}); choose another with curvature=")
    if not moved and np.dtype(dtype).itemsize < 8:
        return "float32: the steps are below θ's resolution — use float64 (jax_enable_x64) or a larger tol/ftol"
    if learning_rate is not None:
        return (f"the learning rate {learning_rate!r}: too small to move θ" if not moved else
                f"the learning rate {learning_rate!r}: every step overshot")
    if info.get("backtracking") or cinfo:
        return ("every step along the (preconditioned) gradient raised the loss: the gradient or the curvature "
                f"({cinfo.get('method') if cinfo else 'none'}) does not describe the loss here — check the model's "
                "gradient, or choose another curvature with curvature=")
    return "the loss is flat to working precision along the steps taken (or θ0 is already a minimum: set tol)"


def _scales(final: np.ndarray, c: np.ndarray | None) -> tuple[np.ndarray, str]:
    if c is not None and np.all(np.isfinite(c)) and np.all(c > 0):
        return 1.0 / np.sqrt(c), "the curvature diagonal (c^-1/2)"
    a = np.abs(final.astype(np.float64))
    ref = float(np.max(a)) if a.size and np.max(a) > 0 else 1.0
    return np.where(a > 0, a, ref), "|θ|"


def _curvature_checks(probes: _Probes, finals: np.ndarray, members: list[int], c: np.ndarray | None) -> dict:
    """The smallest and largest eigenvalue of the scaled Hessian at each member's final point."""
    d = finals.shape[-1]
    eps = float(np.finfo(finals.dtype).eps)
    delta = eps ** (1.0 / 3.0)
    scales = {i: _scales(finals[i], None if c is None else c[i]) for i in members}
    out: dict[int, dict] = {}
    if d <= DENSE_MAX_DIM:
        batches = []
        for j in range(d):
            for sign in (1.0, -1.0):
                batches.append({i: finals[i] + sign * delta * scales[i][0][j] * np.eye(d)[j] for i in members})
        res = probes.many(batches)
        for i in members:
            s, how = scales[i]
            up = np.stack([res[2 * j][1][i] for j in range(d)])
            down = np.stack([res[2 * j + 1][1][i] for j in range(d)])
            cols = s[None, :] * (up - down) / (2 * delta)  # row j: S H S e_j
            if not np.all(np.isfinite(cols)):
                out[i] = {"result": "skipped: the gradient is not finite next to the final point",
                          "num_grad_evals": 2 * d}
                continue
            hs = cols.T
            noise = float(np.max(np.abs(hs - hs.T))) if d > 1 else 0.0
            lam, vec = np.linalg.eigh(0.5 * (hs + hs.T))
            out[i] = _judge(lam, vec[:, 0], noise, how, 2 * d)
        return out
    return _lanczos(probes, finals, members, scales, delta)


def _lanczos(probes: _Probes, finals: np.ndarray, members: list[int], scales: dict, delta: float) -> dict:
    """Rayleigh–Ritz on a Krylov basis (Lanczos with full reorthogonalisation): the projected matrix Qᵀ H̃ Q from
    the differenced products themselves, its asymmetry the noise."""
    d = finals.shape[-1]
    k = min(LANCZOS_STEPS, d)
    rng = np.random.default_rng(0)
    q0 = rng.standard_normal(d)
    basis = {i: [q0 / np.linalg.norm(q0)] for i in members}
    products: dict[int, list] = {i: [] for i in members}
    bad = set()
    for step in range(k):
        batches = [{i: finals[i] + sign * delta * scales[i][0] * basis[i][-1] for i in members} for sign in (1, -1)]
        (_, up), (_, down) = probes.many(batches)
        for i in members:
            w = scales[i][0] * (up[i] - down[i]) / (2 * delta)
            if not np.all(np.isfinite(w)):
                bad.add(i)
                w = np.zeros(d)
            products[i].append(w)
            if step == k - 1:
                continue
            for p in basis[i]:  # full reorthogonalisation
                w = w - (p @ w) * p
            nb = float(np.linalg.norm(w))
            nxt = w / nb if nb > 1e-12 * max(1.0, float(np.linalg.norm(products[i][-1]))) else rng.standard_normal(d)
            for p in basis[i]:
                nxt = nxt - (p @ nxt) * p
            basis[i].append(nxt / np.linalg.norm(nxt))
    out = {}
    for i in members:
        if i in bad:
            out[i] = {"result": "skipped: the gradient is not finite next to the final point", "num_grad_evals": 2 * k}
            continue
        q = np.stack(basis[i], axis=1)
        m = q.T @ np.stack(products[i], axis=1)
        noise = float(np.max(np.abs(m - m.T)))
        lam, vec = np.linalg.eigh(0.5 * (m + m.T))
        out[i] = _judge(lam, q @ vec[:, 0], noise, scales[i][1], 2 * k)
    return out


def _judge(lam: np.ndarray, v: np.ndarray, noise: float, how: str, cost: int) -> dict:
    lo, hi = float(lam[0]), float(np.max(np.abs(lam)))
    if lo < -max(SADDLE_TOL * hi, 10 * noise):
        result = "saddle"
    elif lo < -SADDLE_TOL * hi:
        result = "inconclusive: negative curvature within the finite-difference noise"
    else:
        result = "minimum"
    top = list(np.argsort(-np.abs(v))[:3])
    top = [int(j) for j in top if abs(v[j]) >= 0.3 * abs(v[top[0]])]
    return {"result": result, "lambda_min": lo, "lambda_max": float(lam[-1]), "noise": noise, "scaled_by": how,
            "direction_top": top, "num_grad_evals": cost}


def _tail_direction(rows: np.ndarray, loss: np.ndarray, c: np.ndarray) -> np.ndarray | None:
    """The unit direction (in u = c^½ θ) of the last fifth of the improving points, when they move along it."""
    finite = np.isfinite(loss)
    best = np.minimum.accumulate(np.where(finite, loss, np.inf))
    improving = np.flatnonzero(finite & (loss <= best))
    if improving.size < 6:
        return None
    tail = improving[-max(5, improving.size // 5):]
    u = rows[tail].astype(np.float64) * np.sqrt(c)
    net = u[-1] - u[0]
    path = float(np.sum(np.linalg.norm(np.diff(u, axis=0), axis=1)))
    size = float(np.linalg.norm(net))
    if size == 0 or path == 0 or size < 0.5 * path:
        return None
    return net / size


def _rayleigh(probes: _Probes, finals: np.ndarray, ends: dict, c: np.ndarray) -> dict:
    """vᵀ (C^-½ H C^-½) v at each member's final point, by central differences along C^-½ v."""
    delta = float(np.finfo(finals.dtype).eps) ** (1.0 / 3.0)
    steps = {i: v / np.sqrt(c[i]) for i, v in ends.items()}
    (_, up), (_, down) = probes.many([{i: finals[i] + sign * delta * s for i, s in steps.items()}
                                      for sign in (1, -1)])
    out = {}
    for i, s in steps.items():
        hv = (up[i] - down[i]) / (2 * delta)
        r = float(s @ hv)
        out[i] = r if math.isfinite(r) else None
    return out


def _warn(found: dict, statuses: list, b: int) -> None:
    def members(name: str) -> list[int]:
        return [i for i, x in enumerate(found[name]) if x is not None]

    def who(idx: list[int]) -> str:
        return "" if b == 1 else f" (member{'s' if len(idx) > 1 else ''} {', '.join(map(str, idx[:5]))}"\
            f"{', ...' if len(idx) > 5 else ''} of {b})"

    if idx := members("no_progress"):
        warnings.warn(f"the optimizer made no progress{who(idx)}: {statuses[idx[0]]}", RuntimeWarning, stacklevel=4)
    if idx := [i for i in members("stationary_check") if found["stationary_check"][i].get("result") == "saddle"]:
        warnings.warn(f"the optimizer stopped at a stationary point that is not a minimum{who(idx)}: "
                      f"{statuses[idx[0]]}", RuntimeWarning, stacklevel=4)
    if idx := members("degenerate_direction"):
        dd = found["degenerate_direction"][idx[0]]
        r = dd["curvature_ratio"]
        how = (f"{r:.2g} of what the diagonal predicts (a marginal spread {1 / math.sqrt(r):.3g}× the conditional "
               "one)" if r > 0 else f"{r:.2g} of what the diagonal predicts: flat or concave")
        warnings.warn(
            f"the fit ran out of steps moving along a near-degenerate direction{who(idx)}: the curvature along it is "
            f"{how}; {', '.join(dd['parameters'])} trade off against each other. More steps creep along that valley: "
            "fix or constrain one of them, add a prior, or optimise in eigen coordinates (gn.EigenMap)",
            RuntimeWarning, stacklevel=4)
