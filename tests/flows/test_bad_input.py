"""Bad input through the real CLI and flow: a typed error naming the column, exit 2, nothing
registered and no run marked finished."""

import re

import polars as pl
import pytest
from typer.testing import CliRunner

from lepton.app.cli import app
from lepton.domains import get_spec

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
SPEC = get_spec("finance")


def _sample() -> pl.DataFrame:
    return pl.read_parquet(SPEC.data.resolve(SPEC.data.path)).head(400)


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
def test_bad_input_gives_typed_error_and_registers_nothing(nothing_recorded, tmp_path, case):
    mutate, expected = BAD_INPUTS[case]
    path = tmp_path / f"{case}.csv"
    mutate(_sample()).write_csv(path)
    result = CliRunner().invoke(app, ["run", "finance", "--data", str(path), "--trials", "0"])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    nothing_recorded()


def test_empty_file_is_refused(nothing_recorded, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    result = CliRunner().invoke(app, ["run", "finance", "--data", str(path)])
    assert result.exit_code == 2
    assert "empty" in result.stderr
    nothing_recorded()


def test_header_only_file_is_refused(nothing_recorded, tmp_path):
    path = tmp_path / "header.csv"
    path.write_text(",".join(_sample().columns) + "\n")
    result = CliRunner().invoke(app, ["run", "finance", "--data", str(path)])
    assert result.exit_code == 2
    assert "no data rows" in result.stderr
    nothing_recorded()


def test_unknown_domain_exits_2():
    result = CliRunner().invoke(app, ["run", "astrology"])
    assert result.exit_code == 2
    assert "unknown domain" in result.stderr


# ---- bring-your-own tables: every malformed case names its cause, exits 2, records nothing ----
def _byo_table(n: int = 300) -> pl.DataFrame:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    return pl.DataFrame(
        {
            "amount": x,
            "grade": rng.choice(["A", "B", "C"], n),
            "outcome": np.where(x + rng.normal(size=n) > 0.8, "bad", "good"),
        }
    )


def _write_csv(frame: pl.DataFrame, path):
    frame.write_csv(path)
    return path


def _put(folder, content: bytes):
    (folder / "t.csv").write_bytes(content)
    return folder / "t.csv"


BYO_CASES = {
    "leaky_feature": (
        lambda d: _write_csv(_byo_table().with_columns(pl.col("outcome").alias("final_status")), d / "t.csv"),
        ["--target", "outcome"],
        "'final_status' (alone): alone roc_auc 1.0000",
    ),
    "not_utf8": (
        lambda d: _put(d, b"city,outcome\n" + "Zürich,bad\n".encode("latin-1") * 40),
        ["--target", "outcome"],
        "not UTF-8",
    ),
    "duplicate_columns": (
        lambda d: _put(d, b"a,a,outcome\n" + b"1,2,bad\n3,4,good\n" * 30),
        ["--target", "outcome"],
        "column 'a': duplicate column",
    ),
    "target_misspelt": (
        lambda d: _write_csv(_byo_table(), d / "t.csv"),
        ["--target", "Outcome"],
        "no column 'Outcome' in the data; did you mean ['outcome']?",
    ),
    "positive_class_absent": (
        lambda d: _write_csv(_byo_table(), d / "t.csv"),
        ["--target", "outcome", "--positive-class", "default"],
        "--positive-class: 'default' never occurs",
    ),
    "binary_with_three_classes": (
        lambda d: _write_csv(_byo_table().with_columns(pl.Series("outcome", ["a", "b", "c"] * 100)), d / "t.csv"),
        ["--target", "outcome", "--task", "binary"],
        "binary needs two classes",
    ),
    "no_labels": (
        lambda d: _write_csv(_byo_table().with_columns(pl.lit(None, pl.String).alias("outcome")), d / "t.csv"),
        ["--target", "outcome"],
        "every value is missing",
    ),
    "unknown_template": (
        lambda d: _write_csv(_byo_table(), d / "t.csv"),
        ["--target", "outcome", "--template", "astrology"],
        "template",
    ),
    "empty_directory": (lambda d: d, ["--target", "outcome"], "no CSV or Parquet files"),
    "no_target_flag": (lambda d: _write_csv(_byo_table(), d / "t.csv"), [], "--data needs --target"),
}


@pytest.mark.parametrize("case", list(BYO_CASES))
def test_bad_tables_give_typed_errors_and_record_nothing(nothing_recorded, tmp_path, case):
    make, flags, expected = BYO_CASES[case]
    folder = tmp_path / "in"
    folder.mkdir()
    path = make(folder)
    result = CliRunner().invoke(app, ["run", "--data", str(path), *flags, "--trials", "0"])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    nothing_recorded()


def test_an_invalid_spec_file_names_each_field(nothing_recorded, tmp_path):
    (tmp_path / "t.csv").write_text("x,y\n1,a\n")
    (tmp_path / "spec.yaml").write_text(
        "name: Bad Name\ndata: {path: t.csv}\ncolumns:\n  - {name: x, dtype: float}\n"
        "  - {name: y, dtype: text, role: target}\ntask: binary\npositive_class: a\n"
        "split: {kind: stratified}\nprimary_metric: roc_auc\nmetrics: [roc_auc]\n"
    )
    result = CliRunner().invoke(app, ["run", "--spec", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 2
    assert "name: String should match pattern" in result.stderr
    assert "columns.1.dtype: Input should be" in result.stderr
    nothing_recorded()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LEPTON_SEARCH_ROWS", "lots"), ("LEPTON_SEARCH_ROWS", "10"), ("LEPTON_DISTRIBUTED_ROWS", "-1"),
     ("LEPTON_DEVICE", "tpu"), ("LEPTON_PRICE_CORE_HOUR", "abc"), ("LEPTON_WATTS_GPU", "-5")],
)  # fmt: skip
def test_an_unusable_setting_exits_2_naming_it_before_anything_runs(nothing_recorded, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(app, ["run", "finance", "--trials", "0"])
    assert result.exit_code == 2, result.output
    assert variable in result.output and "Traceback" not in result.output
    monkeypatch.delenv(variable)
    nothing_recorded()


def test_a_latency_budget_no_model_meets_exits_2_and_records_nothing(nothing_recorded, tmp_path):
    path = tmp_path / "loans.csv"
    _sample().write_csv(path)
    spec = tmp_path / "spec.yaml"
    made = CliRunner().invoke(app, ["init", str(path), "--target", "Class", "-o", str(spec)])
    assert made.exit_code == 0, made.output
    text, replaced = re.subn(r"(?m)^latency_budget_ms: .*$", "latency_budget_ms: 0.0001", spec.read_text())
    assert replaced == 1, text
    spec.write_text(text)
    result = CliRunner().invoke(app, ["run", "--spec", str(spec), "--trials", "1"])
    assert result.exit_code == 2, result.output
    assert "no candidate meets the latency budget of 0.0001 ms (latency_budget_ms)" in result.stderr, result.output
    assert "Traceback" not in result.output
    nothing_recorded()


def test_a_leak_with_json_prints_one_error_object_and_stops_before_prefect(nothing_recorded, tmp_path):
    import json

    path = _write_csv(_byo_table().with_columns(pl.col("outcome").alias("final_status")), tmp_path / "t.csv")
    result = CliRunner().invoke(app, ["run", "--data", str(path), "--target", "outcome", "--json"])
    assert result.exit_code == 2, result.output
    (line,) = result.stdout.strip().splitlines()
    error = json.loads(line)["error"]
    assert error["type"] == "LeakageError" and error["exit_code"] == 2
    assert "'final_status' (alone)" in error["message"] and "--allow-leakage final_status" in error["message"]
    assert "Traceback" not in result.output and "Flow run" not in result.output  # stopped before any flow
    nothing_recorded()


def test_a_template_for_another_task_is_refused_naming_the_ones_that_fit(nothing_recorded, tmp_path):
    table = _byo_table().with_columns(pl.Series("outcome", ["a", "b", "c"] * (_byo_table().height // 3)))
    path = _write_csv(table, tmp_path / "t.csv")
    result = CliRunner().invoke(app, ["run", "--data", str(path), "--target", "outcome", "--template", "medical"])
    assert result.exit_code == 2, result.output
    assert "'medical' is for binary targets" in result.stderr and "--template manufacturing" in result.stderr
    nothing_recorded()
