"""Export a :class:`~gnomon.Trace` to an ArviZ ``xarray.DataTree`` (arviz-base ``from_dict``).

Groups
------
Sampling traces:

``posterior``
    constrained values named and shaped by the layout (``layout.unpack`` of every draw's base θ — also for a
    trace that ran in a θ-map's coordinates z, since ``trace.theta`` is always base θ). A parameter of shape
    ``(k, m)`` gets dims ``<name>_dim_0``, ``<name>_dim_1`` with integer coordinates. Without a layout: one
    variable ``theta``.
``unconstrained_posterior`` (``unconstrained=True``)
    the flat θ blocks before the transforms (``layout.unpack_unconstrained``).
``sample_stats``
    ``lp`` (log density of θ) and the sampler statistics under ArviZ names: the kernel protocol's common
    ones — ``acceptance_rate``, ``diverging``, ``n_steps`` (gradient evaluations of the step), ``step_size``,
    and ``energy`` where the kernel has a Hamiltonian energy (NUTS, HMC; ``az.bfmi`` needs it) — then the
    kernel family's own (NUTS ``tree_depth``; MCLMC ``num_integration_steps``), whatever ``trace.stats``
    holds.
``warmup_posterior``, ``warmup_sample_stats``
    when the trace kept its warmup (``save_warmup=False`` drops them).
``observed_data``
    ``observed=`` (a mapping of arrays; the trace does not carry the objective — pass ``obj.observed``).

With ``objective=obj`` the objective adds its own groups (:meth:`gnomon.Objective.arviz_groups`, computed
there, vmapped over the draws): for a numpyro model the deterministic sites in ``posterior``, a
``log_likelihood`` group with the pointwise log likelihood of every observed site (``az.loo``/``az.waic``
work), ``observed_data`` and ``constant_data`` (the model's other array arguments), and dims named after the
model's plates instead of ``<name>_dim_0``. A sampling trace that records the digest of the data it was
sampled with (``info["data_digest"]``) refuses an objective bound to other data.

Optimization traces: the MAP (best θ; the best member's for a batch) as a 1 × 1 ``posterior``, plus
``optimization_path`` (the recorded θ rows, named like the posterior, dims ``chain`` = restart and
``draw`` = row; an unbatched trace uses the optimizer step as the ``draw`` coordinate) and
``optimization_stats`` (``loss``, ``step``, ``log_prob`` when recorded and the stats channels).

The root attributes hold ``gnomon_meta``: one JSON string with the kind, status, cost, engine info, the
layout and any ``meta=`` given (netCDF attributes must be flat).

Units
-----
Every data variable of every group carries a ``units`` and a ``long_name`` attribute
(:func:`annotate_datatree`): a parameter its layout block's units, a statistic its own. This module is their
one home, so the in-memory DataTree and the netCDF file written from it
(:func:`gnomon.io.netcdf.write_netcdf`) carry the same attributes, dims and coordinates. Component labels
are the coordinate values of a labelled vector block's own dim (``position_dim_0 = ["x", "y"]``, as
arviz-base names components), never a second coordinate: ``arviz_stats.summary`` stacks the variables and
refuses coordinates that not every variable has.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)) or x is None or isinstance(x, str):
        return bool(x) if isinstance(x, np.bool_) else x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else ("NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity"))
    if hasattr(x, "shape"):
        a = np.asarray(x)
        return _jsonable(a.item() if a.ndim == 0 else a.tolist())
    return repr(x)


def _named(theta: np.ndarray, layout: Any, unconstrained: bool = False,
           site_dims: Mapping[str, list] | None = None) -> tuple[dict, dict, dict]:
    """``({name: (..., *shape)}, dims, coords)`` of θ rows ``(..., D)``.

    Untransformed blocks are sliced from θ in numpy, keeping its dtype (a float64 trace exported where JAX runs
    in float32 would otherwise lose digits: 2.5e6 µas rounds to 0.25 µas in float32); a vector block with
    component labels (``labels=`` of the layout, e.g. Noll indices) gets them as its coordinate values."""
    theta = np.asarray(theta)
    if layout is None:
        d = theta.shape[-1]
        return {"theta": theta}, {"theta": ["theta_dim_0"]}, {"theta_dim_0": np.arange(d)}
    decoded = None
    out, dims, coords = {}, {}, {}
    for b in layout.blocks:
        shape = b.theta_shape if unconstrained else b.shape
        tag = "_unconstrained" if unconstrained and b.theta_shape != b.shape else ""
        names = [f"{b.name}{tag}_dim_{i}" for i in range(len(shape))]
        given = (site_dims or {}).get(b.name)
        if not unconstrained and given is not None and len(given) == len(shape):
            names = list(given)  # the objective's dims (a numpyro model's plates)
        if unconstrained or b.is_identity:  # a slice of θ (the unconstrained block is one by definition)
            out[b.name] = theta[..., b.start : b.stop].reshape(theta.shape[:-1] + tuple(shape))
        else:
            if decoded is None:
                decoded = layout.unpack(theta)
            out[b.name] = np.asarray(decoded[b.name])
        dims[b.name] = names
        for i, (n, size) in enumerate(zip(names, shape)):
            labelled = b.labels is not None and len(shape) == 1 and i == 0 and len(b.labels) == size
            coords.setdefault(n, np.asarray(b.labels, dtype=str) if labelled else np.arange(size))
    return out, dims, coords


def _objective_groups(trace: Any, objective: Any) -> tuple[bool, dict]:
    """Whether ``objective`` adds groups, and its per-site dims; refuses an objective bound to other data
    than the trace recorded."""
    if objective is None:
        return False, {}
    if not hasattr(objective, "arviz_groups"):
        raise ValueError(f"objective= must be a gnomon.Objective, got {type(objective).__name__}")
    recorded = (trace.info or {}).get("data_digest")
    if recorded is not None:
        from gnomon.objective.objective import data_digest

        base = objective.base if getattr(objective, "base", None) is not None else objective
        if data_digest(base.data) != recorded:
            raise ValueError("the trace was sampled with other data than the objective is bound to (data digest "
                             f"{recorded} vs {data_digest(base.data)}): pass the objective bound to the data it "
                             "sampled, obj.with_data(...)")
    model = getattr(objective.base if getattr(objective, "base", None) is not None else objective, "model", None)
    return True, (model.dims() if model is not None else {})


def _posterior_theta(trace: Any) -> np.ndarray:
    """The base θ rows of the ``posterior`` group: the draws (C, N, D), or the MAP as (1, 1, D)."""
    if trace.kind == "sampling":
        return np.asarray(trace.theta)
    best = np.asarray(trace.best_theta)
    if trace.is_batched:
        losses = np.asarray(trace.best_loss, dtype=float)
        best = best[int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))]
    return best[None, None, :]


def _meta_attr(trace: Any, layout: Any, meta: Mapping | None) -> str:
    doc = {
        "kind": trace.kind,
        "status": trace.status,
        "num_grad_evals": trace.num_grad_evals,
        "runtime_s": trace.runtime_s,
        "theta_space": trace.theta_space,
        "engine": dict(trace.info),
        "layout": layout.to_dict() if layout is not None else None,
        "user": dict(meta or {}),
    }
    return json.dumps(_jsonable(doc), allow_nan=False)


def to_arviz(
    trace: Any,
    *,
    layout: Any = None,
    observed: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    unconstrained: bool = False,
    save_warmup: bool = True,
    name: str | None = None,
    objective: Any = None,
):
    """The trace as an ArviZ ``xarray.DataTree`` (see the module docstring for the groups).

    Args:
      trace: a sampling or optimization :class:`Trace`.
      layout: the layout naming θ (default ``trace.layout``).
      observed: observed data ``{name: array}`` for the ``observed_data`` group (e.g. ``obj.observed``).
      meta: extra JSON-able metadata stored in the root attribute ``gnomon_meta``.
      unconstrained: also export the unconstrained blocks (``unconstrained_posterior``).
      save_warmup: keep the warmup groups of a sampling trace that has them.
      name: name of the DataTree root.
      objective: the :class:`gnomon.Objective` the trace sampled (bound to the data it sampled): adds its
        groups (``obj.arviz_groups``: deterministic sites, ``log_likelihood``, ``observed_data``,
        ``constant_data``, plate dims for a numpyro model).
    """
    from arviz_base import from_dict

    if getattr(trace, "kind", None) not in ("optimization", "sampling") or not hasattr(trace, "theta"):
        raise ValueError(f"to_arviz expects a gnomon.Trace, got {type(trace).__name__}")
    layout = layout if layout is not None else trace.layout
    attrs = {"/": {"gnomon_meta": _meta_attr(trace, layout, meta), "gnomon_kind": trace.kind}}
    groups: dict[str, dict] = {}
    dims: dict[str, list] = {}
    coords: dict[str, Any] = {}

    def add(group: str, values: dict, d: dict, c: dict) -> None:
        groups[group] = values
        dims.update(d)
        coords.update(c)

    if layout is not None and layout.size != trace.dim:
        raise ValueError(f"layout has size {layout.size} but the trace's θ has dimension {trace.dim}")
    extra, extra_dims = _objective_groups(trace, objective)
    site_dims = extra_dims if extra else None

    if trace.kind == "sampling":
        _sampling_groups(trace, layout, add, groups, site_dims, unconstrained, save_warmup)
    else:
        _optimization_groups(trace, layout, add, groups, site_dims, unconstrained)
    if extra:
        post = _posterior_theta(trace)
        more, more_dims, more_coords = objective.arviz_groups(post)
        for group, values in more.items():
            groups.setdefault(group, {}).update({k: np.asarray(v) for k, v in values.items()})
        dims.update({k: list(v) for k, v in more_dims.items() if k not in dims})
        for k, v in more_coords.items():
            coords.setdefault(k, v)
    if observed:
        groups["observed_data"] = {k: np.asarray(v) for k, v in observed.items()}

    dt = from_dict(groups, dims=dims, coords=coords, save_warmup=save_warmup, attrs=attrs, name=name)
    if trace.kind == "optimization" and not trace.is_batched and trace.step is not None:
        steps = np.asarray(trace.step)
        for g in ("optimization_path", "optimization_stats"):
            dt[g] = dt[g].to_dataset().assign_coords(draw=steps)
    return annotate_datatree(dt, layout)


#: ``(long_name, units)`` of the statistics groups' variables ("1": dimensionless)
STAT_ATTRS: dict[str, tuple[str, str]] = {
    "lp": ("log density of θ", "1"),
    "log_prob": ("log density of θ", "1"),
    "loss": ("loss", "1"),
    "acceptance_rate": ("mean acceptance probability of the step", "1"),
    "diverging": ("divergent transition", "1"),
    "energy": ("Hamiltonian energy", "1"),
    "energy_error": ("energy error of the step", "1"),
    "max_energy_error": ("largest energy error in the step's trajectory", "1"),
    "n_steps": ("leapfrog steps", "1"),
    "tree_depth": ("NUTS tree depth", "1"),
    "step_size": ("leapfrog step size (θ units)", "1"),
    "step": ("optimizer step", "1"),
    "grad_norm": ("gradient norm", "1"),
    "step_norm": ("step norm", "1"),
    "learning_rate": ("learning rate", "1"),
}
_PARAM_GROUPS = ("posterior", "warmup_posterior", "optimization_path", "prior", "posterior_predictive")


def variable_attrs(group: str, name: str, block: Any = None) -> dict[str, str]:
    """``{"long_name", "units"}`` of variable ``name`` in ``group``; ``block`` is the layout block of that name
    (None when the layout has none). A parameter gets its block's units exactly as given; an unconstrained
    block its name with "(unconstrained)" and the block's units for an identity transform, ``"unconstrained"``
    otherwise; a statistic its entry of :data:`STAT_ATTRS`; anything else its name and no units."""
    if group.endswith("unconstrained_posterior") and block is not None:
        return {"long_name": f"{name} (unconstrained)", "units": block.units if block.is_identity else "unconstrained"}
    if group == "log_likelihood":
        return {"long_name": f"pointwise log likelihood of {name}", "units": "1"}
    if block is not None and group in _PARAM_GROUPS:
        return {"long_name": name, "units": block.units}
    if name in STAT_ATTRS:
        long_name, units = STAT_ATTRS[name]
        return {"long_name": long_name, "units": units}
    if name == "theta":
        return {"long_name": "θ (unconstrained)", "units": ""}
    return {"long_name": name, "units": ""}


def annotate_datatree(dt: Any, layout: Any = None) -> Any:
    """Give every data variable of every group of ``dt`` a ``units`` and a ``long_name`` attribute
    (:func:`variable_attrs`) where it has none yet (in place; returns ``dt``). :func:`to_arviz` calls it, so
    the in-memory DataTree and the netCDF file carry the same attributes; calling it again changes nothing."""
    blocks = {b.name: b for b in layout.blocks} if layout is not None else {}
    for node in dt.subtree:
        ds = node.to_dataset()
        if not ds.data_vars:
            continue
        for name in ds.data_vars:
            attrs = variable_attrs(node.name or "", str(name), blocks.get(name))
            ds[name].attrs.update({k: v for k, v in attrs.items() if not ds[name].attrs.get(k)})
        node.dataset = ds
    return dt


def _stats(values: Mapping[str, Any], lp: Any = None) -> dict[str, np.ndarray]:
    """A ``sample_stats`` group: ``lp`` first, ``diverging`` as booleans (ArviZ's names)."""
    out = {} if lp is None else {"lp": np.asarray(lp)}
    out.update({k: np.asarray(v) for k, v in values.items()})
    if "diverging" in out:
        out["diverging"] = out["diverging"].astype(bool)
    return out


def _sampling_groups(trace: Any, layout: Any, add: Callable, groups: dict, site_dims: Any, unconstrained: bool,
                     save_warmup: bool) -> None:
    """``posterior`` and ``sample_stats`` (and their warmup twins) of a sampling trace."""
    th = np.asarray(trace.theta)
    add("posterior", *_named(th, layout, site_dims=site_dims))
    if unconstrained:
        add("unconstrained_posterior", *_named(th, layout, unconstrained=True))
    groups["sample_stats"] = _stats(trace.stats, trace.log_prob)
    if save_warmup and trace.warmup:
        w = trace.warmup
        wth = np.asarray(w["theta"])
        add("warmup_posterior", *_named(wth, layout, site_dims=site_dims))
        if unconstrained:
            add("warmup_unconstrained_posterior", *_named(wth, layout, unconstrained=True))
        wstats = _stats(w.get("stats") or {}, w.get("log_prob"))
        if wstats:
            groups["warmup_sample_stats"] = wstats


def _optimization_groups(trace: Any, layout: Any, add: Callable, groups: dict, site_dims: Any,
                         unconstrained: bool) -> None:
    """An optimization trace: its best point as a 1×1 ``posterior``, the path (``optimization_path``, chain =
    batch member) and its statistics (``optimization_stats``)."""
    th = np.asarray(trace.theta)
    batched = trace.is_batched
    best = np.asarray(trace.best_theta)
    if batched:
        losses = np.asarray(trace.best_loss, dtype=float)
        best = best[int(np.argmin(np.where(np.isfinite(losses), losses, np.inf)))]
    add("posterior", *_named(np.asarray(best)[None, None, :], layout, site_dims=site_dims))
    if unconstrained:
        add("unconstrained_posterior", *_named(np.asarray(best)[None, None, :], layout, unconstrained=True))
    path = th if batched else th[None]
    add("optimization_path", *_named(np.asarray(path), layout, site_dims=site_dims))

    def rows(v: Any) -> np.ndarray:
        return np.asarray(v) if batched else np.asarray(v)[None]

    opt = {"loss": rows(trace.loss)}
    if trace.step is not None:
        opt["step"] = rows(trace.step)
    if trace.log_prob is not None:
        opt["log_prob"] = rows(trace.log_prob)
    for k, v in trace.stats.items():
        opt.setdefault(k, rows(v))
    groups["optimization_stats"] = opt
