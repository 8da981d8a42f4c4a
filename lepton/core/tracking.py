"""The one module that talks to MLflow: runs, metrics, artifacts, the model registry.

Nothing happens at import time; ``configure`` points MLflow at the store from the settings.
Every function takes explicit run ids so stages can log from any thread.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from lepton.core import digest
from lepton.core.settings import Settings
from lepton.domains import recipes

CHAMPION, CHALLENGER = "champion", "challenger"
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")
SCORING_CODE = Path(__file__).with_name("scoring.py")
RECIPES_CODE = Path(recipes.__file__)  # feature recipes travel with each model as code



class Tag:
    """The tag keys Lepton writes on MLflow runs and model versions, in one place."""

    ROLE = "lepton.role"  # pipeline candidate, baseline, trial or monitor
    VERSION = "lepton.version"  # a run: the version it registered
    SPEC_HASH = "lepton.spec_hash"  # the spec's hash
    PROMOTED = "lepton.promoted"  # a run: whether it moved the champion alias
    GIT_COMMIT = "lepton.git_commit"  # the checkout's commit (provenance only)
    DOMAIN = "lepton.domain"  # the domain (every run)
    DECISION = "lepton.decision"  # a version: the promotion decision, once made
    DATA_FINGERPRINT = "lepton.data_fingerprint"  # the tables' content hash
    CODE = "lepton.code"  # lepton.core.identity: what "the same code" is
    TRIAL_STATE = "lepton.trial_state"  # a trial: complete, pruned or failed
    SOURCE = "lepton.source"  # a trial: where it came from
    RUN_KEY = "lepton.run_key"  # a version: the identity of its inputs (lepton.tasks.promotion.run_key)
    RUN_ID = "lepton.run_id"  # a version: the run that registered it
    RESUMED_VERSION = "lepton.resumed_version"  # a run: the version an earlier run with its inputs registered
    ON_FRONT = "lepton.on_front"  # a trial: on the Pareto front
    MODEL_VERSION = "lepton.model_version"  # a monitor run: the version it checked
    DRIFTED_FEATURES = "lepton.drifted_features"  # a monitor run: the drifted columns
    DRIFT = "lepton.drift"  # a monitor run: detected or none
    RETRAIN = "lepton.retrain"  # a monitor run: recommended or not recommended
    DEVICE = "lepton.device"  # cpu or cuda
    DASK = "lepton.dask"  # the Dask cluster the run used
    CHOSEN = "lepton.chosen"  # a trial: the one chosen
    CHOICE = "lepton.choice"  # why the optimiser chose this model
    DIGEST, FILES = digest.TAG, digest.FILES_TAG  # a version: its files' fingerprint and manifest


_READY: set[str] = set()  # database stores this process has seen initialised


def configure(settings: Settings) -> str:
    """Point MLflow at the settings' store. A database store (SQLite, PostgreSQL) is opened
    once per process under a lock shared by every process using it, so the first creates
    MLflow's tables (tracking and registry) while the others wait: runs started together on a
    fresh home do not race to create the same table."""
    settings.home.mkdir(parents=True, exist_ok=True)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema-migration and validation chatter
    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if uri not in _READY and uri.split(":", 1)[0].split("+", 1)[0] in DATABASE_SCHEMES:
        from lepton.core.locks import exclusive

        with exclusive(settings.home, "mlflow-store", store_lock_url(settings)):
            client = MlflowClient()
            client.search_experiments(max_results=1)  # the tracking store: creates or migrates tables
            client.search_registered_models(max_results=1)  # the registry store, on the same database
        _READY.add(uri)
    return uri


DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def store_lock_url(settings: Settings) -> str | None:
    """Where processes on several machines take the store's lock: ``LEPTON_LOCK_URL``, else the
    tracking store itself when it is PostgreSQL (its driver suffix dropped, for libpq); None
    (a file lock under LEPTON_HOME) otherwise."""
    if settings.lock_url:
        return settings.lock_url
    scheme, _, rest = settings.tracking_uri.partition("://")
    return f"postgresql://{rest}" if scheme.split("+", 1)[0] == "postgresql" else None


def _client() -> MlflowClient:
    return MlflowClient()


def experiment_id(name: str, settings: Settings, description: str | None = None) -> str:
    """The experiment for a domain, created with artifacts under LEPTON_HOME for local stores,
    marked as model training and described (``description``: what the domain's model does)."""
    client = _client()
    found = client.get_experiment_by_name(name)
    if found is not None:
        missing = {EXPERIMENT_KIND: MODEL_TRAINING, **({NOTE: description} if description else {})}
        for key, value in missing.items():
            if found.tags.get(key) is None:  # made by an older Lepton: mark it too
                client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    location = None
    if settings.tracking_uri.startswith("sqlite:"):
        location = (settings.artifact_root / name).as_uri()
    tags = {EXPERIMENT_KIND: MODEL_TRAINING, **({NOTE: description} if description else {})}
    try:
        return client.create_experiment(name, artifact_location=location, tags=tags)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent run
        return client.get_experiment_by_name(name).experiment_id


# What kind of work an experiment holds: model training, not GenAI (traces, judges). MLflow's UI
# of 3.17 opens every experiment in the mode of a browser-wide switch (GenAI at first) unless the
# address says ``workflowType``: the links Lepton prints and records say it (``ui_link``).
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE = "mlflow.note.content"  # an experiment's (or run's) description in MLflow's UI


def ui_link(server: str, route: str = "/experiments") -> str:
    """An address in MLflow's UI on ``server`` that opens in model-training mode."""
    joiner = "&" if "?" in route else "?"
    return f"{server.rstrip('/')}/#{route}{joiner}workflowType=machine_learning"


@functools.cache
def git_commit() -> str:
    """The checkout's commit, a provenance tag only: what decides "the same code" is
    ``lepton.core.identity`` (a checkout with uncommitted edits has the commit it started from;
    outside a checkout there is none)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def start_run(experiment: str, name: str, tags: dict[str, str], parent_run_id: str | None = None) -> str:
    tags = dict(tags)
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return _client().create_run(experiment, run_name=name, tags=tags).info.run_id


def log_child_runs(
    experiment: str, parent_run_id: str, children: list[tuple[str, dict[str, Any], dict[str, float], dict[str, str]]]
) -> list[str]:
    """One finished child run per (name, params, metrics, tags), nested under the parent, each
    written in a single batch call (MLflow's UI shows them folded under the parent run)."""
    client, now = _client(), int(time.time() * 1000)
    ids = []
    for name, params, metrics, tags in children:
        run_id = client.create_run(
            experiment, run_name=name, tags={**tags, "mlflow.parentRunId": parent_run_id}
        ).info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(metric_key(k), float(v), now, 0) for k, v in metrics.items() if not math.isnan(v)],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        )
        client.set_terminated(run_id, status="FINISHED")
        ids.append(run_id)
    return ids


def end_run(run_id: str, status: str = "FINISHED") -> None:
    _client().set_terminated(run_id, status=status)


@contextlib.contextmanager
def recorded_run(
    experiment: str, name: str, tags: dict[str, str], parent_run_id: str | None = None
) -> Iterator[str]:
    """One MLflow run's whole life in one place: created, its id yielded to the block, then
    FINISHED when the block completes or FAILED when it raises (the error goes on)."""
    run_id = start_run(experiment, name, tags, parent_run_id)
    try:
        yield run_id
    except BaseException:
        end_run(run_id, "FAILED")
        raise
    end_run(run_id, "FINISHED")


def run_experiment(run_id: str) -> str:
    """The experiment a run belongs to."""
    return _client().get_run(run_id).info.experiment_id


def run_status(run_id: str) -> str | None:
    """FINISHED, FAILED, RUNNING...; None for a run this store does not hold (or deleted)."""
    try:
        run = _client().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    return None if run.info.lifecycle_stage == "deleted" else run.info.status


def log_params(run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        _client().log_batch(run_id, params=items[i : i + 100])


_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. :/]")


def metric_key(name: str) -> str:
    """A name MLflow accepts. Column names become metric names (``psi_<column>``), and a user's
    columns may hold any character: those are replaced, with a short hash so keys stay distinct."""
    clean = _UNSAFE_KEY.sub("_", name)
    return clean if clean == name else f"{clean}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    items = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items() if not math.isnan(v)]
    for i in range(0, len(items), 1000):
        _client().log_batch(run_id, metrics=items[i : i + 1000])


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    _client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_dict(run_id: str, payload: Any, path: str) -> None:
    _client().log_dict(run_id, payload, path)


def log_table(run_id: str, columns: dict[str, list[Any]], path: str) -> None:
    """A table (column -> values) as a run artifact MLflow's UI shows as a table."""
    _client().log_table(run_id, columns, path)


@dataclass(frozen=True)
class RunRecord:
    """One finished MLflow run as Lepton reads it back."""

    start: datetime
    run_id: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


def run_history(experiment: str, limit: int, role: str | None = None) -> list[RunRecord]:
    """The latest ``limit`` finished runs of ``experiment`` (with the tag ``lepton.role`` =
    ``role`` when given), oldest first: start time, run id, metrics, params and tags."""
    client = _client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = "attributes.status = 'FINISHED'" + (f" and tags.`lepton.role` = '{role}'" if role else "")
    runs = client.search_runs([found.experiment_id], query, max_results=limit, order_by=["start_time DESC"])
    return [
        RunRecord(
            start=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
            run_id=run.info.run_id,
            metrics=dict(run.data.metrics),
            params=dict(run.data.params),
            tags=dict(run.data.tags),
        )
        for run in reversed(runs)
    ]


def log_dataset(run_id: str, source: str | Path, digest: str, context: str, name: str | None = None) -> None:
    """Record that ``run_id`` read a dataset (MLflow's dataset lineage: the run page's Datasets),
    by its source (a file, or words for what is not one), a digest of its rows and the role it
    played (``training``, ``testing``, ``monitored``). Metadata only: no rows are copied."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    text = str(source)
    try:
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local file it is
            warnings.simplefilter("ignore", UserWarning)
            where = resolve_dataset_source(text) if Path(text).is_file() else CodeDatasetSource({"source": text})
    except Exception:  # a source MLflow has no kind for: named in words
        where = CodeDatasetSource({"source": text})
    dataset = MetaDataset(where, name=name or Path(text).name, digest=digest[:36])
    tags = [InputTag("mlflow.data.context", context)]
    _client().log_inputs(run_id, [DatasetInput(dataset._to_mlflow_entity(), tags)])


def version_run_metrics(name: str, version: str) -> dict[str, float]:
    """The metrics of the run that registered ``name`` ``version`` (empty if it is gone)."""
    client = _client()
    try:
        run_id = client.get_model_version(name, version).run_id
        return dict(client.get_run(run_id).data.metrics) if run_id else {}
    except mlflow.exceptions.MlflowException:
        return {}


def describe_model(name: str, description: str) -> None:
    """The registered model's description (its page in the MLflow UI)."""
    _client().update_registered_model(name, description=description)


def describe_version(name: str, version: str, description: str) -> None:
    """A version's description: why it was or was not promoted, in words the list view shows."""
    _client().update_model_version(name, version, description=description)


def log_artifact(run_id: str, path: Path, directory: str | None = None) -> None:
    _client().log_artifact(run_id, str(path), directory)


def log_figure(run_id: str, figure: Any, path: str) -> None:
    _client().log_figure(run_id, figure, path)


def log_model(run_id: str, bundle: Path, input_example: Any, signature: Any, requirements: list[str]) -> str:
    """Log the bundle as a pyfunc "model from code" on ``run_id``; return the model URI."""
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_ENTRY),
            artifacts={"bundle": str(bundle)},
            code_paths=[str(SCORING_CODE), str(RECIPES_CODE)],
            signature=signature,
            input_example=input_example,
            pip_requirements=requirements,
        )
    # Leaving the context marks the run finished; the pipeline decides its final status.
    _client().update_run(run_id, status="RUNNING")
    return info.model_uri


def register(model_uri: str, name: str, run_id: str, tags: dict[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``name``; return the version number."""
    client = _client()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        try:
            client.create_registered_model(name, tags={"lepton": "true"})
        except mlflow.exceptions.MlflowException:
            pass  # created meanwhile
    # An MLflow 3 logged model ("models:/m-<id>"): a tracking server checks the source against its id.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    with scratch_dir() as tmp:  # the files as the store holds them, fingerprinted with the version
        fingerprint = digest.tags(Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp)))
    version = client.create_model_version(
        name, model_uri, run_id=run_id, tags={**tags, **fingerprint}, model_id=model_id
    )
    return str(version.version)


def find_version(name: str, tag: str, value: str) -> str | None:
    """The newest version of ``name`` whose tag ``tag`` equals ``value``, if any."""
    try:
        versions = _client().search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        return None
    found = [int(v.version) for v in versions if v.tags.get(tag) == value]
    return str(max(found)) if found else None


def alias_version(name: str, alias: str) -> str | None:
    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(name, alias, version)


def delete_alias(name: str, alias: str) -> None:
    _client().delete_registered_model_alias(name, alias)


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        _client().set_model_version_tag(name, version, key, str(value))


def download_bundle(name: str, version: str, directory: Path) -> Path:
    """Fetch a registered version into ``directory``, check every file against the fingerprint
    recorded at registration (``lepton.digest``: a changed ``MLmodel``, ``code/`` or bundle is
    refused), and return its safe bundle (JSON + UBJ, no code)."""
    recorded = _client().get_model_version(name, version).tags
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(directory)))
    digest.verify(local, recorded, f"{name} v{version}")
    return local / "artifacts" / "bundle"


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="lepton-")
