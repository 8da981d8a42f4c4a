"""``xgboost``: gradient-boosted trees with early stopping on the validation split, on CUDA when a
GPU is visible, CPU ``hist`` otherwise; exported in XGBoost's own UBJ format. Given a Dask client,
the same model is trained by ``xgboost.dask`` across the cluster's workers (each holds a block of
rows; the quantile sketch and the gradient histograms are merged by XGBoost's collective), and
comes back as the same UBJ booster. ``Pruning`` stops a search trial that falls behind."""

from __future__ import annotations

import contextvars
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from lepton.core.engine import cpu_threads
from lepton.core.partitions import WorkerTable
from lepton.core.scoring import TreeModel, category_blocks, compact, feature_types
from lepton.domains.spec import DomainSpec
from lepton.tasks.families.base import Family, Fit
from lepton.tasks.preprocess import PreparedData

EARLY_STOPPING_ROUNDS = 30
COLLECTIVE_TIMEOUT_S = 300  # an XGBoost collective call waiting this long for a peer fails
WATCH_EVERY_S = 0.5  # how often a fit across the cluster checks that its workers are all there
# A worker lost while its memory was above this share of its limit (as the scheduler last heard,
# every WATCH_EVERY_S) is reported as killed for memory: Dask's nanny kills it at 95%, and the
# scheduler hears of a worker's memory about once a second.
MEMORY_PRESSURE = 0.7
PRUNE_EVERY = 10  # rounds between the pruning rule's checks (and the points of a trial's curve)
# Trees split categoricals natively (one column of level codes each, ``scoring.compact``) when they
# train on at least this many rows: there the one-hot columns' histograms dominate a fit's time
# (1M finance rows: 130 one-hot columns against 29). Below it they keep one-hot: the small sample
# tables' holdout quality was measured lower with native splits (finance 0.7518 against 0.7616).
NATIVE_CATEGORIES_ROWS = 100_000
T = TypeVar("T")


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


def _memory(client: Any) -> dict[str, tuple[int, int]]:
    """Each worker's process memory and memory limit in bytes (limit 0: none), as the scheduler
    last heard; nothing when the scheduler cannot be asked."""

    def read(dask_scheduler: Any) -> dict[str, tuple[int, int]]:
        return {a: (int(w.memory.process), int(w.memory_limit or 0)) for a, w in dask_scheduler.workers.items()}

    try:
        return client.run_on_scheduler(read)
    except Exception:  # the loss check below still runs; only the memory figures are missing
        return {}


def _watched(client: Any, fit: Callable[[], T], share: Callable[[str], str] | None = None) -> T:
    """``fit()`` (a fit across the cluster), watched from this thread.

    A worker lost mid-fit would leave the others waiting in XGBoost's collective and the fit's
    future unresolved (its task is pinned to the lost worker): the loss raises an EngineError at
    once (the collective's own timeout frees the others) — a WorkerMemoryError, naming its memory,
    its share of the table (``share(address)``) and the settings to change, where the worker was
    near its memory limit when last seen."""
    from lepton.errors import EngineError, WorkerMemoryError

    started = set(client.nthreads())
    seen: dict[str, tuple[int, int]] = {}
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["fit"] = fit()
        except BaseException as exc:  # handed to the caller's thread below
            out["error"] = exc

    runner = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True, name="final-fit")
    runner.start()
    while runner.is_alive():
        runner.join(WATCH_EVERY_S)
        lost = started - set(client.nthreads())
        if lost and runner.is_alive():
            pressed = [a for a in sorted(lost) if seen.get(a, (0, 0))[1] and seen[a][0] >= MEMORY_PRESSURE * seen[a][1]]
            if pressed:
                used, limit = seen[pressed[0]]
                held = f" It held {share(pressed[0])}." if share else ""
                raise WorkerMemoryError(
                    f"the Dask worker {pressed[0]} was lost during the final fit with XGBoost, at "
                    f"{used / 2**30:.1f} of its {limit / 2**30:.1f} GiB memory limit when last seen: most likely "
                    f"killed for using too much memory.{held} Nothing was registered. Give each worker more "
                    "memory (dask worker --memory-limit), write the table as more, smaller files, or add workers"
                )
            raise EngineError(
                f"the Dask cluster lost {len(lost)} worker(s) ({', '.join(sorted(lost))}) during the final fit "
                "with XGBoost; nothing was registered. Run again (the cluster's other workers recompute the "
                "lost partitions), or give the workers more memory (dask worker --memory-limit) if they were killed "
                "for using too much"
            )
        seen.update(_memory(client))
    if "error" in out:
        raise out["error"]
    return out["fit"]


def _train_on_dask(client: Any, params: dict[str, Any], rounds: int, max_bin: int, types, X, y, X_valid, y_valid):
    """Train with ``xgboost.dask`` from Dask arrays whose blocks are on the workers."""
    import xgboost as xgb
    import xgboost.dask  # ``xgb.dask`` is only bound once imported
    from xgboost.collective import Config

    def fit() -> Any:
        # xgboost.dask waits on ``distributed.wait``, which takes the process's default client:
        # make it ours, or a second client in the process (a caller's own) deadlocks the event loop.
        with client.as_current():
            kinds = {"feature_types": types, "enable_categorical": bool(types), "max_bin": max_bin}
            train = xgb.dask.DaskQuantileDMatrix(client, X, y, **kinds)
            valid = xgb.dask.DaskQuantileDMatrix(client, X_valid, y_valid, ref=train, **kinds)
            return xgb.dask.train(
                client,
                params,
                train,
                num_boost_round=rounds,
                evals=[(valid, "valid")],
                early_stopping_rounds=EARLY_STOPPING_ROUNDS,
                verbose_eval=False,
                coll_cfg=Config(timeout=COLLECTIVE_TIMEOUT_S),
            )["booster"]

    return _watched(client, fit), max(1, len(client.nthreads()))


def _start_tracker(client: Any, workers: int) -> dict[str, Any]:
    """XGBoost's tracker (which pairs the workers in its collective) started in the scheduler's
    process, as ``xgboost.dask`` does, on the scheduler's host; the arguments each worker joins
    with. Defined here by value: the scheduler needs XGBoost, not Lepton."""
    from distributed.comm import get_address_host
    from xgboost.collective import Config

    def start(n_workers: int, host: str, timeout: int) -> dict[str, Any]:
        import threading

        from xgboost.tracker import RabitTracker

        tracker = RabitTracker(n_workers=n_workers, host_ip=host, sortby="task", timeout=timeout)
        tracker.start()
        threading.Thread(target=tracker.wait_for, daemon=True).start()  # holds the tracker until all leave
        return tracker.worker_args()

    host = get_address_host(client.scheduler.address).strip("/:")
    args = client.run_on_scheduler(start, workers, host, COLLECTIVE_TIMEOUT_S)
    return Config(timeout=COLLECTIVE_TIMEOUT_S).get_comm_config(args)


@dataclass(frozen=True)
class _Share:
    """One worker's part in a fit across the cluster: where it must run, how XGBoost's
    collective is joined, and the partitions it reads and encodes."""

    address: str
    collective: dict[str, Any]
    sources: tuple[tuple[Any, str, int], ...]  # WorkerTable.sources of this worker's partitions
    read: Callable[..., Any]
    encode: Callable[[Any, str], tuple[np.ndarray, np.ndarray]]
    features: int
    rows: dict[str, tuple[int, ...]]  # side -> rows of each of this worker's partitions
    blocks: tuple[tuple[int, int], ...] = ()  # categoricals split natively (``scoring.compact``)


def _fit_here(share: _Share, params: dict[str, Any], rounds: int, max_bin: int) -> bytes | None:
    """On one worker: its partitions, read from their files and encoded batch by batch as XGBoost
    asks for them (a quantised matrix is all that is kept), trained together with the other
    workers in XGBoost's collective. The booster (UBJ) from a worker that had training rows."""
    import xgboost as xgb
    from distributed import get_worker
    from xgboost.dask import CommunicatorContext

    from lepton.errors import EngineError

    worker = get_worker()
    if worker.address != share.address:  # the fit is paired by address: a stand-in would hang the rest
        raise EngineError(f"the final fit's task for {share.address} ran on {worker.address}: that worker was lost")
    threads = worker.state.nthreads
    blocks = list(share.blocks)
    types = feature_types(blocks)
    width = len(types) if types else share.features

    # XGBoost passes over a DataIter's batches four times to build a quantised matrix: each file
    # is read once, both its sides encoded then, and a side's batches (level codes: a few columns)
    # are kept until its matrix is built.
    kept: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    built = {"train": False, "valid": False}

    def batch(side: str, at: int) -> tuple[np.ndarray, np.ndarray]:
        if (side, at) not in kept:
            frame = share.read(*share.sources[at])
            for s in ("train", "valid"):
                if share.rows[s][at] and (s == side or not built[s]):
                    X, y = share.encode(frame, s)
                    kept[s, at] = compact(X, blocks), y
        return kept[side, at]

    class Batches(xgb.DataIter):
        def __init__(self, side: str) -> None:
            self.side, self.at = side, 0
            super().__init__(release_data=True)

        def next(self, input_data: Callable[..., None]) -> bool:
            while self.at < len(share.sources):
                at, self.at = self.at, self.at + 1
                if not share.rows[self.side][at]:  # nothing on this side: the file is not read for it
                    continue
                X, y = batch(self.side, at)
                if len(y):
                    input_data(data=X, label=y, feature_types=types)
                    return True
            return False

        def reset(self) -> None:
            self.at = 0

    def matrix(side: str, ref: Any = None) -> Any:
        kinds = {"ref": ref, "max_bin": max_bin, "enable_categorical": bool(types)}
        if not sum(share.rows[side]):  # none here: this worker takes part without
            out = xgb.QuantileDMatrix(np.empty((0, width), np.float32), feature_types=types, **kinds)
        else:
            out = xgb.QuantileDMatrix(Batches(side), nthread=threads, **kinds)
        built[side] = True
        for key in [k for k in kept if k[0] == side]:
            del kept[key]
        return out

    with CommunicatorContext(**share.collective):
        train = matrix("train")
        valid = matrix("valid", ref=train)
        booster = xgb.train(
            {**params, "nthread": threads},
            train,
            num_boost_round=rounds,
            evals=[(valid, "valid")],
            early_stopping_rounds=EARLY_STOPPING_ROUNDS,
            verbose_eval=False,
        )
    return bytes(booster.save_raw("ubj")) if train.num_row() else None


def _train_on_table(client: Any, params: dict[str, Any], rounds: int, max_bin: int, table: WorkerTable, blocks):
    """Train across the cluster's workers, each reading its share of ``table``'s files."""
    import xgboost as xgb

    placed = table.placed(list(client.nthreads()))

    def fit() -> Any:
        collective = _start_tracker(client, len(placed))
        futures = []
        for address, parts in placed.items():
            rows = {side: tuple(table.rows[side][i] for i in parts) for side in ("train", "valid")}
            sources = tuple(table.sources[i] for i in parts)
            share = _Share(address, collective, sources, table.read, table.encode, table.features, rows, blocks)
            futures.append(
                client.submit(
                    _fit_here, share, params, rounds, max_bin, workers=[address], allow_other_workers=False, pure=False
                )
            )
        raw = next(b for b in client.gather(futures) if b is not None)
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return booster

    def held(address: str) -> str:
        parts = placed.get(address, [])
        rows = [table.rows["train"][i] + table.rows["valid"][i] for i in parts]
        largest = max(rows, default=0)
        return f"{len(parts)} file(s), {sum(rows):,} training and validation rows, {largest:,} in its largest"

    return _watched(client, fit, held), len(placed)


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
    table: WorkerTable | None = None,
    blocks: Sequence[tuple[int, int]] = (),
) -> tuple[bytes, int, int]:
    """Train with early stopping on the validation split, in this process or, given a Dask
    ``client``, across its workers (from the arrays, or from ``table``'s partitions where they
    lie); return (UBJ bytes, best iteration, Dask workers used). ``callbacks`` (XGBoost
    ``TrainingCallback``) watch a fit in this process. ``blocks`` (``scoring.category_blocks``)
    are one-hot categoricals the trees split on natively, as one column of level codes each:
    the histograms then cover a few columns where one-hot makes hundreds."""
    import xgboost as xgb

    params = dict(params)
    rounds = int(params.pop("n_estimators", 400))
    booster_params = _booster_params(task, n_classes, params, device, seed)
    max_bin = int(booster_params.get("max_bin", 256))
    blocks = list(blocks)
    types = feature_types(blocks)
    if blocks:  # one level against the rest at each split, as one-hot trees split
        booster_params.setdefault("max_cat_to_onehot", 1 + max(n for _, n in blocks))
    if client is not None and table is not None:
        booster, workers = _train_on_table(client, booster_params, rounds, max_bin, table, tuple(blocks))
    elif client is not None:
        n = max(1, len(client.nthreads()))
        X, X_valid = compact(X, blocks), compact(X_valid, blocks)
        arrays = tuple(_row_blocks(client, a, n) for a in (X, y, X_valid, y_valid))
        booster, workers = _train_on_dask(client, booster_params, rounds, max_bin, types, *arrays)
    else:
        kinds = {"feature_types": types, "enable_categorical": bool(types), "max_bin": max_bin}
        train = xgb.QuantileDMatrix(compact(X, blocks), label=y, **kinds)
        valid = xgb.QuantileDMatrix(compact(X_valid, blocks), label=y_valid, ref=train, **kinds)
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
    if blocks:  # the served model folds its one-hot input the same way
        booster.set_attr(**{TreeModel.CATEGORY_BLOCKS: json.dumps(blocks)})
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


class Trees(Family):
    name = "xgboost"
    colour = "tab:orange"
    summary = "gradient-boosted trees (XGBoost, on a GPU when there is one), exported as UBJ"
    refits_on_all_rows = True  # a tree model keeps learning from rows a search sample left out

    def suggest(self, trial: Any, task: str) -> dict[str, Any]:
        return {
            "max_depth": trial.suggest_int("max_depth", 2, 8),
            "learning_rate": trial.suggest_float("learning_rate", 0.05, 0.3, log=True),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
            "max_bin": 128,
            "n_estimators": 300,
        }

    def fit(
        self,
        spec: DomainSpec,
        data: PreparedData,
        params: dict[str, Any],
        device: str = "cpu",
        client: Any = None,
        pruning: Pruning | None = None,
    ) -> Fit:
        watch = _watch(pruning) if client is None else None
        train, valid = data.train, data.valid
        payload, best, workers = fit_xgboost(
            train.X,
            train.y,
            valid.X,
            valid.y,
            spec.task,
            len(data.classes),
            params,
            device,
            spec.split.seed,
            client,
            (watch,) if watch else (),
            data.table if client is not None else None,
            category_blocks(data.encoder) if data.rows("train") >= NATIVE_CATEGORIES_ROWS else [],
        )
        curve, pruned = (tuple(watch.curve), bool(watch.pruned)) if watch else ((), False)
        return Fit(payload, device=device, best_iteration=best, workers=workers, curve=curve, pruned=pruned)

    def refit_params(self, params: dict[str, Any], best_iteration: int | None) -> dict[str, Any] | None:
        return {**params, "n_estimators": int(best_iteration or 0) + 1}  # the rounds early stopping chose
