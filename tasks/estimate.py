"""Performance without labels: the champion's primary metric on a batch, estimated from the
model's own probabilities (confidence-based performance estimation, as NannyML's CBPE does).

Where the probabilities are calibrated and the batch differs from the training data only in its
inputs (covariate shift: the chance of each label given a row is unchanged), a row's label is a
draw from the probabilities the model gives that row. So the metric the labels would show on
this batch is distributed as the metric on labels drawn that way. For ROC AUC, macro-F1 and
accuracy the estimate is the metric of the expected counts (as CBPE computes it) and the band
is ``LEVEL`` of a normal around it, its standard deviation by the delta method (each is a
smooth function of sums over rows of a row's label: no draws, so no Monte Carlo noise, and a
batch of 1,000 rows takes about a millisecond). Any other metric the spec can name is drawn:
labels drawn ``DRAWS`` times, each draw scored with the same function the monitor applies to
real labels (``lepton.tasks.metrics.primary_score``, at the version's threshold), the
estimate their mean and the band their central ``LEVEL`` share.

It cannot see what it assumes away: a change in how labels follow the inputs (concept shift),
or scores that are not calibrated (the estimate then inherits their bias). ``calibration`` names
the map the labels are drawn through: the one the version serves with, or, where it serves raw
scores (a multiclass model; a binary one refitted on its validation rows), the map stored for the
estimate alone (``BundleMeta.estimation_map``: per class against the rest, fitted on
validation before the refit), or "none" where out of fold on validation no map beat the raw
scores. The decisions scored stay the served ones. Where the same estimate missed the
holdout's labels at training by more than its band (``holdout_check``), the monitor scales the
estimate by the share the labels bore out there and reaches its band over both
(``allowing_for_miss``): the bias it cannot see, measured where it could be.

Regression has no probabilities; its labels are drawn as the prediction plus a residual from
the model's validation errors at that prediction (``lepton.tasks.calibrate.fit_residual_map``:
direct loss estimation with the prediction as its input), so a batch that moves to where the
model errs more is estimated worse. A version without that map (fewer than 100 validation
rows) is not estimated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from lepton.core.scoring import BundleMeta, apply_calibration
from lepton.domains.spec import DomainSpec
from lepton.tasks.metrics import primary_score

DRAWS = 200
LEVEL = 0.9
MAX_ROWS = 20_000  # rows drawn from; a larger batch's band is narrowed to its own size
MIN_CHECK_ROWS = 1_000  # the holdout rows a miss there must rest on to adjust a batch's estimate
BOUNDED = frozenset({"roc_auc", "f1_macro", "accuracy", "balanced_accuracy", "r2"})  # at most 1
Z = float(norm.ppf((1 + LEVEL) / 2))  # a closed-form band: the estimate +- Z standard deviations


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
    # binary ROC AUC: the standard deviation the calibration's own uncertainty adds (``_calibration_spread``)
    calibration_sd: float = 0.0
    # a metric in closed form: the standard deviation of the labels' chance alone (the band's other part)
    labels_sd: float | None = None
    # the estimate minus the labels' figure on the holdout at training, where they fell outside
    # its band there (``allowing_for_miss``), and then the estimate before it allowed for that
    missed_at_training: float = 0.0
    unadjusted: dict[str, float] | None = None  # value, lower, upper

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def _drawn(self) -> str:
        return (
            "labels drawn from the validation errors"
            if self.calibration == "residuals"
            else f"{self.calibration} calibration"
        )

    def as_estimated(self) -> Estimate:
        """The estimate before the holdout's miss adjusted it (``allowing_for_miss``), its band
        the labels' chance alone (without ``calibration_sd``): what compares with another made
        the same way through the same map, the bias and the calibration's error both share
        cancelling."""
        plain = replace(self, **self.unadjusted, missed_at_training=0.0, unadjusted=None) if self.unadjusted else self
        if not (plain.calibration_sd and plain.labels_sd is not None):
            return plain
        half = Z * plain.labels_sd
        low, high = max(plain.value - half, 0.0), min(plain.value + half, 1.0)
        return replace(plain, lower=low, upper=high, calibration_sd=0.0)

    def describe(self) -> str:
        missed = self.missed_at_training
        widened = f", allowing for its miss of {missed:+.4f} on the holdout" if missed else ""
        return (
            f"estimated {self.metric} {self.value:.4f} ({self.level:.0%} band {self.lower:.4f} to {self.upper:.4f}, "
            f"{self.rows:,} rows, no labels, {self._drawn()}{widened})"
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


def _auc_counts(scores: np.ndarray, p: np.ndarray):
    """The rows in score order with, for each, the negatives expected below it and those tied
    with it (not the row itself), each row positive with probability ``p``; the order, the
    sorted probabilities, the tie groups' starts and sizes, and the expected pairs."""
    order = np.argsort(scores, kind="stable")
    s, q = scores[order], p[order]
    negative = 1.0 - q
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    tied = np.add.reduceat(negative, start)  # each score's expected negatives
    below = np.repeat(np.cumsum(tied) - tied, counts)  # those at lower scores
    level = np.repeat(tied, counts) - negative  # tied with the row, not the row
    pairs = q.sum() * negative.sum() - np.sum(q * negative)
    return order, q, start, counts, below, level, pairs


def _expected_auc(scores: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of the expected counts (as CBPE takes it): the pairs expected to be ordered right
    over the (positive, negative) pairs expected, each row positive with probability ``p`` and
    a tie counting half: no draws, so no Monte Carlo noise in the estimate itself."""
    _, q, _, _, below, level, pairs = _auc_counts(scores, p)
    right = np.sum(q * (below + 0.5 * level))
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


def _auc_spread(scores: np.ndarray, p: np.ndarray) -> float:
    """The standard deviation of ROC AUC over labels drawn from ``p`` (each row positive with
    its probability, independently), by the delta method. The scores' ranks (ties averaged, as
    scikit-learn counts them) are fixed; AUC = (S - N1 (N1 + 1) / 2) / (N1 N0) is a function of
    S, the positives' rank sum, and N1, their count, both sums of a row's label times a constant
    (its rank, 1). So its variance is that of one sum: each row's variance p (1 - p) times the
    square of the gradient's weight on it."""
    ranks = rankdata(scores)
    n1 = float(p.sum())
    n0 = len(p) - n1
    if n1 <= 0 or n0 <= 0:
        return float("nan")
    ordered = float(p @ ranks) - n1 * (n1 + 1) / 2
    by_sum = 1.0 / (n1 * n0)
    by_count = (-(n1 + 0.5) * n1 * n0 - ordered * (n0 - n1)) / (n1 * n0) ** 2
    return float(math.sqrt(np.sum(p * (1 - p) * (by_sum * ranks + by_count) ** 2)))


def _auc_gradient(scores: np.ndarray, p: np.ndarray) -> np.ndarray:
    """How the ROC AUC of the expected counts (``_expected_auc``) moves with each row's
    probability: AUC = R / P, R the pairs expected ordered right (a tie half) and P the
    (positive, negative) pairs expected, so dAUC/dp_k = (dR/dp_k - AUC dP/dp_k) / P, where a
    row's dR is the negatives expected below it less the positives expected above it (ties
    half) and its dP is the negatives expected less the positives, less 1 - 2 p_k."""
    order, q, start, counts, below, level_negative, pairs = _auc_counts(scores, p)
    tied_positive = np.add.reduceat(q, start)
    above = np.repeat(q.sum() - np.cumsum(tied_positive), counts)
    level_positive = np.repeat(tied_positive, counts) - q  # tied with the row, not the row
    auc = np.sum(q * (below + 0.5 * level_negative)) / pairs
    by_ordered = below + 0.5 * level_negative - above - 0.5 * level_positive
    by_pairs = (1.0 - q).sum() - q.sum() - (1.0 - 2.0 * q)
    gradient = np.empty_like(q)
    gradient[order] = (by_ordered - auc * by_pairs) / pairs
    return gradient


def _calibration_spread(scores: np.ndarray, p: np.ndarray, spread: Mapping[str, Any]) -> float:
    """The standard deviation of a batch's ROC AUC estimate from the calibration's own
    uncertainty (``lepton.tasks.calibrate.fit_calibration_spread``): each bin of the scores'
    probability is off by an unknown amount, independently, with the variance validation left
    it; the estimate moves by the sum of its rows' gradients in that bin times that amount. It
    does not shrink with the batch's rows: every row of a bin shares the bin's error."""
    bins = np.searchsorted(np.asarray(spread["edges"]), scores, side="right")
    variance = np.asarray(spread["variance"])
    by_bin = np.bincount(bins, weights=_auc_gradient(scores, p), minlength=len(variance))
    return float(math.sqrt(np.sum(by_bin**2 * variance)))


def _argmax_spread(metric: str, scores: np.ndarray, proba: np.ndarray) -> float:
    """The standard deviation of macro-F1 or accuracy of the arg-max class over labels drawn
    from ``proba``, by the delta method. The decisions are fixed; per class, F1 = 2 TP / (P +
    T), with P the rows decided for it, T those labelled it and TP both, and T and TP are sums
    over rows. A row labelled y moves the macro mean by h(y) = a_y [decided y] + b_y (a, b: the
    gradient's weights on TP_y and T_y), so the variance is the sum of each row's variance of
    h under its probabilities."""
    rows, k = proba.shape
    picked = scores.argmax(axis=1)
    if metric == "accuracy":
        q = proba[np.arange(rows), picked]
        return float(math.sqrt(np.sum(q * (1 - q))) / rows)
    decided = np.eye(k, dtype=bool)[picked]
    tp, denominator = np.where(decided, proba, 0.0).sum(axis=0), decided.sum(axis=0) + proba.sum(axis=0)
    live = denominator > 0
    a = np.divide(2.0, k * denominator, out=np.zeros(k), where=live)
    b = np.divide(-2.0 * tp, k * denominator**2, out=np.zeros(k), where=live)
    h = b + a * decided
    mean = np.sum(proba * h, axis=1)
    return float(math.sqrt(max(float(np.sum(proba * h**2) - np.sum(mean**2)), 0.0)))


def _closed_form(spec: DomainSpec, scores: np.ndarray, p: np.ndarray) -> tuple[float, float] | None:
    """The metric of the expected counts and its standard deviation over drawn labels, for
    the metrics that have both in closed form (ROC AUC; macro-F1 and accuracy of the arg-max
    class); None for another metric, which is drawn."""
    if spec.task == "binary" and spec.primary_metric == "roc_auc":
        return _expected_auc(scores, p), _auc_spread(scores, p)
    if spec.task == "multiclass" and spec.primary_metric in ("f1_macro", "accuracy"):
        return _expected_argmax(spec.primary_metric, scores, p), _argmax_spread(spec.primary_metric, scores, p)
    return None


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
    estimated = estimate(
        spec, scores, meta.threshold, method, spec.split.seed, drawn_through=through, spread=meta.estimation_spread
    )
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
        return Estimate(**{name: check[name] for name in Estimate.__dataclass_fields__ if name in check})
    held_out = reference_scores(sketch)
    if held_out is None:
        return None
    method, through = champion_calibration(meta)
    spread = meta.estimation_spread
    return estimate(spec, held_out, meta.threshold, method, spec.split.seed, drawn_through=through, spread=spread)


def of_batch(spec: DomainSpec, meta: BundleMeta, scores: np.ndarray, rows: int | None = None) -> Estimate | None:
    """A version's estimate on a batch (``estimate``, through the version's map), its band
    allowing for the miss on its holdout at training (``allowing_for_miss``)."""
    method, through = champion_calibration(meta)
    estimated = estimate(spec, scores, meta.threshold, method, spec.split.seed, rows, through, meta.estimation_spread)
    return allowing_for_miss(estimated, meta.estimation_check)


def estimate(
    spec: DomainSpec,
    scores: np.ndarray,
    threshold: float | None,
    calibration: str,
    seed: int = 0,
    rows: int | None = None,
    drawn_through: Mapping[str, Any] | None = None,
    spread: Mapping[str, Any] | None = None,
) -> Estimate | None:
    """The primary metric's estimate on a batch scored ``scores`` (the served probabilities:
    the positive class's for binary, a row of class probabilities for multiclass, the
    predictions for regression); None for a batch too small to tell (fewer than 20 rows), or a
    regression version without a residual map. ``rows``: the batch's size
    when ``scores`` are a uniform sample of it (a batch read on the workers). ``drawn_through``:
    the estimate's own calibration map (``champion_calibration``); the decisions stay the
    ``scores``'. ``spread``: the calibration's uncertainty on validation
    (``BundleMeta.estimation_spread``), which a binary ROC AUC band carries besides the labels'
    chance (``_calibration_spread``)."""
    regression = spec.task == "regression"
    if len(scores) < 20 or (regression and (not drawn_through or drawn_through.get("method") != "residuals")):
        return None
    rows, cut = max(rows or 0, len(scores)), 0.5 if threshold is None else threshold
    narrow = math.sqrt(len(scores) / rows)  # the spread of a metric shrinks with the square root of the rows
    p = scores if regression or not drawn_through else apply_calibration(drawn_through, scores)
    closed = None if regression else _closed_form(spec, scores, p)
    uncertain, labels_sd = 0.0, None
    if closed is not None:
        value, deviation = closed
        if not (math.isfinite(value) and math.isfinite(deviation)):
            return None  # one class expected throughout: no pairs to rank
        uncertain = _calibration_spread(scores, p, spread) if spread and spec.primary_metric == "roc_auc" else 0.0
        labels_sd = deviation * narrow
        half = Z * math.hypot(labels_sd, uncertain)
        low, high = max(value - half, 0.0), min(value + half, 1.0)
    else:
        drawn = _drawn(spec, scores, p, cut, drawn_through, np.random.default_rng(seed))
        if len(drawn) < DRAWS // 2:
            return None
        value = float(drawn.mean())
        quantiles = np.quantile(drawn, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        low, high = (value + (float(q) - value) * narrow for q in quantiles)
    return Estimate(
        metric=spec.primary_metric,
        value=value,
        lower=low,
        upper=high,
        level=LEVEL,
        rows=rows,
        calibration=calibration,
        calibration_sd=uncertain,
        labels_sd=labels_sd,
        **_expected(spec, scores, p, cut),
    )


def _drawn(
    spec: DomainSpec,
    scores: np.ndarray,
    p: np.ndarray,
    cut: float,
    drawn_through: Mapping[str, Any] | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """The metric on ``DRAWS`` draws of labels from ``p`` (the finite ones), for a metric
    without a closed form: on at most ``MAX_ROWS`` of the rows, taken in a fixed order so that
    the same rows give the same draws whatever their order or files."""
    order = np.argsort(scores, kind="stable") if scores.ndim == 1 else np.lexsort(scores.T[::-1])
    if len(scores) > MAX_ROWS:
        order = order[rng.choice(len(scores), MAX_ROWS, replace=False)]
    sample = scores[order]
    if spec.task == "regression":
        values = _drawn_regression(spec, sample, _drawn_residuals(sample, drawn_through, rng))
    else:
        sign = 1.0 if spec.higher_is_better(spec.primary_metric) else -1.0
        values = np.asarray([sign * primary_score(spec, labels, sample, cut) for labels in _draw_labels(p[order], rng)])
    return values[np.isfinite(values)]


def allowing_for_miss(estimated: Estimate | None, check: Mapping[str, Any] | None) -> Estimate | None:
    """The estimate adjusted where the same estimate missed the holdout's labels at training
    (``holdout_check``) beyond its band there: a bias it cannot see (probabilities that later
    data does not follow, a shift between validation and holdout), measured where the labels
    were known. The value is scaled by the share of the estimate the labels bore out there (of
    its distance from chance for ROC AUC, 0.5; of the figure itself otherwise); the scaled band
    is widened by the share's own chance (the check's labels are a draw too: the spread its
    band states, in quadrature), and the band reaches over both it and the unadjusted one, so
    it holds whether the bias is the holdout's or the batch's. Within the band there, or on a
    holdout of fewer than ``MIN_CHECK_ROWS`` (whose few large errors the band may not foresee:
    a regression's), the estimate is left as it is."""
    if estimated is None or not check or check.get("metric") != estimated.metric:
        return estimated
    realised, value = check.get("realised"), check.get("value")
    if realised is None or value is None or not math.isfinite(realised):
        return estimated
    if check["lower"] <= realised <= check["upper"]:
        return estimated
    if int(check.get("rows") or 0) < MIN_CHECK_ROWS:  # too few rows to tell a bias from their own chance
        return estimated
    chance = 0.5 if estimated.metric == "roc_auc" else 0.0
    share = (realised - chance) / (value - chance) if value != chance else float("nan")
    if not (math.isfinite(share) and share > 0):  # no share to scale by: the band is only widened
        share = 1.0
    ceiling = 1.0 if estimated.metric in BOUNDED else math.inf
    # the share rests on the check's labels, themselves a draw: their spread there (its band's
    # half-width over Z) over the estimate's distance from chance is the share's, and it moves
    # the scaled estimate by that times the batch's own distance from chance
    share_spread = (check["upper"] - check["lower"]) / (2 * Z) / abs(value - chance) if value != chance else 0.0
    drift = Z * share_spread * abs(estimated.value - chance)
    value_ = min(chance + (estimated.value - chance) * share, ceiling)

    def widened(x: float, side: float) -> float:  # a band edge, scaled, then widened by the share's chance
        edge = chance + (x - chance) * share
        return min(value_ + side * math.hypot(edge - value_, drift), ceiling)

    return replace(
        estimated,
        value=value_,
        lower=min(widened(estimated.lower, -1.0), estimated.lower),
        upper=max(widened(estimated.upper, 1.0), estimated.upper),
        missed_at_training=float(value - realised),  # > 0: the estimate was too high there
        unadjusted={"value": estimated.value, "lower": estimated.lower, "upper": estimated.upper},
    )


def _expected(spec: DomainSpec, scores: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """A binary model's decisions at ``threshold`` in expectation (the expected confusion
    matrix; ``p``: the probabilities the labels are drawn from): the share of positives and of
    negatives flagged, and with a cost model the cost per decision, with the model and without
    it (flag every row or none, whichever costs less)."""
    if spec.task != "binary":
        return {}
    flagged = scores >= threshold
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
