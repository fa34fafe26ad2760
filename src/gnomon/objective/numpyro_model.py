"""Build an :class:`~gnomon.objective.objective.Objective` from a numpyro model (numpyro imported lazily).

The layout is read off the model's trace: one block per latent (non-observed, continuous) sample site, in
trace order, with the site's support as transform. Densities come from numpyro's ``log_density`` so that
nothing of the model is re-implemented here.

Checked when the objective is built (and, for observation shapes, whenever the model is traced — every
per-call dataset too), each refusal naming the site:

* a **discrete latent site** (a Poisson count, a Bernoulli indicator) is refused: gnomon's θ is continuous.
  Marginalise it in the model (e.g. a mixture as ``dist.MixtureSameFamily``) or run numpyro's own NUTS
  with enumeration outside gnomon — instead of numpyro's "enumerate support" error or funsor's ImportError;
* **observations whose shape is not the site's distribution shape** (batch + event, after its plates) are
  refused with both shapes, unless the observations merely repeat a smaller distribution (``n`` iid values of a
  scalar one: still one term per observation): ``y[:, None]`` against a plate of ``n`` would otherwise
  broadcast the likelihood to ``(n, n)``, and a wrong-length ``y`` fail inside JAX naming no site;
* an **observation passed as None** that turns a site latent is warned about by name (the model is run once
  more with the site's value as that argument: when the site becomes observed, the argument was its data).

Data per call: ``from_numpyro(model, *args, data_argnames=("y",), **kwargs)`` makes the named model
arguments the objective's data (``obj.data == {"y": y}``), passed to every compiled program as an argument:
``obj.with_data({"y": y2})``, ``gn.optimize(obj, θ0, data=...)``, ``gn.optimize_batch(..., data=...)`` and
``gn.sample(..., data=...)`` take new observations without compiling again. The other arguments are part of
the compile key by value.

:class:`NumpyroModel` (``obj.model``) also gives what the ArviZ export needs, vmapped over draws: the
deterministic sites, the pointwise log likelihood of every observed site, the observed and constant data,
and dims named after the plates (:meth:`NumpyroModel.arviz_groups`); and the loc-scale structure the
sampler's diagnosis looks for (:meth:`NumpyroModel.loc_scale_sites`).
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gnomon.thetaspace.layout import Layout

CHUNK = 256  # draws per vmapped call of the export


def _is_discrete(fn: Any) -> bool:
    return bool(getattr(fn, "is_discrete", False) or getattr(getattr(fn, "support", None), "is_discrete", False))


_HANDLER: list = []


def _shape_handler():
    """A numpyro handler that refuses observations whose shape is not their distribution's (one class)."""
    if _HANDLER:
        return _HANDLER[0]
    from numpyro.primitives import Messenger

    class CheckObserved(Messenger):
        def process_message(self, msg):
            if msg["type"] != "sample" or not msg.get("is_observed"):
                return
            fn, value = msg["fn"], msg["value"]
            want = tuple(fn.batch_shape) + tuple(fn.event_shape)
            got = tuple(jnp.shape(value))
            # one likelihood term per observation: the observations may repeat a smaller distribution (n iid
            # values of a scalar one), never be repeated by it (y[:, None] against a plate of n: n × n terms)
            joint = tuple(np.broadcast_shapes(got, want)) if _broadcastable(got, want) else None
            if joint != got:
                raise ValueError(
                    f"numpyro model: the observations of site {msg['name']!r} have shape {got}, but its "
                    f"distribution ({type(fn).__name__}) has shape {want} (batch {tuple(fn.batch_shape)} + event "
                    f"{tuple(fn.event_shape)}): "
                    + (f"the likelihood would broadcast to {joint} terms" if joint is not None
                       else "they do not broadcast (JAX would fail naming no site)")
                    + f"; pass observations of shape {want}"
                )

    _HANDLER.append(CheckObserved)
    return CheckObserved


def _broadcastable(a: tuple, b: tuple) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def _digest(x: Any) -> Any:
    """A hashable stand-in for a model argument (by value for arrays and scalars); None when it has none."""
    if x is None or isinstance(x, (bool, int, float, complex, str)):
        return (type(x).__name__, x)
    if isinstance(x, (np.ndarray, jax.Array)) or hasattr(x, "__array__"):
        a = np.ascontiguousarray(np.asarray(x))
        return (str(a.dtype), a.shape, hashlib.sha1(a.tobytes()).hexdigest())
    if isinstance(x, (list, tuple)):
        parts = tuple(_digest(v) for v in x)
        return None if any(p is None for p in parts) else (type(x).__name__, parts)
    if isinstance(x, Mapping):
        parts = tuple((str(k), _digest(v)) for k, v in sorted(x.items(), key=lambda kv: str(kv[0])))
        return None if any(p is None for _, p in parts) else ("mapping", parts)
    try:
        hash(x)
    except TypeError:
        return None
    return ("object", x)


def _frames(site: dict) -> dict[int, str]:
    return {int(f.dim): f.name for f in site.get("cond_indep_stack", []) if f.dim is not None}


def _site_dims(name: str, site: dict, shape: tuple) -> list[str]:
    """Dims of a site's value ``shape``: its plates' names on the batch axes, ``<name>_dim_k`` elsewhere."""
    event = int(getattr(site.get("fn"), "event_dim", 0) or 0) if site["type"] == "sample" else 0
    frames = _frames(site)
    n = len(shape)
    return [frames.get(k - (n - event), f"{name}_dim_{k}") if k < n - event else f"{name}_dim_{k}" for k in range(n)]


@dataclass(frozen=True, eq=False)
class NumpyroModel:
    """A numpyro model as gnomon calls it: its bound arguments, which of them are data, its sites."""

    model: Any
    signature: Any  # inspect.Signature, or None (positional/keyword args only)
    arguments: dict  # name -> value of every bound argument (data arguments hold the construction's data)
    args: tuple
    kwargs: dict
    data_argnames: tuple[str, ...]
    layout: Layout
    sites: dict  # name -> {"type", "shape", "dims", "observed"}
    _cache: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ calling
    def call(self, data: Any) -> tuple[tuple, dict]:
        """``(args, kwargs)`` of the model with the data arguments taken from ``data``."""
        if not self.data_argnames:
            return self.args, self.kwargs
        self.check_names(data)
        arguments = dict(self.arguments)
        arguments.update({k: data[k] for k in self.data_argnames})
        ba = inspect.BoundArguments(self.signature, arguments)
        return tuple(ba.args), dict(ba.kwargs)

    def check_names(self, data: Any) -> None:
        if not isinstance(data, Mapping) or set(data) != set(self.data_argnames):
            if isinstance(data, Mapping):
                got = f"the keys {sorted(map(str, data))}"
            elif hasattr(data, "shape"):
                got = f"an array of shape {tuple(data.shape)}"
            else:
                got = type(data).__name__
            example = ", ".join(f"{k!r}: <{k}>" for k in self.data_argnames)
            raise ValueError(f"numpyro model data must be a mapping with the keys {list(self.data_argnames)} "
                             f"(from_numpyro's data_argnames), e.g. data={{{example}}}; got {got}")

    def trace(self, params: Mapping[str, Any], data: Any) -> dict:
        """The model's trace with latent values ``params`` (constrained) and ``data``; observation shapes
        checked."""
        from numpyro import handlers

        args, kwargs = self.call(data)
        checked = _shape_handler()(handlers.substitute(self.model, data=dict(params)))
        return handlers.trace(checked).get_trace(*args, **kwargs)

    def log_density(self, theta: Any, data: Any) -> Any:
        from numpyro.infer.util import log_density

        args, kwargs = self.call(data)
        return log_density(_shape_handler()(self.model), args, kwargs, self.layout.unpack(theta))[0]

    def per_observation(self, theta: Any, data: Any) -> Any:
        tr = self.trace(self.layout.unpack(theta), data)
        terms = [-jnp.ravel(s["fn"].log_prob(s["value"])) for s in tr.values()
                 if s["type"] == "sample" and s.get("is_observed", False)]
        if not terms:
            raise ValueError("numpyro model has no observed sites: no per-observation terms")
        return jnp.concatenate(terms)

    # ------------------------------------------------------------------ data
    def observed(self, data: Any) -> dict[str, Any]:
        """``{site: observed value}`` with ``data``."""

        args, kwargs = self.call(data)
        tr = _pretrace(self.model, args, kwargs)
        return {n: s["value"] for n, s in tr.items() if s["type"] == "sample" and s.get("is_observed", False)}

    def check_data(self, data: Any) -> dict[str, Any]:
        """New data for :meth:`Objective.with_data`: the right names, finite, observation shapes that match
        their sites, and latent sites of unchanged shapes. Returns the observed values."""

        from gnomon.objective.checks import check_finite_data

        self.check_names(data)
        check_finite_data(dict(data), "data")
        args, kwargs = self.call(data)
        tr = _pretrace(self.model, args, kwargs)
        for name, site in tr.items():
            if site["type"] == "sample" and not site.get("is_observed", False):
                block = self.layout[name] if name in self.layout else None
                shape = tuple(jnp.shape(site["value"]))
                if block is None or tuple(block.shape) != shape:
                    raise ValueError(f"numpyro model: with the new data, latent site {name!r} has shape {shape}, "
                                     f"not {tuple(block.shape) if block is not None else 'a latent site'} as when "
                                     "the objective was built: θ's layout would change; build a new objective")
        return {n: s["value"] for n, s in tr.items() if s["type"] == "sample" and s.get("is_observed", False)}

    def constant_data(self) -> dict[str, np.ndarray]:
        """The model's array arguments that are not data (``constant_data`` in ArviZ)."""
        out = {}
        for k, v in self.arguments.items():
            if k in self.data_argnames or v is None or isinstance(v, (bool, int, float, str)):
                continue
            if isinstance(v, (np.ndarray, jax.Array)):
                out[k] = np.asarray(v)
        return out

    # ------------------------------------------------------------------ per draw (vmapped)
    def _per_draw(self, kind: str, data: Any):
        fn = self._cache.get(kind)
        if fn is None:
            def one(theta, d):
                tr = self.trace(self.layout.unpack(theta), d)
                if kind == "deterministic":
                    return {n: s["value"] for n, s in tr.items() if s["type"] == "deterministic"}
                return {n: s["fn"].log_prob(s["value"]) for n, s in tr.items()
                        if s["type"] == "sample" and s.get("is_observed", False)}

            fn = jax.jit(jax.vmap(one, in_axes=(0, None)))
            self._cache[kind] = fn
        return fn

    def per_draw(self, kind: str, theta: Any, data: Any) -> dict[str, np.ndarray]:
        """``kind`` ``"deterministic"`` (site values) or ``"log_likelihood"`` (pointwise log likelihood of each
        observed site, event dims summed) for draws ``theta`` ``(..., D)``: ``{site: (..., *shape)}``."""
        th = np.asarray(theta)
        lead = th.shape[:-1]
        flat = th.reshape(-1, th.shape[-1])
        fn = self._per_draw(kind, data)
        parts = [jax.device_get(fn(jnp.asarray(flat[i : i + CHUNK]), data)) for i in range(0, len(flat), CHUNK)]
        if not parts:
            return {}
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]).reshape(lead + np.shape(parts[0][k])[1:])
                for k in parts[0]}

    def dims(self) -> dict[str, list[str]]:
        """``{site: dims}`` for every latent, observed and deterministic site (plates name the batch axes)."""
        return {n: list(s["dims"]) for n, s in self.sites.items()}

    def arviz_groups(self, theta: Any, data: Any) -> tuple[dict, dict, dict]:
        """``(groups, dims, coords)`` for :func:`gnomon.trace.arviz_export.to_arviz`: deterministic sites (to
        add to ``posterior``), ``log_likelihood`` per observed site, ``observed_data`` and ``constant_data``,
        for draws ``theta`` ``(chain, draw, D)``; dims named after plates, coordinates ``0..n-1``."""
        det = self.per_draw("deterministic", theta, data)
        loglik = self.per_draw("log_likelihood", theta, data)
        obs = {k: np.asarray(v) for k, v in self.observed(data).items()}
        const = self.constant_data()
        dims = self.dims()  # a log_likelihood variable drops the site's event dims (arviz: skip_event_dims)
        for k, v in const.items():
            dims.setdefault(k, [f"{k}_dim_{i}" for i in range(np.ndim(v))])
        groups = {"posterior": det, "log_likelihood": loglik, "observed_data": obs, "constant_data": const}
        return {g: v for g, v in groups.items() if v}, dims, {}

    # ------------------------------------------------------------------ structure
    def loc_scale_sites(self, theta: Any) -> list[tuple[str, list[str]]]:
        """Latent location-scale sites whose scale depends on other latent sites at θ: ``[(site, [parents])]``
        (a centred hierarchical structure: ``θ_j ~ Normal(μ, τ)`` with τ sampled)."""
        theta = jnp.asarray(theta)
        names = [n for n, s in self.sites.items() if s["type"] == "latent" and s.get("loc_scale")]
        if not names:
            return []

        def scales(th):
            tr = self.trace(self.layout.unpack(th), self.arguments_data())
            return jnp.stack([jnp.sum(jnp.asarray(_loc_scale_dist(tr[n]["fn"]).scale, th.dtype)) for n in names])

        jac = np.asarray(jax.jacrev(scales)(theta))
        found = []
        for k, n in enumerate(names):
            parents = [b.name for b in self.layout.blocks if b.name != n and np.any(jac[k, b.start : b.stop] != 0)]
            if parents:
                found.append((n, parents))
        return found

    def loc_log_scale(self, names: tuple[str, ...]) -> tuple[Any, Any]:
        """Two compiled functions of ``(θ, data)``: the location-scale sites ``names``' loc and log-scale, each
        broadcast to its site's shape and flattened, concatenated in the order of ``names`` (``(locs, logs)``),
        and their Jacobians in θ. Compiled once per model and sites (cached), the data an argument."""
        key = ("loc_log_scale", tuple(names))
        if key not in self._cache:
            def read(theta, data):
                tr = self.trace(self.layout.unpack(theta), data)
                locs, logs = [], []
                for n in names:
                    fn, shape = _loc_scale_dist(tr[n]["fn"]), tuple(jnp.shape(tr[n]["value"]))
                    locs.append(jnp.broadcast_to(jnp.asarray(fn.loc, theta.dtype), shape).reshape(-1))
                    logs.append(jnp.log(jnp.broadcast_to(jnp.asarray(fn.scale, theta.dtype), shape)).reshape(-1))
                return jnp.concatenate(locs), jnp.concatenate(logs)

            self._cache[key] = (jax.jit(read), jax.jit(jax.jacfwd(read)))
        return self._cache[key]

    def arguments_data(self) -> Any:
        return {k: self.arguments[k] for k in self.data_argnames} if self.data_argnames else None


def _loc_scale_dist(fn: Any) -> Any:
    """The distribution under ``Independent`` / ``Expanded`` wrappers that carries ``scale``."""
    while hasattr(fn, "base_dist") and not hasattr(fn, "scale"):
        fn = fn.base_dist
    return fn


def _loc_scale(fn: Any) -> bool:
    fn = _loc_scale_dist(fn)
    return hasattr(fn, "loc") and hasattr(fn, "scale")


def _bind(model: Any, args: tuple, kwargs: dict, data_argnames: tuple[str, ...]):
    try:
        sig = inspect.signature(model)
        ba = sig.bind(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        if data_argnames:
            raise ValueError(f"from_numpyro: cannot bind the arguments to the model's signature ({exc})") from None
        return None, {}
    unknown = [n for n in data_argnames if n not in sig.parameters]
    if unknown:
        raise ValueError(f"from_numpyro: data_argnames {unknown} are not arguments of the model "
                         f"{getattr(model, '__name__', '?')}{sig}")
    arguments = dict(ba.arguments)
    for name, p in sig.parameters.items():
        if name not in arguments and p.default is not inspect.Parameter.empty:
            arguments[name] = p.default
    missing = [n for n in data_argnames if arguments.get(n) is None]
    if missing:
        raise ValueError(f"from_numpyro: the data arguments {missing} are not given (None): pass their observations")
    return sig, arguments


def _pretrace(model: Any, args: tuple, kwargs: dict, check: bool = True) -> dict:
    """The model's trace with latent values as numpyro initialises them (uniform in (−2, 2) unconstrained:
    improper sites cannot be sampled), observation shapes checked."""
    from numpyro import handlers
    from numpyro.infer.initialization import init_to_uniform

    fn = _shape_handler()(model) if check else model
    return handlers.trace(handlers.substitute(handlers.seed(fn, 0), substitute_fn=init_to_uniform)).get_trace(
        *args, **kwargs)


def _refuse_discrete(tr: dict, forgotten: dict[str, str]) -> None:
    """Refuse a discrete latent site — naming the forgotten observation when a None argument made it latent."""
    for name, site in tr.items():
        if site["type"] == "sample" and not site.get("is_observed", False) and _is_discrete(site["fn"]):
            fn = site["fn"]
            while hasattr(fn, "base_dist"):  # ExpandedDistribution, Independent, Masked: name what the user wrote
                fn = fn.base_dist
            if name in forgotten:
                arg = forgotten[name]
                raise ValueError(
                    f"numpyro model: site {name!r} ({type(fn).__name__}) is latent because the model's argument "
                    f"{arg!r} is None — pass {arg}=<observations> to condition on data (as a latent site it would "
                    "be discrete, which gnomon's continuous θ cannot infer)"
                )
            raise ValueError(
                f"numpyro model: latent site {name!r} is discrete ({type(fn).__name__}); gnomon's θ is "
                "continuous. Marginalise it in the model (sum over its values, e.g. a mixture as "
                "dist.MixtureSameFamily), make it observed, or sample the model with numpyro's own NUTS and "
                "enumeration (infer={'enumerate': 'parallel'}, with funsor) outside gnomon"
            )


def _refuse_outside_support(tr: dict) -> None:
    """Name an observed site whose value lies outside its distribution's support (numpyro itself only says it
    "cannot find valid initial parameters")."""
    for name, site in tr.items():
        if site["type"] != "sample" or not site.get("is_observed", False):
            continue
        fn = site["fn"]
        try:
            inside = np.asarray(fn.support(site["value"]), bool)
        except Exception:  # noqa: BLE001 - a support without a check: nothing to say
            continue
        if inside.all():
            continue
        where = tuple(int(i) for i in np.argwhere(~inside)[0])
        value = np.asarray(site["value"])
        while hasattr(fn, "base_dist"):  # ExpandedDistribution, Independent, Masked: name what the user wrote
            fn = fn.base_dist
        shown = f"{value[where].item()!r} " if value.shape == inside.shape else ""  # an event's support: index only
        raise ValueError(
            f"numpyro model: observed site {name!r} has {int((~inside).sum())} value(s) outside the support of "
            f"its {type(fn).__name__} ({fn.support}), e.g. {shown}at index {where}: fix the data or the distribution"
        )


def _forgotten_observations(model, sig, arguments, tr) -> dict[str, str]:
    """``{latent site: argument}`` for latent sites that a None argument would make observed (the site becomes
    observed when the argument holds the site's value): observations the caller forgot to pass."""
    if sig is None:
        return {}
    latent = [n for n, s in tr.items() if s["type"] == "sample" and not s.get("is_observed", False)]
    nones = [k for k, v in arguments.items() if v is None]
    found: dict[str, str] = {}
    tries = 0
    for arg in nones:
        for site in sorted(latent, key=lambda s: s != arg):  # the same name first
            if tries >= 20:
                return found
            tries += 1
            trial = dict(arguments)
            trial[arg] = tr[site]["value"]
            ba = inspect.BoundArguments(sig, trial)
            try:
                tr2 = _pretrace(model, tuple(ba.args), dict(ba.kwargs), check=False)
            except Exception:  # noqa: BLE001 - a probe only
                continue
            if site in tr2 and tr2[site].get("is_observed", False):
                found[site] = arg
                break
    return found


def _warn_none_observations(tr, forgotten: dict[str, str]) -> None:
    """Warn about each latent site that a forgotten (None) observation left latent."""
    for site, arg in forgotten.items():
        warnings.warn(
            f"numpyro model: site {site!r} is latent (inferred as a parameter, shape "
            f"{tuple(jnp.shape(tr[site]['value']))}) because the model's argument {arg!r} is None — pass "
            f"{arg}=<observations> to condition on data (ignore this if {site!r} is meant to be inferred)",
            UserWarning, stacklevel=4,
        )


def numpyro_objective(cls: type, model: Any, args: tuple, kwargs: dict, loss_includes_jacobian: bool,
                      data_argnames: Any = None):
    from numpyro.infer.util import initialize_model

    names = (data_argnames,) if isinstance(data_argnames, str) else tuple(data_argnames or ())
    sig, arguments = _bind(model, args, kwargs, names)
    tr = _pretrace(model, args, kwargs)
    forgotten = _forgotten_observations(model, sig, arguments, tr)
    _refuse_discrete(tr, forgotten)
    _warn_none_observations(tr, forgotten)
    try:
        initialize_model(jax.random.PRNGKey(0), _shape_handler()(model), model_args=args, model_kwargs=kwargs)
    except RuntimeError:  # "Cannot find valid initial parameters": non-finite data or data outside a support
        from gnomon.objective.checks import check_finite_data

        check_finite_data({"args": args, "kwargs": kwargs}, "the numpyro model's arguments")
        _refuse_outside_support(tr)
        raise
    shapes, transforms, sites = {}, {}, {}
    for name, site in tr.items():
        if site["type"] not in ("sample", "deterministic"):
            continue
        shape = tuple(jnp.shape(site["value"]))
        observed = site["type"] == "sample" and site.get("is_observed", False)
        kind = "deterministic" if site["type"] == "deterministic" else ("observed" if observed else "latent")
        sites[name] = {"type": kind, "shape": shape, "dims": _site_dims(name, site, shape),
                       "loc_scale": kind == "latent" and _loc_scale(site["fn"])}
        if kind == "latent":
            shapes[name] = shape
            transforms[name] = site["fn"].support  # a support that depends on other sites is not supported
    if not shapes:
        raise ValueError("numpyro model has no latent continuous sample sites to infer")
    layout = Layout(shapes, transforms=transforms)
    nm = NumpyroModel(model, sig, arguments, tuple(args), dict(kwargs), names, layout, sites)
    data = {k: arguments[k] for k in names} if names else None
    observed = {n: s["value"] for n, s in tr.items() if s["type"] == "sample" and s.get("is_observed", False)}
    key_parts = None
    if names:
        static = tuple((k, _digest(v)) for k, v in sorted(arguments.items()) if k not in names)
        if all(d is not None for _, d in static):
            key_parts = ("from_numpyro", model, static, names, layout)
    return cls(
        dim=layout.size,
        layout=layout,
        model_log_density=nm.log_density,
        log_jacobian=None if layout.is_identity else layout.log_det_jacobian,
        per_observation_fn=nm.per_observation if observed else None,
        data=data,
        takes_data=bool(names),
        loss_includes_jacobian=bool(loss_includes_jacobian),
        observed=observed or None,
        model=nm,
        key_parts=key_parts,
        info={
            "constructor": "from_numpyro",
            "model": getattr(model, "__name__", type(model).__name__),
            "loss_includes_jacobian": bool(loss_includes_jacobian),
            "data_argnames": list(names),
        },
    )
