"""Evaluation: the candidate measured where it will be judged, before anything is registered.

- ``evaluate_holdout``: the candidate and the baseline on the holdout (its first use), each at
  its own threshold, with decision smoothing as the served model applies it (a partitioned
  table's whole holdout scored on the workers, ``lepton.tasks.scan.score_holdout``).
- ``calibration_metrics``: calibration before and after, out of fold and on the holdout.
- ``scoring_latency``: a bundle's scoring cost as the service calls it (CPU time, so the gate
  decides the same on a loaded machine).
- ``champion_scores`` / ``compare_with_champion``: the current champion scored from its own
  bundle on the same rows, and the paired test between the two.

Nothing here writes to MLflow; ``lepton.tasks.promotion`` decides and ``lepton.tasks.registration``
records.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lepton.core import tracking
from lepton.core.scoring import Scorer, smoothed
from lepton.core.timing import time_calls
from lepton.domains.spec import DomainSpec
from lepton.tasks.metrics import evaluate
from lepton.tasks.optimise import OptimiseResult, decision_threshold
from lepton.tasks.preprocess import PreparedData
from lepton.tasks.promotion import Comparison, paired_bootstrap
from lepton.tasks.scan import score_holdout
from lepton.tasks.train import TrainResult, alarm_normal, holdout_context


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics of the candidate and the baseline, each at its own threshold, measured on
    ``rows`` holdout rows; ``scores`` are the two models' scores on ``data.holdout`` (for a
    partitioned table a sample of the rows the metrics saw: the paired test, plots and the
    prediction reference read them)."""

    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    threshold: float
    baseline_threshold: float
    scores: np.ndarray = field(repr=False)
    baseline_scores: np.ndarray = field(repr=False)
    rows: int = 0


def evaluate_holdout(
    spec: DomainSpec, data: PreparedData, trained: TrainResult, opt: OptimiseResult, client: Any = None
) -> Evaluation:
    """The candidate and the baseline on the holdout. A partitioned table's whole holdout is
    scored on ``client``'s workers, file by file, and its metrics read every row."""
    baseline_threshold = decision_threshold(spec, data, trained.baseline)
    y = data.holdout.y
    smoothing, frame = spec.smoothing_config(), data.holdout.frame  # as the served model scores
    scores = smoothed(smoothing, opt.candidate.predict(data.holdout.X), frame)
    baseline_scores = smoothed(smoothing, trained.baseline.predict(data.holdout.X), frame)
    groups = order = None
    if data.table is not None and client is not None:
        models = (dataclasses.replace(opt.candidate), dataclasses.replace(trained.baseline))  # no loaded predictor
        whole = score_holdout(client, data.table, models, spec)
        y, (scores_all, baseline_all), groups, order = whole.y, whole.scores, whole.groups, whole.order
    else:
        scores_all, baseline_all = scores, baseline_scores
    return Evaluation(
        metrics=evaluate(spec, y, scores_all, holdout_context(spec, data, opt.threshold, groups, order)),
        baseline_metrics=evaluate(
            spec, y, baseline_all, holdout_context(spec, data, baseline_threshold, groups, order)
        ),
        threshold=opt.threshold,
        baseline_threshold=baseline_threshold,
        scores=scores,
        baseline_scores=baseline_scores,
        rows=len(y),
    )


LATENCY_ROWS = 1000  # holdout rows timed: each alone, then as one batch


def scoring_latency(scorer: Scorer, records: list[dict[str, Any]], repeats: int = 5) -> dict[str, float]:
    """The bundle's scoring cost, as the service calls it (``Scorer.scores``, recipe and encoding
    included, no HTTP): single rows one at a time, by the CPU time of this thread as the optimiser
    times a model (``lepton.core.timing``: p50 and p99, ms; the wall-clock figures and the blocks'
    spread beside them), and the rows as one batch (rows per second, best of ``repeats``)."""
    columns = list(records[0]) if records else []
    rows = [{name: [record[name]] for name in columns} for record in records]
    single = time_calls(lambda i: scorer.scores(rows[i % len(rows)]), len(rows), warmup=20)
    batch = {name: [record[name] for record in records] for name in columns}
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        scorer.scores(batch)
        best = min(best, time.perf_counter() - start)
    return {
        "latency_p50_ms": single.cpu_p50_ms,
        "latency_p99_ms": single.cpu_p99_ms,
        "latency_wall_p50_ms": single.wall_p50_ms,
        "latency_wall_p99_ms": single.wall_p99_ms,
        "latency_spread": single.spread,
        "batch_rows_per_s": len(records) / best,
    }


def calibration_metrics(spec: DomainSpec, data: PreparedData, opt: OptimiseResult) -> dict[str, float]:
    """Before and after calibration: out of fold on validation (every method tried), and on
    the holdout the raw scores' Brier and calibration error (the calibrated ones are the
    run's ``brier`` and ``calibration_error``)."""
    if opt.calibration is None:
        return {}
    out = opt.calibration.metrics()
    if opt.candidate.calibration is not None:
        from sklearn.metrics import brier_score_loss

        from lepton.tasks.metrics import calibration_error

        raw = opt.candidate.raw_predict(data.holdout.X)
        out["brier_uncalibrated"] = float(brier_score_loss(data.holdout.y, raw))
        out["calibration_error_uncalibrated"] = calibration_error(data.holdout.y, raw)
    return out


@dataclass(frozen=True)
class ChampionScores:
    """The current champion scored on this run's holdout (``scores`` None: compared on gates only)."""

    version: str | None
    scores: np.ndarray | None = None
    threshold: float = 0.5
    note: str | None = None
    normal: int | None = None  # multiclass: the normal class's index when it decides by the alarm rule


def champion_scores(spec: DomainSpec, data: PreparedData) -> ChampionScores:
    """Score the current champion on this run's holdout, from its own bundle with the same
    ``Scorer`` its pyfunc wraps, straight from the holdout frame (large holdouts skip the pandas
    round trip of pyfunc's schema checks)."""
    version = tracking.alias_version(spec.model_name, tracking.CHAMPION)
    if version is None:
        return ChampionScores(None)
    try:
        with tracking.scratch_dir() as tmp:
            scorer = Scorer.from_dir(tracking.download_bundle(spec.model_name, version, Path(tmp)))
        scores = scorer.scores(data.holdout.frame)
    except Exception as exc:  # an unloadable champion must not block a good model
        note = f"champion v{version} cannot score this holdout ({exc.__class__.__name__}: {exc})"
        return ChampionScores(version, note=note)
    if spec.task != "regression" and list(scorer.meta.classes) != [str(c) for c in data.classes]:
        return ChampionScores(version, note=f"champion v{version} predicts other classes; compared on gates only")
    threshold = 0.5 if scorer.meta.threshold is None else scorer.meta.threshold
    return ChampionScores(version, scores, threshold, normal=scorer.meta.alarm_normal)


def compare_with_champion(
    spec: DomainSpec, data: PreparedData, evaluation: Evaluation, champion: ChampionScores
) -> Comparison | None:
    if champion.scores is None:
        return None
    groups = data.holdout.frame[spec.group_column].to_numpy() if spec.group_column else None
    return paired_bootstrap(
        spec,
        data.holdout.y,
        evaluation.scores,
        champion.scores,
        groups,
        evaluation.threshold,
        champion.threshold,
        normal=alarm_normal(spec, data.classes),
        champion_normal=champion.normal,
    )
