"""Old spellings whose meaning changed: each refuses every call with an error naming what replaces it, so that no
old code silently changes direction."""

from __future__ import annotations

from typing import Any


def scale_by_curvature(*args: Any, **kwargs: Any) -> Any:
    """Refused: ``gn.scale_by_curvature(curvature, learning_rate=1.0, ...)`` returned :math:`-\\mathrm{lr} ⊙ g`;
    its successor :func:`gnomon.optim.scale_by_curvature` follows optax's convention and returns
    :math:`+P ⊙ g`, with the step chained after it (issue 19). Calling this raises a ValueError naming the
    composition."""
    raise ValueError(
        "gn.scale_by_curvature(curvature, learning_rate, ...) was −lr ⊙ g; it is now composed as in optax: "
        "optax.chain(gn.optim.scale_by_curvature(curvature), optax.scale_by_learning_rate(learning_rate)) "
        "(gn.optim.scale_by_curvature returns +P ⊙ g and applies no learning rate), or, for the clip and the λ_max "
        "bound (lr_min, lr_max, lambda_max_iters=n), gn.optim.scale_by_lr_vector(gn.optim.scale_by_curvature("
        "curvature), learning_rate, lr_min=..., lr_max=..., power_iters=n, objective=obj). gn.scale_by_curvature "
        "refuses every call so that no old code changes direction silently"
    )
