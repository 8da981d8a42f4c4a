"""Domain metrics, named as scikit-learn names them, computed from scores on one split.

Scores are what a model's ``predict`` returns: the positive-class probability (binary), a
probability matrix (multiclass) or values (regression).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from lepton.core.scoring import alarm_classes
from lepton.domains.spec import CostModel, DomainSpec


@dataclass(frozen=True)
class EvalContext:
    """What some metrics need beyond labels: the decision threshold, and for detection delay
    the run each row belongs to and its time order; for alarm metrics, the index of the class
    that means normal operation."""

    threshold: float = 0.5
    normal: int = 0
    groups: np.ndarray | None = None
    order: np.ndarray | None = None
    alarm: float | None = None  # multiclass: the alarm threshold on 1 - P(normal); None: arg-max


def expected_cost(y: np.ndarray, positive: np.ndarray, cost: CostModel) -> float:
    """Mean cost per row of the decisions ``positive`` under ``cost``."""
    fn = np.sum((y == 1) & ~positive)
    fp = np.sum((y == 0) & positive)
    return float((fn * cost.false_negative + fp * cost.false_positive) / max(len(y), 1))


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """scikit-learn's balanced accuracy: the mean recall over the classes ``y`` holds. A batch
    may lack classes the model predicts (a monitored batch of faults only); scikit-learn then
    warns on the console, which a user reads as an error, so that warning is silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(skm.balanced_accuracy_score(y, pred))


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the bin-weighted gap between predicted and observed rates."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def sensitivity_at_specificity(y: np.ndarray, p: np.ndarray, specificity: float) -> float:
    fpr, tpr, _ = skm.roc_curve(y, p)
    allowed = fpr <= (1.0 - specificity) + 1e-12
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def binary_metrics(spec: DomainSpec, y: np.ndarray, p: np.ndarray, ctx: EvalContext) -> dict[str, float]:
    decided = p >= ctx.threshold
    auc = float(skm.roc_auc_score(y, p))
    out = {
        "roc_auc": auc,
        "gini": 2 * auc - 1,
        "ks": float(stats.ks_2samp(p[y == 1], p[y == 0]).statistic),
        "average_precision": float(skm.average_precision_score(y, p)),
        "brier": float(skm.brier_score_loss(y, p)),
        "log_loss": float(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "calibration_error": calibration_error(y, p),
        "sensitivity_at_specificity": sensitivity_at_specificity(y, p, spec.target_specificity),
        "accuracy": float(skm.accuracy_score(y, decided)),
        # at the decision threshold: the share of positives flagged, and of negatives left alone
        "sensitivity": float(decided[y == 1].mean()) if (y == 1).any() else float("nan"),
        "specificity": float(1 - decided[y == 0].mean()) if (y == 0).any() else float("nan"),
        "f1_macro": float(skm.f1_score(y, decided, average="macro")),
        "balanced_accuracy": balanced_accuracy(y, decided),
    }
    if spec.cost is not None:
        out["expected_cost"] = expected_cost(y, decided, spec.cost)
    return out


def detection_delay(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, order: np.ndarray, normal: int = 0) -> float:
    """Mean number of samples from fault onset to the first alarm, over faulty runs that raised
    one (label ``normal`` is normal operation). NaN when no faulty run raised an alarm."""
    delays = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        idx = idx[np.argsort(order[idx], kind="stable")]
        faulty = np.flatnonzero(y[idx] != normal)
        if not len(faulty):
            continue
        onset = faulty[0]
        alarms = np.flatnonzero(pred[idx][onset:] != normal)
        if len(alarms):
            delays.append(float(alarms[0]))
    return float(np.mean(delays)) if delays else float("nan")


def multiclass_metrics(spec: DomainSpec, y: np.ndarray, proba: np.ndarray, ctx: EvalContext) -> dict[str, float]:
    pred = alarm_classes(proba, ctx.normal if ctx.alarm is not None else None, ctx.alarm)
    labels = np.arange(proba.shape[1])
    clipped = np.clip(proba, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    out = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1_macro": float(skm.f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
        "balanced_accuracy": balanced_accuracy(y, pred),
        "log_loss": float(skm.log_loss(y, clipped, labels=labels)),
    }
    if {"fault_detection_rate", "false_alarm_rate", "detection_delay"} & set(spec.metrics):
        faulty, normal = y != ctx.normal, y == ctx.normal
        alarm = pred != ctx.normal
        out["fault_detection_rate"] = float(alarm[faulty].mean()) if faulty.any() else float("nan")
        out["false_alarm_rate"] = float(alarm[normal].mean()) if normal.any() else float("nan")
        if ctx.groups is not None and ctx.order is not None:
            out["detection_delay"] = detection_delay(y, pred, ctx.groups, ctx.order, ctx.normal)
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {
        "r2": float(skm.r2_score(y, pred)),
        "rmse": float(skm.root_mean_squared_error(y, pred)),
        "mae": float(skm.mean_absolute_error(y, pred)),
    }


def evaluate(spec: DomainSpec, y: np.ndarray, scores: np.ndarray, ctx: EvalContext | None = None) -> dict[str, float]:
    """All metrics that apply to the task (the spec's and the standard ones)."""
    ctx = ctx or EvalContext()
    if spec.task == "binary":
        return binary_metrics(spec, y, scores, ctx)
    if spec.task == "multiclass":
        return multiclass_metrics(spec, y, scores, ctx)
    return regression_metrics(y, scores)


def primary_score(
    spec: DomainSpec, y: np.ndarray, scores: np.ndarray, threshold: float = 0.5, normal: int | None = None
) -> float:
    """The primary metric oriented so that higher is better (for model selection and the
    champion comparison); ``threshold`` for metrics that need a decision: binary, and multiclass
    under the alarm rule when ``normal`` (the normal class's index) is given."""
    metric = spec.primary_metric
    alarm = threshold if normal is not None else None
    if metric == "roc_auc":
        value = float(skm.roc_auc_score(y, scores))
    elif spec.task == "multiclass" and metric in ARGMAX_METRICS:  # the one metric, not all of them
        value = ARGMAX_METRICS[metric](y, alarm_classes(scores, normal, alarm), np.arange(scores.shape[1]))
    elif spec.task == "regression":
        value = regression_metrics(y, scores)[metric]
    else:
        value = evaluate(spec, y, scores, EvalContext(threshold=threshold, normal=normal or 0, alarm=alarm))[metric]
    return value if spec.higher_is_better(metric) else -value


# Multiclass metrics of a decision (arg-max or the alarm rule), computed as ``multiclass_metrics`` computes them:
# the primary metric is scored often (every trial, every bootstrap round).
ARGMAX_METRICS = {
    "accuracy": lambda y, pred, labels: float(skm.accuracy_score(y, pred)),
    "f1_macro": lambda y, pred, labels: float(skm.f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
    "balanced_accuracy": lambda y, pred, labels: balanced_accuracy(y, pred),
}
