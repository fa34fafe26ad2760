"""`Trace`: the one record of what an engine produced — an optimizer path or sampler chains.

Invariants (checked by :meth:`Trace.validate`):

* ``kind == "optimization"``: ``theta`` is ``(T, D)`` (or ``(B, T, D)`` for a batch of fits), ``loss``
  is ``(T,)`` (``(B, T)``) and ``loss[t]`` is the loss *at* ``theta[t]``; ``theta[0]`` is the start and
  the last row the final point, whose loss is evaluated too. ``step[t]`` is the optimizer step of row
  ``t`` (rows are thinned by ``record_every``; the final point is always kept).
* ``kind == "sampling"``: ``theta`` is ``(C, N, D)`` draws, ``log_prob`` ``(C, N)``; ``stats`` holds
  sampler statistics under ArviZ names (``diverging``, ``energy``, ``tree_depth``, ``n_steps``,
  ``acceptance_rate``, ``step_size``), each ``(C, N)``; ``warmup`` optionally the warmup draws.
* θ is always the flat unconstrained **base** vector, whatever coordinates the engine ran in. Names live in
  the optional :attr:`layout`, never in the arrays.
* An engine run in a θ-map's coordinates (``obj.reparameterize(thetamap)``, e.g. a whitened
  :class:`gnomon.EigenMap`) also keeps its own rows z under names that say so: ``z``, ``best_z``,
  ``final_z``, ``warmup["z"]`` (:class:`~gnomon.trace.zarray.ZArray`, which a layout refuses to unpack);
  ``theta = thetamap.to_theta(z)`` row by row.

Pytree semantics
----------------
A Trace is a registered pytree, so it passes through ``jax.jit``/``vmap``, ``jax.device_get`` and
``tree_map``. What a transformed function sees:

* **leaves**: the recorded arrays ``theta``, ``z``, ``loss``, ``log_prob``, ``stats``, ``step``, ``warmup``;
* **static structure, compared by value**: ``kind``, the ``layout`` (by its content hash), the ``thetamap``
  (by its content hash when it has one, e.g. an EigenMap, else by identity) and the **host record** —
  ``status``, ``num_grad_evals``, ``runtime_s``, ``info`` (engine settings, ``compile_s``/``run_s``) and
  ``extras`` — compared by a canonical form (mappings by their items, arrays by dtype, shape and a digest of
  their bytes, floats by their bits). Together with the leaves' shapes and dtypes this is the compilation key.

So the host record survives every transformation: inside ``jit``/``vmap`` (the leaves are tracers) a trace
still has its ``status`` and ``info``, a trace *returned* by a jitted or vmapped function carries them, and a
tree map keeps them. A compiled function is reused for traces whose shapes *and* host records are equal, and
only for those (a cached function hands back the record it was traced with, so it must not serve another).
Two runs differ in ``info`` (timings at least): a function jitted over whole traces compiles once per run;
to compile once for many runs, pass the arrays (``trace.theta``, ``trace.stats``); a tree map over several
traces needs equal records too. Under ``vmap`` over a batch
of fits each member sees the batch's record (``status`` a tuple of B). Treat ``info`` and ``extras`` as
frozen once a trace exists (its canonical form is computed once per trace; build a new trace with
``dataclasses.replace`` to change them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import numpy as np

from gnomon.trace import checks
from gnomon.trace.host import Host, HostRecord
from gnomon.trace.maps import MapKey, decode_z, same_map
from gnomon.trace.zarray import tag_z

KINDS = ("optimization", "sampling")
_WHICH = ("theta", "best", "final", "warmup")


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class Trace:
    """Optimizer path or sampler chains in flat unconstrained base θ-space.

    Attributes:
      kind: ``"optimization"`` or ``"sampling"``.
      theta: base θ rows: ``(T, D)``, ``(B, T, D)`` (batched fits) or ``(C, N, D)`` (chains × draws).
        Derived from ``z`` (``thetamap.to_theta``) when the trace is built with ``z=`` and a ``thetamap``.
      loss: loss at each row (optimization).
      log_prob: log density at each row (sampling; optional for optimization) — of the engine's
        coordinates (z when there is a θ-map).
      stats: named diagnostic channels with the leading shape of ``loss``/``log_prob``.
      step: optimizer step index of each row (optimization).
      warmup: optional ``{"theta", "z", "log_prob", "stats"}`` of the sampler's warmup (``z`` only with a
        θ-map; ``theta`` is base θ).
      status: ``"converged"``, ``"max_steps"``, ``"stalled at step t: ..."``, ``"diverged at step t: ..."``,
        ``"sampled"`` (a tuple of these for a batch). Host record (see the module docstring).
      num_grad_evals: gradient evaluations spent (an HVP counts 2, a NUTS step its leapfrog steps);
        an array ``(B,)`` for a batch. Host record.
      runtime_s: wall-clock seconds of the run (compilation included). Host record.
      info: JSON-able engine description (name, hyperparameters, ``compile_s``, ``run_s``) for
        ``meta.json``. Host record.
      layout: optional :class:`gnomon.Layout` naming the base θ.
      thetamap: the θ-map the engine ran in (e.g. :class:`gnomon.EigenMap`), or None (it ran in θ).
      extras: other engine outputs (e.g. ``num_rows`` of a batch, the sampler's adapted parameters, in the
        engine's coordinates). Host record.
      z: the engine's rows in the θ-map's coordinates, ``(..., K)``, when ``thetamap`` is set (a
        :class:`~gnomon.trace.zarray.ZArray`); None otherwise. An engine passes its rows as ``z=`` together
        with ``thetamap=`` (None when it ran in θ: the rows then become ``theta``).
    """

    kind: str
    theta: Any = None
    loss: Any = None
    log_prob: Any = None
    stats: Mapping[str, Any] = field(default_factory=dict)
    step: Any = None
    warmup: Mapping[str, Any] | None = None
    status: Any = "max_steps"
    num_grad_evals: Any = 0
    runtime_s: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)
    layout: Any = None
    thetamap: Any = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    z: Any = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Trace kind must be one of {KINDS}, got {self.kind!r}")
        theta, z, warmup = self.theta, self.z, self.warmup
        if self.thetamap is None:
            if z is not None:
                if theta is not None:
                    raise ValueError("Trace: z= (θ-map coordinates) was given without thetamap=")
                theta, z = z, None  # the engine ran in θ: its rows are θ
            if warmup and "z" in warmup:
                warmup = {("theta" if k == "z" else k): v for k, v in warmup.items() if k != "theta"}
        else:
            if z is None:
                raise ValueError(
                    "Trace(thetamap=...) needs z=: the engine's rows in the map's coordinates (theta, the base "
                    "θ, is derived from them with thetamap.to_theta)"
                )
            if theta is None:
                theta = decode_z(self.thetamap, z)
            z = tag_z(z, self.thetamap)
            if warmup and "z" in warmup:
                warmup = dict(warmup)
                if "theta" not in warmup:
                    warmup["theta"] = decode_z(self.thetamap, warmup["z"])
                warmup["z"] = tag_z(warmup["z"], self.thetamap)
        if theta is None:
            raise ValueError("Trace needs theta= (base θ rows), or z= with the thetamap= they belong to")
        object.__setattr__(self, "theta", theta)
        object.__setattr__(self, "z", z)
        object.__setattr__(self, "warmup", warmup)

    # ------------------------------------------------------------------ pytree
    def tree_flatten(self):
        children = (self.theta, self.z, self.loss, self.log_prob, dict(self.stats), self.step, self.warmup)
        return children, (self.kind, self.layout, MapKey(self.thetamap), self._record())

    def _record(self) -> HostRecord:
        """The host record as aux data, made once per trace (its canonical form is then computed once)."""
        host = Host(self.status, self.num_grad_evals, self.runtime_s, self.info, self.extras)
        record = self.__dict__.get("_host_record")
        if record is None or any(a is not b for a, b in zip(record.host, host, strict=True)):
            record = HostRecord(host)
            object.__setattr__(self, "_host_record", record)
        return record

    @classmethod
    def tree_unflatten(cls, aux, children):
        theta, z, loss, log_prob, stats, step, warmup = children
        kind, layout, mapkey, record = aux
        thetamap = mapkey.map
        if thetamap is not None:
            z = tag_z(z, thetamap)
            if isinstance(warmup, Mapping) and "z" in warmup:
                warmup = {**warmup, "z": tag_z(warmup["z"], thetamap)}
        obj = object.__new__(cls)
        for k, v in dict(
            kind=kind, theta=theta, z=z, loss=loss, log_prob=log_prob, stats=stats, step=step, warmup=warmup,
            layout=layout, thetamap=thetamap, **record.host._asdict(),
        ).items():
            object.__setattr__(obj, k, v)
        object.__setattr__(obj, "_host_record", record)
        return obj

    # ------------------------------------------------------------------ shape
    @property
    def is_batched(self) -> bool:
        """True for a batch of optimizer fits (``theta`` is ``(B, T, D)``)."""
        return self.kind == "optimization" and np.ndim(self.theta) == 3

    @property
    def dim(self) -> int:
        """Dimension D of the base θ."""
        return int(np.shape(self.theta)[-1])

    @property
    def z_dim(self) -> int:
        """Dimension K of the engine's coordinates (``dim`` when the engine ran in θ)."""
        return int(np.shape(self.z)[-1]) if self.z is not None else self.dim

    @property
    def batch_size(self) -> int:
        if not self.is_batched:
            raise ValueError("batch_size: this trace is not a batch of fits")
        return int(np.shape(self.theta)[0])

    def __len__(self) -> int:
        """Number of recorded rows (optimization) or draws per chain (sampling)."""
        return int(np.shape(self.theta)[-2])

    @property
    def num_chains(self) -> int:
        self._need("sampling", "num_chains")
        return int(np.shape(self.theta)[0])

    @property
    def num_draws(self) -> int:
        self._need("sampling", "num_draws")
        return int(np.shape(self.theta)[1])

    @property
    def theta_space(self) -> str:
        """The space the engine ran in: ``"eigen"`` (a θ-map's coordinates z) or ``"primitive"`` (θ).
        ``theta`` is base θ either way."""
        return "eigen" if self.thetamap is not None else "primitive"

    def _need(self, kind: str, what: str) -> None:
        if self.kind != kind:
            raise ValueError(f"{what} is defined for {kind} traces; this one is {self.kind!r}")

    def _need_z(self, what: str) -> None:
        if self.z is None:
            raise ValueError(
                f"{what}: this trace ran in base θ (no θ-map), so it has no z coordinates; use "
                f"{what.replace('z', 'theta')}"
            )

    # ------------------------------------------------------------------ rows
    def _member_rows(self) -> np.ndarray:
        b = self.batch_size
        return np.asarray(self.extras.get("num_rows", [np.shape(self.theta)[1]] * b)).reshape(b)

    def _row(self, which: str) -> tuple:
        """Index of the ``"final"`` or ``"best"`` row(s): a tuple usable on ``theta``/``z``/``loss``."""
        if self.kind == "sampling":
            if which == "final":
                raise ValueError("final row of a sampling trace: use theta[:, -1] (one per chain)")
            lp = np.asarray(self.log_prob, dtype=float)
            return np.unravel_index(np.argmax(np.where(np.isfinite(lp), lp, -np.inf)), lp.shape)
        if not self.is_batched:
            return (len(self) - 1,) if which == "final" else (self.best_index,)
        n = self._member_rows()
        members = np.arange(n.shape[0])
        if which == "final":
            return members, np.maximum(n - 1, 0)
        loss = np.asarray(self.loss, dtype=float)
        real = np.arange(loss.shape[1])[None, :] < n[:, None]
        return members, np.argmin(np.where(real & np.isfinite(loss), loss, np.inf), axis=1)

    def _pick(self, arr: Any, which: str) -> Any:
        if which == "theta":
            return arr
        return arr[self._row(which)]

    # ------------------------------------------------------------------ optimization views
    @property
    def num_steps(self) -> int:
        """Optimizer steps taken (the step index of the final row)."""
        self._need("optimization", "num_steps")
        if self.is_batched:
            raise ValueError("num_steps of a batch: index the batch first (trace[i])")
        return int(np.asarray(self.step)[-1]) if self.step is not None else len(self) - 1

    @property
    def converged(self) -> bool:
        """The optimizer converged: ``"converged"``, or ``"converged at step t, at the precision limit: ..."``."""
        return isinstance(self.status, str) and self.status.startswith("converged")

    @property
    def diverged(self) -> bool:
        return isinstance(self.status, str) and self.status.startswith("diverged")

    @property
    def final_theta(self):
        """Base θ of the final row (``(B, D)``: each member's for a batch)."""
        self._need("optimization", "final_theta")
        return self._pick(self.theta, "final")

    @property
    def final_z(self):
        """The engine's coordinates z of the final row (only for a trace run in a θ-map)."""
        self._need("optimization", "final_z")
        self._need_z("final_z")
        return self._pick(self.z, "final")

    @property
    def final_loss(self):
        self._need("optimization", "final_loss")
        return self._pick(self.loss, "final")

    @property
    def best_index(self) -> int:
        """Row of the lowest finite loss."""
        self._need("optimization", "best_index")
        loss = np.asarray(self.loss, dtype=float)
        if self.is_batched:
            raise ValueError("best_index of a batch: index the batch first (trace[i])")
        finite = np.where(np.isfinite(loss), loss, np.inf)
        return int(np.argmin(finite))

    @property
    def best_theta(self):
        """Base θ of the best row (lowest finite loss; highest log density for a sampling trace; ``(B, D)``
        for a batch)."""
        return self._pick(self.theta, "best")

    @property
    def best_z(self):
        """The engine's coordinates z of the best row (only for a trace run in a θ-map)."""
        self._need_z("best_z")
        return self._pick(self.z, "best")

    @property
    def best_loss(self):
        self._need("optimization", "best_loss")
        return self._pick(self.loss, "best")

    def coords_in(self, thetamap: Any, which: str = "final") -> Any:
        """Rows of this trace in the coordinates an engine over ``thetamap`` works in.

        ``thetamap=None`` means base θ; the trace's own map gives its stored z exactly; another map gives
        ``thetamap.to_z(θ)``. ``which``: ``"theta"`` (every row), ``"best"``, ``"final"`` or ``"warmup"``
        (the warmup rows of a sampling trace). This is how an engine continues from, or starts at, a trace
        (``gn.optimize(obj, trace)``, ``gn.sample(obj, trace)``) whatever space either ran in."""
        if which not in _WHICH:
            raise ValueError(f"coords_in: which must be one of {_WHICH}, got {which!r}")
        if which == "warmup":
            if not self.warmup:
                raise ValueError("coords_in(which='warmup'): this trace kept no warmup")
            theta, z = self.warmup["theta"], self.warmup.get("z")
        else:
            theta = self._pick(self.theta, which)
            z = self._pick(self.z, which) if self.z is not None else None
        if thetamap is None:
            return theta
        if same_map(thetamap, self.thetamap):
            return z
        return tag_z(np.asarray(thetamap.to_z(np.asarray(theta))), thetamap)

    def __getitem__(self, i: int) -> Trace:
        """Member ``i`` of a batch of fits, trimmed to its own rows."""
        if not self.is_batched:
            raise TypeError("only a batched optimization trace can be indexed (trace[i])")
        b = self.batch_size
        if not -b <= i < b:
            raise IndexError(f"batch index {i} out of range for batch of {b}")
        i = i % b
        n = int(self._member_rows()[i])
        cut = lambda a: None if a is None else a[i, :n]  # noqa: E731
        extras = {
            k: (np.asarray(v)[i] if np.ndim(v) >= 1 and np.shape(v)[0] == b else v)
            for k, v in self.extras.items()
            if k != "num_rows"
        }
        return replace(
            self,
            theta=cut(self.theta),
            z=cut(self.z),
            loss=cut(self.loss),
            log_prob=cut(self.log_prob),
            stats={k: cut(v) for k, v in self.stats.items()},
            step=cut(self.step),
            status=self.status[i] if isinstance(self.status, (tuple, list)) else self.status,
            num_grad_evals=int(np.asarray(self.num_grad_evals).reshape(-1)[i])
            if np.ndim(self.num_grad_evals)
            else self.num_grad_evals,
            extras={**extras, "batch_index": i},
        )

    def unbatch(self) -> list[Trace]:
        return [self[i] for i in range(self.batch_size)]

    # ------------------------------------------------------------------ conversions
    def decoded_theta(self, which: str = "theta"):
        """Base θ rows: ``which`` is ``"theta"`` (the same as :attr:`theta`, which is always base θ),
        ``"best_theta"``, ``"final_theta"`` or ``"warmup"``."""
        return self.warmup["theta"] if which == "warmup" else getattr(self, which)

    def to_numpy(self) -> Trace:
        """A copy with every array moved to host numpy (the host record is kept)."""
        return jax.tree_util.tree_map(np.asarray, self)

    def to_arviz(self, **kwargs: Any):
        """Export to an ArviZ ``xarray.DataTree`` (see :func:`gnomon.trace.arviz_export.to_arviz`)."""
        from gnomon.trace.arviz_export import to_arviz

        return to_arviz(self, **kwargs)

    def concatenate(self, later: Trace) -> Trace:
        """Join a continuation (which started at this trace's final point) after this trace.

        The continuation's first row duplicates this trace's final point and is dropped; its steps are
        offset; gradient evaluations and runtimes add up; the status is the continuation's. Both must have
        run in the same space (the same θ-map, or none)."""
        self._need("optimization", "concatenate")
        if later.kind != "optimization" or self.is_batched or later.is_batched:
            raise ValueError("concatenate joins two single (unbatched) optimization traces")
        if later.dim != self.dim:
            raise ValueError(f"concatenate: θ dimensions differ ({self.dim} vs {later.dim})")
        if not same_map(self.thetamap, later.thetamap):
            raise ValueError(
                f"concatenate: the traces ran in different spaces ({self.thetamap!r} vs {later.thetamap!r}); "
                "continue in the same θ-map"
            )
        cat = lambda a, b: None if a is None or b is None else np.concatenate([np.asarray(a), np.asarray(b)[1:]])  # noqa: E731
        offset = self.num_steps
        stats = {k: cat(v, later.stats[k]) for k, v in self.stats.items() if k in later.stats}
        return replace(
            later,
            theta=cat(self.theta, later.theta),
            z=cat(self.z, later.z),
            loss=cat(self.loss, later.loss),
            log_prob=cat(self.log_prob, later.log_prob),
            stats=stats,
            step=cat(self.step, np.asarray(later.step) + offset),
            num_grad_evals=int(self.num_grad_evals) + int(later.num_grad_evals),
            runtime_s=float(self.runtime_s) + float(later.runtime_s),
            info={**later.info, "continued_from_steps": offset},
        )

    # ------------------------------------------------------------------ checks and summaries
    def validate(self) -> Trace:
        """Check the shape invariants; return self or raise ValueError naming the broken one."""
        checks.validate(self)
        return self

    def summary(self) -> dict[str, Any]:
        """Small aggregation-friendly scalars (what ``summary.json`` holds)."""
        return checks.summary(self)

    def __repr__(self) -> str:
        shape = tuple(np.shape(self.theta))
        space = f", z{tuple(np.shape(self.z))} of {self.thetamap!r}" if self.z is not None else ""
        if self.kind == "optimization" and not self.is_batched:
            return (
                f"Trace(optimization, theta{shape}{space}, status={self.status!r}, final_loss="
                f"{float(np.asarray(self.loss)[-1]):.6g}, num_grad_evals={self.num_grad_evals})"
            )
        return f"Trace({self.kind}, theta{shape}{space}, status={self.status!r})"
