"""Train: the baseline and the model families, as pure functions of arrays. Nothing about MLflow here.

- ``linear``: regularised logistic (binary/multiclass) or ridge regression on imputed,
  standardised features; exported as plain numbers.
- ``xgboost``: gradient-boosted trees with early stopping on the validation split, on CUDA
  when a GPU is visible, CPU ``hist`` otherwise; exported in XGBoost's own UBJ format. Given a
  Dask client, the same model is trained by ``xgboost.dask`` across the cluster's workers (each
  holds a block of rows; the quantile sketch and the gradient histograms are merged by XGBoost's
  collective), and comes back as the same UBJ booster.
- ``mlp``: a small torch network, offered when torch is installed (the ``torch`` extra);
  exported as plain weights and served with NumPy.

Large tables: many candidates are fitted on a sample of at most ``search_rows`` training rows
(``search_sample``); the chosen tree model is then fitted once on every row (``optimise.final_fit``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE
from sklearn.linear_model import LogisticRegression, Ridge

from lepton.core.engine import cpu_threads
from lepton.core.scoring import Calibrated, Standardiser, calibrated, load_model
from lepton.core.settings import SEARCH_ROWS
from lepton.domains.spec import DomainSpec
from lepton.tasks.metrics import EvalContext, primary_score
from lepton.tasks.pareto import ServingCost
from lepton.tasks.preprocess import PreparedData

BASELINE_PARAMS: dict[str, Any] = {"C": 1.0}
DEFAULT_TREE_PARAMS: dict[str, Any] = {"max_depth": 6, "learning_rate": 0.1, "n_estimators": 400}
EARLY_STOPPING_ROUNDS = 30
MLP_PATIENCE = 6  # epochs without a better validation loss before an MLP stops
MLP_MAX_STEPS = 20_000  # optimiser steps at most: on a million rows, a few epochs
PRUNE_EVERY = 10  # rounds between the pruning rule's checks (and the points of a trial's curve)


@dataclass(frozen=True)
class Pruning:
    """The median stopping rule for tree trials: from round ``warmup`` on, a trial whose best
    validation loss so far is worse than the median of earlier complete trials' at the same round
    stops there (Optuna's pruners serve single-objective studies only; this is its MedianPruner's
    rule, on XGBoost's own evaluation). ``medians[k]`` is for round ``(k + 1) * PRUNE_EVERY``."""

    medians: tuple[float, ...]
    warmup: int = 100

    def median(self, k: int) -> float:
        """The median at check ``k``; past the longest earlier trial, its last value."""
        return self.medians[min(k, len(self.medians) - 1)]

    @classmethod
    def from_curves(cls, curves: list[tuple[float, ...]], startup: int = 4) -> Pruning | None:
        """From earlier complete trials' curves (each held at its last value after it stopped);
        None until ``startup`` trials have finished."""
        curves = [c for c in curves if c]
        if len(curves) < startup:
            return None
        length = max(map(len, curves))
        padded = np.array([[*c, *[c[-1]] * (length - len(c))] for c in curves])
        return cls(tuple(float(v) for v in np.median(padded, axis=0)))


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
    workers: int = 0  # Dask workers that trained it with xgboost.dask; 0: one process
    calibration: dict[str, Any] | None = None  # binary: a map fitted on validation (lepton.tasks.calibrate)
    curve: tuple[float, ...] = ()  # xgboost: best validation loss so far, every PRUNE_EVERY rounds
    pruned: bool = False  # stopped by the median rule (``Pruning``): not a candidate
    serving: ServingCost | None = None  # measured by the search (lepton.tasks.pareto)

    @property
    def trained_on(self) -> str:
        where = f"xgboost.dask on {self.workers} worker(s)" if self.workers else "one process"
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


def standardisation(X: np.ndarray) -> dict[str, list[float]]:
    """Median fill for missing values, then mean and scale: fitted on training rows only."""
    with warnings.catch_warnings():  # an all-missing column has no median: it is filled with 0
        warnings.simplefilter("ignore", RuntimeWarning)
        fill = np.nanmedian(np.where(np.isfinite(X), X, np.nan), axis=0)
    fill = np.where(np.isnan(fill), 0.0, fill)
    Xf = np.where(np.isnan(X), fill, X).astype(np.float64)
    mean, scale = Xf.mean(axis=0), Xf.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return {"fill": fill.tolist(), "mean": mean.tolist(), "scale": scale.tolist()}


def fit_linear(X: np.ndarray, y: np.ndarray, task: str, C: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Fit on median-imputed, standardised features; return the model as plain numbers."""
    state = {"task": task, **standardisation(X)}
    Z = Standardiser(state).standardise(X.astype(np.float64))
    if task == "regression":
        model = Ridge(alpha=1.0 / C).fit(Z, y)
        coef, intercept = np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_)
    else:
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(Z, y)
        coef, intercept = model.coef_, model.intercept_
    return {**state, "coef": coef.tolist(), "intercept": intercept.tolist()}


def torch_available() -> bool:
    """The MLP family is offered when torch is installed (``pip install .[torch]``)."""
    return importlib.util.find_spec("torch") is not None


def torch_device(device: str) -> str:
    """``cuda`` when asked for and torch sees a GPU; else ``cpu``."""
    import torch

    return "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"


def _mlp_network(widths: list[int], rng: np.random.Generator, on: Any) -> tuple[Any, list[Any]]:
    """ReLU layers of the given widths, He-initialised from ``rng`` (not torch's global seed)."""
    import torch
    from torch import nn

    linears = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layer = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_out, fan_in))))
            layer.bias.zero_()
        linears.append(layer)
    net = nn.Sequential(*[m for layer in linears[:-1] for m in (layer, nn.ReLU())], linears[-1]).to(on)
    return net, linears


def _numbers(parameter: Any) -> np.ndarray:
    """A copy of a torch parameter's values (``.numpy()`` alone would share, and change)."""
    return parameter.detach().cpu().numpy().astype(np.float64)


def fit_mlp(
    X: np.ndarray,
    y: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    task: str,
    n_classes: int,
    params: dict[str, Any],
    device: str = "cpu",
    seed: int = 0,
) -> tuple[dict[str, Any], int]:
    """A ReLU MLP trained with torch (AdamW, mini-batches, early stopping on validation loss);
    return (the model as plain numbers, best epoch). Weights start from a NumPy generator seeded
    with ``seed`` and batches are shuffled by it, so concurrent trials stay reproducible."""
    import torch
    from torch import nn

    torch.set_num_threads(cpu_threads())
    rng = np.random.default_rng(seed)
    state = {"task": task, **standardisation(X)}
    scaler = Standardiser(state)
    on = torch.device(torch_device(device))

    def tensor(a: np.ndarray, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=on)

    outputs = n_classes if task == "multiclass" else 1
    y_mean, y_scale = (float(np.mean(y)), float(np.std(y)) or 1.0) if task == "regression" else (0.0, 1.0)
    widths = [X.shape[1], *[int(params.get("hidden", 64))] * int(params.get("layers", 2)), outputs]
    net, linears = _mlp_network(widths, rng, on)
    if task == "multiclass":
        loss_fn: nn.Module = nn.CrossEntropyLoss()
        target, target_valid = tensor(y, torch.long), tensor(y_valid, torch.long)
    else:
        loss_fn = nn.BCEWithLogitsLoss() if task == "binary" else nn.MSELoss()
        target = tensor((np.asarray(y, float) - y_mean) / y_scale).unsqueeze(1)
        target_valid = tensor((np.asarray(y_valid, float) - y_mean) / y_scale).unsqueeze(1)
    inputs, inputs_valid = tensor(scaler.standardise(X)), tensor(scaler.standardise(X_valid))
    rate, decay = float(params.get("learning_rate", 1e-3)), float(params.get("weight_decay", 1e-4))
    optimiser = torch.optim.AdamW(net.parameters(), lr=rate, weight_decay=decay)
    batch = int(params.get("batch_size", 256))
    # Until an epoch improves on it (a diverging run never does), the model is its start.
    best_loss, best_epoch, waited = np.inf, 0, 0
    best_state = [(_numbers(m.weight), _numbers(m.bias)) for m in linears]
    epochs = min(int(params.get("epochs", 60)), max(1, MLP_MAX_STEPS // -(-len(y) // batch)))
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            rows = torch.as_tensor(order[start : start + batch], device=on)
            optimiser.zero_grad()
            loss_fn(net(inputs[rows]), target[rows]).backward()
            optimiser.step()
        net.eval()
        with torch.no_grad():
            loss = float(loss_fn(net(inputs_valid), target_valid))
        if loss < best_loss - 1e-6:
            best_loss, best_epoch, waited = loss, epoch, 0
            best_state = [(_numbers(m.weight), _numbers(m.bias)) for m in linears]
        else:
            waited += 1
            if waited >= MLP_PATIENCE:
                break
    weight, bias = best_state[-1]
    best_state[-1] = (weight * y_scale, bias * y_scale + y_mean)  # undo the target's scaling
    layers = [{"weight": w.tolist(), "bias": b.tolist()} for w, b in best_state]
    return {**state, "layers": layers}, best_epoch


def xgb_objective(task: str, n_classes: int) -> dict[str, Any]:
    if task == "binary":
        return {"objective": "binary:logistic", "eval_metric": "logloss"}
    if task == "multiclass":
        return {"objective": "multi:softprob", "num_class": n_classes, "eval_metric": "mlogloss"}
    return {"objective": "reg:squarederror", "eval_metric": "rmse"}


def _booster_params(task: str, n_classes: int, params: dict[str, Any], device: str, seed: int) -> dict[str, Any]:
    return {
        **xgb_objective(task, n_classes),
        "tree_method": "hist",
        "device": device,
        "seed": seed,
        "verbosity": 0,
        **params,
    }


def _row_blocks(client: Any, array: np.ndarray, blocks: int) -> Any:
    """``array`` as a Dask array whose row blocks are scattered to the workers, one each in turn
    (the graph holds references, not the data)."""
    import dask.array as da

    bounds = np.linspace(0, len(array), blocks + 1).astype(int)
    pieces = [array[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    futures = client.scatter(pieces, hash=False)
    return da.concatenate(
        [da.from_delayed(f, shape=p.shape, dtype=p.dtype) for f, p in zip(futures, pieces, strict=True)]
    )


def _train_on_dask(client: Any, params: dict[str, Any], rounds: int, max_bin: int, X, y, X_valid, y_valid):
    import xgboost as xgb
    import xgboost.dask  # ``xgb.dask`` is only bound once imported

    workers = max(1, len(client.nthreads()))
    # xgboost.dask waits on ``distributed.wait``, which takes the process's default client: make
    # it ours, or a second client in the process (a caller's own) deadlocks the event loop.
    with client.as_current():
        train = xgb.dask.DaskQuantileDMatrix(
            client, _row_blocks(client, X, workers), _row_blocks(client, y, workers), max_bin=max_bin
        )
        valid = xgb.dask.DaskQuantileDMatrix(
            client,
            _row_blocks(client, X_valid, workers),
            _row_blocks(client, y_valid, workers),
            ref=train,
            max_bin=max_bin,
        )
        output = xgb.dask.train(
            client,
            params,
            train,
            num_boost_round=rounds,
            evals=[(valid, "valid")],
            early_stopping_rounds=EARLY_STOPPING_ROUNDS,
            verbose_eval=False,
        )
    return output["booster"], workers


def fit_xgboost(
    X: np.ndarray,
    y: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    task: str,
    n_classes: int,
    params: dict[str, Any],
    device: str = "cpu",
    seed: int = 0,
    client: Any = None,
    callbacks: tuple[Any, ...] = (),
) -> tuple[bytes, int, int]:
    """Train with early stopping on the validation split, in this process or, given a Dask
    ``client``, across its workers; return (UBJ bytes, best iteration, Dask workers used).
    ``callbacks`` (XGBoost ``TrainingCallback``) watch a fit in this process."""
    import xgboost as xgb

    params = dict(params)
    rounds = int(params.pop("n_estimators", 400))
    booster_params = _booster_params(task, n_classes, params, device, seed)
    max_bin = int(booster_params.get("max_bin", 256))
    if client is not None:
        booster, workers = _train_on_dask(client, booster_params, rounds, max_bin, X, y, X_valid, y_valid)
    else:
        train = xgb.QuantileDMatrix(X, label=y, max_bin=max_bin)
        valid = xgb.QuantileDMatrix(X_valid, label=y_valid, ref=train, max_bin=max_bin)
        booster = xgb.train(
            {**booster_params, "nthread": cpu_threads()},
            train,
            num_boost_round=rounds,
            evals=[(valid, "valid")],
            early_stopping_rounds=EARLY_STOPPING_ROUNDS,
            verbose_eval=False,
            callbacks=list(callbacks),
        )
        workers = 0
    best = int(booster.best_iteration)
    booster = booster[: best + 1]  # keep only the trees that helped on validation
    return bytes(booster.save_raw("ubj")), best, workers


def _watch(pruning: Pruning | None) -> Any:
    """An XGBoost callback that records the best validation loss every ``PRUNE_EVERY`` rounds
    and, given a ``Pruning`` rule, stops a trial that falls behind it."""
    import xgboost as xgb

    class Watch(xgb.callback.TrainingCallback):
        def __init__(self) -> None:
            self.best, self.curve, self.pruned = np.inf, [], False

        def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
            self.best = min(self.best, float(next(reversed(evals_log["valid"].values()))[-1]))
            if (epoch + 1) % PRUNE_EVERY:
                return False
            self.curve.append(self.best)
            k = len(self.curve) - 1
            if pruning is not None and epoch + 1 >= pruning.warmup:
                self.pruned = self.best > pruning.median(k)
            return self.pruned

    return Watch()


def train_model(
    spec: DomainSpec,
    data: PreparedData,
    family: str,
    params: dict[str, Any],
    device: str = "cpu",
    client: Any = None,
    pruning: Pruning | None = None,
) -> TrainedModel:
    """Fit one model of ``family`` on train and score it on validation; with a Dask ``client``
    an XGBoost model is trained across the cluster (``xgboost.dask``). ``pruning`` may stop an
    XGBoost trial early (the model is then marked ``pruned``)."""
    start = time.perf_counter()
    X, y, Xv, yv = data.train.X, data.train.y, data.valid.X, data.valid.y
    best, workers, watch = None, 0, None
    if family == "linear":
        payload: Any = fit_linear(X, y, spec.task, C=float(params.get("C", 1.0)), seed=spec.split.seed)
        used = "cpu"
    elif family == "mlp":
        payload, best = fit_mlp(X, y, Xv, yv, spec.task, len(data.classes), params, device, spec.split.seed)
        used = torch_device(device)
    elif family == "xgboost":
        watch = _watch(pruning) if client is None else None
        payload, best, workers = fit_xgboost(
            X,
            y,
            Xv,
            yv,
            spec.task,
            len(data.classes),
            params,
            device,
            spec.split.seed,
            client,
            (watch,) if watch else (),
        )
        used = device
    else:
        raise ValueError(f"unknown model family {family!r}; use 'linear', 'xgboost' or 'mlp'")
    seconds = time.perf_counter() - start
    model = TrainedModel(
        family=family,
        params=dict(params),
        payload=payload,
        n_features=X.shape[1],
        task=spec.task,
        valid_score=float("nan"),
        fit_seconds=seconds,
        device=used,
        best_iteration=best,
        train_rows=len(y),
        workers=workers,
        curve=tuple(watch.curve) if watch else (),
        pruned=bool(watch and watch.pruned),
    )
    score = primary_score(spec, yv, model.predict(Xv))
    return dataclasses.replace(model, valid_score=score)


def search_sample(data: PreparedData, limit: int, seed: int = 0) -> PreparedData:
    """``data`` with at most ``limit`` training rows (a uniform sample, in their original order),
    for fitting many candidates; validation stays whole, so every candidate is scored on the same
    rows as the final model. ``data`` itself when it is small enough."""
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


def holdout_context(spec: DomainSpec, data: PreparedData, threshold: float = 0.5) -> EvalContext:
    frame = data.holdout.frame
    groups = frame[spec.group_column].to_numpy() if spec.group_column else None
    order = frame[spec.time_column].to_numpy() if spec.time_column else None
    alarm = threshold if alarm_normal(spec, data.classes) is not None else None
    normal = normal_index(spec, data.classes)
    return EvalContext(threshold=threshold, groups=groups, order=order, normal=normal, alarm=alarm)


@dataclass(frozen=True)
class TrainResult:
    baseline: TrainedModel
    default_tree: TrainedModel


@task(name="train", cache_policy=NO_CACHE)
def train_task(spec: DomainSpec, data: PreparedData, device: str, search_rows: int = SEARCH_ROWS) -> TrainResult:
    """Fit the untuned linear baseline and an untuned XGBoost model.

    Args:
        spec: the domain.
        data: prepared splits.
        device: ``cpu`` or ``cuda`` for XGBoost.
        search_rows: both are fitted on at most this many training rows (``search_sample``).
    Returns:
        TrainResult: the baseline (the bar every model must clear) and the default tree model.
    """
    sample = search_sample(data, search_rows, spec.split.seed)
    return TrainResult(
        baseline=train_model(spec, sample, "linear", BASELINE_PARAMS),
        default_tree=train_model(spec, sample, "xgboost", DEFAULT_TREE_PARAMS, device),
    )
