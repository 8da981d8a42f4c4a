"""The stage runner: each stage of a flow measured, cached and reported the same way.

``Stages.run`` measures a stage's usage and cost (``lepton.core.cost``) and sends its start and
end as progress events (``lepton.core.progress``: the terminal's lines and the Prefect run's
logs); ``Stages.cached`` runs it through the stage cache (``lepton.core.cache``). A flow only
says which stage runs on what; this module is where "a stage" means the same thing for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lepton.core import cost
from lepton.core.cache import StageCache
from lepton.core.progress import emit

GPU_STAGES = ("train", "optimise")  # the stages that fit XGBoost on the device
T = TypeVar("T")


@dataclass
class Stages:
    """Each stage's measured usage and cost (``lepton.core.cost``), in the order they ran."""

    prices: cost.Prices
    device: str = "cpu"
    usage: dict[str, cost.StageUsage] = field(default_factory=dict)

    def run(self, name: str, call: Callable[[], T], client: Any = None, hit: Callable[[T], bool] | None = None) -> T:
        """Run one stage, measured: ``client`` is an external Dask cluster the stage uses; ``hit``
        tells from the output whether it was reused from the cache. Its start and end are progress
        events (``lepton.core.progress``): the terminal's lines and the Prefect run's logs."""
        emit("start", name, "started")
        with cost.measure(gpu=self.device == "cuda" and name in GPU_STAGES, client=client) as meter:
            out = call()
        assert meter.usage is not None
        cached = bool(hit and hit(out))
        self.usage[name] = meter.usage.priced(self.prices, cached)
        seconds = meter.usage.wall_seconds
        done = f"reused from the cache in {seconds:.2f}s" if cached else f"done in {seconds:.2f}s"
        emit("done", name, done, seconds=seconds)
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
        """In total: seconds, CPU-seconds, peak MB, GPU-seconds, USD and Wh (per stage: ``table``)."""
        return {f"{key}_total": float(value) for key, value in cost.total(self.usage).items()}

    def rows(self) -> list[dict[str, Any]]:
        """The cost table, one row per stage and a total (a Prefect table artifact)."""
        columns = ("seconds", "cpu_seconds", "peak_mb", "gpu_seconds", "cost_usd", "energy_wh")
        rows = [*((name, asdict(stage)) for name, stage in self.usage.items()), ("total", cost.total(self.usage))]
        return [{"stage": name, **{column: stage.get(column, 0.0) for column in columns}} for name, stage in rows]

    def table(self) -> dict[str, list[Any]]:
        """The same table by column (an MLflow table artifact)."""
        rows = self.rows()
        return {column: [row[column] for row in rows] for column in rows[0]}


COST_HEADINGS = {  # the cost table's columns as a person reads them, and the digits they need
    "stage": ("stage", None),
    "seconds": ("seconds", 2),
    "cpu_seconds": ("CPU-seconds", 1),
    "peak_mb": ("peak memory (MB)", 0),
    "gpu_seconds": ("GPU-seconds", 1),
    "cost_usd": ("cost (USD)", 6),
    "energy_wh": ("energy (Wh)", 3),
}
