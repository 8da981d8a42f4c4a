"""Features: the domain's recipe, computed per partition on Dask workers with polars.

Partitions are whole groups (e.g. TEP runs, for rolling windows) or blocks of rows (row-wise
recipes), so each partition's features depend on that partition alone and the result equals a
single-process run exactly. Then the split, the leakage check and the encoder (``prepare_parts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from domains import recipes
from domains.spec import DomainSpec
from tasks.preprocess import PreparedData, Validated, prepare_parts

ROW_BLOCK = 250_000  # rows per partition for row-wise recipes
_ROW = "__lepton_row"


@dataclass(frozen=True)
class FeatureRun:
    """Where the recipe ran: the workers that computed partitions, and how many partitions."""

    partitions: int = 0
    workers: tuple[str, ...] = field(default=())


def partitions(frame: pl.DataFrame, spec: DomainSpec, parts: int) -> list[pl.DataFrame]:
    """Whole groups per partition (by ``spec.partition_by``), else blocks of rows; each keeps its
    original row numbers so the pieces can be put back in order."""
    indexed = frame.with_row_index(_ROW)
    key = spec.partition_by
    if key is not None:
        groups = indexed[key].unique().sort().to_list()
        buckets = np.array_split(np.asarray(groups, dtype=object), max(1, min(parts, len(groups))))
        return [indexed.filter(pl.col(key).is_in(list(b))) for b in buckets if len(b)]
    size = max(1, -(-frame.height // max(1, parts)))
    return [indexed.slice(i, size) for i in range(0, frame.height, size)]


def _compute(config: dict[str, Any], part: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    try:
        from distributed import get_worker

        where = str(get_worker().address)
    except (ImportError, ValueError):
        where = "local"
    return recipes.apply(config, part), where


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
    pieces = partitions(frame, spec, count)
    futures = client.map(_compute, [config] * len(pieces), pieces, pure=False)
    results = client.gather(futures)
    out = pl.concat([r[0] for r in results], how="vertical_relaxed").sort(_ROW).drop(_ROW)
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
