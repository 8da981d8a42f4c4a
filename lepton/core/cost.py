"""What a run costs: each stage's wall seconds, CPU-seconds, peak memory and GPU-seconds, priced.

A stage is measured from this process and its child processes (psutil), plus the worker
processes of an external Dask cluster when the stage used one (asked through ``client.run``;
a ``LocalCluster``'s workers are threads of this process, already counted). CPU and resident
memory are sampled every ``SAMPLE_SECONDS``; when several stages run in this process at once
(``lepton run --all``), each sample is split evenly among them. GPU-seconds are the wall
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
from dataclasses import dataclass
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

    def priced(self, prices: Prices, cached: bool = False) -> StageUsage:
        """The usage with its cost and energy, rounded for logs and JSON (wall time as ``seconds``)."""
        return StageUsage(
            seconds=round(self.wall_seconds, 3),
            cpu_seconds=round(self.cpu_seconds, 3),
            peak_mb=round(self.peak_mb, 3),
            gpu_seconds=round(self.gpu_seconds, 3),
            cost_usd=round(self.cost_usd(prices), 8),
            energy_wh=round(self.energy_wh(prices), 5),
            cached=cached,
        )


@dataclass(frozen=True)
class StageUsage:
    """One stage as a run reports it (``lepton run --json``'s ``stages``, the cost table): wall
    seconds, CPU-seconds, peak MB and GPU-seconds, what they cost and the energy, and whether it
    was reused from the stage cache."""

    seconds: float
    cpu_seconds: float
    peak_mb: float
    gpu_seconds: float = 0.0
    cost_usd: float = 0.0
    energy_wh: float = 0.0
    cached: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageUsage:
        return cls(**data)


def _processes() -> list[psutil.Process]:
    me = psutil.Process()
    try:
        return [me, *me.children(recursive=True)]
    except psutil.Error:
        return [me]


def process_cpu_seconds() -> tuple[str, int, float]:
    """Host, pid and CPU-seconds of the calling process (a Dask worker, through ``client.run``)."""
    times = psutil.Process().cpu_times()
    return socket.gethostname(), os.getpid(), times.user + times.system


@dataclass
class Meter:
    """Measures one stage (see ``measure``); ``usage`` is set when the stage ends."""

    usage: Usage | None = None
    cpu: float = 0.0  # this stage's share of the processes' CPU-seconds so far
    peak: float = 0.0  # the largest share of resident memory seen, MB
    sharing: float = 0.0  # sum over samples of the stages running at once (for the mean)
    samples: int = 0


class _Sampler:
    """One sampler for every stage measured in this process: every ``SAMPLE_SECONDS`` (and
    whenever a stage starts or ends) the CPU-seconds this process tree used since the last
    sample, and its resident memory, are split evenly among the stages running at that moment
    (pipelines of several domains at once share one process). CPU-seconds are counted per
    process, children included; a child's time is not counted again when its parent reaps it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.meters: list[Meter] = []
        self.seen: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, cumulative CPU-seconds)
        self.thread: threading.Thread | None = None

    def _read(self) -> tuple[dict[int, tuple[int, float]], float]:
        """Per process: parent and cumulative CPU-seconds; and the tree's resident memory, MB."""
        cpu, rss = {}, 0
        for process in _processes():
            try:
                t = process.cpu_times()
                cpu[process.pid] = (process.ppid(), t.user + t.system + t.children_user + t.children_system)
                rss += process.memory_info().rss
            except psutil.Error:  # it ended between the listing and the reading
                continue
        return cpu, rss / MB

    def tick(self) -> None:
        """Attribute the CPU and memory since the last sample (the lock held)."""
        now, rss = self._read()
        used = sum(cpu - self.seen.get(pid, (0, 0.0))[1] for pid, (_, cpu) in now.items())
        # a child that ended: its parent's children_* times took in what was already counted
        used -= sum(cpu for pid, (parent, cpu) in self.seen.items() if pid not in now and parent in now)
        self.seen = now
        if not self.meters:
            return
        share, memory = max(used, 0.0) / len(self.meters), rss / len(self.meters)
        for meter in self.meters:
            meter.cpu += share
            meter.peak = max(meter.peak, memory)
            meter.sharing += len(self.meters)
            meter.samples += 1

    def add(self, meter: Meter) -> None:
        with self.lock:
            if not self.meters:
                self.seen = self._read()[0]  # the baseline: nothing before now is counted
            else:
                self.tick()
            self.meters.append(meter)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="lepton-cost-sampler", daemon=True)
                self.thread.start()

    def remove(self, meter: Meter) -> None:
        with self.lock:
            self.tick()
            self.meters.remove(meter)

    def _run(self) -> None:
        while True:
            time.sleep(SAMPLE_SECONDS)
            with self.lock:
                if not self.meters:
                    self.thread = None
                    return
                self.tick()


_SAMPLER = _Sampler()


@contextmanager
def measure(gpu: bool = False, client: Any = None) -> Iterator[Meter]:
    """Measure the enclosed stage: wall, its share of the CPU-seconds of this process and its
    children (and of the workers of ``client``, an external cluster's: pass none for a cluster
    of threads in this process), its share of the sampled peak memory, GPU-seconds when ``gpu``."""
    meter = Meter()
    workers_before = _worker_seconds(client)
    _SAMPLER.add(meter)
    start = time.perf_counter()
    try:
        yield meter
    finally:
        wall = time.perf_counter() - start
        _SAMPLER.remove(meter)
        sharing = meter.sharing / meter.samples if meter.samples else 1.0
        cpu = meter.cpu + max(0.0, _worker_seconds(client) - workers_before) / sharing
        meter.usage = Usage(wall, cpu, meter.peak, wall if gpu else 0.0)


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


def total(stages: dict[str, StageUsage]) -> dict[str, float]:
    """The run's totals over its priced stages."""
    keys = ("seconds", "cpu_seconds", "gpu_seconds", "cost_usd", "energy_wh")
    out = {key: round(sum(getattr(stage, key) for stage in stages.values()), 8) for key in keys}
    out["peak_mb"] = max((stage.peak_mb for stage in stages.values()), default=0.0)
    return out
