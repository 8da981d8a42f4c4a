"""The Pareto choice: what each candidate costs to serve, the non-dominated set, and the
simplest model that is as good as the best, within the spec's gate and latency budget.

A candidate's serving cost is measured on the model itself, in this process, one candidate
after another: the median CPU time to score one row (``lepton.core.timing``), the best of three
1,000-row batches, and the size of its safe payload. The recipe and encoding that come before the
model in the served bundle are the same for every candidate; the deploy stage times the whole
bundle and gates on it again.

What decides must not depend on the machine's load, and a measured time does, however it is
taken (the same ten trials timed in two runs moved by up to 25%). So the measured latency only
bars a model from the budget, which sits far above what the candidates cost; among the models
left, the choice is by what the model is: the simplest family, then the smallest stored model
(fewer and shallower trees, fewer weights), then the better score. The front and the plot show
the measured figures.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton.core.timing import time_calls
from lepton.domains.spec import DomainSpec
from lepton.errors import LatencyBudgetError

SINGLE_ROWS = 40  # single-row calls timed per candidate, after WARMUP_ROWS
WARMUP_ROWS = 5
BATCH_ROWS = 1000


@dataclass(frozen=True)
class ServingCost:
    """What one model costs to serve: the four objectives besides quality are these three."""

    latency_ms: float  # one row, median CPU time of the calling thread
    batch_ms: float  # BATCH_ROWS rows, best of three
    size_bytes: int  # the safe payload (UBJ or JSON)

    def as_dict(self) -> dict[str, float]:
        return {"latency_ms": self.latency_ms, "batch_ms": self.batch_ms, "size_bytes": float(self.size_bytes)}


def payload_size(payload: Any) -> int:
    """Bytes of a model's safe payload as it is stored: UBJ as is, plain numbers as compact JSON;
    an ensemble's, its members' and its weights'."""
    if isinstance(payload, bytes | bytearray):
        return len(payload)
    if isinstance(payload, dict) and "members" in payload and "weights" in payload:
        return payload_size(payload["weights"]) + sum(payload_size(m["payload"]) for m in payload["members"])
    return len(json.dumps(payload, separators=(",", ":")).encode())


def serving_cost(model: Any, X: np.ndarray) -> ServingCost:
    """Time ``model.predict`` on single rows (CPU time of this thread, ``lepton.core.timing``: the same
    on a loaded machine) and on a batch of ``X`` (validation rows)."""
    rows = np.ascontiguousarray(X[: WARMUP_ROWS + SINGLE_ROWS])
    single = time_calls(lambda i: model.predict(rows[i % len(rows) : i % len(rows) + 1]), SINGLE_ROWS, WARMUP_ROWS)
    batch = np.ascontiguousarray(X[:BATCH_ROWS])
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        model.predict(batch)
        best = min(best, time.perf_counter() - start)
    return ServingCost(
        latency_ms=single.cpu_p50_ms,
        batch_ms=best * 1000 * BATCH_ROWS / len(batch),
        size_bytes=payload_size(model.payload),
    )


def objectives(score: float, cost: ServingCost) -> tuple[float, float, float, float]:
    """The search's four objectives: the primary metric (higher is better), then the costs."""
    return score, cost.latency_ms, cost.batch_ms, float(cost.size_bytes)


def pareto_front(points: list[tuple[float, ...]]) -> list[bool]:
    """For each point (score first, to maximise; the rest to minimise): is it non-dominated?"""
    signed = np.array([(-p[0], *p[1:]) for p in points], dtype=float)
    out = []
    for row in signed:
        dominated = np.any(np.all(signed <= row, axis=1) & np.any(signed < row, axis=1))
        out.append(not bool(dominated))
    return out


@dataclass(frozen=True)
class Choice:
    index: int  # into the pool
    reason: str
    front: tuple[bool, ...]
    eligible: tuple[bool, ...]  # met the quality bar and the latency budget


def meets_gate(spec: DomainSpec, score: float) -> bool:
    """A validation score (oriented, higher is better) against the spec's gate on the primary
    metric, if it has one (the deploy stage checks the holdout against the same gate)."""
    gate = spec.gates.get(spec.primary_metric)
    if gate is None:
        return True
    return score >= (gate if spec.higher_is_better(spec.primary_metric) else -gate)


def choose(
    spec: DomainSpec, pool: list[Any], costs: list[ServingCost], as_good: list[bool], simplest: list[str]
) -> Choice:
    """The simplest model (family in ``simplest`` order, then the smallest stored payload, then the
    better score: nothing measured, so the same models give the same choice on a loaded machine)
    that is ``as_good`` as the best (the caller's test: within the noise of the validation split),
    meets the spec's gate on the primary metric and its latency budget. ``pool[0]`` is the
    untuned baseline, kept over a tuned linear model that is no better.

    Raises LatencyBudgetError when no candidate scores a row within the budget. When some do but
    none of them is as good as the best, the best of those within the budget is chosen, and says so.
    """
    scores = [m.valid_score for m in pool]
    front = pareto_front([objectives(s, c) for s, c in zip(scores, costs, strict=True)])
    budget = spec.latency_budget_ms
    fast = [c.latency_ms <= budget for c in costs]
    if not any(fast):
        quickest = min(range(len(pool)), key=lambda i: costs[i].latency_ms)
        raise LatencyBudgetError(
            f"no candidate meets the latency budget of {budget:g} ms (latency_budget_ms) on one row: the "
            f"fastest of {len(pool)}, a {pool[quickest].family} model, takes {costs[quickest].latency_ms:.3f} ms "
            f"(validation {spec.primary_metric} {abs(scores[quickest]):.4f}); raise the budget or score in batches"
        )
    best = max(range(len(pool)), key=lambda i: scores[i])
    eligible = [f and good and meets_gate(spec, s) for f, good, s in zip(fast, as_good, scores, strict=True)]
    name = spec.primary_metric
    if any(eligible):
        pick = _simplest([i for i, ok in enumerate(eligible) if ok], pool, costs, simplest)
        if pool[pick].family == pool[0].family and eligible[0] and as_good[0]:
            pick = 0  # the untuned baseline: tuning it was not worth more than the noise
        reason = (
            f"the simplest of {sum(eligible)} model(s) as good as the best within the noise and within "
            f"{budget:g} ms: {pool[pick].family} at validation {name} {abs(scores[pick]):.4f}, "
            f"{costs[pick].latency_ms:.3f} ms a row, {costs[pick].size_bytes / 1024:.0f} KiB (the best of "
            f"{len(pool)}: {pool[best].family} at {abs(scores[best]):.4f}, {costs[best].latency_ms:.3f} ms; "
            f"Pareto front of {sum(front)})"
        )
    else:
        pick = max((i for i, ok in enumerate(fast) if ok), key=lambda i: scores[i])
        reason = (
            f"no model within {budget:g} ms is as good as the best ({pool[best].family} at validation {name} "
            f"{abs(scores[best]):.4f}, {costs[best].latency_ms:.3f} ms a row): the best within the budget, "
            f"{pool[pick].family} at {abs(scores[pick]):.4f} and {costs[pick].latency_ms:.3f} ms"
        )
    return Choice(pick, reason, tuple(front), tuple(eligible))


def _simplest(indexes: list[int], pool: list[Any], costs: list[ServingCost], simplest: list[str]) -> int:
    rank = {family: n for n, family in enumerate(simplest)}
    scores = [m.valid_score for m in pool]
    return min(indexes, key=lambda i: (rank.get(pool[i].family, len(rank)), costs[i].size_bytes, -scores[i], i))
