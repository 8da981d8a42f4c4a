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

    def __init__(self, directory: Path, workers: int = 2, memory_limit: str | None = None) -> None:
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
                    # a memory limit is enforced by the worker's nanny, which kills it at 95%
                    *(["--memory-limit", memory_limit] if memory_limit else ["--no-nanny"]),
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

    def kill_when_running(self, prefix: str, within: float) -> tuple[list[str], threading.Thread]:
        """Watch the scheduler from a thread and SIGKILL the first worker seen running a task whose
        key starts with ``prefix``; the list names it once it is killed."""
        killed: list[str] = []

        def watch() -> None:
            deadline = time.monotonic() + within
            while time.monotonic() < deadline and not killed:
                for worker, keys in self.client.processing().items():
                    if any(str(k).startswith(prefix) for k in keys):
                        os.kill(self.pids[worker], signal.SIGKILL)
                        killed.append(worker)
                        return
                time.sleep(0.005)

        killer = threading.Thread(target=watch, daemon=True)
        killer.start()
        return killed, killer

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
    killed, killer = cluster.kill_when_running("_compute", within=120)
    survived = pipeline(domain="medical", trials=2)
    killer.join(timeout=5)
    assert killed, "no feature task was seen running: the kill did not happen mid-features"
    assert set(survived.engine.feature_workers) == set(cluster.pids) - set(killed)

    monkeypatch.setenv("LEPTON_DASK_ADDRESS", dask_cluster.scheduler.address)
    reference = pipeline(domain="medical", trials=2)
    assert survived.metrics == pytest.approx(reference.metrics)
    # The same inputs on another cluster: the same run key, so the version is found, not repeated.
    assert survived.version == reference.version == "1"


@pytest.mark.slow  # a partitioned table on scheduler + worker processes, one killed: about a minute
def test_a_worker_killed_in_the_final_fit_registers_nothing(nothing_recorded, monkeypatch, cluster, tmp_path):
    """A partitioned table's final fit runs where its partitions lie (XGBoost's collective); a worker
    killed by PID mid-fit must fail the run with a typed error, not hang, and register nothing."""
    from lepton.core.tables import read_table
    from lepton.domains import get_spec
    from lepton.errors import EngineError
    from lepton.tasks.synth import write_partitioned

    spec = get_spec("finance")
    folder = tmp_path / "loans"  # large enough for a fit of seconds, in which the kill can land
    write_partitioned(spec, read_table(spec.data.resolve(spec.data.path)), 100_000, folder, files=4)
    monkeypatch.setenv("LEPTON_DASK_ADDRESS", cluster.address)
    monkeypatch.setenv("LEPTON_DISTRIBUTED_ROWS", "0")  # all in the driver's samples, yet fitted on the cluster
    killed, killer = cluster.kill_when_running("_fit_here-", within=240)  # each worker's share of the fit
    with pytest.raises(EngineError, match="during the final fit"):
        pipeline(domain="finance", trials=0, data=str(folder))
    killer.join(timeout=5)
    assert killed, "no task of the final fit was seen running: the kill did not happen mid-fit"
    nothing_recorded()


def test_a_worker_killed_for_memory_in_the_final_fit_is_reported_as_such(tmp_path):
    """A worker that outgrows its --memory-limit is killed by its nanny; the fit's watcher, which
    heard the worker's memory from the scheduler, says so: a typed error naming the worker, its
    memory against its limit, its share of the table and the settings to change."""
    from lepton.errors import WorkerMemoryError
    from lepton.tasks.families.trees import _watched

    cluster = Cluster(tmp_path, memory_limit="1GB")
    try:
        address = sorted(cluster.client.nthreads())[0]

        def grow() -> None:  # 100 MB a second: the scheduler hears it pass 70% before the nanny acts
            import time

            import numpy as np

            held = []
            while True:
                held.append(np.ones(5 * 2**20 // 8))
                time.sleep(0.05)

        def fit() -> None:
            cluster.client.submit(grow, workers=[address], allow_other_workers=False, pure=False).result()

        with pytest.raises(WorkerMemoryError) as raised:
            _watched(cluster.client, fit, lambda a: f"2 file(s) on {a}")
        message = str(raised.value)
        assert f"{address} was lost during the final fit" in message
        assert "of its 0.9 GiB memory limit" in message and f"It held 2 file(s) on {address}." in message
        assert "dask worker --memory-limit" in message and "Nothing was registered" in message
    finally:
        cluster.stop()


def test_results_lost_with_their_worker_are_computed_again(tmp_path):
    """A stage's results wait on their workers until the driver gathers them; a worker lost in
    between has its results computed again elsewhere. With another client opened later in the
    process (a test's, a notebook's), the progress loop once bound the results' events to that
    client's loop, and the rescheduled gather failed with 'bound to a different event loop'."""
    from lepton.tasks.scan import _run

    cluster = Cluster(tmp_path)
    newer = Client(cluster.address, timeout="30s")  # the process's default client from here on
    try:
        victim = sorted(cluster.pids)[0]
        futures = [
            cluster.client.submit(pow, i, 2, workers=[victim], allow_other_workers=True, pure=False) for i in range(8)
        ]
        assert _run(cluster.client, futures, "test") == [i * i for i in range(8)]
        assert {tuple(w) for w in cluster.client.who_has(futures).values()} == {(victim,)}
        os.kill(cluster.pids[victim], signal.SIGKILL)
        assert _run(cluster.client, futures, "test") == [i * i for i in range(8)]
    finally:
        newer.close()
        cluster.stop()


def _wide(folder: Path, files: int, rows: int, columns: int, shift: float = 0.0, seed: int = 0) -> int:
    """A wide binary table of ``files`` Parquet files (float64 columns x0.., target y that depends
    on x0..x2); its size in memory, in bytes."""
    import numpy as np
    import polars as pl

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    size = 0
    for i in range(files):
        X = rng.normal(size=(rows, columns))
        X[:, 0] += shift
        chance = 1 / (1 + np.exp(-(X[:, 0] - 0.5 * X[:, 1] + 0.25 * X[:, 2])))
        labels = (rng.random(rows) < chance).astype(int)
        frame = pl.DataFrame({**{f"x{j}": X[:, j] for j in range(columns)}, "y": labels})
        frame.write_parquet(folder / f"part-{i:02d}.parquet", compression="lz4")
        size += frame.estimated_size()
    return size


@pytest.mark.slow
@pytest.mark.scale  # a 1.3 GB table through the whole pipeline on two 1 GB workers: 4-5 minutes on 2 cores
def test_a_table_larger_than_a_workers_memory_limit_trains_registers_and_monitors(lepton_home, monkeypatch, tmp_path):
    """Two `dask worker --memory-limit 1GB` processes (the nanny kills a worker at 95% of it) and a
    table larger than that in memory: no process ever holds it. It trains on every row, the chosen
    model is registered, and a batch of the same size, shifted in one column, is monitored file by
    file — and no worker was killed and restarted on the way."""
    from lepton.app.api import spec_from_file
    from lepton.domains.infer import make_hints
    from lepton.flows.monitor import monitor

    size = _wide(tmp_path / "wide", files=16, rows=100_000, columns=100)
    assert size > 2**30 * 1.2  # more than either worker may hold
    cluster = Cluster(tmp_path, memory_limit="1GB")
    try:
        monkeypatch.setenv("LEPTON_DASK_ADDRESS", cluster.address)
        monkeypatch.setenv("LEPTON_SEARCH_ROWS", "50000")  # the search's sample, sized to these workers
        spec = spec_from_file(tmp_path / "wide", make_hints(target="y")).spec
        result = pipeline(domain=spec, trials=0, data=str(tmp_path / "wide"))
        assert result.version == "1" and result.promoted and result.metrics["roc_auc"] > 0.7
        from mlflow import MlflowClient

        params = MlflowClient().get_run(result.run_id).data.params
        rows = {side: int(params[f"rows_{side}"]) for side in ("train", "valid", "holdout", "holdout_scored")}
        assert rows["train"] + rows["valid"] + rows["holdout"] == 1_600_000
        assert rows["holdout_scored"] == rows["holdout"]  # every holdout row, scored where it lies
        if result.family == "xgboost":  # fitted on every training row, where the files lie
            assert params["trained_on"] == f"{rows['train']:,} rows, XGBoost across 2 Dask worker(s)"

        _wide(tmp_path / "batch", files=16, rows=100_000, columns=100, shift=1.0, seed=1)
        monitored = monitor(spec, str(tmp_path / "batch"))
        assert monitored.rows == 1_600_000 and monitored.version == "1"
        assert monitored.detected and "x0" in monitored.drifted and len(monitored.drifted) <= 3
        assert monitored.performance["labelled_rows"] == 1_600_000 and monitored.performance["roc_auc"] > 0.7
        assert cluster.client.run(os.getpid) == cluster.pids  # the same two workers throughout
    finally:
        cluster.stop()
