"""Issue 18, case 6: a run stopped by Ctrl-C exits 130 cleanly; one killed with -9 leaves no
process behind, and the re-run completes with no duplicate model version. Real `lepton run`
processes on a fresh LEPTON_HOME; every child is checked by its PID."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LEPTON = str(Path(sys.executable).parent / "lepton")


def _start(home: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    log = home.parent / f"stderr-{time.monotonic_ns()}.log"
    env = {**os.environ, "LEPTON_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)  # the run starts its own temporary Prefect server, as a user's would
    process = subprocess.Popen(
        [LEPTON, "run", "finance", *args], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )  # fmt: skip
    return process, log


def _wait_for(process: subprocess.Popen, log: Path, text: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{text!r} not seen in {timeout} s"
        time.sleep(0.1)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = Path(f"/proc/{todo.pop()}/task")
        for task in children.iterdir() if children.exists() else []:
            kids = (task / "children").read_text().split() if (task / "children").exists() else []
            found += [int(k) for k in kids]
            todo += [int(k) for k in kids]
    return sorted(set(found))


def _alive(pids: list[int]) -> list[int]:
    left = []
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z":
            left.append(pid)
    return left


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _alive(pids)


def _versions(home: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}", registry_uri=f"sqlite:///{home / 'mlflow.db'}"
    )
    return client.search_model_versions("name='lepton-finance'")


@pytest.mark.parametrize(
    ("stage", "delay"),
    [
        ("optimise", 0.0),  # the search under way
        # in train, inside XGBoost's native QuantileDMatrix callback, where a KeyboardInterrupt
        # comes back as an XGBoostError (seen under load); a spread of moments, slow
        *(pytest.param("train", d, marks=pytest.mark.slow) for d in (0.3, 0.8, 1.2)),
    ],
)
def test_ctrl_c_exits_130_quietly_and_stops_every_child(tmp_path, stage, delay):
    home = tmp_path / "home"
    process, log = _start(home, "--trials", "60")
    _wait_for(process, log, f"finance {stage:<10} started")
    time.sleep(delay)
    children = _descendants(process.pid)
    assert children, "the run should have started Prefect's temporary server"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    text = log.read_text()
    assert "interrupted (SIGINT)" in text
    assert "Traceback" not in text and "terminate called" not in text and "AllExit" not in text, text
    assert _gone_within(children, 15) == []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert all(
        r.info.status != "FINISHED" for r in runs if r.data.tags.get("mlflow.runName", "").startswith("pipeline")
    )
    assert _versions(home) == []  # nothing registered


@pytest.mark.slow
@pytest.mark.parametrize("boundary", ["preprocess", "features", "train", "optimise", "deploy"])
def test_kill_9_at_a_stage_boundary_orphans_nothing_and_the_re_run_completes(tmp_path, boundary):
    home = tmp_path / "home"
    process, log = _start(home, "--trials", "4")
    _wait_for(process, log, f"finance {boundary} ")
    children = _descendants(process.pid)
    process.kill()
    process.wait(timeout=30)
    assert _gone_within(children, 20) == [], f"orphans of the killed run: {_alive(children)}"
    again, again_log = _start(home, "--trials", "4")
    assert again.wait(timeout=600) == 0, again_log.read_text()
    versions = _versions(home)
    assert len(versions) == 1, [(v.version, v.aliases) for v in versions]  # the re-run found or made one
    assert _gone_within(_descendants(again.pid), 20) == []


_SWALLOWED = """
import gc, os, signal, sys
from lepton.app import cli

signal.signal(signal.SIGINT, cli._interrupted)
sys.unraisablehook = cli._swallowed
where = sys.argv[1]

def interrupt_here():
    os.kill(os.getpid(), signal.SIGINT)
    sum(range(1000))  # the Python handler runs between these bytecodes

if where == "gc":
    fired = []
    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(phase)
            interrupt_here()
    gc.callbacks.append(callback)
    trigger = gc.collect
else:
    class Finalised:
        def __del__(self):
            interrupt_here()
    trigger = lambda: Finalised()  # noqa: E731
try:
    trigger()
    for _ in range(200):
        sum(range(100_000))
    print("the run went on")
except KeyboardInterrupt:
    print("unwound")
    sys.exit(130)
"""


@pytest.mark.parametrize("where", ["gc", "del"])
def test_an_interruption_where_python_drops_exceptions_still_stops_the_run(tmp_path, where):
    """A Ctrl-C whose KeyboardInterrupt lands in a GC callback (Dask registers one) or a __del__
    would be printed as "Exception ignored" and lost, and the run would finish (seen in CI):
    the GC case is delivered again after the collection and unwinds; a dropped one leaves."""
    script = tmp_path / "swallowed.py"
    script.write_text(_SWALLOWED)
    done = subprocess.run(
        [sys.executable, str(script), where],
        check=False, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 130, done.stdout + done.stderr
    assert "the run went on" not in done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    if where == "gc":
        assert "unwound" in done.stdout  # raised in ordinary code: context managers close
    else:
        assert "interrupted (SIGINT)" in done.stderr
