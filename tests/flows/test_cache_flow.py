"""Content caching through real pipeline runs: a no-change re-run reuses every cached stage,
a change re-runs that stage and what follows, --no-cache computes everything."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from domains import get_spec
from flows.pipeline import pipeline
from lepton.cli import app

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
CACHED = ("preprocess", "features", "train", "optimise")


def _reused(result):
    return {name: stage["cached"] for name, stage in result.stages.items()}


def test_a_no_change_rerun_reuses_each_stage_and_a_change_reruns_from_there(lepton_home, tmp_path):
    first = pipeline(domain="medical", trials=1)
    assert not any(_reused(first).values())
    entries = sorted(p.parent.parent.name for p in (lepton_home / "cache" / "medical").rglob("entry.json"))
    assert entries == ["optimise", "prepared", "train"]

    again = pipeline(domain="medical", trials=1)
    assert _reused(again) == {**dict.fromkeys(CACHED, True), "deploy": False, "monitor": False}
    assert again.version == first.version and again.promoted  # the run key finds the same version
    assert again.metrics == first.metrics and again.choice == first.choice
    assert again.engine["workers"] == 0  # nothing needed the Dask cluster

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
    shown = CliRunner().invoke(app, ["run", "medical", "--trials", "0"])
    assert shown.exit_code == 0, shown.output
    assert "preprocess reused from the cache" in shown.stderr and "optimise   reused from the cache" in shown.stderr
