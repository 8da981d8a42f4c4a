"""Decision thresholds meet their constraints on rows they were not chosen on."""

import numpy as np
from scipy import stats

from tasks.optimise import cost_threshold, sensitivity_threshold


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
    from domains.spec import CostModel

    cost = CostModel(false_negative=5.0, false_positive=1.0)
    y, p = _draw(5000, 2)
    threshold = cost_threshold(y, p, cost)
    y_new, p_new = _draw(50_000, 3)

    def total(t: float) -> float:
        flagged = p_new >= t
        return float(5.0 * (~flagged & (y_new == 1)).sum() + 1.0 * (flagged & (y_new == 0)).sum())

    assert total(threshold) < total(0.5)
    assert total(threshold) <= min(total(t) for t in np.linspace(0.05, 0.95, 19)) * 1.02
