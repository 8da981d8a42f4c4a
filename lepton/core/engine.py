"""Compute placement: the Dask cluster a run uses, the device XGBoost trains on, and how many
threads it may use.

``dask_engine`` is the one place that gives flows a Dask client: the scheduler at
``LEPTON_DASK_ADDRESS`` when one is configured, else a ``LocalCluster`` sized to this machine
(workers x threads = cores, so XGBoost inside a worker uses that worker's threads and no more),
closed when the run ends. The local cluster's workers are threads of this process: polars,
XGBoost and NumPy release the GIL, and a partition handed to a worker is shared, not copied —
on one machine, copying tables to worker processes cost more than the features themselves
(measured: bench/features.py). A cluster of worker processes or machines is one address away.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@functools.cache
def gpu_visible() -> bool:
    """True when an NVIDIA GPU answers ``nvidia-smi -L`` and this XGBoost was built with CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in {"", "-1"} or shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return False
    import xgboost

    return bool(xgboost.build_info().get("USE_CUDA"))


def choose_device(requested: str = "auto") -> str:
    """``cuda`` when asked or when a GPU is visible under ``auto``; ``cpu`` otherwise."""
    if requested == "cuda" and not gpu_visible():
        raise RuntimeError("LEPTON_DEVICE=cuda but no CUDA-capable GPU is visible to XGBoost")
    if requested == "auto":
        return "cuda" if gpu_visible() else "cpu"
    return requested


def machine_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads() -> int:
    """Threads XGBoost may use here: the Dask worker's own threads inside a worker (so two
    workers on two cores do not each start two threads), else every core of this machine."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return machine_cores()


@dataclass(frozen=True)
class Engine:
    """A connected Dask client and what it runs on."""

    client: Any  # distributed.Client
    address: str
    dashboard: str | None
    workers: int
    threads: int  # total worker threads: how many tasks run at once
    external: bool  # an existing cluster (left running) rather than one started for this run

    def describe(self) -> str:
        board = f", dashboard {self.dashboard}" if self.dashboard else ""
        size = f"{self.workers} worker(s), {self.threads} thread(s){board}"
        if self.external:
            return f"Dask cluster at {self.address}: {size}"
        return f"Dask LocalCluster in this process: {size}"  # its address is in-process, not a host


def _dashboard_link(client: Any, cluster: Any) -> str | None:
    try:
        import bokeh  # noqa: F401  (the dashboard needs it)
    except ImportError:
        return None
    with contextlib.suppress(Exception):
        if cluster is not None:  # ours listens on loopback only; say so rather than the host name
            return f"http://127.0.0.1:{cluster.scheduler.http_server.port}/status"
        return str(client.dashboard_link)
    return None


@contextlib.contextmanager
def dask_engine(
    address: str | None = None, threads_per_worker: int = 1, workers: int | None = None
) -> Iterator[Engine]:
    """A Dask client for one run: connect to ``address``, or start a LocalCluster on 127.0.0.1
    with ``workers`` x ``threads_per_worker`` = this machine's cores; close what was started."""
    import dask
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # worker processes inherit it
    cluster = None
    if address:
        client = Client(address, timeout="30s")
    else:
        count = workers or max(1, machine_cores() // threads_per_worker)
        # No statistical profiler: its thread samples the worker threads' frames every 10 ms and
        # walks their f_back chains, which is the only code in the stack that does so; a worker
        # terminal showed it failing on XGBoost's QuantileDMatrix data callback ('QuantileDMatrix'
        # object has no attribute 'f_back'). It feeds only the dashboard's profile page.
        dask.config.set({"distributed.worker.profile.enabled": False})
        cluster = LocalCluster(  # worker threads in this process: tables are shared, not copied
            n_workers=count,
            threads_per_worker=threads_per_worker,
            processes=False,
            memory_limit=0,  # threads share this process's memory: a per-worker limit would misfire
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.WARNING,
        )
        client = Client(cluster)
    try:
        info = client.scheduler_info()
        nthreads = client.nthreads()
        yield Engine(
            client=client,
            address=str(info.get("address", address)),
            dashboard=_dashboard_link(client, cluster),
            workers=len(nthreads),
            threads=max(1, sum(nthreads.values())),
            external=cluster is None,
        )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
