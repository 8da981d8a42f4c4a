"""Train: the baseline and the default tree model, and ``train_model``, which fits any registered
model family (``lepton.tasks.families``: ``linear``, ``xgboost``, and ``mlp`` with torch) and
scores it on validation. Nothing about MLflow here.

Large tables: many candidates are fitted on a sample of at most ``search_rows`` training rows,
fewer for a wide many-class table (``search_sample``); the chosen tree model is then fitted
once on every row (``optimise.final_fit``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from lepton.core.scoring import Calibrated, calibrated, load_model
from lepton.core.settings import SEARCH_ROWS
from lepton.domains.spec import DomainSpec
from lepton.tasks import families
from lepton.tasks.families import Pruning
from lepton.tasks.metrics import EvalContext, primary_score
from lepton.tasks.pareto import ServingCost
from lepton.tasks.preprocess import PreparedData

BASELINE_PARAMS: dict[str, Any] = {"C": 1.0}
DEFAULT_TREE_PARAMS: dict[str, Any] = {"max_depth": 6, "learning_rate": 0.1, "n_estimators": 400}
# A search fits its candidates on at most this many training-matrix cells times trees per round:
# finance's 27 columns reach LEPTON_SEARCH_ROWS first; TEP's 208 columns and 22 classes stop at
# 27,972 rows (its vendored 8,464 training rows are searched whole). Fixed, not timed: the same
# table gives the same sample on any machine under any load.
SEARCH_CELLS = 128_000_000
SEARCH_FLOOR = 1000  # never fewer rows than LEPTON_SEARCH_ROWS's own minimum


@dataclass(frozen=True)
class TrainedModel:
    """A fitted model: its family, hyper-parameters, safe payload and validation score."""

    family: str
    params: dict[str, Any]
    payload: Any  # dict (linear) or bytes (xgboost UBJ)
    n_features: int
    task: str
    valid_score: float
    fit_seconds: float
    device: str = "cpu"
    best_iteration: int | None = None
    train_rows: int = 0  # the rows it was fitted on
    workers: int = 0  # Dask workers that trained it together (XGBoost's collective); 0: one process
    calibration: dict[str, Any] | None = None  # binary: a map fitted on validation (lepton.tasks.calibrate)
    curve: tuple[float, ...] = ()  # xgboost: best validation loss so far, every PRUNE_EVERY rounds
    pruned: bool = False  # stopped by the median rule (``Pruning``): not a candidate
    serving: ServingCost | None = None  # measured by the search (lepton.tasks.pareto)

    @property
    def trained_on(self) -> str:
        where = f"XGBoost across {self.workers} Dask worker(s)" if self.workers else "one process"
        return f"{self.train_rows:,} rows, {where}"

    @functools.cached_property
    def predictor(self):
        """The model loaded from its payload, once: the same code that serves it (with its
        calibration map, when it has one)."""
        return calibrated(load_model(self.family, self.payload, self.task, self.n_features), self.calibration)

    def raw_predict(self, X: np.ndarray) -> np.ndarray:
        """The scores before calibration."""
        predictor = self.predictor
        return predictor.model.predict(X) if isinstance(predictor, Calibrated) else predictor.predict(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predictor.predict(X)


def train_model(
    spec: DomainSpec,
    data: PreparedData,
    family: str,
    params: dict[str, Any],
    device: str = "cpu",
    client: Any = None,
    pruning: Pruning | None = None,
) -> TrainedModel:
    """Fit one model of ``family`` (``lepton.tasks.families``) on train and score it on
    validation; with a Dask ``client`` an XGBoost model is trained across the cluster
    (``xgboost.dask``). ``pruning`` may stop an XGBoost trial early (the model is then marked
    ``pruned``)."""
    start = time.perf_counter()
    fitted = families.get(family).fit(spec, data, params, device, client, pruning)
    model = TrainedModel(
        family=family,
        params=dict(params),
        payload=fitted.payload,
        n_features=data.train.X.shape[1],
        task=spec.task,
        valid_score=float("nan"),
        fit_seconds=time.perf_counter() - start,
        device=fitted.device,
        best_iteration=fitted.best_iteration,
        train_rows=data.rows("train") if fitted.workers and data.table is not None else len(data.train.y),
        workers=fitted.workers,
        curve=fitted.curve,
        pruned=fitted.pruned,
    )
    score = primary_score(spec, data.valid.y, model.predict(data.valid.X))
    return dataclasses.replace(model, valid_score=score)


def fit_on_worker(
    spec: DomainSpec,
    data: PreparedData,
    family: str,
    params: dict[str, Any],
    device: str = "cpu",
    pruning: Pruning | None = None,
) -> TrainedModel:
    """``train_model`` run as a Dask task: the fitted model without its loaded predictor (sent
    back as its safe payload only)."""
    return dataclasses.replace(train_model(spec, data, family, params, device, pruning=pruning))


def search_limit(limit: int, width: int, classes: int) -> int:
    """The training rows a search fits its candidates on: at most ``limit``, and no more than
    ``SEARCH_CELLS`` matrix cells times trees per round (one per class past two), so a wide
    many-class table is searched on as much work as a narrow binary one, whatever the machine."""
    trees = classes if classes > 2 else 1
    return max(SEARCH_FLOOR, min(limit, SEARCH_CELLS // (max(1, width) * trees)))


def search_sample(data: PreparedData, limit: int, seed: int = 0) -> PreparedData:
    """``data`` with at most ``limit`` training rows (``search_limit``: fewer for a wide
    many-class table; a uniform sample, in their original order), for fitting many candidates;
    validation stays whole, so every candidate is scored on the same rows as the final model.
    ``data`` itself when it is small enough."""
    limit = search_limit(limit, data.train.X.shape[1], len(data.classes))
    n = data.train.rows
    if n <= limit:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
    slim = data.for_training()
    train = dataclasses.replace(slim.train, X=data.train.X[keep], y=data.train.y[keep])
    return dataclasses.replace(slim, train=train)


def normal_index(spec: DomainSpec, classes: list[Any]) -> int:
    """The index of the class that means normal operation among the encoded classes."""
    labels = [str(c) for c in classes]
    return labels.index(str(spec.normal_class)) if str(spec.normal_class) in labels else 0


def alarm_normal(spec: DomainSpec, classes: list[Any]) -> int | None:
    """The normal class's index when decisions follow the alarm rule (a multiclass spec with a
    false-alarm budget, ``lepton.core.scoring.alarm_classes``); None for arg-max decisions."""
    if spec.task != "multiclass" or spec.false_alarm_budget is None:
        return None
    return normal_index(spec, classes)


def holdout_context(
    spec: DomainSpec,
    data: PreparedData,
    threshold: float = 0.5,
    groups: np.ndarray | None = None,
    order: np.ndarray | None = None,
) -> EvalContext:
    """What the metrics need beyond labels, for the rows of ``data.holdout``, or for rows scored
    elsewhere (a partitioned table's whole holdout) given their ``groups`` and time ``order``."""
    frame = data.holdout.frame
    if groups is None and spec.group_column:
        groups = frame[spec.group_column].to_numpy()
    if order is None and spec.time_column:
        order = frame[spec.time_column].to_numpy()
    alarm = threshold if alarm_normal(spec, data.classes) is not None else None
    normal = normal_index(spec, data.classes)
    return EvalContext(threshold=threshold, groups=groups, order=order, normal=normal, alarm=alarm)


@dataclass(frozen=True)
class TrainResult:
    baseline: TrainedModel
    default_tree: TrainedModel


@task(name="train", cache_policy=NO_CACHE)
def train_task(
    spec: DomainSpec, data: PreparedData, device: str, search_rows: int = SEARCH_ROWS, client: Any = None
) -> TrainResult:
    """Fit the untuned linear baseline and an untuned XGBoost model.

    Args:
        spec: the domain.
        data: prepared splits.
        device: ``cpu`` or ``cuda`` for XGBoost.
        search_rows: both are fitted on at most this many training rows (``search_sample``).
        client: a Dask client: both are fitted on its workers, at once (a partitioned table's
            sample, so that this process never holds a model's working memory); None: here.
    Returns:
        TrainResult: the baseline (the bar every model must clear) and the default tree model.
    """
    sample = search_sample(data, search_rows, spec.split.seed)
    if client is not None:
        # hash=False: the optimise stage scatters the same sample next; under one content key its
        # scatter could race this future's release and lose the data ("lost dependencies")
        shared = client.scatter(sample.for_training(), broadcast=True, hash=False)
        baseline, tree = client.gather([
            client.submit(fit_on_worker, spec, shared, "linear", BASELINE_PARAMS, pure=False),
            client.submit(fit_on_worker, spec, shared, "xgboost", DEFAULT_TREE_PARAMS, device, pure=False),
        ])  # fmt: skip
        return TrainResult(baseline=baseline, default_tree=tree)
    return TrainResult(
        baseline=train_model(spec, sample, "linear", BASELINE_PARAMS),
        default_tree=train_model(spec, sample, "xgboost", DEFAULT_TREE_PARAMS, device),
    )
