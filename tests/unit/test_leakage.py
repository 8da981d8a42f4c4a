"""The leakage sentinel: near-perfect single features stop the run; honest ones do not."""

import numpy as np
import polars as pl
import pytest

from lepton.domains.infer import Hints, infer_spec
from lepton.domains.spec import LeakageSpec, Role
from lepton.errors import LeakageError
from lepton.tasks.labels import class_labels
from lepton.tasks.leakage import check_leakage, feature_scores
from lepton.tasks.preprocess import prepare

N = 600


def _frame(task: str, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    honest = rng.normal(size=N)
    if task == "regression":
        y = 3 * honest + rng.normal(size=N)
        return pl.DataFrame({"honest": honest, "noise": rng.normal(size=N), "label": y})
    if task == "binary":
        y = np.where(honest + rng.normal(size=N) > 0.5, "bad", "good")
    else:
        y = rng.choice(["a", "b", "c"], N)
    return pl.DataFrame({"honest": honest, "noise": rng.normal(size=N), "label": y})


def _spec(frame, **hints):
    return infer_spec(frame, Hints(target="label", **hints), "t.csv").spec


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_honest_features_pass(task):
    frame = _frame(task)
    spec = _spec(frame)
    scores = check_leakage(frame, spec, class_labels(frame["label"], spec)).scores
    assert set(scores) == {"honest", "noise"}
    assert all(value < 0.99 for _, value in scores.values())
    assert check_leakage(frame, spec, class_labels(frame["label"], spec)).notes == ()


@pytest.mark.parametrize(
    ("task", "leak", "metric"),
    [
        # A status recorded after the outcome: a code that is the label in disguise.
        ("binary", lambda f: pl.when(pl.col("label") == "bad").then(pl.lit("charged_off")).otherwise(pl.lit("paid")),
         "roc_auc"),
        # An amount computed from the outcome, non-monotone so only the tree sees it.
        ("binary", lambda f: pl.when(pl.col("label") == "bad").then(pl.lit(5.0)).otherwise(pl.lit(0.0))
         + (pl.int_range(pl.len()) % 2) * 10, "roc_auc"),
        ("multiclass", lambda f: pl.col("label").replace({"a": "1", "b": "2", "c": "3"}).cast(pl.Int64),
         "balanced_accuracy"),
        ("regression", lambda f: pl.col("label") * 2.0 + 1.0, "r2"),
    ],
)  # fmt: skip
def test_a_feature_that_is_the_answer_stops_the_run_with_its_name(task, leak, metric):
    frame = _frame(task)
    frame = frame.with_columns(leak(frame).alias("status"))
    spec = _spec(frame)
    classes = class_labels(frame["label"], spec)
    with pytest.raises(LeakageError) as info:
        check_leakage(frame, spec, classes)
    assert list(info.value.suspects) == ["status"]
    assert info.value.suspects["status"][0] == metric
    assert "'status'" in str(info.value) and "--allow-leakage status" in str(info.value)
    allowed = spec.model_copy(update={"leakage": LeakageSpec(allow=("status",))})
    assert "status" in check_leakage(frame, allowed, classes).scores


def test_the_sentinel_runs_inside_prepare_on_the_training_split():
    frame = _frame("binary")
    frame = frame.with_columns(pl.col("label").alias("copy"))
    spec = _spec(frame)
    with pytest.raises(LeakageError, match="'copy'"):
        prepare(spec, frame)
    prepared = prepare(_spec(frame, allow_leakage=("copy",)), frame)
    assert prepared.train.rows > 0


def test_scores_use_a_sample_of_large_training_sets():
    frame = _frame("binary")
    spec = _spec(frame)
    small = feature_scores(frame, spec, class_labels(frame["label"], spec), max_rows=200)
    assert set(small) == {"honest", "noise"} and 0.5 < small["honest"][1] < 0.99


def _honest_table(n: int = 1500, seed: int = 1) -> tuple[pl.DataFrame, np.ndarray]:
    """Five honest columns that together predict the outcome well (as a real table's would)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    logit = X @ np.array([0.9, 0.7, 0.6, 0.5, 0.4])
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pl.DataFrame({f"x{i}": X[:, i] for i in range(5)}), y


def test_a_post_outcome_duration_is_dominant_and_named_with_its_evidence():
    # Time until the event: short for the rows that had it, long for the others, with overlap.
    frame, y = _honest_table()
    rng = np.random.default_rng(2)
    duration = np.where(y, rng.gamma(2.0, 300, len(y)), 1800 + rng.gamma(2.0, 600, len(y)))
    duration = np.where(rng.random(len(y)) < 0.25, rng.uniform(0, 4000, len(y)), duration)  # censored rows
    frame = frame.with_columns(pl.Series("futime", duration), pl.Series("label", np.where(y, "dead", "alive")))
    spec = _spec(frame)
    with pytest.raises(LeakageError) as info:
        check_leakage(frame, spec, class_labels(frame["label"], spec))
    (found,) = info.value.found
    assert found.column == "futime" and found.rule == "dominant"
    assert "the other 5 column(s) together" in found.evidence and "the table loses" in found.evidence
    assert "--allow-leakage futime" in str(info.value) and "--drop-cols futime" in str(info.value)


def test_one_strong_honest_column_among_noise_is_not_a_suspect():
    # ISLR's Default: the card balance alone is the signal; the rest is noise. Not a leak.
    rng = np.random.default_rng(3)
    balance = rng.normal(size=2000)
    y = np.where(balance * 2.5 + rng.normal(size=2000) > 2, "Yes", "No")
    frame = pl.DataFrame({"balance": balance, "income": rng.normal(size=2000), "label": y})
    spec = _spec(frame)
    assert "balance" in check_leakage(frame, spec, class_labels(frame["label"], spec)).scores


def test_every_column_that_re_expresses_the_target_is_named_at_once():
    # An interest rate as the target: its grade and sub-grade re-express it.
    frame, _ = _honest_table(2000)
    rate = 6 + 4 * frame["x0"].to_numpy() ** 2 + frame["x1"].to_numpy()
    sub = np.digitize(rate, np.quantile(rate, np.linspace(0, 1, 36)[1:-1]))
    frame = frame.with_columns(
        pl.Series("label", rate),
        pl.Series("sub_grade", [f"{'ABCDEFG'[min(s // 5, 6)]}{s % 5 + 1}" for s in sub]),
        pl.Series("grade", ["ABCDEFG"[min(s // 5, 6)] for s in sub]),
    )
    spec = _spec(frame)
    with pytest.raises(LeakageError) as info:
        check_leakage(frame, spec, [])
    assert set(info.value.suspects) == {"sub_grade", "grade"}, str(info.value)
    rules = {s.column: s.rule for s in info.value.found}
    assert rules["grade"] == "re-expresses"


def test_a_test_result_that_is_one_outcome_is_caught_for_a_multiclass_target():
    # A COVID Ct value: 45 ("not detected") for negatives and invalid tests, below 40 for positives.
    rng = np.random.default_rng(4)
    result = rng.choice(["negative", "positive", "invalid"], 3000, p=[0.8, 0.1, 0.1])
    ct = np.where(result == "positive", rng.uniform(15, 40, 3000), 45.0)
    frame = pl.DataFrame({"age": rng.uniform(0, 90, 3000), "ct_result": ct, "label": result})
    spec = _spec(frame)
    with pytest.raises(LeakageError, match=r"'ct_result' \(alone\): alone it tells class 'positive' from the rest"):
        check_leakage(frame, spec, class_labels(frame["label"], spec))


def test_a_spec_can_say_one_measurement_isolating_one_class_is_the_signal():
    # A process sensor that shows one fault (TEP's A feed flow under fault 6): with the one-class
    # rule off it passes, while a column that gives every class away still stops the run.
    rng = np.random.default_rng(6)
    fault = rng.choice(["normal", "feed_loss", "valve"], 3000, p=[0.6, 0.2, 0.2])
    feed = np.where(fault == "feed_loss", 0.0, rng.normal(0.25, 0.03, 3000))
    frame = pl.DataFrame({"pressure": rng.normal(size=3000), "a_feed": feed, "label": fault})
    spec = _spec(frame)
    classes = class_labels(frame["label"], spec)
    with pytest.raises(LeakageError, match="'a_feed' \\(alone\\): alone it tells class 'feed_loss'"):
        check_leakage(frame, spec, classes)
    process = spec.model_copy(update={"leakage": LeakageSpec(one_class=False)})
    assert "a_feed" in check_leakage(frame, process, classes).scores
    copied = frame.with_columns(pl.col("label").alias("code"))
    with pytest.raises(LeakageError, match="'code'"):
        check_leakage(copied, _spec(copied).model_copy(update={"leakage": LeakageSpec(one_class=False)}), classes)


def test_the_builtin_manufacturing_domain_keeps_every_rule_but_the_one_class_rule():
    from lepton.domains import get_spec

    leakage = get_spec("manufacturing").leakage
    assert leakage.one_class is False and leakage.threshold == LeakageSpec().threshold and leakage.allow == ()


def test_a_recipe_column_the_sentinel_names_can_be_allowed():
    from lepton.app.api import allow_leakage
    from lepton.domains import get_spec
    from lepton.errors import SpecError

    spec = get_spec("manufacturing")
    allowed = allow_leakage(spec, ("xmeas_1_mean10", "xmv_3"))
    assert allowed.leakage.allow == ("xmeas_1_mean10", "xmv_3") and allowed.leakage.one_class is False
    with pytest.raises(SpecError, match="not columns"):
        allow_leakage(spec, ("xmeas_99",))


def test_an_integer_column_unique_to_every_row_is_an_identifier_in_a_spec():
    frame, y = _honest_table(800)
    order = np.argsort(y, kind="stable")  # numbered after sorting by the outcome: it leaks the order
    ids = np.empty(800, dtype=np.int64)
    ids[order] = np.cumsum(np.random.default_rng(5).integers(1, 3, 800))
    frame = frame.with_columns(pl.Series("label", np.where(y, "bad", "good")), pl.Series("case", ids))
    spec = _spec(frame, id_cols=())
    spec = spec.model_copy(
        update={
            "columns": tuple(
                c.model_copy(update={"role": Role.FEATURE}) if c.name == "case" else c for c in spec.columns
            )
        }
    )
    with pytest.raises(LeakageError, match=r"'case' \(identifier\): whole numbers unique to each"):
        check_leakage(frame, spec, class_labels(frame["label"], spec))


def test_a_target_re_expressed_across_columns_is_named_for_review_not_stopped():
    # An interest rate as the target: the monthly instalment is fixed by the amount, term and rate,
    # so the three together give the rate back; no one of them does.
    rng = np.random.default_rng(6)
    n = 3000
    honest = rng.normal(size=(n, 6))
    rate = 12 + 1.5 * honest[:, 0] + honest[:, 1] + rng.normal(0, 2.5, n)
    amount, term = rng.choice([5_000, 10_000, 15_000, 20_000, 25_000], n), rng.choice([36, 60], n)
    monthly = rate / 1200
    installment = amount * monthly / (1 - (1 + monthly) ** -term)
    frame = pl.DataFrame(
        {**{f"x{i}": honest[:, i] for i in range(6)}, "loan_amount": amount, "term": term,
         "installment": installment, "label": rate}
    )  # fmt: skip
    found = check_leakage(frame, _spec(frame), [])
    assert len(found.notes) == 1 and found.notes[0].startswith("review: the model leans on"), found.notes
    named = found.notes[0].split(":")[1]
    assert "'installment'" in named, found.notes
    honest_only = frame.drop("installment")
    assert check_leakage(honest_only, _spec(honest_only), []).notes == ()
