"""Finance: credit risk on Lending Club loans (Q1 2016); predict which loans go bad."""

from lepton.domains.spec import Column, CostModel, DataSource, DomainSpec, Dtype, FeatureRecipe, Role, SplitSpec

_FLOATS = [
    "funded_amnt",
    "int_rate",
    "annual_inc",
    "revol_util",
    "all_util",
    "total_bal_il",
    "total_il_high_credit_limit",
]
_INTS = [
    "delinq_2yrs",
    "inq_last_6mths",
    "acc_now_delinq",
    "open_il_6m",
    "open_il_12m",
    "open_il_24m",
    "inq_fi",
    "inq_last_12m",
    "delinq_amnt",
    "num_il_tl",
]
_CATEGORIES = ["term", "sub_grade", "addr_state", "verification_status", "emp_length"]

SPEC = DomainSpec(
    name="finance",
    description="Credit risk: probability that a Lending Club loan goes bad.",
    data=DataSource(path="lending_club.parquet"),
    columns=(
        Column(name="rownames", dtype=Dtype.INT, role=Role.ID),
        *(Column(name=c, dtype=Dtype.FLOAT) for c in _FLOATS),
        *(Column(name=c, dtype=Dtype.INT) for c in _INTS),
        *(Column(name=c, dtype=Dtype.CATEGORY) for c in _CATEGORIES),
        Column(name="Class", dtype=Dtype.CATEGORY, role=Role.TARGET),
    ),
    task="binary",
    positive_class="bad",
    split=SplitSpec(kind="stratified", holdout_size=0.2, validation_size=0.2),
    primary_metric="roc_auc",
    metrics=("roc_auc", "gini", "ks", "average_precision", "brier", "expected_cost"),
    gates={"roc_auc": 0.65},
    # A missed bad loan loses most of its principal; a refused good loan loses the margin. In USD
    # (an assumption to replace with a lender's own): a refused good loan forgoes about $400 of
    # margin on Lending Club's mean loan of about $14,000; a default loses ten times that.
    cost=CostModel(false_negative=10.0, false_positive=1.0, unit="relative loss", usd_per_unit=400.0),
    latency_budget_ms=10.0,
    features=FeatureRecipe(name="credit"),
    schedule="0 3 * * 1",
)
