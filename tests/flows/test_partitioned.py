"""Tables stored as many files, checked, split and encoded on a real Dask cluster's worker
processes (``lepton.tasks.scan``), on the vendored public samples cut into partitions: the split
does not depend on the partitioning, a bad value in the last file is named with its file and row
before anything is recorded, and a partitioned table trains, registers and monitors end to end."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from lepton.app.cli import app
from lepton.core.partitions import open_dataset
from lepton.domains import get_spec
from lepton.errors import InputPathError, SchemaError
from lepton.tasks.preprocess import split_frame, validate_tables
from lepton.tasks.scan import check_table, prepare_table

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]


def _sample(name: str) -> pl.DataFrame:
    spec = get_spec(name)
    return pl.read_parquet(spec.data.resolve(spec.data.path))


def _write(frame: pl.DataFrame, folder, files: int, seed: int, csv: bool = False) -> str:
    """``frame``'s rows shuffled and cut into ``files`` files under ``folder``."""
    folder.mkdir(parents=True)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    for i, rows in enumerate(np.array_split(np.arange(frame.height), files)):
        part = shuffled[rows]
        if csv:
            part.write_csv(folder / f"part-{i:03d}.csv")
        else:
            part.write_parquet(folder / f"part-{i:03d}.parquet")
    return str(folder)


def _split(spec, path, client, search_rows=1_000_000):
    return prepare_table(spec, check_table(spec, open_dataset(path), client), client, search_rows)


def test_the_split_is_the_same_for_any_partitioning(dask_cluster, tmp_path):
    spec, frame = get_spec("finance"), _sample("finance")
    three = _write(frame, tmp_path / "three", 3, seed=1)
    seven = _write(frame, tmp_path / "seven", 7, seed=2, csv=True)
    a = _split(spec, three, dask_cluster, search_rows=1_000)
    b = _split(spec, f"{seven}/part-*.csv", dask_cluster, search_rows=1_000)

    assert a.fingerprint == b.fingerprint
    assert sorted(a.holdout.frame["rownames"]) == sorted(b.holdout.frame["rownames"])
    assert a.train.frame["rownames"].to_list() == b.train.frame["rownames"].to_list()  # same sample, same order
    assert np.array_equal(a.train.X, b.train.X, equal_nan=True) and a.encoder == b.encoder
    assert [a.rows(s) for s in ("train", "valid", "holdout")] == [b.rows(s) for s in ("train", "valid", "holdout")]
    assert a.train.rows == 1_000 < a.rows("train")  # the driver holds a sample of the training side
    assert a.rows("holdout") == pytest.approx(0.2 * frame.height, rel=0.1)
    assert set(a.holdout.frame["rownames"]).isdisjoint(a.train.frame["rownames"])
    # the encoded rows stay on the workers, one block per file
    assert len(a.table.sources) == 3 and sum(a.table.rows["train"]) == a.rows("train")


def test_the_driver_samples_stay_within_their_byte_budget(dask_cluster, tmp_path, monkeypatch):
    """Whatever the table's width, the driver holds at most SAMPLE_MIB of encoded training rows
    (half of it for validation and holdout); the counts still describe the whole table."""
    from lepton.tasks import scan

    spec = get_spec("finance")
    frame = _sample("finance")
    monkeypatch.setattr(scan, "SAMPLE_MIB", 1)
    data = _split(spec, _write(frame, tmp_path / "three", 3, seed=1), dask_cluster)
    assert data.train.X.nbytes <= 2**20 < data.rows("train") * data.train.X.shape[1] * 4
    assert data.valid.X.nbytes <= 2**19 and data.holdout.X.nbytes <= 2**19
    assert data.train.rows == 2**20 // (4 * data.train.X.shape[1])  # as many as fit: a uniform sample
    assert data.rows("train") + data.rows("valid") + data.rows("holdout") == frame.height


def test_the_fit_reads_each_file_again_as_the_scan_split_it_and_refuses_a_changed_one(dask_cluster, tmp_path):
    """Workers do not hold the table between stages: the final fit reads each file again
    (``WorkerTable.read``), which gives the rows and sides the scan counted, and refuses a file
    whose rows changed since, naming it."""
    from lepton.errors import DataError
    from lepton.tasks.scan import SIDE, TRAIN, VALID

    spec = get_spec("finance")
    folder = tmp_path / "three"
    data = _split(spec, _write(_sample("finance"), folder, 3, seed=1), dask_cluster)
    table = data.table
    for i, (partition, role, digest) in enumerate(table.sources):
        sides = table.read(partition, role, digest)[SIDE]
        assert ((sides == TRAIN).sum(), (sides == VALID).sum()) == (table.rows["train"][i], table.rows["valid"][i])
    partition, role, digest = table.sources[1]
    changed = pl.read_parquet(partition.path).head(-1)  # one row fewer than the scan saw
    changed.write_parquet(partition.path)
    with pytest.raises(DataError, match=f"{partition.name} changed while the run was using it"):
        table.read(partition, role, digest)


def test_the_holdout_metrics_read_a_bounded_draw_the_same_for_any_partitioning(dask_cluster, tmp_path, monkeypatch):
    """Past METRIC_ROWS holdout rows the metrics read a uniform draw of that many (the driver's
    memory must not grow with the table): the same rows whatever the files."""
    import xgboost

    from lepton.tasks import scan

    spec, frame = get_spec("finance"), _sample("finance")
    a = _split(spec, _write(frame, tmp_path / "three", 3, seed=1), dask_cluster)
    b = _split(spec, _write(frame, tmp_path / "five", 5, seed=2, csv=True), dask_cluster)
    model = xgboost.XGBRegressor(n_estimators=5, max_depth=3).fit(a.train.X, a.train.y)
    whole = scan.score_holdout(dask_cluster, a.table, (model,), spec)
    assert whole.rows == a.rows("holdout")  # under the limit: every row
    monkeypatch.setattr(scan, "METRIC_ROWS", whole.rows // 4)
    drawn = [scan.score_holdout(dask_cluster, t.table, (model,), spec) for t in (a, b)]
    assert drawn[0].rows == pytest.approx(whole.rows / 4, rel=0.2) and drawn[0].rows == drawn[1].rows
    assert np.allclose(np.sort(drawn[0].scores[0]), np.sort(drawn[1].scores[0]))  # the same rows
    assert np.isin(drawn[0].scores[0], whole.scores[0]).all()


def test_a_time_split_cuts_where_sorting_every_row_would(dask_cluster, tmp_path):
    """The medical sample (a time split on the sampling year, many rows per year) in hive
    folders by sex: the same holdout and validation rows as the single-file path."""
    spec, frame = get_spec("medical"), _sample("medical")
    root = tmp_path / "medical"
    for sex, rows in frame.group_by("sex"):
        (root / f"sex={sex[0]}").mkdir(parents=True)
        rows.drop("sex").write_parquet(root / f"sex={sex[0]}" / "part-0.parquet")
    scanned = _split(spec, root, dask_cluster)

    train, valid, holdout = split_frame(validate_tables(spec, frame).frame, spec)
    assert sorted(scanned.holdout.frame["rownames"]) == sorted(holdout["rownames"])
    assert sorted(scanned.valid.frame["rownames"]) == sorted(valid["rownames"])
    assert scanned.rows("train") == train.height
    assert set(scanned.train.frame["sex"]) == set(frame["sex"])  # the folder's key is a column again


def test_a_bad_value_in_the_last_file_is_named_before_anything_is_recorded(nothing_recorded, tmp_path):
    folder = tmp_path / "loans"
    _write(_sample("finance"), folder, 4, seed=3)
    last = folder / "part-003.parquet"
    rows = pl.read_parquet(last)
    bad = pl.when(pl.int_range(pl.len()) == 41).then(pl.lit("twelve")).otherwise(pl.col("int_rate").cast(pl.String))
    rows.with_columns(bad.alias("int_rate")).write_parquet(last)

    result = CliRunner().invoke(app, ["run", "finance", "--data", str(folder), "--trials", "0"])
    assert result.exit_code == 2, result.output
    assert "column 'int_rate': wrong dtype" in result.stderr
    assert f"{last}: expected float, row 42 holds 'twelve'" in " ".join(result.stderr.split())
    nothing_recorded()


@pytest.mark.slow  # a whole run through the CLI: about 90 s on 2 cores
def test_a_partitioned_table_trains_registers_and_monitors(lepton_home, tmp_path):
    """A stranger's folder of files through the CLI: the spec inferred from its first file, then
    the whole run on the cluster, registered and monitored."""
    folder = _write(_sample("finance"), tmp_path / "loans", 4, seed=4)
    done = CliRunner().invoke(app, ["run", "--data", folder, "--target", "Class", "--trials", "2", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["domain"] == "loans" and result["version"] == "1"
    # The first version is judged like any other: on 2,000 holdout rows the chosen model may fall
    # within the noise below the baseline, and then it is registered as a challenger, saying so.
    beats = result["metrics"]["roc_auc"] >= result["baseline_metrics"]["roc_auc"]
    assert result["promoted"] == beats, result["reasons"]
    if not beats:
        assert result["reasons"][0].startswith("worse than the baseline on roc_auc")
    assert result["metrics"]["roc_auc"] > result["baseline_metrics"]["roc_auc"] - 0.05
    assert result["engine"]["feature_partitions"] == 4
    if result["family"] == "xgboost":  # a table this small is all in the driver's samples: fitted there, as one file
        assert result["engine"]["trained_on"].endswith(" rows, one process"), result["engine"]["trained_on"]
    assert "inferred from its first file" in " ".join(done.stderr.split())
    assert any("split on the workers into" in note for note in result["notes"])
    from mlflow import MlflowClient

    alias = "champion" if result["promoted"] else "challenger"
    assert str(MlflowClient().get_model_version_by_alias("lepton-loans", alias).version) == "1"
    monitored = [a.path for a in MlflowClient().list_artifacts(result["run_id"], "monitor")]
    assert "monitor/holdout_drift.json" in monitored  # the monitor ran on the holdout's sample

    # the same files again: the earlier run is the answer, found from the files' listing alone
    again = CliRunner().invoke(app, ["run", "--data", folder, "--target", "Class", "--trials", "2", "--json"])
    assert again.exit_code == 0, again.output
    repeated = json.loads(again.stdout.strip().splitlines()[-1])
    assert repeated["up_to_date"] and repeated["run_id"] == result["run_id"] and repeated["version"] == "1"


def test_a_tables_identity_changes_with_any_of_its_files(tmp_path):
    """The stage cache's key for a table of many files: its files' names, sizes and times,
    listed without reading a row."""
    import os

    folder = _write(_sample("finance"), tmp_path / "loans", 3, seed=1)
    first = open_dataset(folder).identity
    assert first is not None and open_dataset(folder).identity == first
    assert open_dataset(f"{folder}/part-00[01].parquet").identity != first  # two of the three files
    touched = tmp_path / "loans" / "part-001.parquet"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 1))
    assert open_dataset(folder).identity not in (None, first)  # touched: the stamp cannot tell, so run again


def test_dataset_paths_are_checked(tmp_path):
    with pytest.raises(InputPathError, match="no CSV or Parquet files"):
        open_dataset(tmp_path)
    (tmp_path / "a.parquet").write_bytes(b"")
    (tmp_path / "b.csv").write_text("x\n1\n")
    with pytest.raises(InputPathError, match="mixes CSV and Parquet"):
        open_dataset(tmp_path)
    (tmp_path / "a.parquet").unlink()
    (tmp_path / "_SUCCESS").write_text("")  # what Spark leaves beside its files is not data
    assert [p.path.name for p in open_dataset(tmp_path).partitions] == ["b.csv"]
    with pytest.raises(InputPathError, match="no CSV or Parquet files"):
        open_dataset(tmp_path / "nothing-*.parquet")


def test_groups_that_span_files_are_refused_for_rolling_features(dask_cluster, tmp_path):
    spec, frame = get_spec("manufacturing"), _sample("manufacturing")
    folder = _write(frame, tmp_path / "runs", 2, seed=5)  # shuffled: every run in both files
    with pytest.raises(SchemaError, match="is in both"):
        check_table(spec, open_dataset(folder), dask_cluster)


@pytest.mark.slow  # TEP's rolling features and a fit across the cluster, twice: minutes on 2 cores
def test_a_refit_on_train_and_validation_uses_every_row_where_it_lies(lepton_home, tmp_path, monkeypatch):
    """TEP refits its chosen model on train + validation (its validation holds the later fault
    dynamics): for a partitioned table that refit runs on the workers over both sides of every
    file, not on the driver's samples."""
    from lepton.flows.pipeline import pipeline

    spec = get_spec("manufacturing")
    # Normal operation and two subtle faults (no one column gives them away): three trees a
    # round, not 22 (each tree level is a network round of the workers' collective), so the two
    # fits on the cluster take seconds, not minutes.
    kept = pl.col(spec.target).is_in([0, 3, 9])
    runs = _sample("manufacturing").filter(kept).partition_by(spec.group_column, maintain_order=True)
    folder = tmp_path / "tep"  # whole runs per file, as rolling features need
    folder.mkdir()
    for i, chunk in enumerate(np.array_split(np.arange(len(runs)), 3)):
        pl.concat([runs[k] for k in chunk]).write_parquet(folder / f"part-{i}.parquet")
    test = tmp_path / "tep_test.parquet"
    pl.read_parquet(spec.data.resolve(spec.data.holdout_path)).filter(kept).write_parquet(test)
    monkeypatch.setenv("LEPTON_DISTRIBUTED_ROWS", "0")  # this small table too is fitted on the cluster

    result = pipeline(domain="manufacturing", trials=0, data=str(folder), holdout=str(test), cache=False)
    assert result.family == "xgboost", "the default tree is TEP's model: the refit under test is a tree refit"
    table_rows = sum(runs[k].height for k in range(len(runs)))
    trained_on = f"{table_rows:,} rows, XGBoost across"
    # every training and validation row, on the workers (a refit on the driver's samples said
    # "one process" and counted the samples' rows)
    assert result.engine.trained_on.startswith(trained_on), result.engine.trained_on


def test_the_final_fit_on_the_workers_splits_categoricals_natively(dask_cluster, tmp_path, monkeypatch):
    """From ``NATIVE_CATEGORIES_ROWS`` training rows the trees fold each one-hot block into one
    column of level codes, on the workers as each file is read: the booster has a categorical
    feature per categorical column, and the bundle's model, given the one-hot holdout, scores it
    as the booster does on the codes and separates the classes as the one-hot fit does."""
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    from lepton.core.scoring import TreeModel, category_blocks, compact
    from lepton.tasks.families import trees

    spec = get_spec("finance")
    data = _split(spec, _write(_sample("finance"), tmp_path / "three", 3, seed=2), dask_cluster)
    params = {"max_depth": 4, "learning_rate": 0.1, "n_estimators": 200}
    one_hot = trees.Trees().fit(spec, data, params, client=dask_cluster)
    monkeypatch.setattr(trees, "NATIVE_CATEGORIES_ROWS", 1000)  # decided on the driver, sent to the workers
    native = trees.Trees().fit(spec, data, params, client=dask_cluster)
    assert native.workers == 2

    width = data.holdout.X.shape[1]
    blocks = category_blocks(data.encoder)
    model = TreeModel(native.payload, spec.task, width)
    assert model.blocks == blocks and len(blocks) == len(data.encoder["categorical"]) > 0
    assert model.booster.feature_types.count("c") == len(blocks)
    assert TreeModel(one_hot.payload, spec.task, width).booster.num_features() == width

    codes = compact(data.holdout.X, blocks)
    types = model.booster.feature_types
    direct = model.booster.predict(xgb.DMatrix(codes, feature_types=types, enable_categorical=True))
    np.testing.assert_allclose(model.predict(data.holdout.X), direct, rtol=1e-6)
    auc = {
        name: roc_auc_score(data.holdout.y, TreeModel(fit.payload, spec.task, width).predict(data.holdout.X))
        for name, fit in (("one-hot", one_hot), ("native", native))
    }
    assert auc["native"] > 0.68 and abs(auc["native"] - auc["one-hot"]) < 0.03, auc


def test_the_whole_holdout_is_scored_where_it_lies(dask_cluster, tmp_path, monkeypatch):
    """The holdout metrics read every holdout row, scored on the workers file by file
    (``score_holdout``): the same labels and scores as scoring those rows in one process, however
    few of them the driver's sample holds."""
    from types import SimpleNamespace

    from sklearn.metrics import roc_auc_score

    from lepton.tasks import scan
    from lepton.tasks.evaluation import evaluate_holdout
    from lepton.tasks.train import BASELINE_PARAMS, train_model

    spec = get_spec("finance")
    folder = _write(_sample("finance"), tmp_path / "three", 3, seed=1)
    whole = _split(spec, folder, dask_cluster)  # a small table: the driver's sample is its whole holdout
    model = train_model(spec, whole, "linear", BASELINE_PARAMS)
    here = model.predict(whole.holdout.X)
    scored = scan.score_holdout(dask_cluster, whole.table, (model,), spec)
    assert scored.rows == whole.rows("holdout") == whole.holdout.rows
    assert sorted(scored.y) == sorted(whole.holdout.y)
    np.testing.assert_allclose(np.sort(scored.scores[0]), np.sort(here), rtol=1e-5)

    monkeypatch.setattr(scan, "SAMPLE_MIB", 1)  # the driver now holds only part of the holdout
    sampled = _split(spec, folder, dask_cluster)
    assert sampled.holdout.rows < sampled.rows("holdout") == whole.rows("holdout")
    trained, opt = SimpleNamespace(baseline=model), SimpleNamespace(candidate=model, threshold=0.5)
    evaluation = evaluate_holdout(spec, sampled, trained, opt, dask_cluster)  # type: ignore[arg-type]
    assert evaluation.rows == whole.rows("holdout")
    assert evaluation.metrics["roc_auc"] == pytest.approx(roc_auc_score(whole.holdout.y, here), abs=1e-9)
    assert len(evaluation.scores) == sampled.holdout.rows  # the sample's own scores, for the paired test
