"""A table at an fsspec URL: the same folder of files on an S3 server (moto's, a real HTTP server
on 127.0.0.1, started and stopped by PID) is listed by the driver and read by the Dask workers,
with the same split and fingerprint as on local disk; a bad value is named by its URL; a URL
that carries credentials is refused before they can reach a log."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from test_partitioned import _sample, _write  # this folder is on sys.path (pytest's prepend mode)
from typer.testing import CliRunner

from lepton.app.cli import app
from lepton.core.partitions import is_dataset, open_dataset
from lepton.domains import get_spec
from lepton.domains.spec import is_url
from lepton.errors import InputPathError
from lepton.tasks.scan import check_table, prepare_table

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
BUCKET = "lepton-data"


@pytest.fixture(scope="module")
def s3(dask_cluster):
    """An S3 server on loopback, its address and test keys in this process's and every worker's
    environment, as a user's workers would find theirs; an fsspec filesystem to upload with."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",  # never the cloud's metadata address
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # a lambda, not os.environ.update: that bound method would be pickled with a copy of this environ
    dask_cluster.run(lambda values: os.environ.update(values), env)  # noqa: PLW0108
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        import s3fs

        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        yield fs
    finally:
        os.kill(server.pid, 15)
        server.wait(timeout=30)
        dask_cluster.run(lambda keys: [os.environ.pop(k, None) for k in keys], list(env))
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _upload(fs, local: str, prefix: str) -> str:
    for file in sorted(Path(local).iterdir()):
        fs.put_file(str(file), f"{BUCKET}/{prefix}/{file.name}")
    fs.invalidate_cache()
    return f"s3://{BUCKET}/{prefix}/"


def test_a_table_at_an_s3_url_is_split_as_on_local_disk(s3, dask_cluster, tmp_path):
    spec = get_spec("finance")
    local = _write(_sample("finance"), tmp_path / "loans", 3, seed=1)
    url = _upload(s3, local, "same")
    s3.put_file(str(Path(local) / "part-000.parquet"), f"{BUCKET}/same/_SUCCESS")  # not data: skipped

    dataset = open_dataset(url)
    assert is_dataset(url) and [p.name for p in dataset.partitions] == [
        f"s3://{BUCKET}/same/part-00{i}.parquet" for i in range(3)
    ]
    assert dataset.rows == _sample("finance").height  # from the footers, read over HTTP
    remote = prepare_table(spec, check_table(spec, dataset, dask_cluster), dask_cluster, 1_000)
    here = prepare_table(spec, check_table(spec, open_dataset(local), dask_cluster), dask_cluster, 1_000)
    assert remote.fingerprint == here.fingerprint
    assert remote.train.frame["rownames"].to_list() == here.train.frame["rownames"].to_list()
    assert sorted(remote.holdout.frame["rownames"]) == sorted(here.holdout.frame["rownames"])
    assert [remote.rows(s) for s in ("train", "valid", "holdout")] == [
        here.rows(s) for s in ("train", "valid", "holdout")
    ]


def test_a_bad_value_in_a_remote_file_is_named_by_its_url(s3, nothing_recorded, tmp_path):
    local = Path(_write(_sample("finance"), tmp_path / "loans", 4, seed=3))
    last = local / "part-003.parquet"
    rows = pl.read_parquet(last)
    bad = pl.when(pl.int_range(pl.len()) == 41).then(pl.lit("twelve")).otherwise(pl.col("int_rate").cast(pl.String))
    rows.with_columns(bad.alias("int_rate")).write_parquet(last)
    url = _upload(s3, str(local), "bad")

    result = CliRunner().invoke(app, ["run", "finance", "--data", url, "--trials", "0"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.stderr.split())
    assert f"s3://{BUCKET}/bad/part-003.parquet: expected float, row 42 holds 'twelve'" in said
    assert "lepton-part-" not in said  # the worker's copy is not what the user gave
    nothing_recorded()


def test_a_remote_tables_identity_follows_its_objects(s3, tmp_path):
    url = _upload(s3, _write(_sample("finance"), tmp_path / "loans", 2, seed=2), "identity")
    first = open_dataset(url).identity
    assert first is not None and open_dataset(url).identity == first
    s3.put_file(str(tmp_path / "loans" / "part-000.parquet"), f"{BUCKET}/identity/part-001.parquet")  # new bytes
    s3.invalidate_cache()
    assert open_dataset(url).identity not in (None, first)


def test_urls_with_credentials_or_no_files_are_refused(s3):
    with pytest.raises(InputPathError, match="carries credentials") as refused:
        open_dataset(f"s3://AKIAEXAMPLE:hunter2@{BUCKET}/loans/")
    assert "hunter2" not in str(refused.value) and "AKIAEXAMPLE" not in str(refused.value)
    with pytest.raises(InputPathError, match="no such file or folder"):
        open_dataset(f"s3://{BUCKET}/nothing-here/")
    assert is_url("s3://b/k") and is_url("gcs://b/k") and not is_url("file:///tmp/x") and not is_url("C:\\data")


@pytest.mark.slow  # a whole run through the CLI, then the monitor: about 90 s on 2 cores
def test_a_table_at_an_s3_url_trains_registers_and_monitors(s3, lepton_home, tmp_path):
    frame = _sample("finance")
    url = _upload(s3, _write(frame, tmp_path / "loans", 4, seed=4), "loans")
    done = CliRunner().invoke(app, ["run", "finance", "--data", url, "--trials", "2", "--no-cache", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == "1" and result["engine"]["feature_partitions"] == 4
    assert result["metrics"]["roc_auc"] > result["baseline_metrics"]["roc_auc"] - 0.05
    from mlflow import MlflowClient

    lineage = [i.dataset.source for i in MlflowClient().get_run(result["run_id"]).inputs.dataset_inputs]
    assert any(url in source for source in lineage), lineage  # the URL as given, not folded to s3:/

    batch = _upload(s3, _write(frame.head(3000), tmp_path / "batch", 2, seed=5), "batch")
    watched = CliRunner().invoke(app, ["monitor", "finance", "--data", batch, "--json"])
    assert watched.exit_code == 0, watched.output
    report = json.loads(watched.stdout.strip().splitlines()[-1])
    assert report["rows"] == 3000 and report["source"] == batch
