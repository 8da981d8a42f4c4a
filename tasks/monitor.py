"""Monitor: reference statistics at training time, and drift of new data against them.

The reference is stored with the model version, so monitoring never re-reads training data. Per
numeric feature it keeps quantile-bin edges and proportions (for the population stability index)
and a sketch of ``LEVELS`` quantiles (for a Kolmogorov-Smirnov test against the training
distribution); per categorical feature the level proportions (PSI and a chi-squared test); and
the same for the model's output on the holdout (prediction drift).

Drift of a batch is one pass per column: ``searchsorted`` into the stored edges and quantiles and
a ``bincount``, no sort and no copy of the training data, so a million rows by fifty columns take
about a second. Columns are spread over threads (NumPy releases the GIL), or over a Dask
cluster's workers when one is given.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE
from scipy import stats

from lepton.core.scoring import alarm_classes
from lepton.domains.spec import DomainSpec, DriftSpec, Dtype

EPSILON = 1e-4  # floor for empty bins, so PSI stays finite
QUANTILES = 1000  # the KS sketch: quantiles at 0, 1/1000, ..., 1 of the training values (error <= 0.001)
# and finer in the tails, where a histogram's outer bins are small: steps of 1e-5 in the outer
# 0.1% and of 1e-4 up to 1% (Evidently's equal-width PSI reads outer-bin shares from the sketch)
_TAIL = np.r_[np.arange(1, 100) / 100_000, np.arange(11, 100) / 10_000]
LEVELS = np.unique(np.r_[np.arange(QUANTILES + 1) / QUANTILES, _TAIL, 1 - _TAIL])
MAX_LEVELS = 50  # categorical levels kept by name; the rest are "other"
PREDICTION = "prediction"  # the model's output, monitored like a feature


# ---- reference statistics (training time) ------------------------------------------------------
def numeric_reference(values: np.ndarray, bins: int, rows: int) -> dict[str, Any]:
    """Statistics of one numeric column (``values``: the non-missing ones, of ``rows``)."""
    values = values[~np.isnan(values)]
    if len(values):
        ordered = np.sort(values)
        edges = np.unique(np.quantile(ordered, np.linspace(0, 1, bins + 1)[1:-1]))
        # the sketch's values at 8 significant digits (a smaller reference), the shares computed
        # at those very values (so exact there), rounded to 1e-9 (far below any KS threshold);
        # the decile edges join the grid, so one ranking pass serves PSI and KS
        grid = np.unique(np.r_[_significant(np.quantile(ordered, LEVELS)), edges])
        below = np.round(np.searchsorted(ordered, grid, side="left") / len(values), 9)
        at = np.round(np.searchsorted(ordered, grid, side="right") / len(values), 9)
    else:
        edges = grid = below = at = np.array([])
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "proportions": _bin_proportions(values, edges, rows),
        # the KS sketch: quantile values with the training CDF just below and at each (exact,
        # so ties and discrete columns are handled)
        "quantiles": grid.tolist(),
        "cdf_below": below.tolist(),
        "cdf_at": at.tolist(),
        "count": len(values),
        "missing": 1 - len(values) / max(rows, 1),
    }


def _significant(values: np.ndarray, digits: int = 8) -> np.ndarray:
    return np.array([float(f"{v:.{digits}g}") for v in values.tolist()])


def categorical_reference(values: pl.Series) -> dict[str, Any]:
    total = max(len(values), 1)
    counts = values.drop_nulls().cast(pl.String).value_counts(sort=True).head(MAX_LEVELS)
    levels = {str(k): float(v / total) for k, v in zip(counts[counts.columns[0]], counts["count"], strict=True)}
    return {"kind": "categorical", "levels": levels, "count": len(values), "missing": values.null_count() / total}


def reference_statistics(frame: pl.DataFrame, spec: DomainSpec) -> dict[str, Any]:
    """Per feature: quantile bin edges, proportions and the KS quantiles (numeric) or level
    proportions (categorical), each with the share of missing values."""
    features: dict[str, Any] = {}
    for column in spec.feature_columns:
        if column.dtype is Dtype.DATETIME:
            continue  # calendar time always moves on; its drift says nothing about the data
        if column.dtype is Dtype.CATEGORY:
            features[column.name] = categorical_reference(frame[column.name])
        else:
            values = _numbers(frame[column.name])
            features[column.name] = numeric_reference(values, spec.drift.bins, frame.height)
    return {"rows": frame.height, "features": features}


def prediction_reference(
    spec: DomainSpec, scores: np.ndarray, classes: list[str], normal: int | None = None, threshold: float | None = None
) -> dict[str, Any]:
    """The model's output on the holdout, as the monitor will see it: the positive-class
    probability (binary), the value (regression) or the decided class (multiclass: arg-max, or
    the alarm rule with ``normal`` and ``threshold``)."""
    if spec.task == "multiclass":
        decided = np.asarray(classes, dtype=object)[alarm_classes(scores, normal, threshold)]
        return categorical_reference(pl.Series(PREDICTION, decided))
    values = np.asarray(scores, dtype=np.float64)
    return numeric_reference(values, spec.drift.bins, len(values))


def _numbers(values: pl.Series) -> np.ndarray:
    return values.cast(pl.Float64).to_numpy()  # nulls become NaN (NaN is missing too); no copy without them


def _bin_proportions(numbers: np.ndarray, edges: np.ndarray, rows: int) -> list[float]:
    counts = np.bincount(np.searchsorted(edges, numbers, side="right"), minlength=len(edges) + 1)
    return (counts / max(rows, 1)).tolist()


# ---- drift of a batch --------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureDrift:
    """One column's drift: PSI and a two-sample test (``ks`` or ``chi2``) with its p-value, and
    the binned distributions behind them (for the report)."""

    name: str
    kind: str
    psi: float
    test: str
    statistic: float
    p_value: float
    drifted: bool
    labels: list[str] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    current: list[float] = field(default_factory=list)

    def score(self, method: str) -> float:
        """What the drift decision reads: PSI, or 1 - p for the test (higher is more drift)."""
        return self.psi if method == "psi" else 1.0 - self.p_value


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(np.clip(expected, 0, 1), EPSILON)
    a = np.maximum(np.clip(actual, 0, 1), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


CELLS = 1 << 16  # uniform cells between the first and last quantile, for ranking without a search


def grid_rank(numbers: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``np.searchsorted(grid, numbers, side="right")`` (how many grid values are <= each number)
    for a sorted, unique ``grid``, about four times faster on large arrays: each number's uniform
    cell is looked up in a table, and only numbers in the few cells holding a grid value are
    searched."""
    return _ranked(numbers, grid)[0]


def _ranked(numbers: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The ranks, and which numbers were searched (``None``: all): only those can equal a grid
    value, as every grid value lies in a searched cell."""
    if len(grid) < 2 or len(numbers) < 10_000:
        return np.searchsorted(grid, numbers, side="right"), None
    low, high = grid[0], grid[-1]
    scale = CELLS / (high - low)
    starts = low + np.arange(CELLS) / scale  # each cell's lower bound
    table = np.searchsorted(grid, starts, side="right").astype(np.int32)
    # a cell is ambiguous when a grid value lies inside it (the rank changes within the cell);
    # the first and last cells hold the grid's ends, so numbers clipped into them (out of range,
    # infinite) are searched too
    ambiguous = np.zeros(CELLS, dtype=bool)
    inside = np.minimum(((grid - low) * scale).astype(np.int64), CELLS - 1)
    ambiguous[inside] = True
    ambiguous[np.minimum(inside + 1, CELLS - 1)] = True  # rounding at cell borders
    with np.errstate(invalid="ignore"):  # infinities and far-out numbers: clipped, then searched
        cell = ((numbers - low) * scale).astype(np.int32)
    np.clip(cell, 0, CELLS - 1, out=cell)
    rank = table[cell]
    unsure = np.flatnonzero(ambiguous[cell])
    rank[unsure] = np.searchsorted(grid, numbers[unsure], side="right")
    return rank, unsure


def _counts(numbers: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per grid value: how many numbers are below it, at most it; and how many numbers have each
    rank (0 .. len(grid))."""
    rank, searched = _ranked(numbers, grid)
    per_rank = np.bincount(rank, minlength=len(grid) + 1)
    below = np.cumsum(per_rank)[: len(grid)]  # rank <= k: x < grid[k]
    ranks, values = (rank, numbers) if searched is None else (rank[searched], numbers[searched])
    equal = (ranks > 0) & (grid[np.maximum(ranks - 1, 0)] == values)
    at_most = below + np.bincount(ranks[equal] - 1, minlength=len(grid))
    return below, at_most, per_rank


def _ks_statistic(reference: Mapping[str, Any], below: np.ndarray, at_most: np.ndarray, n: int) -> tuple[float, float]:
    """Two-sample KS statistic against the training values, from the stored sketch: the largest
    gap between the two CDFs at each stored quantile value, from either side (exact there;
    between two quantiles of a continuous column off by at most 1/QUANTILES). p-value: the
    asymptotic two-sample distribution (``scipy.stats.ks_2samp(method="asymp")``; the limiting
    Kolmogorov distribution from 10,000 effective rows, where the exact one is slow)."""
    m = int(reference.get("count", 0))
    if n == 0 or m == 0 or len(below) == 0:
        return math.nan, math.nan
    statistic = float(
        max(
            np.max(np.abs(below / n - np.asarray(reference["cdf_below"]))),
            np.max(np.abs(at_most / n - np.asarray(reference["cdf_at"]))),
        )
    )
    effective = n * m / (n + m)
    if effective > 10_000:
        return statistic, float(stats.kstwobign.sf(statistic * math.sqrt(effective)))
    return statistic, float(stats.kstwo.sf(statistic, round(effective)))


@dataclass(frozen=True)
class Span:
    """A numeric column's values seen so far: how many are present (not missing), how many of
    those are finite, and the finite ones' extremes. Adds up over partitions."""

    present: int = 0
    finite: int = 0
    low: float = math.inf
    high: float = -math.inf

    @classmethod
    def of(cls, numbers: np.ndarray) -> Span:
        """The span of ``numbers`` (present values: NaN already left out)."""
        finite = _finite(numbers) if len(numbers) else numbers
        if not len(finite):
            return cls(len(numbers), 0)
        return cls(len(numbers), len(finite), float(finite.min()), float(finite.max()))

    def __add__(self, other: Span) -> Span:
        return Span(self.present + other.present, self.finite + other.finite,
                    min(self.low, other.low), max(self.high, other.high))  # fmt: skip


@dataclass(frozen=True)
class NumericCounts:
    """What a numeric column's drift reads, in a form that adds up over partitions: its rows,
    the values present and how many are +inf, and per value of the counting grid (``NumericPlan``)
    how many values lie below it and how many at most at it."""

    rows: int
    present: int
    infinite: int
    below: np.ndarray
    at_most: np.ndarray

    def __add__(self, other: NumericCounts) -> NumericCounts:
        return NumericCounts(self.rows + other.rows, self.present + other.present, self.infinite + other.infinite,
                             self.below + other.below, self.at_most + other.at_most)  # fmt: skip


@dataclass(frozen=True)
class NumericPlan:
    """How one numeric column is counted and decided: the grid its values are counted on (the
    reference's KS sketch joined by the PSI bins' edges), and which PSI bins. Made from the
    reference (and, for Sturges' bins, the whole batch's ``Span``), so every partition counts on
    the same grid."""

    ranked: np.ndarray  # sorted, unique: the values counted at
    grid: np.ndarray  # the KS sketch's values (empty: no KS test)
    edges: np.ndarray  # the PSI bins' edges (deciles of training, or Sturges' equal widths)
    sturges: bool

    @classmethod
    def of(cls, reference: Mapping[str, Any], rule: DriftSpec, span: Span | None = None) -> NumericPlan:
        """The plan for a batch whose values span ``span``; only Sturges' bins need it (without
        it, their plan cannot be made: ``needs_span``)."""
        grid = np.asarray(reference.get("quantiles") or [], dtype=np.float64)
        edges = np.asarray(reference["edges"], dtype=np.float64)
        if not ("cdf_at" in reference and len(grid)):  # a reference from before the KS sketch
            return cls(edges, np.array([]), edges, False)
        if rule.psi_bins == "sturges" and span is not None and span.finite:  # Evidently's bins, of finite values
            bounds = sturges_edges(reference, span.low, span.high, span.finite)
            return cls(np.union1d(grid, bounds), grid, bounds, True)
        return cls(np.union1d(grid, edges), grid, edges, False)

    @staticmethod
    def needs_span(rule: DriftSpec) -> bool:
        """Whether the bins depend on the batch's own range (Sturges'), so a batch in many files
        is counted in a second pass, once the first has found the range."""
        return rule.psi_bins == "sturges"

    def count(self, values: np.ndarray) -> NumericCounts:
        """The counts of ``values`` (NaN for missing) on this plan's grid."""
        numbers = _present(values)
        if len(self.ranked) and len(numbers):
            below, at_most, _ = _counts(numbers, self.ranked)
        else:
            below = at_most = np.zeros(len(self.ranked), dtype=np.int64)
        return NumericCounts(len(values), len(numbers), int(np.count_nonzero(numbers == np.inf)), below, at_most)

    def decide(self, name: str, reference: Mapping[str, Any], counts: NumericCounts, rule: DriftSpec) -> FeatureDrift:
        rows = max(counts.rows, 1)
        statistic, p_value = math.nan, math.nan
        if len(self.grid):
            at_grid = np.searchsorted(self.ranked, self.grid)
            statistic, p_value = _ks_statistic(
                reference, counts.below[at_grid], counts.at_most[at_grid], counts.present
            )
        at_edges = counts.below[np.searchsorted(self.ranked, self.edges)]
        if self.sturges:
            # np.histogram's bins, [a, b) and the last [a, b]: -inf is below every edge (cancels),
            # +inf is above the last
            bins = np.diff(np.r_[at_edges[:-1], counts.present - counts.infinite])
            expected, actual, labels = sturges_bins(reference, self.edges, bins, rows)
            psi = float(np.sum((actual - expected) * np.log(actual / expected)))
            return _decided(name, "numeric", expected, actual, "ks", statistic, p_value, rule, labels, psi)
        # bin j holds the values with j edges at or below them
        bins = np.diff(np.r_[0, at_edges, counts.present])
        actual = np.array([*(bins / rows), 1 - counts.present / rows])
        expected = np.array([*reference["proportions"], reference["missing"]])
        edges = self.edges
        labels = [f"≤ {edges[0]:.4g}" if len(edges) else "all"]
        labels += [f"{a:.4g} – {b:.4g}" for a, b in itertools.pairwise(edges)]
        labels += [f"> {edges[-1]:.4g}"] if len(edges) else []
        return _decided(name, "numeric", expected, actual, "ks", statistic, p_value, rule, [*labels, "missing"])


def numeric_drift(name: str, reference: Mapping[str, Any], values: np.ndarray, rule: DriftSpec) -> FeatureDrift:
    plan = NumericPlan.of(reference, rule, Span.of(_present(values)) if NumericPlan.needs_span(rule) else None)
    return plan.decide(name, reference, plan.count(values), rule)


def _present(values: np.ndarray) -> np.ndarray:
    """The values that are not missing (no copy when none is)."""
    missing = np.isnan(values)
    return values[~missing] if missing.any() else values


def _finite(numbers: np.ndarray) -> np.ndarray:
    """The finite values (Evidently drops infinities): no copy when the extremes are finite."""
    return numbers if np.isfinite([numbers.min(), numbers.max()]).all() else numbers[np.isfinite(numbers)]


def reference_cdf(reference: Mapping[str, Any], points: np.ndarray) -> np.ndarray:
    """The share of training values below each point, from the stored sketch: exact at the
    stored quantiles, linear between two neighbours (off by at most 1/QUANTILES for a
    continuous column); 0 below the training minimum, 1 above its maximum."""
    grid = np.asarray(reference["quantiles"], dtype=np.float64)
    below = np.asarray(reference["cdf_below"], dtype=np.float64)
    at = np.asarray(reference["cdf_at"], dtype=np.float64)
    k = np.searchsorted(grid, points, side="left")  # grid[k - 1] < point <= grid[k]
    last = len(grid) - 1
    upper = np.minimum(k, last)
    lower = np.maximum(k - 1, 0)
    span = grid[upper] - grid[lower]
    with np.errstate(invalid="ignore", divide="ignore"):
        step = np.where(span > 0, (points - grid[lower]) / span, 0.0)
    shares = at[lower] + (below[upper] - at[lower]) * step
    shares = np.where(grid[upper] == points, below[upper], shares)
    return np.clip(np.where(k == 0, 0.0, np.where(k > last, 1.0, shares)), 0.0, 1.0)


def sturges_edges(reference: Mapping[str, Any], low: float, high: float, count: int) -> np.ndarray:
    """``np.histogram_bin_edges(training and new values, "sturges")`` from the training sketch's
    ends and count and the new values' ``low``, ``high`` and ``count``."""
    grid = reference["quantiles"]
    low, high = min(grid[0], low), max(grid[-1], high)
    width = (high - low) / (math.log2(int(reference["count"]) + count) + 1.0)
    if width > 0:
        return np.linspace(low, high, math.ceil((high - low) / width) + 1)
    return np.array([low - 0.5, high + 0.5])  # one value on both sides: numpy's one bin around it


def sturges_bins(
    reference: Mapping[str, Any], edges: np.ndarray, counts: np.ndarray, rows: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Evidently's PSI bins (``get_binned_data``): equal-width Sturges bins (``edges``) over the
    training and the new values together, the batch's ``counts`` in them, the training shares
    read from the sketch (its minimum, maximum and CDF), and an empty bin on either side floored
    as Evidently does. A missing-value bin (infinities too) is added when either side has
    missing values (Evidently drops them)."""
    present = int(counts.sum())
    actual = counts / max(present, 1)
    expected = np.diff(np.r_[reference_cdf(reference, edges[:-1]), 1.0])
    labels = [f"{a:.4g} – {b:.4g}" for a, b in itertools.pairwise(edges)]
    missing_now, missing_then = 1 - present / rows, float(reference.get("missing", 0.0))
    if missing_now > 0 or missing_then > 0:
        actual = np.r_[actual * (1 - missing_now), missing_now]
        expected = np.r_[expected * (1 - missing_then), missing_then]
        labels.append("missing")
    return _evidently_floor(expected), _evidently_floor(actual), labels


def _evidently_floor(shares: np.ndarray) -> np.ndarray:
    """Empty bins get 1e-4, or a millionth of the smallest share when that is at most 1e-4."""
    shares = np.clip(shares, 0.0, 1.0)
    smallest = shares[shares > 0].min()
    return np.where(shares > 0, shares, smallest / 1e6 if smallest <= 1e-4 else 1e-4)


@dataclass(frozen=True)
class LevelCounts:
    """What a categorical column's drift reads, adding up over partitions: its rows, the missing
    values, and how many rows hold each of the reference's levels (any other level is "other")."""

    rows: int
    missing: int
    levels: np.ndarray

    @classmethod
    def of(cls, reference: Mapping[str, Any], values: np.ndarray | pl.Series) -> LevelCounts:
        series = values if isinstance(values, pl.Series) else pl.Series("values", values, dtype=pl.String, strict=False)
        counts = series.drop_nulls().cast(pl.String).value_counts()
        seen = dict(zip(counts[counts.columns[0]].to_list(), counts["count"].to_list(), strict=True))
        observed = np.array([seen.get(level, 0) for level in reference["levels"]], dtype=np.int64)
        return cls(len(series), series.null_count(), observed)

    def __add__(self, other: LevelCounts) -> LevelCounts:
        return LevelCounts(self.rows + other.rows, self.missing + other.missing, self.levels + other.levels)

    def decide(self, name: str, reference: Mapping[str, Any], rule: DriftSpec) -> FeatureDrift:
        rows = max(self.rows, 1)
        observed = self.levels.astype(np.float64)
        observed = np.array([*observed, self.rows - self.missing - observed.sum(), self.missing])
        known = sum(reference["levels"].values())
        expected = np.array([*reference["levels"].values(), 1 - known - reference["missing"], reference["missing"]])
        actual = observed / rows
        # chi-squared of the batch's counts against the training proportions (empty bins floored)
        used = (expected > 0) | (observed > 0)  # a bin empty on both sides says nothing
        weights = np.maximum(np.clip(expected[used], 0, 1), EPSILON)
        result = stats.chisquare(observed[used], weights / weights.sum() * observed.sum())
        labels = [*reference["levels"], "other", "missing"]
        return _decided(
            name, "categorical", expected, actual, "chi2", float(result.statistic), float(result.pvalue), rule, labels
        )


def categorical_drift(
    name: str, reference: Mapping[str, Any], values: np.ndarray | pl.Series, rule: DriftSpec
) -> FeatureDrift:
    return LevelCounts.of(reference, values).decide(name, reference, rule)


def _decided(
    name: str,
    kind: str,
    expected: np.ndarray,
    actual: np.ndarray,
    test: str,
    statistic: float,
    p_value: float,
    rule: DriftSpec,
    labels: list[str],
    psi: float | None = None,
) -> FeatureDrift:
    psi = _psi(expected, actual) if psi is None else psi
    drifted = psi > rule.psi_threshold if rule.method == "psi" else bool(p_value < rule.p_value)
    return FeatureDrift(name, kind, psi, test, statistic, p_value, drifted, labels, expected.tolist(), actual.tolist())


def column_drift(name: str, reference: Mapping[str, Any], values: Any, rule: DriftSpec) -> FeatureDrift:
    """Drift of one column (NumPy numbers with NaN for missing, or text/None) against its reference."""
    if reference["kind"] == "categorical":
        return categorical_drift(name, reference, values, rule)
    return numeric_drift(name, reference, np.asarray(values, dtype=np.float64), rule)


@dataclass(frozen=True)
class DriftReport:
    """Drift of one batch: per feature, and of the prediction when the reference has it."""

    features: dict[str, FeatureDrift]
    rule: DriftSpec
    rows: int
    prediction: FeatureDrift | None = None

    @property
    def psi(self) -> dict[str, float]:
        return {name: d.psi for name, d in self.features.items()}

    @property
    def threshold(self) -> float:
        return self.rule.psi_threshold

    @property
    def drifted(self) -> list[str]:
        return sorted(name for name, d in self.features.items() if d.drifted)

    @property
    def max_psi(self) -> float:
        return max(self.psi.values(), default=0.0)

    @property
    def detected(self) -> bool:
        """The batch drifted, as the spec defines it (what emits ``lepton.drift.detected``)."""
        prediction = self.prediction is not None and self.prediction.drifted
        return len(self.drifted) >= self.rule.min_features or prediction

    def summary(self) -> dict[str, float]:
        out = {"drift_rows": float(self.rows), "drifted_features": float(len(self.drifted)), "psi_max": self.max_psi}
        out["drifted_share"] = len(self.drifted) / max(len(self.features), 1)
        return out

    def table(self) -> dict[str, list[Any]]:
        """One row per feature (and the model's output): PSI, the test and its p-value."""
        drifts = [*self.features.values(), *([self.prediction] if self.prediction else [])]
        return {
            "feature": [d.name for d in drifts],
            "psi": [round(d.psi, 6) for d in drifts],
            "test": [d.test for d in drifts],
            "p_value": [float(f"{d.p_value:.4g}") for d in drifts],
            "drifted": [bool(d.drifted) for d in drifts],
        }

    def metrics(self) -> dict[str, float]:
        """The summary and each feature's PSI and p-value (a monitor run's metrics)."""
        out = self.summary()
        for d in [*self.features.values(), *([self.prediction] if self.prediction else [])]:
            out[f"psi_{d.name}"] = d.psi
            out[f"{d.test}_p_{d.name}"] = d.p_value
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "rule": self.rule.model_dump(),
            "detected": self.detected,
            "drifted": self.drifted,
            "features": {name: asdict(d) for name, d in self.features.items()},
            "prediction": asdict(self.prediction) if self.prediction else None,
        }


def _column_values(frame: pl.DataFrame, name: str, reference: Mapping[str, Any]) -> Any:
    if reference["kind"] == "categorical":
        return frame[name]
    return _numbers(frame[name])


def drift_report(
    spec: DomainSpec,
    reference: dict[str, Any],
    frame: pl.DataFrame,
    predictions: Any = None,
    client: Any = None,
) -> DriftReport:
    """Drift of ``frame`` (with the recipe's derived columns, as the reference has them) against
    ``reference``; of ``predictions`` too when given and the reference has the model's output.
    Columns go to ``client``'s Dask workers when a client is given, else to local threads."""
    rule = spec.drift
    names = [name for name in reference["features"] if name in frame.columns]
    refs = [reference["features"][name] for name in names]
    if client is not None:
        columns = [_column_values(frame, name, ref) for name, ref in zip(names, refs, strict=True)]
        futures = client.map(column_drift, names, refs, columns, [rule] * len(names), pure=False)
        results = client.gather(futures)
    else:

        def one(name: str, ref: Mapping[str, Any]) -> FeatureDrift:  # the column is read in its thread
            return column_drift(name, ref, _column_values(frame, name, ref), rule)

        workers = min(len(names), os.cpu_count() or 1) if frame.height >= 100_000 else 1
        with ThreadPoolExecutor(max(workers, 1)) as pool:
            results = list(pool.map(one, names, refs))
    prediction = None
    if predictions is not None and reference.get(PREDICTION):
        prediction = column_drift(PREDICTION, reference[PREDICTION], predictions, rule)
    return DriftReport(dict(zip(names, results, strict=True)), rule, frame.height, prediction)


@task(name="monitor", cache_policy=NO_CACHE)
def monitor_task(spec: DomainSpec, reference: dict[str, Any], frame: pl.DataFrame, run_id: str) -> DriftReport:
    """Drift of ``frame`` (in the pipeline: the holdout) against the training reference, logged.

    Args:
        spec: the domain (drift thresholds).
        reference: the training reference statistics stored with the model version.
        frame: the data to check.
        run_id: the MLflow run to log drift metrics to.
    Returns:
        DriftReport: PSI and the test per feature, and the features that drifted.
    """
    from lepton.core import tracking

    report = drift_report(spec, reference, frame)
    # The summary as metrics; each feature's figures as one table (the run's metrics stay the
    # ones a person compares: a hundred psi_/ks_p_ keys would bury them).
    tracking.log_metrics(run_id, report.summary())
    tracking.log_table(run_id, report.table(), "monitor/holdout_drift.json")
    return report
