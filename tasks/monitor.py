"""Monitor: reference statistics at training time, and drift (PSI) of new data against them.

The reference is stored with the model version, so monitoring never re-reads training data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from domains.spec import DomainSpec, Dtype

EPSILON = 1e-4  # floor for empty bins, so PSI stays finite


def reference_statistics(frame: pl.DataFrame, spec: DomainSpec) -> dict[str, Any]:
    """Per feature: quantile bin edges and proportions (numeric) or level proportions (categorical);
    each with the share of missing values."""
    bins = spec.drift.bins
    features: dict[str, Any] = {}
    for column in spec.feature_columns:
        if column.dtype is Dtype.DATETIME:
            continue  # calendar time always moves on; its drift says nothing about the data
        values = frame[column.name]
        missing = float(values.null_count() / max(frame.height, 1))
        if column.dtype is Dtype.CATEGORY:
            counts = values.drop_nulls().cast(pl.String).value_counts(sort=True).head(50)
            total = max(frame.height, 1)
            levels = {str(k): float(v / total) for k, v in zip(counts[column.name], counts["count"], strict=True)}
            features[column.name] = {"kind": "categorical", "levels": levels, "missing": missing}
        else:
            numbers = values.cast(pl.Float64).drop_nulls().drop_nans().to_numpy()
            edges = np.unique(np.quantile(numbers, np.linspace(0, 1, bins + 1)[1:-1])) if len(numbers) else np.array([])
            features[column.name] = {
                "kind": "numeric",
                "edges": edges.tolist(),
                "proportions": _numeric_proportions(numbers, edges, frame.height),
                "missing": missing,
            }
    return {"rows": frame.height, "features": features}


def _numeric_proportions(numbers: np.ndarray, edges: np.ndarray, rows: int) -> list[float]:
    counts = np.bincount(np.searchsorted(edges, numbers, side="right"), minlength=len(edges) + 1)
    return (counts / max(rows, 1)).tolist()


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(expected, EPSILON)
    a = np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def population_stability(reference: dict[str, Any], frame: pl.DataFrame) -> dict[str, float]:
    """PSI per feature of ``frame`` against ``reference`` (missing values are a bucket of their own)."""
    out = {}
    rows = max(frame.height, 1)
    for name, ref in reference["features"].items():
        values = frame[name]
        missing = values.null_count() / rows
        if ref["kind"] == "categorical":
            counts = dict(
                zip(*values.drop_nulls().cast(pl.String).value_counts().to_dict(as_series=False).values(), strict=True)
            )
            levels = list(ref["levels"])
            seen = np.array([counts.get(level, 0) / rows for level in levels])
            expected = np.array(
                [*ref["levels"].values(), 1 - sum(ref["levels"].values()) - ref["missing"], ref["missing"]]
            )
            actual = np.array([*seen, 1 - seen.sum() - missing, missing])
        else:
            numbers = values.cast(pl.Float64).drop_nulls().drop_nans().to_numpy()
            actual = np.array([*_numeric_proportions(numbers, np.asarray(ref["edges"]), rows), missing])
            expected = np.array([*ref["proportions"], ref["missing"]])
        out[name] = _psi(np.clip(expected, 0, 1), np.clip(actual, 0, 1))
    return out


@dataclass(frozen=True)
class DriftReport:
    psi: dict[str, float]
    threshold: float

    @property
    def drifted(self) -> list[str]:
        return sorted(name for name, value in self.psi.items() if value > self.threshold)

    @property
    def max_psi(self) -> float:
        return max(self.psi.values(), default=0.0)


def drift_report(spec: DomainSpec, reference: dict[str, Any], frame: pl.DataFrame) -> DriftReport:
    return DriftReport(psi=population_stability(reference, frame), threshold=spec.drift.psi_threshold)


@task(name="monitor", cache_policy=NO_CACHE)
def monitor_task(spec: DomainSpec, reference: dict[str, Any], frame: pl.DataFrame, run_id: str) -> DriftReport:
    """Drift of ``frame`` (first version: the holdout) against the training reference, logged.

    Args:
        spec: the domain (drift thresholds).
        reference: the training reference statistics stored with the model version.
        frame: the data to check.
        run_id: the MLflow run to log drift metrics to.
    Returns:
        DriftReport: PSI per feature and the features over the threshold.
    """
    from lepton import tracking

    report = drift_report(spec, reference, frame)
    tracking.log_metrics(
        run_id,
        {f"psi_{k}": v for k, v in report.psi.items()}
        | {"psi_max": report.max_psi, "drifted_features": len(report.drifted)},
    )
    return report
