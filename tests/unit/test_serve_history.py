"""Single-row requests of a series model (rolling features, smoothed decisions) get the answer
the whole series would get in one batch."""

import numpy as np

from lepton.app.serve import History, Loaded, score_rows
from lepton.core.scoring import BundleMeta, Scorer, load_model
from lepton.domains.recipes import RecipeConfig, SmoothingConfig

RECIPE = RecipeConfig(name="rolling", window=3, numeric=("a",), group="run", time="t")
SMOOTHING = SmoothingConfig(window=4, group="run", time="t")
ENCODER = {"numeric": ["a", "a_mean3", "a_std3", "a_diff"], "categorical": {}}


def _loaded() -> Loaded:
    state = {"task": "multiclass", "fill": [0.0] * 4, "mean": [0.0] * 4, "scale": [1.0] * 4,
             "coef": [[0.5, -1.0, 2.0, 0.3], [-0.2, 0.8, -1.5, 1.0], [0.1, 0.1, 0.1, -0.9]],
             "intercept": [0.0, 0.1, -0.1]}  # fmt: skip
    meta = BundleMeta(domain="t", task="multiclass", family="linear", classes=("0", "1", "2"), threshold=0.5,
                      inputs=("a", "run", "t"), recipe=RECIPE, smoothing=SMOOTHING)  # fmt: skip
    return Loaded(version="1", scorer=Scorer(meta, ENCODER, load_model("linear", state, "multiclass", 4)))


def test_single_rows_with_history_equal_the_whole_series_scored_at_once():
    rng = np.random.default_rng(0)
    rows = [{"a": float(v), "run": run, "t": float(t)} for run in (1, 2) for t, v in enumerate(rng.normal(size=15))]
    loaded = _loaded()
    whole = score_rows(loaded, rows, explain=True)
    history = History(loaded.scorer.meta)
    assert history.depth == 3 + 4 and history.group == "run"
    interleaved = sorted(range(len(rows)), key=lambda i: (rows[i]["t"], rows[i]["run"]))  # runs interleave
    one_by_one = {}
    for i in interleaved:
        one_by_one[i] = score_rows(loaded, [rows[i]], True, history.context(rows[i]))[0]
        history.add(rows[i])
    for i, expected in enumerate(whole):
        assert one_by_one[i]["prediction"] == expected["prediction"]
        assert np.isclose(one_by_one[i]["score"], expected["score"], rtol=1e-9)
        assert one_by_one[i]["reasons"] == expected["reasons"]
    # Without history each row would stand alone: different answers for this model.
    alone = [score_rows(loaded, [row], True)[0]["score"] for row in rows]
    assert not np.allclose(alone, [w["score"] for w in whole])


def test_history_is_bounded_per_series_and_in_series():
    meta = BundleMeta(domain="t", task="binary", family="linear", smoothing=SmoothingConfig(3, "run", "t"))
    history = History(meta, max_series=2)
    for t in range(10):
        history.add({"run": "a", "t": t})
    assert [r["t"] for r in history.context({"run": "a"})] == [7, 8, 9]
    history.add({"run": "b", "t": 0})
    history.add({"run": "c", "t": 0})
    assert history.context({"run": "a"}) == [] and len(history.series) == 2
    credit = BundleMeta(domain="t", task="binary", family="linear", recipe=RecipeConfig(name="credit", window=10))
    assert History(credit).depth == 0


def test_the_prediction_log_keeps_every_row_of_mixed_requests(tmp_path):
    from lepton.core.predlog import PredictionLog, read_log

    log = PredictionLog(tmp_path, flush_seconds=0.05)
    log.start()
    log.append("batch-1", "3", [{"a": 1.0, "b": "x"}, {"a": None, "b": "y"}], [{"prediction": "1", "score": 0.9}] * 2)
    log.append(["s-1", "s-2"], "3", [{"a": 2.0}, {"a": 3.0, "c": True}], [{"prediction": "0", "score": 0.1}] * 2)
    log.close()
    frame = read_log(tmp_path)
    assert frame["request_id"].to_list() == ["batch-1", "batch-1", "s-1", "s-2"]
    assert frame["row"].to_list() == [0, 1, 0, 0]
    assert frame["input.a"].to_list() == [1.0, None, 2.0, 3.0]
    assert frame["input.b"].to_list() == ["x", "y", None, None]
    assert frame["input.c"].to_list() == [None, None, None, True]
    assert not list(tmp_path.glob(".*partial")) and log.written == 4


def test_the_logged_traffic_a_day_counts_the_last_week_only(tmp_path):
    from datetime import UTC, datetime, timedelta

    import polars as pl
    import pytest

    from lepton.core.predlog import decisions_per_day

    assert decisions_per_day(tmp_path) is None  # nothing logged: the monitor says so
    now = datetime.now(UTC).replace(tzinfo=None)
    old = pl.DataFrame({"time": [now - timedelta(days=30)] * 500})  # a month ago: not this week's traffic
    week = pl.DataFrame({"time": [now - timedelta(days=d / 10) for d in range(70)]})  # 70 over 6.9 days
    old.write_parquet(tmp_path / "part-1.parquet")
    week.write_parquet(tmp_path / "part-2.parquet")
    assert decisions_per_day(tmp_path) == pytest.approx(70 / 6.9, rel=1e-3)
    young = tmp_path / "young"
    young.mkdir()
    pl.DataFrame({"time": [now - timedelta(hours=1)] * 24}).write_parquet(young / "part-1.parquet")
    assert decisions_per_day(young) == 24  # an hour-old log counts as a day's traffic, not 24 x 24
