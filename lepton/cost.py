"""What a run costs: each stage's wall seconds, CPU-seconds, peak memory and GPU-seconds, priced.

A stage is measured from this process and its child processes (psutil), plus the worker
processes of an external Dask cluster when the stage used one (asked through ``client.run``;
a ``LocalCluster``'s workers are threads of this process, already counted). Peak memory is
sampled every ``SAMPLE_SECONDS`` (resident set of the same processes). GPU-seconds are the wall
seconds of a stage that ran on the GPU: the device is held for the stage, whatever it computes.

Money and energy come from a price table (``Prices``), read from the environment so a team can
state its own rates:

    LEPTON_PRICE_CORE_HOUR  USD per CPU core-hour, charged on CPU-seconds used  (0.048)
    LEPTON_PRICE_GB_HOUR    USD per GB-hour of memory, on the stage's peak      (0.0064)
    LEPTON_PRICE_GPU_HOUR   USD per GPU-hour                                     (3.50)
    LEPTON_WATTS_CORE       watts per busy core, for the energy estimate        (10)
    LEPTON_WATTS_GPU        watts per busy GPU                                   (700)

The defaults are on-demand cloud rates of 2026 (a general-purpose vCPU with 4 GB, an H100/H200
class GPU) and a server core's and such a GPU's power under load.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lepton.errors import SettingsError

SAMPLE_SECONDS = 0.05
MB = 1024 * 1024


class Prices(BaseModel):
    """The price and power table: USD per core-hour, GB-hour and GPU-hour; watts per core and GPU."""

    model_config = ConfigDict(frozen=True)

    core_hour: float = Field(default=0.048, ge=0)
    gb_hour: float = Field(default=0.0064, ge=0)
    gpu_hour: float = Field(default=3.50, ge=0)
    watts_core: float = Field(default=10.0, ge=0)
    watts_gpu: float = Field(default=700.0, ge=0)


ENVIRONMENT = {
    "core_hour": "LEPTON_PRICE_CORE_HOUR",
    "gb_hour": "LEPTON_PRICE_GB_HOUR",
    "gpu_hour": "LEPTON_PRICE_GPU_HOUR",
    "watts_core": "LEPTON_WATTS_CORE",
    "watts_gpu": "LEPTON_WATTS_GPU",
}


def load_prices() -> Prices:
    """The price table, each rate overridable from the environment (a clear error names a bad one)."""
    given = {key: os.environ[name].strip() for key, name in ENVIRONMENT.items() if os.environ.get(name, "").strip()}
    try:
        return Prices.model_validate(given)
    except ValidationError as error:
        first = error.errors()[0]
        name = ENVIRONMENT[str(first["loc"][0])]
        raise SettingsError(f"{name} must be a number >= 0, not {os.environ[name]!r}") from None


@dataclass(frozen=True)
class Usage:
    """What one stage used, and what that costs under a price table."""

    wall_seconds: float
    cpu_seconds: float
    peak_mb: float
    gpu_seconds: float = 0.0

    def cost_usd(self, prices: Prices) -> float:
        memory_gb_hours = self.peak_mb / 1024 * self.wall_seconds / 3600
        return (
            self.cpu_seconds / 3600 * prices.core_hour
            + memory_gb_hours * prices.gb_hour
            + self.gpu_seconds / 3600 * prices.gpu_hour
        )

    def energy_wh(self, prices: Prices) -> float:
        return (self.cpu_seconds * prices.watts_core + self.gpu_seconds * prices.watts_gpu) / 3600

    def priced(self, prices: Prices) -> dict[str, float]:
        """The usage with its cost and energy, rounded for logs and JSON (wall time as ``seconds``)."""
        out = {"seconds" if key == "wall_seconds" else key: round(value, 3) for key, value in asdict(self).items()}
        return {**out, "cost_usd": round(self.cost_usd(prices), 8), "energy_wh": round(self.energy_wh(prices), 5)}


def _processes() -> list[psutil.Process]:
    me = psutil.Process()
    try:
        return [me, *me.children(recursive=True)]
    except psutil.Error:
        return [me]


def _cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system + times.children_user + times.children_system
        except psutil.Error:  # it ended between the listing and the reading
            continue
    return seconds


def _rss_mb() -> float:
    total = 0
    for process in _processes():
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total / MB


def process_cpu_seconds() -> tuple[str, int, float]:
    """Host, pid and CPU-seconds of the calling process (a Dask worker, through ``client.run``)."""
    times = psutil.Process().cpu_times()
    return socket.gethostname(), os.getpid(), times.user + times.system


@dataclass
class Meter:
    """Measures one stage (see ``measure``); ``usage`` is set when the stage ends."""

    gpu: bool = False
    client: Any = None
    usage: Usage | None = None
    _peak: float = field(default=0.0, repr=False)


@contextmanager
def measure(gpu: bool = False, client: Any = None) -> Iterator[Meter]:
    """Measure the enclosed stage: wall, CPU (this process, its children, and the workers of
    ``client``, an external cluster's: pass none for a cluster of threads in this process),
    sampled peak memory, GPU-seconds when ``gpu``."""
    meter = Meter(gpu=gpu, client=client)
    before = _cpu_seconds(_processes())
    workers_before = _worker_seconds(client)
    meter._peak = _rss_mb()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            meter._peak = max(meter._peak, _rss_mb())

    sampler = threading.Thread(target=sample, name="lepton-cost-sampler", daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        yield meter
    finally:
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        after = _cpu_seconds(_processes())
        # a process that started during the stage counts from zero; one that ended is lost
        # (its CPU is in its parent's children_* times once the parent waited for it)
        cpu = sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
        cpu += max(0.0, _worker_seconds(client) - workers_before)
        peak = max(meter._peak, _rss_mb())
        meter.usage = Usage(wall, max(cpu, 0.0), peak, wall if gpu else 0.0)


def _worker_seconds(client: Any) -> float:
    """CPU-seconds of an external cluster's workers (0 without one), less those that are this
    process's children (counted already)."""
    if client is None:
        return 0.0
    try:
        workers = client.run(process_cpu_seconds).values()
    except Exception:  # a worker leaving mid-run must not fail the stage; the figure is a lower bound
        return 0.0
    here, mine = socket.gethostname(), {process.pid for process in _processes()}
    return float(sum(seconds for host, pid, seconds in workers if not (host == here and pid in mine)))


def total(stages: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The run's totals over its priced stages."""
    keys = ("seconds", "cpu_seconds", "gpu_seconds", "cost_usd", "energy_wh")
    out = {key: round(sum(stage.get(key, 0.0) for stage in stages.values()), 8) for key in keys}
    out["peak_mb"] = max((stage.get("peak_mb", 0.0) for stage in stages.values()), default=0.0)
    return out
