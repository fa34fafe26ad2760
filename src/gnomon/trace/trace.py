"""`Trace`: the one record of what an engine produced — an optimizer path or sampler chains.

Invariants (checked by :meth:`Trace.validate`):

* ``kind == "optimization"``: ``theta`` is ``(T, D)`` (or ``(B, T, D)`` for a batch of fits), ``loss``
  is ``(T,)`` (``(B, T)``) and ``loss[t]`` is the loss *at* ``theta[t]``; ``theta[0]`` is the start and
  the last row the final point, whose loss is evaluated too. ``step[t]`` is the optimizer step of row
  ``t`` (rows are thinned by ``record_every``; the final point is always kept).
* ``kind == "sampling"``: ``theta`` is ``(C, N, D)`` draws, ``log_prob`` ``(C, N)``; ``stats`` holds
  sampler statistics under ArviZ names (``diverging``, ``energy``, ``tree_depth``, ``n_steps``,
  ``acceptance_rate``, ``step_size``), each ``(C, N)``; ``warmup`` optionally the warmup draws.
* θ is always the flat unconstrained vector. Names live in the optional :attr:`layout`, never in the
  arrays; a trace in eigen coordinates carries its :attr:`thetamap`.

A Trace is a registered pytree (arrays are leaves; everything else is static), so it passes through
``jax.jit``/``vmap`` and ``jax.device_get``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import numpy as np

KINDS = ("optimization", "sampling")


class _Static:
    """Wraps static metadata so that pytree aux data compares by identity (dicts are unhashable)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


@jax.tree_util.register_pytree_node_class
@dataclass(frozen=True)
class Trace:
    """Optimizer path or sampler chains in flat unconstrained θ-space.

    Attributes:
      kind: ``"optimization"`` or ``"sampling"``.
      theta: ``(T, D)``, ``(B, T, D)`` (batched fits) or ``(C, N, D)`` (chains × draws).
      loss: loss at each row (optimization).
      log_prob: log density at each row (sampling; optional for optimization).
      stats: named diagnostic channels with the leading shape of ``loss``/``log_prob``.
      step: optimizer step index of each row (optimization).
      warmup: optional ``{"theta", "log_prob", <stats>}`` of the sampler's warmup.
      status: ``"converged"``, ``"max_steps"``, ``"diverged at step t: ..."``, ``"sampled"`` (a tuple of
        these for a batch).
      num_grad_evals: gradient evaluations spent (an HVP counts 2, a NUTS step its leapfrog steps);
        an array ``(B,)`` for a batch.
      runtime_s: wall-clock seconds of the run (compilation included).
      info: JSON-able engine description (name and hyperparameters) for ``meta.json``.
      layout: optional :class:`gnomon.Layout` naming the (base) θ.
      thetamap: optional θ-map (e.g. :class:`gnomon.EigenMap`) when θ here is in its coordinates z.
      extras: other engine outputs (e.g. ``num_rows`` of a batch, the sampler's adapted parameters).
    """

    kind: str
    theta: Any
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

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Trace kind must be one of {KINDS}, got {self.kind!r}")

    # ------------------------------------------------------------------ pytree
    def tree_flatten(self):
        children = (self.theta, self.loss, self.log_prob, dict(self.stats), self.step, self.warmup)
        aux = (
            self.kind,
            _Static(self.status),
            _Static(self.num_grad_evals),
            self.runtime_s,
            _Static(self.info),
            _Static(self.layout),
            _Static(self.thetamap),
            _Static(self.extras),
        )
        return children, aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        theta, loss, log_prob, stats, step, warmup = children
        kind, status, nge, runtime_s, info, layout, thetamap, extras = aux
        obj = object.__new__(cls)
        for k, v in dict(
            kind=kind, theta=theta, loss=loss, log_prob=log_prob, stats=stats, step=step, warmup=warmup,
            status=status.value, num_grad_evals=nge.value, runtime_s=runtime_s, info=info.value,
            layout=layout.value, thetamap=thetamap.value, extras=extras.value,
        ).items():
            object.__setattr__(obj, k, v)
        return obj

    # ------------------------------------------------------------------ shape
    @property
    def is_batched(self) -> bool:
        """True for a batch of optimizer fits (``theta`` is ``(B, T, D)``)."""
        return self.kind == "optimization" and np.ndim(self.theta) == 3

    @property
    def dim(self) -> int:
        return int(np.shape(self.theta)[-1])

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
        """``"eigen"`` when θ here are coordinates of a θ-map, else ``"primitive"``."""
        return "eigen" if self.thetamap is not None else "primitive"

    def _need(self, kind: str, what: str) -> None:
        if self.kind != kind:
            raise ValueError(f"{what} is defined for {kind} traces; this one is {self.kind!r}")

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
        return self.status == "converged"

    @property
    def diverged(self) -> bool:
        return isinstance(self.status, str) and self.status.startswith("diverged")

    @property
    def final_theta(self):
        self._need("optimization", "final_theta")
        return self.theta[..., -1, :] if not self.is_batched else self._per_member(lambda t: t.final_theta)

    @property
    def final_loss(self):
        self._need("optimization", "final_loss")
        return self.loss[-1] if not self.is_batched else self._per_member(lambda t: t.final_loss)

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
        if self.kind == "sampling":
            lp = np.asarray(self.log_prob, dtype=float)
            c, n = np.unravel_index(np.argmax(np.where(np.isfinite(lp), lp, -np.inf)), lp.shape)
            return self.theta[c, n]
        if self.is_batched:
            return self._per_member(lambda t: t.best_theta)
        return self.theta[self.best_index]

    @property
    def best_loss(self):
        self._need("optimization", "best_loss")
        if self.is_batched:
            return self._per_member(lambda t: t.best_loss)
        return self.loss[self.best_index]

    def _per_member(self, f):
        return np.stack([np.asarray(f(self[i])) for i in range(self.batch_size)])

    def __getitem__(self, i: int) -> Trace:
        """Member ``i`` of a batch of fits, trimmed to its own rows."""
        if not self.is_batched:
            raise TypeError("only a batched optimization trace can be indexed (trace[i])")
        b = self.batch_size
        if not -b <= i < b:
            raise IndexError(f"batch index {i} out of range for batch of {b}")
        i = i % b
        n = int(np.asarray(self.extras.get("num_rows", [np.shape(self.theta)[1]] * b))[i])
        cut = lambda a: None if a is None else a[i, :n]  # noqa: E731
        extras = {
            k: (np.asarray(v)[i] if np.ndim(v) >= 1 and np.shape(v)[0] == b else v)
            for k, v in self.extras.items()
            if k != "num_rows"
        }
        return replace(
            self,
            theta=cut(self.theta),
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
        """θ in base coordinates: for an eigen-space trace the map's ``to_theta`` applied to every row."""
        arr = getattr(self, which) if which != "warmup" else self.warmup["theta"]
        if self.thetamap is None:
            return arr
        return self.thetamap.to_theta(arr)

    def to_numpy(self) -> Trace:
        """A copy with every array moved to host numpy."""
        return jax.tree_util.tree_map(np.asarray, self)

    def to_arviz(self, **kwargs: Any):
        """Export to an ArviZ ``xarray.DataTree`` (see :func:`gnomon.trace.arviz_export.to_arviz`)."""
        from gnomon.trace.arviz_export import to_arviz

        return to_arviz(self, **kwargs)

    def concatenate(self, later: Trace) -> Trace:
        """Join a continuation (which started at this trace's final θ) after this trace.

        The continuation's first row duplicates this trace's final point and is dropped; its steps are
        offset; gradient evaluations and runtimes add up; the status is the continuation's."""
        self._need("optimization", "concatenate")
        if later.kind != "optimization" or self.is_batched or later.is_batched:
            raise ValueError("concatenate joins two single (unbatched) optimization traces")
        if later.dim != self.dim:
            raise ValueError(f"concatenate: θ dimensions differ ({self.dim} vs {later.dim})")
        cat = lambda a, b: None if a is None or b is None else np.concatenate([np.asarray(a), np.asarray(b)[1:]])  # noqa: E731
        offset = self.num_steps
        stats = {k: cat(v, later.stats[k]) for k, v in self.stats.items() if k in later.stats}
        return replace(
            later,
            theta=cat(self.theta, later.theta),
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
        th = np.shape(self.theta)
        if self.kind == "optimization":
            if len(th) not in (2, 3):
                raise ValueError(f"optimization theta must be (T, D) or (B, T, D), got {th}")
            lead = th[:-1]
            if self.loss is None or np.shape(self.loss) != lead:
                raise ValueError(f"loss must have shape {lead} (one per θ row), got {np.shape(self.loss)}")
            if self.step is not None and np.shape(self.step) != lead:
                raise ValueError(f"step must have shape {lead}, got {np.shape(self.step)}")
        else:
            if len(th) != 3:
                raise ValueError(f"sampling theta must be (chains, draws, D), got {th}")
            lead = th[:-1]
            if self.log_prob is None or np.shape(self.log_prob) != lead:
                raise ValueError(f"log_prob must have shape {lead}, got {np.shape(self.log_prob)}")
        if self.log_prob is not None and np.shape(self.log_prob) != lead:
            raise ValueError(f"log_prob must have shape {lead}, got {np.shape(self.log_prob)}")
        for k, v in self.stats.items():
            if np.shape(v)[: len(lead)] != lead:
                raise ValueError(f"stats[{k!r}] must lead with shape {lead}, got {np.shape(v)}")
        if self.layout is not None and self.thetamap is None and self.layout.size != th[-1]:
            raise ValueError(f"layout has size {self.layout.size} but θ has dimension {th[-1]}")
        return self

    def summary(self) -> dict[str, Any]:
        """Small aggregation-friendly scalars (what ``summary.json`` holds)."""
        out: dict[str, Any] = {"kind": self.kind, "runtime_s": float(self.runtime_s)}
        if self.kind == "optimization" and not self.is_batched:
            loss = np.asarray(self.loss, dtype=float)
            out.update(
                status=self.status,
                converged=self.converged,
                diverged=self.diverged,
                final_loss=float(loss[-1]) if loss.size else math.nan,
                best_loss=float(np.nanmin(loss)) if np.isfinite(loss).any() else math.nan,
                initial_loss=float(loss[0]) if loss.size else math.nan,
                num_steps=self.num_steps,
                num_rows=len(self),
                num_grad_evals=int(self.num_grad_evals),
            )
            if "grad_norm" in self.stats:
                out["final_grad_norm"] = float(np.asarray(self.stats["grad_norm"])[-1])
        elif self.kind == "sampling":
            out.update(
                status=self.status,
                num_chains=self.num_chains,
                num_draws=self.num_draws,
                num_grad_evals=int(self.num_grad_evals),
                mean_log_prob=float(np.mean(np.asarray(self.log_prob, dtype=float))),
            )
            if "diverging" in self.stats:
                out["divergences"] = int(np.sum(np.asarray(self.stats["diverging"])))
        else:
            raise ValueError("summary of a batch: summarise each member (trace[i].summary())")
        return out

    def __repr__(self) -> str:
        shape = tuple(np.shape(self.theta))
        if self.kind == "optimization" and not self.is_batched:
            return (
                f"Trace(optimization, theta{shape}, status={self.status!r}, final_loss="
                f"{float(np.asarray(self.loss)[-1]):.6g}, num_grad_evals={int(self.num_grad_evals)})"
            )
        return f"Trace({self.kind}, theta{shape}, status={self.status!r})"
