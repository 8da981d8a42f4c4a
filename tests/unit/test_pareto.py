"""The Pareto choice: real models timed, the front, the latency budget, the noise test, pruning."""

import numpy as np
import pytest

from lepton.domains import get_spec
from lepton.errors import LatencyBudgetError
from lepton.tasks.families.linear import fit_linear
from lepton.tasks.families.trees import PRUNE_EVERY, Pruning, fit_xgboost
from lepton.tasks.optimise import as_good_as
from lepton.tasks.pareto import ServingCost, choose, pareto_front, serving_cost
from lepton.tasks.train import DEFAULT_TREE_PARAMS, TrainedModel, train_model

FAMILIES = ["linear", "xgboost", "mlp"]


def _model(family, score):
    return TrainedModel(family, {}, None, 3, "binary", score, 0.0)


def _cost(ms, size=1000):
    return ServingCost(latency_ms=ms, batch_ms=ms * 10, size_bytes=size)


def test_the_front_holds_exactly_the_points_nothing_beats_on_every_objective():
    points = [
        (0.80, 0.02, 0.5, 1_000),  # cheapest: on the front
        (0.85, 0.30, 1.0, 60_000),  # best: on the front
        (0.84, 0.40, 2.0, 90_000),  # worse and dearer than the best: off
        (0.80, 0.02, 0.5, 2_000),  # as good and as fast as the first, but bigger: off
        (0.83, 0.10, 0.8, 50_000),  # between the two: on
    ]
    assert pareto_front(points) == [True, True, False, False, True]


def test_the_simplest_model_as_good_as_the_best_is_chosen_within_the_budget():
    spec = get_spec("finance")  # budget 10 ms, gate roc_auc 0.65
    pool = [_model("linear", 0.70), _model("xgboost", 0.76), _model("xgboost", 0.755), _model("mlp", 0.757)]
    costs = [_cost(0.02, 900), _cost(0.9, 60_000), _cost(0.3, 20_000), _cost(0.05, 8_000)]
    choice = choose(spec, pool, costs, [False, True, True, True], FAMILIES)
    assert choice.index == 2 and "simplest of 3" in choice.reason  # trees before an MLP, the smaller of two
    # A budget the MLP and the tree models exceed: the only one left that is as good.
    tight = spec.model_copy(update={"latency_budget_ms": 0.04})
    choice = choose(tight, pool, costs, [False, True, True, True], FAMILIES)
    assert choice.index == 0 and "no model within 0.04 ms is as good as the best" in choice.reason
    assert choice.eligible == (False, False, False, False)
    # The untuned baseline, as good as the best, is kept.
    assert choose(spec, pool, costs, [True, True, True, True], FAMILIES).index == 0


def test_the_choice_does_not_move_with_measured_latency():
    """The same candidates timed on a quiet and on a loaded machine (each time stretched by its own
    factor, up to 3x, as load does) give the same choice: only the budget reads a time."""
    spec = get_spec("finance")
    pool = [_model("linear", 0.70), _model("xgboost", 0.76), _model("xgboost", 0.758), _model("xgboost", 0.759)]
    quiet = [_cost(0.05, 900), _cost(0.40, 90_000), _cost(0.30, 30_000), _cost(0.35, 45_000)]
    rng = np.random.default_rng(0)
    picks = set()
    for _ in range(50):
        loaded = [_cost(c.latency_ms * rng.uniform(1, 3), c.size_bytes) for c in quiet]
        picks.add(choose(spec, pool, loaded, [False, True, True, True], FAMILIES).index)
    assert picks == {2}  # the smallest forest of the three as good as the best


def test_a_budget_nothing_meets_is_a_clear_error():
    spec = get_spec("medical").model_copy(update={"latency_budget_ms": 0.001})
    pool = [_model("linear", 0.80), _model("xgboost", 0.81)]
    with pytest.raises(LatencyBudgetError, match=r"latency budget of 0\.001 ms .* a linear model, takes 0\.020 ms"):
        choose(spec, pool, [_cost(0.02), _cost(0.4)], [True, True], FAMILIES)


def test_the_gate_on_the_primary_metric_bars_a_model_the_noise_test_would_pass():
    spec = get_spec("finance").model_copy(update={"gates": {"roc_auc": 0.75}})
    pool = [_model("linear", 0.74), _model("xgboost", 0.76)]
    choice = choose(spec, pool, [_cost(0.02), _cost(0.5)], [True, True], FAMILIES)
    assert choice.index == 1


def _synthetic(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 12))
    y = (X[:, 0] + np.sin(3 * X[:, 1]) * X[:, 2] + rng.normal(scale=0.7, size=n) > 0).astype(int)
    return X, y


def test_serving_cost_times_real_models_and_sizes_their_stored_payloads():
    X, y = _synthetic()
    linear = TrainedModel("linear", {}, fit_linear(X[:2000], y[:2000], "binary"), 12, "binary", 0.0, 0.0)
    payload, _, _ = fit_xgboost(X[:2000], y[:2000], X[2000:], y[2000:], "binary", 2, DEFAULT_TREE_PARAMS)
    tree = TrainedModel("xgboost", {}, payload, 12, "binary", 0.0, 0.0)
    lin, tre = serving_cost(linear, X[2000:]), serving_cost(tree, X[2000:])
    assert tre.size_bytes == len(payload) and 0 < lin.size_bytes < tre.size_bytes
    assert 0 < lin.latency_ms < tre.latency_ms  # a dot product against a forest of trees
    assert lin.batch_ms > 0 and tre.batch_ms > 0


def test_the_paired_test_tells_a_model_within_the_noise_from_a_worse_one():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 4000)
    signal = y + rng.normal(scale=1.2, size=4000)
    spec = get_spec("finance")
    near = signal + rng.normal(scale=0.05, size=4000)  # the same model, a little jitter
    worse = y + rng.normal(scale=2.5, size=4000)
    assert as_good_as(spec, y, signal, near)[0]
    same, gap, error = as_good_as(spec, y, signal, worse)
    assert not same and gap > error > 0


def test_a_tree_trial_behind_the_median_of_earlier_ones_is_pruned_at_the_warmup():
    from lepton.tasks.preprocess import load_domain_data, prepare

    spec = get_spec("medical")
    data = prepare(spec, *load_domain_data(spec))
    slow = {"max_depth": 2, "learning_rate": 0.001, "n_estimators": 300}  # hardly learns in 100 rounds
    good = [
        train_model(spec, data, "xgboost", {"learning_rate": 0.1, "n_estimators": 300, "max_depth": d})
        for d in (3, 4, 5, 6)
    ]
    assert all(m.curve and not m.pruned for m in good)
    assert all(np.all(np.diff(m.curve) <= 0) for m in good)  # the best loss so far never rises
    pruning = Pruning.from_curves([m.curve for m in good])
    assert Pruning.from_curves([m.curve for m in good[:3]]) is None  # too few to judge by
    pruned = train_model(spec, data, "xgboost", slow, pruning=pruning)
    assert pruned.pruned and len(pruned.curve) == pruning.warmup // PRUNE_EVERY
    assert pruned.best_iteration < pruning.warmup
    unpruned = train_model(spec, data, "xgboost", slow)
    assert not unpruned.pruned and len(unpruned.curve) == 300 // PRUNE_EVERY
