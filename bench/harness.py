"""Benchmark harness: run commands as child processes, measure wall time and peak memory,
repeat, and write the medians and ratios to ``bench/results/<name>.json``."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float  # the largest single process (wait4)
    tree_peak_mb: float | None = None  # the process and all its children together, sampled
    own_peak_mb: float | None = None  # the process alone, without its children (a Prefect server), sampled


@dataclass
class Measurement:
    label: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def median_peak_mb(self) -> float:
        return statistics.median(s.peak_rss_mb for s in self.samples)


def run_once(cmd: list[str], env: dict[str, str] | None = None, tree: bool = False) -> tuple[Sample, str]:
    """Run ``cmd``; return its wall time, its own peak RSS (wait4) and its stdout.

    With ``tree``, the summed RSS of the process and its descendants (Dask workers included) is
    also sampled every 0.2 s and its peak kept: wait4 only sees the largest single process, which
    may be a child (the temporary Prefect server), so the process's own peak is sampled beside it."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, text=True)
    peak = [0.0, 0.0]
    done = threading.Event()
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, peak, done), daemon=True)
    if tree:
        sampler.start()
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    if tree:
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    sample = Sample(
        seconds=seconds,
        peak_rss_mb=usage.ru_maxrss / 1024,
        tree_peak_mb=peak[0] if tree else None,
        own_peak_mb=peak[1] if tree else None,
    )
    return sample, out


def _sample_tree(pid: int, peak: list[float], done: threading.Event) -> None:
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not done.wait(0.2):
        total = 0
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                rss = process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            total += rss
            if process is root:
                peak[1] = max(peak[1], rss / 2**20)
        peak[0] = max(peak[0], total / 2**20)


def machine() -> dict[str, str | int]:
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count() or 0}


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=_encode))
    return path


def _encode(value):
    if isinstance(value, Measurement):
        return {**asdict(value), "median_seconds": value.median_seconds, "median_peak_mb": value.median_peak_mb}
    raise TypeError(type(value))


def champion_home(domain: str | list[str], home: Path, trials: int) -> dict:
    """``lepton run DOMAIN --json`` (or ``lepton run`` with the arguments ``domain`` lists: a
    user's table) in ``LEPTON_HOME=home`` (a champion registered there); its JSON. This process
    then reads that home's MLflow store."""
    from lepton.core import tracking
    from lepton.core.settings import load_settings

    lepton = Path(sys.executable).parent / "lepton"
    env = {"LEPTON_HOME": str(home), "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    what = [domain] if isinstance(domain, str) else domain
    _, out = run_once([str(lepton), "run", *what, "--trials", str(trials), "--json"], env=env)
    os.environ.update(env)
    tracking.configure(load_settings())
    return json.loads(next(line for line in out.splitlines() if line.startswith("{")))
