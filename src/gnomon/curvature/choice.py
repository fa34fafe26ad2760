r"""Which curvature: one rule for every consumer, and what happens when an estimate is not finite.

The rule (:func:`auto_method`), by what the objective knows:

1. a likelihood (:meth:`gnomon.Objective.from_likelihood`) → its expected Fisher :math:`J^T W J` (+ the prior's
   Hessian), ``"fisher"``: positive semi-definite, noise-free, first derivatives of the model only;
2. residuals (:meth:`gnomon.Objective.from_residuals`) → the Gauss–Newton matrix :math:`J^T W J`,
   ``"gauss_newton"``;
3. otherwise the Hessian: ``"exact"`` (D Hessian-vector products) while D ≤ ``exact_max_dim``, variance-reduced
   ``"hutchinson"`` beyond. Where the consumer draws that line: the optimizers' preconditioner at
   :data:`OPTIMIZER_EXACT_MAX_DIM` = 16 (2D = 32 gradient evaluations, the Hutchinson budget), the sampler's
   dense metric at its ``max_dense_dim`` (1000).

``gn.optimize`` (``preconditioned_gd``, ``lbfgs``), ``gn.sample``'s metric seed and ``gn.cramer_rao(objective, θ)``
all ask this module.

The fallback chain (:func:`fallback_chain`, :func:`choose_curvature`): an estimate with a non-finite entry (of
its diagonal, or of its matrix when a dense one is asked for) is not used. The next link is tried instead,

    fisher / gauss_newton / empirical_fisher → Hessian (exact or hutchinson) → finite_difference → identity
    exact / hutchinson → finite_difference → identity

A link that cannot be computed at all — a model calling a ``jax.custom_vjp`` function has no forward-mode
derivatives, so its Fisher, Gauss–Newton and Hessian raise — is a failed link too, named as such.

``finite_difference`` is the Hessian from central differences of the *gradient* (reverse mode only): the
gradient-based estimate that survives models whose forward-over-reverse derivatives are NaN while their
gradients are finite (a dLux optical model on some CPUs). Each fallback is a ``RuntimeWarning`` that names what
was non-finite, the likely cause, what was used instead and how to choose, and is recorded in the curvature's
``config["fallback"]`` (→ ``trace.info["curvature"]``, ``summary.json``'s ``curvature_fallback``). When even the
gradient differences are non-finite in every entry, nothing finite exists at θ: a ``ValueError`` names the
cause (the gradient is not finite at or next to θ) and the fix; where only some are, the identity is used.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax.numpy as jnp
import numpy as np

from gnomon.curvature.estimate import _estimate, nonfinite_cause, nonfinite_count
from gnomon.curvature.result import Curvature
from gnomon.objective.objective import Objective

NO_FORWARD_MODE = ("JAX cannot take forward-mode derivatives (JVPs) of the model: it calls a jax.custom_vjp "
                   "function; the gradient-based links still work")
OPTIMIZER_EXACT_MAX_DIM = 16  # the optimizers' auto choice: the exact diagonal up to here (2D = 32 evaluations)
INFORMATION = ("fisher", "gauss_newton", "empirical_fisher")  # first derivatives of the model only
HESSIAN = ("exact", "hutchinson")  # forward-over-reverse
ESTIMATE_OPTIONS = ("num_probes", "hutchinson_probes", "hutchinson_mode", "batch_size", "floor", "prior_precision",
                    "negative", "include_prior", "key")


def auto_method(obj: Objective, *, exact_max_dim: int = OPTIMIZER_EXACT_MAX_DIM) -> str:
    """The curvature method an objective gets by default (the module docstring's rule)."""
    if getattr(obj, "likelihood", None) is not None:
        return "fisher"
    if obj.has_residuals:
        return "gauss_newton"
    return "exact" if obj.dim <= exact_max_dim else "hutchinson"


def hessian_method(obj: Objective, *, exact_max_dim: int = OPTIMIZER_EXACT_MAX_DIM) -> str:
    """The Hessian estimator for ``obj``: exact up to ``exact_max_dim``, Hutchinson beyond."""
    return "exact" if obj.dim <= exact_max_dim else "hutchinson"


def fallback_chain(obj: Objective, method: str, *, exact_max_dim: int = OPTIMIZER_EXACT_MAX_DIM,
                   dense: bool = False) -> tuple[str, ...]:
    """The links tried after ``method`` when its estimate is not finite (the module docstring), ending with
    ``"identity"``. A dense request falls back to the exact Hessian (Hutchinson has no matrix)."""
    out: list[str] = []
    if method in INFORMATION:
        out.append("exact" if dense else hessian_method(obj, exact_max_dim=exact_max_dim))
    if method != "finite_difference":
        out.append("finite_difference")
    return (*out, "identity")


def choose_curvature(
    obj: Objective,
    theta: Any,
    method: str | None = None,
    *,
    dense: bool = False,
    exact_max_dim: int = OPTIMIZER_EXACT_MAX_DIM,
    how_to_choose: str = "curvature=",
    warn: bool = True,
    stacklevel: int = 2,
    **options: Any,
) -> Curvature:
    """The curvature of ``obj`` at θ by the rule (``method=None``) or the given method, falling back along the
    chain when an estimate has non-finite entries (module docstring).

    Args:
      obj, theta: the objective and the point (D,).
      method: None (:func:`auto_method`) or a method name of :func:`gnomon.estimate_curvature`.
      dense: ask for the dense matrix too (a fallback link must then give a finite matrix).
      exact_max_dim: where the Hessian link switches from exact to Hutchinson (diagonal requests).
      how_to_choose: the consumer's knob, named in the warning (``"curvature="`` for ``gn.optimize``).
      warn: warn on a fallback (it is recorded in ``config["fallback"]`` either way).
      **options: ``data`` (None: the bound data) and estimator options (``num_probes``, ``hutchinson_mode``,
        ``batch_size``, ``floor``, ``prior_precision``, ``negative``, ``include_prior``, ``key``; and
        ``hutchinson_probes``, the probes of a Hutchinson link when ``num_probes`` is not given); each is passed
        to the links it applies to.

    Returns:
      the :class:`Curvature` used: its ``method`` is the link that gave it (``"identity"`` for the last);
      ``config["chosen"]`` is ``"auto"`` or ``"user"``, ``config["requested"]`` the first link, and
      ``config["fallback"]`` (None when the first link was finite) ``{"from", "to", "reason", "tried"}``.
      ``num_grad_evals`` includes the cost of the links that were tried and not used.

    Raises:
      ValueError: when the gradient differences are non-finite in every entry (nothing finite exists at θ).
    """
    data = options.pop("data", None)
    return choose_curvatures(obj, [theta], [data], method, dense=dense, exact_max_dim=exact_max_dim,
                             how_to_choose=how_to_choose, warn=warn, stacklevel=stacklevel + 1, **options)[0]


def choose_curvatures(
    obj: Objective,
    thetas: Any,
    datas: Any,
    method: str | None = None,
    *,
    dense: bool = False,
    exact_max_dim: int = OPTIMIZER_EXACT_MAX_DIM,
    how_to_choose: str = "curvature=",
    warn: bool = True,
    stacklevel: int = 2,
    first_raw: Any = None,
    **options: Any,
) -> list[Curvature]:
    """:func:`choose_curvature` for the members of a batch (``thetas`` (B, D), ``datas`` one data per member,
    None for the bound data): every member gets the same link — the first one finite for all of them — so
    that a batch is preconditioned alike; the fallback's reason names the members that were not finite.
    ``first_raw``: the first link's raw diagonals (one per member), already computed by another program (the
    optimizer loop's own: :mod:`gnomon.optim.start_estimate`); they are judged and cleaned as if computed here."""
    unknown = sorted(set(options) - set(ESTIMATE_OPTIONS))
    if unknown:
        raise ValueError(f"choose_curvature: unknown options {unknown}; expected some of {ESTIMATE_OPTIONS}")
    chosen = "user" if method is not None else "auto"
    first = auto_method(obj, exact_max_dim=exact_max_dim) if method is None else method
    links = (first, *fallback_chain(obj, first, exact_max_dim=exact_max_dim, dense=dense))
    n = len(thetas)
    size = obj.dim * obj.dim if dense else obj.dim
    tried: list[dict[str, Any]] = []
    spent = 0
    for i, link in enumerate(links):
        if link == "identity":
            curvs = [_identity(obj, th, dense) for th in thetas]
            break
        opts = _options_for(link, options)
        given = first_raw if (i == 0 and first_raw is not None) else [None] * n
        try:
            curvs = [_estimate(obj, th, link, dense=dense, where="choose_curvature", given=g, **opts,
                               **({} if d is None else {"data": d}))
                     for th, d, g in zip(thetas, datas, given, strict=True)]
        except TypeError as exc:  # a model without forward-mode derivatives: this link cannot be computed at all
            if not forward_mode_unsupported(exc):
                raise
            tried.append({"method": link, "num_nonfinite": size, "of": size, "members": None, "num_grad_evals": 0,
                          "cause": NO_FORWARD_MODE, "failed": True})
            continue
        spent += int(curvs[0].num_grad_evals)
        bad = [nonfinite_count(c) for c in curvs]
        if not any(bad):
            break
        members = [i for i, b in enumerate(bad) if b]
        tried.append({"method": link, "num_nonfinite": max(bad), "of": size, "members": members if n > 1 else None,
                      "num_grad_evals": int(curvs[0].num_grad_evals), "cause": nonfinite_cause(link)})
        if link == "finite_difference" and any(c.config["num_nonfinite"] == obj.dim for c in curvs):
            raise ValueError(
                f"no curvature is finite at θ{_of_members(members, n)}: {_listing(tried)}; {nonfinite_cause(link)}. "
                f"Start where the loss and its gradient are finite, or give the curvature yourself "
                f"({how_to_choose}<Curvature or array>)"
            )
    used = curvs[0].method
    fallback = None
    if tried:
        t0 = tried[0]
        if t0.get("failed"):
            reason = f"the {t0['method']} curvature cannot be computed ({t0['cause']})"
        else:
            reason = (f"the {t0['method']} curvature had {t0['num_nonfinite']} of {t0['of']} "
                      f"{'matrix' if dense else 'diagonal'} entries non-finite at θ{_of_members(t0['members'], n)} "
                      f"({t0['cause']})")
        fallback = {"from": first, "to": used, "reason": reason, "tried": tried}
        if warn:
            later = "" if len(tried) == 1 else f" (then {_listing(tried[1:])})"
            warnings.warn(
                f"{reason}{later}; used the {used} curvature instead. Choose with {how_to_choose}"
                f"{_suggest(obj, used, {t['method'] for t in tried if t.get('failed')})} — or pass a Curvature or "
                "array.",
                RuntimeWarning, stacklevel=stacklevel,
            )
    out = []
    for c in curvs:
        config = {**dict(c.config), "chosen": chosen, "requested": first, "fallback": fallback}
        out.append(Curvature(diag=c.diag, matrix=c.matrix, method=c.method, num_grad_evals=spent, config=config))
    return out


def _of_members(members: list[int] | None, n: int) -> str:
    if not members or n == 1:
        return ""
    shown = ", ".join(str(m) for m in members[:5]) + (", ..." if len(members) > 5 else "")
    return f" of member{'s' if len(members) > 1 else ''} {shown} (of {n})"


def _options_for(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options that apply to ``method`` (a fallback link must not get the first link's probes)."""
    out = {k: v for k, v in options.items() if v is not None and k in ("key", "batch_size", "prior_precision",
                                                                        "negative")}
    if options.get("floor") is not None:
        out["floor"] = options["floor"]
    if method in ("hutchinson", "fisher") and options.get("num_probes") is not None:
        out["num_probes"] = options["num_probes"]
    elif method == "hutchinson" and options.get("hutchinson_probes") is not None:
        out["num_probes"] = options["hutchinson_probes"]
    if method == "hutchinson" and options.get("hutchinson_mode") is not None:
        out["hutchinson_mode"] = options["hutchinson_mode"]
    if method == "fisher" and options.get("include_prior") is not None:
        out["include_prior"] = options["include_prior"]
    return out


def _identity(obj: Objective, theta: Any, dense: bool) -> Curvature:
    dt = np.asarray(theta).dtype if np.issubdtype(np.asarray(theta).dtype, np.floating) else jnp.result_type(float)
    diag = jnp.ones((obj.dim,), dt)
    return Curvature(diag=diag, matrix=jnp.eye(obj.dim, dtype=dt) if dense else None, method="identity",
                     num_grad_evals=0, config={"num_nonfinite": 0, "num_negative": 0, "num_floored": 0})


def _listing(tried: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['method']} not computable (no forward-mode derivatives)" if t.get("failed") else
                     f"{t['method']} {t['num_nonfinite']} of {t['of']} non-finite" for t in tried)


def forward_mode_unsupported(exc: BaseException) -> bool:
    """Whether ``exc`` is JAX refusing forward-mode derivatives of the model (a ``jax.custom_vjp`` function: the
    Fisher, Gauss–Newton and Hessian links need JVPs; gradient differences do not)."""
    return isinstance(exc, TypeError) and "forward-mode" in str(exc)


def _suggest(obj: Objective, used: str, failed: set[str] | frozenset[str] = frozenset()) -> str:
    names = [m for m in ("fisher" if obj.likelihood is not None else None,
                         "gauss_newton" if obj.has_residuals else None, "exact", "finite_difference")
             if m and m not in failed]
    return f"'{used}' (or one of {names})"
