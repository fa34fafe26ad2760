r"""The sampler's configuration: the warmup (:func:`warmup`) and where every sampler option lives.

In the style of blackjax's algorithms and optax's factories, a kernel (:mod:`gnomon.sampler.families`) or a
warmup is a small frozen value that says *what* to run; :func:`gnomon.sample` runs it::

    post = gn.sample(obj, init=fit, key=key,
                     kernel=gn.nuts(max_tree_depth=8, target_acceptance_rate=0.9),
                     warmup=gn.warmup(metric="low_rank", max_steps=2000))

String shorthands work (``warmup="diag"`` etc. is ``gn.warmup(metric=...)``). Each option has one home and
one default, written here; an option given to the wrong object raises a ``ValueError`` that names where it
belongs (:func:`misplaced`).

One home per value
------------------
The warmup's length lives in ``gn.warmup(num_steps=...)`` and the metric seed in
``gn.warmup(inverse_mass_matrix=...)`` (with the curvature behind it in ``gn.warmup(curvature=...)``);
``gn.sample(..., num_warmup=...)`` and ``gn.sample(..., inverse_mass_matrix=...)`` — the call form of the
architecture page — are **aliases** that fill those homes (given both ways with different values: an error
naming the home). A hand-off's one home is ``init=``: ``gn.sample(obj, init=bundle, ...)`` starts from its
chains and reuses its adaptation; to reuse only its metric from another start, it is a metric seed,
``gn.warmup(inverse_mass_matrix=bundle)``. The v0.1 ``handoff=`` raises an error that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from gnomon.util.validate import positive_int

DEFAULT_MAX_DENSE_DIM = 1000
METRICS = ("auto", "diag", "dense", "low_rank", "none")

# Where each sampler option lives (and what became of the v0.1 names): used to say where a misplaced
# option belongs.
_HOME = {
    # gn.sample
    "num_chains": "gn.sample(..., num_chains=...)",
    "num_warmup": "the warmup: warmup=gn.warmup(num_steps=...) (alias: gn.sample(..., num_warmup=...))",
    "num_samples": "gn.sample(..., num_samples=...)",
    "inverse_mass_matrix": "the warmup: warmup=gn.warmup(inverse_mass_matrix=...) (alias: gn.sample(..., "
    "inverse_mass_matrix=...))",
    "handoff": "init= (gn.sample(obj, init=bundle, ...) starts from a hand-off and reuses its adaptation; its "
    "metric alone from another start: warmup=gn.warmup(inverse_mass_matrix=bundle))",
    "keep_warmup": "gn.sample(..., keep_warmup=...)",
    "data": "gn.sample(..., data=...)",
    "progress": "gn.sample(..., progress=...)",
    "kernel": "gn.sample(..., kernel=...)",
    "warmup": "gn.sample(..., warmup=...)",
    # kernels
    "max_tree_depth": "the NUTS kernel: kernel=gn.nuts(max_tree_depth=...)",
    "num_integration_steps": "the HMC or MCLMC kernel: kernel=gn.hmc(num_integration_steps=...) (or gn.mclmc)",
    "target_acceptance_rate": "the kernel: kernel=gn.nuts(target_acceptance_rate=...) (or gn.hmc, gn.mclmc)",
    "divergence_threshold": "the kernel: kernel=gn.nuts(divergence_threshold=...) (or gn.hmc, gn.mclmc)",
    "step_size": "the kernel: kernel=gn.nuts(step_size=...) (or gn.hmc, gn.mclmc)",
    "integrator": "the MCLMC kernel: kernel=gn.mclmc(integrator=...)",
    "random_trajectory_length": "the MCLMC kernel: kernel=gn.mclmc(random_trajectory_length=...)",
    # warmup
    "num_steps": "the warmup: warmup=gn.warmup(num_steps=...) (alias: gn.sample(..., num_warmup=...))",
    "max_steps": "the warmup: warmup=gn.warmup(max_steps=...)",
    "metric": "the warmup: warmup=gn.warmup(metric=...)",
    "curvature": "the warmup: warmup=gn.warmup(curvature=...)",
    "num_probes": "the warmup: warmup=gn.warmup(num_probes=...) (Hutchinson probes of the seed's curvature)",
    "hutchinson_mode": "the warmup: warmup=gn.warmup(hutchinson_mode=...)",
    "dense": "the warmup: warmup=gn.warmup(dense=...)",
    "max_dense_dim": "the warmup: warmup=gn.warmup(max_dense_dim=...)",
    "shrinkage": "the warmup: warmup=gn.warmup(shrinkage=...)",
    "jitter": "the warmup: warmup=gn.warmup(jitter=...)",
    "check": "the warmup: warmup=gn.warmup(check=...)",
    "transport": "the warmup: warmup=gn.warmup(transport=...)",
    # v0.1 names
    "algorithm": "gn.sample(..., kernel=...) (was algorithm=; 'nuts', 'hmc' or gn.nuts(...)/gn.hmc(...))",
    "adapt_metric": "the warmup: warmup=gn.warmup(metric=...) (was adapt_metric=)",
    "curvature_method": "the warmup: warmup=gn.warmup(curvature=...) (was curvature_method=)",
    "metric_shrinkage": "the warmup: warmup=gn.warmup(shrinkage=...) (was metric_shrinkage=)",
    "max_warmup": "the warmup: warmup=gn.warmup(max_steps=...) (was max_warmup=)",
    "fallback": "the warmup: warmup=gn.warmup(check=...) (the seed check replaces fallback=)",
    "chunk_size": "nowhere: the compiled chunk length is internal",
    "key": "gn.sample(obj, init, key) (the third argument)",
}


def misplaced(where: str, options: dict[str, Any]) -> None:
    """Raise the ``ValueError`` for options that ``where`` does not take, naming where each belongs."""
    if not options:
        return
    parts = []
    for name, value in options.items():
        home = _HOME.get(name)
        shown = f"{name}={value!r}" if len(repr(value)) < 40 else name
        parts.append(f"{shown} belongs to {home}" if home else f"{name!r} is not a sampler option")
    raise ValueError(f"{where} does not take " + "; ".join(parts))


def positive(name: str, v: Any, *, allow_none: bool = False, strict: bool = True) -> None:
    """A finite positive (``strict``) or non-negative number, else a ValueError naming it."""
    if v is None and allow_none:
        return
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)
    if not ok or (v <= 0 if strict else v < 0):
        raise ValueError(f"{name} must be a {'positive' if strict else 'non-negative'} number, got {v!r}")


def _int(name: str, v: Any, lo: int, *, allow_none: bool = False) -> None:
    if not (v is None and allow_none):
        positive_int(v, name, minimum=lo)


SEEDS = ("auto", "curvature", "identity")


# ------------------------------------------------------------------------------------------------ warmup
@dataclass(frozen=True)
class Warmup:
    r"""How :func:`gnomon.sample` warms up: the metric seed, the adaptation and the seed check.

    Attributes:
      num_steps: warmup steps. ``None`` (default): by the seed — 300 after a curvature or array seed, 150
        after a hand-off or with ``metric="none"``, 600 (a recovery's schedule) from the identity with
        ``metric="auto"``/``"low_rank"`` and D ≤ ``max_dense_dim``, else 1000 — extended by further windows
        while the metric is unsettled, and replaced by a recovery when the seed check rejects the seed, up
        to ``max_steps``. An explicit number is run as given (no extension; a rejected seed still recovers
        within it).
      max_steps: the most warmup steps an automatic warmup (extensions and recovery) may take.
      metric: what the warmup adapts, in the seed's whitened coordinates :math:`u = L^{-1}θ`:
        ``"diag"`` (the variances of u: Stan's estimator), ``"dense"`` (the covariance of u),
        ``"low_rank"`` (nutpie's: a diagonal plus low-rank metric from the draws *and* their gradients),
        ``"none"`` (freeze the seed; only the step size adapts), or ``"auto"`` (default; today the same as
        ``"low_rank"``: nutpie's metric around a seed and after a recovery, the whitened variances
        (``"diag"``) when D > ``max_dense_dim``, where dense moments are not formed).
      inverse_mass_matrix: the metric seed (its one home; ``gn.sample(..., inverse_mass_matrix=...)`` is an
        alias): ``"auto"`` (default: a hand-off's adapted metric and step size when ``init`` is a
        :class:`gnomon.HandOff`, else ``"curvature"``), ``"curvature"`` (from the curvature of ``−log_prob``
        at the start, see :mod:`gnomon.sampler.metric`), an array ``(D,)``/``(D, D)``, an
        ``InverseMassMatrix``, a :class:`gnomon.HandOff` (its adapted metric and step size), or None /
        ``"identity"``; a :class:`gnomon.Curvature` here is an alias of ``curvature=<Curvature>``.
      curvature: the curvature behind ``inverse_mass_matrix="curvature"``: a method name (``"exact"``,
        ``"gauss_newton"``, ``"hutchinson"``, ``"fisher"``, ...), a :class:`gnomon.Curvature`, or an array
        (the precision's diagonal ``(D,)`` or the precision ``(D, D)`` of ``−log_prob``) (default:
        Gauss–Newton with residuals, else exact up to ``max_dense_dim``, else Hutchinson).
      num_probes, hutchinson_mode: the Hutchinson (and probe-Fisher) estimator's probes and mode, as in
        :func:`gnomon.estimate_curvature` (default: its own).
      dense: the seed's shape from a dense curvature: ``False`` (marginal variances), ``True`` (the dense
        inverse), ``"auto"`` (dense when correlations matter: largest variance inflation factor > 1.25).
      max_dense_dim: the largest D for which dense matrices are formed (curvature, metric, moments).
      shrinkage: pseudo-draws of the previous metric in each window's regularisation (0: Stan's rule).
      jitter: spread of the chains' starts around θ* in units of the seed's Laplace draw :math:`Lε`
        (default 1 with a seed, 0.1 with the identity).
      check: check the seed while the warmup runs and recover when it fails (default True); with False the
        seed is trusted, and an optimizer that found no mode is only warned about.
      transport: let the warmup learn a transport map θ = T(z) from its draws and gradients and finish in z
        where one metric cannot fit (default True: tried in a recovery and after a kept seed whose draws show a
        funnel, kept only when it helps; see :mod:`gnomon.sampler.transport_stage`); False: never. Kernel
        families tuned by their own stage (MCLMC) do not use it.
    """

    num_steps: int | None = None
    max_steps: int = 2000
    metric: str = "auto"
    inverse_mass_matrix: Any = "auto"
    curvature: Any = None
    num_probes: int | None = None
    hutchinson_mode: str = "variance_reduced"
    dense: bool | str = "auto"
    max_dense_dim: int = DEFAULT_MAX_DENSE_DIM
    shrinkage: float = 0.0
    jitter: float | None = None
    check: bool = True
    transport: bool = True

    def __post_init__(self):
        _int("num_steps", self.num_steps, 0, allow_none=True)
        _int("max_steps", self.max_steps, 1)
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; expected one of {METRICS}")
        seed = self.inverse_mass_matrix
        if isinstance(seed, str) and seed not in SEEDS:
            raise ValueError(f"unknown inverse_mass_matrix {seed!r}; expected one of {SEEDS}, None, an array (D,) or "
                             "(D, D), a gnomon.Curvature, an InverseMassMatrix or a gnomon.HandOff")
        c = self.curvature
        is_curv = hasattr(c, "diag") and hasattr(c, "method")
        is_array = not is_curv and not isinstance(c, str) and np.ndim(c) in (1, 2) and np.size(c) > 0
        if c is not None and not isinstance(c, str) and not is_curv and not is_array:
            raise ValueError(
                f"curvature must be a method name, a gnomon.Curvature or an array (D,)/(D, D), got {type(c).__name__}"
            )
        _int("num_probes", self.num_probes, 1, allow_none=True)
        if self.hutchinson_mode not in ("variance_reduced", "plain"):
            raise ValueError(f"hutchinson_mode must be 'variance_reduced' or 'plain', got {self.hutchinson_mode!r}")
        if self.dense not in (True, False, "auto"):
            raise ValueError(f"dense must be True, False or 'auto', got {self.dense!r}")
        _int("max_dense_dim", self.max_dense_dim, 1)
        positive("shrinkage", self.shrinkage, strict=False)
        positive("jitter", self.jitter, allow_none=True, strict=False)
        if not isinstance(self.check, bool):
            raise ValueError(f"check must be True or False, got {self.check!r}")
        if not isinstance(self.transport, bool):
            raise ValueError(f"transport must be True or False, got {self.transport!r}")

    def replace(self, **changes: Any) -> Warmup:
        return replace(self, **changes)


def warmup(**options: Any) -> Warmup:
    """The warmup for :func:`gnomon.sample`: ``gn.warmup(num_steps=None, max_steps=2000, metric="auto",
    inverse_mass_matrix="auto", curvature=None, num_probes=None, hutchinson_mode="variance_reduced",
    dense="auto", max_dense_dim=1000, shrinkage=0.0, jitter=None, check=True, transport=True)`` (see
    :class:`Warmup`; the defaults live there)."""
    known = {f.name for f in fields(Warmup)}
    misplaced("gn.warmup", {k: v for k, v in options.items() if k not in known})
    return Warmup(**options)


def as_warmup(w: Any) -> Warmup:
    """A warmup from ``None`` (the defaults), a :class:`Warmup` or a metric name (``"diag"``, ...)."""
    if w is None:
        return Warmup()
    if isinstance(w, Warmup):
        return w
    if isinstance(w, str):
        if w not in METRICS:
            raise ValueError(f"unknown warmup {w!r}; expected gn.warmup(...) or a metric name {METRICS}")
        return Warmup(metric=w)
    raise ValueError(f"warmup must be gn.warmup(...), a metric name or None, got {type(w).__name__}")
