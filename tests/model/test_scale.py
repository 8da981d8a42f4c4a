"""Large tables: candidates on a sample, the chosen tree model on every row, across a Dask
cluster with xgboost.dask when the table is large enough (or when asked)."""

import functools

import numpy as np
import polars as pl
import pytest

from lepton.domains import get_spec
from lepton.tasks.metrics import primary_score
from lepton.tasks.optimise import final_fit, refit_with_validation
from lepton.tasks.preprocess import load_domain_data, prepare
from lepton.tasks.synth import synthesize
from lepton.tasks.train import BASELINE_PARAMS, DEFAULT_TREE_PARAMS, search_limit, search_sample, train_model


@functools.cache
def _prepared(domain: str, rows: int | None = None):
    spec = get_spec(domain)
    frame, holdout = load_domain_data(spec)
    if rows:
        frame = pl.concat(list(synthesize(spec, frame, rows, seed=1)))
    return spec, prepare(spec, frame, holdout)


def test_search_sample_keeps_order_and_the_whole_validation_split():
    _spec, data = _prepared("finance")
    assert search_sample(data, data.train.rows) is data  # small enough: the data itself
    sample = search_sample(data, 1000, seed=4)
    assert sample.train.rows == 1000 and sample.train.X.shape == (1000, data.train.X.shape[1])
    # Rows come from train, in their original order, none twice.
    index = {row.tobytes(): i for i, row in enumerate(data.train.X)}
    positions = [index[row.tobytes()] for row in sample.train.X]
    assert positions == sorted(positions) and len(set(positions)) == 1000
    assert np.array_equal(sample.valid.X, data.valid.X, equal_nan=True) and np.array_equal(sample.valid.y, data.valid.y)
    assert not np.array_equal(search_sample(data, 1000, seed=5).train.y, sample.train.y)


def test_a_wide_many_class_table_is_searched_on_fewer_rows(monkeypatch):
    from lepton.tasks import train

    assert search_limit(1_000_000, 27, 2) == 1_000_000  # finance: the row setting binds
    assert search_limit(1_000_000, 208, 22) == train.SEARCH_CELLS // (208 * 22) < 30_000  # TEP: 22 trees a round
    assert search_limit(1_000_000, 10**9, 3) == train.SEARCH_FLOOR
    spec, data = _prepared("manufacturing")
    width, classes = data.train.X.shape[1], len(data.classes)
    assert classes > 2 and search_sample(data, 1_000_000) is data  # the vendored table is searched whole
    monkeypatch.setattr(train, "SEARCH_CELLS", width * classes * 5000)
    sample = search_sample(data, 1_000_000, spec.split.seed)
    assert sample.train.rows == 5000 < data.train.rows and sample.valid.rows == data.valid.rows


SMALL_TREES = {"max_depth": 4, "learning_rate": 0.3, "n_estimators": 40}  # 22 classes: 22 trees a round


@pytest.mark.parametrize(
    ("domain", "rows", "params", "tolerance"),
    [
        ("finance", 60_000, DEFAULT_TREE_PARAMS, 0.01),
        pytest.param("manufacturing", None, SMALL_TREES, 0.03, marks=pytest.mark.slow),  # ~1 min
    ],
)
def test_xgboost_dask_matches_single_node_quality(dask_cluster, domain, rows, params, tolerance):
    spec, data = _prepared(domain, rows)
    single = train_model(spec, data, "xgboost", params)
    spread = train_model(spec, data, "xgboost", params, client=dask_cluster)
    assert single.workers == 0 and spread.workers == 2 and spread.train_rows == data.train.rows
    ours = primary_score(spec, data.holdout.y, spread.predict(data.holdout.X))
    theirs = primary_score(spec, data.holdout.y, single.predict(data.holdout.X))
    baseline = train_model(spec, data, "linear", BASELINE_PARAMS)
    print(f"{domain}: {spec.primary_metric} xgboost.dask {ours:.4f}, one process {theirs:.4f}")
    assert ours == pytest.approx(theirs, abs=tolerance)
    assert ours > primary_score(spec, data.holdout.y, baseline.predict(data.holdout.X))  # a real model


def test_final_fit_refits_the_chosen_tree_on_every_row_across_the_cluster(dask_cluster):
    spec, data = _prepared("finance", 20_000)
    sample = search_sample(data, 2000, seed=0)
    tree = train_model(spec, sample, "xgboost", DEFAULT_TREE_PARAMS)
    linear = train_model(spec, sample, "linear", BASELINE_PARAMS)
    assert tree.train_rows == 2000 and tree.trained_on == "2,000 rows, one process"

    assert final_fit(spec, data, linear, "cpu", dask_cluster, distributed_rows=0) is linear
    local = final_fit(spec, data, tree, "cpu", dask_cluster, distributed_rows=10**9)  # below: one process
    assert local.train_rows == data.train.rows and local.workers == 0
    spread = final_fit(spec, data, tree, "cpu", dask_cluster, distributed_rows=0)
    assert spread.train_rows == data.train.rows and spread.workers == 2
    assert spread.trained_on == f"{data.train.rows:,} rows, XGBoost across 2 Dask worker(s)"
    # Already fitted on every row and below the distributed size: kept as it is.
    assert final_fit(spec, data, local, "cpu", None, distributed_rows=0) is local


def test_refit_with_validation_fits_the_chosen_model_on_train_and_validation():
    spec, data = _prepared("finance")
    spec = spec.model_copy(update={"split": spec.split.model_copy(update={"refit": True})})
    tree = train_model(spec, data, "xgboost", DEFAULT_TREE_PARAMS)
    refitted = refit_with_validation(spec, data, tree, "cpu")
    assert refitted.train_rows == data.train.rows + data.valid.rows
    assert refitted.params["n_estimators"] == tree.best_iteration + 1
    assert refitted.best_iteration == tree.best_iteration  # the same number of trees, not stopped early
    assert refitted.valid_score == tree.valid_score  # measured before it saw the validation rows
    assert not np.allclose(refitted.predict(data.holdout.X), tree.predict(data.holdout.X))
    linear = refit_with_validation(spec, data, train_model(spec, data, "linear", BASELINE_PARAMS), "cpu")
    assert linear.train_rows == data.train.rows + data.valid.rows
