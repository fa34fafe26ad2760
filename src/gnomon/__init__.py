"""gnomon: inference in a flat, unconstrained θ-space.

One objective gives ``loss(θ)`` for optimizers and ``log_prob(θ)`` for samplers; curvature estimates give
both per-index learning rates and HMC/NUTS/MCLMC mass matrices; one :class:`Trace` records optimizer paths and
sampler chains, saves as a small reproducible run directory, aggregates across experiments, exports to
ArviZ and drives one plotting core.

Public names are resolved lazily so that ``import gnomon`` stays cheap and never imports arviz,
matplotlib, blackjax or numpyro.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Layout": "gnomon.thetaspace.layout",
    "EigenMap": "gnomon.thetaspace.eigenmap",
    "Objective": "gnomon.objective.objective",
    "Curvature": "gnomon.curvature.estimate",
    "estimate_curvature": "gnomon.curvature.estimate",
    "scale_by_curvature": "gnomon.optim.legacy",  # refuses: now gn.optim.scale_by_curvature + a step (issue 19)
    "learning_rates": "gnomon.optim.precondition",
    "Trace": "gnomon.trace.trace",
    "run_simple_gd": "gnomon.optim.simple_gd",
    "optimize": "gnomon.optim.optimize",
    "optimize_batch": "gnomon.optim.optimize",
    "precond_arrays": "gnomon.optim.optimize",
    "sample": "gnomon.sampler.api",
    "HandOff": "gnomon.sampler.handoff_files",
    "nuts": "gnomon.sampler.families",
    "hmc": "gnomon.sampler.families",
    "mclmc": "gnomon.sampler.families",
    "warmup": "gnomon.sampler.config",
    "save_run": "gnomon.io.run",
    "load_run": "gnomon.io.run",
    "Run": "gnomon.io.run",
    "ArtifactError": "gnomon.io.jsonio",
    "sampling_summary": "gnomon.io.sampling_summary",
    "Experiment": "gnomon.experiment.experiment",
    "DiagnosticsConfig": "gnomon.experiment.experiment",
    "Signals": "gnomon.signals.signals",
    "enable_compilation_cache": "gnomon.util.compile_cache",
    "disable_compilation_cache": "gnomon.util.compile_cache",
    "clear_caches": "gnomon.util.programs",
    "Affine": "gnomon.thetaspace.modelmap",
    "register_unit": "gnomon.thetaspace.units",
    "cramer_rao": "gnomon.curvature.crlb",
    "CramerRao": "gnomon.curvature.crlb",
}
_SUBMODULES = {"plot": "gnomon.plot", "recipes": "gnomon.recipes", "optim": "gnomon.optim",
               "family": "gnomon.objective.family"}

__all__ = sorted([*_EXPORTS, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'gnomon' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from gnomon.io.run import Run, load_run, save_run  # noqa: F401
    from gnomon.objective.objective import Objective  # noqa: F401
    from gnomon.optim.simple_gd import run_simple_gd  # noqa: F401
    from gnomon.thetaspace.layout import Layout  # noqa: F401
    from gnomon.trace.trace import Trace  # noqa: F401
