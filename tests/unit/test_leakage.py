"""The leakage sentinel: near-perfect single features stop the run; honest ones do not."""

import numpy as np
import polars as pl
import pytest

from domains.infer import Hints, infer_spec
from domains.spec import LeakageSpec
from lepton.errors import LeakageError
from tasks.leakage import check_leakage, feature_scores
from tasks.preprocess import class_labels, prepare

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
    scores = check_leakage(frame, spec, class_labels(frame["label"], spec))
    assert set(scores) == {"honest", "noise"}
    assert all(value < 0.99 for _, value in scores.values())


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
    assert "status" in check_leakage(frame, allowed, classes)


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
