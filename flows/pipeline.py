"""The domain pipeline: preprocess -> train -> optimise -> deploy -> monitor."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from prefect import flow

from domains import get_spec
from domains.spec import DomainSpec
from lepton import tracking
from lepton.engine import choose_device, dask_engine
from lepton.settings import DEFAULT_TRIALS, load_settings
from tasks.deploy import deploy_task
from tasks.features import features_task
from tasks.monitor import monitor_task
from tasks.optimise import optimise_task
from tasks.preprocess import preprocess_task
from tasks.train import train_task

STAGES = ("preprocess", "features", "train", "optimise", "deploy", "monitor")
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
        )
        return {k: v for k, v in asdict(self).items() if k in keys}


def _timed(stages: dict[str, dict[str, Any]], name: str, call: Callable[[], T]) -> T:
    start = time.perf_counter()
    out = call()
    seconds = time.perf_counter() - start
    stages[name] = {"seconds": round(seconds, 3), "cached": False}
    listener = STAGE_LISTENER.get()
    if listener is not None:
        listener(name, seconds, "")
    return out


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
    stages: dict[str, dict[str, Any]] = {}
    validated = _timed(stages, "preprocess", lambda: preprocess_task(spec, data, holdout, append))
    with dask_engine(settings.dask_address, settings.dask_threads) as engine:
        listener = STAGE_LISTENER.get()
        if listener is not None:
            listener("engine", 0.0, engine.describe())
        prepared, feature_run = _timed(stages, "features", lambda: features_task(spec, validated, engine.client))
        trained = _timed(stages, "train", lambda: train_task(spec, prepared, device, settings.search_rows))
        optimised = _timed(
            stages,
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
        )
    deployed, evaluation = _timed(
        stages, "deploy", lambda: deploy_task(spec, prepared, trained, optimised, settings, trials)
    )
    try:
        drift = _timed(
            stages, "monitor", lambda: monitor_task(spec, deployed.reference, prepared.holdout.frame, deployed.run_id)
        )
        tracking.log_metrics(deployed.run_id, {f"seconds_{k}": v["seconds"] for k, v in stages.items()})
        tracking.set_tags(deployed.run_id, {"lepton.dask": engine.describe()})
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
        stages=stages,
        device=optimised.candidate.device,
        family=optimised.candidate.family,
        reasons=list(deployed.reasons),
        drifted=drift.drifted,
        notes=list(prepared.notes),
        choice=optimised.reason,
        engine=engine_info,
    )
