"""The serving schema: a model's raw inputs as a served model takes them.

One definition for every caller that hands rows to a registered model: the signature logged with
it, the example beside it, the rows the latency gate times, the Python API's ``predict``, the
service's tests and the benchmarks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import polars as pl

from lepton.domains.spec import Dtype

if TYPE_CHECKING:
    from lepton.domains.spec import DomainSpec

TEXT_INPUTS = (Dtype.CATEGORY, Dtype.DATETIME)  # passed to the model as strings


def input_frame(spec: DomainSpec, frame: pl.DataFrame, strict: bool = True):
    """The model's raw inputs (those ``frame`` has) as pandas: numbers as float64 (the
    signature's ``double``), categories and datetimes as text. Not ``strict``: a value that is
    not a number becomes missing, as a served model would treat it."""
    kind = {c.name: pl.String if c.dtype in TEXT_INPUTS else pl.Float64 for c in spec.model_inputs}
    cols = [pl.col(name).cast(dtype, strict=strict) for name, dtype in kind.items() if name in frame.columns]
    return frame.select(cols).to_pandas()


def input_records(spec: DomainSpec, frame: pl.DataFrame) -> list[dict[str, Any]]:
    """The model's raw inputs as JSON-ready rows, missing values as None: what a client sends
    to ``lepton serve``."""
    rows = input_frame(spec, frame).to_dict("records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


def signature(spec: DomainSpec):
    """Text inputs as ``string``; numbers as ``Any`` (the model's own check takes integers and
    floats alike and names a value that is not a number: ``pyfunc_entry._checked``), because
    MLflow refuses an int64 column, as Parquet and JSON integers arrive, where ``double`` is
    declared. Every column optional: a missing value is one the model handles."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    inputs = Schema(
        [ColSpec("string" if c.dtype in TEXT_INPUTS else AnyType(), c.name, required=False) for c in spec.model_inputs]
    )
    pred_type = "double" if spec.task == "regression" else "string"
    outputs = [ColSpec(pred_type, "prediction")] + ([] if spec.task == "regression" else [ColSpec("double", "score")])
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))
