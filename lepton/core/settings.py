"""Where Lepton keeps its state. Read from the environment when asked, never at import.

A caller that decides a setting for its own runs (``lepton run --distributed``, the cluster
that ``lepton run --all`` starts for its domains) says so with ``overrides``: the runs it starts
in that context, threads copied from it included, see the value; the environment is left as
the user set it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lepton.errors import SettingsError

DEFAULT_TRIALS = 8  # Optuna trials per domain: small, so a first run takes minutes
SEARCH_ROWS = 1_000_000  # candidates are fitted on at most this many training rows
DISTRIBUTED_ROWS = 2_000_000  # the chosen tree model trains with xgboost.dask from this many rows
_OVERRIDES: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("lepton_settings", default={})  # noqa: B039


@dataclass(frozen=True)
class Settings:
    home: Path
    tracking_uri: str
    artifact_root: Path
    device: str  # auto | cpu | cuda
    dask_address: str | None = None  # an existing Dask scheduler; None: a LocalCluster per run
    dask_threads: int = 1  # threads per LocalCluster worker (workers x threads = cores)
    search_rows: int = SEARCH_ROWS
    distributed_rows: int = DISTRIBUTED_ROWS
    lock_url: str | None = None  # PostgreSQL for promotion locks across machines; None: a file lock

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"


def load_settings() -> Settings:
    """Embedded defaults under ``./.lepton``; ``LEPTON_HOME`` and ``MLFLOW_TRACKING_URI`` override."""
    home = Path(os.environ.get("LEPTON_HOME", ".lepton")).expanduser().resolve()
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    device = os.environ.get("LEPTON_DEVICE", "auto").lower()
    if device not in {"auto", "cpu", "cuda"}:
        raise SettingsError(f"LEPTON_DEVICE must be auto, cpu or cuda, not {device!r}")
    settings = Settings(
        home=home,
        tracking_uri=tracking_uri,
        artifact_root=home / "artifacts",
        device=device,
        dask_address=os.environ.get("LEPTON_DASK_ADDRESS") or None,
        dask_threads=_count("LEPTON_DASK_THREADS", 1, minimum=1),
        search_rows=_count("LEPTON_SEARCH_ROWS", SEARCH_ROWS, minimum=1000),
        distributed_rows=_count("LEPTON_DISTRIBUTED_ROWS", DISTRIBUTED_ROWS, minimum=0),
        lock_url=os.environ.get("LEPTON_LOCK_URL") or None,
    )
    return dataclasses.replace(settings, **_OVERRIDES.get()) if _OVERRIDES.get() else settings


@contextlib.contextmanager
def overrides(**fields: Any) -> Iterator[None]:
    """``load_settings()`` in this context (and in threads that copy it) gives ``fields`` over
    what the environment says."""
    unknown = set(fields) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise TypeError(f"not settings: {sorted(unknown)}")
    token = _OVERRIDES.set({**_OVERRIDES.get(), **fields})
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


def _count(name: str, default: int, minimum: int) -> int:
    """A whole number from the environment (``_`` separators allowed), at least ``minimum``."""
    raw = os.environ.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise SettingsError(f"{name} must be a whole number >= {minimum}, not {os.environ[name]!r}")
    return int(raw)


def quiet_consoles() -> None:
    """Before Prefect or MLflow is imported (both read these then): run logs at INFO still go
    to the Prefect API (the UI's Logs tab), but the terminal shows Lepton's own progress lines,
    so Prefect's console handler prints warnings and errors only; and MLflow prints no
    "View run ..." lines."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def quiet_telemetry() -> None:
    """The machine may have no internet: keep MLflow and Prefect from phoning home."""
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
