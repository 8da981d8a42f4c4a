"""The leakage sentinel: stop a run when one feature alone predicts the target almost perfectly.

Such a column is nearly always the answer in disguise (a status recorded after the outcome, a
copy of the label, an amount computed from it). Each feature is scored on the training split
only, out of fold (two halves, each predicted by a one-feature model fitted on the other), so a
column with many levels cannot look predictive by memorising rows:

- numbers and datetimes: a small decision tree on that one column (and, for binary targets, the
  raw value's own ROC AUC, for monotone leaks);
- categories: each level's target mean (binary, regression) or most frequent class (multiclass).

The score is ROC AUC (binary), balanced accuracy (multiclass) or R² (regression).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from sklearn import metrics as skm
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from domains.spec import DomainSpec, Dtype
from lepton.errors import LeakageError

MAX_ROWS = 50_000
MAX_CELLS = 2_000_000  # rows x features scored: wide tables get a smaller row sample
LEAVES = 64


def _numeric(values: pl.Series) -> np.ndarray:
    if isinstance(values.dtype, pl.Datetime | pl.Date):
        values = values.dt.epoch("s")
    x = values.cast(pl.Float64).fill_nan(None).to_numpy().astype(np.float64)
    finite = x[np.isfinite(x)]
    low = float(finite.min()) - 1.0 if len(finite) else 0.0
    return np.where(np.isfinite(x), x, low)  # missing is a value of its own, below every other


def _out_of_fold(fit_predict, n: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    halves = (order[: n // 2], order[n // 2 :])
    out: np.ndarray | None = None
    for fit_on, predict_on in (halves, halves[::-1]):
        predicted = fit_predict(fit_on, predict_on)
        if out is None:
            out = np.zeros((n, *predicted.shape[1:]), dtype=np.float64)
        out[predict_on] = predicted
    assert out is not None
    return out


def _tree_scores(x: np.ndarray, y: np.ndarray, task: str, n_classes: int, seed: int) -> np.ndarray:
    def fit_predict(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        leaf = max(5, len(a) // 1000)
        if task == "regression":
            model = DecisionTreeRegressor(max_leaf_nodes=LEAVES, min_samples_leaf=leaf, random_state=seed)
            return model.fit(x[a, None], y[a]).predict(x[b, None])
        model = DecisionTreeClassifier(max_leaf_nodes=LEAVES, min_samples_leaf=leaf, random_state=seed)
        model.fit(x[a, None], y[a])
        proba = np.zeros((len(b), n_classes))
        proba[:, model.classes_] = model.predict_proba(x[b, None])
        return proba

    return _out_of_fold(fit_predict, len(y), seed)


def _level_scores(levels: np.ndarray, y: np.ndarray, task: str, n_classes: int, seed: int) -> np.ndarray:
    def fit_predict(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        codes_a, codes_b = levels[a], levels[b]
        size = int(levels.max()) + 1
        if task == "regression":
            sums = np.bincount(codes_a, weights=y[a], minlength=size)
            counts = np.bincount(codes_a, minlength=size)
            means = np.where(counts > 0, sums / np.maximum(counts, 1), y[a].mean())
            return means[codes_b]
        table = np.zeros((size, n_classes))
        np.add.at(table, (codes_a, y[a]), 1.0)
        seen = table.sum(axis=1, keepdims=True)
        prior = np.bincount(y[a], minlength=n_classes) / len(a)
        return np.where(seen > 0, table / np.maximum(seen, 1), prior)[codes_b]

    return _out_of_fold(fit_predict, len(y), seed)


def _quality(task: str, y: np.ndarray, predicted: np.ndarray) -> tuple[str, float]:
    if task == "regression":
        return "r2", float(skm.r2_score(y, predicted))
    if task == "binary":
        return "roc_auc", float(skm.roc_auc_score(y, predicted[:, 1]))
    return "balanced_accuracy", float(skm.balanced_accuracy_score(y, predicted.argmax(axis=1)))


def feature_scores(
    train: pl.DataFrame, spec: DomainSpec, classes: list[Any], max_rows: int = MAX_ROWS
) -> dict[str, tuple[str, float]]:
    """How well each feature alone predicts the target, out of fold on (a sample of) train."""
    rows = max(2_000, min(max_rows, MAX_CELLS // max(len(spec.feature_columns), 1)))
    sample = train if train.height <= rows else train.sample(rows, seed=spec.split.seed)
    from tasks.preprocess import encode_labels  # (preprocess imports this module)

    y = encode_labels(sample[spec.target], spec, classes)
    if len(y) < 20 or (spec.task != "regression" and len(np.unique(y)) < 2):
        return {}
    n_classes, seed = max(len(classes), 2), spec.split.seed
    scores = {}
    for column in spec.feature_columns:
        values = sample[column.name]
        if column.dtype is Dtype.CATEGORY:
            levels = values.cast(pl.String).fill_null("\x00missing").cast(pl.Categorical).to_physical()
            predicted = _level_scores(levels.to_numpy().astype(np.int64), y, spec.task, n_classes, seed)
            scores[column.name] = _quality(spec.task, y, predicted)
            continue
        x = _numeric(values)
        metric, value = _quality(spec.task, y, _tree_scores(x, y, spec.task, n_classes, seed))
        if spec.task == "binary" and np.unique(x).size > 1:
            auc = float(skm.roc_auc_score(y, x))
            value = max(value, auc, 1.0 - auc)
        elif spec.task == "regression" and np.std(x) > 0 and np.std(y) > 0:
            value = max(value, float(np.corrcoef(x, y)[0, 1] ** 2))
        scores[column.name] = (metric, value)
    return scores


def check_leakage(train: pl.DataFrame, spec: DomainSpec, classes: list[Any]) -> dict[str, tuple[str, float]]:
    """Raise ``LeakageError`` naming every feature that alone predicts the target above the
    spec's threshold (columns the spec allows are exempt); return all scores otherwise."""
    scores = feature_scores(train, spec, classes)
    threshold = spec.leakage.threshold
    suspects = {
        name: score for name, score in scores.items() if score[1] > threshold and name not in spec.leakage.allow
    }
    if suspects:
        raise LeakageError(dict(sorted(suspects.items(), key=lambda kv: -kv[1][1])), threshold)
    return scores
