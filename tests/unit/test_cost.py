"""Cost accounting: what a stage used (measured on real work) and what it costs under a price table."""

import dataclasses
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

from lepton.core import cost
from lepton.errors import SettingsError


def _burn(seconds: float) -> float:
    """Keep this thread busy for ``seconds`` of its own CPU time."""
    end = time.thread_time() + seconds
    x = 0.0
    while time.thread_time() < end:
        x += 1.0
    return x


def test_cost_and_energy_follow_the_price_table():
    prices = cost.Prices(core_hour=0.10, gb_hour=0.01, gpu_hour=2.0, watts_core=20, watts_gpu=400)
    usage = cost.Usage(wall_seconds=1800, cpu_seconds=7200, peak_mb=2048, gpu_seconds=900)
    # two core-hours, 2 GB for half an hour, a quarter GPU-hour
    assert usage.cost_usd(prices) == pytest.approx(2 * 0.10 + 2 * 0.5 * 0.01 + 0.25 * 2.0)
    assert usage.energy_wh(prices) == pytest.approx(2 * 20 + 0.25 * 400)
    priced = usage.priced(prices)
    assert priced.seconds == 1800 and priced.cost_usd == pytest.approx(0.71) and not priced.cached
    assert cost.StageUsage.from_json(dataclasses.asdict(priced)) == priced


def test_prices_come_from_the_environment_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.setenv("LEPTON_PRICE_GPU_HOUR", "9.5")
    monkeypatch.setenv("LEPTON_WATTS_CORE", " 4 ")
    prices = cost.load_prices()
    assert prices.gpu_hour == 9.5 and prices.watts_core == 4 and prices.core_hour == cost.Prices().core_hour
    monkeypatch.setenv("LEPTON_PRICE_CORE_HOUR", "-1")
    with pytest.raises(SettingsError, match=r"LEPTON_PRICE_CORE_HOUR.*'-1'"):
        cost.load_prices()
    monkeypatch.setenv("LEPTON_PRICE_CORE_HOUR", "cheap")
    with pytest.raises(SettingsError, match="LEPTON_PRICE_CORE_HOUR"):
        cost.load_prices()


def test_a_stage_is_measured_in_this_process_and_its_children():
    with cost.measure() as meter:
        _burn(0.4)
        held = np.ones(300 * 1024 * 1024 // 8)  # 300 MB, touched
        child = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
        subprocess.run([sys.executable, "-c", child], check=True)
        time.sleep(0.2)  # the sampler sees the peak
    usage = meter.usage
    assert usage is not None and usage.gpu_seconds == 0
    assert usage.cpu_seconds >= 0.75  # 0.4 here and 0.4 in the child
    assert usage.wall_seconds >= 1.0  # both burns, one after the other, and the pause
    assert usage.peak_mb >= 300
    del held


def test_stages_running_at_once_share_the_process():
    """Two stages in two threads of one process (as `lepton run --all` runs domains): each is
    charged its share of the process's CPU, not the whole of it."""
    usages = {}
    together = threading.Barrier(2)

    def stage(name: str) -> None:
        with cost.measure() as meter:
            together.wait()  # both stages are being measured before either works
            _burn(0.6)
        usages[name] = meter.usage

    def tree_cpu() -> float:  # this process and its children (the session's Dask workers too)
        me = psutil.Process()
        return sum(sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)])

    threads = [threading.Thread(target=stage, args=(name,)) for name in "ab"]
    before = tree_cpu()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    used = tree_cpu() - before
    cpu = [usages[name].cpu_seconds for name in "ab"]
    assert used >= 1.15  # both burns, 0.6 each
    assert sum(cpu) == pytest.approx(used, rel=0.15)  # charged once in all, not once per stage
    # each its share of the time they ran together, and the whole of the time it ran alone
    assert all(c == pytest.approx(used / 2, rel=0.35) for c in cpu), (cpu, used)


def test_gpu_seconds_are_the_stage_wall_time_on_the_device():
    with cost.measure(gpu=True) as meter:
        time.sleep(0.2)
    assert meter.usage is not None and meter.usage.gpu_seconds == meter.usage.wall_seconds >= 0.2


def test_an_external_clusters_workers_are_counted_once(dask_cluster):
    # the session's workers are this process's children: counted through psutil, not again via client.run
    with cost.measure(client=dask_cluster) as meter:
        dask_cluster.gather(dask_cluster.map(_burn, [0.5, 0.5], pure=False))
    usage = meter.usage
    # 1 s of work: counted twice it would be 2 s or more; the rest is this process's own threads
    assert usage is not None and 0.9 <= usage.cpu_seconds < 1.9


def test_totals_add_the_stages():
    keys = ("seconds", "cpu_seconds", "gpu_seconds", "cost_usd", "energy_wh", "peak_mb")
    stages = {"a": cost.StageUsage(**dict(zip(keys, (1.0, 2.0, 0.0, 0.25, 1.0, 10), strict=True))),
              "b": cost.StageUsage(**dict(zip(keys, (3.0, 1.0, 1.0, 0.5, 2.0, 30), strict=True)))}  # fmt: skip
    assert cost.total(stages) == dict(zip(keys, (4.0, 3.0, 1.0, 0.75, 3.0, 30), strict=True))
