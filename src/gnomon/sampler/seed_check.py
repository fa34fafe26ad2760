r"""The seed is a hypothesis: checking it while the warmup runs.

A metric seeded from the curvature at the mode, :math:`M_0^{-1} = LL^T \approx H^{-1}`, claims that in the
whitened coordinates :math:`u = L^{-1}(θ - θ^*)` the posterior is close to a standard normal. Then NUTS
behaves like on :math:`N(0, I_D)`: a step size near :math:`\epsilon_D` and a few leapfrog steps per draw
(:func:`expected`, measured on standard normals), and the chains' draws have :math:`E[u_i^2] \approx 1` in
every coordinate. The check runs the first warmup steps (the initial fast buffer) with the NUTS depth capped
at :func:`check_depth` — so a wrong seed costs at most :math:`2^{d}-1` gradients per draw while it is found
out — and rejects the seed when any of these fails (:func:`verdict`):

* **cost**: the leapfrog steps per draw in the check's second half exceed ``4×`` the expected number, or a
  quarter of the transitions end at the depth cap;
* **step size**: dual averaging has pushed the step size below a tenth of :math:`\epsilon_D`;
* **scales**: some coordinate's pooled variance :math:`\mathrm{Var}[u_i]` over the second half leaves
  :math:`[1/100, 100]` — the draws' scale differs from the seed's by more than 10×, far beyond the noise of
  a few dozen pooled draws (a log variance from ``n`` draws has a standard error of about
  :math:`\sqrt{2/n}`; with 4 chains × 15 steps the largest of D = 1000 coordinates stayed within a factor 3
  of 1 when the seed was right). Smaller misfits — a skewed or heavy-tailed coordinate, 3× in sd on the
  non-centred eight schools — are the warmup's ordinary business (it re-measures the scales and extends
  itself while they move); a seed that is 10× off is a wrong hypothesis (10²–10⁹× in the funnels measured).
  The variance is taken around the draws' own mean, so a right metric around a start far in the tails
  (reported by the hand-off diagnostics) is not mistaken for a wrong one.

The cost criterion applies to NUTS only (HMC's steps per draw are fixed).

A seed that fails grossly — most transitions at the depth cap *and* scales 100× off or a collapsed step
size — is rejected after the first :data:`EARLY_STEPS` (:func:`gross`), a third of the check's cost.

The same statistics are computed on every later warmup window (:func:`verdict` with ``what=``: cost and step
size only, the scales there being the adaptation's business), so a seed that passed the first steps but fails
later is still abandoned. A rejection triggers the recovery (:mod:`gnomon.sampler.phases`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

CHECK_STEPS = 30  # warmup steps the first check looks at (its second half is judged)
EARLY_STEPS = 10  # a gross failure is already judged after these
COST_FACTOR = 4.0
CAP_FRACTION = 0.25
STEP_FACTOR = 10.0
SCALE_FACTOR = 100.0


def expected(dim: int) -> tuple[float, float]:
    r"""``(step size, leapfrog steps per draw)`` of NUTS on :math:`N(0, I_D)` at acceptance 0.8.

    Fitted to runs of this sampler on standard normals (D = 2 … 1000, measured: step size 0.93, 0.90, 0.70,
    0.43, 0.27 and 3.8, 5.5, 7.5, 15.7, 18.3 leapfrog steps per draw at D = 2, 10, 50, 200, 1000):
    :math:`\epsilon_D \approx 1.6\,D^{-1/4}` and about :math:`2\pi/\epsilon_D` steps per draw (NUTS
    rounds a trajectory up to :math:`2^d - 1` steps)."""
    eps = 1.6 * max(dim, 1) ** -0.25
    return eps, max(3.0, 2 * math.pi / eps)


def check_depth(dim: int, max_tree_depth: int) -> int:
    """The NUTS depth cap while the seed is checked: room for ``8×`` the expected steps per draw."""
    _, steps = expected(dim)
    return int(min(max_tree_depth, max(5, math.ceil(math.log2(8 * steps + 1)))))


class Verdict(NamedTuple):
    """The outcome of a check: kept or rejected, the statistics and a sentence saying why."""

    rejected: bool
    steps: int  # warmup steps looked at
    steps_per_draw: float
    expected_steps: float
    at_cap: float  # fraction of transitions that ended at the depth cap
    step_size: float
    expected_step_size: float
    scale_worst: float  # Var[u_i] of the worst coordinate (1 when the seed is right)
    scale_coordinate: int
    message: str

    def as_info(self) -> dict[str, Any]:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._asdict().items()}


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def verdict(
    n_steps: np.ndarray,
    tree_depth: np.ndarray,
    theta: np.ndarray | None,
    step_size: float,
    *,
    dim: int,
    depth_cap: int | None,
    center: np.ndarray | None = None,
    factor_inv: np.ndarray | None = None,
    what: str = "seed",
    when: int = 0,
    nuts: bool = True,
) -> Verdict:
    """Judge the warmup steps ``n_steps``/``tree_depth`` ``(steps, chains)`` (their second half) and, when
    ``theta`` ``(steps, chains, D)`` is given, the pooled variances of the whitened ``u = factor_inv (θ −
    center)`` over its second half; ``step_size`` is the dual-averaging step size after them, ``when`` the
    warmup step at which this is judged (for the message), ``nuts`` whether the cost criterion applies."""
    steps = int(np.shape(n_steps)[0])
    half = slice(steps // 2, None)
    eps_d, steps_d = expected(dim)
    spd = float(np.mean(n_steps[half])) if steps else 0.0
    at_cap = float(np.mean(tree_depth[half] >= depth_cap)) if (depth_cap is not None and steps) else 0.0
    worst, coord = 1.0, -1
    if theta is not None and center is not None and factor_inv is not None and steps:
        x = np.asarray(theta[half], np.float64).reshape(-1, dim) - np.asarray(center, np.float64)[None, :]
        fi = np.asarray(factor_inv, np.float64)
        u = x @ fi.T if fi.ndim == 2 else x * fi[None, :]
        v = np.var(u, axis=0)
        with np.errstate(divide="ignore"):
            lv = np.abs(np.log(np.where(np.isfinite(v) & (v > 0), v, np.inf)))
        coord = int(np.argmax(lv))
        worst = float(v[coord])
    reasons = []
    if nuts and (spd > COST_FACTOR * steps_d or at_cap > CAP_FRACTION):
        cap = f", {100 * at_cap:.0f} % of them at the depth cap {2**depth_cap - 1}" if depth_cap else ""
        reasons.append(f"leapfrog steps per draw {spd:.0f} vs {steps_d:.0f} expected{cap}")
    if step_size < eps_d / STEP_FACTOR:
        reasons.append(f"step size {_fmt(step_size)} vs {_fmt(eps_d)} expected")
    if coord >= 0 and not (1 / SCALE_FACTOR <= worst <= SCALE_FACTOR):
        reasons.append(f"the draws' variance in coordinate {coord} is {_fmt(worst)}× the seed's")
    rejected = bool(reasons)
    head = f"{what} rejected after {when} warmup steps: " if rejected else f"{what} kept after {when} warmup steps"
    return Verdict(
        rejected,
        steps,
        spd,
        steps_d,
        at_cap,
        float(step_size),
        eps_d,
        worst,
        coord,
        head + "; ".join(reasons),
    )


def gross(v: Verdict) -> bool:
    """A rejection so clear that the check need not run on: half the transitions at the depth cap and the
    scales or the step size off as well."""
    off_scale = v.scale_coordinate >= 0 and not (1 / SCALE_FACTOR <= v.scale_worst <= SCALE_FACTOR)
    collapsed = v.step_size < v.expected_step_size / STEP_FACTOR
    return bool(v.rejected and v.at_cap >= 0.5 and (off_scale or collapsed))
