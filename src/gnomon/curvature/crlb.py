r"""The Cramér–Rao bound per named parameter, in the user's units, as a first-class result.

For an unbiased estimator of θ the covariance is bounded below by the inverse Fisher information F. gnomon
reports, for every constrained element of the layout (what ``layout.unpack`` returns, in the user's units)
and for derived quantities :math:`h(\text{params})`:

* **marginal** :math:`\sqrt{(G F^{-1} G^T)_{ii}}` — the bound when every other parameter is estimated too
  (the one to report);
* **conditional** :math:`|G_{ij}|/\sqrt{F_{jj}}` — the bound if all other θ were known; smaller when
  parameters correlate (3.4× for a binary's separation next to the plate scale). Defined where the quantity
  depends on one θ entry only (elementwise transforms); NaN otherwise (e.g. a derived separation);

where :math:`G = \partial g/\partial θ` is the Jacobian of :math:`g(θ) = (\text{unpack}(θ), h(\text{unpack}(θ)))`
— the identity for unconstrained blocks, the bijection's Jacobian otherwise (the delta method), and the
gradient of each derived quantity.

**Degeneracy.** Where the conditional bound is defined, marginal/conditional :math:`= \sqrt{(F^{-1})_{jj}F_{jj}}
= 1/\sqrt{1-R_j^2}`, with :math:`R_j` the multiple correlation of parameter j with all the others: a ratio of
10 means :math:`R_j^2 = 0.99` — the data barely tell that parameter from a combination of the others.
:func:`cramer_rao` warns (:class:`DegeneracyWarning`) for every parameter whose ratio reaches
``degeneracy_ratio`` (default 10), naming its most correlated partners (largest :math:`|\rho|` in the
covariance), and records them (:attr:`CramerRao.degenerate`; ``summary.json`` ``crlb_max_ratio`` and
``crlb_degenerate``, ``meta.json`` ``crlb``).

**Derived quantities as parameters.** A :class:`CramerRao` keeps the derived functions it was given, so
:func:`gnomon.save_run` can evaluate them on the run (:meth:`CramerRao.derived_at`): at the fit's best point
(the estimate whose spread the delta-method bound describes) or on every posterior draw (mean and sd), and at
the truth given for the parameters; each derived label then gets ``estimate``, ``sd``, ``crlb``, ``truth``,
``z`` keys like a named parameter.

F is inverted in float64 after scaling to unit diagonal (:math:`S F S`, :math:`S = \mathrm{diag}(F)^{-1/2}`), so
parameters in wildly different units do not matter; a Fisher that is singular to working precision is an
error naming the parameters of its null direction (the bound is infinite there: fix them or add a prior).
With a prior included (``estimate_curvature(..., include_prior=True)``) the result is the Bayesian
(van Trees) bound and says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class DegeneracyWarning(UserWarning):
    """Some parameter's marginal Cramér–Rao bound is ≥ ``degeneracy_ratio`` × its conditional one: it is
    nearly degenerate with the partners the message names (:attr:`CramerRao.degenerate`)."""


@dataclass(frozen=True, eq=False)
class CramerRao:
    """Cramér–Rao bounds at one θ (build with :func:`gnomon.cramer_rao`).

    Attributes:
      labels: one label per bounded quantity: the layout's element labels (``"pos[x]"``, ``"zern[Z4]"``),
        then the derived quantities.
      value: the quantities at θ, in the user's units.
      marginal: ``sqrt(diag(G F⁻¹ Gᵀ))`` per label (user units): the bound to report.
      conditional: ``|G_ij| / sqrt(F_jj)`` where the quantity depends on one θ entry, else NaN.
      covariance: ``G F⁻¹ Gᵀ`` (labels × labels), user units.
      units: the unit string of each label (the layout's, as written; derived: as given).
      bayesian: True when F includes a prior's curvature (the van Trees bound).
      method: the Fisher's method name (``"fisher"``, ``"gauss_newton"``, ``"user"``, ...).
      degenerate: one dict per nearly degenerate parameter (marginal ≥ ``degeneracy_ratio`` × conditional):
        ``{"label", "ratio", "partners": [{"label", "correlation"}, ...]}``, worst first.
      derived: ``((name, fn), ...)``: the derived quantities' functions (:meth:`derived_at` evaluates them).
      num_base: how many labels are the layout's elements (the rest are derived).
      on_layout: the derived functions take ``layout.unpack(θ)`` (True) or θ itself (no layout was given).
    """

    labels: tuple[str, ...]
    value: np.ndarray
    marginal: np.ndarray
    conditional: np.ndarray
    covariance: np.ndarray
    units: tuple[str, ...]
    bayesian: bool = False
    method: str = "user"
    degenerate: tuple = ()
    derived: tuple = ()
    num_base: int = -1
    on_layout: bool = True
    degeneracy_ratio: float = 10.0

    def __getitem__(self, label: str) -> float:
        """The marginal bound of ``label``."""
        try:
            return float(self.marginal[self.labels.index(label)])
        except ValueError:
            raise KeyError(f"no bound for {label!r}; labels are {list(self.labels)}") from None

    @property
    def correlation(self) -> np.ndarray:
        """The correlation matrix of :attr:`covariance`."""
        s = np.sqrt(np.diag(self.covariance))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.covariance / np.outer(s, s)

    def to_summary(self) -> dict[str, float]:
        """``{"crlb.<label>": marginal}`` for ``summary.json`` (``gn.save_run(..., crlb=...)``)."""
        return {f"crlb.{lab}": float(v) for lab, v in zip(self.labels, self.marginal)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: labels, units, value, marginal, conditional (NaN as None), bayesian, method,
        degenerate."""
        def f(a):
            return [None if not np.isfinite(x) else float(x) for x in np.asarray(a, float)]

        return {"labels": list(self.labels), "units": list(self.units), "value": f(self.value),
                "marginal": f(self.marginal), "conditional": f(self.conditional), "bayesian": self.bayesian,
                "method": self.method, "degenerate": [dict(d) for d in self.degenerate]}

    @property
    def derived_labels(self) -> tuple[str, ...]:
        """The labels of the derived quantities (after the layout's elements)."""
        return self.labels[self._num_base:]

    @property
    def _num_base(self) -> int:
        return self.num_base if self.num_base >= 0 else len(self.labels)

    def record(self) -> dict[str, Any]:
        """The small JSON-able record ``save_run`` keeps in ``meta.json`` (``crlb``): the Fisher's method,
        whether it is Bayesian, the degeneracy threshold and findings, and the derived quantities' units."""
        n = self._num_base
        return {"method": self.method, "bayesian": self.bayesian, "degeneracy_ratio": self.degeneracy_ratio,
                "degenerate": [dict(d) for d in self.degenerate],
                "derived": {lab: u for lab, u in zip(self.labels[n:], self.units[n:])}}

    def summary_scalars(self) -> dict[str, Any]:
        """Run-level ``summary.json`` scalars: ``crlb_max_ratio`` (the largest marginal/conditional ratio) and,
        when some parameter is nearly degenerate, ``crlb_degenerate`` (``"a~b,c; d~e"``: each degenerate
        label with its most correlated partners)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.asarray(self.marginal, float) / np.asarray(self.conditional, float)
        r = r[np.isfinite(r)]
        out: dict[str, Any] = {"crlb_max_ratio": float(r.max()) if r.size else math.nan}
        if self.degenerate:
            out["crlb_degenerate"] = "; ".join(
                f"{d['label']}~{','.join(p['label'] for p in d['partners'])}" for d in self.degenerate)
        return out

    def derived_at(self, theta: Any, layout: Any = None) -> dict[str, np.ndarray]:
        """The derived quantities at θ rows ``(N, D)`` (base θ): ``{label: (N,) float64}``. The functions take
        ``layout.unpack(θ)`` (``layout``: the one the bound was computed with) or θ itself when the bound had
        no layout. Empty when there are no derived quantities."""
        if not self.derived:
            return {}
        rows = jnp.asarray(np.asarray(theta))
        if rows.ndim != 2:
            raise ValueError(f"derived_at takes θ rows (N, D), got shape {tuple(rows.shape)}")
        if self.on_layout:
            if layout is None:
                raise ValueError("these derived quantities take the layout's values: pass the layout")
            params = layout.unpack(rows)
        else:
            params = rows
        cols = []
        for _, fn in self.derived:
            out = jax.vmap(lambda p, fn=fn: jnp.ravel(jnp.asarray(fn(p))))(params)
            cols.append(np.asarray(out, dtype=np.float64).reshape(rows.shape[0], -1))
        values = np.concatenate(cols, axis=1)
        labels = self.derived_labels
        if values.shape[1] != len(labels):
            raise ValueError(f"the derived quantities give {values.shape[1]} values per θ; the bound has "
                             f"{len(labels)} derived labels {list(labels)}")
        return {lab: values[:, i] for i, lab in enumerate(labels)}

    def table(self) -> str:
        """A plain-text table: label, value, marginal, conditional, marginal/conditional, units."""
        w = max(9, *(len(lab) for lab in self.labels))
        head = f"{'parameter':<{w}}  {'value':>12}  {'marginal':>10}  {'conditional':>11}  {'ratio':>6}  units"
        rows = [head, "-" * len(head)]
        for lab, v, m, c, u in zip(self.labels, self.value, self.marginal, self.conditional, self.units):
            ratio = f"{m / c:6.2f}" if np.isfinite(c) and c > 0 else f"{'-':>6}"
            cond = f"{c:11.4g}" if np.isfinite(c) else f"{'-':>11}"
            rows.append(f"{lab:<{w}}  {_value_digits(v, m):>12}  {m:10.4g}  {cond}  {ratio}  {u}")
        return "\n".join(rows)

    def __repr__(self) -> str:
        kind = "Bayesian (prior included)" if self.bayesian else "likelihood only"
        return f"CramerRao({len(self.labels)} quantities, Fisher {self.method!r}, {kind})\n{self.table()}"


def _value_digits(value: float, bound: float) -> str:
    """The value to the digit a hundredth of its bound sits at (9500039.8 ± 148.6 µas prints 9500040, not the
    9.50004e+06 of six significant figures, which drops digits the bound resolves); %.6g without a bound."""
    if not (np.isfinite(value) and np.isfinite(bound) and bound > 0):
        return f"{value:.6g}"
    last = math.floor(math.log10(bound)) - 2
    if abs(value) >= 1e15 or last < -12 or (value != 0 and math.log10(abs(value)) - last > 15):
        return f"{value:.6g}"
    return f"{value:.{max(0, -last)}f}"


def _fisher_matrix(fisher: Any) -> tuple[np.ndarray, str, bool, float]:
    matrix = getattr(fisher, "matrix", None) if hasattr(fisher, "diag") else fisher
    method = getattr(fisher, "method", "user")
    config = getattr(fisher, "config", {}) or {}
    if matrix is None:
        raise ValueError(
            "the marginal Cramér–Rao bound needs the dense Fisher matrix; estimate it with dense=True "
            "(the diagonal alone gives only the conditional bound, which understates correlated parameters)"
        )
    F = np.asarray(matrix, dtype=np.float64)
    if F.ndim != 2 or F.shape[0] != F.shape[1]:
        raise ValueError(f"the Fisher matrix must be square (D, D), got shape {F.shape}")
    if not np.all(np.isfinite(F)):
        raise ValueError("the Fisher matrix has non-finite entries")
    dt = np.asarray(matrix).dtype
    eps = float(np.finfo(dt if np.issubdtype(dt, np.floating) else np.float64).eps)
    scale = max(float(np.max(np.abs(F))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(F - F.T))) / scale
    if asym > max(1e3 * eps, 1e-6):  # a Fisher is symmetric; rounding aside, this is not one
        i, j = np.unravel_index(int(np.argmax(np.abs(F - F.T))), F.shape)
        raise ValueError(f"the Fisher matrix is not symmetric: F[{i},{j}] = {F[i, j]:.6g} but F[{j},{i}] = "
                         f"{F[j, i]:.6g}")
    return 0.5 * (F + F.T), method, bool(config.get("prior_included", False)), eps


def _inverse(F: np.ndarray, eps: float, labels: list[str]) -> np.ndarray:
    d = np.diag(F)
    if np.any(d < 0):
        bad = {labels[i]: float(d[i]) for i in np.flatnonzero(d < 0)}
        raise ValueError(f"the Fisher matrix is not positive semi-definite: negative diagonal {bad} (a Hessian of "
                         "log p rather than of −log p, or one taken away from the mode?)")
    if np.any(d == 0):
        bad = [labels[i] for i in np.flatnonzero(d == 0)]
        raise ValueError(
            f"the Fisher matrix has no information about {bad} (zero diagonal): the bound is infinite"
        )
    s = 1.0 / np.sqrt(d)
    lam, V = np.linalg.eigh(F * np.outer(s, s))
    tol = max(lam.max(), 1.0) * eps * len(lam) * 10
    if lam.min() < -tol:
        raise ValueError(f"the Fisher matrix is not positive semi-definite (normalised eigenvalue {lam.min():.3g}): "
                         "it is not a Fisher (or a Hessian at a mode); the bound is undefined")
    if lam.min() <= tol:
        v = np.abs(V[:, 0])
        top = [labels[i] for i in np.argsort(-v)[:3] if v[i] > 0.1]
        raise ValueError(
            f"the Fisher matrix is singular to working precision (normalised eigenvalue {lam.min():.3g}); the "
            f"bound is infinite along a direction mostly in {top}: fix those parameters or add a prior"
        )
    return (V / lam) @ V.T * np.outer(s, s)


def cramer_rao(
    fisher: Any,
    theta: Any,
    layout: Any = None,
    derived: Mapping[str, Callable | tuple[Callable, str]] | None = None,
    *,
    degeneracy_ratio: float = 10.0,
) -> CramerRao:
    """The Cramér–Rao bound at θ per named parameter and derived quantity, in the user's units.

    Args:
      fisher: a dense :class:`gnomon.Curvature` (``estimate_curvature(obj, θ, "fisher", dense=True,
        include_prior=False)``), a (D, D) array, or an :class:`gnomon.Objective`, whose curvature at θ is then
        chosen by the rule of :mod:`gnomon.curvature.choice` (a ``from_likelihood`` objective's Fisher, prior
        excluded; Gauss–Newton with residuals; else the Hessian, the observed information), falling back with a
        warning when it is not finite.
      theta: the point (D,) in base θ (e.g. the MAP, ``trace.best_theta``). For an objective over a θ-map's
        coordinates (``obj.reparameterize(emap)``) only z tagged as such (``trace.best_z``) is accepted: it is
        decoded and the bound is on base θ (a plain array is refused: it could be either).
      layout: names and units (default: the objective's layout; without one, labels ``θ[i]``).
      derived: optional ``name -> fn(params)`` or ``name -> (fn, units)``; ``params`` is
        ``layout.unpack(θ)`` (user units; θ itself without a layout); ``fn`` returns a scalar or an array.
        Its bound follows by the delta method. Saved with a run (``save_run(..., crlb=cr)``), each derived label
        gets estimate, sd (posterior), CRLB, truth and z in ``summary.json`` like a named parameter.
      degeneracy_ratio: warn (:class:`DegeneracyWarning`) and record in :attr:`CramerRao.degenerate` every
        parameter whose marginal bound is at least this many times its conditional one (10: its multiple
        correlation with the others has R² ≥ 0.99), naming its most correlated partners.

    Returns:
      a :class:`CramerRao` (``.labels``, ``.marginal``, ``.conditional``, ``.covariance``, ``.to_summary()``).
    """
    from gnomon.objective.objective import Objective

    if isinstance(fisher, Objective) and fisher.thetamap is not None:
        base, base_theta = _on_base_coordinates(fisher, theta)
        return cramer_rao(base, base_theta, layout, derived, degeneracy_ratio=degeneracy_ratio)
    if not (isinstance(degeneracy_ratio, (int, float)) and degeneracy_ratio > 1):
        raise ValueError(f"degeneracy_ratio must be a number > 1, got {degeneracy_ratio!r}")
    theta = jnp.asarray(theta)
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        theta = theta.astype(jnp.result_type(float))
    if isinstance(fisher, Objective):  # the curvature by the one rule (gnomon.curvature.choice), with its fallbacks
        from gnomon.curvature.choice import choose_curvature

        layout = fisher.layout if layout is None else layout
        fisher = choose_curvature(fisher, theta, None, dense=True, include_prior=False, exact_max_dim=fisher.dim,
                                  how_to_choose="gn.cramer_rao(<Curvature>, θ) with ", stacklevel=3)
    F, method, bayesian, eps = _fisher_matrix(fisher)
    dim = F.shape[0]
    if theta.shape != (dim,):
        raise ValueError(f"θ has shape {tuple(theta.shape)} but the Fisher matrix is {dim}×{dim}")
    if layout is not None and layout.size != dim:
        raise ValueError(f"the layout has size {layout.size} but the Fisher matrix is {dim}×{dim}")
    q = _quantities(theta, layout, _derived_specs(derived))
    cov = q.jacobian @ _inverse(F, eps, q.index_labels) @ q.jacobian.T
    marginal = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    conditional = _conditional(q.jacobian, F)
    degenerate = _degeneracies(q.labels, marginal, conditional, cov, q.num_base, float(degeneracy_ratio))
    if degenerate:
        _warn_degenerate(degenerate, marginal, conditional, q.labels, q.units, float(degeneracy_ratio))
    return CramerRao(tuple(q.labels), q.values, marginal, conditional, cov, tuple(q.units), bayesian, method,
                     degenerate=degenerate, derived=q.derived, num_base=q.num_base, on_layout=layout is not None,
                     degeneracy_ratio=float(degeneracy_ratio))


def _on_base_coordinates(fisher: Any, theta: Any) -> tuple[Any, Any]:
    """An objective over a θ-map's coordinates z (``obj.reparameterize(emap)``): the bound that means anything is
    the one on the model's parameters, so z (tagged as the trace tags it) is decoded to base θ and bounded with the
    base objective."""
    tagged = getattr(theta, "z_of", None)
    if tagged is None or fisher.base is None or fisher.base.thetamap is not None:
        raise ValueError(
            f"cramer_rao: this objective runs in the coordinates z of {fisher.thetamap!r}, and a bound on z "
            "is not a bound on the model's parameters; pass the base objective and base θ "
            "(gn.cramer_rao(zobj.base, trace.best_theta)) or z as the trace tags it (trace.best_z), which is "
            "then decoded to θ"
        )
    if tagged is not fisher.thetamap and getattr(tagged, "hash", None) != getattr(fisher.thetamap, "hash", 0):
        raise ValueError(f"cramer_rao: z is in the coordinates of {tagged!r}, but the objective runs in "
                         f"{fisher.thetamap!r}")
    return fisher.base, fisher.thetamap.to_theta(jnp.asarray(np.asarray(theta)))


def _derived_specs(derived: Mapping[str, Callable | tuple[Callable, str]] | None
                   ) -> list[tuple[str, Callable, str]]:
    """``[(name, fn, units)]`` of the derived quantities, each checked to be a function."""
    out = []
    for name, spec in dict(derived or {}).items():
        fn, unit = spec if isinstance(spec, tuple) else (spec, "")
        if not callable(fn):
            raise ValueError(
                f"derived quantity {name!r} must be a function of params (or (fn, units)), got {spec!r}"
            )
        out.append((name, fn, unit))
    return out


class _Quantities(NamedTuple):
    """g(θ) = (the layout's constrained elements, the derived quantities), its Jacobian G and their names."""

    values: np.ndarray
    jacobian: np.ndarray  # G = ∂g/∂θ (float64)
    labels: list[str]
    units: list[str]
    index_labels: list[str]  # of θ's entries (to name a singular Fisher's direction)
    num_base: int  # the layout's elements come first
    derived: tuple  # ((name, fn), ...)


def _quantities(theta: Any, layout: Any, specs: list[tuple[str, Callable, str]]) -> _Quantities:
    dim = theta.shape[0]
    if layout is not None:
        base_labels, index_labels = layout.element_labels(), layout.index_labels()
        base_units = [b.units for b in layout.blocks for _ in range(b.num_elements)]
        params_of, flat = layout.unpack, layout.element_values
    else:
        base_labels = index_labels = [f"θ[{i}]" for i in range(dim)]
        base_units = [""] * dim

        def params_of(th):
            return th

        flat = params_of

    def g(th):
        p = params_of(th)
        return jnp.concatenate([flat(th)] + [jnp.ravel(jnp.asarray(fn(p), th.dtype)) for _, fn, _ in specs])

    labels, units = list(base_labels), list(base_units)
    for name, fn, unit in specs:
        shp = fn_shape(fn, params_of(theta))
        n = math.prod(shp)
        labels += [name] if shp == () else [f"{name}[{i}]" for i in range(n)]
        units += [unit] * n
    return _Quantities(np.asarray(g(theta), dtype=np.float64), np.asarray(jax.jacfwd(g)(theta), dtype=np.float64),
                       labels, units, list(index_labels), len(base_labels), tuple((n, f) for n, f, _ in specs))


def _conditional(G: np.ndarray, F: np.ndarray) -> np.ndarray:
    """|G_ij| / √F_jj where quantity i depends on one θ entry j only; NaN elsewhere."""
    conditional = np.full(G.shape[0], np.nan)
    for i, row in enumerate(G):
        nz = np.flatnonzero(row != 0)
        if len(nz) == 1:
            j = nz[0]
            conditional[i] = abs(row[j]) / np.sqrt(F[j, j])
    return conditional


def _degeneracies(labels: list[str], marginal: np.ndarray, conditional: np.ndarray, cov: np.ndarray, n: int,
                  ratio: float) -> tuple[dict, ...]:
    """The parameters (of the first ``n`` labels) whose marginal/conditional ≥ ``ratio``, worst first, each with
    up to three partners among the other parameters: those with |ρ| ≥ 0.5, at least the most correlated one."""
    s = np.sqrt(np.clip(np.diag(cov)[:n], 0.0, None))
    out = []
    for i in range(n):
        c = conditional[i]
        if not (np.isfinite(c) and c > 0 and np.isfinite(marginal[i])):
            continue
        r = float(marginal[i] / c)
        if r < ratio:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = cov[i, :n] / (s[i] * s)
        rho = np.where(np.isfinite(rho), rho, 0.0)
        rho[i] = 0.0
        order = [int(j) for j in np.argsort(-np.abs(rho), kind="stable")]
        picked = [j for j in order[:3] if abs(rho[j]) >= 0.5] or order[:1]
        out.append({"label": labels[i], "ratio": r,
                    "partners": [{"label": labels[j], "correlation": float(rho[j])} for j in picked]})
    out.sort(key=lambda d: -d["ratio"])
    return tuple(out)


def _warn_degenerate(found: tuple[dict, ...], marginal, conditional, labels, units, ratio: float) -> None:
    idx = {lab: i for i, lab in enumerate(labels)}
    parts = []
    for d in found[:5]:
        i = idx[d["label"]]
        u = f" {units[i]}" if units[i] else ""
        partners = ", ".join(f"{p['label']!r} (ρ = {p['correlation']:+.3f})" for p in d["partners"])
        parts.append(f"{d['label']!r}: marginal {marginal[i]:.4g}{u} vs conditional {conditional[i]:.4g}{u} "
                     f"({d['ratio']:.3g}×), most correlated with {partners}")
    more = f"; and {len(found) - 5} more" if len(found) > 5 else ""
    warnings.warn(
        f"cramer_rao: {len(found)} parameter(s) nearly degenerate (marginal bound ≥ {ratio:g}× the conditional: "
        f"the data barely tell them from the others): {'; '.join(parts)}{more}. Fix one of each pair, add a "
        "prior, or reparameterise; an optimizer may crawl along this direction (CramerRao.degenerate lists "
        "them)",
        DegeneracyWarning,
        stacklevel=3,
    )


def fn_shape(fn: Callable, params: Any) -> tuple[int, ...]:
    """Output shape of a derived quantity (abstract evaluation)."""
    return tuple(jax.eval_shape(fn, params).shape)
