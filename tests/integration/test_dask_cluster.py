"""A real Dask cluster from its own command-line tools — `dask scheduler` and two `dask worker`
processes on 127.0.0.1 — running a Lepton pipeline; one worker killed by PID mid-features."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client

from lepton.flows.pipeline import pipeline

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
DASK = str(Path(sys.executable).with_name("dask"))


class Cluster:
    """`dask scheduler` and `dask worker` processes, stopped by PID."""

    def __init__(self, directory: Path, workers: int = 2) -> None:
        self.file = directory / "scheduler.json"
        env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "warning"}
        common = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(self.file)], **common,
        )  # fmt: skip
        self._wait(self.file.exists)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [
            subprocess.Popen(
                [
                    DASK,
                    "worker",
                    self.address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                ],
                **common,
            )
            for i in range(workers)
        ]
        self.client = Client(self.address, timeout="30s")
        self.client.wait_for_workers(workers, timeout=60)
        self.pids = self.client.run(os.getpid)  # worker address -> PID

    @staticmethod
    def _wait(ready, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError("the Dask scheduler did not start")
            time.sleep(0.1)

    def executed(self) -> dict[str, int]:
        return self.client.run(lambda dask_worker: dask_worker.state.executed_count)

    def stop(self) -> None:
        self.client.close()
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path):
    running = Cluster(tmp_path)
    yield running
    running.stop()


@pytest.mark.slow  # a whole pipeline on scheduler + worker processes: about 3 minutes on 2 cores
def test_a_pipeline_runs_its_features_and_trials_on_an_existing_cluster(lepton_home, monkeypatch, cluster):
    monkeypatch.setenv("LEPTON_DASK_ADDRESS", cluster.address)
    before = cluster.executed()
    result = pipeline(domain="manufacturing", trials=2)
    after = cluster.executed()

    assert result.engine.address == cluster.address and result.engine.external
    assert set(result.engine.feature_workers) <= set(cluster.pids) and result.engine.feature_workers
    assert all(after[w] > before[w] for w in cluster.pids), (before, after)  # both workers did work
    assert result.promoted and result.metrics["f1_macro"] >= result.baseline_metrics["f1_macro"]
    assert cluster.client.nthreads() and len(cluster.client.nthreads()) == 2  # left running


def test_killing_a_worker_mid_features_still_gives_the_same_result(lepton_home, monkeypatch, cluster, dask_cluster):
    monkeypatch.setenv("LEPTON_DASK_ADDRESS", cluster.address)
    killed: list[str] = []

    def kill_first_feature_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for worker, keys in cluster.client.processing().items():
                if any(str(k).startswith("_compute") for k in keys):
                    os.kill(cluster.pids[worker], signal.SIGKILL)
                    killed.append(worker)
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_first_feature_worker, daemon=True)
    killer.start()
    survived = pipeline(domain="medical", trials=2)
    killer.join(timeout=5)
    assert killed, "no feature task was seen running: the kill did not happen mid-features"
    assert set(survived.engine.feature_workers) == set(cluster.pids) - set(killed)

    monkeypatch.setenv("LEPTON_DASK_ADDRESS", dask_cluster.scheduler.address)
    reference = pipeline(domain="medical", trials=2)
    assert survived.metrics == pytest.approx(reference.metrics)
    # The same inputs on another cluster: the same run key, so the version is found, not repeated.
    assert survived.version == reference.version == "1"
