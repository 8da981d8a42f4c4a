import json

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression

from lepton.core.scoring import CHUNK_ROWS, BundleMeta, LinearModel, Scorer, encode, smooth_scores, write_bundle
from lepton.tasks.families.linear import fit_linear
from lepton.tasks.families.mlp import fit_mlp, torch_available
from lepton.tasks.families.trees import fit_xgboost

NEEDS_TORCH = pytest.mark.skipif(not torch_available(), reason="the torch extra is not installed")
ENCODER = {"numeric": ["a", "b"], "categorical": {"c": ["x", "y"]}}


def _data(n=300, seed=0, classes=2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) if classes == 2 else np.digitize(X[:, 0], [-0.5, 0.5])
    return X, y


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_json_model_matches_sklearn(classes):
    X, y = _data(classes=classes)
    state = fit_linear(X, y, "binary" if classes == 2 else "multiclass", C=0.7)
    model = LinearModel(json.loads(json.dumps(state)))
    reference = LogisticRegression(C=0.7, max_iter=2000, random_state=0).fit(model.standardise(X), y)
    expected = reference.predict_proba(model.standardise(X))
    got = model.predict(X)
    np.testing.assert_allclose(got, expected[:, 1] if classes == 2 else expected, atol=1e-6)


@pytest.mark.parametrize("classes", [2, 3])
def test_a_large_batch_is_scored_in_blocks_with_the_scores_of_one_pass(classes):
    """A batch longer than CHUNK_ROWS (a partitioned table's holdout sample) is scored block by
    block: every row, the last partial block included, gets the score of one pass over the batch."""
    X, y = _data(classes=classes)
    model = LinearModel(fit_linear(X, y, "binary" if classes == 2 else "multiclass"))
    big = np.random.default_rng(1).normal(size=(2 * CHUNK_ROWS + 17, X.shape[1])).astype(np.float32)
    whole = model._predict(big)
    got = model.predict(big)
    assert got.shape == whole.shape
    np.testing.assert_allclose(got, whole, rtol=1e-12)


def test_linear_model_imputes_missing_with_train_median():
    X, y = _data()
    state = fit_linear(X, y, "binary")
    X_missing = X[:5].copy()
    X_missing[:, 0] = np.nan
    filled = X[:5].copy()
    filled[:, 0] = state["fill"][0]
    np.testing.assert_allclose(LinearModel(state).predict(X_missing), LinearModel(state).predict(filled))


def test_encode_reads_pandas_and_polars_alike():
    rows = {"a": [1.0, None], "b": [2, 3], "c": ["y", "zzz"]}
    from_pandas = encode(ENCODER, pd.DataFrame(rows))
    from_polars = encode(ENCODER, pl.DataFrame(rows))
    np.testing.assert_array_equal(np.nan_to_num(from_pandas, nan=-1), np.nan_to_num(from_polars, nan=-1))
    np.testing.assert_array_equal(from_polars[1], [np.nan, 3.0, 0.0, 0.0])


@pytest.mark.parametrize("family", ["linear", "xgboost", pytest.param("mlp", marks=NEEDS_TORCH)])
def test_bundle_round_trip_scores_the_same(tmp_path, family):
    X, y = _data()
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": np.where(X[:, 2] > 0, "x", "y")})
    M = encode(ENCODER, frame)
    if family == "linear":
        payload = fit_linear(M, y, "binary")
    elif family == "mlp":
        payload, _ = fit_mlp(M[:200], y[:200], M[200:], y[200:], "binary", 2, {"hidden": 8, "epochs": 30})
    else:
        payload, _, _ = fit_xgboost(M[:200], y[:200], M[200:], y[200:], "binary", 2, {"n_estimators": 20})
    meta = BundleMeta(domain="t", task="binary", family=family, classes=("no", "yes"), threshold=0.5)
    write_bundle(tmp_path / "b", meta=meta, encoder=ENCODER, payload=payload, reference={})
    assert not [p for p in (tmp_path / "b").iterdir() if p.suffix in {".pkl", ".pickle", ".joblib"}]
    scorer = Scorer.from_dir(tmp_path / "b")
    out = scorer.predict(frame)
    assert set(out["prediction"]) <= {"no", "yes"}
    assert ((out["score"] >= 0.5) == (out["prediction"] == "yes")).all()
    assert (out.loc[y == 1, "score"].mean()) > (out.loc[y == 0, "score"].mean())


def test_scorer_names_missing_columns(tmp_path):
    X, y = _data()
    write_bundle(
        tmp_path / "b",
        meta=BundleMeta(domain="t", task="binary", family="linear", classes=("0", "1"), threshold=0.5),
        encoder=ENCODER,
        payload=fit_linear(encode(ENCODER, {"a": X[:, 0], "b": X[:, 1], "c": ["x"] * 300}), y, "binary"),
        reference={},
    )
    with pytest.raises(KeyError, match="'c'"):
        Scorer.from_dir(tmp_path / "b").predict(pd.DataFrame({"a": [1.0], "b": [2.0]}))


def test_metric_keys_from_any_column_name_are_valid_and_distinct():
    from mlflow.utils.validation import _validate_metric_name

    from lepton.core.tracking import metric_key

    names = ["psi_Balance (€)", "psi_Balance ($)", "psi_plain_name", "psi_größe"]
    keys = [metric_key(n) for n in names]
    for key in keys:
        _validate_metric_name(key)
    assert len(set(keys)) == len(keys) and keys[2] == "psi_plain_name"


def test_smoothing_averages_past_rows_of_the_same_group_only():
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(3), size=12)
    groups = np.array([1] * 6 + [2] * 6)
    order = np.tile(np.arange(6), 2)
    out = smooth_scores(scores, groups, order, window=3)
    np.testing.assert_allclose(out[0], scores[0])
    np.testing.assert_allclose(out[4], scores[2:5].mean(axis=0))
    np.testing.assert_allclose(out[6], scores[6])  # a new group starts afresh
    changed = scores.copy()
    changed[5] = [1.0, 0.0, 0.0]
    np.testing.assert_allclose(smooth_scores(changed, groups, order, 3)[:5], out[:5])  # the future is unseen
    shuffled = rng.permutation(12)
    np.testing.assert_allclose(smooth_scores(scores[shuffled], groups[shuffled], order[shuffled], 3), out[shuffled])
    binary = smooth_scores(scores[:, 0], groups, order, 2)
    assert binary.shape == (12,) and binary[1] == pytest.approx(scores[:2, 0].mean())


def test_level_lookup_for_a_few_rows_equals_the_pandas_path():
    from lepton.core.scoring import _level_codes

    values = ["x", None, "y", float("nan"), "zzz", 1, 1.5, True, "1"] * 2500  # 22,500 rows: the pandas path
    levels = ["x", "y", "1", "1.5", "True"]
    np.testing.assert_array_equal(_level_codes(values[:9], levels), _level_codes(values, levels)[:9])
    assert _level_codes(values[:9], levels).tolist() == [0, -1, 1, -1, -1, 2, 3, 4, 2]


@pytest.mark.parametrize("family", ["linear", "xgboost"])
@pytest.mark.parametrize("classes", [2, 3])
def test_reasons_are_the_largest_contributions_that_add_up_to_the_raw_output(tmp_path, family, classes):
    X, y = _data(classes=classes)
    task = "binary" if classes == 2 else "multiclass"
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": np.where(X[:, 2] > 0, "x", "y")})
    M = encode(ENCODER, frame)
    if family == "linear":
        payload = fit_linear(M, y, task)
    else:
        payload, _, _ = fit_xgboost(M[:200], y[:200], M[200:], y[200:], task, classes, {"n_estimators": 20})
    classes_ = tuple(str(c) for c in range(classes))
    meta = BundleMeta(domain="t", task=task, family=family, classes=classes_, threshold=0.5)
    write_bundle(tmp_path / "b", meta=meta, encoder=ENCODER, payload=payload, reference={})
    scorer = Scorer.from_dir(tmp_path / "b")
    contributions = scorer.model.contributions(M)
    assert contributions.shape == (len(M), 1 if classes == 2 else classes, M.shape[1])
    # Contributions (plus a constant per output) give the raw output: the model's margin.
    margin = np.log(scorer.scores(frame) / (1 - scorer.scores(frame))) if classes == 2 else None
    if margin is not None:
        offset = margin - contributions[:, 0, :].sum(axis=1)
        np.testing.assert_allclose(offset, offset[0], atol=1e-3)
    predicted = np.zeros(len(M), dtype=int) if classes == 2 else scorer.scores(frame).argmax(axis=1)
    reasons = scorer.reasons(M, predicted, top=2)
    names = ["a", "b", "c=x", "c=y"]
    for row, (chosen, k) in enumerate(zip(reasons, predicted, strict=True)):
        assert len(chosen) == 2 and {n for n, _ in chosen} <= set(names)
        size = np.sort(np.abs(contributions[row, min(k, contributions.shape[1] - 1)]))[::-1]
        assert [abs(c) for _, c in chosen] == pytest.approx(size[:2], rel=1e-5)


def test_bundle_meta_reads_back_what_it_wrote_and_refuses_another_format():
    from lepton.domains import get_spec

    spec = get_spec("manufacturing")  # a rolling recipe and decision smoothing
    meta = BundleMeta(
        domain=spec.name,
        task=spec.task,
        family="xgboost",
        classes=("0", "1"),
        threshold=0.3,
        alarm_normal=0,
        inputs=tuple(c.name for c in spec.model_inputs),
        recipe=spec.recipe_config(),
        smoothing=spec.smoothing_config(),
        calibration={"method": "sigmoid", "a": 1.0, "b": 0.0},
    )
    text = json.loads(json.dumps(meta.to_json()))
    assert BundleMeta.from_json(text) == meta
    assert text["recipe"]["name"] == "rolling" and text["recipe"]["numeric"]
    with pytest.raises(ValueError, match="bundle format 0"):
        BundleMeta.from_json({**text, "format": 0})


def _categorical_table(n=3000, seed=0):
    """A target that turns on which of 40 levels a row has (one-hot needs many splits for it)
    and on a number; a few rows with the level missing."""
    rng = np.random.default_rng(seed)
    levels = [f"L{i:02d}" for i in range(40)]
    good = set(levels[::3])
    level = rng.choice(levels, size=n).astype(object)
    level[rng.random(n) < 0.05] = None
    x = rng.normal(size=n)
    y = (np.array([v in good for v in level]) * 1.5 + x + rng.normal(scale=0.5, size=n) > 0.8).astype(int)
    encoder = {"numeric": ["x"], "categorical": {"level": levels, "flag": ["a", "b"]}}
    rows = {"x": x, "level": level, "flag": np.where(x > 0, "a", "b")}
    return encoder, rows, y


def test_trees_split_categoricals_natively_and_serve_the_one_hot_matrix(tmp_path):
    """Trees train on level codes (one column per categorical), while the bundle takes the
    one-hot matrix like every model: its scores, SHAP contributions and importance come back on
    the one-hot columns, a row's categorical share on its own level."""
    import xgboost as xgb

    from lepton.core.scoring import TreeModel, category_blocks, compact

    encoder, rows, y = _categorical_table()
    M = encode(encoder, rows)
    blocks = category_blocks(encoder)
    assert blocks == [(1, 40), (41, 2)]
    codes = compact(M, blocks)
    assert codes.shape == (len(y), 3)
    missing = np.array([v is None for v in rows["level"]])
    assert np.isnan(codes[missing, 1]).all() and not np.isnan(codes[~missing, 1]).any()
    expected_codes = [encoder["categorical"]["level"].index(v) for v in rows["level"][~missing]]
    np.testing.assert_array_equal(codes[~missing, 1], expected_codes)

    params = {"n_estimators": 200, "max_depth": 3}
    native, _, _ = fit_xgboost(M[:2000], y[:2000], M[2000:], y[2000:], "binary", 2, params, blocks=blocks)
    model = TreeModel(native, "binary", M.shape[1])
    assert model.blocks == blocks
    assert model.booster.feature_types == ["q", "c", "c"]
    expected = model.booster.predict(xgb.DMatrix(codes, feature_types=["q", "c", "c"], enable_categorical=True))
    np.testing.assert_allclose(model.predict(M), expected, rtol=1e-6)

    contributions = model.contributions(M[:50])
    assert contributions.shape == (50, 1, M.shape[1])
    margin = model.booster.predict(
        xgb.DMatrix(codes[:50], feature_types=["q", "c", "c"], enable_categorical=True), output_margin=True
    )
    bias = margin - contributions.sum(axis=(1, 2))
    np.testing.assert_allclose(bias, bias[0], atol=1e-4)  # every row's shares add up to its margin
    level_block = contributions[:, 0, 1:41]
    present = ~missing[:50]
    inactive = (M[:50, 1:41] == 0) & present[:, None]
    assert (level_block[inactive] == 0).all()  # a present level carries the whole share

    importance = model.importance()
    assert importance.shape == (M.shape[1],) and importance[1:41].sum() > 0
    gain = model.booster.get_score(importance_type="gain")
    assert importance[1:41].sum() == pytest.approx(gain["f1"])  # the level column's gain, shared by its levels
    np.testing.assert_allclose(importance[1:41], importance[1])

    one_hot, _, _ = fit_xgboost(M[:2000], y[:2000], M[2000:], y[2000:], "binary", 2, params)
    assert TreeModel(one_hot, "binary", M.shape[1]).booster.num_features() == M.shape[1]
    meta = BundleMeta(domain="t", task="binary", family="xgboost", classes=("no", "yes"), threshold=0.5)
    write_bundle(tmp_path / "b", meta=meta, encoder=encoder, payload=native, reference={})
    scorer = Scorer.from_dir(tmp_path / "b")
    frame = pd.DataFrame(rows).iloc[2000:]
    np.testing.assert_allclose(scorer.predict(frame)["score"], expected[2000:], rtol=1e-6)
    reasons = scorer.reasons(scorer.matrix(frame)[1][:5], np.zeros(5, dtype=np.int64))
    assert all(name in scorer.feature_names for row in reasons for name, _ in row)
