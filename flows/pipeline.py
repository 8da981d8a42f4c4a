"""The domain pipeline: preprocess -> train -> optimise -> deploy -> monitor."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from prefect import flow

from domains import get_spec
from domains.spec import DomainSpec
from lepton import cost, tracking
from lepton.engine import choose_device, dask_engine
from lepton.settings import DEFAULT_TRIALS, load_settings
from tasks.deploy import deploy_task
from tasks.features import features_task
from tasks.monitor import monitor_task
from tasks.optimise import optimise_task
from tasks.preprocess import preprocess_task
from tasks.train import train_task

STAGES = ("preprocess", "features", "train", "optimise", "deploy", "monitor")
GPU_STAGES = ("train", "optimise")  # the stages that fit XGBoost on the device
T = TypeVar("T")
# The CLI sets a listener to show each stage as it finishes (and the engine when it starts);
# flows stay free of display code. Called as listener(stage, seconds, detail).
STAGE_LISTENER: ContextVar[Callable[..., None] | None] = ContextVar("lepton_stage_listener", default=None)


@dataclass
class PipelineResult:
    """What one domain's run produced; ``as_json`` is the stable ``lepton run --json`` shape."""

    domain: str
    run_id: str
    model_name: str
    version: str
    promoted: bool
    champion_version: str | None
    primary_metric: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    stages: dict[str, dict[str, Any]]
    device: str = "cpu"
    family: str = ""
    reasons: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    choice: str = ""  # why the optimiser chose this model
    engine: dict[str, Any] = field(default_factory=dict)  # the Dask cluster, and where features ran
    cost: dict[str, float] = field(default_factory=dict)  # the run's totals (lepton.cost)

    def as_json(self) -> dict[str, Any]:
        keys = (
            "domain",
            "run_id",
            "model_name",
            "version",
            "promoted",
            "champion_version",
            "primary_metric",
            "metrics",
            "baseline_metrics",
            "stages",
            "engine",
            "cost",
        )
        out = {k: v for k, v in asdict(self).items() if k in keys}
        return {**out, "cost_usd": self.cost.get("cost_usd", 0.0)}


@dataclass
class Stages:
    """Each stage's measured usage and cost (``lepton.cost``), in the order they ran."""

    prices: cost.Prices
    device: str = "cpu"
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run(self, name: str, call: Callable[[], T], client: Any = None) -> T:
        """Run one stage, measured: ``client`` is an external Dask cluster the stage uses."""
        with cost.measure(gpu=self.device == "cuda" and name in GPU_STAGES, client=client) as meter:
            out = call()
        assert meter.usage is not None
        self.usage[name] = {**meter.usage.priced(self.prices), "cached": False}
        listener = STAGE_LISTENER.get()
        if listener is not None:
            listener(name, meter.usage.wall_seconds, "")
        return out

    def metrics(self) -> dict[str, float]:
        """Per stage and in total: seconds, CPU-seconds, peak MB, GPU-seconds, USD and Wh."""
        keys = ("seconds", "cpu_seconds", "peak_mb", "gpu_seconds", "cost_usd", "energy_wh")
        out = {f"{key}_{name}": float(stage[key]) for name, stage in self.usage.items() for key in keys}
        return {**out, **{f"{key}_total": float(value) for key, value in cost.total(self.usage).items()}}

    def rows(self) -> list[dict[str, Any]]:
        """The cost table, one row per stage and a total (a Prefect table artifact)."""
        columns = ("seconds", "cpu_seconds", "peak_mb", "gpu_seconds", "cost_usd", "energy_wh")
        rows = [*self.usage.items(), ("total", cost.total(self.usage))]
        return [{"stage": name, **{column: stage.get(column, 0.0) for column in columns}} for name, stage in rows]

    def table(self) -> dict[str, list[Any]]:
        """The same table by column (an MLflow table artifact)."""
        rows = self.rows()
        return {column: [row[column] for row in rows] for column in rows[0]}


def _cost_artifact(spec: DomainSpec, version: str, stages: Stages) -> None:
    """The cost table on the flow run's Artifacts tab (only inside a flow run)."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    rows = stages.rows()
    total = cost.total(stages.usage)
    description = (
        f"**{spec.name}** version {version}: ${total['cost_usd']:.6f}, {total['cpu_seconds']:.1f} CPU-s, "
        f"{total['energy_wh']:.3f} Wh (prices: {stages.prices.model_dump()})"
    )
    key = re.sub(r"[^a-z0-9-]+", "-", f"cost-{spec.name}".lower())
    create_table_artifact(rows, key=key, description=description)


def _run_name() -> str:
    from prefect.runtime import flow_run

    domain = flow_run.parameters.get("domain")
    if isinstance(domain, dict):
        return str(domain.get("name", "spec"))
    return str(getattr(domain, "name", domain))


@flow(name="lepton-pipeline", flow_run_name=_run_name, validate_parameters=True)
def pipeline(
    domain: str | DomainSpec,
    trials: int = DEFAULT_TRIALS,
    data: str | None = None,
    holdout: str | None = None,
    append: str | None = None,
) -> PipelineResult:
    """Run one domain end to end and return its summary.

    Args:
        domain: a built-in domain name, or a DomainSpec (a user's table, from flags or a spec file).
        trials: Optuna trial budget for the optimise stage.
        data: optional user file replacing the domain's data (same schema).
        holdout: optional user test file, for domains split on a given test file.
        append: optional labelled batch added to the training data (same schema); the drift
            automation passes the batch the monitor flagged.
    """
    spec = domain if isinstance(domain, DomainSpec) else get_spec(domain)
    settings = load_settings()
    device = choose_device(settings.device)
    stages = Stages(cost.load_prices(), device)
    validated = stages.run("preprocess", lambda: preprocess_task(spec, data, holdout, append))
    with dask_engine(settings.dask_address, settings.dask_threads) as engine:
        listener = STAGE_LISTENER.get()
        if listener is not None:
            listener("engine", 0.0, engine.describe())
        workers = engine.client if engine.external else None  # a LocalCluster's are threads here
        prepared, feature_run = stages.run("features", lambda: features_task(spec, validated, engine.client), workers)
        trained = stages.run("train", lambda: train_task(spec, prepared, device, settings.search_rows))
        optimised = stages.run(
            "optimise",
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
            workers,
        )
    deployed, evaluation = stages.run(
        "deploy", lambda: deploy_task(spec, prepared, trained, optimised, settings, trials)
    )
    try:
        drift = stages.run(
            "monitor", lambda: monitor_task(spec, deployed.reference, prepared.holdout.frame, deployed.run_id)
        )
        tracking.log_metrics(deployed.run_id, stages.metrics())
        tracking.log_table(deployed.run_id, stages.table(), "cost/stages.json")
        tracking.log_params(deployed.run_id, {f"price_{k}": v for k, v in stages.prices.model_dump().items()})
        tracking.set_tags(deployed.run_id, {"lepton.dask": engine.describe()})
        _cost_artifact(spec, deployed.version, stages)
    except BaseException:
        tracking.end_run(deployed.run_id, "FAILED")
        raise
    tracking.end_run(deployed.run_id, "FINISHED")
    engine_info = {
        "address": engine.address,
        "external": engine.external,
        "workers": engine.workers,
        "threads": engine.threads,
        "dashboard": engine.dashboard,
        "feature_partitions": feature_run.partitions,
        "feature_workers": list(feature_run.workers),
        "trained_on": optimised.candidate.trained_on,
    }
    return PipelineResult(
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
