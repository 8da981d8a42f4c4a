"""Optimise: an Optuna search over both model families, then the cost-minimising threshold.

The search scores every trial on the validation split only; the holdout stays untouched until
the deploy gate. The untuned baseline and default tree model compete too, so a linear model that
beats every tuned tree wins, and the run says so.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE
from scipy import stats

from lepton.core.progress import Steps, emit
from lepton.core.scoring import ENSEMBLE, apply_calibration, smoothed
from lepton.core.settings import DISTRIBUTED_ROWS, SEARCH_ROWS
from lepton.domains.spec import CostModel, DomainSpec
from lepton.errors import EngineError
from lepton.tasks import ensemble, families
from lepton.tasks.calibrate import (
    Calibration,
    fit_calibration,
    fit_calibration_spread,
    fit_estimation_map,
    fit_residual_map,
)
from lepton.tasks.families import Pruning
from lepton.tasks.metrics import primary_score
from lepton.tasks.pareto import Choice, choose, serving_cost
from lepton.tasks.preprocess import PreparedData
from lepton.tasks.train import TrainedModel, TrainResult, alarm_normal, fit_on_worker, search_sample, train_model

STARTUP_TRIALS = 10  # TPE's random start: trials it suggests before it learns from scores
# What the sampler learns from: the validation score and the stored model's size. Not the measured
# latency: TPE's suggestions after the random start would then follow the machine's load.
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class TrialRecord:
    """One candidate as the search saw it: a row of the Pareto table and a nested MLflow run."""

    number: int
    family: str
    params: dict[str, Any]
    valid_score: float
    seconds: float
    source: str  # "baseline" | "default" | "search"
    state: str = "complete"  # or "pruned" (stopped by the median rule; not a candidate)
    latency_ms: float = float("nan")  # single row, model only
    batch_ms: float = float("nan")  # 1,000 rows
    size_bytes: int = 0
    on_front: bool = False
    eligible: bool = False  # met the quality bar and the latency budget
    chosen: bool = False


@dataclass(frozen=True)
class OptimiseResult:
    candidate: TrainedModel
    threshold: float
    trials: tuple[TrialRecord, ...]
    reasons: tuple[str, ...]  # why this candidate, one sentence each: the choice first, then what followed
    calibration: Calibration | None = None  # binary tasks: what was fitted on validation, and why
    # where the served scores stay raw (multiclass, refitted): the map the estimate draws through
    estimation_map: dict[str, Any] | None = None
    # binary: how surely validation pins down the probability at each score (``fit_calibration_spread``)
    estimation_spread: dict[str, Any] | None = None

    @property
    def reason(self) -> str:
        """The reasons as one line (a run's ``lepton.choice`` tag, the log)."""
        return "; ".join(self.reasons)


def suggest(trial: Any, task: str) -> tuple[str, dict[str, Any]]:
    """The search space: a family first (``lepton.tasks.families.searched``), then its own
    hyper-parameters."""
    family = trial.suggest_categorical("family", families.searched())
    return family, families.get(family).suggest(trial, task)


def measured(model: TrainedModel, data: PreparedData) -> TrainedModel:
    """``model`` with its serving cost (single-row and batch latency, size) measured here."""
    if model.serving is not None:
        return model
    return dataclasses.replace(model, serving=serving_cost(model, data.valid.X))


def _pruning(models: list[TrainedModel]) -> Pruning | None:
    return Pruning.from_curves([m.curve for m in models if not m.pruned])  # families that stop early have curves


def _tell(study: Any, trial: Any, model: TrainedModel) -> None:
    import optuna

    if model.pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        assert model.serving is not None
        study.tell(trial, [model.valid_score, float(model.serving.size_bytes)])


def search(
    spec: DomainSpec, data: PreparedData, n_trials: int, device: str = "cpu", seed: int = 0, client: Any = None
) -> list[TrainedModel]:
    """Run ``n_trials`` multi-objective Optuna trials; return every fitted model (pruned ones
    included, marked) in trial order, each with its measured serving cost.

    The objectives: the primary metric on validation (maximised) and the stored model's size
    (minimised); each model's latency is measured and reported but not told to the sampler, so
    a seed gives the same trials on a loaded machine. The sampler is Optuna's multi-objective TPE, which learns
    from a handful of trials (NSGA-II needs generations of ~50); a tree trial that falls behind
    the median of earlier ones stops early (``Pruning``).

    With a Dask ``client`` the trials run on its workers, as many at once as the cluster has
    threads: this process asks Optuna for a batch of trials, the workers fit them, this process
    measures each model's serving cost and tells Optuna the results (TPE's constant liar keeps
    the trials of a batch apart). Only this process touches the study, so no storage is shared
    and nothing needs a lock; a trial whose worker dies is re-run by Dask on another.
    """
    import optuna

    if n_trials < 0:
        raise ValueError(f"trials must be >= 0, not {n_trials}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    steps = Steps("optimise", n_trials, "trial", f"valid {spec.primary_metric}")
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, constant_liar=client is not None)
    study = optuna.create_study(directions=DIRECTIONS, sampler=sampler)
    models: list[TrainedModel] = []
    if client is None:
        for _ in range(n_trials):
            trial = study.ask()
            family, params = suggest(trial, spec.task)
            model = measured(train_model(spec, data, family, params, device, pruning=_pruning(models)), data)
            _tell(study, trial, model)
            models.append(model)
            _advance(steps, model)
        return models
    shared = client.scatter(data.for_training(), broadcast=True, hash=False)  # a key of its own, as in train
    slots = max(1, sum(client.nthreads().values()))
    while len(models) < n_trials:
        # Told in trial order, so a seed gives the same search whichever worker finishes first.
        # The first STARTUP_TRIALS are random (TPE learns nothing from them), so they go out in
        # one batch and keep every worker busy; then batches as wide as the cluster.
        width = max(slots, STARTUP_TRIALS - len(models))
        batch = [study.ask() for _ in range(min(width, n_trials - len(models)))]
        pruning = _pruning(models)
        futures = []
        for trial in batch:
            family, params = suggest(trial, spec.task)
            futures.append(client.submit(fit_on_worker, spec, shared, family, params, device, pruning, pure=False))
        for trial, fitted in zip(batch, client.gather(futures), strict=True):
            model = measured(fitted, data)
            _tell(study, trial, model)
            models.append(model)
            _advance(steps, model)
    return models


def _advance(steps: Steps, model: TrainedModel) -> None:
    """One trial done: a progress event with its family, and the best score so far."""
    detail = f" ({model.family}{', pruned' if model.pruned else ''})"
    steps.advance(None if model.pruned else model.valid_score, detail)


def cost_threshold(y: np.ndarray, p: np.ndarray, cost: CostModel) -> float:
    """The threshold that minimises total cost on (y, p): flag when p >= threshold."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    # Flagging the top k rows: cost = FN of the rest + FP among the top k.
    fp = np.concatenate([[0], np.cumsum(ys == 0)])
    fn = np.concatenate([[np.sum(ys == 1)], np.sum(ys == 1) - np.cumsum(ys == 1)])
    totals = fn * cost.false_negative + fp * cost.false_positive
    # Only cut between distinct scores, so a threshold flags exactly the top k.
    valid = np.concatenate([[True], ps[1:] != ps[:-1], [True]])
    k = int(np.argmin(np.where(valid, totals, np.inf)))
    if k == 0:
        return float(np.nextafter(ps[0], np.inf))
    return float(ps[k - 1])


def _bootstrap(
    spec: DomainSpec, y: np.ndarray, score_sets: list[np.ndarray], rounds: int, max_rows: int, seed: int
) -> tuple[np.ndarray, float]:
    """The primary metric of each score set on the same ``rounds`` resamples of at most
    ``max_rows`` rows (rounds x sets), and the factor that scales a standard error on
    ``max_rows`` rows back to the split's size."""
    rng = np.random.default_rng(seed)
    n = len(y)
    m = min(n, max_rows)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, n, size=m)
        if spec.task != "regression" and len(np.unique(y[idx])) < 2:
            continue
        values.append([primary_score(spec, y[idx], scores[idx]) for scores in score_sets])
    return np.array(values, dtype=float).reshape(-1, len(score_sets)), float(np.sqrt(m / n))


def score_standard_error(
    spec: DomainSpec, y: np.ndarray, scores: np.ndarray, rounds: int = 100, max_rows: int = 20_000, seed: int = 0
) -> float:
    """Bootstrap standard error of the primary metric on a split (at most ``max_rows`` rows are
    resampled; the error is scaled back to the split's size)."""
    values, scale = _bootstrap(spec, y, [scores], rounds, max_rows, seed)
    return float(np.std(values[:, 0], ddof=1) * scale) if len(values) > 1 else 0.0


def as_good_as(
    spec: DomainSpec, y: np.ndarray, best: np.ndarray, other: np.ndarray, rounds: int = 100, seed: int = 0
) -> tuple[bool, float, float]:
    """Is ``other`` as good as ``best`` on these rows: is its shortfall in the primary metric
    within one standard error of the paired difference (both scored on the same resamples, so
    what the two models share cancels)? Returns (verdict, shortfall, its standard error)."""
    values, scale = _bootstrap(spec, y, [best, other], rounds, 20_000, seed)
    gap = primary_score(spec, y, best) - primary_score(spec, y, other)
    error = float(np.std(values[:, 0] - values[:, 1], ddof=1) * scale) if len(values) > 1 else 0.0
    return gap <= error, gap, error


SENSITIVITY_CONFIDENCE = 0.9


def sensitivity_threshold(
    y: np.ndarray, p: np.ndarray, target: float, confidence: float = SENSITIVITY_CONFIDENCE
) -> float:
    """The highest threshold (the best specificity) whose sensitivity on (y, p) is at least
    ``target`` with ``confidence``: the Clopper-Pearson lower bound of the share of positives
    flagged, so that the target holds on new rows of the same population, not only on these.
    Flag when p >= threshold; every positive is flagged when no threshold is sure enough."""
    positives = np.sort(np.asarray(p)[np.asarray(y) == 1])[::-1]
    n = len(positives)
    if n == 0:
        return 0.5
    flagged = np.arange(1, n + 1)
    lower = stats.beta.ppf(1 - confidence, flagged, n - flagged + 1)
    enough = np.flatnonzero(lower >= target)
    return float(positives[enough[0] if len(enough) else n - 1])


FALSE_ALARM_CONFIDENCE = 0.9


@dataclass(frozen=True)
class AlarmRule:
    """The alarm threshold on 1 - P(normal) and what validation's normal rows say of it."""

    threshold: float
    alarms: int  # normal rows of validation that raise an alarm at this threshold
    normals: int
    upper: float  # Clopper-Pearson upper bound of the false-alarm rate
    budget: float
    effective: float  # as many independent rows as the (autocorrelated) normal rows are worth

    def describe(self) -> str:
        head = f"alarm when 1 - P(normal) >= {self.threshold:.3f}: {self.alarms} of {self.normals} normal rows"
        worth = f" (worth {self.effective:.1f} independent rows)" if self.effective < self.normals - 0.5 else ""
        if self.upper <= self.budget:
            return f"{head}{worth}, false-alarm rate at most {self.upper:.3f} (90% bound), budget {self.budget:g}"
        return (
            f"{head}{worth} cannot show a false-alarm rate within {self.budget:g} (90% bound {self.upper:.3f} "
            "with none alarmed); the holdout gate decides"
        )


def effective_rows(values: np.ndarray, groups: np.ndarray | None = None, order: np.ndarray | None = None) -> float:
    """How many independent rows a series of ``values`` is worth: n (1 - r) / (1 + r) with r the
    lag-1 autocorrelation within each group in time order (an AR(1) reading); n without series."""
    n = len(values)
    if groups is None or order is None or n < 3:
        return float(n)
    before, after = [], []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        run = values[idx[np.argsort(order[idx], kind="stable")]]
        before.append(run[:-1])
        after.append(run[1:])
    a, b = np.concatenate(before), np.concatenate(after)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float(n)
    r = float(np.clip(np.corrcoef(a, b)[0, 1], 0.0, 0.999))
    return max(1.0, n * (1 - r) / (1 + r))


def _upper(alarms: float | np.ndarray, n: float, confidence: float) -> float | np.ndarray:
    """Clopper-Pearson upper bound of a rate: ``alarms`` (fewer than ``n``) among ``n``."""
    return stats.beta.ppf(confidence, alarms + 1, n - alarms)


def alarm_threshold(
    fault_scores: np.ndarray, budget: float, confidence: float = FALSE_ALARM_CONFIDENCE, effective: float | None = None
) -> AlarmRule:
    """The lowest alarm threshold (the earliest detection) whose false-alarm rate on normal rows
    with these fault scores (1 - P(normal)) has its Clopper-Pearson upper bound within
    ``budget``, so that the budget holds on new rows of the same process, not only on these.
    ``effective``: the rows' worth as independent rows (``effective_rows``; all of them by
    default); the bound counts alarms at the same rate among that many. Alarm when score >=
    threshold. Too few (effective) normal rows to show it even with no alarm: the threshold
    that raises none of them."""
    ranked = np.sort(np.asarray(fault_scores, dtype=np.float64))[::-1]
    n = len(ranked)
    if n == 0:
        return AlarmRule(0.5, 0, 0, float("nan"), budget, 0.0)
    worth = float(n if effective is None else min(max(effective, 1.0), n))
    scale = worth / n
    upper = _upper(np.arange(n) * scale, worth, confidence)  # k alarms among n, k < n
    within = np.flatnonzero(upper <= budget)
    k = int(within[-1]) if len(within) else 0
    threshold = float(np.nextafter(ranked[k], np.inf))  # the k highest alarm (fewer on ties)
    alarms = int((ranked >= threshold).sum())
    bound = 1.0 if alarms >= n else float(_upper(alarms * scale, worth, confidence))
    return AlarmRule(threshold, alarms, n, bound, budget, worth)


def validation_alarm(spec: DomainSpec, data: PreparedData, model: TrainedModel) -> AlarmRule:
    """The alarm rule of a multiclass spec with a false-alarm budget, set on validation's normal
    rows, scored as the served model scores them (decision smoothing included); for series their
    autocorrelation counts (``effective_rows``): neighbouring samples are not new evidence."""
    normal = alarm_normal(spec, data.classes)
    assert normal is not None and spec.false_alarm_budget is not None
    frame = data.valid.frame
    scores = smoothed(spec.smoothing_config(), model.predict(data.valid.X), frame)
    rows = data.valid.y == normal
    fault = 1.0 - scores[rows, normal]
    groups = frame[spec.group_column].to_numpy()[rows] if spec.group_column else None
    order = frame[spec.time_column].to_numpy()[rows] if spec.time_column else None
    return alarm_threshold(fault, spec.false_alarm_budget, effective=effective_rows(fault, groups, order))


def decision_threshold(spec: DomainSpec, data: PreparedData, model: TrainedModel) -> float:
    """On validation: binary tasks, the threshold that keeps the spec's target sensitivity (when
    it has one), else the one that minimises its cost model; multiclass with a false-alarm
    budget, the alarm threshold (``validation_alarm``); otherwise 0.5."""
    if alarm_normal(spec, data.classes) is not None:
        return validation_alarm(spec, data, model).threshold
    if spec.task == "binary" and spec.target_sensitivity is not None:
        return sensitivity_threshold(data.valid.y, model.predict(data.valid.X), spec.target_sensitivity)
    if spec.task == "binary" and spec.cost is not None:
        return cost_threshold(data.valid.y, model.predict(data.valid.X), spec.cost)
    return 0.5


def within_noise(
    spec: DomainSpec, data: PreparedData, pool: list[TrainedModel], scored: dict[int, np.ndarray] | None = None
) -> list[bool]:
    """For each model: is it as good as the best on validation (``as_good_as``, paired)? Those
    further below the best than the best's own standard error are not tested: a paired
    difference's error is smaller than that whenever the two models' scores agree at all.
    ``scored``: a model's validation scores by its index where they are not its predictions
    (an ensemble's cross-fitted scores, ``lepton.tasks.ensemble``)."""
    scored = scored or {}
    y = data.valid.y

    def scores(i: int) -> np.ndarray:
        return scored[i] if i in scored else pool[i].predict(data.valid.X)

    best = max(range(len(pool)), key=lambda i: pool[i].valid_score)
    best_scores = scores(best)
    floor = pool[best].valid_score - score_standard_error(spec, y, best_scores, seed=spec.split.seed)
    out = []
    for i, model in enumerate(pool):
        if i == best or model.valid_score < floor:
            out.append(i == best)
            continue
        out.append(as_good_as(spec, y, best_scores, scores(i), seed=spec.split.seed)[0])
    return out


def final_fit(
    spec: DomainSpec,
    data: PreparedData,
    candidate: TrainedModel,
    device: str,
    client: Any = None,
    distributed_rows: int = DISTRIBUTED_ROWS,
) -> TrainedModel:
    """The chosen tree model fitted on every training row, if the search saw a sample of them or
    the table is large enough to train across the cluster (``xgboost.dask`` from
    ``distributed_rows`` rows; 0 always, given a client). A linear model keeps its fit: a
    regularised linear model on a million rows has nothing left to learn from more."""
    if candidate.family == ENSEMBLE:
        members = ensemble.members(candidate)
        fitted = [final_fit(spec, data, m, device, client, distributed_rows) for m in members]
        changed = any(f is not m for f, m in zip(fitted, members, strict=True))
        return ensemble.with_members(candidate, fitted) if changed else candidate
    if not families.get(candidate.family).refits_on_all_rows:
        return candidate
    if data.table is not None and client is None:
        raise EngineError("a partitioned table is fitted on its Dask cluster, and none was given")
    # A partitioned table whose driver samples are not all of its training and validation rows
    # is fitted where its partitions lie; one the samples hold whole is like one file (the
    # cluster's collective, a network round per tree level, would only slow a small table).
    whole = data.train.rows == data.rows("train") and data.valid.rows == data.rows("valid")
    distributed = client is not None and (data.train.rows >= distributed_rows or not whole)
    if candidate.train_rows == data.train.rows and not distributed:
        return candidate
    return train_model(spec, data, candidate.family, candidate.params, device, client if distributed else None)


def estimation_map(
    spec: DomainSpec, data: PreparedData, candidate: TrainedModel, calibration: Calibration | None
) -> tuple[dict[str, Any] | None, str] | None:
    """The map the estimate without labels draws through, and why, where the served scores are
    not calibrated (multiclass; binary refitted on its validation rows) or are predictions
    (regression): fitted on the validation scores as the service gives them (smoothed where the
    spec smooths), before any refit. None where the served scores are drawn from as they are."""
    raw = calibration is not None and calibration.state is None and spec.split.refit
    if spec.task == "binary" and not raw:
        return None
    served = smoothed(spec.smoothing_config(), candidate.raw_predict(data.valid.X), data.valid.frame)
    if spec.task == "regression":
        fitted = fit_residual_map(data.valid.y, served)
    else:
        fitted = fit_estimation_map(data.valid.y, served, spec.split.seed)
    if fitted:
        return fitted, f"the estimate without labels draws through {fitted['reason']}"
    if spec.task == "regression":
        return None, "no estimate without labels: under 100 validation rows, too few to model the errors"
    return None, "the estimate without labels draws from the raw scores: no map beat them on validation"


def estimation_spread(
    spec: DomainSpec, data: PreparedData, candidate: TrainedModel, estimation: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A binary model's calibration uncertainty on validation (``fit_calibration_spread``): the
    scores as served (calibrated, smoothed), binned, against the probabilities the estimate
    draws from; before any refit, whose model has seen those rows. None for another task."""
    if spec.task != "binary":
        return None
    served = smoothed(spec.smoothing_config(), candidate.predict(data.valid.X), data.valid.frame)
    return fit_calibration_spread(data.valid.y, served, apply_calibration(estimation, served) if estimation else served)


def refit_with_validation(
    spec: DomainSpec, data: PreparedData, model: TrainedModel, device: str, client: Any = None
) -> TrainedModel:
    """``model`` fitted again on train + validation with the same settings (a tree model with the
    rounds early stopping chose); its validation score stays the one measured before, as the
    refitted model has seen those rows. An MLP keeps its fit (its epochs count is not comparable
    on more rows). A partitioned table's tree model is refitted where the rows lie, on all of them."""
    if model.family == ENSEMBLE:
        members = ensemble.members(model)
        refitted = [refit_with_validation(spec, data, m, device, client) for m in members]
        if all(r is m for r, m in zip(refitted, members, strict=True)):
            return model
        return ensemble.with_members(model, refitted)
    params = families.get(model.family).refit_params(model.params, model.best_iteration)
    if params is None:
        return model
    if data.table is not None and model.workers:
        if client is None:
            raise EngineError("a partitioned table is fitted on its Dask cluster, and none was given")
        both = dataclasses.replace(data, table=data.table.with_validation())
        refitted = train_model(spec, both, model.family, params, device, client)
        return dataclasses.replace(refitted, valid_score=model.valid_score)
    train = dataclasses.replace(
        data.train, X=np.concatenate([data.train.X, data.valid.X]), y=np.concatenate([data.train.y, data.valid.y])
    )
    # Early stopping watches the validation rows, now in the training rows too: the loss keeps
    # falling, so the rounds run to the number chosen before.
    refitted = train_model(spec, dataclasses.replace(data, train=train), model.family, params, device)
    return dataclasses.replace(refitted, valid_score=model.valid_score)


def calibrate_candidate(spec: DomainSpec, data: PreparedData, candidate: TrainedModel) -> Calibration:
    """The candidate's calibration, fitted on the validation split (never the holdout); none
    when the model will be refitted on those rows (they would no longer be unseen)."""
    if spec.split.refit:
        return Calibration("none", None, reason="not calibrated: the model is refitted on the validation rows")
    return fit_calibration(data.valid.y, candidate.raw_predict(data.valid.X), spec.split.seed)


def optimise(
    spec: DomainSpec,
    data: PreparedData,
    trained: TrainResult,
    n_trials: int,
    device: str = "cpu",
    client: Any = None,
    search_rows: int = SEARCH_ROWS,
    distributed_rows: int = DISTRIBUTED_ROWS,
) -> OptimiseResult:
    start = time.perf_counter()
    sample = search_sample(data, search_rows, spec.split.seed)
    found = search(spec, sample, n_trials, device, seed=spec.split.seed, client=client)
    everything = [measured(trained.baseline, data), measured(trained.default_tree, data), *found]
    sources = ["baseline", "default"] + ["search"] * len(found)
    pool, choice, reasons = _choose(spec, data, everything, sources, whole=sample is data and data.table is None)
    candidate = pool[choice.index]
    if len(pool) < len(everything):
        reasons.append(f"{len(everything) - len(pool)} tree trial(s) pruned by the median rule")
    if sample is not data or data.table is not None:
        reasons.append(
            f"candidates fitted on a sample of {sample.train.rows:,} of {data.rows('train'):,} training rows"
        )
    emit("note", "optimise", f"chose {candidate.family} of {len(pool)} candidate(s); fitting it on every training row")
    final = final_fit(spec, data, candidate, device, client, distributed_rows)
    if final is not candidate:
        score = abs(final.valid_score)
        reasons.append(f"refitted on {final.trained_on} (validation {spec.primary_metric} {score:.4f})")
        candidate = final
    calibration = None
    if spec.task == "binary":
        calibration = calibrate_candidate(spec, data, candidate)
        reasons.append(calibration.reason)
        if calibration.state is not None:
            candidate = dataclasses.replace(candidate, calibration=calibration.state)
    if alarm_normal(spec, data.classes) is not None:
        alarm = validation_alarm(spec, data, candidate)
        threshold = alarm.threshold
        reasons.append(alarm.describe())
    else:
        threshold = decision_threshold(spec, data, candidate)
    estimation, why = estimation_map(spec, data, candidate, calibration) or (None, None)
    if why:
        reasons.append(why)
    spread = estimation_spread(spec, data, candidate, estimation)
    if spec.split.refit:
        refitted = refit_with_validation(spec, data, candidate, device, client)
        if refitted is not candidate:
            reasons.append(f"refitted on train + validation ({refitted.train_rows:,} rows)")
            candidate = refitted
    records = _records(everything, sources, pool, choice)
    reasons.append(f"search of {n_trials} trial(s) took {time.perf_counter() - start:.1f}s")
    emit("decision", "optimise", f"candidate {candidate.family}: {'; '.join(reasons)}")
    return OptimiseResult(
        candidate=candidate,
        threshold=threshold,
        trials=records,
        reasons=tuple(reasons),
        calibration=calibration,
        estimation_map=estimation,
        estimation_spread=spread,
    )


def _choose(
    spec: DomainSpec, data: PreparedData, everything: list[TrainedModel], sources: list[str], whole: bool
) -> tuple[list[TrainedModel], Choice, list[str]]:
    """The candidates (every model not pruned, and the ensemble selected over them where the
    search saw ``whole`` training rows: a sampled search's members would each need a final fit),
    the choice among them and why. ``everything`` and ``sources`` gain the ensemble."""
    pool = [m for m in everything if not m.pruned]
    scored: dict[int, np.ndarray] = {}
    built = ensemble.build(spec, data, pool, spec.split.seed) if whole and len(pool) > 1 else None
    if built is not None:
        everything.append(measured(built.model, data))
        sources.append("ensemble")
        pool.append(everything[-1])
        scored[len(pool) - 1] = built.valid_scores
    choice = choose(spec, pool, [m.serving for m in pool], within_noise(spec, data, pool, scored), families.searched())
    reasons = [choice.reason]
    if built is not None:
        reasons.append(ensemble.describe(spec, built, chosen=pool[choice.index].family == ENSEMBLE))
    return pool, choice, reasons


def _records(
    everything: list[TrainedModel], sources: list[str], pool: list[TrainedModel], choice: Choice
) -> tuple[TrialRecord, ...]:
    place = {id(m): k for k, m in enumerate(pool)}
    records = []
    for i, (m, source) in enumerate(zip(everything, sources, strict=True)):
        k = place.get(id(m))
        serving = m.serving
        assert serving is not None
        records.append(
            TrialRecord(
                i,
                m.family,
                m.params,
                m.valid_score,
                m.fit_seconds,
                source,
                state="pruned" if m.pruned else "complete",
                latency_ms=serving.latency_ms,
                batch_ms=serving.batch_ms,
                size_bytes=serving.size_bytes,
                on_front=k is not None and choice.front[k],
                eligible=k is not None and choice.eligible[k],
                chosen=k == choice.index,
            )
        )
    return tuple(records)


@task(name="optimise", cache_policy=NO_CACHE)
def optimise_task(
    spec: DomainSpec,
    data: PreparedData,
    trained: TrainResult,
    n_trials: int,
    device: str,
    client: Any = None,
    search_rows: int = SEARCH_ROWS,
    distributed_rows: int = DISTRIBUTED_ROWS,
) -> OptimiseResult:
    """Search both families and pick the candidate and its decision threshold.

    Args:
        spec: the domain.
        data: prepared splits.
        trained: the untuned baseline and default tree model, which compete too.
        n_trials: the Optuna trial budget.
        device: ``cpu`` or ``cuda`` for XGBoost trials.
        client: a Dask client: trials run on its workers; None runs them here, one by one.
        search_rows: candidates are fitted on at most this many training rows.
        distributed_rows: from this many training rows the chosen tree model trains across the
            cluster with ``xgboost.dask``.
    Returns:
        OptimiseResult: the candidate, its threshold, every trial and why it was chosen.
    """
    return optimise(spec, data, trained, n_trials, device, client, search_rows, distributed_rows)
