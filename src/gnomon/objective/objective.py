r"""`Objective`: one object that gives optimizers ``loss(θ)`` and samplers ``log_prob(θ)``.

Jacobian policy
---------------
θ is unconstrained. When a layout maps θ to constrained values :math:`x = T(θ)` and the model defines a
log density :math:`\log p(x)` over constrained values, there are two different targets:

* ``log_prob(θ) = log p(T(θ)) + log|det ∂T/∂θ|`` — always the density of θ itself, Jacobian included.
  This is what a sampler must target so that draws of ``T(θ)`` follow ``p``.
* ``loss(θ) = -log p(T(θ))`` by default (``loss_includes_jacobian=False``): the classical MAP / maximum
  likelihood point, which does not move when the parameterisation changes. With
  ``loss_includes_jacobian=True`` the loss is ``-log_prob(θ)``, the mode of θ's own density.

Constructors that are handed a function of flat θ (``from_loss``, ``from_log_prob``, ``from_residuals``)
have no Jacobian to add: their ``log_prob`` is ``-loss`` (resp. the given function). The choice is
recorded in :attr:`Objective.info` and thus in ``meta.json``.

Data
----
Every function may take ``(θ, data)`` instead of ``(θ,)``: pass ``data=`` (bound default data) or
``takes_data=True`` to the constructor. Methods accept ``data`` explicitly so that engines can pass it
as an argument of compiled functions (and batch it with ``optimize_batch``). Bound data and residual
weights are checked at construction: a NaN or inf is a ValueError naming the array and the first bad index
(:func:`gnomon.objective.checks.check_finite_data`, which engines call on per-call data).

Compilation
-----------
:attr:`Objective.compile_key` is a hashable token shared by objectives that differ only in their bound data
(``obj.with_data(d2)``, or a constructor called again with the same functions and same-shaped data). Engines
and estimators key their compiled programs on it and pass the data as an argument, so a time series of
epochs compiles once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp

from gnomon.objective.checks import check_finite_data, data_signature
from gnomon.thetaspace.layout import Layout

_UNSET = object()


def _dim_and_layout(dim_or_layout: int | Layout) -> tuple[int, Layout | None]:
    if isinstance(dim_or_layout, Layout):
        return dim_or_layout.size, dim_or_layout
    if isinstance(dim_or_layout, bool) or not isinstance(dim_or_layout, int) or dim_or_layout <= 0:
        raise ValueError(f"expected a positive int dimension or a gnomon.Layout, got {dim_or_layout!r}")
    return int(dim_or_layout), None


def _two_arg(fn: Callable, takes_data: bool) -> Callable:
    if takes_data:
        return fn
    return lambda theta, data: fn(theta)


@dataclass(frozen=True, eq=False)
class Objective:
    """A differentiable objective over a flat unconstrained θ of length :attr:`dim`.

    Build one with a ``from_*`` constructor rather than directly. Objects compare and hash by
    identity; :attr:`compile_key` is what engines cache compiled programs on.
    """

    dim: int
    layout: Layout | None
    model_log_density: Callable[[Any, Any], Any]  # (θ, data) -> log p(T(θ)) without Jacobian
    log_jacobian: Callable[[Any], Any] | None = None  # θ -> log|det ∂T/∂θ|
    residual_fn: Callable[[Any, Any], Any] | None = None  # (θ, data) -> r  (loss = ½ Σ w r²)
    weights: Any = None
    per_observation_fn: Callable[[Any, Any], Any] | None = None  # (θ, data) -> per-observation loss
    data: Any = None
    takes_data: bool = False
    loss_includes_jacobian: bool = False
    observed: Mapping[str, Any] | None = None
    thetamap: Any = None  # set by reparameterize: decodes this objective's θ (z) to the base θ
    base: Objective | None = None  # set by reparameterize: the objective over the base θ
    info: Mapping[str, Any] = field(default_factory=dict)
    likelihood: Any = None  # from_likelihood: gnomon.objective.likelihood.Likelihood (mean, family, prior)
    key_parts: Any = None  # hashable identity of the functions (None: only this object; see compile_key)
    model: Any = None  # from_numpyro: the model's sites and arguments (gnomon.objective.numpyro_model.NumpyroModel)

    def __post_init__(self):
        if self.data is not None:
            check_finite_data(self.data, "data")
        if self.weights is not None:
            check_finite_data(self.weights, "weights")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_loss(
        cls,
        loss_fn: Callable,
        dim_or_layout: int | Layout,
        *,
        data: Any = None,
        takes_data: bool | None = None,
        per_observation: Callable | None = None,
    ) -> Objective:
        """Objective from ``loss_fn(θ) -> scalar`` (or ``loss_fn(θ, data)``) over flat θ.

        ``log_prob = -loss``. ``per_observation(θ[, data]) -> (N,)`` optionally gives per-observation
        loss terms (their gradients make the empirical Fisher)."""
        dim, layout = _dim_and_layout(dim_or_layout)
        td = data is not None if takes_data is None else bool(takes_data)
        f = _two_arg(loss_fn, td)
        return cls(
            dim=dim,
            layout=layout,
            model_log_density=lambda th, d: -f(th, d),
            per_observation_fn=None if per_observation is None else _two_arg(per_observation, td),
            data=data,
            takes_data=td,
            info={"constructor": "from_loss", "loss_includes_jacobian": False},
            key_parts=("from_loss", loss_fn, per_observation, dim, layout, td),
        )

    @classmethod
    def from_log_prob(
        cls,
        log_prob_fn: Callable,
        dim_or_layout: int | Layout,
        *,
        data: Any = None,
        takes_data: bool | None = None,
    ) -> Objective:
        """Objective from the log density of flat unconstrained θ (``loss = -log_prob``)."""
        dim, layout = _dim_and_layout(dim_or_layout)
        td = data is not None if takes_data is None else bool(takes_data)
        return cls(
            dim=dim,
            layout=layout,
            model_log_density=_two_arg(log_prob_fn, td),
            data=data,
            takes_data=td,
            info={"constructor": "from_log_prob", "loss_includes_jacobian": False},
            key_parts=("from_log_prob", log_prob_fn, dim, layout, td),
        )

    @classmethod
    def from_log_density(
        cls,
        fn: Callable,
        layout: Layout,
        *,
        data: Any = None,
        takes_data: bool | None = None,
        loss_includes_jacobian: bool = False,
    ) -> Objective:
        """Objective from ``fn(params) -> log p(params)`` over *constrained* values named by ``layout``.

        ``log_prob(θ) = fn(layout.unpack(θ)) + layout.log_det_jacobian(θ)``; ``loss(θ) = -fn(...)``
        (plus the Jacobian term when ``loss_includes_jacobian``)."""
        if not isinstance(layout, Layout):
            raise ValueError(f"from_log_density needs a gnomon.Layout, got {layout!r}")
        td = data is not None if takes_data is None else bool(takes_data)
        f = _two_arg(fn, td)
        return cls(
            dim=layout.size,
            layout=layout,
            model_log_density=lambda th, d: f(layout.unpack(th), d),
            log_jacobian=None if layout.is_identity else layout.log_det_jacobian,
            data=data,
            takes_data=td,
            loss_includes_jacobian=bool(loss_includes_jacobian),
            info={"constructor": "from_log_density", "loss_includes_jacobian": bool(loss_includes_jacobian)},
            key_parts=("from_log_density", fn, layout, td),
        )

    @classmethod
    def from_residuals(
        cls,
        residual_fn: Callable,
        dim_or_layout: int | Layout,
        weights: Any = None,
        *,
        data: Any = None,
        takes_data: bool | None = None,
    ) -> Objective:
        r"""Least-squares objective ``loss(θ) = ½ Σ_n w_n r_n(θ)²`` from a residual function.

        ``residual_fn(θ[, data])`` returns residuals of any shape; ``weights`` (same shape, or
        broadcastable, default 1) are inverse variances. Residuals enable exact Gauss–Newton curvature
        :math:`J^T W J`; the per-observation terms ``½ w r²`` enable the empirical Fisher."""
        dim, layout = _dim_and_layout(dim_or_layout)
        td = data is not None if takes_data is None else bool(takes_data)
        r = _two_arg(residual_fn, td)
        if weights is not None:
            check_finite_data(weights, "weights")
        w = None if weights is None else jnp.asarray(weights)

        def per_obs(th, d):
            res = r(th, d)
            terms = 0.5 * res**2 if w is None else 0.5 * w * res**2
            return jnp.ravel(terms)

        def model_log_density(th, d):
            return -jnp.sum(per_obs(th, d))

        return cls(
            dim=dim,
            layout=layout,
            model_log_density=model_log_density,
            residual_fn=r,
            weights=w,
            per_observation_fn=per_obs,
            data=data,
            takes_data=td,
            info={"constructor": "from_residuals", "loss_includes_jacobian": False},
            key_parts=("from_residuals", residual_fn, dim, layout, td, _digest(w)),
        )

    @classmethod
    def from_likelihood(
        cls,
        predict: Callable,
        data: Any,
        family: Any,
        layout: int | Layout,
        *,
        prior: Callable | None = None,
        loss_includes_jacobian: bool = False,
    ) -> Objective:
        r"""Objective from a forward model and a noise model: :math:`\log p(θ\mid y) = \sum_n \log
        p(y_n \mid \mu_n(θ)) + \log π`.

        Args:
          predict: ``predict(θ) -> μ``, the model mean over flat θ (e.g.
            ``lambda θ: layout.apply(telescope, θ).model()``), same shape as the data. Define it once:
            objectives built again with the same ``predict`` share compiled programs (:attr:`compile_key`).
          data: the observations ``y``, or a mapping ``{"y": y, "sigma": σ}`` carrying family parameters
            that change per call. Checked: finite, the shape of ``predict(θ)``, inside the family's domain.
          family: ``"poisson"``, ``"gaussian"`` (σ from the data), or a family object
            (``gn.family.poisson()``, ``gn.family.gaussian(sigma=...)``, ``gn.family.student_t(nu, sigma)``).
          layout: the :class:`gnomon.Layout` of θ (or its dimension).
          prior: optional ``prior(params) -> log π`` over the layout's values in the user's units (over θ
            when ``layout`` is an int). ``log_prob`` adds the layout's log-Jacobian as
            :meth:`from_log_density` does.
          loss_includes_jacobian: as in :meth:`from_log_density`.

        Enables ``estimate_curvature(obj, θ, method="fisher")``: the expected Fisher
        :math:`J^T W(\mu) J` with the family's weights, plus the prior's Hessian. Per-observation terms are
        :math:`-\log p(y_n \mid \mu_n)` (empirical Fisher); a Gaussian family also has residuals
        :math:`(y-\mu)/\sigma` (Gauss–Newton)."""
        from gnomon.objective.likelihood_objective import likelihood_objective

        return likelihood_objective(cls, predict, data, family, layout, prior, loss_includes_jacobian)

    @classmethod
    def from_numpyro(cls, model: Callable, *args: Any, loss_includes_jacobian: bool = False,
                     data_argnames: str | tuple[str, ...] | None = None, **kwargs: Any) -> Objective:
        """Objective from a numpyro model called as ``model(*args, **kwargs)``.

        The layout comes from the model's latent sample sites (shapes and supports, in trace order);
        ``log_prob`` equals minus numpyro's potential energy (Jacobian included);
        ``loss`` is minus the model's joint log density at the constrained values. Per-observation
        terms are the observed sites' negative log likelihoods.

        ``data_argnames`` names the model arguments that are data (e.g. ``("y",)``): they become
        ``obj.data`` (``{"y": y}``) and are passed to compiled programs as an argument, so
        ``obj.with_data({"y": y2})``, ``gn.optimize(..., data=...)``, ``gn.optimize_batch`` and
        ``gn.sample(..., data=...)`` take new observations without compiling again; the other arguments
        are part of :attr:`compile_key` by value. Discrete latent sites, observations whose shape is not
        their site's and observations passed as None are named (:mod:`gnomon.objective.numpyro_model`)."""
        from gnomon.objective.numpyro_model import numpyro_objective

        return numpyro_objective(cls, model, args, kwargs, loss_includes_jacobian, data_argnames)

    # ------------------------------------------------------------------ evaluation
    def _data(self, data: Any) -> Any:
        return self.data if data is _UNSET else data

    def loss(self, theta: Any, data: Any = _UNSET) -> jnp.ndarray:
        """Scalar loss at θ (see the module docstring for the Jacobian policy)."""
        d = self._data(data)
        value = -self.model_log_density(theta, d)
        if self.loss_includes_jacobian and self.log_jacobian is not None:
            value = value - self.log_jacobian(theta)
        return value

    def log_prob(self, theta: Any, data: Any = _UNSET) -> jnp.ndarray:
        """Log density of unconstrained θ (Jacobian included): the sampler's target."""
        d = self._data(data)
        value = self.model_log_density(theta, d)
        if self.log_jacobian is not None:
            value = value + self.log_jacobian(theta)
        return value

    def value_and_grad(self, theta: Any, data: Any = _UNSET) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``(loss(θ), ∇loss(θ))``."""
        return jax.value_and_grad(self.loss)(theta, self._data(data))

    def log_prob_and_grad(self, theta: Any, data: Any = _UNSET) -> tuple[jnp.ndarray, jnp.ndarray]:
        return jax.value_and_grad(self.log_prob)(theta, self._data(data))

    @property
    def has_residuals(self) -> bool:
        return self.residual_fn is not None

    @property
    def has_per_observation(self) -> bool:
        return self.per_observation_fn is not None

    def residuals(self, theta: Any, data: Any = _UNSET) -> jnp.ndarray:
        """Residual vector (as returned by the residual function); ValueError when there is none."""
        if self.residual_fn is None:
            raise ValueError(
                f"this objective ({self.info.get('constructor', '?')}) has no residuals; build it with "
                "Objective.from_residuals to use Gauss–Newton curvature"
            )
        return self.residual_fn(theta, self._data(data))

    def per_observation(self, theta: Any, data: Any = _UNSET) -> jnp.ndarray:
        """Per-observation loss terms (flat); ValueError when the objective has none."""
        if self.per_observation_fn is None:
            raise ValueError(
                f"this objective ({self.info.get('constructor', '?')}) has no per-observation terms; pass "
                "per_observation= to Objective.from_loss, or use from_residuals / from_numpyro"
            )
        return self.per_observation_fn(theta, self._data(data))

    def arviz_groups(self, theta: Any, data: Any = _UNSET) -> tuple[dict, dict, dict]:
        """``(groups, dims, coords)`` that this objective adds to an ArviZ export of draws ``theta``
        ``(chain, draw, D)`` of its base θ (called by :func:`gnomon.trace.arviz_export.to_arviz` with
        ``objective=``): for a numpyro model the deterministic sites (in ``posterior``), ``log_likelihood``
        per observed site, ``observed_data`` and ``constant_data``, with dims named after its plates and
        ``"<site>"`` entries giving each latent site's dims; otherwise ``observed_data`` when it has
        observations."""
        obj = self.base if self.base is not None else self
        if obj.model is not None:
            return obj.model.arviz_groups(theta, obj._data(data))
        if self.observed:
            return {"observed_data": {k: jnp.asarray(v) for k, v in self.observed.items()}}, {}, {}
        return {}, {}, {}

    # ------------------------------------------------------------------ variants
    def with_data(self, data: Any) -> Objective:
        """The same objective bound to other data (functions must take ``(θ, data)``)."""
        if not self.takes_data:
            if self.model is not None:
                raise ValueError("this numpyro objective has no per-call data; name the model arguments that are "
                                 "data: Objective.from_numpyro(model, ..., data_argnames=('y',))")
            raise ValueError("this objective's functions take θ only; build it with data= or takes_data=True")
        if self.likelihood is not None:
            from gnomon.objective.likelihood import check_likelihood_data

            check_likelihood_data(self.likelihood.family, data, self.likelihood.data_shape, "data")
        if self.model is not None:  # names, finite, observation shapes, unchanged latent shapes
            return replace(self, data=dict(data), observed=self.model.check_data(data) or None)
        return replace(self, data=data)

    @property
    def compile_key(self) -> Any:
        """Hashable token for compile caches: equal for objectives that differ only in their bound data.

        ``(identity of the functions, the Jacobian policy, the data's structure/shapes/dtypes)`` — the same
        for ``obj.with_data(d2)`` and for a constructor called again with the same functions (and, for
        ``from_residuals``, equal weights; for ``from_numpyro``, equal non-data arguments) and same-shaped
        data. Objectives whose functions close over their data (``from_numpyro`` without ``data_argnames``)
        return the objective itself. A program cached under this key must take the data
        as an argument, never close over ``obj.data``."""
        if self.key_parts is None:
            return self
        return (self.key_parts, self.loss_includes_jacobian, data_signature(self.data))

    def with_jacobian_in_loss(self, flag: bool = True) -> Objective:
        """Switch the loss between the constrained-space MAP (False) and θ's own mode (True)."""
        return replace(self, loss_includes_jacobian=bool(flag),
                       info={**self.info, "loss_includes_jacobian": bool(flag)})

    def reparameterize(self, thetamap: Any) -> Objective:
        """Objective over new coordinates z with ``θ = thetamap.to_theta(z)`` (e.g. a whitened
        :class:`gnomon.EigenMap`).

        The map must provide ``to_theta(z)`` and ``z_dim``; for a linear map ``log_abs_det`` (the
        constant ``log|det ∂θ/∂z|``) keeps ``log_prob`` a proper density of z. Residuals and
        per-observation terms carry over; the layout stays with the base objective (``self``), reachable
        through ``thetamap`` for decoding."""
        to_theta = thetamap.to_theta
        z_dim = int(getattr(thetamap, "z_dim", getattr(thetamap, "dim", 0)))
        if z_dim <= 0:
            raise ValueError(f"thetamap {thetamap!r} must expose a positive z_dim")
        base = self
        log_abs_det = float(getattr(thetamap, "log_abs_det", 0.0) or 0.0)

        def model_log_density(z, d):
            return base.model_log_density(to_theta(z), d)

        def log_jacobian(z):
            th = to_theta(z)
            v = jnp.asarray(log_abs_det, dtype=jnp.result_type(z))
            return v + base.log_jacobian(th) if base.log_jacobian is not None else v

        return replace(
            self,
            dim=z_dim,
            layout=None,
            model_log_density=model_log_density,
            log_jacobian=log_jacobian,
            residual_fn=None if base.residual_fn is None else (lambda z, d: base.residual_fn(to_theta(z), d)),
            per_observation_fn=None
            if base.per_observation_fn is None
            else (lambda z, d: base.per_observation_fn(to_theta(z), d)),
            thetamap=thetamap,
            base=self,
            info={**self.info, "reparameterized": True, "base_dim": self.dim},
            likelihood=None if base.likelihood is None else base.likelihood.compose(to_theta),
            key_parts=None if base.key_parts is None else ("reparameterize", base.key_parts, thetamap),
        )

    @property
    def base_layout(self) -> Layout | None:
        """The layout that names the base θ (through a reparameterisation, the base objective's)."""
        if self.layout is not None or self.base is None:
            return self.layout
        return self.base.base_layout

    def goodness_of_fit(self, theta: Any, data: Any = _UNSET, *, warn: bool = True) -> dict[str, Any] | None:
        """Deviance, Pearson χ², degrees of freedom and their reduced values at θ, with a misfit flag (and a
        warning) when the noise model cannot explain the residuals (:mod:`gnomon.objective.goodness`); None for an
        objective without a noise model (not ``from_likelihood`` / ``from_residuals``)."""
        from gnomon.objective.goodness import goodness_of_fit

        return goodness_of_fit(self, theta, self._data(data), warn=warn, stacklevel=3)

    def __repr__(self) -> str:
        ctor = self.info.get("constructor", "?")
        extra = []
        if self.has_residuals:
            extra.append("residuals")
        if self.has_per_observation:
            extra.append("per_observation")
        if self.likelihood is not None:
            extra.append(f"{self.likelihood.family.name} likelihood")
        if self.thetamap is not None:
            extra.append("reparameterized")
        return f"Objective(dim={self.dim}, {ctor}{', ' + ', '.join(extra) if extra else ''})"


def _digest(w: Any) -> Any:
    """Hashable stand-in for residual weights (by value)."""
    if w is None:
        return None
    import hashlib

    import numpy as np

    a = np.asarray(w)
    return (str(a.dtype), a.shape, hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest())


def data_digest(data: Any) -> str | None:
    """A short hex digest of ``data``'s values, tree structure, shapes and dtypes (None for no data): what a
    sampling trace records so that an export with an objective bound to other data is refused."""
    if data is None:
        return None
    import hashlib

    import numpy as np

    leaves, tree = jax.tree.flatten(data)
    h = hashlib.sha1(str(tree).encode())
    for leaf in leaves:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
