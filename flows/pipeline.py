"""The domain pipeline: preprocess -> train -> optimise -> deploy -> monitor."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow

from domains import get_spec
from domains.spec import DomainSpec
from lepton import cost, rerun, tracking
from lepton.cache import StageCache, StageKeys, stage_keys
from lepton.engine import choose_device, dask_engine
from lepton.result import PipelineResult
from lepton.settings import DEFAULT_TRIALS, load_settings
from tasks.deploy import deploy_task
from tasks.features import FeatureRun, features_task
from tasks.ingest import input_files
from tasks.monitor import monitor_task
from tasks.optimise import optimise_task
from tasks.preprocess import PreparedData, Validated, preprocess_task
from tasks.stored import read_optimised, read_prepared, read_trained, write_optimised, write_prepared, write_trained
from tasks.train import train_task

GPU_STAGES = ("train", "optimise")  # the stages that fit XGBoost on the device
NO_ENGINE = "not started: every stage that uses Dask was reused from the cache"
T = TypeVar("T")
# The CLI sets a listener to show each stage as it finishes (and the engine when it starts);
# flows stay free of display code. Called as listener(stage, seconds, detail).
STAGE_LISTENER: ContextVar[Callable[..., None] | None] = ContextVar("lepton_stage_listener", default=None)


@dataclass
class Stages:
    """Each stage's measured usage and cost (``lepton.cost``), in the order they ran."""

    prices: cost.Prices
    device: str = "cpu"
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run(self, name: str, call: Callable[[], T], client: Any = None, hit: Callable[[T], bool] | None = None) -> T:
        """Run one stage, measured: ``client`` is an external Dask cluster the stage uses; ``hit``
        tells from the output whether it was reused from the cache."""
        with cost.measure(gpu=self.device == "cuda" and name in GPU_STAGES, client=client) as meter:
            out = call()
        assert meter.usage is not None
        cached = bool(hit and hit(out))
        self.usage[name] = {**meter.usage.priced(self.prices), "cached": cached}
        listener = STAGE_LISTENER.get()
        if listener is not None:
            seconds = meter.usage.wall_seconds
            listener(name, seconds, f"reused from the cache in {seconds:6.2f}s" if cached else "")
        return out

    def cached(
        self,
        store: StageCache,
        name: str,
        entry: str | None,
        compute: Callable[[], T],
        formats: tuple[Callable[[Path], T], Callable[[T, Path], None]],
        client: Any = None,
    ) -> T:
        """Run one stage through the cache: its stored output under ``entry`` when there is
        one, else computed and stored (``entry`` None: not cacheable, computed)."""
        read, write = formats

        def call() -> tuple[T, bool]:
            found = store.load(name, entry, read) if entry else None
            if found is not None:
                return found, True
            out = compute()
            if entry:
                store.store(name, entry, out, write)
            return out, False

        out, _ = self.run(name, call, client, hit=lambda result: result[1])
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
    cache: bool = True,
) -> PipelineResult:
    """Run one domain end to end and return its summary.

    Args:
        domain: a built-in domain name, or a DomainSpec (a user's table, from flags or a spec file).
        trials: Optuna trial budget for the optimise stage.
        data: optional user file replacing the domain's data (same schema).
        holdout: optional user test file, for domains split on a given test file.
        append: optional labelled batch added to the training data (same schema); the drift
            automation passes the batch the monitor flagged.
        cache: reuse the stages whose inputs, spec and code are unchanged (``lepton.cache``);
            False (``lepton run --no-cache``) computes every stage and stores nothing.
    """
    spec = domain if isinstance(domain, DomainSpec) else get_spec(domain)
    settings = load_settings()
    device = choose_device(settings.device)
    stages = Stages(cost.load_prices(), device)
    store = StageCache(settings.home / "cache", spec.name, enabled=cache)
    keys: StageKeys | None = None

    def preprocess() -> Validated | tuple[PreparedData, FeatureRun]:
        """Hash the inputs; the prepared data stored under their key, or the checked tables."""
        nonlocal keys
        keys = stage_keys(spec, input_files(spec, data, holdout, append), settings, device, trials) if cache else None
        found = store.load("prepared", keys.prepared, read_prepared) if keys else None
        return found if found is not None else preprocess_task(spec, data, holdout, append)

    first = stages.run("preprocess", preprocess, hit=lambda out: isinstance(out, tuple))
    reused = isinstance(first, tuple)
    needed = not reused or not (keys and store.has("optimise", keys.optimise))
    with dask_engine(settings.dask_address, settings.dask_threads) if needed else contextlib.nullcontext() as engine:
        listener = STAGE_LISTENER.get()
        if listener is not None and engine is not None:
            listener("engine", 0.0, engine.describe())
        workers = engine.client if engine is not None and engine.external else None  # LocalCluster's are threads here
        if reused:
            prepared, feature_run = stages.run("features", lambda: first, hit=lambda _: True)
        else:
            prepared, feature_run = stages.run("features", lambda: features_task(spec, first, engine.client), workers)
            if keys:
                store.store("prepared", keys.prepared, (prepared, feature_run), write_prepared)
        trained = stages.cached(
            store,
            "train",
            keys and keys.train,
            lambda: train_task(spec, prepared, device, settings.search_rows),
            (read_trained, write_trained),
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
        tracking.set_tags(deployed.run_id, {"lepton.dask": engine.describe() if engine else NO_ENGINE})
        _cost_artifact(spec, deployed.version, stages)
    except BaseException:
        tracking.end_run(deployed.run_id, "FAILED")
        raise
    tracking.end_run(deployed.run_id, "FINISHED")
    engine_info = {
        "address": engine.address if engine else None,
        "external": engine.external if engine else False,
        "workers": engine.workers if engine else 0,
        "threads": engine.threads if engine else 0,
        "dashboard": engine.dashboard if engine else None,
        "feature_partitions": feature_run.partitions,
        "feature_workers": list(feature_run.workers),
        "trained_on": optimised.candidate.trained_on,
    }
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
    if keys:
        rerun.remember(store, keys.run, result)
    return result
