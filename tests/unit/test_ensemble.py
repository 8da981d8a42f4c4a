"""Greedy ensemble selection (issue 22): an ensemble of models that err differently beats each of
them and is chosen; one that adds nothing is not; its cross-fitted validation score never comes
from weights that saw the row; it is stored in its members' safe formats and scores and explains
a row through the one inference path."""

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest

from lepton.core.scoring import ENSEMBLE, BundleMeta, Scorer, encode, model_files, write_bundle
from lepton.domains.spec import DomainSpec
from lepton.tasks import ensemble
from lepton.tasks.families.linear import fit_linear
from lepton.tasks.families.trees import fit_xgboost
from lepton.tasks.metrics import primary_score
from lepton.tasks.optimise import _choose, measured, refit_with_validation
from lepton.tasks.preprocess import Part, PreparedData
from lepton.tasks.stored import _read_model, _write_model
from lepton.tasks.train import TrainedModel, train_model


def _spec(group: bool = False) -> DomainSpec:
    columns = [{"name": "x0", "dtype": "float"}, {"name": "x1", "dtype": "float"}]
    if group:
        columns.append({"name": "unit", "dtype": "category", "role": "group"})
    return DomainSpec.model_validate(
        {
            "name": "toy",
            "data": {"path": "toy.csv"},
            "columns": [*columns, {"name": "label", "dtype": "category", "role": "target"}],
            "task": "binary",
            "positive_class": "1",
            "split": {"kind": "stratified", "holdout_size": 0.25, "validation_size": 0.25},
            "primary_metric": "roc_auc",
            "metrics": ["roc_auc"],
        }
    )


def _part(n: int, seed: int) -> Part:
    """Two independent signals: the label needs both, so a model of one alone errs where the
    other would not."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    frame = pl.DataFrame({"x0": X[:, 0], "x1": X[:, 1], "unit": [f"u{i % 40}" for i in range(n)]})
    return Part(frame=frame, X=X, y=y)


def _data() -> PreparedData:
    encoder = {"numeric": ["x0", "x1"], "categorical": {}}
    return PreparedData("toy", _part(2000, 1), _part(3000, 2), _part(3000, 3), encoder, [0, 1], "f")


def _linear(spec: DomainSpec, data: PreparedData, coef: list[float]) -> TrainedModel:
    """A linear model that reads the inputs with these weights (plain numbers, as the family stores them)."""
    payload = {"task": "binary", "fill": [0.0, 0.0], "mean": [0.0, 0.0], "scale": [1.0, 1.0]}
    payload |= {"coef": [coef], "intercept": [0.0]}
    model = TrainedModel("linear", {"C": 1.0}, payload, 2, "binary", float("nan"), 0.0)
    score = primary_score(spec, data.valid.y, model.predict(data.valid.X))
    return measured(TrainedModel("linear", {"C": 1.0}, payload, 2, "binary", score, 0.0), data)


def test_an_ensemble_of_models_that_err_differently_beats_each_and_is_chosen():
    spec, data = _spec(), _data()
    pool = [_linear(spec, data, [2.0, 0.0]), _linear(spec, data, [0.0, 2.0])]
    everything = list(pool)
    chosen, choice, reasons = _choose(spec, data, everything, ["baseline", "search"], whole=True)
    assert len(everything) == 3 and everything[-1].family == ENSEMBLE
    picked = chosen[choice.index]
    assert picked.family == ENSEMBLE, reasons
    assert "ensemble of 2" in reasons[-1] and reasons[-1].endswith("chosen")
    weights = picked.payload["weights"]
    assert sorted(weights) == pytest.approx([0.48, 0.52], abs=0.05)
    # better than each member on validation (cross-fitted) and on rows none of them saw
    assert all(picked.valid_score > m.valid_score + 0.05 for m in pool)
    holdout = [primary_score(spec, data.holdout.y, m.predict(data.holdout.X)) for m in [*pool, picked]]
    assert holdout[2] > max(holdout[:2]) + 0.05


def test_an_ensemble_that_adds_nothing_is_not_built_or_not_chosen():
    spec, data = _spec(), _data()
    strong = _linear(spec, data, [2.0, 2.0])
    # a copy of the best model, nearly: selection keeps the best alone or mixes two equals
    twins = [_linear(spec, data, [1.0, 1.0]), strong, _linear(spec, data, [2.0, 2.02])]
    everything = list(twins)
    pool, choice, reasons = _choose(spec, data, everything, ["baseline", "search", "search"], whole=True)
    assert pool[choice.index].family == "linear", reasons
    # a weak model of one signal adds nothing to the model of both
    assert ensemble.build(spec, data, [_linear(spec, data, [2.0, 0.0]), strong], seed=0) is None
    # a sampled search builds none (its members would each need a final fit)
    everything = [_linear(spec, data, [2.0, 0.0]), _linear(spec, data, [0.0, 2.0])]
    pool, choice, _ = _choose(spec, data, everything, ["baseline", "search"], whole=False)
    assert len(everything) == 2 and pool[choice.index].family == "linear"


def test_selection_starts_from_the_best_and_stops_at_its_best_round():
    spec, data = _spec(), _data()
    models = [_linear(spec, data, c) for c in ([2.0, 0.0], [0.0, 2.0], [2.0, 2.0])]
    scores = [m.predict(data.valid.X) for m in models]
    chosen = ensemble.select(spec, data.valid.y, scores)
    assert chosen.path[0] == pytest.approx(models[2].valid_score)  # the best single model first
    blended = sum(w * s for w, s in zip(chosen.weights, scores, strict=True))
    assert primary_score(spec, data.valid.y, blended) == pytest.approx(max(chosen.path))
    assert chosen.weights.sum() == pytest.approx(1.0)


def test_a_cross_fitted_score_never_comes_from_weights_that_saw_the_row():
    spec, data = _spec(), _data()
    scores = [_linear(spec, data, c).predict(data.valid.X) for c in ([2.0, 0.0], [0.0, 2.0], [1.0, 0.3])]
    y = data.valid.y
    fold = ensemble.folds(spec, data, seed=0)
    assert sorted(np.unique(fold)) == list(range(ensemble.FOLDS))
    before = ensemble.cross_fitted(spec, y, scores, fold)
    # the labels of fold 0 changed: the weights chosen with fold 0 change, so the other folds'
    # scores may, but fold 0's own scores came from weights chosen without it and stay
    changed = y.copy()
    rng = np.random.default_rng(5)
    flip = (fold == 0) & (rng.random(len(y)) < 0.4)
    changed[flip] = 1 - changed[flip]
    after = ensemble.cross_fitted(spec, changed, scores, fold)
    assert before is not None and after is not None
    np.testing.assert_array_equal(before[fold == 0], after[fold == 0])
    assert not np.array_equal(before[fold != 0], after[fold != 0])


def test_folds_keep_each_group_whole():
    spec, data = _spec(group=True), _data()
    fold = ensemble.folds(spec, data, seed=3)
    units = data.valid.frame["unit"].to_numpy()
    for unit in np.unique(units):
        assert len(np.unique(fold[units == unit])) == 1
    assert all(0.1 < (fold == k).mean() < 0.3 for k in range(ensemble.FOLDS))
    assert not np.array_equal(fold, ensemble.folds(spec, data, seed=4))


ENCODER = {"numeric": ["a", "b"], "categorical": {"c": ["x", "y"]}}


def _members():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    frame["c"] = np.where(rng.random(400) > 0.5, "x", "y")
    y = ((frame["a"] + (frame["c"] == "x") + 0.5 * rng.normal(size=400)) > 0.5).to_numpy().astype(int)
    M = encode(ENCODER, frame)
    linear = fit_linear(M, y, "binary")
    tree, _, _ = fit_xgboost(M[:300], y[:300], M[300:], y[300:], "binary", 2, {"n_estimators": 20})
    payload = {
        "weights": [0.3, 0.7],
        "members": [{"family": "linear", "payload": linear}, {"family": "xgboost", "payload": tree}],
    }
    return frame, M, payload


def test_an_ensemble_bundle_is_its_members_safe_files_and_scores_and_explains_a_row(tmp_path):
    frame, M, payload = _members()
    meta = BundleMeta(domain="t", task="binary", family=ENSEMBLE, classes=("no", "yes"), threshold=0.5)
    write_bundle(tmp_path / "b", meta=meta, encoder=ENCODER, payload=payload, reference={})
    files = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert files == ["encoder.json", "ensemble.json", "member-0.json", "member-1.ubj", "meta.json", "reference.json.gz"]
    listed = json.loads((tmp_path / "b" / "ensemble.json").read_text())
    assert listed == {"weights": [0.3, 0.7], "members": [
        {"family": "linear", "file": "member-0.json"}, {"family": "xgboost", "file": "member-1.ubj"}]}  # fmt: skip

    scorer = Scorer.from_dir(tmp_path / "b")
    linear, tree = scorer.model.members
    one = frame.head(1)
    expected = 0.3 * linear.predict(M[:1]) + 0.7 * tree.predict(M[:1])
    assert scorer.scores(one) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(scorer.scores(frame), 0.3 * linear.predict(M) + 0.7 * tree.predict(M), rtol=1e-6)
    reasons = scorer.reasons(M[:1], np.zeros(1, dtype=np.int64), top=2)
    both = 0.3 * linear.contributions(M[:1]) + 0.7 * tree.contributions(M[:1])
    assert [c for _, c in reasons[0]] == pytest.approx(sorted(both[0, 0], key=abs, reverse=True)[:2], rel=1e-6)


@pytest.mark.parametrize("file", ["../member-0.json", "member-0.ubj", "sub/member-0.json"])
def test_an_ensemble_naming_a_file_outside_its_bundle_or_of_another_format_is_refused(tmp_path, file):
    *_, payload = _members()
    meta = BundleMeta(domain="t", task="binary", family=ENSEMBLE, classes=("no", "yes"), threshold=0.5)
    bundle = write_bundle(tmp_path / "b", meta=meta, encoder=ENCODER, payload=payload, reference={})
    listed = json.loads((bundle / "ensemble.json").read_text())
    listed["members"][0]["file"] = file
    (bundle / "ensemble.json").write_text(json.dumps(listed))
    with pytest.raises(ValueError, match="not a linear file of its bundle"):
        Scorer.from_dir(bundle)


def test_an_ensemble_candidate_survives_the_stage_cache(tmp_path):
    spec, data = _spec(), _data()
    built = ensemble.build(spec, data, [_linear(spec, data, [2.0, 0.0]), _linear(spec, data, [0.0, 2.0])], seed=0)
    assert built is not None
    _write_model(built.model, tmp_path / "m")
    assert set(model_files(ENSEMBLE, built.model.payload)) <= {p.name for p in (tmp_path / "m").iterdir()}
    back = _read_model(tmp_path / "m")
    np.testing.assert_array_equal(back.predict(data.holdout.X), built.model.predict(data.holdout.X))
    assert [m.params for m in ensemble.members(back)] == [{"C": 1.0}, {"C": 1.0}]


def test_a_refitted_ensemble_refits_each_member_on_train_and_validation_and_keeps_its_weights():
    spec, data = _spec(), _data()
    fitted = [train_model(spec, data, "linear", {"C": c}) for c in (0.01, 10.0)]
    built = ensemble.assemble(spec, fitted, np.array([0.5, 0.5]), 0.9)
    refitted = refit_with_validation(spec, data, built, "cpu")
    assert refitted.family == ENSEMBLE and refitted.payload["weights"] == [0.5, 0.5]
    assert refitted.valid_score == 0.9 and refitted.train_rows == data.train.rows + data.valid.rows
    assert not np.allclose(refitted.predict(data.holdout.X), built.predict(data.holdout.X))
