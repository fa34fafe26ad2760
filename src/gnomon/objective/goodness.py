r"""Goodness of fit of a likelihood or residual objective at a point: deviance, Pearson χ², degrees of freedom.

A fit to the wrong data (a transposed image, another epoch), with the wrong model or in the wrong units can
still end "converged": the optimizer found the best θ for what it was given. Whether the noise model can
explain what is left is a separate question, answered here. With :math:`N` data, :math:`D` fitted parameters
and the model mean :math:`\mu_n` at θ:

============  ===========================================================  ===============================
objective     deviance term :math:`d_n`                                    Pearson term
============  ===========================================================  ===============================
Poisson       :math:`2[y\log(y/\mu) - (y-\mu)]` (:math:`2\mu` at y = 0)  :math:`(y-\mu)^2/\mu`
Gaussian      :math:`r^2`, :math:`r = (y-\mu)/\sigma`                      :math:`r^2`
Student-t     :math:`(\nu+1)\log(1 + r^2/\nu)`                             :math:`r^2(\nu-2)/\nu` (ν > 2)
residuals     :math:`w\,r^2` (``from_residuals``; w: inverse variances)    :math:`w\,r^2`
============  ===========================================================  ===============================

The deviance is twice the log-likelihood ratio against the saturated model (:math:`\mu = y`); the Pearson
χ² weighs each residual by the noise variance. Degrees of freedom: ``dof = N − D`` (data with weight 0 do
not count). The **reduced** values (divided by ``dof``) are ≈ 1 when the model and the noise model fit: for
Gaussian noise and a model linear near the fit the deviance follows :math:`\chi^2_{\text{dof}}` exactly, for
Poisson counts asymptotically (counts of a few or more per datum; many nearly empty pixels pull the reduced
deviance below 1, while the Pearson χ² keeps expectation 1 per datum). A Student-t deviance has expectation
:math:`c_\nu = (\nu+1)[\psi(\tfrac{\nu+1}2) - \psi(\tfrac\nu2)]` per datum (1.55 for ν = 3, → 1 as ν → ∞),
reported as ``expected_reduced_deviance`` and divided out before the test below.

**The misfit warning** (:class:`MisfitWarning`): the fit is flagged (``misfit: True``) when the reduced deviance
(over :math:`c_\nu`) reaches

.. math::  t(\text{dof}) = \max\bigl(2,\; \chi^2_{\text{dof}}\text{-quantile at } 1 - 10^{-6} / \text{dof}\bigr),

i.e. when the noise model gives it a probability below 10⁻⁶ **and** the residuals carry at least twice the
variance the noise allows (for dof ≳ 60 the first condition alone would flag a 10 % misfit of a real model;
twice the noise is what wrong data, a wrong model or wrong units look like: the transposed image of a
binary star gives a reduced deviance of ~20). ``threshold`` and ``p_value`` are recorded beside the numbers.
A reduced value well *below* 1 says the noise was overestimated (σ too large: the CRLB is then too large too);
it is reported, not warned about.

``gn.optimize`` / ``gn.optimize_batch`` call :func:`goodness_of_fit` once at the end, at the best point, with the
model's mean (or residuals) there evaluated by the optimizer's own compiled loop (``model_output=``: no program
of its own to compile on the first call), and record it in ``trace.info["goodness_of_fit"]`` (a list with one
per member for a batch); ``save_run`` writes ``deviance``, ``reduced_deviance``, ``pearson_chi2``,
``reduced_pearson_chi2``, ``dof`` and ``misfit`` into summary.json. Objectives without a noise model
(``from_loss``, ``from_log_prob``, ``from_numpyro``) have none.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.util.programs import Live, ProgramCache

__all__ = ["MisfitWarning", "goodness_of_fit", "goodness_of_fit_batch", "threshold", "P_VALUE", "MIN_REDUCED"]

#: the probability below which a misfit is possible (with :data:`MIN_REDUCED`)
P_VALUE = 1e-6
#: the reduced statistic from which a misfit is flagged whatever the degrees of freedom
MIN_REDUCED = 2.0
#: the keys save_run copies into summary.json
SUMMARY_KEYS = ("deviance", "reduced_deviance", "pearson_chi2", "reduced_pearson_chi2", "dof", "misfit")

_UNSET = object()
# (objective compile key, kind) -> (jitted mean / residuals, Live): traced through the Live, holding no objective
_PROGRAMS: ProgramCache = ProgramCache("goodness-of-fit programs", maxsize=32)


class MisfitWarning(UserWarning):
    """A fit's reduced deviance is far above what its noise model allows (module docstring)."""


def threshold(dof: int) -> float:
    """The reduced statistic from which a fit with ``dof`` degrees of freedom is flagged (module docstring)."""
    if dof <= 0:
        return math.nan
    # Laurent & Massart (2000): P(χ²_k ≥ k + 2√(kx) + 2x) ≤ e^{−x}, so the quantile is at most that; where it is at
    # most 2k the answer is MIN_REDUCED exactly (every image-sized fit), without loading scipy (0.1 s)
    x = math.log(1.0 / P_VALUE)
    if 1.0 + 2.0 * math.sqrt(x / dof) + 2.0 * x / dof <= MIN_REDUCED:
        return MIN_REDUCED
    from scipy.special import chdtri  # the χ² quantile (scipy.stats.chi2.isf calls it; scipy.special loads faster)

    return max(MIN_REDUCED, float(chdtri(dof, P_VALUE)) / dof)


def chi2_sf(dof: int, x: float) -> float:
    r"""The χ² survival function :math:`P(χ^2_k ≥ x) = Q(k/2, x/2)`, the regularized upper incomplete gamma function
    (what ``scipy.special.chdtrc`` computes; tested against it to 1e-9 relative up to 10⁵ degrees of freedom): its
    power series below :math:`a + 1` and Lentz's continued fraction above (Numerical Recipes §6.2), in pure Python —
    the goodness of fit at the end of every ``gn.optimize`` needs no scipy (whose import, 0.1–0.5 s of CPU, competed
    with the loop's compilation on the first call)."""
    if not (dof > 0 and math.isfinite(x)):
        return math.nan if math.isnan(x) or dof <= 0 else (0.0 if x > 0 else 1.0)
    if x <= 0:
        return 1.0
    a, z = 0.5 * dof, 0.5 * x
    log_front = a * math.log(z) - z - math.lgamma(a)  # log of z^a e^{-z} / Γ(a)
    tiny, eps = 1e-300, 1e-16
    if z < a + 1.0:  # P(a, z) by its series; Q = 1 − P is not small here (z is below the mean)
        term = total = 1.0 / a
        n = a
        while abs(term) > abs(total) * eps:
            n += 1.0
            term *= z / n
            total += term
        return max(0.0, 1.0 - total * math.exp(log_front))
    b = z + 1.0 - a  # Q(a, z) by its continued fraction (modified Lentz)
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    i = 0
    while True:
        i += 1
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) <= eps or i > 100_000:
            break
    return math.exp(log_front) * h


def _program(obj: Any, kind: str):
    key = (obj.compile_key, kind)
    hit = _PROGRAMS.get(key)
    if hit is None:
        live = Live()
        if kind == "mean":
            fn = jax.jit(lambda theta: live.get().likelihood.mean(theta))
        else:
            fn = jax.jit(lambda theta, data: live.get().residual_fn(theta, data))
        hit = _PROGRAMS.put(key, (fn, live))
    fn, live = hit
    live.bind(obj)  # weakly held; the data is an argument
    return fn


def _host(x: Any) -> Any:
    return jax.tree.map(np.asarray, x)


def loss_and_output(obj: Any) -> Any:
    """``fn(θ, data) -> (loss, output)`` for an objective with a noise model (else None): ``obj.loss`` and, from the
    same evaluation, what the statistics are computed from — the likelihood's mean, or the residuals. An optimizer
    that differentiates ``fn`` (``has_aux``) has the model's output at every point it evaluates without compiling the
    model a second time (``gn.optimize`` keeps it at the best point for the goodness of fit).

    The loss is composed exactly as :meth:`gnomon.Objective.loss` composes it (``-model_log_density``, less the
    log-Jacobian when the loss includes it), with ``model_log_density`` written out over the output: for
    ``from_likelihood`` (also reparameterised: its likelihood is composed with the map)
    ``Σ log p(y | μ) - neg_log_prior``, for ``from_residuals`` ``-Σ ½ w r²`` (tested against ``obj.loss`` for every
    family, prior, Jacobian and map)."""
    lik = getattr(obj, "likelihood", None)
    if lik is None and (getattr(obj, "residual_fn", None) is None or obj.per_observation_fn is None
                        or obj.info.get("constructor") != "from_residuals"):
        return None
    jac = obj.log_jacobian if obj.loss_includes_jacobian else None

    def fn(theta, data):
        if lik is not None:
            out = lik.mean(theta)
            y, p = lik.split(data, out.dtype)
            value = jnp.sum(lik.family.log_likelihood(y.astype(out.dtype), out, p))
            if lik.neg_log_prior is not None:
                value = value - lik.neg_log_prior(theta)
        else:
            out = obj.residual_fn(theta, data)
            terms = 0.5 * out**2 if obj.weights is None else 0.5 * obj.weights * out**2
            value = -jnp.sum(jnp.ravel(terms))
        loss = -value
        if jac is not None:
            loss = loss - jac(theta)
        return loss, out

    return fn


def model_output(obj: Any, theta: Any, data: Any) -> np.ndarray:
    """What the statistics are computed from: the likelihood's mean at θ, or the residuals (a jitted program of
    its own, cached per compile key)."""
    if obj.likelihood is not None:
        return np.asarray(_program(obj, "mean")(theta))
    return np.asarray(_program(obj, "residuals")(theta, data))


def _terms(obj: Any, theta: Any, data: Any, output: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Per-datum ``(deviance, pearson, counted)`` in float64 and the description of the noise model; ``output``:
    the model's mean / residuals at θ when already known."""
    lik = obj.likelihood
    out = model_output(obj, theta, data) if output is None else np.asarray(output)
    if lik is not None:
        fam = lik.family
        mu = out
        if isinstance(data, Mapping):
            y, over = data["y"], {k: v for k, v in data.items() if k != "y"}
        else:
            y, over = data, {}
        p = {k: over.get(k, v) for k, v in fam.params.items()}
        y = np.asarray(y, dtype=np.float64)
        counted = np.ones(y.shape, bool)
        desc: dict[str, Any] = {"family": fam.name}
        if fam.name == "poisson":
            floor = p.get("floor")
            floor = math.sqrt(float(np.finfo(mu.dtype).tiny)) if floor is None else float(floor)
            m = np.maximum(mu.astype(np.float64), floor)
            with np.errstate(divide="ignore", invalid="ignore"):
                ylog = np.where(y > 0, y * np.log1p((y - m) / m), 0.0)
            dev = 2.0 * (ylog - (y - m))
            pearson = (y - m) ** 2 / m
        else:
            sigma = np.asarray(p["sigma"], dtype=np.float64)
            r2 = ((y - mu.astype(np.float64)) / sigma) ** 2
            if fam.name == "gaussian":
                dev = pearson = r2
            else:
                from scipy.special import digamma

                nu = float(p["nu"])
                dev = (nu + 1.0) * np.log1p(r2 / nu)
                pearson = r2 * (nu - 2.0) / nu if nu > 2 else np.full_like(r2, np.nan)
                c_nu = (nu + 1.0) * (digamma((nu + 1) / 2) - digamma(nu / 2))
                desc.update(nu=nu, expected_reduced_deviance=float(c_nu))
        return dev, pearson, counted, desc
    r = np.asarray(out, dtype=np.float64)
    w = np.ones_like(r) if obj.weights is None else np.broadcast_to(np.asarray(obj.weights, np.float64), r.shape)
    dev = w * r * r
    return dev, dev, w > 0, {"family": "residuals"}


def available(obj: Any) -> bool:
    """True for objectives with a noise model: ``from_likelihood`` and ``from_residuals`` ones."""
    return getattr(obj, "likelihood", None) is not None or getattr(obj, "residual_fn", None) is not None


def goodness_of_fit(obj: Any, theta: Any, data: Any = _UNSET, *, warn: bool = True, stacklevel: int = 2,
                    model_output: Any = None) -> dict[str, Any] | None:
    """Deviance, Pearson χ², degrees of freedom and their reduced values at θ (module docstring), or None for an
    objective without a noise model.

    Args:
      obj: a :class:`gnomon.Objective` (``from_likelihood`` or ``from_residuals``; a reparameterised one takes θ
        in its own coordinates).
      theta: the point (D,), e.g. the fit's best θ.
      data: the data the fit used (default: the objective's bound data).
      warn: issue a :class:`MisfitWarning` when the fit is flagged (``stacklevel`` as for ``warnings.warn``).
      model_output: the likelihood's mean (or the residuals) at θ when the caller has it (``gn.optimize`` evaluates
        it with its compiled loop); None: evaluated here.

    Returns:
      a JSON-able dict: ``deviance``, ``reduced_deviance``, ``pearson_chi2``, ``reduced_pearson_chi2``,
      ``dof``, ``num_data``, ``num_params``, ``family`` (``"residuals"`` for residual objectives),
      ``expected_reduced_deviance``, ``threshold``, ``p_value`` (of the deviance over its expectation under
      χ²_dof) and ``misfit``.
    """
    if not available(obj):
        return None
    d = obj.data if data is _UNSET else data
    out = _statistics(obj, np.asarray(theta), _host(d), model_output)
    if warn and out["misfit"]:
        warnings.warn(_message([out]), MisfitWarning, stacklevel=stacklevel)
    return out


def goodness_of_fit_batch(obj: Any, thetas: Any, data: Any = None, *, warn: bool = True, stacklevel: int = 2,
                          model_outputs: Any = None) -> list[dict] | None:
    """:func:`goodness_of_fit` per member of a batch: ``thetas`` ``(B, D)``, ``data`` batched on its leading
    axis (None: the objective's own data for every member), ``model_outputs`` the members' means / residuals
    when known (a sequence; None for a member evaluated here). One warning names the flagged members."""
    if not available(obj):
        return None
    thetas = np.asarray(thetas)
    host = None if data is None else _host(data)
    out = []
    for i in range(thetas.shape[0]):
        d = obj.data if host is None else jax.tree.map(lambda a, i=i: a[i], host)
        known = None if model_outputs is None or model_outputs[i] is None else np.asarray(model_outputs[i])
        out.append(_statistics(obj, thetas[i], _host(d), known))
    flagged = [i for i, g in enumerate(out) if g["misfit"]]
    if warn and flagged:
        warnings.warn(_message([out[i] for i in flagged], flagged, len(out)), MisfitWarning, stacklevel=stacklevel)
    return out


def _statistics(obj: Any, theta: np.ndarray, data: Any, output: Any = None) -> dict[str, Any]:
    n_params = int(obj.dim)
    if not np.all(np.isfinite(theta)):
        dev = pearson = np.full(1, np.nan)
        counted = np.ones(1, bool)
        desc = {"family": obj.likelihood.family.name if obj.likelihood is not None else "residuals"}
    else:
        dev, pearson, counted, desc = _terms(obj, theta, data, output)
    n = int(np.count_nonzero(counted))
    dof = n - n_params
    deviance = float(np.sum(dev[counted]))
    chi2 = float(np.sum(pearson[counted]))
    expected = float(desc.pop("expected_reduced_deviance", 1.0))
    red = deviance / dof if dof > 0 else math.nan
    red_p = chi2 / dof if dof > 0 else math.nan
    t = threshold(dof)
    p_value = math.nan
    if dof > 0 and math.isfinite(deviance):
        p_value = chi2_sf(dof, deviance / expected)
    misfit = bool(dof > 0 and math.isfinite(red) and red / expected >= t)
    return {
        "deviance": deviance,
        "reduced_deviance": red,
        "pearson_chi2": chi2,
        "reduced_pearson_chi2": red_p,
        "dof": dof,
        "num_data": n,
        "num_params": n_params,
        **desc,
        "expected_reduced_deviance": expected,
        "threshold": t,
        "p_value": p_value,
        "misfit": misfit,
    }


def _message(flagged: list[dict], members: list[int] | None = None, size: int = 1) -> str:
    g = flagged[0]
    noise = "residual weights" if g["family"] == "residuals" else f"{g['family']} noise"
    exp = g["expected_reduced_deviance"]
    expect = "" if exp == 1.0 else f" (its expectation is {exp:.3g} for this family)"
    who = "" if members is None else (
        f"{len(members)} of {size} batch members ({members[:10]}{' …' if len(members) > 10 else ''}); e.g. ")
    return (
        f"goodness of fit: {who}reduced deviance {g['reduced_deviance']:.4g}{expect} (deviance {g['deviance']:.6g} "
        f"over {g['dof']} degrees of freedom; Pearson χ²/dof {g['reduced_pearson_chi2']:.4g}) is far above what the "
        f"{noise} allows (flagged from {g['threshold']:.3g}: p < {P_VALUE:g} and at least {MIN_REDUCED:g}× the "
        "noise variance). The fit converged to the best θ for this data, but the model does not explain it: wrong "
        "data (transposed, another epoch, a bad pixel mask), a wrong model, or wrong units (σ, flux). "
        "trace.info['goodness_of_fit'] has the numbers"
    )
