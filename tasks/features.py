"""Features: the domain's recipe, computed per partition on Dask workers with polars.

Partitions are whole groups (e.g. TEP runs, for rolling windows) or blocks of rows (row-wise
recipes), so each partition's features depend on that partition alone and the result equals a
single-process run exactly. Then the split, the leakage check and the encoder (``prepare_parts``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from lepton.core.progress import Steps
from lepton.domains import recipes
from lepton.domains.spec import DomainSpec
from lepton.tasks.preprocess import PreparedData, Validated, prepare_parts

ROW_BLOCK = 250_000  # rows per partition for row-wise recipes
_ROW = "__lepton_row"


@dataclass(frozen=True)
class FeatureRun:
    """Where the recipe ran: the workers that computed partitions, and how many partitions."""

    partitions: int = 0
    workers: tuple[str, ...] = field(default=())


def partitions(frame: pl.DataFrame, spec: DomainSpec, parts: int) -> list[pl.DataFrame]:
    """Contiguous slices of ``frame`` (no copies): at group boundaries when ``spec.partition_by``
    names a group column — the frame must then hold each group's rows together — else blocks
    of rows."""
    parts = max(1, parts)
    key = spec.partition_by
    if key is None:
        size = -(-frame.height // parts)
        return [frame.slice(i, size) for i in range(0, frame.height, size)]
    starts = (frame[key] != frame[key].shift()).fill_null(True).arg_true().to_numpy()
    targets = np.linspace(0, frame.height, parts + 1)[1:-1]
    cuts = sorted(
        {int(starts[np.searchsorted(starts, t)]) for t in targets if np.searchsorted(starts, t) < len(starts)}
    )
    bounds = [0, *(c for c in cuts if 0 < c < frame.height), frame.height]
    return [frame.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a]


def _compute(config: dict[str, Any], part: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    try:
        from distributed import get_worker

        where = str(get_worker().address)
    except (ImportError, ValueError):
        where = "local"
    return recipes.apply(config, part), where


def _on_workers(client: Any, config: dict[str, Any], pieces: list[pl.DataFrame], attempts: int = 3) -> list:
    """Partitions are scattered (unhashed) so they go to the workers directly, not through the
    scheduler. Scattered data has no lineage: if a worker dies holding a partition, the whole
    stage is sent again (the pieces are still here), up to ``attempts`` times."""
    from distributed import CancelledError, as_completed
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    from lepton.errors import EngineError

    for attempt in range(1, attempts + 1):
        try:
            shared = client.scatter(pieces, hash=False)
            futures = client.map(_compute, [config] * len(pieces), shared, pure=False)
            steps = Steps("features", len(futures), "partition", logged=10)
            # client's loop: as_completed defaults to the newest client's, whose events a gather
            # that reschedules lost keys cannot wait on
            for _ in as_completed(futures, loop=client.loop):  # progress as each lands; results in order below
                steps.advance()
            return client.gather(futures)
        except (CancelledError, CommClosedError, KilledWorker) as exc:
            if attempt == attempts or not client.nthreads():
                raise EngineError(f"the Dask cluster lost its workers during the features stage ({exc!r})") from exc
    raise AssertionError("unreachable")


def compute_features(
    spec: DomainSpec, frame: pl.DataFrame, client: Any = None, parts: int | None = None
) -> tuple[pl.DataFrame, FeatureRun]:
    """``frame`` with the recipe's columns: on ``client``'s workers when given, else here."""
    config = spec.recipe_config()
    if config is None or frame.height == 0:
        return frame, FeatureRun()
    if client is None:
        return recipes.apply(config, frame), FeatureRun(partitions=1, workers=("local",))
    workers = max(1, len(client.nthreads()))
    count = parts or max(workers, -(-frame.height // ROW_BLOCK))
    restore = None
    if spec.partition_by is not None and not recipes.in_order(frame, spec.partition_by, config.time):
        # Put each group's rows together, in time order, once; the original order comes back below.
        frame = frame.with_row_index(_ROW).sort([spec.partition_by, config.time, _ROW])
        restore = frame[_ROW].arg_sort()
        frame = frame.drop(_ROW)
    pieces = partitions(frame, spec, count)
    results = _on_workers(client, config, pieces)
    out = pl.concat([r[0] for r in results], how="vertical_relaxed", rechunk=False)
    if restore is not None:
        out = out[restore]
    return out, FeatureRun(partitions=len(pieces), workers=tuple(sorted({r[1] for r in results})))


@task(name="features", cache_policy=NO_CACHE)
def features_task(spec: DomainSpec, validated: Validated, client: Any = None) -> tuple[PreparedData, FeatureRun]:
    """Compute the recipe's features (on Dask), then split, check for leakage and encode.

    Args:
        spec: the domain.
        validated: the checked tables from preprocess.
        client: a Dask client; None computes in this process.
    Returns:
        (PreparedData, FeatureRun): encoded splits, and where the features were computed.
    """
    frame, run = compute_features(spec, validated.frame, client)
    holdout = None
    if validated.holdout is not None:
        holdout, more = compute_features(spec, validated.holdout, client)
        run = FeatureRun(run.partitions + more.partitions, tuple(sorted({*run.workers, *more.workers})))
    return prepare_parts(spec, frame, holdout, validated.notes, validated.fingerprint), run
