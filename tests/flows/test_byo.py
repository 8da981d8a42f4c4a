"""Bring your own table, end to end on real Prefect and a temporary MLflow store: a messy CSV
from the CLI and from Python, a DataFrame, a spec written by `lepton init`; PII never logged."""

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest
from typer.testing import CliRunner

import lepton
from bench.real_tables import TABLES, frame
from lepton.app.cli import app

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]

FIRST = ["Ann", "Bojan", "Chidi", "Dagny", "Emeka", "Fumiko"]
LAST = ["Quist", "Rasmussen", "Szabo", "Tanaka", "Umeh", "Varga"]


def _with_personal_data(table: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """A real table plus the kind of columns a CRM export carries: names, emails, phones, dates."""
    rng = np.random.default_rng(seed)
    n = table.height
    first = rng.choice(FIRST, n)
    last = rng.choice(LAST, n)
    return table.with_columns(
        pl.Series("customer_name", [f"{f} {s}" for f, s in zip(first, last, strict=True)]),
        pl.Series("contact", [f"{f.lower()}.{s.lower()}{i}@mail-example.org" for i, (f, s) in
                              enumerate(zip(first, last, strict=True))]),
        pl.Series("mobile", [f"+44 7700 {rng.integers(100000, 999999)}" for _ in range(n)]),
        pl.Series("opened", [f"2019-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)]),
        pl.Series("utilisation", [f"{v:.1f}%" for v in rng.uniform(0, 100, n)]),
    )  # fmt: skip


def _stored_bytes(home) -> bytes:
    """Everything MLflow kept: the SQLite store and every artifact file."""
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file())


def test_messy_csv_with_text_target_and_pii_gets_a_champion_from_python(lepton_home, tmp_path):
    table = _with_personal_data(frame(TABLES["credit-default"]).drop("rownames").head(3000))
    table = table.rename({"balance": "Balance (€)", "income": "annual.income"})  # names as exports have them
    path = tmp_path / "customers.csv"
    # A European spreadsheet export: semicolons, a byte-order mark.
    path.write_bytes(b"\xef\xbb\xbf" + table.write_csv(separator=";").encode())

    result = lepton.run(data=path, target="default", template="finance", trials=2)

    spec = result.spec
    roles = {c.name: c.role.value for c in spec.columns}
    assert roles["customer_name"] == roles["contact"] == roles["mobile"] == "pii"
    assert spec.positive_class == "Yes" and spec.task == "binary" and spec.name == "customers"
    assert {c.name: c.dtype.value for c in spec.columns}["opened"] == "datetime"
    assert {"Balance (€)", "annual.income"} <= {c.name for c in spec.feature_columns}
    notes = "\n".join(result.notes)
    assert "delimiter ';' sniffed" in notes and "'utilisation': percentages read as numbers" in notes
    assert "positive class: 'Yes'" in notes and "'contact': personal data" in notes

    metric = result.primary_metric
    assert result.promoted and result.alias == "champion" and result.version == "1"
    assert result.metrics[metric] >= result.baseline_metrics[metric] > 0.85
    assert result.model_uri == "models:/lepton-customers/1"

    scored = result.predict(table.head(50))
    assert set(scored["prediction"]) <= {"Yes", "No"} and len(scored) == 50
    assert scored["score"].between(0, 1).all()

    stored = _stored_bytes(lepton_home)
    for secret in [*table["contact"].head(200).to_list(), *table["mobile"].head(200).to_list(), "Rasmussen"]:
        assert secret.encode() not in stored, f"{secret!r} reached the tracking store"


def test_a_dataframe_regression_runs_from_python_and_keeps_a_copy_without_pii(lepton_home):
    data = frame(TABLES["concrete"]).drop("rownames").to_pandas()
    data["operator_email"] = [f"op{i % 9}@plant-example.com" for i in range(len(data))]

    result = lepton.run(data=data, target="compressive_strength", name="concrete", trials=1)

    assert result.spec.task == "regression" and result.primary_metric == "r2"
    assert result.metrics["r2"] >= result.baseline_metrics["r2"] > 0.5
    assert {"rmse", "mae"} <= set(result.metrics)
    copies = list((lepton_home / "inputs").glob("concrete-*.parquet"))
    assert len(copies) == 1 and "operator_email" not in pl.read_parquet(copies[0]).columns
    predicted = result.predict(data.head(10))["prediction"]
    assert len(predicted) == 10 and np.isfinite(predicted).all()
    assert b"plant-example.com" not in _stored_bytes(lepton_home / "artifacts")

    # its errors on validation, given the prediction, estimate a batch that comes without labels
    from lepton.flows.monitor import monitor

    batch = lepton_home / "batch.parquet"
    pl.from_pandas(data.drop(columns=["compressive_strength", "operator_email"])).write_parquet(batch)
    estimated = monitor(result.spec, str(batch)).estimated
    assert estimated is not None and estimated["metric"] == "r2" and estimated["calibration"] == "residuals"
    assert estimated["lower"] <= estimated["value"] <= estimated["upper"] <= 1.0


def test_cli_infers_a_multiclass_table_and_init_writes_a_spec_run_reads(lepton_home, tmp_path):
    table = frame(TABLES["hpc-jobs"]).drop("rownames")
    path = tmp_path / "jobs.csv"
    table.to_pandas().to_csv(path)  # with pandas' unnamed index column

    runner = CliRunner()
    direct = runner.invoke(app, ["run", "--data", str(path), "--target", "class", "--trials", "1", "--json"])
    assert direct.exit_code == 0, direct.output
    first = json.loads(direct.stdout.strip().splitlines()[-1])
    assert first["model_name"] == "lepton-jobs" and first["primary_metric"] == "f1_macro"
    assert first["metrics"]["f1_macro"] >= first["baseline_metrics"]["f1_macro"]
    assert "task: multiclass (4 text values)" in direct.stderr
    assert "'column_0': unique per row" in direct.stderr

    spec_file = tmp_path / "jobs.yaml"
    written = runner.invoke(
        app,
        ["init", str(path), "--target", "class", "--name", "jobs", "--drop-cols", "num_pending", "-o", str(spec_file)],
    )
    assert written.exit_code == 0, written.output
    text = spec_file.read_text()
    assert "path: jobs.csv" in text and "num_pending" not in text.split("columns:")[1]
    refused = runner.invoke(app, ["init", str(path), "--target", "class", "-o", str(spec_file)])
    assert refused.exit_code == 2 and "exists; pass --force" in refused.stderr

    again = runner.invoke(app, ["run", "--spec", str(spec_file), "--trials", "1", "--json"])
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["model_name"] == "lepton-jobs" and second["version"] == "2"


def test_python_api_refuses_ambiguous_requests(lepton_home):
    from lepton.errors import SpecError

    with pytest.raises(SpecError, match="exactly one of"):
        lepton.run(data="x.csv", target="y", domain="finance")
    with pytest.raises(SpecError, match="a path or a polars/pandas DataFrame"):
        lepton.run(data=[1, 2, 3], target="y")
    with pytest.raises(SpecError, match="task"):
        lepton.run(data=pd.DataFrame({"y": [1, 2]}), target="y", task="ranking")


def test_a_separate_test_file_becomes_the_holdout(lepton_home, tmp_path):
    table = frame(TABLES["credit-status"]).drop("rownames")
    train, test = tmp_path / "train.csv", tmp_path / "test.parquet"
    table.head(3000).write_csv(train)
    table.tail(1000).write_parquet(test)

    result = lepton.run(data=train, target="Status", holdout=test, trials=0)

    assert result.spec.split.kind == "given" and result.spec.data.holdout_path == str(test)
    assert any("the holdout is test.parquet" in n for n in result.notes)
    from mlflow import MlflowClient

    params = MlflowClient().get_run(result.pipeline.run_id).data.params
    assert params["rows_holdout"] == "1000" and params["split"] == "given"
    assert int(params["rows_train"]) + int(params["rows_valid"]) == 3000
