"""Issue 18, case 1: six `lepton run` processes at once (two per domain, a small trial budget)
on one fresh LEPTON_HOME, with the stores on SQLite and on PostgreSQL: every process exits 0,
and the registry holds what running them one after another would: one version per domain,
the champion alias on it, no run left failed or unfinished."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lepton.domains import DOMAINS

pytestmark = pytest.mark.slow
LEPTON = str(Path(sys.executable).parent / "lepton")


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request):
    """Extra environment: nothing (SQLite under LEPTON_HOME), or fresh PostgreSQL databases for
    MLflow and for Prefect's temporary servers, dropped afterwards."""
    if request.param == "sqlite":
        return {}
    base, (mlflow, prefect) = request.getfixturevalue("postgres_databases")("mlflow", "prefect")
    server = base.split("://", 1)[1]
    return {
        "MLFLOW_TRACKING_URI": f"postgresql+psycopg://{server}/{mlflow}",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{server}/{prefect}",
    }


def test_six_runs_at_once_on_a_fresh_home_end_as_if_run_in_turn(tmp_path, stores):
    home = tmp_path / "home"
    env = {**os.environ, "LEPTON_HOME": str(home), **stores}
    env.pop("PREFECT_API_URL", None)
    if "MLFLOW_TRACKING_URI" not in stores:
        env.pop("MLFLOW_TRACKING_URI", None)
    runs = []
    for i, domain in enumerate([d for d in DOMAINS for _ in range(2)]):
        log = tmp_path / f"{domain}-{i}.log"
        command = [LEPTON, "run", domain, "--trials", "2"]
        runs.append((domain, log, subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.DEVNULL, stderr=log.open("w"))))  # fmt: skip
    codes = {f"{domain}-{i}": process.wait(timeout=1800) for i, (domain, _, process) in enumerate(runs)}
    logs = {log.name: log.read_text()[-3000:] for _, log, _ in runs}
    assert set(codes.values()) == {0}, (codes, logs)
    assert not any("Traceback" in text or "already exists" in text for text in logs.values()), logs

    from mlflow import MlflowClient

    uri = stores.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for domain in DOMAINS:
        versions = client.search_model_versions(f"name='lepton-{domain}'")
        assert len(versions) == 1, [(v.version, v.aliases) for v in versions]  # no duplicate version
        assert client.get_model_version_by_alias(f"lepton-{domain}", "champion").version == versions[0].version
    runs_left = [
        (e.name, r.info.status)
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if r.info.status != "FINISHED"
    ]
    assert runs_left == []  # no run failed, none left running
