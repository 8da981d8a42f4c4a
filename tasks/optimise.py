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

from domains.spec import CostModel, DomainSpec
from lepton.settings import DISTRIBUTED_ROWS, SEARCH_ROWS
from tasks.calibrate import Calibration, fit_calibration
from tasks.metrics import primary_score
from tasks.preprocess import PreparedData
from tasks.train import TrainedModel, TrainResult, search_sample, torch_available, train_model

STARTUP_TRIALS = 10  # TPE's random start: trials it suggests before it learns from scores


@dataclass(frozen=True)
class TrialRecord:
    number: int
    family: str
    params: dict[str, Any]
    valid_score: float
    seconds: float
    source: str  # "baseline" | "default" | "search"


@dataclass(frozen=True)
class OptimiseResult:
    candidate: TrainedModel
    threshold: float
    trials: tuple[TrialRecord, ...]
    reason: str
    calibration: Calibration | None = None  # binary tasks: what was fitted on validation, and why


def families() -> list[str]:
    """The model families, simplest first: the torch MLP when torch is installed."""
    return ["linear", "xgboost", *(["mlp"] if torch_available() else [])]


def suggest(trial: Any, task: str) -> tuple[str, dict[str, Any]]:
    """The search space: family first, then that family's hyper-parameters."""
    family = trial.suggest_categorical("family", families())
    if family == "linear":
        return family, {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}
    if family == "mlp":
        return family, {
            "hidden": trial.suggest_int("hidden", 16, 256, log=True),
            "layers": trial.suggest_int("layers", 1, 3),
            "learning_rate": trial.suggest_float("mlp_learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512, 1024]),
            "epochs": 60,
        }
    return family, {
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.05, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        "max_bin": 128,
        "n_estimators": 300,
    }


def _fit_trial(spec: DomainSpec, data: PreparedData, family: str, params: dict[str, Any], device: str) -> TrainedModel:
    """One trial, on a Dask worker: the fitted model without its loaded predictor (sent back
    as its safe payload only)."""
    return dataclasses.replace(train_model(spec, data, family, params, device))


def search(
    spec: DomainSpec, data: PreparedData, n_trials: int, device: str = "cpu", seed: int = 0, client: Any = None
) -> list[TrainedModel]:
    """Run ``n_trials`` Optuna (TPE) trials; return every fitted model in trial order.

    With a Dask ``client`` the trials run on its workers, as many at once as the cluster has
    threads: this process asks Optuna for a batch of trials, the workers fit them, this process
    tells Optuna the scores (TPE's constant liar keeps the trials of a batch apart). Only this
    process touches the study, so no storage is shared and nothing needs a lock; a trial whose
    worker dies is re-run by Dask on another.
    """
    import optuna

    if n_trials < 0:
        raise ValueError(f"trials must be >= 0, not {n_trials}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, constant_liar=client is not None)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if client is None:
        models: list[TrainedModel] = []

        def objective(trial: Any) -> float:
            family, params = suggest(trial, spec.task)
            model = train_model(spec, data, family, params, device)
            models.append(model)
            return model.valid_score

        study.optimize(objective, n_trials=n_trials)
        return models
    return _search_on_dask(spec, data, n_trials, device, study, client)


def _search_on_dask(
    spec: DomainSpec, data: PreparedData, n_trials: int, device: str, study: Any, client: Any
) -> list[TrainedModel]:
    shared = client.scatter(data.for_training(), broadcast=True)
    slots = max(1, sum(client.nthreads().values()))
    models: list[TrainedModel] = []
    while len(models) < n_trials:
        # Told in trial order, so a seed gives the same search whichever worker finishes first.
        # The first STARTUP_TRIALS are random (TPE learns nothing from them), so they go out in
        # one batch and keep every worker busy; then batches as wide as the cluster.
        width = max(slots, STARTUP_TRIALS - len(models))
        batch = [study.ask() for _ in range(min(width, n_trials - len(models)))]
        futures = []
        for trial in batch:
            family, params = suggest(trial, spec.task)
            futures.append(client.submit(_fit_trial, spec, shared, family, params, device, pure=False))
        for trial, model in zip(batch, client.gather(futures), strict=True):
            study.tell(trial, model.valid_score)
            models.append(model)
    return models


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


def score_standard_error(
    spec: DomainSpec, y: np.ndarray, scores: np.ndarray, rounds: int = 100, max_rows: int = 20_000, seed: int = 0
) -> float:
    """Bootstrap standard error of the primary metric on a split (at most ``max_rows`` rows are
    resampled; the error is scaled back to the split's size)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    m = min(n, max_rows)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, n, size=m)
        if spec.task != "regression" and len(np.unique(y[idx])) < 2:
            continue
        values.append(primary_score(spec, y[idx], scores[idx]))
    return float(np.std(values, ddof=1) * np.sqrt(m / n)) if len(values) > 1 else 0.0


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


def decision_threshold(spec: DomainSpec, data: PreparedData, model: TrainedModel) -> float:
    """Binary tasks: on validation, the threshold that keeps the spec's target sensitivity (when
    it has one), else the one that minimises its cost model; otherwise 0.5."""
    if spec.task == "binary" and spec.target_sensitivity is not None:
        return sensitivity_threshold(data.valid.y, model.predict(data.valid.X), spec.target_sensitivity)
    if spec.task == "binary" and spec.cost is not None:
        return cost_threshold(data.valid.y, model.predict(data.valid.X), spec.cost)
    return 0.5


def choose(spec: DomainSpec, pool: list[TrainedModel], standard_error: float) -> tuple[TrainedModel, str]:
    """Prefer the simpler model unless a more complex one is better by more than the noise.

    ``pool[0]`` is the untuned baseline. Families are tried from simplest (linear) to most
    opaque (xgboost, then the MLP); the first family whose best validation score is within one standard error
    of the overall best wins (Breiman's one-standard-error rule), and within the linear family the
    baseline itself is kept unless tuning beat it by more than one standard error.
    """
    baseline = pool[0]
    best_score = max(m.valid_score for m in pool)
    name = spec.primary_metric
    for family in families():
        members = [m for m in pool if m.family == family]
        if not members:
            continue
        top = max(members, key=lambda m: m.valid_score)
        if top.valid_score < best_score - standard_error:
            continue
        if family == "linear" and baseline.valid_score >= top.valid_score - standard_error:
            top = baseline
        trees = [m.valid_score for m in pool if m.family == "xgboost"]
        reason = (
            f"validation {name} {abs(top.valid_score):.4f}, best of {len(pool)} models "
            f"{abs(best_score):.4f} (standard error {standard_error:.4f})"
        )
        if family == "linear" and trees:
            reason += f"; a linear model is as good as any tree model (best tree {abs(max(trees)):.4f})"
        return top, reason
    raise AssertionError("unreachable: the best model's family always qualifies")


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
    if candidate.family != "xgboost":
        return candidate
    distributed = client is not None and data.train.rows >= distributed_rows
    if candidate.train_rows == data.train.rows and not distributed:
        return candidate
    return train_model(spec, data, "xgboost", candidate.params, device, client if distributed else None)


def refit_with_validation(spec: DomainSpec, data: PreparedData, model: TrainedModel, device: str) -> TrainedModel:
    """``model`` fitted again on train + validation with the same settings (a tree model with the
    rounds early stopping chose); its validation score stays the one measured before, as the
    refitted model has seen those rows. An MLP keeps its fit (its epochs count is not comparable
    on more rows)."""
    if model.family == "mlp":
        return model
    params = dict(model.params)
    if model.family == "xgboost":
        params["n_estimators"] = int(model.best_iteration or 0) + 1
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
    pool = [trained.baseline, trained.default_tree, *found]
    sources = ["baseline", "default"] + ["search"] * len(found)
    best = max(pool, key=lambda m: m.valid_score)
    error = score_standard_error(spec, data.valid.y, best.predict(data.valid.X), seed=spec.split.seed)
    candidate, reason = choose(spec, pool, error)
    if sample is not data:
        reason += f"; candidates fitted on a sample of {sample.train.rows:,} of {data.train.rows:,} training rows"
    final = final_fit(spec, data, candidate, device, client, distributed_rows)
    if final is not candidate:
        reason += f"; refitted on {final.trained_on} (validation {spec.primary_metric} {abs(final.valid_score):.4f})"
        candidate = final
    calibration = None
    if spec.task == "binary":
        calibration = calibrate_candidate(spec, data, candidate)
        reason += f"; {calibration.reason}"
        if calibration.state is not None:
            candidate = dataclasses.replace(candidate, calibration=calibration.state)
    threshold = decision_threshold(spec, data, candidate)
    if spec.split.refit:
        refitted = refit_with_validation(spec, data, candidate, device)
        if refitted is not candidate:
            reason += f"; refitted on train + validation ({refitted.train_rows:,} rows)"
            candidate = refitted
    records = tuple(
        TrialRecord(i, m.family, m.params, m.valid_score, m.fit_seconds, src)
        for i, (m, src) in enumerate(zip(pool, sources, strict=True))
    )
    reason += f"; search of {n_trials} trial(s) took {time.perf_counter() - start:.1f}s"
    return OptimiseResult(
        candidate=candidate, threshold=threshold, trials=records, reason=reason, calibration=calibration
    )


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
