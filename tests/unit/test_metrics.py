import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lepton.domains import get_spec
from lepton.domains.spec import CostModel
from lepton.tasks.metrics import EvalContext, calibration_error, detection_delay, evaluate, expected_cost
from lepton.tasks.optimise import cost_threshold
from lepton.tasks.promotion import gate_failures


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "cost", [CostModel(false_negative=10, false_positive=1), CostModel(false_negative=1, false_positive=3)]
)
def test_cost_threshold_is_the_brute_force_minimum(seed, cost):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.2, 200), 0, 1), 2)  # ties on purpose
    t = cost_threshold(y, p, cost)
    best = min(expected_cost(y, p >= c, cost) for c in np.concatenate([np.unique(p), [2.0]]))
    assert expected_cost(y, p >= t, cost) == pytest.approx(best)


def test_binary_metrics_match_definitions():
    spec = get_spec("finance")
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    m = evaluate(spec, y, p, EvalContext(threshold=0.5))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["gini"] == pytest.approx(2 * m["roc_auc"] - 1)
    # threshold 0.5 flags rows 3 and 5: one missed positive (row 2) costs 10, no false positive
    assert m["expected_cost"] == pytest.approx(10 / 6)


def test_calibration_error_is_zero_when_rates_match_and_large_when_not():
    y = np.array([0, 1] * 50)
    assert calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert calibration_error(y, np.full(100, 0.95)) == pytest.approx(0.45)


def test_detection_delay_counts_samples_from_onset_to_first_alarm():
    y = np.array([0, 0, 3, 3, 3, 0, 5, 5])
    pred = np.array([0, 0, 0, 0, 3, 0, 5, 5])
    groups = np.array([1, 1, 1, 1, 1, 2, 2, 2])
    order = np.array([1, 2, 3, 4, 5, 1, 2, 3])
    assert detection_delay(y, pred, groups, order) == pytest.approx((2 + 0) / 2)


def test_manufacturing_metrics_separate_false_alarms_from_detection():
    spec = get_spec("manufacturing")
    y = np.array([0, 0, 1, 1])
    proba = np.eye(3)[[1, 0, 1, 0]]  # one false alarm, one detected fault
    m = evaluate(spec, y, proba, EvalContext(groups=np.array([1, 1, 1, 1]), order=np.arange(4)))
    assert m["false_alarm_rate"] == 0.5
    assert m["fault_detection_rate"] == 0.5
    assert m["detection_delay"] == 0.0


def test_gates_name_each_failure_with_numbers():
    spec = get_spec("medical")  # gates: roc_auc >= 0.75, calibration_error <= 0.1, sensitivity >= 0.75
    good = {"roc_auc": 0.84, "calibration_error": 0.02, "sensitivity": 0.8}
    assert gate_failures(spec, good, {"roc_auc": 0.84}) == []
    bad = {"roc_auc": 0.70, "calibration_error": 0.3, "sensitivity": 0.6}
    failures = gate_failures(spec, bad, {"roc_auc": 0.72})
    assert any("roc_auc >= 0.75: got 0.7000" in f for f in failures)
    assert any("calibration_error <= 0.1" in f for f in failures)
    assert any("sensitivity >= 0.75: got 0.6000" in f for f in failures)
    assert any("worse than the baseline" in f for f in failures)


@pytest.mark.parametrize("metric", ["f1_macro", "accuracy", "balanced_accuracy"])
def test_the_primary_score_shortcut_equals_the_full_evaluation(metric):
    from lepton.tasks.metrics import primary_score

    spec = get_spec("manufacturing").model_copy(update={"primary_metric": metric})
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 400)
    proba = rng.dirichlet(np.ones(6), 400)  # a class never seen in y, too
    proba[np.arange(400), y] += 0.3
    assert primary_score(spec, y, proba) == evaluate(spec, y, proba, EvalContext())[metric]


def test_a_metric_the_batch_cannot_define_is_shown_as_such_and_no_warning_reaches_the_console(capsys):
    from lepton.app.cli import _print_performance
    from lepton.tasks.metrics import balanced_accuracy

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's "y_pred contains classes not in y_true" would raise
        assert balanced_accuracy(np.array([1, 1, 2]), np.array([1, 0, 2])) == pytest.approx(0.75)
    _print_performance({"labelled_rows": 3, "f1_macro": 0.5, "false_alarm_rate": float("nan")},
                       {"f1_macro": 0.75, "false_alarm_rate": 0.07})  # fmt: skip
    shown = capsys.readouterr().err
    assert "on the 3 labelled rows" in shown and "0.5000  (0.7500, -0.2500)" in shown
    assert "false_alarm_rate" in shown and "not defined on these rows" in shown and "nan" not in shown
