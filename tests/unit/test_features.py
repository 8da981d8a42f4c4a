"""Feature recipes and the Dask engine: the same features on workers as in one process, past
rows only, trials on workers as in one process, threads matched to the worker."""

import numpy as np
import polars as pl
import pytest

from lepton.core.engine import cpu_threads, dask_engine
from lepton.core.tables import read_table
from lepton.domains import DOMAINS, get_spec, recipes
from lepton.domains.spec import Dtype
from lepton.tasks.features import compute_features, partitions


def _raw(name: str) -> pl.DataFrame:
    spec = get_spec(name)
    return read_table(spec.data.resolve(spec.data.path))


@pytest.mark.parametrize("name", DOMAINS)
def test_each_recipe_adds_exactly_the_columns_it_declares(name):
    spec = get_spec(name)
    frame = _raw(name)
    out = recipes.apply(spec.recipe_config(), frame)
    derived = [c for c in out.columns if c not in frame.columns]
    declared = spec.with_features().feature_columns[len(spec.feature_columns) :]
    assert derived == [c.name for c in declared]
    numeric = {Dtype.FLOAT: pl.Float64, Dtype.INT: pl.Int64, Dtype.CATEGORY: pl.String}
    assert all(out.schema[c.name] == numeric[c.dtype] for c in declared)
    assert out.height == frame.height and out.select(frame.columns).equals(frame)


@pytest.mark.parametrize("name", DOMAINS)
def test_features_on_dask_workers_equal_a_single_process_run(dask_cluster, name):
    spec = get_spec(name)
    frame = _raw(name).sample(fraction=1.0, shuffle=True, seed=1)  # rows in no particular order
    local, _ = compute_features(spec, frame)
    distributed, run = compute_features(spec, frame, dask_cluster, parts=5)
    assert distributed.equals(local)
    assert run.partitions >= 2 and set(run.workers) <= set(dask_cluster.nthreads())


def test_partitions_keep_groups_whole_and_rows_once():
    spec = get_spec("manufacturing")
    frame = _raw("manufacturing")
    pieces = partitions(frame, spec, 4)
    runs = [set(p["run"].to_list()) for p in pieces]
    assert len(pieces) == 4 and sum(p.height for p in pieces) == frame.height
    assert all(not (a & b) for i, a in enumerate(runs) for b in runs[i + 1 :])


def test_rolling_features_use_only_the_past():
    spec = get_spec("manufacturing")
    frame = _raw("manufacturing").filter(pl.col("run") == 1).sort("sample")
    base = recipes.apply(spec.recipe_config(), frame)
    future = frame.with_columns(
        pl.when(pl.col("sample") > 100).then(999.0).otherwise(pl.col("xmeas_1")).alias("xmeas_1")
    )
    changed = recipes.apply(spec.recipe_config(), future)
    early = pl.col("sample") <= 100
    assert base.filter(early).equals(changed.filter(early))
    assert not base.filter(~early).equals(changed.filter(~early))
    window = spec.features.window
    expected = frame["xmeas_1"].head(window).mean()
    assert base.filter(pl.col("sample") == frame["sample"][window - 1])[f"xmeas_1_mean{window}"][0] == pytest.approx(
        expected
    )


def test_one_row_scored_alone_gets_what_the_frame_path_gives_it():
    from lepton.core.scoring import smooth_scores

    spec = get_spec("manufacturing")
    config = spec.recipe_config()
    frame = _raw("manufacturing").head(3).with_columns(pl.lit(None, dtype=pl.Float64).alias("xmeas_2"))
    for i in range(frame.height):
        row = frame.slice(i, 1)
        fast = recipes.derive(config, {name: row[name].to_numpy() for name in row.columns})
        slow = recipes.rolling(row, config)
        assert set(fast) == {name for name, _ in recipes.outputs(config)}
        for name, values in fast.items():
            np.testing.assert_array_equal(values, slow[name].to_numpy(), err_msg=name)
    scores = np.array([[0.2, 0.8]])
    assert smooth_scores(scores, np.array([1]), np.array([5]), 60) is scores


def test_trials_on_dask_match_trials_in_one_process(dask_cluster):
    from lepton.tasks.optimise import search
    from lepton.tasks.preprocess import load_domain_data, prepare

    spec = get_spec("medical")
    data = prepare(spec, *load_domain_data(spec))
    here = search(spec, data, 4)
    there = search(spec, data, 4, client=dask_cluster)
    assert [m.family for m in here] == [m.family for m in there]
    assert np.allclose([m.valid_score for m in here], [m.valid_score for m in there])


def test_xgboost_threads_follow_the_worker(dask_cluster):
    assert set(dask_cluster.gather(dask_cluster.map(lambda _: cpu_threads(), range(4)))) == {1}
    assert cpu_threads() >= 1


def test_an_existing_cluster_is_used_and_left_running(dask_cluster):
    address = dask_cluster.scheduler.address
    with dask_engine(address) as engine:
        assert engine.external and engine.workers == 2 and engine.threads == 2
        assert engine.address == address
    assert len(dask_cluster.nthreads()) == 2  # still there


def test_a_local_cluster_is_sized_to_the_machine_and_closed_after_the_run():
    from lepton.core.engine import machine_cores

    with dask_engine() as engine:
        assert not engine.external and engine.address.startswith("inproc://")  # worker threads, shared memory
        assert engine.dashboard is None or engine.dashboard.startswith("http://127.0.0.1:")
        assert engine.workers * 1 == machine_cores() and engine.threads == machine_cores()
        client = engine.client
    assert client.status == "closed"


def test_model_inputs_carry_what_the_recipe_orders_rows_by():
    from lepton.core.inputs import input_frame

    spec = get_spec("manufacturing")
    frame = _raw("manufacturing").head(5)
    inputs = input_frame(spec, frame)
    assert list(inputs.columns)[-2:] == ["run", "sample"] and len(inputs.columns) == len(spec.feature_columns) + 2
    messy = frame.with_columns(pl.lit("n/a").alias("xmeas_1"))
    assert input_frame(spec, messy, strict=False)["xmeas_1"].isna().all()
    with pytest.raises(pl.exceptions.InvalidOperationError):
        input_frame(spec, messy)


def test_row_wise_recipes_on_edge_values_and_one_row_at_a_time():
    """The credit recipe on values at its edges (zero and missing denominators, rates on band
    edges, missing text), as a frame (training) and row by row as a mapping (serving)."""
    frame = pl.DataFrame(
        {
            "funded_amnt": [1000.0, 1000.0, None, 5000.0],
            "annual_inc": [0.0, 50000.0, 1.0, None],
            "total_bal_il": [1.0, 2.0, 3.0, 4.0],
            "total_il_high_credit_limit": [2.0, -1.0, None, 8.0],
            "inq_last_6mths": [1, None, 2, None],
            "inq_fi": [None, None, 3, None],
            "sub_grade": ["B3", None, "", "G5"],
            "int_rate": [7.0, 7.01, None, 30.0],
        }
    )
    config = recipes.RecipeConfig(name="credit", window=10)
    out = recipes.apply(config, frame)
    assert out["loan_to_income"].to_list() == [None, 0.02, None, None]
    assert out["il_utilisation"].to_list() == [0.5, None, None, 0.5]
    assert out["inquiries_total"].to_list() == [1.0, 0.0, 5.0, 0.0]
    assert out["grade"].to_list() == ["B", None, "", "G"]
    assert out["rate_band"].to_list() == [0, 1, None, 5]
    for i in range(frame.height):
        row = {name: frame[name].slice(i, 1).to_numpy() for name in frame.columns}
        one = recipes.derive(config, row)
        for name, _ in recipes.outputs(config):
            expected = out[name][i]
            got = one[name][0]
            if expected is None:
                assert got is None or np.isnan(got), name
            else:
                assert got == expected, name


def test_clinical_recipe_keeps_missing_values_missing():
    frame = pl.DataFrame({"kappa": [1.0, None], "lambda": [2.0, 1.0], "age": [59.9, None], "creatinine": [1.3, None]})
    out = recipes.apply(recipes.RecipeConfig(name="clinical", window=10), frame)
    assert out["flc_total"].to_list() == [3.0, None]
    assert out["kappa_lambda_ratio"].to_list() == [0.5, None]
    assert out["age_decade"].to_list() == [5, None]
    assert out["creatinine_raised"].to_list() == [1, None]
