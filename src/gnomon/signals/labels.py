"""Component labels of a layout's blocks: how the components of named parameters are called everywhere.

One label per constrained component: a scalar block is its name; an array block's components are the
layout's index labels (``name[3]``, or the component labels the layout was given, e.g. Noll indices
``Z4 … Z11``) when the block's θ slice has one entry per component, else ``name[i]`` / ``name[i,j]``.
Signals label their components with them, ``summary.json`` names its per-parameter keys with them
(``estimate.<label>``, ``crlb.<label>``) and the CRLB result of a forward model uses the same labels, so a
bound finds its parameter by label. The layout is duck-typed (``blocks``, ``index_labels()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def block_size(shape: Sequence[int]) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def default_component_labels(name: str, shape: Sequence[int]) -> list[str]:
    """``[name]`` for a scalar, ``name[i]`` / ``name[i,j]`` for array entries."""
    shape = tuple(shape)
    if shape == ():
        return [name]
    return [f"{name}[{','.join(str(i) for i in idx)}]" for idx in np.ndindex(*shape)]


def block_labels(layout: Any, block: Any) -> list[str]:
    """One label per constrained component of ``block``: the block's own ``element_labels()`` when it has
    them, else the layout's index labels when the block's θ slice has one entry per component (they carry the
    layout's component labels when it has them), else ``name[i]``."""
    n = block_size(block.shape)
    own = getattr(block, "element_labels", None)  # a layout that labels its elements itself
    if callable(own):
        labs = [str(x) for x in own()]
        if len(labs) == n:
            return labs
    if tuple(block.theta_shape) == tuple(block.shape):
        labs = list(layout.index_labels())[block.start : block.stop]
        if len(labs) == n:
            return [str(x) for x in labs]
    return default_component_labels(block.name, block.shape)


#: blocks with more components than this get no per-parameter keys (an image-sized block would bloat every
#: summary.json and table) unless a CRLB or truth names them
MAX_COMPONENTS = 64


def parameter_labels(layout: Any, max_components: int | None = None) -> list[tuple[str, int, str]]:
    """``(block name, component index, label)`` for every constrained component of the layout (of blocks
    with at most ``max_components`` components, when given)."""
    out = []
    for b in layout.blocks:
        if max_components is not None and block_size(b.shape) > max_components:
            continue
        for k, lab in enumerate(block_labels(layout, b)):
            out.append((b.name, k, lab))
    return out


__all__ = ["default_component_labels", "block_labels", "block_size", "parameter_labels", "MAX_COMPONENTS"]
