"""A monitored batch stored as many files, checked, scored and counted where it lies.

``lepton monitor DOMAIN --data FOLDER`` (a directory, a glob, hive folders) reads no file on the
driver, and no worker keeps a file once it has been counted. One task per file on the Dask
workers reads it, checks its model inputs (the first bad row of each column, named with its
file), scores it with the champion, adds the recipe's features and counts every column:
numeric ones on one grid for all files (``NumericPlan``: the reference's sketch and the PSI
bins), categorical ones by the reference's levels (``LevelCounts``). It sends back the counts,
a fingerprint (the rows' hashes summed: the same rows give the same fingerprint in any files),
and the labels and scores where the file has the target.

Sturges' PSI bins (``psi_bins: sturges``) span the whole batch's range, which no file knows: the
first pass then sends back each numeric column's range (``Span``), and a second reads each file
again to count on the merged grid (a file whose rows changed in between is refused by name).

The driver adds the counts up and decides each column's drift exactly as for a single file: the
same PSI, the same KS and chi-squared statistics (counts add; no approximation). Problems in any
file stop the run before anything is recorded, all of them named at once.

Rolling recipes over a series need each series whole in one file, as for training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from lepton.core.partitions import Dataset, Partition, read_partition
from lepton.core.scoring import Scorer
from lepton.domains import recipes
from lepton.domains.spec import DomainSpec
from lepton.errors import DataError, EmptyDataError, LeptonError, Problem, SchemaError
from lepton.tasks.estimate import MAX_ROWS as SAMPLE_ROWS
from lepton.tasks.monitor import PREDICTION, DriftReport, LevelCounts, NumericPlan, Span, _numbers, _present
from lepton.tasks.preprocess import check_inputs
from lepton.tasks.scan import _run

OUTPUT = "__lepton_output"  # the champion's monitored output, beside the features


@dataclass(frozen=True)
class Monitored:
    """What every file's task needs: the champion and what it is compared with."""

    spec: DomainSpec
    scorer: Scorer
    output: Any  # scores -> the output the reference monitors (``lepton.tasks.watch._monitored_output``)
    references: dict[str, Any]  # per monitored column (the model's output as PREDICTION)


@dataclass(frozen=True)
class BatchPart:
    """What one file of a batch sends back."""

    partition: str
    rows: int = 0
    problems: tuple[Problem, ...] = ()
    digest: int = 0  # the rows' hashes summed modulo 2**64
    counts: dict[str, Any] = field(default_factory=dict)  # per column: NumericCounts or LevelCounts
    spans: dict[str, Span] = field(default_factory=dict)  # numeric columns, when not yet counted
    labels: pl.Series | None = None
    scores: np.ndarray | None = None
    sample: np.ndarray | None = None  # the file's scores, or a seeded sample of SAMPLE_ROWS of them


@dataclass(frozen=True)
class ScannedBatch:
    """A batch's drift, its labels and scores where it had them, a sample of its scores (what
    the estimate without labels reads), and its fingerprint."""

    report: DriftReport
    labels: pl.Series | None
    scores: np.ndarray | None
    digest: str
    sample: np.ndarray | None = None


# ---- on the workers ------------------------------------------------------------------------------
def scan_part(
    monitored: Monitored, partition: Partition, plans: dict[str, NumericPlan] | None, first: bool
) -> BatchPart:
    """One file: read, checked, scored and featured; each column counted (numeric ones on
    ``plans``; None: their spans instead, for a second pass). Labels and scores on the ``first``
    pass only."""
    spec, name = monitored.spec, partition.name
    try:
        raw, _ = read_partition(partition, spec.data.encoding)
        if raw.is_empty():
            return BatchPart(name)
        inputs = check_inputs(raw, spec, 0, name)
    except SchemaError as exc:
        return BatchPart(name, problems=tuple(Problem(p.kind, p.column, f"{name}: {p.detail}") for p in exc.problems))
    except LeptonError as exc:
        return BatchPart(name, problems=(Problem("unreadable", "*", str(exc)),))
    scores = monitored.scorer.scores(inputs)
    frame = recipes.apply(spec.recipe_config(), inputs)
    frame = frame.with_columns(pl.Series(OUTPUT, monitored.output(spec, monitored.scorer, scores)))
    counts: dict[str, Any] = {}
    spans: dict[str, Span] = {}
    for column, reference in monitored.references.items():
        source = OUTPUT if column == PREDICTION else column
        if source not in frame.columns:
            continue
        if reference["kind"] == "categorical":
            counts[column] = LevelCounts.of(reference, frame[source])
        elif plans is None:
            spans[column] = Span.of(_present(_numbers(frame[source])))
        else:
            counts[column] = plans[column].count(_numbers(frame[source]))
    labels = raw[spec.target] if first and spec.target in raw.columns else None
    digest = int(inputs.hash_rows(seed=0).sum() or 0) % 2**64
    sample = _sample(np.asarray(scores), SAMPLE_ROWS, digest) if first else None
    kept = scores if labels is not None else None
    return BatchPart(name, frame.height, (), digest, counts, spans, labels, kept, sample)


def _sample(scores: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """``rows`` of ``scores`` drawn without replacement (seeded: the same rows give the same
    sample), or all of them, in order, when there are no more."""
    if len(scores) <= rows:
        return scores
    return scores[np.sort(np.random.default_rng(seed).choice(len(scores), rows, replace=False))]


# ---- on the driver -------------------------------------------------------------------------------
def scan_batch(
    spec: DomainSpec, reference: dict[str, Any], scorer: Scorer, output: Any, dataset: Dataset, client: Any
) -> ScannedBatch:
    """The drift of a batch stored as ``dataset``'s files against ``reference``, each file read
    where a worker runs (twice for Sturges' bins); a SchemaError naming every bad file, column
    and row before anything else happens."""
    references = dict(reference["features"])
    if reference.get(PREDICTION):
        references[PREDICTION] = reference[PREDICTION]
    numeric = [n for n, r in references.items() if r["kind"] != "categorical"]
    rule = spec.drift
    plans = None if NumericPlan.needs_span(rule) else {n: NumericPlan.of(references[n], rule) for n in numeric}
    monitored = client.scatter(Monitored(spec, scorer, output, references), broadcast=True, hash=False)

    def scan(partitions: list[Partition], first: bool) -> list[BatchPart]:
        tasks = [client.submit(scan_part, monitored, p, plans, first, pure=False) for p in partitions]
        return _run(client, tasks, "monitor")

    parts = scan(list(dataset.partitions), first=True)
    problems = [p for part in parts for p in part.problems]
    if problems:
        raise SchemaError(problems, dataset.root)
    parts = [p for p in parts if p.rows]
    if not parts:
        raise EmptyDataError(f"{dataset.root}: no data rows")
    counted = [p.counts for p in parts]
    if plans is None:  # Sturges' bins: the whole batch's range first, then every file counted on it
        present = [n for n in numeric if n in parts[0].spans]
        plans = {n: NumericPlan.of(references[n], rule, sum((p.spans[n] for p in parts), Span())) for n in present}
        files = {p.name: p for p in dataset.partitions}
        again = scan([files[p.partition] for p in parts], first=False)
        for before, after in zip(parts, again, strict=True):
            if after.digest != before.digest or after.rows != before.rows:
                raise DataError(f"{before.partition} changed while the monitor was reading it; nothing was recorded")
        counted = [after.counts for after in again]
    drifts = {}
    for name in [n for n in references if n in counted[0]]:
        total = counted[0][name]
        for more in counted[1:]:
            total = total + more[name]
        if name in plans:
            drifts[name] = plans[name].decide(name, references[name], total, rule)
        else:
            drifts[name] = total.decide(name, references[name], rule)
    prediction = drifts.pop(PREDICTION, None)
    report = DriftReport(drifts, rule, sum(p.rows for p in parts), prediction)
    # the labelled files' labels and scores, in the files' order (rows without a label are left
    # out by the metrics, as for a single file)
    labelled = [p for p in parts if p.labels is not None]
    labels = scores = None
    if labelled:
        dtype = labelled[0].labels.dtype  # type: ignore[union-attr]
        labels = pl.concat([p.labels.cast(dtype, strict=False) for p in labelled])  # type: ignore[union-attr]
        scores = np.concatenate([p.scores for p in labelled])  # type: ignore[misc]
    digest = sum(p.digest for p in parts) % 2**64
    return ScannedBatch(report, labels, scores, f"{digest & 0xFFFFFFFFFFFF:012x}", _merged_sample(parts, digest))


def _merged_sample(parts: list[BatchPart], seed: int) -> np.ndarray | None:
    """At most SAMPLE_ROWS scores over the files, each file's share by its rows: every score of
    a batch that small (in the files' order: the scores one file of the same rows gives), else
    a seeded sample of each file's."""
    if any(p.sample is None for p in parts):
        return None
    total = sum(p.rows for p in parts)
    if total <= SAMPLE_ROWS:
        return np.concatenate([p.sample for p in parts])  # type: ignore[misc]
    shares = [SAMPLE_ROWS * p.rows // total for p in parts]
    drawn = [_sample(p.sample, k, seed + i) for i, (p, k) in enumerate(zip(parts, shares, strict=True))]  # type: ignore[arg-type]
    return np.concatenate(drawn)
