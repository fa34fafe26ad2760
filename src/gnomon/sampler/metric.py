r"""Inverse mass matrices (HMC/NUTS metrics) from curvature.

For a posterior that is locally Gaussian around θ* with precision :math:`H = -\nabla^2 \log p(θ^*)`, the
ideal inverse mass matrix is the covariance :math:`\Sigma = H^{-1}`. A diagonal metric should hold the
*marginal* variances :math:`\mathrm{diag}(H^{-1})`, not the *conditional* variances
:math:`1/\mathrm{diag}(H)`: the two agree only without correlations, and their ratio

.. math::  \mathrm{VIF}_i = H_{ii}\,(H^{-1})_{ii} \;\ge\; 1

(the variance inflation factor) measures how much a coordinate's spread is hidden by correlation. So:

* where D allows a dense matrix (``D ≤ max_dense_dim``), the metric comes from :math:`H^{-1}`: its diagonal
  (``dense=False``) or the whole matrix (``dense=True``; ``dense="auto"`` picks it when the largest
  VIF shows that correlations matter);
* beyond that, only a diagonal curvature is available and the metric is :math:`1/\mathrm{diag}(H)`.

Degenerate and negative curvature. With :math:`H = V \Lambda V^T`, eigenvalues below
``-tol`` (a saddle or a start away from the mode) are replaced by :math:`|\lambda|` (the "saddle-free"
choice: the local scale is kept, the sign is not); eigenvalues within ``tol = \epsilon\,D\max|\lambda|``
of zero (flat directions, about which the curvature says nothing) are replaced by the median of the
well-determined ones, so the metric falls back to a typical scale rather than an infinite one. On the
diagonal path, entries that are non-positive or non-finite get the median of the positive ones. All
replacements are counted in :attr:`InverseMassMatrix.info`.

The result carries a factor :math:`L` with :math:`LL^T = M^{-1}` and :math:`L^{-1}`: the sampler adapts in
the whitened coordinates :math:`u = L^{-1}θ` (so the curvature's correlations are kept while the scales are
re-estimated), and chains start from "Laplace draws" :math:`θ^* + L\varepsilon`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gnomon.util.programs import ProgramCache

DEFAULT_MAX_DENSE_DIM = 1000
# dense="auto" switches to a dense metric when the largest variance-inflation factor exceeds this: a
# diagonal metric then hides more than √1.25 ≈ 1.12× of some coordinate's spread behind correlation.
DEFAULT_VIF_THRESHOLD = 1.25


@dataclass(frozen=True, eq=False)
class InverseMassMatrix:
    """An inverse mass matrix with its whitening factor.

    Attributes:
      matrix: ``(D,)`` diagonal or ``(D, D)`` dense symmetric positive definite :math:`M^{-1}`.
      factor: :math:`L` with :math:`L L^T = M^{-1}` (``(D,)`` or ``(D, D)``).
      factor_inv: :math:`L^{-1}`.
      source: where it came from (``"identity"``, ``"array"``, ``"curvature"``, ``"handoff"``).
      info: JSON-able details (curvature method and cost, which variances, replacements, VIF).
      draw_factor: for a diagonal metric from a dense curvature, the dense factor of ``H̃⁻¹`` used for
        Laplace draws (independent draws from the marginal variances would land in the tails of a correlated
        posterior).
    """

    matrix: np.ndarray
    factor: np.ndarray
    factor_inv: np.ndarray
    source: str = "array"
    info: dict = field(default_factory=dict)
    draw_factor: np.ndarray | None = None  # dense L for Laplace draws when the metric itself is diagonal

    @property
    def dense(self) -> bool:
        return np.ndim(self.matrix) == 2

    @property
    def dim(self) -> int:
        return int(np.shape(self.matrix)[-1])

    @property
    def variances(self) -> np.ndarray:
        """The marginal variances the metric implies: its diagonal."""
        return np.diagonal(self.matrix) if self.dense else np.asarray(self.matrix)

    @property
    def num_grad_evals(self) -> int:
        return int(self.info.get("curvature_num_grad_evals", 0))

    def as_dense(self) -> InverseMassMatrix:
        if self.dense:
            return self
        return from_array(np.diag(self.matrix), source=self.source, info=self.info)

    def as_diagonal(self) -> InverseMassMatrix:
        if not self.dense:
            return self
        return from_array(np.diagonal(self.matrix).copy(), source=self.source, info=self.info)

    def __repr__(self) -> str:
        v = self.variances
        kind = "dense" if self.dense else "diag"
        return (
            f"InverseMassMatrix({kind}, D={self.dim}, variances {v.min():.3g}…{v.max():.3g}, {self.source})"
        )


def identity(dim: int, dense: bool = False, dtype: Any = np.float64) -> InverseMassMatrix:
    """The unit metric."""
    if dense:
        eye = np.eye(dim, dtype=dtype)
        return InverseMassMatrix(eye, eye, eye, "identity", {"source": "identity"})
    one = np.ones(dim, dtype=dtype)
    return InverseMassMatrix(one, one, one, "identity", {"source": "identity"})


def from_array(m: Any, source: str = "array", info: dict | None = None) -> InverseMassMatrix:
    """Wrap a given inverse mass matrix (``(D,)`` positive or ``(D, D)`` symmetric positive definite)."""
    a = np.asarray(m)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if a.ndim == 1:
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            bad = a[~(np.isfinite(a) & (a > 0))][:3]
            raise ValueError(
                f"a diagonal inverse mass matrix must be finite and positive; got entries {bad.tolist()}"
            )
        s = np.sqrt(a)
        return InverseMassMatrix(a, s, 1.0 / s, source, dict(info or {}, source=source))
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"an inverse mass matrix must be (D,) or (D, D), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("the inverse mass matrix has non-finite entries")
    sym = 0.5 * (a + a.T)
    if not np.allclose(sym, a, rtol=1e-5, atol=1e-8 * max(1.0, float(np.abs(a).max()))):
        raise ValueError("a dense inverse mass matrix must be symmetric")
    w, v = np.linalg.eigh(sym.astype(np.float64))
    if w.min() <= 0:
        raise ValueError(
            f"a dense inverse mass matrix must be positive definite; smallest eigenvalue {w.min():.3g}"
        )
    return _from_eigen(w, v, a.dtype, source, dict(info or {}, source=source), matrix=a)


def _from_eigen(
    var: np.ndarray, vecs: np.ndarray, dtype: Any, source: str, info: dict, matrix: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> InverseMassMatrix:
    """Dense metric ``S V diag(var) Vᵀ S`` with factor ``S V diag(√var)`` and inverse ``diag(1/√var) Vᵀ S⁻¹``
    (``S = diag(scale)``, identity by default)."""
    s = np.ones(vecs.shape[0]) if scale is None else np.asarray(scale, dtype=np.float64)
    sd = np.sqrt(var)
    sv = vecs * s[:, None]
    factor = sv * sd[None, :]
    factor_inv = (vecs.T / sd[:, None]) / s[None, :]
    if matrix is None:
        matrix = (sv * var[None, :]) @ sv.T
        matrix = 0.5 * (matrix + matrix.T)
    return InverseMassMatrix(
        matrix.astype(dtype), factor.astype(dtype), factor_inv.astype(dtype), source, info
    )


def _median_or_one(x: np.ndarray) -> float:
    return float(np.median(x)) if x.size else 1.0


def from_precision_matrix(
    h: Any,
    *,
    dense: bool | str = False,
    vif_threshold: float = DEFAULT_VIF_THRESHOLD,
    dtype: Any = None,
    info: dict | None = None,
) -> InverseMassMatrix:
    """Metric from a dense precision (curvature) matrix ``H``: marginal variances ``diag(H̃⁻¹)`` or ``H̃⁻¹``.

    ``H̃`` is ``H`` with negative eigenvalues replaced by their absolute values and (near-)zero ones by the
    median of the others (see the module docstring). ``dense="auto"`` returns the dense ``H̃⁻¹`` when the
    largest VIF exceeds ``vif_threshold``."""
    hm = np.asarray(h, dtype=np.float64)
    dtype = dtype or np.asarray(h).dtype
    if hm.ndim != 2 or hm.shape[0] != hm.shape[1]:
        raise ValueError(f"a curvature matrix must be (D, D), got shape {hm.shape}")
    if not np.all(np.isfinite(hm)):
        raise ValueError(f"the curvature matrix has {int(np.sum(~np.isfinite(hm)))} non-finite entries")
    hm = 0.5 * (hm + hm.T)
    d = hm.shape[0]
    # Work with the diagonally normalised H_n = S H S, S = diag(1/√|H_ii|): parameters in wildly different
    # units make the raw spectrum span many decades, and a rank cut-off relative to the largest raw
    # eigenvalue would then throw away well-determined directions.
    hdiag = np.diagonal(hm)
    usable = np.isfinite(hdiag) & (np.abs(hdiag) > 0)
    scale_vec = np.where(usable, 1.0 / np.sqrt(np.where(usable, np.abs(hdiag), 1.0)), 1.0)  # no 1/0 evaluated
    hn = hm * scale_vec[:, None] * scale_vec[None, :]
    lam, vecs = np.linalg.eigh(hn)
    scale = float(np.max(np.abs(lam))) if lam.size else 1.0
    eps = np.finfo(np.asarray(h).dtype if np.issubdtype(np.asarray(h).dtype, np.floating) else np.float64).eps
    tol = eps * d * scale  # numpy's matrix_rank tolerance, on the normalised matrix
    negative = lam < -tol
    degenerate = np.abs(lam) <= tol
    good = np.abs(lam)[~degenerate]
    lam_t = np.where(degenerate, _median_or_one(good), np.abs(lam))
    if scale == 0.0:
        lam_t = np.ones_like(lam)
    var = 1.0 / lam_t
    marginal = scale_vec**2 * ((vecs * vecs) @ var)
    hn_diag = np.diagonal(hn)
    hn_diag_t = np.where(hn_diag > 0, hn_diag, (vecs * vecs) @ lam_t)
    vif = hn_diag_t * ((vecs * vecs) @ var)  # invariant under the diagonal scaling
    vif_median = float(np.median(vif))
    if dense == "auto":
        use_dense = float(np.max(vif)) > vif_threshold
    elif isinstance(dense, bool):
        use_dense = dense
    else:
        raise ValueError(f"dense must be True, False or 'auto', got {dense!r}")
    details = dict(
        info or {},
        variances="dense inverse" if use_dense else "marginal diag(H⁻¹)",
        dense=bool(use_dense),
        num_negative_eigenvalues=int(negative.sum()),
        num_degenerate_eigenvalues=int(degenerate.sum()),
        condition_number=float(lam_t.max() / lam_t.min()),
        vif_median=vif_median,
        vif_max=float(np.max(vif)),
    )
    if use_dense:
        return _from_eigen(var, vecs, dtype, "curvature", details, scale=scale_vec)
    m = marginal.astype(dtype)
    s = np.sqrt(marginal)
    draw = (scale_vec[:, None] * vecs * np.sqrt(var)[None, :]).astype(dtype)
    return InverseMassMatrix(m, s.astype(dtype), (1.0 / s).astype(dtype), "curvature", details, draw)


def from_precision_diag(hdiag: Any, *, dtype: Any = None, info: dict | None = None) -> InverseMassMatrix:
    """Metric ``1/diag(H)`` (conditional variances) from a curvature diagonal; non-positive or
    non-finite entries get the median of the positive ones (counted in ``info``)."""
    h = np.asarray(hdiag, dtype=np.float64)
    dtype = dtype or np.asarray(hdiag).dtype
    if h.ndim != 1:
        raise ValueError(f"a curvature diagonal must be (D,), got shape {h.shape}")
    ok = np.isfinite(h) & (h > 0)
    fill = _median_or_one(h[ok])
    h_t = np.where(ok, h, fill)
    var = 1.0 / h_t
    s = np.sqrt(var)
    details = dict(
        info or {},
        variances="conditional 1/diag(H)",
        dense=False,
        num_replaced=int((~ok).sum()),
        condition_number=float(h_t.max() / h_t.min()),
    )
    return InverseMassMatrix(
        var.astype(dtype), s.astype(dtype), (1.0 / s).astype(dtype), "curvature", details
    )


def from_curvature(
    curv: Any,
    *,
    dense: bool | str = False,
    max_dense_dim: int = DEFAULT_MAX_DENSE_DIM,
    vif_threshold: float = DEFAULT_VIF_THRESHOLD,
    dtype: Any = None,
) -> InverseMassMatrix:
    """Inverse mass matrix from a :class:`gnomon.Curvature`: from its dense matrix when it has one and
    ``D ≤ max_dense_dim`` (marginal or dense inverse), else ``1/diag``."""
    info = {
        "curvature_method": getattr(curv, "method", "user"),
        "curvature_num_grad_evals": int(getattr(curv, "num_grad_evals", 0)),
    }
    matrix = getattr(curv, "matrix", None)
    if matrix is not None and np.shape(matrix)[-1] <= max_dense_dim:
        return from_precision_matrix(matrix, dense=dense, vif_threshold=vif_threshold, dtype=dtype, info=info)
    if dense is True:
        raise ValueError("dense=True needs a dense curvature matrix (estimate it with dense=True)")
    return from_precision_diag(curv.diag, dtype=dtype, info=info)


# ------------------------------------------------------------------------------------------ from objective
# obj -> obj with loss = −log_prob, while obj lives (an objective without function identity, e.g. from_numpyro,
# is its own compile key: the same copy keeps reusing its compiled curvature)
_LOGPROB_OBJ: ProgramCache = ProgramCache("log-density objectives", maxsize=64)


def _log_prob_objective(obj: Any) -> Any:
    """``obj`` with ``loss = −log_prob`` (Jacobian included), cached so compiled curvature is reused."""
    if obj.log_jacobian is None or obj.loss_includes_jacobian:
        return obj
    hit = _LOGPROB_OBJ.get(obj)
    if hit is None:
        hit = _LOGPROB_OBJ.put(obj, obj.with_jacobian_in_loss(True))
    return hit


def default_curvature_method(obj: Any, max_dense_dim: int = DEFAULT_MAX_DENSE_DIM) -> tuple[str, bool]:
    """``(method, dense)`` used for a metric: the one rule of :func:`gnomon.curvature.choice.auto_method` (the
    expected Fisher of a likelihood, Gauss–Newton with residuals, else the Hessian: exact while dense, Hutchinson
    beyond), dense up to ``max_dense_dim``, beyond that the diagonal only."""
    from gnomon.curvature.choice import auto_method

    return auto_method(obj, exact_max_dim=max_dense_dim), obj.dim <= max_dense_dim


def curvature_metric(
    obj: Any,
    theta: Any,
    *,
    method: str | None = None,
    dense: bool | str = False,
    max_dense_dim: int = DEFAULT_MAX_DENSE_DIM,
    vif_threshold: float = DEFAULT_VIF_THRESHOLD,
    key: Any = None,
    data: Any = None,
    **curvature_kwargs: Any,
) -> tuple[InverseMassMatrix, Any]:
    """Estimate the curvature of ``−log_prob`` at ``theta`` and turn it into an inverse mass matrix.

    The method is :func:`default_curvature_method`'s unless given; an estimate with non-finite entries falls
    back along :func:`gnomon.curvature.choice.fallback_chain` (Hessian → finite differences of the gradient →
    identity) with a warning naming ``gn.warmup(curvature=...)`` and ``inverse_mass_matrix=``; the choice is in
    the curvature's ``config`` (``trace.info["curvature"]``). Returns ``(InverseMassMatrix, Curvature)``; the
    metric's ``info`` records the curvature's method, any fallback and the cost (``curvature_num_grad_evals``)."""
    from gnomon.curvature.choice import choose_curvature

    _, want_dense = default_curvature_method(obj, max_dense_dim)
    kwargs = {k: v for k, v in curvature_kwargs.items() if v is not None}
    if data is not None:
        kwargs["data"] = data
    curv = choose_curvature(
        _log_prob_objective(obj), theta, method, dense=want_dense, exact_max_dim=max_dense_dim, key=key,
        how_to_choose="gn.warmup(curvature=...) or inverse_mass_matrix= in gn.sample:", stacklevel=6, **kwargs,
    )
    dtype = np.asarray(theta).dtype
    imm = from_curvature(
        curv, dense=dense, max_dense_dim=max_dense_dim, vif_threshold=vif_threshold, dtype=dtype
    )
    if curv.config.get("fallback"):
        imm.info["curvature_fallback"] = curv.config["fallback"]["reason"]
    return imm, curv


def spread(ratio: Any) -> float:
    """``exp(std(log ratio))``: the geometric spread of a positive ratio vector (1 = all equal)."""
    r = np.asarray(ratio, dtype=np.float64)
    r = r[np.isfinite(r) & (r > 0)]
    if r.size < 2:
        return 1.0
    return float(math.exp(np.std(np.log(r))))
