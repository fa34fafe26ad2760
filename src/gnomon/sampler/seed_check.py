r"""The seed is a hypothesis: checking it while the warmup runs.

A metric seeded from the curvature at the mode, :math:`M_0^{-1} = LL^T \approx H^{-1}`, claims that in the
whitened coordinates :math:`u = L^{-1}(θ - θ^*)` the posterior is close to a standard normal. Then the kernel
behaves like on :math:`N(0, I_D)`: a step size near :math:`\epsilon_D` and, for NUTS, a few leapfrog steps
per draw (the kernel family's ``expected(dim)``, measured on standard normals:
:func:`gnomon.sampler.kernels.nuts_expected`, :func:`gnomon.sampler.mclmc.mclmc_expected`), and the chains'
draws have :math:`E[u_i^2] \approx 1` in every coordinate. The check runs the first warmup steps (the
initial fast buffer) — for a kernel with a depth cap (NUTS) with the cap lowered to :func:`check_depth`, so a
wrong seed costs at most :math:`2^{d}-1` gradients per draw while it is found out — and rejects the seed
when any of these fails (:func:`verdict`):

* **cost**: the gradient evaluations per draw in the check's second half exceed ``4×`` the expected number,
  or a quarter of the transitions end at the depth cap — judged only where the cost per draw emerges from
  the geometry (NUTS); where it is fixed (HMC) or tuned (MCLMC) the family gives no expected cost and the
  criterion is recorded as not applicable (``Verdict.cost_judged = False``);
* **step size**: dual averaging has pushed the step size below a tenth of the kernel's :math:`\epsilon_D`;
* **scales**: some coordinate's pooled variance :math:`\mathrm{Var}[u_i]` over the second half leaves
  :math:`[1/100, 100]` — the draws' scale differs from the seed's by more than 10×, far beyond the noise of
  a few dozen pooled draws (a log variance from ``n`` draws has a standard error of about
  :math:`\sqrt{2/n}`; with 4 chains × 15 steps the largest of D = 1000 coordinates stayed within a factor 3
  of 1 when the seed was right). Smaller misfits — a skewed or heavy-tailed coordinate, 3× in sd on the
  non-centred eight schools — are the warmup's ordinary business (it re-measures the scales and extends
  itself while they move); a seed that is 10× off is a wrong hypothesis (10²–10⁹× in the funnels measured).
  The variance is taken around the draws' own mean, so a right metric around a start far in the tails
  (reported by the hand-off diagnostics) is not mistaken for a wrong one.

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
    """NUTS' ``(step size, leapfrog steps per draw)`` on :math:`N(0, I_D)` (kept for callers of v0.2; a kernel
    family's own ``expected(dim)`` is what the check uses)."""
    from gnomon.sampler.kernels import nuts_expected

    return nuts_expected(dim)


def check_depth(expected_cost: float, max_tree_depth: int) -> int:
    """The depth cap while the seed is checked: room for ``8×`` the expected gradient evaluations per draw."""
    return int(min(max_tree_depth, max(5, math.ceil(math.log2(8 * expected_cost + 1)))))


class Verdict(NamedTuple):
    """The outcome of a check: kept or rejected, the statistics and a sentence saying why."""

    rejected: bool
    steps: int  # warmup steps looked at
    steps_per_draw: float  # gradient evaluations per draw
    expected_steps: float | None  # on N(0, I_D) (None: the kernel's cost is fixed or tuned, not judged)
    at_cap: float  # fraction of transitions that ended at the depth cap
    step_size: float
    expected_step_size: float | None
    scale_worst: float  # Var[u_i] of the worst coordinate (1 when the seed is right)
    scale_coordinate: int
    message: str
    cost_judged: bool = True  # False: the cost criterion does not apply to this kernel (recorded, not silent)

    def as_info(self) -> dict[str, Any]:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._asdict().items()}


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def verdict(
    grad_evals: np.ndarray,
    tree_depth: np.ndarray | None,
    theta: np.ndarray | None,
    step_size: float,
    *,
    dim: int,
    depth_cap: int | None,
    reference: tuple[float, float | None] | None,
    center: np.ndarray | None = None,
    factor_inv: np.ndarray | None = None,
    what: str = "seed",
    when: int = 0,
    names: Any = None,
) -> Verdict:
    """Judge the warmup steps' gradient evaluations ``grad_evals`` and ``tree_depth`` ``(steps, chains)`` (their
    second half; ``tree_depth`` None for a kernel without one) and, when ``theta`` ``(steps, chains, D)`` is
    given, the pooled variances of the whitened ``u = factor_inv (θ − center)`` over its second half;
    ``step_size`` is the dual-averaging step size after them, ``reference`` the kernel's ``(step size,
    gradient evaluations per draw or None)`` on :math:`N(0, I_D)` (None: neither is judged), ``when`` the
    warmup step at which this is judged (for the message)."""
    steps = int(np.shape(grad_evals)[0])
    half = slice(steps // 2, None)
    eps_d, steps_d = reference if reference is not None else (None, None)
    spd = float(np.mean(grad_evals[half])) if steps else 0.0
    capped = depth_cap is not None and tree_depth is not None and steps
    at_cap = float(np.mean(tree_depth[half] >= depth_cap)) if capped else 0.0
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
    if steps_d is not None and (spd > COST_FACTOR * steps_d or at_cap > CAP_FRACTION):
        cap = f", {100 * at_cap:.0f} % of them at the depth cap {2**depth_cap - 1}" if capped else ""
        reasons.append(f"gradient evaluations per draw {spd:.0f} vs {steps_d:.0f} expected{cap}")
    if eps_d is not None and step_size < eps_d / STEP_FACTOR:
        reasons.append(f"step size {_fmt(step_size)} vs {_fmt(eps_d)} expected")
    if coord >= 0 and not (1 / SCALE_FACTOR <= worst <= SCALE_FACTOR):
        diagonal = factor_inv is not None and np.ndim(factor_inv) == 1
        where = (names(coord) if callable(names) else f"coordinate {coord}") if diagonal else \
            f"whitened direction {coord}"
        reasons.append(f"the draws' variance in {where} is {_fmt(worst)}× the seed's")
    rejected = bool(reasons)
    head = f"{what} rejected after {when} warmup steps: " if rejected else f"{what} kept after {when} warmup steps"
    tail = "" if steps_d is not None or rejected else " (cost per draw not judged: fixed or tuned by the kernel)"
    return Verdict(rejected, steps, spd, steps_d, at_cap, float(step_size), eps_d, worst, coord,
                   head + "; ".join(reasons) + tail, steps_d is not None)


def gross(v: Verdict) -> bool:
    """A rejection so clear that the check need not run on: half the transitions at the depth cap and the
    scales or the step size off as well."""
    off_scale = v.scale_coordinate >= 0 and not (1 / SCALE_FACTOR <= v.scale_worst <= SCALE_FACTOR)
    collapsed = v.expected_step_size is not None and v.step_size < v.expected_step_size / STEP_FACTOR
    return bool(v.rejected and v.at_cap >= 0.5 and (off_scale or collapsed))
