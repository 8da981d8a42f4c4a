"""Labels: the target as the models see it (class indices, or floats for regression), shared by
the preprocess and leakage stages and the monitor."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from lepton.domains.spec import DomainSpec
from lepton.errors import Problem, SchemaError


def encode_labels(target: pl.Series, spec: DomainSpec, classes: list[Any]) -> np.ndarray:
    if spec.task == "regression":
        return target.cast(pl.Float64).to_numpy()
    as_text = target.cast(pl.String)
    names = [str(c) for c in classes]
    codes = as_text.replace_strict(names, list(range(len(names))), default=None, return_dtype=pl.Int32)
    if codes.null_count():
        unknown = sorted(as_text.filter(codes.is_null()).unique().cast(pl.String).fill_null("None").to_list())
        raise SchemaError([Problem("unknown_class", spec.target, f"class(es) {unknown[:5]} not seen in training")])
    return codes.to_numpy().astype(np.int32, copy=False)


def class_labels(train_target: pl.Series, spec: DomainSpec) -> list[Any]:
    """Binary: [negative, positive]; multiclass: sorted training classes; regression: []."""
    if spec.task == "regression":
        return []
    values = sorted(train_target.unique().to_list(), key=lambda v: (str(type(v)), v))
    if spec.task == "binary":
        positive = next(v for v in values if str(v) == str(spec.positive_class))
        return [next(v for v in values if v != positive), positive]
    return values
