"""Scan: a partitioned table checked, featured, split and encoded where it lies, on the workers.

For a table stored as many files (``lepton.core.partitions``) every step runs per partition on
the Dask workers, and the driver merges what each partition sends back — summaries, sketches and
samples, never the table:

1. **check** (per file): read, validate against the schema (the first bad row of each column,
   named with its file), leave out unlabelled rows, read infinities as missing, add the recipe's
   features, and draw each row's place in the split from a hash of its key. The fingerprint is
   the sum of the rows' hashes (the same rows give the same fingerprint in any files, any order).
2. **split**: the same rows land on the same side whatever the partitioning. Stratified and
   random splits draw from a hash of the row's id columns (or of the whole row; rows that are
   the same then stay together), a group split from a hash of the group; a time split holds out
   the rows from the exact cutoff that a sort of every time would give (found from merged
   histograms, never a sort on one machine).
3. **encode**: the encoder's levels are merged from per-partition counts on the training side.
   No step keeps a file's rows once it is done with them (only a time split's time keys stay
   between the check and the split): each pass — the split's counts, the samples, the final fit
   (``PreparedData.table``), the holdout's scores — reads the file again where it runs
   (``PartitionReader``, refusing a file whose rows changed) and encodes it as XGBoost asks
   (``SideEncoder``), so a worker holds one file at a time, never its share of the table.
   The driver gathers uniform samples of each side (at most
   ``search_rows`` training rows for the search, ``SAMPLE_ROWS`` of validation and holdout, and
   never more than ``SAMPLE_MIB`` of encoded rows: ``sample_limits``),
   in an order that does not depend on the partitioning; of the training sample's raw values
   only ``REFERENCE_ROWS`` are kept (the monitor's reference statistics).

Group recipes (rolling windows over a series) need each group whole in one file; the scan says
which group spans which files when it is not.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from lepton.core.partitions import Dataset, Partition, WorkerTable, read_partition
from lepton.core.progress import Steps
from lepton.core.scoring import DATETIME_PARTS, encode, smoothed
from lepton.domains import recipes
from lepton.domains.spec import DomainSpec, Dtype, Role
from lepton.errors import DataError, EmptyDataError, EngineError, LeptonError, Problem, SchemaError
from lepton.tasks.labels import class_labels, encode_labels
from lepton.tasks.leakage import check_leakage
from lepton.tasks.preprocess import (
    MAX_LEVELS,
    Part,
    PreparedData,
    drop_unlabelled,
    infinities_missing,
    target_problems,
    validate,
)

SAMPLE_ROWS = 250_000  # validation and holdout rows gathered to the driver (each)
# The holdout metrics read every holdout row up to this many (labels and scores, a few bytes a row,
# and the metrics' sorts and copies of them on the driver: ~170 bytes a row measured at 6M rows);
# beyond it a uniform draw of this many, the same rows whatever the partitioning. A multiclass
# table's scores are a row per class: at most METRIC_CELLS of them.
METRIC_ROWS = 1_000_000
METRIC_CELLS = 8_000_000
# The driver's samples are bounded in bytes too, whatever the table's width: its encoded training
# sample at most this many MiB (the search's rows), validation and holdout half of it each.
SAMPLE_MIB = 256
REFERENCE_ROWS = 200_000  # training rows whose raw values the driver keeps, for the monitor's reference
GATHER_ROWS = 1_000_000  # a cutoff's last candidates are gathered and sorted once this few remain
BINS = 4096
TRAIN, VALID, HOLDOUT = 0, 1, 2
SIDES = {"training": TRAIN, "validation": VALID, "holdout": HOLDOUT}
SIDE_KEYS = {"train": TRAIN, "valid": VALID, "holdout": HOLDOUT}  # as ``WorkerTable`` names them
SIDE = "__lepton_side"  # which side of the split
DRAW = "__lepton_draw"  # the row's place in the split, uniform in [0, 1), from its key
PICK = "__lepton_pick"  # an independent uniform draw for the samples
TIME = "__lepton_time"  # the time column as an order-keeping int64 key
HELPERS = (SIDE, DRAW, PICK, TIME)


@dataclass(frozen=True)
class Checked:
    """What one partition sends back from the check."""

    partition: str
    rows: int  # labelled rows kept
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    digest: int = 0  # the rows' hashes summed modulo 2**64
    groups: frozenset[str] | None = None  # when groups must be whole within a partition
    times: tuple[int, int] | None = None  # the smallest and largest time key


@dataclass(frozen=True)
class Sides:
    """One partition's rows per side, label counts per side, and training level counts."""

    rows: tuple[int, int, int]
    labels: tuple[dict[Any, int], ...]
    levels: dict[str, dict[str, int]] = field(default_factory=dict)


# ---- on the workers ------------------------------------------------------------------------------
def _uniform(hashes: pl.Series) -> np.ndarray:
    """64-bit hashes as floats uniform in [0, 1) (their top 53 bits)."""
    return (hashes.to_numpy() >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _time_key(values: pl.Series) -> pl.Series:
    """Times (datetime, integer or float) as int64 keys in the same order (null stays null)."""
    if values.dtype.is_temporal():
        return values.cast(pl.Datetime("us")).cast(pl.Int64)
    if values.dtype.is_float():
        bits = values.cast(pl.Float64).to_numpy().view(np.int64)
        keys = np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)
        return pl.Series(values.name, keys, dtype=pl.Int64).set(values.is_null(), None)  # type: ignore[arg-type]
    return values.cast(pl.Int64)


def split_key(frame: pl.DataFrame, spec: DomainSpec) -> pl.Series:
    """The hash a row's place in a random split is drawn from: its group (whole groups move
    together), else its id columns, else the whole row."""
    if spec.group_column is not None:
        return frame[spec.group_column].cast(pl.String).fill_null("").hash(seed=1)
    ids = [c.name for c in spec.columns if c.role is Role.ID and c.name in frame.columns]
    return (frame.select(ids) if ids else frame).hash_rows(seed=1)


def check_partition(spec: DomainSpec, partition: Partition, encoding: str | None, role: str) -> tuple[Any, Checked]:
    """Step 1 for one file (``role``: "data" or "holdout data"): the checked, featured frame with
    its draws (None when it has problems), and what it sends back."""
    name = partition.name
    try:
        raw, notes = read_partition(partition, encoding)
        frame = validate(raw, spec, name, whole=False)
    except SchemaError as exc:
        problems = tuple(Problem(p.kind, p.column, f"{name}: {p.detail}") for p in exc.problems)
        return None, Checked(name, 0, problems)
    except LeptonError as exc:
        return None, Checked(name, 0, (Problem("unreadable", "*", str(exc)),))
    frame, dropped = drop_unlabelled(frame, spec, name)
    frame, infinite = infinities_missing(frame, spec, name)
    digest = int(frame.hash_rows(seed=0).sum() or 0) % 2**64 if frame.height else 0
    config = spec.recipe_config()
    if config is not None and frame.height:
        if spec.partition_by is not None and not recipes.in_order(frame, spec.partition_by, config.time):
            frame = frame.sort([spec.partition_by, config.time], maintain_order=True)
        frame = recipes.apply(config, frame)
    draws = [pl.Series(DRAW, _uniform(split_key(frame, spec))), pl.Series(PICK, _uniform(frame.hash_rows(seed=2)))]
    frame = frame.with_columns(draws)
    times = None
    if spec.time_column is not None:
        frame = frame.with_columns(_time_key(frame[spec.time_column]).alias(TIME))
        keys = frame[TIME].drop_nulls()
        times = (int(keys.min()), int(keys.max())) if keys.len() else None  # type: ignore[arg-type]
    groups = None
    if spec.group_column is not None and spec.time_column is not None:
        groups = frozenset(frame[spec.group_column].cast(pl.String).unique().to_list())
    checked = Checked(name, frame.height, (), (*notes, *dropped, *infinite), digest, groups, times)
    return (frame, role), checked


def check_summary(spec: DomainSpec, partition: Partition, encoding: str | None, role: str) -> tuple[Any, Checked]:
    """Step 1 as the check stage runs it: what the file sends back, and of its rows only the
    time keys stay on the worker (a time split's cutoffs read them); the rows are read again
    where a later step needs them."""
    held, checked = check_partition(spec, partition, encoding, role)
    if held is None or TIME not in held[0].columns:
        return None, checked
    return held[0][TIME].drop_nulls().to_numpy(), checked


def _times(keys: np.ndarray | None, below: int | None) -> np.ndarray:
    values = keys if keys is not None else np.array([], dtype=np.int64)
    return values[values < below] if below is not None else values


def _count_times(keys: np.ndarray | None, below: int | None) -> int:
    return len(_times(keys, below))


def _histogram(keys: np.ndarray | None, below: int | None, edges: np.ndarray) -> np.ndarray:
    """Counts of the time keys in ``[edges[i], edges[i + 1])``."""
    values = _times(keys, below)
    inside = values[(values >= edges[0]) & (values < edges[-1])]
    return np.bincount(np.searchsorted(edges, inside, side="right") - 1, minlength=len(edges) - 1)


def _between(keys: np.ndarray | None, below: int | None, lo: int, hi: int) -> np.ndarray:
    values = _times(keys, below)
    return values[(values >= lo) & (values <= hi)]


def assign(held: tuple[pl.DataFrame, str], spec: DomainSpec, cutoffs: dict[str, int]) -> tuple[Any, Sides]:
    """Step 2 for one partition: each row's side, then rows and labels per side and the
    training side's level counts."""
    frame, role = held
    split = spec.split
    if role == "holdout data":
        side = pl.lit(HOLDOUT)
    elif split.kind in ("stratified", "random"):
        h, v = split.holdout_size, split.validation_size
        side = pl.when(pl.col(DRAW) < h).then(HOLDOUT).when(pl.col(DRAW) < h + v * (1 - h)).then(VALID).otherwise(TRAIN)
    elif spec.time_column is None:  # a given split without a time column: validation drawn at random
        side = pl.when(pl.col(DRAW) < split.validation_size).then(VALID).otherwise(TRAIN)
    elif spec.group_column is not None:  # the latest times of each group (groups are whole here)
        size = split.holdout_size if split.kind == "time" else 0.0
        rank = pl.col(TIME).rank("dense").over(spec.group_column) / pl.col(TIME).n_unique().over(spec.group_column)
        late = rank > (1 - size) if size else pl.lit(False)
        rest_rank = pl.col(TIME).rank("dense").over([spec.group_column, late]) / pl.col(TIME).n_unique().over(
            [spec.group_column, late]
        )
        side = pl.when(late).then(HOLDOUT).when(rest_rank > 1 - split.validation_size).then(VALID).otherwise(TRAIN)
    else:
        holdout_from = cutoffs.get("holdout")
        late = pl.col(TIME) >= holdout_from if holdout_from is not None else pl.lit(False)
        side = pl.when(late).then(HOLDOUT).when(pl.col(TIME) >= cutoffs["validation"]).then(VALID).otherwise(TRAIN)
    frame = frame.with_columns(side.fill_null(TRAIN).cast(pl.Int8).alias(SIDE))
    counts = frame[SIDE].value_counts()
    rows = dict(zip(counts[SIDE].to_list(), counts["count"].to_list(), strict=True))
    labels: list[dict[Any, int]] = []
    for s in (TRAIN, VALID, HOLDOUT):
        if spec.task == "regression":
            labels.append({})
            continue
        values = frame.filter(pl.col(SIDE) == s)[spec.target].value_counts()
        labels.append(dict(zip(values[spec.target].to_list(), values["count"].to_list(), strict=True)))
    train = frame.filter(pl.col(SIDE) == TRAIN)
    levels = {}
    for column in spec.with_features().feature_columns:
        if column.dtype is Dtype.CATEGORY:
            counts = train[column.name].cast(pl.String).drop_nulls().value_counts()
            levels[column.name] = dict(zip(counts[column.name].to_list(), counts["count"].to_list(), strict=True))
    return frame, Sides(tuple(rows.get(s, 0) for s in (TRAIN, VALID, HOLDOUT)), tuple(labels), levels)


def sample(frame: pl.DataFrame, side: int, fraction: float) -> pl.DataFrame:
    """The rows of ``side`` whose sample draw is under ``fraction``, without the helper columns."""
    picked = frame.filter((pl.col(SIDE) == side) & (pl.col(PICK) < fraction))
    return picked.drop([c for c in HELPERS if c in picked.columns and c != PICK])


@dataclass(frozen=True)
class PartitionReader:
    """Steps 1 and 2 again for one file, where a later step needs its rows (the final fit): read,
    checked, featured and split exactly as the scan did, so no worker has to hold the table
    between stages. A file whose rows changed since the scan is refused, naming it."""

    spec: DomainSpec
    encoding: str | None
    cutoffs: dict[str, int]

    def __call__(self, partition: Partition, role: str, digest: int) -> pl.DataFrame:
        return self.split(partition, role, digest)[0]

    def split(self, partition: Partition, role: str, digest: int) -> tuple[pl.DataFrame, Sides]:
        held, checked = check_partition(self.spec, partition, self.encoding, role)
        if held is None or checked.digest != digest:
            raise DataError(
                f"{partition.name} changed while the run was using it (its rows differ from those checked at the "
                "start); nothing was registered. Leave the files as they are during a run and start it again"
            )
        return assign(held, self.spec, self.cutoffs)


def split_part(reader: PartitionReader, partition: Partition, role: str, digest: int) -> Sides:
    """Step 2 for one file, read again: its rows and labels per side, its training levels."""
    return reader.split(partition, role, digest)[1]


def sample_part(
    reader: PartitionReader, partition: Partition, role: str, digest: int, fractions: tuple[float, ...]
) -> tuple[pl.DataFrame, ...]:
    """One file, read and split again: each side's rows whose sample draw is under its fraction."""
    frame = reader(partition, role, digest)
    return tuple(sample(frame, side, fraction) for side, fraction in enumerate(fractions))


@dataclass(frozen=True)
class SideEncoder:
    """Step 3, where a partition lies: the model matrix and labels of its rows on one side
    (``train`` or ``valid``), made as the final fit reads them (``WorkerTable.encode``)."""

    spec: DomainSpec
    encoder: dict[str, Any]
    classes: list[Any]

    def __call__(self, frame: pl.DataFrame, side: str) -> tuple[np.ndarray, np.ndarray]:
        X, y = self.matrix(self.rows(frame, side))
        return X, y.astype(np.float32)

    @staticmethod
    def rows(frame: pl.DataFrame, side: str) -> pl.DataFrame:
        return frame.filter(pl.col(SIDE) == SIDE_KEYS[side])

    def matrix(self, rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The model matrix of ``rows`` and their labels as the metrics read them (class indices)."""
        names = [*self.encoder["numeric"], *self.encoder["datetime"], *self.encoder["categorical"]]
        X = encode(self.encoder, {c: rows[c].to_numpy() for c in names})
        return X, encode_labels(rows[self.spec.target], self.spec, self.classes)


@dataclass(frozen=True)
class HoldoutScores:
    """Holdout rows scored where they lie: their labels, each model's scores (smoothed as the
    served model decides), and the group and time of each row where the metrics need them; rows
    in the partitions' order, so the same table gives the same arrays."""

    y: np.ndarray
    scores: tuple[np.ndarray, ...]
    groups: np.ndarray | None = None
    order: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(self.y)


def score_holdout_part(
    table: WorkerTable, index: int, models: tuple[Any, ...], spec: DomainSpec, fraction: float = 1.0
) -> HoldoutScores:
    """One partition's holdout rows, read and split again where the task runs, scored by each of
    ``models`` (anything with ``predict(X)``). Groups are whole within a file wherever smoothing
    or a group metric reads them (``_whole_groups``), so per file equals over the table. With
    ``fraction`` under 1, the rows (whole groups, where the spec has them) whose draw is under it
    are sent back, scored and smoothed among all of their file's rows first."""
    partition, role, digest = table.sources[index]
    encoder: SideEncoder = table.encode  # type: ignore[assignment]
    rows = encoder.rows(table.read(partition, role, digest), "holdout")
    X, y = encoder.matrix(rows)
    smoothing = spec.smoothing_config()
    scores = tuple(smoothed(smoothing, model.predict(X), rows) for model in models)
    groups = rows[spec.group_column].to_numpy() if spec.group_column else None
    order = rows[spec.time_column].to_numpy() if spec.time_column else None
    if fraction < 1.0:  # a group's rows stay together (a detection delay reads a whole run)
        whole = spec.group_column is not None
        draw = _uniform(rows[spec.group_column].cast(pl.String).fill_null("").hash(seed=3)) if whole else rows[PICK]
        keep = np.asarray(draw) < fraction
        y, scores = y[keep], tuple(s[keep] for s in scores)
        groups, order = (None if a is None else a[keep] for a in (groups, order))
    return HoldoutScores(y=y, scores=scores, groups=groups, order=order)


def metric_fraction(table: WorkerTable, classes: int) -> float:
    """The share of holdout rows the metrics read: all of them up to METRIC_ROWS (METRIC_CELLS
    scores for a multiclass table), a uniform draw of that many beyond."""
    total = sum(table.rows.get("holdout", ()))
    limit = min(METRIC_ROWS, METRIC_CELLS // (classes if classes > 2 else 1))
    return 1.0 if total <= limit else limit / total


def score_holdout(client: Any, table: WorkerTable, models: tuple[Any, ...], spec: DomainSpec) -> HoldoutScores:
    """The holdout rows of a partitioned table scored on the workers, file by file; only the
    labels and scores come back (a few bytes a row), never the rows, and of at most METRIC_ROWS
    rows (``metric_fraction``), so the driver's memory does not grow with the table. A lost
    worker's files are read again on another (Dask retries the task); a cluster that cannot
    finish is an EngineError."""
    # a key of its own (hash=False): the same models scored again soon after would otherwise share
    # the key the last call's future is releasing, and lose their data with it
    shared = client.scatter(models, broadcast=True, hash=False)
    classes = len(getattr(table.encode, "classes", ()) or ())
    fraction = metric_fraction(table, classes)
    futures = [
        client.submit(score_holdout_part, table, i, shared, spec, fraction, pure=False)
        for i in table.holding("holdout")
    ]
    parts: list[HoldoutScores] = _run(client, futures, "deploy")
    if not parts:
        raise EmptyDataError("the holdout split has no rows")

    def joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
        return None if arrays[0] is None else np.concatenate(arrays)  # type: ignore[arg-type]

    return HoldoutScores(
        y=np.concatenate([p.y for p in parts]),
        scores=tuple(np.concatenate([p.scores[m] for p in parts]) for m in range(len(models))),
        groups=joined([p.groups for p in parts]),
        order=joined([p.order for p in parts]),
    )


# ---- on the driver -------------------------------------------------------------------------------
def _merge_problems(checked: list[Checked], dataset: Dataset) -> None:
    problems = [p for c in checked for p in c.problems]
    if problems:
        raise SchemaError(problems, dataset.root)
    if not sum(c.rows for c in checked):
        raise EmptyDataError(f"{dataset.root}: no labelled data rows")


def _whole_groups(checked: list[Checked], spec: DomainSpec) -> None:
    """Groups must not span partitions where a step works per group (rolling features, the
    latest times of each group)."""
    seen: dict[str, str] = {}
    for c in checked:
        for group in sorted(c.groups or ()):
            if group in seen:
                raise SchemaError(
                    [
                        Problem(
                            "split_group",
                            str(spec.group_column),
                            f"group {group!r} is in both {seen[group]} and {c.partition}; write the dataset with "
                            f"each {spec.group_column!r} in one file (e.g. hive folders {spec.group_column}=...)",
                        )
                    ],
                    "the dataset",
                )
            seen[group] = c.partition


def kth_time(client: Any, times: list[Any], k: int, lo: int, hi: int, below: int | None = None) -> int:
    """The ``k``-th smallest time key (0-based) over the partitions' time keys ``times`` (below ``below``),
    exactly as a sort of all of them would give: histograms narrow the range until few enough
    candidates remain to gather and sort."""
    while True:
        if lo >= hi:
            return lo
        edges = np.array(sorted({lo + i * (hi + 1 - lo) // BINS for i in range(BINS + 1)}), dtype=np.int64)
        counts = sum(client.gather(client.map(_histogram, times, below=below, edges=edges, pure=False)))
        if int(counts.sum()) <= GATHER_ROWS:
            found = client.gather(client.map(_between, times, below=below, lo=lo, hi=hi, pure=False))
            return int(np.sort(np.concatenate(found))[k])
        cumulative = np.cumsum(counts)
        i = int(np.searchsorted(cumulative, k, side="right"))
        k -= int(cumulative[i - 1]) if i else 0
        lo, hi = int(edges[i]), int(edges[i + 1]) - 1


def _cutoffs(client: Any, spec: DomainSpec, times: list[Any], checked: list[Checked]) -> dict[str, int]:
    """Time splits without groups: the first time of the holdout and of validation, over the
    training table's partitions ``times``."""
    split = spec.split
    if spec.time_column is None or spec.group_column is not None or split.kind in ("stratified", "random"):
        return {}
    ranges = [c.times for c in checked if c.times is not None]
    if not ranges:
        raise SchemaError([Problem("all_null", spec.time_column, "every time is missing")], "the dataset")
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    n = sum(client.gather(client.map(_count_times, times, below=None, pure=False)))  # non-null times
    out: dict[str, int] = {}
    below = None
    if split.kind == "time":
        out["holdout"] = below = kth_time(client, times, int(n * (1 - split.holdout_size)), lo, hi)
        n = sum(client.gather(client.map(_count_times, times, below=below, pure=False)))
    out["validation"] = kth_time(client, times, int(n * (1 - split.validation_size)), lo, hi, below)
    return out


def _levels(sides: list[Sides]) -> dict[str, list[str]]:
    """The ``MAX_LEVELS`` most frequent training levels of each categorical column (ties by
    name), sorted: the same as one encoder fitted on every training row."""
    merged: dict[str, Counter] = {}
    for s in sides:
        for column, counts in s.levels.items():
            merged.setdefault(column, Counter()).update(counts)
    return {
        column: sorted(v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LEVELS])
        for column, counts in merged.items()
    }


def _check_sides(spec: DomainSpec, sides: list[Sides], rows: tuple[int, int, int]) -> None:
    total = sum(rows)
    for name, s in SIDES.items():
        if rows[s] == 0:
            raise EmptyDataError(f"the {name} split is empty: {total} labelled row(s) are too few to split")
        if spec.task == "regression":
            continue
        labels = Counter()
        for part in sides:
            labels.update(part.labels[s])
        single = [p for p in target_problems(pl.Series(spec.target, list(labels)), spec) if p.kind == "single_class"]
        if single:
            raise SchemaError(single, f"the {name} split ({rows[s]} rows)")


def _fraction(rows: int, limit: int) -> float:
    """The sample draw under which a side's rows are sent to the driver: a little above what
    ``limit`` needs (six standard deviations over), so it is enough but for odds of about one in
    a billion."""
    return 1.0 if rows <= limit else min(1.0, (limit + 6 * limit**0.5 + 100) / rows)


def _merged_sample(frames: list[pl.DataFrame], limit: int) -> pl.DataFrame:
    """``limit`` rows of a side (all of them when it has no more): those with the smallest sample
    draws, in the order of their draws — the same rows in the same order whatever the
    partitioning."""
    kept = [f for f in frames if f.height] or frames[:1]
    return pl.concat(kept, how="vertical_relaxed").sort(PICK).head(limit).drop(PICK)


def _run(client: Any, futures: list[Any], what: str, summaries: bool = False) -> list[Any]:
    """Gather ``futures`` with progress; a lost cluster is an EngineError. With ``summaries``,
    each result is a (frame, summary) pair and only the summaries travel: the frames stay on
    their workers (gathering them would bring the whole table to the driver)."""
    from distributed import CancelledError, as_completed
    from distributed.comm import CommClosedError
    from distributed.scheduler import KilledWorker

    try:
        steps = Steps(what, len(futures), "partition", logged=10)
        # This client's loop, not the newest client's (as_completed's default): a gather that
        # reschedules keys a lost worker held waits on events bound to the loop that first awaited them.
        for _ in as_completed(futures, loop=client.loop):
            steps.advance()
        if summaries:
            futures = [client.submit(operator.itemgetter(1), f, pure=False) for f in futures]
        return client.gather(futures)
    except (CancelledError, CommClosedError, KilledWorker) as exc:
        raise EngineError(f"the Dask cluster lost a worker during the {what} stage ({exc!r})") from exc


@dataclass(frozen=True)
class CheckedTable:
    """The check's result (the preprocess stage of a partitioned table): what each partition
    sent back, and the time keys of each on its worker (no rows: later steps read the files again)."""

    data: Dataset
    times: tuple[Any, ...]  # futures of each partition's time keys (or None), data partitions first
    checked: tuple[Checked, ...]
    workers: tuple[str, ...]
    jobs: tuple[tuple[Partition, str], ...]  # (file, role) of each partition

    @property
    def fingerprint(self) -> str:
        """The rows' hashes summed (any files, any order give the same) and their count."""
        return f"{sum(c.digest for c in self.checked) % 2**64:016x}-{sum(c.rows for c in self.checked)}"

    @property
    def notes(self) -> tuple[str, ...]:
        notes = [n for c in self.checked for n in c.notes]
        if len(notes) > MAX_NOTES:
            notes = [*notes[:MAX_NOTES], f"... and {len(notes) - MAX_NOTES} more note(s) from the partitions"]
        return tuple(notes)


MAX_NOTES = 20


def check_table(spec: DomainSpec, data: Dataset, client: Any, holdout: Dataset | None = None) -> CheckedTable:
    """Step 1 on every partition (data, then a given holdout's); raise one SchemaError naming
    every bad file, column and row before anything is recorded."""
    encoding = spec.data.encoding
    jobs = [(p, "data") for p in data.partitions]
    jobs += [(p, "holdout data") for p in (holdout.partitions if holdout else ())]
    first = [client.submit(check_summary, spec, p, encoding, role, pure=False) for p, role in jobs]
    checked = tuple(_run(client, first, "preprocess", summaries=True))
    _merge_problems(list(checked), data)
    if spec.partition_by is not None or (spec.group_column is not None and spec.time_column is not None):
        _whole_groups(list(checked), spec)
    times = tuple(client.submit(operator.itemgetter(0), f, pure=False) for f in first)
    workers = tuple(sorted(str(w) for w in client.nthreads()))
    return CheckedTable(data, times, checked, workers, tuple(jobs))


def prepare_table(spec: DomainSpec, table: CheckedTable, client: Any, search_rows: int) -> PreparedData:
    """Steps 2 and 3: split every partition, merge the encoder, and gather the samples the
    driver works on. Each file is read again for each pass (the split's counts, then the
    samples), so a worker holds one file at a time, never its share of the table."""
    mains = len(table.data.partitions)
    cutoffs = _cutoffs(client, spec, list(table.times[:mains]), list(table.checked[:mains]))
    reader = PartitionReader(spec, spec.data.encoding, cutoffs)
    sources = [(p, role, c.digest) for (p, role), c in zip(table.jobs, table.checked, strict=True)]
    sides: list[Sides] = _run(client, [client.submit(split_part, reader, *s, pure=False) for s in sources], "features")
    rows: tuple[int, int, int] = tuple(sum(s.rows[i] for s in sides) for i in (TRAIN, VALID, HOLDOUT))  # type: ignore[assignment]
    _check_sides(spec, sides, rows)
    train_labels: Counter = Counter()
    for s in sides:
        train_labels.update(s.labels[TRAIN])
    classes = class_labels(pl.Series(spec.target, list(train_labels)), spec)
    model_spec = spec.with_features()
    kinds = {c.name: c.dtype for c in model_spec.feature_columns}
    levels = _levels(sides)
    encoder = {
        "numeric": [n for n, d in kinds.items() if d in (Dtype.FLOAT, Dtype.INT, Dtype.BOOL)],
        "datetime": [n for n, d in kinds.items() if d is Dtype.DATETIME],
        "categorical": {n: levels.get(n, []) for n, d in kinds.items() if d is Dtype.CATEGORY},
    }
    limits = sample_limits(_width(encoder), search_rows)
    fractions = tuple(_fraction(rows[s], limits[s]) for s in (TRAIN, VALID, HOLDOUT))
    picked = _run(client, [client.submit(sample_part, reader, *s, fractions, pure=False) for s in sources], "features")
    samples = [_merged_sample([p[s] for p in picked], limits[s]) for s in (TRAIN, VALID, HOLDOUT)]
    del picked
    notes = [*table.notes, *check_leakage(samples[TRAIN], model_spec, classes).notes]  # on the training sample
    workers = WorkerTable(
        sources=tuple(sources),
        rows={name: tuple(s.rows[i] for s in sides) for name, i in SIDE_KEYS.items()},
        features=_width(encoder),
        read=reader,
        encode=SideEncoder(spec, encoder, classes),
    )

    def part(frame: pl.DataFrame) -> Part:
        columns = {c: frame[c].to_numpy() for c in [*encoder["numeric"], *encoder["datetime"], *encoder["categorical"]]}
        return Part(frame=frame, X=encode(encoder, columns), y=encode_labels(frame[spec.target], spec, classes))

    notes.append(
        f"{table.data.describe()}: split on the workers into {rows[TRAIN]:,} training, {rows[VALID]:,} validation "
        f"and {rows[HOLDOUT]:,} holdout rows; the driver holds samples of {samples[TRAIN].height:,}, "
        f"{samples[VALID].height:,} and {samples[HOLDOUT].height:,} of them"
    )
    train = part(samples[TRAIN])  # the search's rows, encoded; their raw values only as many as the reference needs
    return PreparedData(
        domain=spec.name,
        train=Part(frame=samples[TRAIN].head(REFERENCE_ROWS), X=train.X, y=train.y),
        valid=part(samples[VALID]),
        holdout=part(samples[HOLDOUT]),
        encoder=encoder,
        classes=classes,
        fingerprint=table.fingerprint,
        notes=tuple(notes),
        table=workers,
    )


@task(name="preprocess", cache_policy=NO_CACHE)
def check_table_task(spec: DomainSpec, data: Dataset, client: Any, holdout: Dataset | None = None) -> CheckedTable:
    """A partitioned table read and checked against the schema on the Dask workers, partition by
    partition (the preprocess stage of ``preprocess_task``'s single file)."""
    return check_table(spec, data, client, holdout)


@task(name="features", cache_policy=NO_CACHE)
def prepare_table_task(spec: DomainSpec, table: CheckedTable, client: Any, search_rows: int) -> PreparedData:
    """A checked partitioned table split, encoded where it lies, and sampled for the driver
    (the features stage of ``features_task``)."""
    return prepare_table(spec, table, client, search_rows)


def sample_limits(width: int, search_rows: int) -> tuple[int, int, int]:
    """The rows gathered to the driver from each side (train, validation, holdout): at most
    ``search_rows``/``SAMPLE_ROWS``, and no more than ``SAMPLE_MIB`` (half of it for validation
    and holdout) of float32 model matrix at ``width`` columns."""
    fits = SAMPLE_MIB * 2**20 // (4 * max(1, width))
    return min(search_rows, fits), min(SAMPLE_ROWS, fits // 2), min(SAMPLE_ROWS, fits // 2)


def _width(encoder: dict[str, Any]) -> int:
    return (
        len(encoder["numeric"])
        + len(DATETIME_PARTS) * len(encoder["datetime"])
        + sum(len(v) for v in encoder["categorical"].values())
    )
