"""The registered model as MLflow's own tools use it: `mlflow.pyfunc.load_model` on the sample's
raw rows (integers included) and on a partial row, and `mlflow models serve` answering the
README's request with 200 and a malformed one with a clear 4xx, never a stack trace."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from lepton.app.stack import free_port
from lepton.domains import get_spec
from lepton.flows.pipeline import pipeline

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
SPEC = get_spec("finance")
BIN = Path(sys.executable).parent
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def champion(tmp_path_factory, dask_cluster):
    home = tmp_path_factory.mktemp("pyfunc") / "home"
    saved = {k: os.environ.get(k) for k in ("LEPTON_HOME", "MLFLOW_TRACKING_URI", "LEPTON_DASK_ADDRESS")}
    os.environ.update({"LEPTON_HOME": str(home), "LEPTON_DASK_ADDRESS": dask_cluster.scheduler.address})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        pipeline(domain="finance", trials=0)
        yield home
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _readme_request() -> dict:
    """The `dataframe_records` body of the README's `mlflow models serve` example."""
    text = README.read_text()
    start = text.index('{"dataframe_records"')
    return json.loads(text[start : text.index("}]}", start) + 3])


def test_the_registered_pyfunc_predicts_raw_sample_rows_and_a_partial_row(champion):
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(f"sqlite:///{champion / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{SPEC.model_name}@champion")
    raw = pd.read_parquet(SPEC.data.resolve(SPEC.data.path)).head(5)  # as read: int64 columns included
    assert (raw.dtypes == "int64").sum() >= 10
    out = model.predict(raw)
    assert list(out.columns) == ["prediction", "score"] and len(out) == 5 and out["score"].between(0, 1).all()
    partial = model.predict(pd.DataFrame(_readme_request()["dataframe_records"]))  # 4 of 22 inputs
    assert len(partial) == 1 and 0 <= partial["score"][0] <= 1
    with pytest.raises(MlflowException, match="column 'int_rate', row 0: 'high' is not a number"):
        model.predict(pd.DataFrame([{"int_rate": "high"}]))


def test_mlflow_models_serve_answers_the_readme_request_and_refuses_a_bad_one_clearly(champion, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{champion / 'mlflow.db'}",
        "DO_NOT_TRACK": "true",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # fmt: skip  (it starts uvicorn by name)
    command = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{SPEC.model_name}@champion",
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        good = httpx.post(f"{url}/invocations", json=_readme_request(), timeout=30)
        assert good.status_code == 200, good.text
        (answer,) = good.json()["predictions"]
        assert answer["prediction"] in ("good", "bad") and 0 <= answer["score"] <= 1
        for body in ({"dataframe_records": [{"int_rate": "high"}]}, {"rows": [{"int_rate": 13.5}]}):
            bad = httpx.post(f"{url}/invocations", json=body, timeout=30)
            assert 400 <= bad.status_code < 500, (body, bad.status_code, bad.text)
            assert "Traceback" not in bad.text and "stack_trace" not in bad.json(), bad.text
        assert (
            "is not a number"
            in httpx.post(f"{url}/invocations", json={"dataframe_records": [{"int_rate": "high"}]}, timeout=30).json()[
                "message"
            ]
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
