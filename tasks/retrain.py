"""Whether a monitored batch is worth a retrain, and why (``lepton.retrain.recommended``).

The spec's ``retrain`` policy decides:

- ``on_drift``: any drift the monitor reports asks for a retrain (the loop as it was).
- ``on_estimated_loss``: the champion's primary metric, estimated without labels
  (``lepton.tasks.estimate``), must have fallen beyond the estimate's band from the same
  estimate on the champion's holdout scores (rebuilt from its reference sketch, so that the
  estimator's own bias cancels). Then the loss of keeping it is priced as the cost model ×
  the volume × the fall: what the champion saves a decision over deciding without it (flag
  every row or none, whichever costs less, against its expected cost at the threshold; both
  from its calibrated holdout probabilities), times the share of its skill the fall takes (of
  the Gini, for ROC AUC), times the decisions at stake (the prediction log's daily volume over
  ``retrain_horizon_days``), in USD by ``cost.usd_per_unit``. A retrain is recommended when
  that loss, times the chance a retrain is promoted (the share of the domain's pipeline runs
  that were), exceeds a retrain's measured cost (the median of the runs ``lepton cost``
  lists). Without a cost model or a USD rate the estimated fall alone decides, and the reason
  says so. Drift that does not move the estimate is reported and does not retrain.
- ``on_label_performance``: the labels that came with the batch must show the fall.

Where the policy needs what the batch cannot give (no estimate for a regression model; no labels
yet), the reason names what is missing; without an estimate the decision falls back to drift.
Nothing here reads the machine's load or a clock: the same batch, champion, history and traffic
give the same decision.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from lepton.domains.spec import DomainSpec
from lepton.tasks.estimate import Estimate

RECOMMENDED = "lepton.retrain.recommended"


@dataclass(frozen=True)
class RetrainHistory:
    """The domain's pipeline runs as the decision reads them: each run's cost in USD, and how
    many were promoted to champion."""

    costs_usd: tuple[float, ...] = ()
    promoted: int = 0
    runs: int = 0

    @property
    def retrain_cost_usd(self) -> float | None:
        return statistics.median(self.costs_usd) if self.costs_usd else None

    @property
    def chance(self) -> float:
        """The chance a retrain is promoted: the share of past runs that were, with one
        promoted and one not added (Laplace's rule: a half with no history)."""
        return (self.promoted + 1) / (self.runs + 2)


@dataclass(frozen=True)
class Traffic:
    """Decisions per day the champion makes, and where the figure comes from."""

    per_day: float
    source: str  # "the prediction log's last 7 days", or "the batch (no logged traffic)"


@dataclass(frozen=True)
class RetrainDecision:
    policy: str
    recommended: bool
    reason: str
    key: str  # the batch's fingerprint and the champion's version: one retrain per (domain, batch)
    expected_loss_usd: float | None = None
    retrain_cost_usd: float | None = None
    expected_loss: float | None = None  # in the cost model's unit, over the horizon
    decisions: float | None = None  # the decisions at stake over the horizon
    chance: float | None = None  # of a retrain being promoted, from the history

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _fell(spec: DomainSpec, estimated: Estimate, before: float) -> bool:
    """The whole band is worse than the figure at training."""
    if spec.higher_is_better(estimated.metric):
        return estimated.upper < before
    return estimated.lower > before


def _band(estimated: Estimate) -> str:
    return (
        f"estimated {estimated.metric} {estimated.value:.4f} "
        f"({estimated.level:.0%} band {estimated.lower:.4f} to {estimated.upper:.4f})"
    )


def _drift(detected: bool, drifted: list[str]) -> str:
    if drifted:
        more = ", ..." if len(drifted) > 5 else ""
        return f"drift in {len(drifted)} feature(s) ({', '.join(drifted[:5])}{more})"
    return "drift in the model's output" if detected else "no drift"


def decide(
    spec: DomainSpec,
    *,
    key: str,
    detected: bool,
    drifted: list[str],
    estimated: Estimate | None,
    holdout: dict[str, float],
    performance: dict[str, float],
    history: RetrainHistory,
    traffic: Traffic,
    at_training: Estimate | None = None,
) -> RetrainDecision:
    """The decision for one batch under the spec's policy (see the module's docstring).
    ``at_training``: the same estimate on the champion's holdout scores (its reference sketch),
    which the batch's estimate is compared with, like with like (the batch's as estimated,
    before the holdout's miss adjusted it: the bias both share cancels); without it, the
    realised holdout figures."""
    policy, metric, drift = spec.retrain, spec.primary_metric, _drift(detected, drifted)
    estimated = estimated.as_estimated() if estimated is not None else None
    before = holdout.get(metric)
    if policy == "on_drift":
        reason = f"{drift}: policy on_drift retrains on drift"
    elif before is None:
        reason = f"the champion has no holdout {metric} to compare with; {drift} decides"
    elif policy == "on_label_performance":
        return _by_labels(spec, key, drift, performance.get(metric), before, estimated)
    elif estimated is None:
        why = "a regression model" if spec.task == "regression" else "this batch"
        reason = f"no estimate without labels for {why}; {drift} decides (as on_drift)"
    else:
        return _by_estimate(spec, key, drift, estimated, holdout, history, traffic, at_training)
    return RetrainDecision(policy, detected, reason, key)


def _by_labels(
    spec: DomainSpec, key: str, drift: str, realised: float | None, before: float, estimated: Estimate | None
) -> RetrainDecision:
    """``on_label_performance``: the labels that came with the batch against the holdout's."""
    if realised is None:
        reason = f"{drift}; no labels came with this batch, and policy on_label_performance waits for them"
        return RetrainDecision(spec.retrain, False, reason, key)
    # the batch and the holdout are both samples: a fall counts when it exceeds the band's
    # full width (about 2.3 standard deviations of the difference of two such samples)
    margin = estimated.upper - estimated.lower if estimated is not None else 0.0
    sign = 1.0 if spec.higher_is_better(spec.primary_metric) else -1.0
    fell = sign * (before - realised) > margin
    reason = (
        f"{spec.primary_metric} on the batch's labels {realised:.4f} against {before:.4f} at training "
        f"({'worse by more than' if fell else 'within'} the noise of two samples, {margin:.4f}); {drift}"
    )
    return RetrainDecision(spec.retrain, fell, reason, key)


def _skill_lost(metric: str, before: float, after: float, higher_is_better: bool) -> float:
    """The share of the champion's skill a fall from ``before`` to ``after`` takes away: of
    its Gini (2 AUC - 1) for ROC AUC, of the metric itself for another score in [0, 1], and
    the relative rise of a loss (Brier, log loss)."""
    if metric == "roc_auc":
        before, after = 2 * before - 1, 2 * after - 1
    if not higher_is_better:
        return (after - before) / before if before > 0 else 0.0
    return (before - after) / before if before > 0 else 0.0


def _by_estimate(
    spec: DomainSpec,
    key: str,
    drift: str,
    estimated: Estimate,
    holdout: dict[str, float],
    history: RetrainHistory,
    traffic: Traffic,
    at_training: Estimate | None,
) -> RetrainDecision:
    """``on_estimated_loss``: the estimated fall, priced (see the module's docstring)."""
    policy, metric = spec.retrain, spec.primary_metric
    if at_training is not None:
        before, then = at_training.value, f"{at_training.value:.4f} estimated the same way on its holdout"
    else:
        before, then = holdout[metric], f"{holdout[metric]:.4f} on its holdout"
    if not _fell(spec, estimated, before):
        reason = f"{_band(estimated)} holds the champion's {then}: {drift}, which does not hurt it"
        return RetrainDecision(policy, False, reason, key)
    fell = f"{_band(estimated)} fell from the champion's {then}"
    decisions = traffic.per_day * spec.retrain_horizon_days
    if spec.cost is None or at_training is None or at_training.expected_cost is None:
        reason = f"{fell}; no cost model prices it, so the fall alone decides"
        return RetrainDecision(policy, True, reason, key, decisions=decisions)
    # what the champion is worth a decision: the cost of deciding without it less its own cost
    worth = at_training.no_skill_cost - at_training.expected_cost
    if worth <= 0:  # a threshold set for something else (a sensitivity target) may cost more than none
        reason = (
            f"{fell}; at its threshold the champion's decisions cost no less than deciding without it, "
            "so the cost model cannot price the fall, which alone decides"
        )
        return RetrainDecision(policy, True, reason, key, decisions=decisions)
    lost = max(_skill_lost(metric, before, estimated.value, spec.higher_is_better(metric)), 0.0)
    loss = worth * lost * decisions
    unit, price, chance = spec.cost.unit, history.retrain_cost_usd, history.chance
    priced = (
        f"the champion saves {worth:.4f} {unit} a decision over deciding without it, and the fall "
        f"takes {lost:.0%} of its skill: {loss:,.1f} {unit} over {decisions:,.0f} decisions "
        f"({traffic.per_day:,.0f} a day from {traffic.source}, {spec.retrain_horizon_days:g} days)"
    )
    usd = loss * spec.cost.usd_per_unit if spec.cost.usd_per_unit is not None else None
    if usd is None:
        recommended, reason = loss > 0, f"{fell}; {priced} (no cost.usd_per_unit to weigh it against a retrain's USD)"
    elif price is None:
        recommended, reason = loss > 0, f"{fell}; {priced} = ${usd:,.2f}; no measured retrain to price one against"
    else:
        recommended = usd * chance > price
        reason = (
            f"{fell}; {priced} = ${usd:,.2f}; × {chance:.0%}, the chance a retrain is promoted "
            f"({history.promoted} of {history.runs} past runs were), {'exceeds' if recommended else 'does not exceed'} "
            f"a retrain's ${price:.4f} (the median of {len(history.costs_usd)} measured runs)"
        )
    return RetrainDecision(policy, recommended, reason, key, usd, price, loss, decisions, chance)
