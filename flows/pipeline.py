"""The domain pipeline: preprocess -> features -> train -> optimise -> deploy -> monitor."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow

from lepton.core import cost, tracking
from lepton.core.cache import StageCache, StageKeys, dataset_digests, file_digest, input_digests, stage_keys
from lepton.core.digest import rows_digest
from lepton.core.engine import Engine, choose_device, dask_engine
from lepton.core.progress import emit
from lepton.core.result import EngineInfo, PipelineResult
from lepton.core.settings import DEFAULT_TRIALS, Settings, load_settings
from lepton.core.stages import COST_HEADINGS, Stages
from lepton.core.tables import input_files
from lepton.domains import get_spec
from lepton.domains.spec import DomainSpec, is_url
from lepton.flows import rerun
from lepton.tasks.deploy import deploy_task, pipeline_run
from lepton.tasks.features import FeatureRun, features_task
from lepton.tasks.monitor import monitor_task
from lepton.tasks.optimise import optimise_task
from lepton.tasks.preprocess import PreparedData, Validated, partitioned_inputs, preprocess_task
from lepton.tasks.preprocess import preflight as check_inputs
from lepton.tasks.scan import CheckedTable, check_table_task, prepare_table_task
from lepton.tasks.stored import (
    read_optimised,
    read_prepared,
    read_trained,
    write_optimised,
    write_prepared,
    write_trained,
)
from lepton.tasks.train import train_task

NO_ENGINE = "not started: every stage that uses Dask was reused from the cache"


@dataclass(frozen=True)
class Preprocessed:
    """The preprocess stage's output: the inputs' cache keys (None with the cache off) and either
    the checked tables, a partitioned table checked where it lies (``lepton.tasks.scan``) or,
    when the features stage's output is stored under those keys, that output (then the features
    stage is a cache hit and the tables are not read at all)."""

    keys: StageKeys | None
    checked: Validated | None = None
    stored: tuple[PreparedData, FeatureRun] | None = None
    table: CheckedTable | None = None


@contextlib.contextmanager
def _engine(settings: Settings) -> Iterator[Engine]:
    with dask_engine(settings.dask_address, settings.dask_threads) as engine:
        emit("note", "engine", engine.describe())
        yield engine


def preflight(spec: DomainSpec, data: str | None = None, holdout: str | None = None, append: str | None = None) -> None:
    """The preprocess stage's input checks on their own, for a caller to run before it starts
    Prefect, Dask or MLflow: bad input and leaking columns raise their typed error here."""
    check_inputs(spec, data, holdout, append)


def _cost_artifact(spec: DomainSpec, version: str, stages: Stages) -> None:
    """The cost table on the flow run's Artifacts tab (only inside a flow run): rounded, with
    headings in words and the prices it was reckoned at."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    rows = [
        {heading: value if digits is None else f"{value:.{digits}f}" for key, (heading, digits) in COST_HEADINGS.items()
         for value in [row[key]]}
        for row in stages.rows()
    ]  # fmt: skip
    total, prices = cost.total(stages.usage), stages.prices
    description = (
        f"**{spec.name} v{version}** cost ${total['cost_usd']:.6f}, {total['cpu_seconds']:.1f} CPU-seconds, "
        f"{total['energy_wh']:.3f} Wh; at ${prices.core_hour:g} a core-hour, ${prices.gb_hour:g} a GB-hour, "
        f"${prices.gpu_hour:g} a GPU-hour, {prices.watts_core:g} W a core and {prices.watts_gpu:g} W a GPU."
    )
    create_table_artifact(rows, key=_key(f"cost-{spec.name}"), description=description)


def _key(text: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def _links_artifact(spec: DomainSpec, deployed: Any, experiment: str, tracking_uri: str) -> None:
    """From the flow run to its MLflow run and model version: links into MLflow's UI when MLflow
    is a server, else the ids and how to open the local store (a markdown artifact)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    uri = tracking_uri.rstrip("/")
    role = "champion" if deployed.promoted else "challenger"
    heading = f"# {spec.name}: {deployed.model_name} v{deployed.version} ({role})\n\n"
    if uri.startswith(("http://", "https://")):
        run = tracking.ui_link(uri, f"/experiments/{experiment}/runs/{deployed.run_id}")
        model = tracking.ui_link(uri, f"/models/{deployed.model_name}/versions/{deployed.version}")
        markdown = f"{heading}- [MLflow run of this flow run]({run})\n- [Model version {deployed.version}]({model})\n"
    else:
        markdown = (
            f"{heading}MLflow run `{deployed.run_id}` in experiment {experiment}; open the store with "
            f"`mlflow ui --backend-store-uri {uri}`.\n"
        )
    create_markdown_artifact(markdown, key=_key(f"mlflow-{spec.name}"), description="Its MLflow run and model version")


def _log_datasets(spec: DomainSpec, run_id: str, prepared: PreparedData, files: list[Path | str] | None) -> None:
    """MLflow dataset lineage: the table trained on (its file and the data fingerprint), the
    holdout (its own file for a given split, else the held-out rows of the same file), and a
    batch appended by the retrain loop."""
    files = files or []
    source = files[0] if files else f"{spec.name} data"
    tracking.log_dataset(run_id, source, prepared.fingerprint, "training", f"{spec.name} training")
    given = spec.split.kind == "given" and len(files) > 1
    holdout = files[1] if given else f"held-out rows of {Path(str(source)).name} ({spec.split.kind} split)"
    digest = rows_digest(prepared.holdout.frame)
    tracking.log_dataset(run_id, holdout, digest, "testing", f"{spec.name} holdout")
    if len(files) > (2 if given else 1):
        tracking.log_dataset(run_id, files[-1], file_digest(files[-1]), "training", f"{spec.name} appended batch")


def _deploy_and_monitor(
    spec: DomainSpec,
    prepared: PreparedData,
    trained: Any,
    optimised: Any,
    run: tuple[Settings, Stages, int],
    engine: Engine | None,
    client: Any,
    files: list[Path | str] | None,
) -> tuple[Any, Any, Any]:
    """The last two stages inside the pipeline's MLflow run (marked FAILED if anything raises),
    then its cost, lineage and links. ``client``: a partitioned table's cluster, still open for
    its holdout."""
    settings, stages, trials = run
    with tracking.recorded_run(*pipeline_run(spec, prepared, settings)) as run_id:
        deployed, evaluation = stages.run(
            "deploy", lambda: deploy_task(spec, prepared, trained, optimised, settings, trials, run_id, client)
        )
        drift = stages.run(
            "monitor", lambda: monitor_task(spec, deployed.reference, prepared.holdout.frame, deployed.run_id)
        )
        tracking.log_metrics(deployed.run_id, stages.metrics())
        tracking.log_table(deployed.run_id, stages.table(), "cost/stages.json")
        tracking.log_params(deployed.run_id, {f"price_{k}": v for k, v in stages.prices.model_dump().items()})
        tracking.set_tags(deployed.run_id, {tracking.Tag.DASK: engine.describe() if engine else NO_ENGINE})
        _log_datasets(spec, deployed.run_id, prepared, files)
        _cost_artifact(spec, deployed.version, stages)
        _links_artifact(spec, deployed, tracking.experiment_id(spec.model_name, settings), settings.tracking_uri)
    return deployed, evaluation, drift


def _run_name() -> str:
    """The flow run's name: the domain and what started it, so two retrains of one domain are
    told apart: ``finance-retrain-<batch digest>`` (the drift automation, with the batch it
    flagged), ``finance-scheduled-<time>`` (a deployment), ``finance-<time>`` (the CLI)."""
    from datetime import UTC, datetime

    from prefect.runtime import deployment, flow_run

    params = flow_run.parameters
    domain = params.get("domain")
    name = str(domain.get("name", "spec")) if isinstance(domain, dict) else str(getattr(domain, "name", domain))
    append = params.get("append")
    if append:
        return f"{name}-retrain-{_file_digest(append)}"
    when = flow_run.scheduled_start_time or datetime.now(UTC)
    if deployment.id:
        return f"{name}-scheduled-{when:%Y%m%d-%H%M}"
    return f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def _retrained_by() -> str | None:
    """Whether another run of this deployment retrains the same batch: the name of the run that
    does (or did), or None when this one should. Two retrain recommendations for one batch (a
    monitor run from the CLI and one from its deployment) start two flow runs; each is named after its
    domain and batch (``_run_name``) before its body runs, so each finds the other by name on
    the Prefect server that all workers share. Of the runs not failed, crashed or cancelled, the
    one created first retrains; the rest stop here, before anything is recorded."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.runtime import deployment, flow_run

    if not deployment.id or not flow_run.id:
        return None
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[flow_run.name]),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(not_any_=[StateType.FAILED, StateType.CRASHED, StateType.CANCELLED])
                ),
            ),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
        )
    first = min(runs, key=lambda run: (run.created, str(run.id)), default=None)
    if first is None or str(first.id) == str(flow_run.id):
        return None
    return f"'{first.name}' ({first.id}, {first.state_name or 'scheduled'})"


def _duplicate(spec: DomainSpec) -> Any:
    """A Completed state that names the run already retraining this batch, or None."""
    earlier = _retrained_by()
    if earlier is None:
        return None
    from prefect import get_run_logger
    from prefect.states import Completed

    skipped = f"skipped: flow run {earlier} retrains {spec.name} on this batch already (a duplicate trigger)"
    get_run_logger().info(skipped)
    return Completed(message=skipped)


def _file_digest(path: str) -> str:
    """The batch's digest for a run name (``lepton.core.cache.file_digest``, shortened)."""
    try:
        return file_digest(path)[:10]
    except OSError:  # the flow itself reports an unreadable batch
        return "batch"


@flow(name="lepton-pipeline", flow_run_name=_run_name, validate_parameters=True)
def pipeline(
    domain: str | DomainSpec,
    trials: int = DEFAULT_TRIALS,
    data: str | None = None,
    holdout: str | None = None,
    append: str | None = None,
    cache: bool = True,
) -> PipelineResult:
    """Run one domain end to end and return its summary. A deployment's run on a batch that an
    earlier run of it already retrains (``append``; a second recommendation for the same batch)
    stops at once, recording nothing, and ends Completed with a message naming that run.

    Args:
        domain: a built-in domain name, or a DomainSpec (a user's table, from flags or a spec file).
        trials: Optuna trial budget for the optimise stage.
        data: optional user file replacing the domain's data (same schema).
        holdout: optional user test file, for domains split on a given test file.
        append: optional labelled batch added to the training data (same schema); the drift
            automation passes the batch the monitor flagged.
        cache: reuse the stages whose inputs, spec and code are unchanged (``lepton.core.cache``);
            False (``lepton run --no-cache``) computes every stage and stores nothing.
    """
    spec = domain if isinstance(domain, DomainSpec) else get_spec(domain)
    if append and (duplicate := _duplicate(spec)) is not None:
        return duplicate  # the flow run's final state, without a result
    settings = load_settings()
    device = choose_device(settings.device)
    stages = Stages(cost.load_prices(), device)
    store = StageCache(settings.home / "cache", spec.name, enabled=cache)
    partitioned = partitioned_inputs(spec, data, holdout, append)  # a table stored as many files
    # a partitioned table's files as listed now, before any is read: a file changed during the run
    # is refused by the scan, and one changed after it gives another key
    identities = dataset_digests(partitioned) if partitioned and cache else None

    def preprocess(engine: Engine | None) -> Preprocessed:
        if partitioned is not None and engine is not None:
            data_set, test_set = partitioned
            return Preprocessed(None, table=check_table_task(spec, data_set, engine.client, test_set))
        keys = stage_keys(spec, input_digests(spec, data, holdout, append), settings, device, trials) if cache else None
        stored = store.load("prepared", keys.prepared, read_prepared) if keys else None
        if stored is not None:
            return Preprocessed(keys, stored=stored)
        return Preprocessed(keys, checked=preprocess_task(spec, data, holdout, append))

    def features(engine: Engine, first: Preprocessed) -> tuple[PreparedData, FeatureRun]:
        if first.table is not None:
            table = prepare_table_task(spec, first.table, engine.client, settings.search_rows)
            return table, FeatureRun(len(first.table.jobs), first.table.workers)
        return features_task(spec, first.checked, engine.client)

    with contextlib.ExitStack() as scope:
        # a partitioned table is read on the workers from the start; a file only when a stage needs them
        engine = scope.enter_context(_engine(settings)) if partitioned else None
        external = engine.client if engine is not None and engine.external else None
        first = stages.run("preprocess", lambda: preprocess(engine), external, hit=lambda out: out.stored is not None)
        keys, stored = first.keys, first.stored
        if engine is None and (stored is None or not (keys and store.has("optimise", keys.optimise))):
            engine = scope.enter_context(_engine(settings))
        workers = engine.client if engine is not None and engine.external else None  # LocalCluster's are threads here
        if stored is not None:
            prepared, feature_run = stages.run("features", lambda: stored, hit=lambda _: True)
        else:
            prepared, feature_run = stages.run("features", lambda: features(engine, first), workers)
            del first  # a partitioned table's time keys leave the workers
            if keys:
                store.store("prepared", keys.prepared, (prepared, feature_run), write_prepared)
        trained = stages.cached(
            store,
            "train",
            keys and keys.train,
            # a partitioned table's sample is fitted on the workers: this process keeps the driver's memory flat
            lambda: train_task(spec, prepared, device, settings.search_rows, engine.client if partitioned else None),
            (read_trained, write_trained),
            workers,
        )
        optimised = stages.cached(
            store,
            "optimise",
            keys and keys.optimise,
            lambda: optimise_task(
                spec,
                prepared,
                trained,
                trials,
                device,
                engine.client,
                settings.search_rows,
                settings.distributed_rows,
            ),
            (read_optimised, write_optimised),
            workers,
        )
        prepared = prepared.searched()  # a partitioned table's training sample is not needed past here
        if not partitioned:
            scope.close()  # the cluster goes; a partitioned table's holdout is scored on it in deploy
        client = engine.client if partitioned and engine is not None else None
        files = (
            [d.root if is_url(d.root) else Path(d.root) for d in partitioned if d]  # a URL keeps its "//"
            if partitioned
            else input_files(spec, data, holdout, append)
        )
        deployed, evaluation, drift = _deploy_and_monitor(
            spec, prepared, trained, optimised, (settings, stages, trials), engine, client, files
        )
    cluster = (
        {"address": engine.address, "external": engine.external, "workers": engine.workers,
         "threads": engine.threads, "dashboard": engine.dashboard} if engine else {}
    )  # fmt: skip
    engine_info = EngineInfo(
        **cluster,
        feature_partitions=feature_run.partitions,
        feature_workers=tuple(feature_run.workers),
        trained_on=optimised.candidate.trained_on,
    )
    result = PipelineResult(
        domain=spec.name,
        run_id=deployed.run_id,
        model_name=deployed.model_name,
        version=deployed.version,
        promoted=deployed.promoted,
        champion_version=deployed.champion_version,
        primary_metric=spec.primary_metric,
        metrics=evaluation.metrics,
        baseline_metrics=evaluation.baseline_metrics,
        stages=stages.usage,
        cost=cost.total(stages.usage),
        device=optimised.candidate.device,
        family=optimised.candidate.family,
        reasons=list(deployed.reasons),
        drifted=drift.drifted,
        notes=list(prepared.notes),
        choice=optimised.reason,
        engine=engine_info,
    )
    if partitioned and cache:  # its stages are not stored (their outputs live on the workers); the run is
        keys = stage_keys(spec, identities, settings, device, trials)
    if keys:
        rerun.remember(store, keys.run, result)
    return result
