"""`lepton score`: a file scored in chunks by the registered champion, through the real CLI flow."""

import polars as pl
import pytest
from typer.testing import CliRunner

from lepton.app.cli import app
from lepton.core.settings import load_settings
from lepton.core.tables import read_table
from lepton.domains import get_spec
from lepton.flows.pipeline import pipeline

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
SPEC = get_spec("finance")


@pytest.fixture
def champion(lepton_home):
    pipeline(domain="finance", trials=0)
    return lepton_home


def _source() -> pl.DataFrame:
    return read_table(SPEC.data.resolve(SPEC.data.path))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_file_is_scored_in_chunks_like_the_pyfunc(champion, tmp_path, suffix):
    import mlflow

    from lepton.core import tracking
    from lepton.core.inputs import input_frame

    frame = _source().drop(SPEC.target).head(5_000)
    source = tmp_path / f"in{suffix}"
    frame.write_parquet(source) if suffix == ".parquet" else frame.write_csv(source)
    out = tmp_path / f"out{suffix}"
    result = CliRunner().invoke(app, ["score", "finance", str(source), "-o", str(out), "--chunk-rows", "1000"])
    assert result.exit_code == 0, result.output
    scored = read_table(out)
    assert scored.height == 5_000 and scored.columns == ["rownames", "prediction", "score"]
    assert scored["rownames"].to_list() == frame["rownames"].to_list()
    tracking.configure(load_settings())
    model = mlflow.pyfunc.load_model(f"models:/{SPEC.model_name}@champion")
    expected = model.predict(input_frame(SPEC, frame, strict=False))
    assert scored["score"].to_numpy() == pytest.approx(expected["score"].to_numpy(), rel=1e-5)
    assert not list(tmp_path.glob(".*partial"))


def test_a_bad_value_names_column_and_row_and_writes_nothing(champion, tmp_path):
    frame = _source().drop(SPEC.target).head(3_000).with_columns(pl.col("annual_inc").cast(pl.String))
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 2_500)
        .then(pl.lit("lots"))
        .otherwise(pl.col("annual_inc"))
        .alias("annual_inc")
    )
    source = tmp_path / "in.csv"
    frame.write_csv(source)
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(app, ["score", "finance", str(source), "-o", str(out), "--chunk-rows", "1000"])
    assert result.exit_code == 2
    assert "annual_inc" in result.output and "row 2501" in result.output
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    missing = tmp_path / "missing.csv"
    frame.drop("int_rate").write_csv(missing)
    result = CliRunner().invoke(app, ["score", "finance", str(missing), "-o", str(out)])
    assert result.exit_code == 2 and "int_rate" in result.output and not out.exists()
