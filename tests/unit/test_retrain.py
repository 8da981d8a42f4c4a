"""The retrain decision: drift that does not move the estimated performance does not retrain
under ``on_estimated_loss``, a shift that costs performance does, priced against a retrain's
measured cost; the other policies decide as their names say."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lepton.domains import get_spec
from lepton.tasks.estimate import estimate
from lepton.tasks.metrics import expected_cost
from lepton.tasks.retrain import RetrainHistory, Traffic, decide

FINANCE = get_spec("finance")  # binary, ROC AUC, a cost model in USD; on_estimated_loss
THRESHOLD = 0.2


def _rows(seed: int, rows: int, centre: float, spread: float):
    """A calibrated model's probabilities and labels drawn from them; the shift moves the
    inputs only (covariate shift)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(centre, spread, rows)
    p = 1 / (1 + np.exp(-(2.0 * x - 1.0)))
    return p, (rng.random(rows) < p).astype(int)


def _holdout() -> dict[str, float]:
    p, y = _rows(0, 4_000, 0.0, 1.0)
    return {"roc_auc": roc_auc_score(y, p), "expected_cost": expected_cost(y, p >= THRESHOLD, FINANCE.cost)}


HISTORY = RetrainHistory(costs_usd=(0.004, 0.006, 0.005), promoted=2, runs=3)
TRAFFIC = Traffic(1_000.0, "the prediction log's last 7 days")


def _at_training(spec):
    """The same estimate on the holdout's own probabilities (what the reference sketch keeps)."""
    return estimate(spec, _rows(0, 4_000, 0.0, 1.0)[0], THRESHOLD, "sigmoid", seed=0)


def _decide(spec, p, *, detected=True, performance=None, history=HISTORY, drifted=("annual_inc",)):
    return decide(
        spec,
        key="abc-v1",
        detected=detected,
        drifted=list(drifted),
        estimated=estimate(spec, p, THRESHOLD, "sigmoid", seed=1),
        holdout=_holdout(),
        performance=performance or {},
        history=history,
        traffic=TRAFFIC,
        at_training=_at_training(spec),
    )


def test_a_shift_that_does_not_hurt_is_reported_and_not_retrained():
    p, _ = _rows(1, 3_000, 0.5, 1.0)  # the inputs moved; how labels follow them did not
    decision = _decide(FINANCE, p)
    assert not decision.recommended and decision.policy == "on_estimated_loss"
    assert "does not hurt" in decision.reason and "annual_inc" in decision.reason
    assert decision.key == "abc-v1"
    # the same batch under on_drift retrains: the policy, not the batch, made the difference
    assert _decide(FINANCE.model_copy(update={"retrain": "on_drift"}), p).recommended


def test_a_shift_that_hurts_is_priced_and_retrained():
    p, y = _rows(2, 3_000, 0.0, 0.35)  # the rows bunch where the model cannot tell them apart
    assert roc_auc_score(y, p) < _holdout()["roc_auc"] - 0.1  # it does hurt, by the labels
    decision = _decide(FINANCE, p, detected=False, drifted=())
    assert decision.recommended, decision.reason
    assert decision.decisions == 1_000 * FINANCE.retrain_horizon_days
    # the loss: what the champion saves a decision over deciding without it, times the share of
    # its skill (Gini) the fall took, over the horizon's decisions, in USD
    before, after = _at_training(FINANCE), estimate(FINANCE, p, THRESHOLD, "sigmoid", seed=1)
    worth = before.no_skill_cost - before.expected_cost
    lost = 1 - (2 * after.value - 1) / (2 * before.value - 1)
    assert worth > 0 and 0 < lost < 1
    assert decision.expected_loss == pytest.approx(worth * lost * decision.decisions)
    assert decision.expected_loss_usd == pytest.approx(decision.expected_loss * FINANCE.cost.usd_per_unit)
    assert decision.retrain_cost_usd == 0.005 and decision.chance == pytest.approx(3 / 5)
    assert "exceeds a retrain's $0.0050" in decision.reason
    # a retrain that costs more than the loss it may recover is not worth it
    dear = RetrainHistory(costs_usd=(decision.expected_loss_usd,), promoted=0, runs=1)
    declined = _decide(FINANCE, p, history=dear)
    assert not declined.recommended and "does not exceed" in declined.reason


def test_without_a_usd_rate_or_cost_model_the_estimated_fall_decides():
    p, _ = _rows(2, 3_000, 0.0, 0.35)
    unpriced = FINANCE.model_copy(update={"cost": FINANCE.cost.model_copy(update={"usd_per_unit": None})})
    decision = _decide(unpriced, p)
    assert decision.recommended and decision.expected_loss_usd is None and "usd_per_unit" in decision.reason
    no_cost = FINANCE.model_copy(update={"cost": None})
    assert "no cost model" in _decide(no_cost, p).reason and _decide(no_cost, p).recommended


def test_on_label_performance_waits_for_labels_and_follows_them():
    spec = FINANCE.model_copy(update={"retrain": "on_label_performance"})
    p, y = _rows(2, 3_000, 0.0, 0.35)
    waiting = _decide(spec, p)
    assert not waiting.recommended and "waits for them" in waiting.reason
    assert _decide(spec, p, performance={"roc_auc": roc_auc_score(y, p)}).recommended
    q, z = _rows(3, 3_000, 0.0, 1.0)
    assert not _decide(spec, q, performance={"roc_auc": roc_auc_score(z, q)}).recommended


def test_without_an_estimate_drift_decides_and_says_so():
    decision = decide(
        FINANCE, key="k", detected=True, drifted=["x"], estimated=None, holdout=_holdout(),
        performance={}, history=HISTORY, traffic=TRAFFIC,
    )  # fmt: skip
    assert decision.recommended and "no estimate without labels" in decision.reason


def test_a_threshold_that_costs_more_than_deciding_without_the_model_leaves_the_fall_to_decide():
    p, _ = _rows(2, 3_000, 0.0, 0.35)
    cut = 0.7  # far above finance's cost-optimal 1/11 (as a sensitivity target may put it)
    before = estimate(FINANCE, _rows(0, 4_000, 0.0, 1.0)[0], cut, "sigmoid", seed=0)
    assert before.expected_cost > before.no_skill_cost
    decision = decide(
        FINANCE, key="k", detected=False, drifted=[], estimated=estimate(FINANCE, p, cut, "sigmoid", seed=1),
        holdout=_holdout(), performance={}, history=HISTORY, traffic=TRAFFIC, at_training=before,
    )  # fmt: skip
    assert decision.recommended and "cannot price the fall" in decision.reason and decision.expected_loss_usd is None
