"""Medical: five-year mortality from serum free light chains (flchain, Olmsted County)."""

import polars as pl

from lepton.domains.spec import Column, CostModel, DataSource, DomainSpec, Dtype, FeatureRecipe, Role, SplitSpec

FIVE_YEARS_DAYS = 5 * 365.25


def five_year_label(raw: pl.DataFrame) -> pl.DataFrame:
    """Label each subject with death within five years of sampling.

    A subject censored (``death == 0``) before five years has an unknown outcome: counting them
    as survivors would bias the label towards survival, so those rows are dropped. ``futime``,
    ``death`` and ``chapter`` (cause of death) encode the outcome itself and are removed.
    """
    known = raw.filter((pl.col("death") == 1) | (pl.col("futime") >= FIVE_YEARS_DAYS))
    label = ((pl.col("death") == 1) & (pl.col("futime") < FIVE_YEARS_DAYS)).cast(pl.Int8)
    return known.with_columns(label.alias("death_5y")).drop("futime", "death", "chapter")


SPEC = DomainSpec(
    name="medical",
    description="Clinical risk: death within five years of a serum free light chain sample.",
    data=DataSource(path="flchain.parquet"),
    columns=(
        Column(name="rownames", dtype=Dtype.INT, role=Role.ID),
        Column(name="age", dtype=Dtype.INT),
        Column(name="sex", dtype=Dtype.CATEGORY),
        Column(name="sample_yr", dtype=Dtype.INT, role=Role.TIME),
        Column(name="kappa", dtype=Dtype.FLOAT),
        Column(name="lambda", dtype=Dtype.FLOAT),
        Column(name="flc_grp", dtype=Dtype.INT),
        Column(name="creatinine", dtype=Dtype.FLOAT),
        Column(name="mgus", dtype=Dtype.INT),
        Column(name="death_5y", dtype=Dtype.INT, role=Role.TARGET),
    ),
    task="binary",
    positive_class=1,
    # Train on earlier sampling years, test on the latest: how the model would be used.
    split=SplitSpec(kind="time", holdout_size=0.2, validation_size=0.2),
    primary_metric="roc_auc",
    metrics=(
        "roc_auc",
        "sensitivity",
        "specificity",
        "sensitivity_at_specificity",
        "brier",
        "calibration_error",
        "average_precision",
        "expected_cost",
    ),
    # the threshold keeps sensitivity 0.8 on validation with 90% confidence; the holdout (later
    # years) must show at least 0.75
    gates={"roc_auc": 0.75, "calibration_error": 0.1, "sensitivity": 0.75},
    # Missing a patient at risk is far worse than an extra follow-up visit.
    cost=CostModel(false_negative=5.0, false_positive=1.0, unit="relative harm"),
    target_specificity=0.9,
    # Flag at least 80% of the patients who will die within five years (a follow-up for them), and
    # as few of the others as that allows.
    target_sensitivity=0.8,
    latency_budget_ms=10.0,
    features=FeatureRecipe(name="clinical"),
    schedule="0 4 * * 1",
)
