"""Shared fixtures. Telemetry is off before Prefect or MLflow is imported."""

import os
import tempfile

os.environ["DO_NOT_TRACK"] = "true"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="lepton-prefect-home-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("LEPTON_HOME", None)

import pytest


@pytest.fixture(scope="session")
def prefect_harness():
    """One real temporary Prefect API server for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def dask_cluster():
    """One real Dask cluster (two worker processes, one thread each, on 127.0.0.1) for the session."""
    from distributed import Client, LocalCluster

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


@pytest.fixture
def lepton_home(tmp_path, monkeypatch, dask_cluster):
    """A fresh LEPTON_HOME (a new SQLite MLflow store and artifact root) per test; runs use the
    session's Dask cluster, as a team's would use theirs."""
    home = tmp_path / "lepton-home"
    monkeypatch.setenv("LEPTON_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LEPTON_DASK_ADDRESS", dask_cluster.scheduler.address)
    return home


@pytest.fixture
def nothing_recorded(lepton_home):
    """A check that a failed run left nothing behind: no registered model, no finished run."""

    def check() -> None:
        from mlflow import MlflowClient

        from lepton.core import tracking
        from lepton.core.settings import load_settings

        tracking.configure(load_settings())
        client = MlflowClient()
        assert client.search_registered_models() == []
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments) if experiments else []
        assert all(r.info.status != "FINISHED" for r in runs)

    return check


@pytest.fixture
def postgres_databases():
    """Create fresh PostgreSQL databases on the server LEPTON_TEST_POSTGRES_URL names (CI sets it),
    dropped afterwards: ``create("prefect", "mlflow")`` returns the server's URL without a
    database, and one new database name per kind. Skips, saying so, where no server is named."""
    server = os.environ.get("LEPTON_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("LEPTON_TEST_POSTGRES_URL is not set: the PostgreSQL configuration is NOT tested here")
    import uuid

    import psycopg

    admin = psycopg.connect(server, autocommit=True)
    made: list[str] = []

    def create(*kinds: str) -> tuple[str, list[str]]:
        names = [f"lepton_{kind}_{uuid.uuid4().hex[:8]}" for kind in kinds]
        with admin.cursor() as cursor:
            for name in names:
                cursor.execute(f'CREATE DATABASE "{name}"')
                made.append(name)
        return server.rsplit("/", 1)[0], names

    yield create
    with admin.cursor() as cursor:
        for name in made:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()
