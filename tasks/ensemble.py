"""Ensembles that earn their place: greedy ensemble selection with replacement (Caruana et al.,
"Ensemble selection from libraries of models", ICML 2004) over the search's candidates.

The library is the best ``LIBRARY`` candidates on validation and the untuned baseline. Selection
starts from the best single model and adds, one at a time and with replacement, the model that
most improves the primary metric of the averaged scores on validation; the weights are how often
each was added, and the selection stops at its best round (AutoGluon's ``WeightedEnsemble`` does
the same).

Weights chosen on validation make the ensemble look better there than it is. So its validation
score, the one it competes with, is cross-fitted: the validation rows are split in ``FOLDS`` folds
(whole groups where the spec has a group column), each fold is scored by the weights chosen on
the others, and the folds' scores are joined. The ensemble then enters the Pareto choice as one
more candidate (``lepton.tasks.pareto.choose``): it is the simplest model only when no single
model is as good within the noise, so it is chosen only when it is better beyond the noise, and
within the latency budget like any model. Its members are stored in their own safe formats
(``lepton.core.scoring.model_files``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from lepton.core.scoring import ENSEMBLE
from lepton.domains.spec import DomainSpec
from lepton.tasks.metrics import primary_score
from lepton.tasks.preprocess import PreparedData
from lepton.tasks.train import TrainedModel

LIBRARY = 8  # the best candidates selection chooses from, besides the baseline
ROUNDS = 25  # additions with replacement (weights in 1/25ths)
FOLDS = 5  # the cross-fitted score's folds of the validation rows
MIN_FOLD = 20  # validation rows each fold needs


@dataclass(frozen=True)
class Selection:
    """Greedy selection's outcome: how many times each library model was added, and the score
    of the averaged scores after each round."""

    counts: np.ndarray
    path: tuple[float, ...]

    @property
    def weights(self) -> np.ndarray:
        return self.counts / self.counts.sum()


def select(spec: DomainSpec, y: np.ndarray, scores: list[np.ndarray], rounds: int = ROUNDS) -> Selection:
    """Greedy ensemble selection with replacement on (y, each model's scores): start from the best
    single model, add the one that most improves the primary metric of the average (the first on
    ties), ``rounds`` times; keep the counts of the best round (the earliest on ties)."""
    values = [np.asarray(s, dtype=np.float64) for s in scores]
    singles = [primary_score(spec, y, v) for v in values]
    first = int(np.argmax(singles))
    counts = np.zeros(len(values), dtype=np.int64)
    counts[first] = 1
    total = values[first].copy()
    path, best_counts = [singles[first]], counts.copy()
    for n in range(2, rounds + 1):
        trials = [primary_score(spec, y, (total + v) / n) for v in values]
        pick = int(np.argmax(trials))
        counts[pick] += 1
        total += values[pick]
        path.append(trials[pick])
        if trials[pick] > max(path[:-1]):
            best_counts = counts.copy()
    return Selection(best_counts, tuple(path))


def folds(spec: DomainSpec, data: PreparedData, seed: int, k: int = FOLDS) -> np.ndarray:
    """A fold (0 to ``k - 1``) for each validation row: whole groups where the spec has a group
    column (rows of one run are not independent), else rows at random; the same for the same seed."""
    rng = np.random.default_rng(seed)
    n = data.valid.rows
    if spec.group_column and spec.group_column in data.valid.frame.columns:
        groups = data.valid.frame[spec.group_column].cast(str).to_numpy()
        unique = np.unique(groups)
        if len(unique) >= k:
            fold = dict(zip(unique, rng.permutation(len(unique)) % k, strict=True))
            return np.array([fold[g] for g in groups], dtype=np.int64)
    return rng.permutation(n) % k


def cross_fitted(
    spec: DomainSpec, y: np.ndarray, scores: list[np.ndarray], fold: np.ndarray, rounds: int = ROUNDS
) -> np.ndarray | None:
    """The ensemble's validation scores with each fold scored by weights chosen on the other
    folds, so no row's score comes from weights that saw it; None when a fold is too small or
    lacks a class."""
    out = np.zeros_like(np.asarray(scores[0], dtype=np.float64))
    for side in np.unique(fold):
        fit, held = fold != side, fold == side
        if held.sum() < MIN_FOLD or fit.sum() < MIN_FOLD:
            return None
        if spec.task != "regression" and len(np.unique(y[fit])) < 2:
            return None
        chosen = select(spec, y[fit], [s[fit] for s in scores], rounds)
        out[held] = sum(w * s[held] for w, s in zip(chosen.weights, scores, strict=True) if w > 0)
    return out


def library(pool: list[TrainedModel]) -> list[int]:
    """The indexes of the models selection chooses from: the baseline (``pool[0]``) and the best
    ``LIBRARY`` others on validation, best first."""
    ranked = sorted(range(1, len(pool)), key=lambda i: -pool[i].valid_score)
    return [0, *ranked[:LIBRARY]]


@dataclass(frozen=True)
class Ensemble:
    """An ensemble candidate: the model (family ``ensemble``) and its cross-fitted validation
    scores (what it competes with)."""

    model: TrainedModel
    valid_scores: np.ndarray


def build(spec: DomainSpec, data: PreparedData, pool: list[TrainedModel], seed: int) -> Ensemble | None:
    """The ensemble selected over ``pool``'s library, or None when selection keeps one model
    alone or validation is too small to cross-fit its score."""
    chosen = library(pool)
    y = data.valid.y
    scores = [np.asarray(pool[i].predict(data.valid.X), dtype=np.float64) for i in chosen]
    selection = select(spec, y, scores)
    if np.count_nonzero(selection.counts) < 2:
        return None
    honest = cross_fitted(spec, y, scores, folds(spec, data, seed))
    if honest is None:
        return None
    keep = np.flatnonzero(selection.counts)
    weights = selection.weights[keep]
    model = assemble(spec, [pool[chosen[k]] for k in keep], weights, primary_score(spec, y, honest))
    return Ensemble(model, honest)


def assemble(spec: DomainSpec, members: list[TrainedModel], weights: np.ndarray, valid_score: float) -> TrainedModel:
    """The ensemble as a ``TrainedModel`` of family ``ensemble``: its payload holds the members'
    payloads and the weights; its parameters say what the members are (readable, and as JSON
    for refitting them)."""
    model = TrainedModel(
        family=ENSEMBLE,
        params={},
        payload={},
        n_features=members[0].n_features,
        task=spec.task,
        valid_score=valid_score,
        fit_seconds=sum(m.fit_seconds for m in members),
        device=members[0].device,
    )
    return with_members(model, members, weights)


def with_members(model: TrainedModel, members: list[TrainedModel], weights: np.ndarray | None = None) -> TrainedModel:
    """``model`` (an ensemble) made of ``members`` (refitted ones, say), with ``weights`` or its
    own; its validation score stays."""
    if weights is None:
        weights = np.asarray(model.payload["weights"], dtype=np.float64)
    described = ", ".join(f"{m.family} x{w:.2f}" for m, w in zip(members, weights, strict=True))
    specs = [{"family": m.family, "params": m.params, "best_iteration": m.best_iteration} for m in members]
    return dataclasses.replace(
        model,
        params={"members": described, "member_params": json.dumps(specs, sort_keys=True)},
        payload={
            "weights": [float(w) for w in weights],
            "members": [{"family": m.family, "payload": m.payload} for m in members],
        },
        train_rows=max(m.train_rows for m in members),
        workers=max(m.workers for m in members),
    )


def members(model: TrainedModel) -> list[TrainedModel]:
    """An ensemble's members as models of their own (for refitting): family, parameters and
    payload; the ensemble's validation score and rows."""
    specs = json.loads(model.params["member_params"])
    return [
        TrainedModel(
            family=spec["family"],
            params=spec["params"],
            payload=member["payload"],
            n_features=model.n_features,
            task=model.task,
            valid_score=model.valid_score,
            fit_seconds=0.0,
            device=model.device,
            best_iteration=spec["best_iteration"],
            train_rows=model.train_rows,
        )
        for spec, member in zip(specs, model.payload["members"], strict=True)
    ]


def describe(spec: DomainSpec, built: Ensemble, chosen: bool) -> str:
    """One sentence for the run's reasons: what the ensemble is, its cross-fitted score, and
    whether it was chosen."""
    model = built.model
    head = f"ensemble of {len(model.payload['members'])} ({model.params['members']}) at cross-fitted validation"
    score = abs(model.valid_score)
    tail = "chosen" if chosen else "not chosen: not better than the chosen model beyond the noise, or over budget"
    return f"{head} {spec.primary_metric} {score:.4f}: {tail}"
