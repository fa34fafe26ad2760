"""Optimizers as optax pieces and small configuration objects (``gn.optim``).

* Methods (frozen dataclasses; their fields are the defaults): :class:`gd`, :class:`sgd`, :class:`adam`,
  :class:`rmsprop`, :class:`lbfgs`, :class:`preconditioned_gd` — pass one to ``gn.optimize`` as ``method``.
* Transformations (optax ``GradientTransformationExtraArgs`` with NamedTuple states):
  :func:`scale_by_curvature`, :func:`scale_by_bb`, :func:`nonmonotone_backtracking`,
  :func:`precondition_by_curvature`, :func:`restart_lbfgs`; ``preconditioned_gd`` is exactly
  ``nonmonotone_backtracking(optax.chain(scale_by_curvature(...), scale_by_bb()))``.
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
    BacktrackingState,
    PreconditionState,
    RestartLBFGSState,
    ScaleByBBState,
    ScaleByCurvatureState,
    nonmonotone_backtracking,
    precondition_by_curvature,
    restart_lbfgs,
    scale_by_bb,
    scale_by_curvature,
)

__all__ = [
    "BacktrackingState",
    "CurvatureEstimator",
    "Method",
    "OptimizerReport",
    "PreconditionState",
    "Program",
    "RestartLBFGSState",
    "ScaleByBBState",
    "ScaleByCurvatureState",
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
    "sgd",
    "status_code",
]
