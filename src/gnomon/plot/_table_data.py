"""An experiment's aggregate table as the campaign and pair figures read it: the table of an Experiment, its
directory or a DataFrame (:func:`experiment_table`), the unit of each parameter label, the labels that have
a ``<prefix>.<label>`` column (:func:`column_labels`) and one column as floats (:func:`column`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def experiment_table(source: Any, params: Any, x: str | None):
    """``(DataFrame, {label: unit})`` from an Experiment, a directory or a DataFrame."""
    if hasattr(source, "columns") and hasattr(source, "iterrows"):
        return source, {}
    from gnomon.experiment.experiment import Experiment

    exp = source if isinstance(source, Experiment) else Experiment(os.fspath(source), create=False)
    meta_keys = []
    units: dict[str, str] = {}
    from gnomon.io.status import check_run

    first = next((st for st in (check_run(exp.run_dir(r)) for r in exp.runs()) if st.ok), None)  # not every run
    if first is not None:
        units = label_units(first.meta)
        if x is not None and x not in set(first.summary or {}) and x != "run_id":
            meta_keys = [x]
    df = exp.aggregate(meta_keys=meta_keys, params=params if params is not None else True, on_problem="ignore")
    return df, units


def label_units(meta: Mapping[str, Any] | None) -> dict[str, str]:
    """``{label: unit}`` of a run's layout (from its meta.json)."""
    doc = ((meta or {}).get("theta") or {}).get("layout")
    if not doc:
        return {}
    try:
        from gnomon.io.jsonio import from_jsonable
        from gnomon.io.parameters import parameter_labels
        from gnomon.thetaspace.layout import Layout

        layout = Layout.from_dict(from_jsonable(doc))
    except (KeyError, TypeError, ValueError):
        return {}
    return {lab: layout[name].units for name, _, lab in parameter_labels(layout)}


def column_labels(df: Any, prefix: str) -> list[str]:
    """The labels that have a ``<prefix>.<label>`` column, in table order."""
    labels = []
    for c in df.columns:
        head, sep, rest = str(c).partition(".")
        if sep and head == prefix and rest not in labels:
            labels.append(rest)
    return labels


def column(df: Any, name: str) -> np.ndarray | None:
    """Column ``name`` as a float array (missing values NaN); None when the table has no such column."""
    if name not in df.columns:
        return None
    return np.asarray(df[name].astype("float64").to_numpy(na_value=np.nan), dtype=float)
