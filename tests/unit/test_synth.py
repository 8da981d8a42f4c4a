"""lepton synth: more rows in the domain's schema, with the real dependence on the target."""

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from lepton.app.cli import app
from lepton.core.tables import read_table
from lepton.domains import get_spec
from lepton.tasks.preprocess import validate
from lepton.tasks.synth import synthesize, write_synthetic


def _source(name):
    spec = get_spec(name)
    return spec, read_table(spec.data.resolve(spec.data.path))


def test_synthetic_finance_rows_keep_the_schema_and_the_dependence_on_the_target():
    spec, source = _source("finance")
    synthetic = pl.concat(list(synthesize(spec, source, 30_000, seed=3)))
    assert synthetic.height == 30_000 and synthetic.columns == source.columns
    validate(synthetic, spec)  # the domain's schema holds
    assert synthetic["rownames"].n_unique() == 30_000  # ids renumbered
    bad = (synthetic["Class"] == "bad").to_numpy()
    real_bad = (source["Class"] == "bad").to_numpy()
    auc = roc_auc_score(bad, synthetic["int_rate"].to_numpy())
    assert auc == pytest.approx(roc_auc_score(real_bad, source["int_rate"].to_numpy()), abs=0.03) and auc > 0.6
    assert not synthetic["int_rate"].is_in(source["int_rate"].implode()).all()  # jittered, not copied


def test_synthetic_labels_are_drawn_so_a_model_cannot_memorise_its_way_to_a_perfect_holdout():
    import xgboost as xgb

    from lepton.tasks.preprocess import prepare

    spec, source = _source("finance")
    synthetic = pl.concat(list(synthesize(spec, source, 40_000, seed=5)))
    data = prepare(spec, synthetic)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 8, "verbosity": 0},
                        xgb.DMatrix(data.train.X, data.train.y), 300)  # fmt: skip
    auc = roc_auc_score(data.holdout.y, booster.inplace_predict(data.holdout.X))
    # Copied labels gave 1.000 here at a million rows (jittered duplicates on both sides of the
    # split); drawn labels keep it near what the real table allows (about 0.75).
    assert 0.6 < auc < 0.9


def test_synthetic_tep_runs_are_whole_real_runs_renumbered():
    spec, source = _source("manufacturing")
    synthetic = pl.concat(list(synthesize(spec, source, 5_000, seed=1)))
    assert synthetic.height == 5_000
    for _, run in synthetic.group_by("run"):
        samples = run["sample"].to_numpy()
        assert (np.diff(samples) > 0).all()  # a time series, in order
        assert run["fault"].n_unique() == 1  # one real training run's label


def test_cli_writes_parquet_and_a_holdout_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "tep.parquet"
    runner = CliRunner()
    done = runner.invoke(app, ["synth", "manufacturing", "--rows", "2000", "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert pl.read_parquet(out).height == 2000 and pl.read_parquet(tmp_path / "tep_holdout.parquet").height == 2000
    again = runner.invoke(app, ["synth", "manufacturing", "--rows", "10", "-o", str(out)])
    assert again.exit_code == 2 and "exists; pass --force" in again.stderr
    csv = tmp_path / "fin.csv"
    spec, source = _source("finance")
    assert write_synthetic(spec, source, 1234, csv) == 1234 and read_table(csv).height == 1234


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import lepton.tasks.synth

    spec, source = _source("finance")
    real = lepton.tasks.synth.synthesize

    def fails_after_one_chunk(*args, **kwargs):
        yield next(real(*args, **kwargs))
        raise OSError("disk full")  # injected after the first chunk is on disk

    monkeypatch.setattr(lepton.tasks.synth, "synthesize", fails_after_one_chunk)
    for name in ("out.parquet", "out.csv"):
        with pytest.raises(OSError, match="disk full"):
            write_synthetic(spec, source, 10, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_a_folder_of_files_that_holds_every_row_once(tmp_path):
    out = tmp_path / "loans"
    runner = CliRunner()
    done = runner.invoke(app, ["synth", "finance", "--rows", "5000", "--files", "3", "-o", str(out)])
    assert done.exit_code == 0, done.output
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    ids = pl.concat([pl.read_parquet(f) for f in files])["rownames"]
    assert ids.len() == 5000 and ids.n_unique() == 5000
    again = runner.invoke(app, ["synth", "finance", "--rows", "10", "--files", "2", "-o", str(out)])
    assert again.exit_code == 2 and "exists; pass --force" in again.stderr
    forced = runner.invoke(app, ["synth", "finance", "--rows", "10", "--files", "2", "-o", str(out), "--force"])
    assert forced.exit_code == 0
    assert sum(pl.read_parquet(f).height for f in out.iterdir()) == 10


@pytest.mark.parametrize("files", [1, 3])
def test_a_holdout_written_beside_a_table_shares_no_series_with_it(tmp_path, files):
    # A given test split refuses a series found on both sides (it would leak), so the holdout's
    # runs must be numbered after the table's, in a file or a folder alike.
    out = tmp_path / ("tep.parquet" if files == 1 else "tep")
    done = CliRunner().invoke(app, ["synth", "manufacturing", "--rows", "3000", "--files", str(files), "-o", str(out)])
    assert done.exit_code == 0, done.output
    holdout = tmp_path / ("tep_holdout.parquet" if files == 1 else "tep_holdout")
    train, test = (pl.read_parquet(p if files == 1 else p / "*.parquet") for p in (out, holdout))
    assert train.height == test.height == 3000
    assert set(train["run"]).isdisjoint(test["run"])
    assert test["run"].min() >= train["run"].n_unique()
