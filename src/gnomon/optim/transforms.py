r"""The pieces of gnomon's gradient methods as optax transformations, and how the methods compose them.

Each piece is a function returning an optax ``GradientTransformationExtraArgs`` with a NamedTuple state,
following optax's conventions: a ``scale_by_*`` preconditioner neither flips the sign nor applies a learning
rate; the step length is chained after it, as ``optax.adam = chain(scale_by_adam, scale_by_learning_rate)``.

:func:`~gnomon.optim.preconditioners.scale_by_curvature` (:mod:`gnomon.optim.preconditioners`)
    :math:`g ↦ P ⊙ g`, :math:`P = s ⊙ (c + \mathrm{eps})^{-p}`, c a curvature diagonal (fixed, or estimated at θ_0
    in ``init`` and every K updates); parameters may be a pytree.
:func:`~gnomon.optim.step_sizes.scale_by_bb` (:mod:`gnomon.optim.step_sizes`)
    :math:`d ↦ -α_t d`, the Barzilai–Borwein step length in the metric of the direction it receives.
:func:`~gnomon.optim.step_sizes.scale_by_lr_vector`
    a wrapper around a preconditioner: :math:`g ↦ -\mathrm{clip}(η_t P, \mathrm{lr\_min}, \mathrm{lr\_max}) ⊙ g`,
    η_t a learning rate or schedule bounded by :math:`1/λ_\max(P^{1/2} ∇^2 f P^{1/2})` (the rule that needs P).
:func:`~gnomon.optim.backtracking.nonmonotone_backtracking` (:mod:`gnomon.optim.backtracking`)
    a wrapper: rejects a point whose loss rose above the last M accepted losses and steps back along the last
    step, else lets the inner transformation step (it never sees a rejected point);
    :func:`~gnomon.optim.backtracking.restart_lbfgs` is L-BFGS made to work under it.
:func:`~gnomon.optim.preconditioners.precondition_by_curvature`
    a wrapper: runs an inner transformation (L-BFGS) in the coordinates :math:`u = c^{1/2} ⊙ θ`.

``gn.optimize(method="preconditioned_gd")`` runs exactly (:mod:`gnomon.optim.methods` builds it)

.. code-block:: python

    gn.optim.nonmonotone_backtracking(
        optax.chain(gn.optim.scale_by_curvature(estimator), gn.optim.scale_by_bb()), window=10)

and with fixed steps ``nonmonotone_backtracking(scale_by_lr_vector(scale_by_curvature(c), learning_rate,
power_iters=20, objective=obj), window=1)``; the same chain assembled by hand gives the same trace. A user's own
loop needs none of gnomon's: ``optax.chain(gn.optim.scale_by_curvature(c), optax.scale_by_learning_rate(lr))``
with ``optax.apply_updates`` over any pytree of parameters.

Transformations that estimate curvature take the objective (and its data) through their factory (a
:class:`~gnomon.optim.CurvatureEstimator`, or a method name with ``objective=``). gnomon's loop passes ``value``
(the loss at ``params``), ``grad``, ``value_fn`` and ``data`` as extra arguments, and reads what a run reports
(learning rate, accept flags, gradient evaluations spent, the curvature and learning-rate vectors) from the states
by type (:mod:`gnomon.optim.readout`).
"""

from gnomon.optim.backtracking import (  # noqa: F401 (re-exported)
    ARMIJO,
    BACKTRACK_CLIP,
    BacktrackingInfo,
    BacktrackingState,
    RestartLBFGSState,
    nonmonotone_backtracking,
    restart_lbfgs,
)
from gnomon.optim.preconditioners import (  # noqa: F401 (re-exported)
    CurvatureInfo,
    PreconditionState,
    ScaleByCurvatureState,
    finite_diagonal,
    precondition_by_curvature,
    scale_by_curvature,
)
from gnomon.optim.step_sizes import (  # noqa: F401 (re-exported)
    BB_CLAMP,
    LrVectorInfo,
    ScaleByBBState,
    ScaleByLrVectorState,
    learning_rate_of,
    scale_by_bb,
    scale_by_lr_vector,
)
