"""`lepton serve` as a real process on 127.0.0.1, in front of a real registry with two versions."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest

from lepton.core import tracking
from lepton.core.inputs import input_frame, input_records
from lepton.core.predlog import read_log
from lepton.core.settings import load_settings
from lepton.domains import get_spec
from lepton.tasks.preprocess import load_domain_data, prepare

pytestmark = [pytest.mark.flow]
SPEC = get_spec("finance")
LEPTON = Path(sys.executable).with_name("lepton")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(n: int) -> list[dict]:
    data = prepare(SPEC, *load_domain_data(SPEC))
    return input_records(SPEC, data.holdout.frame.head(n))


@pytest.fixture(scope="module")
def registry(tmp_path_factory, dask_cluster, prefect_harness) -> Iterator[Path]:
    """A LEPTON_HOME holding two registered versions of the finance model (version 1 champion)."""
    from lepton.flows.pipeline import pipeline

    home = tmp_path_factory.mktemp("serve") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("LEPTON_DASK_ADDRESS", dask_cluster.scheduler.address)
        pipeline(domain="finance", trials=0)
        pipeline(domain="finance", trials=1)  # another trial budget: another run key, a second version
        tracking.configure(load_settings())
        tracking.set_alias(SPEC.model_name, tracking.CHAMPION, "1")
        yield home


def _start(home: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [str(LEPTON), "serve", "finance", "--port", str(port), "--poll", "0.3", *extra]
    full_env = {**os.environ, "LEPTON_HOME": str(home), **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"lepton serve exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("lepton serve did not become ready in 90 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # by PID; uvicorn shuts down on SIGTERM and the prediction log flushes
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def service(registry) -> Iterator[str]:
    proc, url = _start(registry)
    yield url
    _stop(proc)


def test_answers_match_the_registered_pyfunc_with_version_threshold_and_reasons(service, registry):
    rows = _rows(200)
    single = httpx.post(f"{service}/predict", json=rows[0], timeout=30)
    assert single.status_code == 200, single.text
    body = single.json()
    assert body["model"] == {"name": SPEC.model_name, "version": "1"}
    assert 0 < body["threshold"] < 1 and body["request_id"]
    assert body["prediction"] == ("bad" if body["score"] >= body["threshold"] else "good")
    assert len(body["reasons"]) == 3 and all(r["feature"] and math.isfinite(r["contribution"]) for r in body["reasons"])

    batch = httpx.post(f"{service}/predict/batch", json={"rows": rows}, timeout=60)
    assert batch.status_code == 200, batch.text
    answers = batch.json()["predictions"]
    assert len(answers) == 200
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(registry))
        tracking.configure(load_settings())
        model = mlflow.pyfunc.load_model(f"models:/{SPEC.model_name}/1")
    import pandas as pd

    expected = model.predict(input_frame(SPEC, pl_frame(rows)))
    assert [a["score"] for a in answers] == pytest.approx(expected["score"].tolist(), rel=1e-5, abs=1e-7)
    assert [a["prediction"] for a in answers] == [str(p) for p in expected["prediction"]]
    assert answers[0]["score"] == pytest.approx(body["score"], rel=1e-6)
    assert isinstance(expected, pd.DataFrame)


def pl_frame(rows: list[dict]):
    import polars as pl

    return pl.DataFrame(rows, infer_schema_length=None)


def test_malformed_payloads_get_422_naming_the_field(service):
    row = _rows(1)[0]
    typo = httpx.post(f"{service}/predict", json={**row, "int_rat": 0.1}, timeout=10)
    assert typo.status_code == 422 and "int_rat" in typo.text
    wrong = httpx.post(f"{service}/predict", json={**row, "annual_inc": "lots"}, timeout=10)
    assert wrong.status_code == 422 and "annual_inc" in wrong.text
    empty = httpx.post(f"{service}/predict/batch", json={"rows": []}, timeout=10)
    assert empty.status_code == 422 and "rows" in empty.text
    deep = httpx.post(f"{service}/predict/batch", json={"rows": [row, {**row, "int_rate": "high"}]}, timeout=10)
    assert deep.status_code == 422
    assert deep.json()["detail"][0]["loc"] == ["body", "rows", 1, "int_rate"]
    not_json = httpx.post(f"{service}/predict", content=b"{oops", headers={"content-type": "application/json"})
    assert not_json.status_code == 422


def test_a_body_over_the_limit_is_refused_with_413(service):
    rows = _rows(1) * 20_000
    response = httpx.post(f"{service}/predict/batch", json={"rows": rows}, timeout=30)
    assert response.status_code == 413 and "bytes" in response.text

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"rows": ['
        for _ in range(20_000):
            yield json.dumps(rows[0]).encode() + b","
        yield b"{}]}"

    streamed = httpx.post(f"{service}/predict/batch", content=chunks(), timeout=30)
    assert streamed.status_code == 413


def test_openapi_schema_comes_from_the_domain_spec(service):
    schema = httpx.get(f"{service}/openapi.json", timeout=10).json()
    row = schema["components"]["schemas"]["FinanceRow"]
    assert set(row["properties"]) == {c.name for c in SPEC.model_inputs}
    assert row["additionalProperties"] is False
    batch = schema["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert batch == {"$ref": "#/components/schemas/FinanceRowBatch"}
    rows = schema["components"]["schemas"]["FinanceRowBatch"]["properties"]["rows"]
    assert rows["items"] == {"$ref": "#/components/schemas/FinanceRow"} and rows["maxItems"] == 5_000
    assert httpx.get(f"{service}/docs", timeout=10).status_code == 200
    assert httpx.get(f"{service}/health", timeout=10).json() == {"status": "ok"}


def test_concurrent_requests_and_a_moved_alias_without_a_failed_request(service, registry):
    rows = _rows(8)
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def load(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                response = client.post(f"{service}/predict", json=rows[i])
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["model"]["version"])

    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(registry))
        tracking.configure(load_settings())
        tracking.set_alias(SPEC.model_name, tracking.CHAMPION, "2")
    deadline = time.monotonic() + 30
    while "2" not in versions[-20:] and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert versions[0] == "1" and versions[-1] == "2"
    ready = httpx.get(f"{service}/ready", timeout=10).json()
    assert ready["model"]["version"] == "2"

    metrics = httpx.get(f"{service}/metrics", timeout=10).text
    counter = 'lepton_requests_total{endpoint="predict",status="200"}'
    served = [line for line in metrics.splitlines() if line.startswith(counter)]
    assert served and float(served[0].split()[-1]) >= len(statuses)
    assert "lepton_model_version 2.0" in metrics

    time.sleep(1.5)  # the log's writer flushes every second
    logged = read_log(registry / "predictions" / "finance")
    assert logged.height >= len(statuses)
    assert set(logged["model_version"].unique()) >= {"1", "2"}
    inputs = {c.removeprefix("input.") for c in logged.columns if c.startswith("input.")}
    assert inputs == {c.name for c in SPEC.model_inputs}
    assert not any(c.role.value == "pii" for c in SPEC.columns if c.name in inputs)


def test_the_monitor_drift_check_reads_the_prediction_log(service, registry):
    """The log holds what was served; drift is computed against the reference stored with the version."""
    rows = _rows(8)
    for row in rows * 5:
        assert httpx.post(f"{service}/predict", json=row, timeout=10).status_code == 200
    time.sleep(1.5)  # the log's writer flushes every second
    from lepton.core.predlog import served_inputs
    from lepton.core.scoring import read_reference
    from lepton.tasks.monitor import drift_report

    with pytest.MonkeyPatch.context() as mp, tracking.scratch_dir() as tmp:
        mp.setenv("LEPTON_HOME", str(registry))
        tracking.configure(load_settings())
        version = tracking.alias_version(SPEC.model_name, tracking.CHAMPION)
        bundle = tracking.download_bundle(SPEC.model_name, version, Path(tmp))
        reference = read_reference(bundle)
    from lepton.domains import recipes

    served = recipes.apply(SPEC.recipe_config(), served_inputs(registry / "predictions" / "finance"))
    report = drift_report(SPEC, reference, served)  # the reference includes the recipe's features
    assert set(report.psi) == set(reference["features"])
    assert report.drifted  # eight rows sent over and over are nothing like the training mix


def test_api_key_is_required_when_set(registry):
    proc, url = _start(registry, env={"LEPTON_API_KEY": "s3cret-key"})
    try:
        row = _rows(1)[0]
        assert httpx.post(f"{url}/predict", json=row, timeout=10).status_code == 401
        wrong = httpx.post(f"{url}/predict", json=row, headers={"X-API-Key": "nope"}, timeout=10)
        assert wrong.status_code == 401
        right = httpx.post(f"{url}/predict", json=row, headers={"X-API-Key": "s3cret-key"}, timeout=10)
        assert right.status_code == 200
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        _stop(proc)
    assert "s3cret-key" not in proc.stderr.read()
