"""Decision thresholds meet their constraints on rows they were not chosen on."""

import numpy as np
from scipy import stats

from lepton.tasks.optimise import cost_threshold, sensitivity_threshold


def _draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 1.5 * y - 1.2)))
    return y, p


def test_the_sensitivity_target_holds_on_new_rows_at_the_best_specificity_the_bound_allows():
    y, p = _draw(2000, 0)
    target = 0.8
    threshold = sensitivity_threshold(y, p, target)
    flagged = p[y == 1] >= threshold
    n = int((y == 1).sum())
    # on validation: the 90% lower bound of the sensitivity meets the target ...
    assert stats.beta.ppf(0.1, flagged.sum(), n - flagged.sum() + 1) >= target
    # ... and the next higher threshold (one positive fewer flagged) would not
    higher = np.sort(p[y == 1])[np.searchsorted(np.sort(p[y == 1]), threshold, side="right")]
    fewer = (p[y == 1] >= higher).sum()
    assert stats.beta.ppf(0.1, fewer, n - fewer + 1) < target
    # on fresh draws of the same population the sensitivity keeps the target (mostly, by design)
    held = [((p_new >= threshold)[y_new == 1]).mean() for y_new, p_new in (_draw(20_000, s) for s in range(1, 11))]
    assert min(held) >= target - 0.01 and np.mean(held) >= target


def test_no_positives_or_an_unreachable_target():
    assert sensitivity_threshold(np.zeros(10, int), np.linspace(0, 1, 10), 0.8) == 0.5
    y, p = _draw(30, 1)  # few positives: no threshold is sure enough, so every positive is flagged
    assert sensitivity_threshold(y, p, 0.99) == p[y == 1].min()


def test_the_cost_threshold_minimises_cost_on_new_rows_better_than_the_default():
    from lepton.domains.spec import CostModel

    cost = CostModel(false_negative=5.0, false_positive=1.0)
    y, p = _draw(5000, 2)
    threshold = cost_threshold(y, p, cost)
    y_new, p_new = _draw(50_000, 3)

    def total(t: float) -> float:
        flagged = p_new >= t
        return float(5.0 * (~flagged & (y_new == 1)).sum() + 1.0 * (flagged & (y_new == 0)).sum())

    assert total(threshold) < total(0.5)
    assert total(threshold) <= min(total(t) for t in np.linspace(0.05, 0.95, 19)) * 1.02


def _normal_scores(n: int, seed: int) -> np.ndarray:
    """Fault scores (1 - P(normal)) of normal rows: mostly low, a tail of confusable rows."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.beta(1.2, 6.0, n) + (rng.random(n) < 0.1) * rng.random(n) * 0.5, 0, 1)


def test_the_false_alarm_budget_holds_on_new_normal_rows_at_the_lowest_threshold_the_bound_allows():
    from lepton.tasks.optimise import alarm_threshold

    budget = 0.05
    scores = _normal_scores(1500, 0)
    rule = alarm_threshold(scores, budget)
    alarms = int((scores >= rule.threshold).sum())
    assert rule.alarms == alarms and rule.normals == 1500
    # on these rows: the 90% upper bound of the false-alarm rate is within the budget ...
    assert stats.beta.ppf(0.9, alarms + 1, 1500 - alarms) <= budget and rule.upper <= budget
    # ... and one more alarm (the next lower threshold) would not be
    assert stats.beta.ppf(0.9, alarms + 2, 1500 - alarms - 1) > budget
    # on fresh normal rows of the same process the rate stays within the budget
    held = [float((_normal_scores(20_000, s) >= rule.threshold).mean()) for s in range(1, 11)]
    assert max(held) <= budget
    assert "(90% bound), budget 0.05" in rule.describe()


def test_too_few_normal_rows_raise_no_alarm_on_them_and_say_so():
    from lepton.tasks.optimise import alarm_threshold

    scores = _normal_scores(30, 1)  # even no alarm in 30 rows cannot show a 5% rate (bound 0.074)
    rule = alarm_threshold(scores, 0.05)
    assert rule.alarms == 0 and rule.threshold > scores.max() and rule.upper > 0.05
    assert "cannot show" in rule.describe()


def test_the_alarm_rule_decides_normal_unless_the_fault_probability_reaches_the_threshold():
    from lepton.core.scoring import alarm_classes

    proba = np.array(
        [
            [0.40, 0.35, 0.25],  # normal most probable: no alarm under either rule
            [0.30, 0.50, 0.20],  # arg-max fault 1; 1 - P(normal) = 0.70
            [0.10, 0.20, 0.70],  # a clear fault 2; 1 - P(normal) = 0.90
            [0.25, 0.40, 0.35],  # confusable: 1 - P(normal) = 0.75
        ]
    )
    assert alarm_classes(proba).tolist() == [0, 1, 2, 1]
    assert alarm_classes(proba, normal=0, threshold=0.8).tolist() == [0, 0, 2, 0]
    assert alarm_classes(proba, normal=0, threshold=0.7).tolist() == [0, 1, 2, 1]
    assert alarm_classes(proba, normal=2, threshold=0.7).tolist() == [0, 1, 2, 2]  # normal need not be 0
    assert alarm_classes(proba, normal=2, threshold=0.8).tolist() == [2, 1, 2, 2]


def test_autocorrelated_normal_rows_count_as_fewer_and_move_the_threshold_up():
    from lepton.tasks.optimise import alarm_threshold, effective_rows

    rng = np.random.default_rng(3)
    independent = _normal_scores(2000, 4)
    assert effective_rows(independent, np.zeros(2000), np.arange(2000)) > 1500  # r near 0: about n
    # a slow series (a smoothed signal): neighbours repeat each other
    slow = np.clip(np.convolve(rng.normal(0.3, 0.15, 2060), np.ones(60) / 60, mode="valid")[:2000], 0, 1)
    worth = effective_rows(slow, np.zeros(2000), np.arange(2000))
    assert worth < 100
    assert effective_rows(slow) == 2000  # without group and time, rows are taken as independent
    naive, honest = alarm_threshold(slow, 0.05), alarm_threshold(slow, 0.05, effective=worth)
    assert honest.threshold > naive.threshold and honest.alarms < naive.alarms
    assert honest.upper <= 0.05 or honest.alarms == 0
