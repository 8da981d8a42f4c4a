"""Behavioural tests of models trained on the real samples: direction and invariance."""

import functools

import numpy as np
import polars as pl
import pytest

from lepton.core.scoring import encode
from lepton.domains import get_spec
from lepton.tasks.preprocess import load_domain_data, prepare
from lepton.tasks.train import BASELINE_PARAMS, DEFAULT_TREE_PARAMS, train_model


@functools.cache
def _trained(domain: str, family: str):
    spec = get_spec(domain)
    frame, holdout = load_domain_data(spec)
    data = prepare(spec, frame, holdout)
    params = BASELINE_PARAMS if family == "linear" else DEFAULT_TREE_PARAMS
    return spec, data, train_model(spec, data, family, params)


def _score(data, model, frame: pl.DataFrame) -> np.ndarray:
    return model.predict(encode(data.encoder, frame))


@pytest.mark.parametrize("family", ["linear", "xgboost"])
def test_finance_risk_rises_with_the_interest_rate(family):
    _, data, model = _trained("finance", family)
    base = data.holdout.frame
    higher = base.with_columns(pl.col("int_rate") + 8.0)
    assert _score(data, model, higher).mean() > _score(data, model, base).mean()


@pytest.mark.parametrize("family", ["linear", "xgboost"])
def test_medical_risk_rises_with_age(family):
    _, data, model = _trained("medical", family)
    base = data.holdout.frame
    older = base.with_columns(pl.col("age") + 10)
    assert _score(data, model, older).mean() > _score(data, model, base).mean()


def test_scores_do_not_depend_on_row_order_or_batch_size():
    _, data, model = _trained("finance", "xgboost")
    frame = data.holdout.frame.head(300)
    batch = _score(data, model, frame)
    reversed_ = _score(data, model, frame.reverse())[::-1]
    one_by_one = np.concatenate([_score(data, model, frame.slice(i, 1)) for i in range(0, 300, 37)])
    np.testing.assert_allclose(batch, reversed_, rtol=1e-6)
    np.testing.assert_allclose(batch[::37], one_by_one, rtol=1e-6)


def test_unseen_category_scores_like_a_missing_one():
    _, data, model = _trained("finance", "linear")
    frame = data.holdout.frame.head(50)
    unseen = frame.with_columns(pl.lit("ZZ").alias("addr_state"))
    missing = frame.with_columns(pl.lit(None, dtype=pl.String).alias("addr_state"))
    np.testing.assert_allclose(_score(data, model, unseen), _score(data, model, missing))


def test_the_linear_baseline_beats_chance_on_every_binary_domain():
    for domain in ("finance", "medical"):
        model = _trained(domain, "linear")[2]
        assert model.valid_score > 0.65, (domain, model.valid_score)
