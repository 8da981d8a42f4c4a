"""Calibration of a binary model's probabilities: sigmoid (Platt) or isotonic, or none; and, for the
estimate without labels only (``fit_estimation_map``), of a multiclass or refitted model's
probabilities, or a regression model's errors given its prediction.

Fitted on the validation split only: the holdout stays the deploy gate's. Which method (if any)
is used is decided out of fold: each method is fitted on four fifths of the validation rows
and scored (Brier) on the fifth it did not see, five times; a method is used only when its
out-of-fold Brier score beats the raw scores', and then fitted on every validation row. The
raw and calibrated Brier score and calibration error are kept for the run's record.

The fitted map travels in the bundle's ``meta.json`` (``lepton.core.scoring.calibrated`` applies it):
sigmoid as two numbers, isotonic as its breakpoints, no pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold

from lepton.core.scoring import apply_calibration, logit
from lepton.tasks.metrics import calibration_error

METHODS = ("sigmoid", "isotonic")
FOLDS = 5
SPREAD_BINS = 10  # bins of the validation scores the calibration's uncertainty is kept for
SPREAD_MIN_ROWS = 100
MIN_ROWS = 200  # fewer validation rows than this: too few to fit a calibration map and check it
RESIDUAL_BINS = 20  # regression: the predictions cut at their quantiles, at most 20 bins ...
RESIDUAL_BIN_ROWS = 50  # ... of 50 rows or more, so 100 validation rows at least ...
RESIDUAL_MIN_ROWS = 100
RESIDUAL_LEVELS = 200  # ... and each bin's residuals kept as 200 evenly spaced quantiles


@dataclass(frozen=True)
class Calibration:
    """The chosen map (``state`` None: the raw scores are kept) and the evidence for it."""

    method: str  # "none" | "sigmoid" | "isotonic"
    state: dict[str, Any] | None
    brier: dict[str, float] = field(default_factory=dict)  # out of fold, per method and "raw"
    calibration_error: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def metrics(self) -> dict[str, float]:
        """For the MLflow run: validation Brier and calibration error, raw and per method."""
        out = {f"valid_brier_{name}": value for name, value in self.brier.items()}
        return {**out, **{f"valid_calibration_error_{name}": v for name, v in self.calibration_error.items()}}


def fit_map(method: str, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Fit one calibration map of scores ``p`` to outcomes ``y`` (0/1)."""
    if method == "sigmoid":  # Platt: a logistic regression on the score's log-odds
        model = LogisticRegression(C=1e6).fit(logit(p).reshape(-1, 1), y)
        return {"method": "sigmoid", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}
    if method == "isotonic":
        model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
        return {"method": "isotonic", "x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
    raise ValueError(f"unknown calibration method {method!r}")


def fit_calibration(y: np.ndarray, p: np.ndarray, seed: int = 0) -> Calibration:
    """Choose and fit the calibration of validation scores ``p`` for outcomes ``y``."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    counts = np.bincount(y, minlength=2)
    if len(y) < MIN_ROWS or counts.min() < FOLDS:
        return Calibration("none", None, reason=f"not calibrated: {len(y)} validation rows are too few to check it")
    brier = {"raw": float(brier_score_loss(y, p))}
    error = {"raw": calibration_error(y, p)}
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    for method in METHODS:
        out_of_fold = np.empty_like(p)
        for fit_rows, check_rows in folds.split(p.reshape(-1, 1), y):
            state = fit_map(method, y[fit_rows], p[fit_rows])
            out_of_fold[check_rows] = apply_calibration(state, p[check_rows])
        brier[method] = float(brier_score_loss(y, out_of_fold))
        error[method] = calibration_error(y, out_of_fold)
    best = min(METHODS, key=lambda m: brier[m])
    summary = ", ".join(f"{name} {value:.5f}" for name, value in brier.items())
    if brier[best] >= brier["raw"]:
        return Calibration("none", None, brier, error, f"not calibrated: out-of-fold Brier {summary}")
    return Calibration(
        best, fit_map(best, y, p), brier, error, f"{best} calibration (validation, out-of-fold Brier {summary})"
    )


def fit_estimation_map(y: np.ndarray, scores: np.ndarray, seed: int = 0) -> dict[str, Any] | None:
    """The map ``lepton.tasks.estimate`` draws labels through where the served scores cannot be
    drawn from as they are, fitted on the validation scores of the model before any refit (the
    refitted one has seen those rows); None where nothing beats the raw scores or the rows are
    too few:

    - class probabilities (rows): one map per class, its probability against the rest, each
      chosen out of fold as ``fit_calibration`` chooses, the rows then summing to 1;
    - a binary model refitted on its validation rows: ``fit_calibration``'s map;
    - regression (``task="regression"``): ``fit_residual_map``.

    It leaves the served scores and decisions alone: the estimate needs probabilities that are
    right on average, the service needs the model's own ranking and arg-max."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        fitted = fit_calibration(y.astype(int), scores, seed)
        return None if fitted.state is None else {**fitted.state, "reason": fitted.reason}
    maps = [fit_calibration((y == c).astype(int), scores[:, c], seed) for c in range(scores.shape[1])]
    if all(m.state is None for m in maps):
        return None
    methods = [m.method for m in maps]
    kept = ", ".join(f"{sum(m == name for m in methods)} {name}" for name in ("sigmoid", "isotonic", "none"))
    return {
        "method": "one_vs_rest",
        "classes": [m.state for m in maps],
        "reason": f"one map per class against the rest on validation ({kept})",
    }


def fit_calibration_spread(y: np.ndarray, served: np.ndarray, p: np.ndarray) -> dict[str, Any] | None:
    """How surely the validation rows pin down a binary model's probability at each score: the
    served validation scores cut at their deciles (``SPREAD_BINS``), and per bin the variance
    of its positive rate, r (1 - r) / n (floored by the probabilities' mean, q (1 - q) / n, so
    that a bin without a positive is not taken as certain). ``p``: the probabilities the
    estimate draws from (the served scores, or through its map). ``lepton.tasks.estimate`` adds
    what that uncertainty moves a batch's ROC AUC by to its band: a batch that gathers where few
    validation rows lie (about the threshold, say) is known less well than one spread wide.
    None with fewer than ``SPREAD_MIN_ROWS`` rows."""
    y, served, p = (np.asarray(a, dtype=np.float64) for a in (y, served, p))
    if len(y) < SPREAD_MIN_ROWS:
        return None
    edges = np.unique(np.quantile(served, np.linspace(0, 1, SPREAD_BINS + 1)[1:-1], method="inverted_cdf"))
    bins = np.searchsorted(edges, served, side="right")
    rows = np.bincount(bins, minlength=len(edges) + 1)
    taken = np.maximum(rows, 1)
    rate = np.bincount(bins, weights=y, minlength=len(rows)) / taken
    mean = np.bincount(bins, weights=p, minlength=len(rows)) / taken
    variance = np.where(rows > 0, np.maximum(rate * (1 - rate), mean * (1 - mean)) / taken, 0.25)
    return {"edges": edges.tolist(), "variance": variance.tolist()}


def fit_residual_map(y: np.ndarray, prediction: np.ndarray) -> dict[str, Any] | None:
    """A regression model's errors as a function of what it predicted (direct loss estimation
    with the prediction as the one input): the validation predictions cut at their quantiles
    into up to ``RESIDUAL_BINS`` bins of ``RESIDUAL_BIN_ROWS`` rows or more, and in each bin the residuals (label -
    prediction) as evenly spaced quantiles. The estimate draws a label for a batch row as its
    prediction plus a residual from its bin, so a batch that moves to where the model errs more
    is estimated worse. What it assumes: the error given the prediction is what it was on
    validation; a shift that changes the error at the same prediction (concept shift) it cannot
    see. None with fewer than ``RESIDUAL_MIN_ROWS`` validation rows."""
    y, prediction = np.asarray(y, dtype=np.float64), np.asarray(prediction, dtype=np.float64)
    if len(y) < RESIDUAL_MIN_ROWS:
        return None
    residual = y - prediction
    count = max(1, min(RESIDUAL_BINS, len(y) // RESIDUAL_BIN_ROWS))
    edges = np.unique(np.quantile(prediction, np.linspace(0, 1, count + 1)[1:-1]))
    bins = np.searchsorted(edges, prediction, side="right")
    levels = (np.arange(RESIDUAL_LEVELS) + 0.5) / RESIDUAL_LEVELS  # each stands for as many rows
    quantiles = [np.quantile(residual[bins == b], levels).tolist() for b in range(len(edges) + 1)]
    return {
        "method": "residuals",
        "edges": edges.tolist(),
        "quantiles": quantiles,
        "reason": f"the validation residuals given the prediction ({len(edges) + 1} bins of {len(y):,} rows)",
    }
