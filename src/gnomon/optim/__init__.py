"""Optimizers as optax pieces and small configuration objects (``gn.optim``).

* Methods (frozen dataclasses; their fields are the defaults): :class:`gd`, :class:`sgd`, :class:`adam`,
  :class:`rmsprop`, :class:`lbfgs`, :class:`preconditioned_gd` — pass one to ``gn.optimize`` as ``method``.
* Transformations (optax ``GradientTransformationExtraArgs`` with NamedTuple states, optax's conventions: a
  ``scale_by_*`` preconditioner never flips the sign nor applies a learning rate):
  :func:`scale_by_curvature` (g ↦ P ⊙ g), the step rules :func:`scale_by_bb` and :func:`scale_by_lr_vector`,
  the wrappers :func:`nonmonotone_backtracking` and :func:`precondition_by_curvature`, :func:`restart_lbfgs`;
  ``preconditioned_gd`` is exactly ``nonmonotone_backtracking(optax.chain(scale_by_curvature(...),
  scale_by_bb()))``, and ``optax.chain(scale_by_curvature(c), optax.scale_by_learning_rate(lr))`` is
  preconditioned gradient descent in a plain optax loop.
* :class:`StatusCode` and :func:`status_code`: why a fit stopped, as a code beside ``trace.status``'s sentence.
* :func:`curvature_estimator`: a planned curvature estimate that the transformations run inside the compiled
  program (at θ_0 and at refreshes).
"""

from gnomon.optim.estimator import CurvatureEstimator, curvature_estimator
from gnomon.optim.methods import (
    METHODS,  # noqa: F401 (name -> method configuration)
    Method,
    Program,
    adam,
    gd,
    lbfgs,
    preconditioned_gd,
    rmsprop,
    sgd,
)
from gnomon.optim.readout import OptimizerReport
from gnomon.optim.status import StatusCode, status_code
from gnomon.optim.transforms import (
    BacktrackingInfo,
    BacktrackingState,
    CurvatureInfo,
    LrVectorInfo,
    PreconditionState,
    RestartLBFGSState,
    ScaleByBBState,
    ScaleByCurvatureState,
    ScaleByLrVectorState,
    nonmonotone_backtracking,
    precondition_by_curvature,
    restart_lbfgs,
    scale_by_bb,
    scale_by_curvature,
    scale_by_lr_vector,
)

__all__ = [
    "BacktrackingInfo",
    "BacktrackingState",
    "CurvatureEstimator",
    "CurvatureInfo",
    "LrVectorInfo",
    "Method",
    "OptimizerReport",
    "PreconditionState",
    "Program",
    "RestartLBFGSState",
    "ScaleByBBState",
    "ScaleByCurvatureState",
    "ScaleByLrVectorState",
    "StatusCode",
    "adam",
    "curvature_estimator",
    "gd",
    "lbfgs",
    "nonmonotone_backtracking",
    "precondition_by_curvature",
    "preconditioned_gd",
    "restart_lbfgs",
    "rmsprop",
    "scale_by_bb",
    "scale_by_curvature",
    "scale_by_lr_vector",
    "sgd",
    "status_code",
]
