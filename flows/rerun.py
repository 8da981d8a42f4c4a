"""A no-change re-run: when nothing a run depends on has changed, its earlier result is the answer.

Each finished pipeline stores its summary in the stage cache under the run key (the optimise
key, which holds the input files' bytes, the spec, the code, the trial budget and the device,
plus the MLflow store it wrote to). ``lepton run`` and ``lepton.run`` look that key up before
starting anything: when it is there, the run it names finished, and the registry still holds
what that run left (the same champion; a challenger still the challenger), running the pipeline
again would only repeat it. The earlier result is returned, marked ``up_to_date``, without
starting Prefect, Dask or a new MLflow run; anything else (a changed file, spec or code, a moved
alias, a deleted run) falls through to the pipeline, whose stage cache then reuses what it can.

A Prefect deployment calls the flow itself, not this check: a scheduled run is always recorded.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from lepton.core.cache import StageCache, input_digests, read_json, stage_keys, write_json
from lepton.core.cost import Prices, Usage, total
from lepton.core.engine import choose_device
from lepton.core.result import STAGES, EngineInfo, PipelineResult
from lepton.core.settings import load_settings

if TYPE_CHECKING:
    from pathlib import Path

    from lepton.domains.spec import DomainSpec

STAGE = "run"  # the record's folder in the stage cache, beside preprocess, train, optimise
RESULT = "result.json"


def remember(store: StageCache, entry: str, result: PipelineResult) -> None:
    """Store a finished run's summary under its run key (nothing when the cache is off)."""

    def write(value: PipelineResult, folder: Path) -> None:
        write_json(folder / RESULT, dataclasses.asdict(value))

    store.store(STAGE, entry, result, write, replace=True)  # the newest run with these inputs


def up_to_date(
    spec: DomainSpec,
    data: str | None,
    holdout: str | None,
    append: str | None,
    trials: int,
    cache: bool = True,
) -> PipelineResult | None:
    """The earlier result of this very run (``spec`` on the files the flow would read) when
    nothing it depends on changed, else None."""
    if not cache:
        return None
    started = time.perf_counter()
    settings = load_settings()
    device = choose_device(settings.device)
    keys = stage_keys(spec, input_digests(spec, data, holdout, append), settings, device, trials)
    if keys is None:
        return None
    store = StageCache(settings.home / "cache", spec.name)
    record = store.load(STAGE, keys.run, lambda folder: PipelineResult.from_json(read_json(folder / RESULT)))
    if record is None or not _registry_agrees(record, settings):
        return None
    seconds = round(time.perf_counter() - started, 3)
    return _reused(record, seconds)


def _registry_agrees(record: PipelineResult, settings) -> bool:
    """The run finished and the aliases are where it left them."""
    from lepton.core import tracking

    tracking.configure(settings)
    if tracking.run_status(record.run_id) != "FINISHED":
        return False
    champion = record.version if record.promoted else record.champion_version
    if tracking.alias_version(record.model_name, tracking.CHAMPION) != champion:
        return False
    return record.promoted or tracking.alias_version(record.model_name, tracking.CHALLENGER) == record.version


def _reused(record: PipelineResult, seconds: float) -> PipelineResult:
    """The record as this re-run's result: every stage reused, the check's time in preprocess."""
    stages = {name: Usage(0.0, 0.0, 0.0).priced(Prices(), cached=True) for name in STAGES}
    stages["preprocess"] = dataclasses.replace(stages["preprocess"], seconds=seconds)
    alias = "the champion" if record.promoted else f"the challenger (v{record.champion_version} is the champion)"
    reason = f"up to date: nothing changed since run {record.run_id}, whose v{record.version} is {alias}"
    engine = EngineInfo(trained_on=record.engine.trained_on)  # no cluster: nothing was computed
    return dataclasses.replace(
        record,
        stages=stages,
        cost=total(stages),
        reasons=[reason, *record.reasons],
        engine=engine,
        up_to_date=True,
    )
