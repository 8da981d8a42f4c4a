"""Spec inference from a table: task, positive class, roles, PII, templates, the spec file; fuzzed."""

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton.core.tables import coerce_types
from lepton.domains.infer import Hints, infer_spec, infer_task, make_hints, pii_check, pii_reason, render_spec, slug
from lepton.domains.spec import DomainSpec, Dtype, Role
from lepton.errors import DataError, LeptonError, SpecError


def _table(n=200, seed=0, **extra):
    rng = np.random.default_rng(seed)
    base = {
        "amount": rng.normal(100, 20, n),
        "grade": rng.choice(["A", "B", "C"], n),
        "count": rng.integers(0, 5, n),
        "label": rng.choice(["Yes", "No"], n, p=[0.3, 0.7]),
    }
    return pl.DataFrame({**base, **extra})


def _infer(frame, **hints):
    return infer_spec(frame, Hints(**{"target": "label", **hints}), "/data/My Table 2024.csv")


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([True, False] * 20, "binary"),
        (["good", "bad"] * 20, "binary"),
        ([0, 1] * 20, "binary"),
        (["a", "b", "c"] * 20, "multiclass"),
        (list(range(5)) * 10, "multiclass"),
        ([0.0, 1.0, 2.0] * 20, "multiclass"),
        (list(np.linspace(0, 1, 40)), "regression"),
        (list(range(100)), "regression"),
    ],
)
def test_task_is_inferred_from_the_target(values, task):
    assert infer_task(pl.Series("y", values))[0] == task


def test_a_text_target_with_too_many_values_asks_for_the_task():
    with pytest.raises(SpecError, match="too many classes"):
        infer_task(pl.Series("y", [f"v{i}" for i in range(200)]))


@pytest.mark.parametrize(
    ("values", "given", "positive"),
    [
        (["Yes", "No", "No"], None, "Yes"),
        (["good", "bad", "good"], None, "bad"),
        (["benign", "malignant", "benign"], None, "malignant"),
        ([0, 1, 0], None, 1),
        (["alpha", "beta", "beta"], None, "alpha"),  # the rarer class
        (["Yes", "No", "No"], "no", "No"),  # given, matched without case
        ([0, 1, 0], "0", 0),
    ],
)
def test_positive_class_is_inferred_or_matched_and_said(values, given, positive):
    frame = _table(90).with_columns(pl.Series("label", values * 30))
    inferred = _infer(frame, positive_class=given)
    assert inferred.spec.positive_class == positive
    assert any(n.startswith(f"positive class: {positive!r}") for n in inferred.notes)


def test_a_positive_class_that_never_occurs_is_named():
    with pytest.raises(SpecError, match=r"--positive-class: 'maybe' never occurs"):
        _infer(_table(), positive_class="maybe")


def test_roles_ids_constants_and_empty_columns(tmp_path):
    n = 200
    frame = _table(
        n,
        row=np.arange(n),
        customer_id=[f"C{i:05d}" for i in range(n)],
        plant="P1",
        empty=pl.Series([None] * n, dtype=pl.Float64),
        city=[f"city{i % 120}" for i in range(n)],
        when=pl.datetime_range(pl.datetime(2020, 1, 1), pl.datetime(2020, 1, 1) + pl.duration(days=n - 1), eager=True),
    )
    inferred = _infer(frame, drop_cols=("count",))
    roles = {c.name: c.role for c in inferred.spec.columns}
    dtypes = {c.name: c.dtype for c in inferred.spec.columns}
    assert roles["row"] is Role.ID and roles["customer_id"] is Role.ID
    assert "plant" not in roles and "empty" not in roles and "count" not in roles
    assert roles["city"] is Role.FEATURE and dtypes["when"] is Dtype.DATETIME
    text = "\n".join(inferred.notes)
    for expected in ("'row': unique per row", "'plant': constant", "'empty': every value is missing",
                     "'city': 120 levels", "dropped as asked: ['count']"):  # fmt: skip
        assert expected in text
    assert inferred.spec.name == "my-table-2024"


@pytest.mark.parametrize(
    ("name", "values", "why"),
    [
        ("Email", ["a@b.com", "c.d@e.org"] * 5, "email addresses"),
        ("contact", ["anna@example.com", "bo@example.org"] * 5, "email addresses"),
        ("reach", ["+1 (555) 010-2030", "555-010-9999"] * 5, "phone numbers"),
        ("FirstName", ["Ann", "Bo"] * 5, "first names or surnames"),
        ("fake_last_name", [f"house{c}" for c in "abcdefghijkl"], "its name (person name) and 12 distinct"),
        ("date_of_birth", ["1990-01-01"] * 10, "its name (birth date)"),
        ("holder", ["123-45-6789", "987-65-4321"] * 5, "social security"),
        ("pan", ["4111 1111 1111 1111", "5500 0000 0000 0004"] * 5, "card numbers"),
        ("who", ["Mary Smith", "John Brown", "Linda Jones", "James Miller", "Susan Davis"] * 5
         + [f"{a} {b}" for a in ("Robert", "Patricia", "Michael")
            for b in ("Wilson", "Moore", "Taylor", "Clark", "Lewis")],
         "person names"),
    ],
)  # fmt: skip
def test_personal_data_is_recognised(name, values, why):
    assert why in (pii_reason(name, pl.Series(name, values)) or "")


def test_a_personal_name_whose_values_are_not_personal_is_kept_and_said():
    # German credit's "telephone" attribute: whether the customer has one, not the number.
    values = pl.Series("telephone", ["none", "yes, registered under the customers name"] * 20)
    reason, note = pii_check("telephone", values)
    assert reason is None and "named like personal data (phone)" in note and "kept" in note
    assert pii_check("clinic_name", pl.Series(["inpatient ward a", "clinical lab"] * 20)) == (None, None)


@pytest.mark.parametrize("name", ["product_name_length", "grade", "zip_ratio", "amount"])
def test_ordinary_columns_are_not_personal_data(name):
    assert pii_reason(name, pl.Series(name, ["A", "B", "C"] * 4)) is None


def test_pii_columns_become_pii_role_and_hints_win():
    n = 200
    frame = _table(n, full_name=[f"Person {i}" for i in range(n)], notes_field=["x"] * (n - 1) + ["y"])
    inferred = _infer(frame, pii_cols=("notes_field",))
    roles = {c.name: c.role for c in inferred.spec.columns}
    assert roles["full_name"] is Role.PII and roles["notes_field"] is Role.PII
    assert all(c.role is not Role.FEATURE for c in inferred.spec.columns if c.name in {"full_name", "notes_field"})


def test_bad_hints_name_the_flag_and_suggest_columns():
    with pytest.raises(SpecError) as info:
        infer_spec(_table(), Hints(target="Label", time_col="when", drop_cols=("label",)), "t.csv")
    text = str(info.value)
    assert "--target: no column 'Label' in the data; did you mean ['label']?" in text
    assert "--time-col: no column 'when'" in text
    with pytest.raises(SpecError, match="task"):
        make_hints(target="label", task="clustering")
    with pytest.raises(SpecError, match="binary needs two classes"):
        _infer(_table().with_columns(pl.Series("label", ["a", "b", "c", "d"] * 50)), task="binary")
    with pytest.raises(SpecError, match="regression needs a numeric target"):
        _infer(_table(), task="regression")


def test_too_few_labels_is_a_data_error():
    with pytest.raises(DataError, match="at least 30"):
        _infer(_table(20))
    with pytest.raises(DataError, match="every value is missing"):
        _infer(_table().with_columns(pl.lit(None, dtype=pl.String).alias("label")))


def test_templates_give_metrics_gates_and_cost_when_the_task_fits():
    finance = _infer(_table(), template="finance").spec
    assert finance.primary_metric == "roc_auc" and finance.gates == {"roc_auc": 0.65} and finance.cost is not None
    plain = _infer(_table()).spec
    assert plain.gates == {} and plain.cost is None and plain.split.kind == "stratified"
    frame = _table().with_columns(pl.Series("label", np.linspace(0, 9, 200)))
    regression = _infer(frame)
    assert regression.spec.task == "regression" and regression.spec.primary_metric == "r2"
    assert regression.spec.split.kind == "random" and regression.spec.gates == {}
    # A template whose gates mean nothing for the task is refused, naming the ones that fit.
    with pytest.raises(SpecError, match=r"'finance' is for binary targets .* a regression one; run it with no"):
        _infer(frame, template="finance")
    three = _table().with_columns(pl.Series("label", ["a", "b", "c", "a"] * 50))
    with pytest.raises(SpecError, match=r"'medical' is for binary .* use --template manufacturing, or no template"):
        _infer(three, template="medical")
    faults = _table().with_columns(pl.Series("label", ["normal", "leak", "clog", "normal"] * 50))
    manufacturing = _infer(faults, template="manufacturing").spec
    assert manufacturing.task == "multiclass" and manufacturing.normal_class == "normal"
    assert "false_alarm_rate" in manufacturing.metrics


def test_time_and_group_columns_choose_the_split():
    n = 200
    frame = _table(n, year=np.repeat(np.arange(2000, 2020), 10), site=np.arange(n) % 7)
    spec = _infer(frame, time_col="year", group_col="site").spec
    assert spec.split.kind == "time" and spec.time_column == "year" and spec.group_column == "site"


def test_a_small_regression_or_multiclass_table_refits_on_validation_and_says_so():
    small = _table(300)
    assert not _infer(small).spec.split.refit  # binary: keeps its calibration
    for target in ("amount", "grade"):
        inferred = _infer(small, target=target)
        assert inferred.spec.task in ("regression", "multiclass") and inferred.spec.split.refit
        assert any("refitted on train + validation (about 192 training rows" in n for n in inferred.notes)
    large = _table(80_000)  # 51,200 training rows
    inferred = _infer(large, target="amount")
    assert not inferred.spec.split.refit and not any("refitted" in n for n in inferred.notes)


def test_spec_file_reads_back_to_the_same_spec(tmp_path):
    frame = _table(200, opened=[f"2021-01-{1 + i % 28:02d}" for i in range(200)])
    data = tmp_path / "table.csv"
    frame.write_csv(data)
    from lepton.app.api import spec_from_file

    inferred = spec_from_file(data, Hints(target="label", template="medical", allow_leakage=("amount",)))
    text = render_spec(inferred.spec, inferred.notes, tmp_path, inferred.why)
    assert "path: table.csv" in text and "# What was inferred" in text and "#   - task: binary" in text
    lines = text.splitlines()  # the proposed time column is explained right above its entry
    entry = lines.index("  - {name: opened, dtype: datetime, role: time}")
    comment = lines[entry - 1]
    assert comment.startswith("  # opened: proposed as the time column") and "--time-col none" in comment
    assert inferred.spec.split.kind == "time"
    (tmp_path / "spec.yaml").write_text(text)
    assert DomainSpec.from_yaml(tmp_path / "spec.yaml") == inferred.spec


def test_slug_makes_registry_safe_names():
    assert slug("Credit Data (2016)") == "credit-data-2016"
    assert slug("2024_sales") == "t-2024_sales"
    assert slug("///") == "t"


# ---- fuzzing -------------------------------------------------------------------------------------
_column = st.one_of(
    st.lists(st.integers(-5, 5), min_size=40, max_size=40),
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=40, max_size=40),
    st.lists(st.sampled_from(["a", "b", "c", "Yes", "No", None]), min_size=40, max_size=40),
    st.lists(st.booleans(), min_size=40, max_size=40),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(columns=st.lists(_column, min_size=2, max_size=5), task=st.sampled_from([None, "binary", "regression"]))
def test_inference_gives_a_valid_spec_or_a_typed_error(columns, task):
    frame = pl.DataFrame({f"c{i}": values for i, values in enumerate(columns)}, strict=False)
    try:
        inferred = infer_spec(frame, Hints(target="c0", task=task), "fuzz.csv")
    except LeptonError:
        return
    spec = inferred.spec
    assert spec.target == "c0" and spec.feature_columns
    assert DomainSpec.model_validate(spec.model_dump(mode="json")) == spec


_messy = st.one_of(
    st.lists(st.integers(-3, 3), min_size=60, max_size=60),
    st.lists(st.one_of(st.floats(-1e3, 1e3), st.just(float("nan")), st.just(float("inf"))), min_size=60, max_size=60),
    st.lists(st.sampled_from(["a", "Yes", "No", "1", "2.5", "2020-01-01", "", None, " x ", "?", "inf"]), min_size=60,
             max_size=60),
    st.lists(st.booleans(), min_size=60, max_size=60),
)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(columns=st.lists(_messy, min_size=2, max_size=4), task=st.sampled_from([None, "binary", "regression"]))
def test_any_table_that_passes_inference_and_preparation_trains_and_scores(columns, task):
    """NaN, infinities, text numbers and dates anywhere: a typed error, or models that score."""
    from lepton.core.tables import coerce_types
    from lepton.tasks.metrics import evaluate
    from lepton.tasks.preprocess import prepare
    from lepton.tasks.train import train_model

    table = coerce_types(pl.DataFrame({f"c{i}": v for i, v in enumerate(columns)}, strict=False))
    try:
        spec = infer_spec(table, Hints(target="c0", task=task), "fuzz.csv").spec
        data = prepare(spec, table)
    except LeptonError:
        return
    for family, params in (("linear", {"C": 1.0}), ("xgboost", {"n_estimators": 5})):
        scores = train_model(spec, data, family, params).predict(data.holdout.X)
        assert np.isfinite(scores).all()
        assert evaluate(spec, data.holdout.y, scores)


def test_integer_ids_with_gaps_and_sequence_numbers_are_ids_not_features():
    n = 400
    gaps = np.cumsum(np.random.default_rng(1).integers(1, 3, n))  # 1..~600: unique, with gaps
    stamped = 1_000_000 + np.cumsum(np.random.default_rng(2).integers(1, 5000, n))  # sparse, increasing
    roles = {c.name: c.role for c in _infer(_table(n, patient=gaps, ticket=stamped)).spec.columns}
    assert roles["patient"] is Role.ID and roles["ticket"] is Role.ID
    income = np.random.default_rng(3).permutation(np.arange(n) * 997 + 20_000)  # unique, sparse, unordered
    assert {c.name: c.role for c in _infer(_table(n, income=income)).spec.columns}["income"] is Role.FEATURE


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("issued", [f"20{10 + i // 12:02d}-{1 + i % 12:02d}-01" for i in range(200)]),  # dates
        ("pan_day", [i // 2 for i in range(200)]),  # a day number
        ("sample_yr", [1995 + i // 25 for i in range(200)]),  # years
    ],
)
def test_a_column_that_orders_rows_in_time_is_proposed_and_split_on(column, values):
    frame = coerce_types(_table(200, **{column: values}))
    inferred = _infer(frame)
    assert inferred.spec.split.kind == "time" and inferred.spec.time_column == column
    assert any(n.startswith(f"time: {column!r} orders the rows in time") for n in inferred.notes)
    plain = _infer(frame, time_col="none")
    assert plain.spec.split.kind == "stratified" and plain.spec.time_column is None


def test_text_months_are_dates_and_durations_or_cycles_are_not_time():
    frame = coerce_types(_table(200, issue_month=[["Jan", "Feb", "Mar"][i % 3] + "-2018" for i in range(200)]))
    assert frame["issue_month"].dtype == pl.Datetime("us")
    assert _infer(frame).spec.time_column == "issue_month"
    ordinary = _table(200, Time=[6 * (1 + i % 12) for i in range(200)], day_of_week=[i % 7 for i in range(200)])
    assert _infer(ordinary).spec.time_column is None  # a loan term in months, a weekday
