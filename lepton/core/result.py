"""What one domain's run produced: the ``lepton run --json`` summary, kept free of heavy imports
(the no-change re-run in ``lepton.flows.rerun`` rebuilds it from the cache without Prefect or Dask)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lepton.core.cost import StageUsage

STAGES = ("preprocess", "features", "train", "optimise", "deploy", "monitor")  # in the order they run


@dataclass(frozen=True)
class EngineInfo:
    """Where a run computed: its Dask cluster (none when every stage that uses one was reused),
    the feature stage's partitions and the worker processes that computed them, and the rows and
    engine the chosen model trained on."""

    address: str | None = None
    external: bool = False  # a cluster the run connected to, not one it started
    workers: int = 0
    threads: int = 0
    dashboard: str | None = None
    feature_partitions: int = 0
    feature_workers: tuple[Any, ...] = ()
    trained_on: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineInfo:
        return cls(**{**data, "feature_workers": tuple(data.get("feature_workers") or ())})


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
    stages: dict[str, StageUsage]
    device: str = "cpu"
    family: str = ""
    reasons: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    choice: str = ""  # why the optimiser chose this model
    engine: EngineInfo = field(default_factory=EngineInfo)
    cost: dict[str, float] = field(default_factory=dict)  # the run's totals (lepton.core.cost)
    up_to_date: bool = False  # nothing changed since the run it repeats: reused whole (lepton.flows.rerun)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipelineResult:
        """The result ``dataclasses.asdict`` wrote (the no-change re-run's record)."""
        stages = {name: StageUsage.from_json(stage) for name, stage in data["stages"].items()}
        return cls(**{**data, "stages": stages, "engine": EngineInfo.from_json(data.get("engine") or {})})

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
            "up_to_date",
        )
        out = {k: v for k, v in asdict(self).items() if k in keys}
        # Keys added later go last, so the shape scripts read stays stable.
        return {
            **out,
            "cost_usd": self.cost.get("cost_usd", 0.0),
            "family": self.family,
            "reasons": self.reasons,
            "notes": self.notes,  # what the data showed: inferred roles, warnings, the sentinel's review
        }
