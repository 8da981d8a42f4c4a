"""Promotion you can trust: a pure decision from the gates, the latency and a paired significance
test against the champion, one promotion at a time per model, and a registration that a re-run
finds instead of repeating.

- ``decide``: the whole promotion decision as a function of what was measured (the gate and
  latency failures, the comparison with the champion); it reads and writes nothing, so every
  branch is tested without a registry. ``Decision.reasons`` are sentences, first what decided.

- ``paired_bootstrap``: the challenger's and the champion's scores on the same holdout rows,
  resampled together (whole groups for series), give the distribution of the difference in the
  primary metric; the one-sided p-value is the share of draws where the challenger is not better.
- ``promotion_lock``: an exclusive lock per registered model under ``LEPTON_HOME/locks`` held
  from the champion's scoring to the alias move, so two runs of one domain cannot both read
  champion v1 and then race to move the alias.
- ``run_key``: what makes two runs the same (data, spec, code, trial budget, search settings);
  the version a run registers carries it, so a re-run after a crash between registering and
  moving the alias finds that version and completes its promotion.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lepton.core.locks import exclusive
from lepton.core.scoring import alarm_classes
from lepton.core.timing import ATTEMPTS, MAX_SPREAD
from lepton.domains.spec import DomainSpec
from lepton.tasks.metrics import primary_score


@dataclass(frozen=True)
class Comparison:
    """Challenger minus champion on the primary metric (oriented: positive is better)."""

    delta: float
    low: float  # the one-sided lower confidence bound at the spec's level
    p_value: float
    resamples: int

    def describe(self, metric: str, level: float) -> str:
        verdict = "better" if self.p_value < level else "not significantly better"
        return (
            f"{verdict} than the champion on {metric}: difference {self.delta:+.4f}, "
            f"lower {1 - level:.0%} bound {self.low:+.4f}, p={self.p_value:.3f} "
            f"(paired bootstrap, {self.resamples} draws)"
        )


def _within(spec: DomainSpec, metric: str, value: float, bound: float) -> bool:
    return value >= bound if spec.higher_is_better(metric) else value <= bound


def gate_failures(spec: DomainSpec, metrics: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """Every gate the candidate fails and whether it is worse than the baseline, with the numbers."""
    failures = []
    for metric, bound in spec.gates.items():
        value = metrics.get(metric, float("nan"))
        if math.isnan(value) or not _within(spec, metric, value, bound):
            op = ">=" if spec.higher_is_better(metric) else "<="
            failures.append(f"gate {metric} {op} {bound}: got {value:.4f}")
    primary = spec.primary_metric
    if not _within(spec, primary, metrics[primary], baseline[primary]):
        failures.append(f"worse than the baseline on {primary}: {metrics[primary]:.4f} vs {baseline[primary]:.4f}")
    return failures


def latency_failures(spec: DomainSpec, latency: dict[str, float]) -> list[str]:
    """The latency gate on the bundle's measured single-row cost. Load only ever adds CPU time,
    so a figure within the budget passes however noisy its blocks were: the bundle costs no more
    on a quiet machine. A figure over the budget fails only when its blocks agreed; when they did
    not (another run's load), the reason says that the gate could not decide."""
    p50 = latency["latency_p50_ms"]
    if p50 <= spec.latency_budget_ms:
        return []
    over = (
        f"latency budget {spec.latency_budget_ms:g} ms: single-row p50 {p50:.2f} ms "
        f"of CPU time (wall p50 {latency['latency_wall_p50_ms']:.2f} ms)"
    )
    if latency["latency_spread"] > MAX_SPREAD:
        return [
            f"{over}, but not decided: the quietest blocks of single-row timings disagreed by "
            f"{latency['latency_spread']:.0%} after {ATTEMPTS} measurements (at most {MAX_SPREAD:.0%} to decide), "
            "so the machine's load may be what was measured; not promoted until it can be measured"
        ]
    return [over]


@dataclass(frozen=True)
class Decision:
    """Whether a version becomes the champion, and why, in sentences (first what decided)."""

    promoted: bool
    reasons: tuple[str, ...]

    @property
    def summary(self) -> str:
        """The reasons in one line, as the version's ``lepton.decision`` tag reads."""
        return "; ".join(self.reasons)


def decide(
    spec: DomainSpec,
    version: str,
    failures: list[str],
    comparison: Comparison | None,
    champion_version: str | None,
    champion_note: str | None = None,
) -> Decision:
    """Promote ``version`` when it fails no gate (``failures``: the gate and latency failures)
    and, where the champion could be scored on the same rows, beats it by the paired test at the
    spec's level. A version that already is the champion (a re-run with the same inputs) stays."""
    reasons, promoted = list(failures), not failures
    if comparison is not None:
        reasons.append(comparison.describe(spec.primary_metric, spec.promotion.level))
        promoted = promoted and comparison.p_value < spec.promotion.level
    if champion_version == version:
        promoted, reasons = True, [f"v{version} is already the champion (a re-run with the same inputs)"]
    elif promoted:
        reasons.insert(0, "passed every gate")
    if champion_note:
        reasons.append(champion_note)
    return Decision(promoted, tuple(reasons))


def version_description(spec: DomainSpec, version: str, decision: Decision) -> str:
    """A version's description: the promotion decision in words, first what was decided."""
    head = (
        f"Champion: v{version} serves {spec.name}."
        if decision.promoted
        else f"Not promoted: v{version} stays a challenger."
    )
    return "\n".join([head, "", *(f"- {reason}" for reason in decision.reasons)])


def paired_bootstrap(
    spec: DomainSpec,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    groups: np.ndarray | None = None,
    threshold: float = 0.5,
    champion_threshold: float = 0.5,
    seed: int = 0,
    normal: int | None = None,
    champion_normal: int | None = None,
) -> Comparison:
    """Resample the holdout (rows, or whole groups) and compare the two models on each draw.
    Multiclass decisions follow each side's alarm rule where its ``normal`` index is given
    (``lepton.core.scoring.alarm_classes`` at its threshold), arg-max otherwise.

    A draw is a vector of row weights (how often each row was drawn), so ROC AUC and macro-F1
    are computed from weighted counts over a sort done once: a thousand draws of a 100k-row
    holdout take about a second. Other metrics are computed on the drawn rows."""
    rng = np.random.default_rng(seed)
    n = len(y)
    if groups is not None:
        _, membership = np.unique(groups, return_inverse=True)
        n_groups = int(membership.max()) + 1
    score_a = _Scorer(spec, y, challenger, threshold, normal)
    score_b = _Scorer(spec, y, champion, champion_threshold, champion_normal)
    deltas = []
    for _ in range(spec.promotion.resamples):
        if groups is not None:
            weights = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[membership]
        else:
            weights = np.bincount(rng.integers(0, n, n), minlength=n)
        a, b = score_a(weights), score_b(weights)
        if a is not None and b is not None:
            deltas.append(a - b)
    full = np.ones(n, dtype=np.int64)
    spread = np.asarray(deltas)
    return Comparison(
        delta=float(score_a(full) - score_b(full)),
        low=float(np.quantile(spread, spec.promotion.level)),
        p_value=float((spread <= 0).mean()),
        resamples=len(spread),
    )


class _Scorer:
    """The primary metric (higher is better) of fixed scores under row weights."""

    def __init__(
        self, spec: DomainSpec, y: np.ndarray, scores: np.ndarray, threshold: float, normal: int | None = None
    ) -> None:
        self.spec, self.y, self.scores, self.threshold, self.normal = spec, y, scores, threshold, normal
        self.kind = "rows"
        if spec.primary_metric == "roc_auc" and spec.task == "binary":
            self.kind = "auc"
            _, self.ties = np.unique(scores, return_inverse=True)  # ranks, equal scores sharing one
            self.levels = int(self.ties.max()) + 1
            self.positive = (y == 1).astype(np.float64)
        elif spec.primary_metric == "f1_macro" and spec.task == "multiclass":
            self.kind = "f1"
            self.classes = scores.shape[1]
            decided = alarm_classes(scores, normal, threshold if normal is not None else None)
            self.cells = y.astype(np.int64) * self.classes + decided

    def __call__(self, weights: np.ndarray) -> float | None:
        if self.kind == "auc":
            pos = np.bincount(self.ties, weights=weights * self.positive, minlength=self.levels)
            neg = np.bincount(self.ties, weights=weights * (1 - self.positive), minlength=self.levels)
            if pos.sum() == 0 or neg.sum() == 0:
                return None  # a draw with one class says nothing about ranking
            below = np.cumsum(neg) - neg
            return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))
        if self.kind == "f1":
            k = self.classes
            confusion = np.bincount(self.cells, weights=weights, minlength=k * k).reshape(k, k)
            hits, truth, said = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
            denominator = truth + said
            f1 = np.divide(2 * hits, denominator, out=np.zeros(k), where=denominator > 0)
            return float(f1.mean())
        rows = np.repeat(np.arange(len(self.y)), weights)
        if self.spec.task != "regression" and len(np.unique(self.y[rows])) < 2:
            return None
        return primary_score(self.spec, self.y[rows], self.scores[rows], self.threshold, self.normal)


@contextlib.contextmanager
def promotion_lock(home: Path, model_name: str, database_url: str | None = None) -> Iterator[None]:
    """Hold the model's promotion lock (blocking, ``lepton.core.locks.exclusive``): on the PostgreSQL
    server at ``database_url`` when given (runs on several machines), else a file lock under
    ``home``; a crashed run never wedges it."""
    with exclusive(home, model_name, database_url):
        yield


def run_key(spec: DomainSpec, fingerprint: str, code: str, trials: int, settings: dict[str, object]) -> str:
    """The identity of a run's inputs: the same key means the same model would be trained."""
    payload = json.dumps(
        {"data": fingerprint, "spec": spec.spec_hash(), "code": code, "trials": trials, "settings": settings},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
