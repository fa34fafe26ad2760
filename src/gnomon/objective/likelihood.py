r"""The model behind :meth:`gnomon.Objective.from_likelihood`: a mean μ(θ), a noise family, an optional prior.

.. math::

    \log p(θ \mid y) = \sum_n \log p(y_n \mid \mu_n(θ)) + \log π(θ) + \text{const}

``predict(θ) -> μ`` is the forward model (same shape as the data), the family gives :math:`\log p(y\mid\mu)`
and the expected Fisher weights :math:`w(\mu)` (:mod:`gnomon.objective.family`), and the optional prior is a
log density over the layout's values in the user's units (``prior(params)``; over θ when there is no layout).
:class:`Likelihood` keeps these as functions of θ so that a reparameterisation (θ = T(z)) composes them, and
the expected Fisher :math:`J^T W J` (plus the prior's Hessian) stays available in any coordinates
(:mod:`gnomon.curvature.fisher`).

Data
----
Data is either the observed array ``y`` or a mapping ``{"y": y, <family parameter>: value}`` (e.g. a σ map
per epoch). Everything in it reaches the compiled program as an argument, never as a constant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.objective.checks import check_finite_data
from gnomon.objective.family import Family
from gnomon.util.programs import ProgramCache


@dataclass(frozen=True, eq=False)
class Likelihood:
    """``mean(θ) -> μ``, the ``family`` and ``neg_log_prior(θ)`` (or None), all over the same coordinates.

    ``data_shape`` is the shape of μ (and of the observed data)."""

    mean: Callable[[Any], Any]
    family: Family
    neg_log_prior: Callable[[Any], Any] | None
    data_shape: tuple[int, ...]

    def split(self, data: Any, dtype: Any) -> tuple[Any, dict[str, Any]]:
        """``(y, family parameters)`` of one call's data (an array, or a mapping with ``"y"``)."""
        if isinstance(data, Mapping):
            if "y" not in data:
                raise ValueError(
                    f"likelihood data as a mapping needs the observations under 'y'; got keys {sorted(data)}"
                )
            extra = sorted(set(data) - {"y", *self.family.per_call})
            if extra:
                raise ValueError(
                    f"likelihood data has unexpected key(s) {extra}; the {self.family.name} family takes "
                    f"{['y', *self.family.per_call]}"
                )
            overrides = {k: v for k, v in data.items() if k != "y"}
            return jnp.asarray(data["y"]), self.family.resolve(overrides, dtype)
        if data is None:
            raise ValueError("this likelihood objective needs data (the observations); none was given")
        return jnp.asarray(data), self.family.resolve({}, dtype)

    def log_likelihood_terms(self, theta: Any, data: Any) -> Any:
        """Elementwise :math:`\\log p(y_n \\mid \\mu_n(θ))`, shape of the data."""
        mu = self.mean(theta)
        y, p = self.split(data, mu.dtype)
        return self.family.log_likelihood(y.astype(mu.dtype), mu, p)

    def fisher_weights(self, mu: Any, data: Any) -> Any:
        """Expected Fisher weights :math:`w(\\mu)` for one call's data (σ maps come from the data)."""
        _, p = self.split(data, mu.dtype)
        return self.family.fisher_weights(mu, p)

    def compose(self, to_theta: Callable[[Any], Any]) -> Likelihood:
        """The same likelihood over new coordinates z with θ = ``to_theta(z)``."""
        mean, nlp = self.mean, self.neg_log_prior
        return Likelihood(
            mean=lambda z: mean(to_theta(z)),
            family=self.family,
            neg_log_prior=None if nlp is None else (lambda z: nlp(to_theta(z))),
            data_shape=self.data_shape,
        )


# (predict, dim, dtype) -> (shape, dtype) of predict(θ): abstract evaluation traces the model, once per function
_SHAPES: ProgramCache = ProgramCache("predicted shapes", maxsize=256)


def predicted_shape(predict: Callable, dim: int) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of ``predict(θ)`` (abstract evaluation, cached per function and dtype)."""
    dtype = jnp.result_type(float)
    key = (predict, dim, str(dtype))
    try:
        hit = _SHAPES.get(key)
    except TypeError:  # an unhashable predict (a module with array fields): not cached
        hit, key = None, None
    if hit is None:
        try:
            out = jax.eval_shape(predict, jax.ShapeDtypeStruct((dim,), dtype))
        except Exception as exc:
            raise ValueError(f"from_likelihood: predict(θ) failed on a θ of shape ({dim},): {exc}") from exc
        if not hasattr(out, "shape"):
            raise ValueError(f"from_likelihood: predict(θ) must return one array (the model mean), got {out!r}")
        hit = (tuple(out.shape), str(out.dtype))
        if key is not None:
            _SHAPES.put(key, hit)
    return hit


def check_likelihood_data(family: Family, data: Any, shape: tuple[int, ...], where: str) -> None:
    """Finite, the predicted shape, inside the family's domain; ValueError naming what is wrong."""
    check_finite_data(data, where)
    if isinstance(data, Mapping):
        if "y" not in data:
            raise ValueError(f"{where}: a mapping of data needs the observations under 'y'; got keys {sorted(data)}")
        extra = sorted(set(data) - {"y", *family.per_call})
        if extra:
            raise ValueError(f"{where}: unexpected key(s) {extra}; the {family.name} family takes "
                             f"{['y', *family.per_call]}")
        y, params = data["y"], {k: v for k, v in data.items() if k != "y"}
    else:
        y, params = data, {}
    ys = tuple(np.shape(y))
    if ys != shape:
        raise ValueError(f"{where}: the observations have shape {ys} but predict(θ) returns shape {shape}")
    for k, v in params.items():
        try:
            np.broadcast_shapes(np.shape(v), shape)
        except ValueError:
            raise ValueError(
                f"{where}[{k!r}] has shape {np.shape(v)}, not broadcastable to the data {shape}"
            ) from None
    missing = [k for k, v in family.params.items() if v is None and k not in params]
    if missing:
        raise ValueError(
            f"{where}: the {family.name} family needs {missing[0]!r}: give it to the family "
            f"(gn.family.{family.name}({missing[0]}=...)) or with the data ({{'y': y, {missing[0]!r}: ...}})"
        )
    family.check(y, {**{k: v for k, v in family.params.items() if v is not None}, **params}, where)
