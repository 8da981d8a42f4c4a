"""The long-running parts, started as real processes on this machine: a Prefect server, an MLflow
server, a Prefect worker on the process pool, and the deployments of ``prefect.yaml``.

``lepton ui`` starts both servers with lean settings (SQLite under LEPTON_HOME by default, or
PostgreSQL from ``LEPTON_PREFECT_DATABASE_URL`` / ``LEPTON_MLFLOW_BACKEND_URI``); ``lepton deploy``
creates the work pool and applies ``prefect.yaml``; ``lepton worker`` runs the pool's worker.
Each child is started in its own process group and stopped by its PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lepton.core.settings import Settings
from lepton.errors import LeptonError

# The project's prefect.yaml, shipped with the package (a link to the top-level file in a
# checkout); its entrypoints are module paths, so no source checkout is needed to deploy.
DEPLOYMENTS = Path(__file__).with_name("prefect.yaml")
POOL = "lepton-process"
BIN = Path(sys.executable).parent


class StackError(LeptonError):
    """A server or worker would not start, or a deployment could not be applied."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    url: str | None = None
    log: Path | None = None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the child's process group, SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _executable(name: str) -> str:
    local = BIN / name
    return str(local) if local.exists() else name


def start(name: str, command: list[str], env: Mapping[str, str], log: Path, url: str | None = None) -> Child:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=dict(env), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=log.parent,
        )  # fmt: skip
    guard(process.pid, group=True)
    return Child(name, process, url, log)


# A process of its own that outlives nothing: it stops the child when this process is gone
# however it ended (kill -9 included, which no handler in this process can see), and ends
# when the child does. Plain Python with no imports of Lepton: it starts in milliseconds.
WATCHDOG = """
import os, signal, sys, time
parent, child, group = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "group"
def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
def send(sig):
    try:
        os.killpg(child, sig) if group else os.kill(child, sig)
    except (ProcessLookupError, PermissionError):
        pass
while alive(child):
    if os.getppid() != parent:
        send(signal.SIGTERM)
        for _ in range(50):
            if not alive(child):
                break
            time.sleep(0.1)
        send(signal.SIGKILL)
        break
    time.sleep(0.5)
"""


def guard(pid: int, group: bool = False) -> None:
    """Stop ``pid`` (its process group with ``group``) when this process dies: a watchdog
    process that polls its parent (see ``WATCHDOG``)."""
    subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(pid), "group" if group else "one"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def start_temporary_prefect(home: Path) -> None:
    """Prefect's temporary API server for a run without a configured server, started the way
    Prefect would on first use but (a) under a lock shared by every process on this
    LEPTON_HOME, so two runs starting together do not both create Prefect's tables in its
    database, and (b) guarded, so the server stops with this process even after kill -9."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    from lepton.core.locks import exclusive

    server = SubprocessASGIServer()
    if server.running:
        return
    with exclusive(home, "prefect-store"):
        server.start()
    if server.server_process is not None:
        guard(server.server_process.pid)


def wait_ready(child: Child, path: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise StackError(f"{child.name} exited with {child.process.returncode}; its log: {child.log}")
        try:
            with urllib.request.urlopen(f"{child.url}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    child.stop()
    raise StackError(f"{child.name} not ready at {child.url} after {timeout:.0f} s; its log: {child.log}")


def lean_environment(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every Lepton process shares: telemetry off, Prefect's home under
    LEPTON_HOME, Prefect's services that a local stack does not need turned off."""
    env = dict(base if base is not None else os.environ)
    env.update({"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "LEPTON_HOME": str(settings.home)})
    env.setdefault("PREFECT_HOME", str(settings.prefect_home))
    env.setdefault("PREFECT_API_SERVICES_FOREMAN_ENABLED", "false")  # no work-pool health pings
    env.setdefault("PREFECT_SERVER_SERVICES_FOREMAN_ENABLED", "false")
    # Flow and task run logs at INFO reach the API (the UI's Logs tab) and a worker's terminal;
    # the CLI's own console stays at WARNING (``lepton.app.api.prepare_environment``) but not here.
    for name in ("PREFECT_LOGGING_LEVEL", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"):
        env[name] = "INFO"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow starts its server by name
    return env


def prefect_server(settings: Settings, port: int, env: Mapping[str, str], database_url: str | None = None) -> Child:
    url = f"http://127.0.0.1:{port}"
    env = dict(env)
    # The UI asks its server where the API is (/ui-settings): on any port but 4200 the server
    # must be told, or the page talks to whatever answers on 4200.
    env["PREFECT_UI_API_URL"] = f"{url}/api"
    env["PREFECT_UI_URL"] = url
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    command = [_executable("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return start("prefect server", command, env, settings.home / "logs" / "prefect-server.log", url)


def mlflow_server(settings: Settings, port: int, env: Mapping[str, str], backend_uri: str | None = None) -> Child:
    backend = backend_uri or f"sqlite:///{settings.home / 'mlflow.db'}"
    command = [
        _executable("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend, "--artifacts-destination", str(settings.artifact_root),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job consumers: GenAI jobs only
    return start("mlflow server", command, env, settings.home / "logs" / "mlflow-server.log", url)


HEALTH = {"prefect server": "/api/health", "mlflow server": "/health"}


def wait_all(children: list[Child]) -> None:
    """Wait until every server answers its health check; they start side by side, so this
    takes as long as the slowest, not the sum."""
    for child in children:
        wait_ready(child, HEALTH[child.name])


def deploy(env: Mapping[str, str], say: Callable[[str], None] = lambda _: None) -> list[str]:
    """Create the process work pool (if missing) and apply every deployment in prefect.yaml,
    with their schedules and drift triggers; return the deployment names. ``say`` hears each
    step as it starts (it takes a minute: ``prefect deploy`` imports every flow)."""
    if not env.get("PREFECT_API_URL"):
        raise StackError("no Prefect server: start one with `lepton ui`, or set PREFECT_API_URL")
    prefect = _executable("prefect")
    # `prefect deploy` reads prefect.yaml from its working directory and records that directory
    # for the worker's runs: a folder under LEPTON_HOME, wherever Lepton is installed
    project = Path(env.get("LEPTON_HOME") or ".").resolve() / "deployments"
    project.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEPLOYMENTS, project / "prefect.yaml")
    say(f"creating the work pool {POOL} ...")
    pool = subprocess.run(
        [prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"],
        env=dict(env), cwd=project, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if pool.returncode != 0:
        raise StackError(f"could not create the work pool {POOL}: {pool.stdout[-2000:]}{pool.stderr[-2000:]}")
    say("applying prefect.yaml: a pipeline and a monitor deployment per domain, their schedules and triggers ...")
    applied = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"], env=dict(env), cwd=project, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    if applied.returncode != 0:
        raise StackError(f"`prefect deploy --all` failed: {applied.stdout[-3000:]}{applied.stderr[-3000:]}")
    import yaml

    return [d["name"] for d in yaml.safe_load(DEPLOYMENTS.read_text())["deployments"]]


def worker_command() -> list[str]:
    return [_executable("prefect"), "worker", "start", "--pool", POOL, "--type", "process"]


@contextlib.contextmanager
def running(children: list[Child]) -> Iterator[list[Child]]:
    try:
        yield children
    finally:
        for child in reversed(children):
            child.stop()
