"""Performance without labels: the champion's primary metric on a batch, estimated from the
model's own probabilities (confidence-based performance estimation, as NannyML's CBPE does).

Where the probabilities are calibrated and the batch differs from the training data only in its
inputs (covariate shift: the chance of each label given a row is unchanged), a row's label is a
draw from the probabilities the model gives that row. So the metric the labels would show on
this batch is distributed as the metric on labels drawn that way. Lepton draws them ``DRAWS``
times and scores each draw with the same function the monitor applies to real labels
(``lepton.tasks.metrics.primary_score``, at the version's threshold): the central ``LEVEL``
share of the draws is the band, which is what the realised metric may be given the batch's
size. A metric that needs a decision (macro-F1 of the arg-max class) is drawn the same way, so
every metric the spec can name works without a formula. The estimate is the draws' mean, or,
for ROC AUC, macro-F1 and accuracy, the metric of the expected counts (as CBPE computes it:
no draw noise in the figure itself; the band is then the draws' spread around it).

It cannot see what it assumes away: a change in how labels follow the inputs (concept shift),
or scores that are not calibrated (the estimate then inherits their bias). ``calibration`` names
the map the labels are drawn through: the one the version serves with, or, where it serves raw
scores (a multiclass model; a binary one refitted on its validation rows), the map stored for the
estimate alone (``BundleMeta.estimation_map``: per class against the rest, fitted on
validation before the refit), or "none" where out of fold on validation no map beat the raw
scores. The decisions scored stay the served ones.

Regression has no probabilities; its labels are drawn as the prediction plus a residual from
the model's validation errors at that prediction (``lepton.tasks.calibrate.fit_residual_map``:
direct loss estimation with the prediction as its input), so a batch that moves to where the
model errs more is estimated worse. A version without that map (fewer than 100 validation
rows) is not estimated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from lepton.core.scoring import BundleMeta, apply_calibration
from lepton.domains.spec import DomainSpec
from lepton.tasks.metrics import primary_score

DRAWS = 200
LEVEL = 0.9
MAX_ROWS = 20_000  # rows drawn from; a larger batch's band is narrowed to its own size


@dataclass(frozen=True)
class Estimate:
    """The primary metric estimated without labels, with its band at ``level``."""

    metric: str
    value: float
    lower: float
    upper: float
    level: float
    rows: int
    calibration: str  # the map the probabilities went through ("sigmoid", "isotonic"), or "none": raw scores
    # binary with a cost model, in its unit: the expected cost per decision at the threshold, and
    # that of the better decision taken without the model (flag every row, or none)
    expected_cost: float | None = None
    no_skill_cost: float | None = None
    # binary, at the threshold: the expected share of positives flagged, and of negatives flagged
    sensitivity: float | None = None
    false_alarm_rate: float | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def _drawn(self) -> str:
        return (
            "labels drawn from the validation errors"
            if self.calibration == "residuals"
            else f"{self.calibration} calibration"
        )

    def describe(self) -> str:
        return (
            f"estimated {self.metric} {self.value:.4f} ({self.level:.0%} band {self.lower:.4f} to {self.upper:.4f}, "
            f"{self.rows:,} rows, no labels, {self._drawn()})"
        )


def _bernoulli(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``DRAWS`` rows of outcomes, each True with its column's probability ``p``, to 1/65,536:
    16 random bits a draw, a third of the time that doubles take."""
    cut = np.minimum(np.round(np.asarray(p, dtype=np.float64) * 65536), 65535).astype(np.uint16)
    return rng.integers(0, 65536, (DRAWS, len(cut)), dtype=np.uint16) < cut


def _draw_labels(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``DRAWS`` rows of labels, one per row of ``scores``, drawn from its probabilities (a
    column: the positive class's), to 1/65,536. A class label is the number of the row's
    cumulative probabilities its 16 random bits reach, counted class by class: far less memory
    traffic than comparing every draw with every class at once."""
    if scores.ndim == 1:
        return _bernoulli(scores, rng).astype(np.int64)
    rows, k = scores.shape
    cumulative = np.cumsum(scores, axis=1)
    cumulative /= cumulative[:, -1:]  # rows that sum to 1 within float error
    cut = np.minimum(np.round(cumulative[:, :-1] * 65536), 65535).astype(np.uint16)
    u = rng.integers(0, 65536, (DRAWS, rows), dtype=np.uint16)
    labels = np.zeros((DRAWS, rows), dtype=np.uint8 if k <= 256 else np.int64)
    for j in range(k - 1):
        labels += u >= cut[:, j]
    return labels


def _drawn_auc(scores: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ROC AUC of every draw at once, the labels drawn from ``p``: the scores, and so their
    ranks (ties averaged, as scikit-learn counts them), are the same in every draw; only which
    rows are positive changes. AUC = (the positives' rank sum - n1 (n1 + 1) / 2) / (n1 n0); NaN
    for a draw of one class."""
    positive = _bernoulli(p, rng)
    sums = positive.view(np.uint8) @ np.column_stack([rankdata(scores), np.ones(len(p))])
    rank_sum, n1 = sums[:, 0], sums[:, 1]
    n0 = len(p) - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def _drawn_argmax(metric: str, scores: np.ndarray, proba: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Macro-F1 or accuracy of the arg-max class for every draw, from each draw's confusion
    counts (the decisions are the same in every draw; only the labels change), as scikit-learn
    computes them over every class (a class never true nor predicted scores 0). The decisions
    are the ``scores``' arg-max, the labels drawn from ``proba``."""
    rows, k = proba.shape
    decided = scores.argmax(axis=1).astype(np.int64) + (np.arange(DRAWS, dtype=np.int64) * k * k)[:, None]
    codes = (_draw_labels(proba, rng) * np.int64(k) + decided).ravel()  # draw, label, decision
    confusion = np.bincount(codes, minlength=DRAWS * k * k).reshape(DRAWS, k, k)
    tp = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    if metric == "accuracy":
        return tp.sum(axis=1) / rows
    denominator = confusion.sum(axis=1) + confusion.sum(axis=2)  # 2 tp + fp + fn, per class
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1)


def _expected_auc(scores: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of the expected counts (as CBPE takes it): the pairs expected to be ordered right
    over the (positive, negative) pairs expected, each row positive with probability ``p`` and
    a tie counting half: no draws, so no Monte Carlo noise in the estimate itself."""
    order = np.argsort(scores, kind="stable")
    s, q = scores[order], p[order]
    negative = 1.0 - q
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    tied = np.add.reduceat(negative, start)  # each score's expected negatives
    below = np.repeat(np.cumsum(tied) - tied, counts)  # those at lower scores
    right = np.sum(q * (below + 0.5 * (np.repeat(tied, counts) - negative)))  # not the row against itself
    pairs = q.sum() * negative.sum() - np.sum(q * negative)
    return float(right / pairs) if pairs > 0 else float("nan")


def _expected_argmax(metric: str, scores: np.ndarray, proba: np.ndarray) -> float:
    """Macro-F1 or accuracy of the arg-max class from the expected confusion counts (as CBPE
    takes them): per class 2 E[tp] / (E[2 tp + fp + fn]); a class never predicted nor expected
    scores 0."""
    decided = np.eye(proba.shape[1], dtype=bool)[scores.argmax(axis=1)]
    tp = np.where(decided, proba, 0.0).sum(axis=0)
    if metric == "accuracy":
        return float(tp.sum() / len(proba))
    denominator = decided.sum(axis=0) + proba.sum(axis=0)  # E[tp + fp] + E[tp + fn]
    return float(np.mean(np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)))


def reference_scores(sketch: dict[str, Any] | None, rows: int = MAX_ROWS) -> np.ndarray | None:
    """The champion's holdout probabilities as its stored reference sketches them (the
    prediction's quantiles and CDF, ``lepton.tasks.monitor.numeric_reference``), rebuilt as
    evenly spaced quantiles; None where the reference keeps classes, not probabilities.

    Estimating on these is estimating what the training data itself would show, by the same
    method as on a batch: the two then differ by what moved, not by the estimator's own bias."""
    if not sketch or sketch.get("kind") != "numeric" or not sketch.get("quantiles"):
        return None
    count = min(int(sketch["count"]), rows)
    if count < 20:
        return None
    levels = (np.arange(count) + 0.5) / count
    return np.interp(levels, np.asarray(sketch["cdf_at"]), np.asarray(sketch["quantiles"]))


def _drawn_residuals(prediction: np.ndarray, state: Mapping[str, Any], rng: np.random.Generator) -> np.ndarray:
    """``DRAWS`` residuals per row, each one of its bin's stored quantiles, all equally likely."""
    quantiles = np.asarray(state["quantiles"])
    bins = np.searchsorted(np.asarray(state["edges"]), prediction, side="right")
    return quantiles[bins, rng.integers(0, quantiles.shape[1], (DRAWS, len(prediction)))]


def _drawn_regression(spec: DomainSpec, prediction: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """The metric of every draw, a draw's labels being the predictions plus its residuals: R²,
    RMSE and MAE at once (as scikit-learn computes them), another metric draw by draw."""
    metric = spec.primary_metric
    if metric == "mae":
        return np.abs(residual).mean(axis=1)
    squared = (residual**2).mean(axis=1)
    if metric == "rmse":
        return np.sqrt(squared)
    if metric == "r2":
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1 - squared / (prediction + residual).var(axis=1)
    sign = 1.0 if spec.higher_is_better(metric) else -1.0
    return np.asarray([sign * primary_score(spec, prediction + r, prediction) for r in residual])


def champion_calibration(meta: BundleMeta) -> tuple[str, Mapping[str, Any] | None]:
    """What a version's probabilities are drawn through: the name of the map, and the map when
    it is one for the estimate alone (None: the served scores are drawn from as they are)."""
    if meta.estimation_map:
        return str(meta.estimation_map["method"]), meta.estimation_map
    return (str(meta.calibration["method"]) if meta.calibration else "none"), None


def holdout_check(spec: DomainSpec, meta: BundleMeta, scores: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    """At training: the estimate on the holdout's scores (as served: calibrated, smoothed), and
    beside it what the holdout's labels give (``realised``). The bundle keeps both
    (``BundleMeta.estimation_check``): the monitor compares a batch's estimate with this one,
    made the same way, so the estimator's own bias cancels, and shows by how much the estimate
    missed the labels where they were known. None for a version not estimated, or scores that
    are a sample of rows the labels do not match."""
    scores = np.asarray(scores)
    if len(scores) != len(y):
        return None
    method, through = champion_calibration(meta)
    estimated = estimate(spec, scores, meta.threshold, method, spec.split.seed, drawn_through=through)
    if estimated is None:
        return None
    sign = 1.0 if spec.higher_is_better(spec.primary_metric) else -1.0
    cut = 0.5 if meta.threshold is None else meta.threshold
    return {**estimated.as_json(), "realised": sign * primary_score(spec, np.asarray(y), scores, cut)}


def at_training(spec: DomainSpec, meta: BundleMeta, sketch: dict[str, Any] | None) -> Estimate | None:
    """The estimate a version made of its own holdout at training (``holdout_check``); for a
    bundle from before that was kept, the same estimate on the holdout's scores rebuilt from the
    reference's prediction ``sketch`` (``reference_scores``); None where neither is there."""
    check = meta.estimation_check
    if check:
        return Estimate(**{name: check.get(name) for name in Estimate.__dataclass_fields__})
    held_out = reference_scores(sketch)
    if held_out is None:
        return None
    method, through = champion_calibration(meta)
    return estimate(spec, held_out, meta.threshold, method, spec.split.seed, drawn_through=through)


def estimate(
    spec: DomainSpec,
    scores: np.ndarray,
    threshold: float | None,
    calibration: str,
    seed: int = 0,
    rows: int | None = None,
    drawn_through: Mapping[str, Any] | None = None,
) -> Estimate | None:
    """The primary metric's estimate on a batch scored ``scores`` (the served probabilities:
    the positive class's for binary, a row of class probabilities for multiclass, the
    predictions for regression); None for a batch too small to tell (fewer than 20 rows), or a
    regression version without a residual map. ``rows``: the batch's size
    when ``scores`` are a uniform sample of it (a batch read on the workers). ``drawn_through``:
    the estimate's own calibration map (``champion_calibration``); the decisions stay the
    ``scores``'."""
    regression = spec.task == "regression"
    if len(scores) < 20 or (regression and (not drawn_through or drawn_through.get("method") != "residuals")):
        return None
    rng = np.random.default_rng(seed)
    rows, cut = max(rows or 0, len(scores)), 0.5 if threshold is None else threshold
    # in a fixed order, so the same rows give the same estimate whatever their order or files
    ordered = np.sort(scores) if scores.ndim == 1 else scores[np.lexsort(scores.T[::-1])]
    many = len(scores) > MAX_ROWS
    sample = ordered[rng.choice(len(scores), MAX_ROWS, replace=False)] if many else ordered
    p = apply_calibration(drawn_through, sample) if drawn_through and not regression else sample
    closed = None  # the metric of the expected counts, where it has a form: the estimate without draw noise
    if regression:
        values = _drawn_regression(spec, sample, _drawn_residuals(sample, drawn_through, rng))
    elif spec.task == "binary" and spec.primary_metric == "roc_auc":
        values, closed = _drawn_auc(sample, p, rng), _expected_auc(sample, p)
    elif spec.task == "multiclass" and spec.primary_metric in ("f1_macro", "accuracy"):
        values = _drawn_argmax(spec.primary_metric, sample, p, rng)
        closed = _expected_argmax(spec.primary_metric, sample, p)
    else:
        sign = 1.0 if spec.higher_is_better(spec.primary_metric) else -1.0
        drawn_labels = _draw_labels(p, rng)
        values = np.asarray([sign * primary_score(spec, labels, sample, cut) for labels in drawn_labels])
    drawn = values[np.isfinite(values)]
    if len(drawn) < DRAWS // 2:
        return None
    mean = float(drawn.mean())
    low, high = np.quantile(drawn, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    if closed is not None and np.isfinite(closed):  # the band keeps the draws' spread around it
        low, high, mean = low - mean + closed, high - mean + closed, closed
    narrow = math.sqrt(len(sample) / rows)  # the spread of a metric shrinks with the square root of the rows
    return Estimate(
        metric=spec.primary_metric,
        value=mean,
        lower=mean + (float(low) - mean) * narrow,
        upper=mean + (float(high) - mean) * narrow,
        level=LEVEL,
        rows=rows,
        calibration=calibration,
        **_expected(spec, scores, cut, drawn_through),
    )


def _expected(
    spec: DomainSpec, scores: np.ndarray, threshold: float, drawn_through: Mapping[str, Any] | None
) -> dict[str, float]:
    """A binary model's decisions at ``threshold`` in expectation (the expected confusion
    matrix): the share of positives and of negatives flagged, and with a cost model the cost
    per decision, with the model and without it (flag every row or none, whichever costs less)."""
    if spec.task != "binary":
        return {}
    flagged = scores >= threshold
    p = apply_calibration(drawn_through, scores) if drawn_through else scores
    positives, negatives = float(p.sum()), float((1 - p).sum())
    out = {
        "sensitivity": float(p[flagged].sum() / positives) if positives > 0 else float("nan"),
        "false_alarm_rate": float((1 - p[flagged]).sum() / negatives) if negatives > 0 else float("nan"),
    }
    if spec.cost is not None:
        rate = float(np.mean(p))  # the positive rate the probabilities expect
        # a flagged row costs a false positive with probability 1 - p, an unflagged one a false negative with p
        cost = np.where(flagged, (1 - p) * spec.cost.false_positive, p * spec.cost.false_negative)
        out["expected_cost"] = float(np.mean(cost))
        out["no_skill_cost"] = min(rate * spec.cost.false_negative, (1 - rate) * spec.cost.false_positive)
    return out
