"""The closed loop on real servers: `lepton ui` (a Prefect server and an MLflow server on
127.0.0.1), `lepton deploy`, `lepton worker`; a drifted batch through the monitor deployment; the
automation declared in prefect.yaml starts the pipeline deployment, which completes and registers
a new version. Once on SQLite state, once on PostgreSQL (the production configuration, where
LEPTON_TEST_POSTGRES_URL names a server; CI sets it). On SQLite, the Prefect and MLflow pages
are then checked in headless Chromium (``screens.py``; screenshots under the test's temporary
folder). Every process is stopped by its PID."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lepton.app.stack import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Extra environment for `lepton ui`: nothing (SQLite under LEPTON_HOME), or two fresh
    PostgreSQL databases, dropped afterwards."""
    if request.param == "sqlite":
        return {}
    base, (prefect, mlflow) = request.getfixturevalue("postgres_databases")("prefect", "mlflow")
    return {
        "LEPTON_PREFECT_DATABASE_URL": f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{prefect}",
        "LEPTON_MLFLOW_BACKEND_URI": f"{base}/{mlflow}",
    }


def _start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _until(check, timeout: float, what: str, logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())
    raise AssertionError(f"{what} within {timeout:.0f} s\n{tails}")


def _lepton(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "lepton"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"lepton {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _flow_runs(api: str) -> list[dict]:
    response = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    return response.json()


def _ended(api: str, flow_name: str) -> list[dict]:
    """The ended runs of ``flow_name`` started from a deployment (not the local `lepton run`)."""
    names = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()}
    return [
        run
        for run in _flow_runs(api)
        if names.get(run["flow_id"]) == flow_name
        and run["deployment_id"]
        and run["state_type"] in ("COMPLETED", "FAILED", "CRASHED")
    ]


def _finished(api: str, flow_name: str) -> dict | None:
    """A finished run of ``flow_name`` started from a deployment."""
    return next(iter(_ended(api, flow_name)), None)


def _check_registry_and_events(api: str, tracking: str, batch: Path) -> None:
    """The retrain registered version 2 with a finished decision; the monitor run is in MLflow;
    the drift event carries the batch and the drifted features."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking, tracking)
    versions = {str(v.version) for v in client.search_model_versions("name = 'lepton-medical'")}
    assert versions == {"1", "2"}
    assert "lepton.decision" in client.get_model_version("lepton-medical", "2").tags
    monitors = client.search_runs([client.get_experiment_by_name("lepton-medical-monitor").experiment_id])
    assert [r.data.tags["lepton.drift"] for r in monitors] == ["detected", "detected"]  # the deployment's, the CLI's
    query = {"filter": {"event": {"name": ["lepton.drift.detected"]}}}
    events = httpx.post(f"{api}/events/filter", json=query, timeout=30).json()["events"]
    assert events[0]["payload"]["data"] == str(batch) and "age" in events[0]["payload"]["features"]
    # what the automations answer: the retrain decision, with its reasoning and its idempotency key
    query = {"filter": {"event": {"name": ["lepton.retrain.recommended"]}}}
    asked = httpx.post(f"{api}/events/filter", json=query, timeout=30).json()["events"]
    assert len(asked) == 2 and len({event["payload"]["key"] for event in asked}) == 1, asked
    assert all(e["payload"]["recommended"] and e["payload"]["data"] == str(batch) for e in asked)
    assert all("fell from the champion's" in e["payload"]["reason"] for e in asked)


def _check_one_retrain(pipelines: list[dict], batch: Path) -> None:
    """Two drift events for one batch started two pipeline runs: one retrained, the other names
    it and stopped before recording anything (the registry holds one new version)."""
    assert all(run["state_type"] == "COMPLETED" for run in pipelines), [run["state"] for run in pipelines]
    assert all(run["parameters"]["append"] == str(batch) for run in pipelines)  # the batch joined the training data
    assert all(run["parameters"]["domain"] == "medical" for run in pipelines)
    assert pipelines[0]["name"] == pipelines[1]["name"]  # medical-retrain-<the batch's digest>
    skipped = [run for run in pipelines if (run["state"]["message"] or "").startswith("skipped: flow run")]
    assert len(skipped) == 1, [run["state"]["message"] for run in pipelines]
    assert "(a duplicate trigger)" in skipped[0]["state"]["message"]


def test_drift_on_the_monitor_deployment_retrains_through_the_automation(tmp_path, backend):
    prefect_port, mlflow_port = free_port(), free_port()
    api, tracking = f"http://127.0.0.1:{prefect_port}/api", f"http://127.0.0.1:{mlflow_port}"
    env = {
        **os.environ,
        **backend,
        "LEPTON_HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(tmp_path / "home" / "prefect"),
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # as a user's shell has it: no test-harness servers, cluster or log level
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "LEPTON_DASK_ADDRESS", "PREFECT_LOGGING_LEVEL"):
        env.pop(key, None)
    logs = [tmp_path / "ui.log", tmp_path / "worker.log"]
    command = [str(BIN / "lepton"), "ui", "--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)]
    ui = _start(command, env, logs[0])
    worker = None
    try:
        _until(lambda: "Ctrl-C stops both" in logs[0].read_text() or ui.poll() is not None, 240, "no ui", logs)
        assert ui.poll() is None, logs[0].read_text()
        env |= {"PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": tracking, "PREFECT_WORKER_QUERY_SECONDS": "1"}
        _lepton("run", "medical", "--trials", "2", env=env)  # version 1, the champion
        deployed = _lepton("deploy", env=env)
        assert "medical-monitor" in deployed.stderr and "medical-pipeline" in deployed.stderr
        automations = httpx.post(f"{api}/automations/filter", json={}, timeout=30).json()
        assert "medical-retrain-when-recommended" in [a["name"] for a in automations], [a["name"] for a in automations]
        worker = _start([str(BIN / "lepton"), "worker"], env, logs[1])

        batch = tmp_path / "drifted.parquet"
        _lepton("simulate-drift", "medical", "-o", str(batch), "--rows", "3000", env=env)
        started = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "lepton-monitor/medical-monitor", "--param", f"data={batch}"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        # The same batch from the CLI as well, as the README's reader did: a second drift event.
        _lepton("monitor", "medical", "--data", str(batch), env=env)

        monitor_run = _until(lambda: _finished(api, "lepton-monitor"), 300, "no monitor run finished", logs)
        assert monitor_run["state_type"] == "COMPLETED", monitor_run["state"]
        pipelines = _until(
            lambda: (ended := _ended(api, "lepton-pipeline")) and len(ended) == 2 and ended,
            900, "the automation did not run a pipeline for each event", logs,
        )  # fmt: skip
        _check_one_retrain(pipelines, batch)

        _check_registry_and_events(api, tracking, batch)
        if not backend:  # the screens, once: what the pages show after a run, a deploy and a loop
            from screens import check_screens

            shots = check_screens(api, tracking, "medical", tmp_path / "screens")
            assert len(shots) == 9 and all(shot.stat().st_size > 10_000 for shot in shots)
        if backend:  # the production configuration: three domains at once against the same servers
            together = _lepton("run", "--all", "--trials", "0", "--json", env=env, timeout=900)
            results = [json.loads(line) for line in together.stdout.splitlines() if line.startswith("{")]
            assert sorted(r["domain"] for r in results) == ["finance", "manufacturing", "medical"]
            assert all(r["version"] for r in results)
    finally:
        if worker is not None:
            _stop(worker)
        _stop(ui)  # SIGTERM: `lepton ui` stops both servers before it exits
    assert ui.returncode is not None and worker is not None and worker.returncode is not None
    for port in (prefect_port, mlflow_port):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
