"""Bad input through the real CLI and flow: a typed error naming the column, exit 2, nothing
registered and no run marked finished."""

import polars as pl
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from domains import get_spec
from lepton import tracking
from lepton.cli import app
from lepton.settings import load_settings

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
SPEC = get_spec("finance")


def _sample() -> pl.DataFrame:
    return pl.read_parquet(SPEC.data.resolve(SPEC.data.path)).head(400)


def _nothing_recorded():
    tracking.configure(load_settings())
    client = MlflowClient()
    assert client.search_registered_models() == []
    experiment = client.get_experiment_by_name(SPEC.model_name)
    if experiment is not None:
        assert all(r.info.status != "FINISHED" for r in client.search_runs([experiment.experiment_id]))


BAD_INPUTS = {
    "missing_target": (lambda f: f.drop("Class"), "column 'Class': missing column"),
    "wrong_dtype": (
        lambda f: f.with_columns(pl.col("int_rate").cast(pl.String).str.replace(r"^1", "x")),
        "column 'int_rate': wrong dtype",
    ),
    "all_null": (
        lambda f: f.with_columns(pl.lit(None, dtype=pl.Float64).alias("annual_inc")),
        "column 'annual_inc': all null",
    ),
    "single_class": (lambda f: f.with_columns(pl.lit("good").alias("Class")), "column 'Class': single class"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_typed_error_and_registers_nothing(lepton_home, tmp_path, case):
    mutate, expected = BAD_INPUTS[case]
    path = tmp_path / f"{case}.csv"
    mutate(_sample()).write_csv(path)
    result = CliRunner().invoke(app, ["run", "finance", "--data", str(path), "--trials", "0"])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    _nothing_recorded()


def test_empty_file_is_refused(lepton_home, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    result = CliRunner().invoke(app, ["run", "finance", "--data", str(path)])
    assert result.exit_code == 2
    assert "empty" in result.stderr
    _nothing_recorded()


def test_header_only_file_is_refused(lepton_home, tmp_path):
    path = tmp_path / "header.csv"
    path.write_text(",".join(_sample().columns) + "\n")
    result = CliRunner().invoke(app, ["run", "finance", "--data", str(path)])
    assert result.exit_code == 2
    assert "no data rows" in result.stderr
    _nothing_recorded()


def test_unknown_domain_exits_2():
    result = CliRunner().invoke(app, ["run", "astrology"])
    assert result.exit_code == 2
    assert "unknown domain" in result.stderr
