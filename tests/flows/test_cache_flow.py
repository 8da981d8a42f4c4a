"""Content caching through real pipeline runs: a no-change re-run reuses every cached stage,
a change re-runs that stage and what follows, --no-cache computes everything."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from lepton.app.cli import app
from lepton.domains import get_spec
from lepton.flows.pipeline import pipeline

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
CACHED = ("preprocess", "features", "train", "optimise")


def _reused(result):
    return {name: stage.cached for name, stage in result.stages.items()}


def test_a_no_change_rerun_reuses_each_stage_and_a_change_reruns_from_there(lepton_home, tmp_path):
    first = pipeline(domain="medical", trials=1)
    assert not any(_reused(first).values())
    entries = sorted(p.parent.parent.name for p in (lepton_home / "cache" / "medical").rglob("entry.json"))
    assert entries == ["optimise", "prepared", "run", "train"]  # "run": the whole result (lepton.flows.rerun)

    again = pipeline(domain="medical", trials=1)
    assert _reused(again) == {**dict.fromkeys(CACHED, True), "deploy": False, "monitor": False}
    assert again.version == first.version and again.promoted  # the run key finds the same version
    assert again.metrics == first.metrics and again.choice == first.choice
    assert again.engine.workers == 0  # nothing needed the Dask cluster

    more = pipeline(domain="medical", trials=2)  # the optimise stage's input changed
    assert _reused(more) == {
        **{"preprocess": True, "features": True, "train": True, "optimise": False},
        "deploy": False,
        "monitor": False,
    }

    spec = get_spec("medical")
    frame = pl.read_parquet(spec.data.resolve(spec.data.path))
    changed = tmp_path / "changed.parquet"
    frame.with_columns(pl.col("age") + (pl.int_range(pl.len()) == 0).cast(pl.Int64)).write_parquet(changed)
    edited = pipeline(domain="medical", trials=1, data=str(changed))  # one value of the data: all again
    assert not any(_reused(edited).values())


def test_no_cache_computes_every_stage_and_stores_nothing(lepton_home):
    result = CliRunner().invoke(app, ["run", "medical", "--trials", "0", "--json", "--no-cache"])
    assert result.exit_code == 0, result.output
    payload = json.loads(next(x for x in result.stdout.splitlines() if x.startswith("{")))
    assert not any(stage["cached"] for stage in payload["stages"].values())
    assert not (lepton_home / "cache").exists()
    stored = CliRunner().invoke(app, ["run", "medical", "--trials", "0", "--json"])
    assert stored.exit_code == 0 and (lepton_home / "cache" / "medical").is_dir()
    shown = CliRunner().invoke(app, ["run", "medical", "--trials", "1"])  # another budget: optimise only
    assert shown.exit_code == 0, shown.output
    assert "preprocess reused from the cache" in shown.stderr and "optimise   done in" in shown.stderr


def _run_json(*args: str) -> dict:
    result = CliRunner().invoke(app, ["run", "medical", "--trials", "0", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(next(x for x in result.stdout.splitlines() if x.startswith("{")))


def _counts(experiment: str) -> tuple[int, int]:
    """Prefect flow runs on the test server, and MLflow runs in the experiment."""
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client

    from lepton.core import tracking
    from lepton.core.settings import load_settings

    with get_client(sync_client=True) as client:
        flow_runs = len(client.read_flow_runs())
    tracking.configure(load_settings())
    found = MlflowClient().get_experiment_by_name(experiment)
    return flow_runs, len(MlflowClient().search_runs([found.experiment_id]))


def test_a_no_change_rerun_is_up_to_date_without_a_flow_run_and_a_moved_alias_runs_again(lepton_home):
    from mlflow import MlflowClient

    first = _run_json()
    assert not first["up_to_date"]
    before = _counts(first["model_name"])

    again = _run_json()
    assert again["up_to_date"] and _counts(first["model_name"]) == before  # no Prefect flow run, no MLflow run
    assert again["run_id"] == first["run_id"] and again["version"] == first["version"]
    assert again["metrics"] == first["metrics"]
    assert all(stage["cached"] and stage["cpu_seconds"] == 0 for stage in again["stages"].values())
    shown = CliRunner().invoke(app, ["run", "medical", "--trials", "0"])
    assert shown.exit_code == 0 and f"up to date: nothing changed since run {first['run_id']}" in shown.stderr

    client = MlflowClient()
    client.delete_registered_model_alias(first["model_name"], "champion")  # the registry moved on
    moved = _run_json()
    assert not moved["up_to_date"] and moved["version"] == first["version"] and moved["promoted"]
    # a flow run, which re-promoted the version its inputs had registered
    assert _counts(first["model_name"])[0] == before[0] + 1

    client.delete_run(moved["run_id"])  # the run a record names is gone: run again
    assert not _run_json()["up_to_date"]
    assert not _run_json("--no-cache")["up_to_date"]
