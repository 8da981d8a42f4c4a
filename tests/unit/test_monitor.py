import numpy as np
import polars as pl

from domains.spec import DomainSpec
from tasks.monitor import drift_report, reference_statistics

SPEC = DomainSpec.model_validate(
    {
        "name": "toy",
        "data": {"path": "x.csv"},
        "columns": [
            {"name": "num", "dtype": "float"},
            {"name": "cat", "dtype": "category"},
            {"name": "y", "dtype": "int", "role": "target"},
        ],
        "task": "regression",
        "split": {"kind": "random"},
        "primary_metric": "r2",
        "metrics": ["r2"],
    }
)


def _frame(n, shift=0.0, cats=("a", "b"), seed=0):
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"num": rng.normal(shift, 1, n), "cat": rng.choice(list(cats), n), "y": np.zeros(n)})


def test_same_distribution_shows_no_drift():
    reference = reference_statistics(_frame(5000), SPEC)
    report = drift_report(SPEC, reference, _frame(5000, seed=1))
    assert report.max_psi < 0.02
    assert report.drifted == []


def test_shifted_numeric_and_new_categories_are_flagged():
    reference = reference_statistics(_frame(5000), SPEC)
    report = drift_report(SPEC, reference, _frame(5000, shift=1.0, cats=("a", "c"), seed=1))
    assert report.drifted == ["cat", "num"]
    assert report.psi["num"] > 0.25


def test_missing_values_count_as_drift():
    reference = reference_statistics(_frame(2000), SPEC)
    holey = _frame(2000, seed=1).with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(None).otherwise(pl.col("num")).alias("num")
    )
    assert drift_report(SPEC, reference, holey).psi["num"] > 0.5
