"""A registered finance champion for the service's edge cases, trained once per module."""

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def finance_home(tmp_path_factory, dask_cluster, prefect_harness) -> Iterator[Path]:
    from lepton.flows.pipeline import pipeline

    home = tmp_path_factory.mktemp("reliability") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LEPTON_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("LEPTON_DASK_ADDRESS", dask_cluster.scheduler.address)
        pipeline(domain="finance", trials=0)
        yield home
