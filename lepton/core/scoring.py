"""Inference from a model bundle: the one implementation used in evaluation, MLflow and serving.

A bundle is a directory of safe files only — no pickle anywhere:

    meta.json       ``BundleMeta``: task, classes, threshold, input columns, model family,
                    the recipe and smoothing configs, the calibration map
    encoder.json    fitted preprocessing (categorical levels), learned on train only
    model.json      a linear model's coefficients          (family "linear")
                    or an MLP's layer weights               (family "mlp", trained with torch)
    model.ubj       an XGBoost booster in its own format    (family "xgboost")
    ensemble.json   an ensemble's weights and member files  (family "ensemble"), beside
    member-K.*      each member in its own family's format
    reference.json.gz  training-time statistics for drift monitoring (gzip: a wide table's
                    quantile sketches are megabytes of JSON)

This module needs only numpy, pandas, polars and (for trees) xgboost, and the feature recipes
(``domains/recipes.py``, which also defines the recipe and smoothing configs), so a model logged
to MLflow carries both files as code and loads without Lepton installed.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    from lepton.domains import recipes
except ImportError:  # inside a logged MLflow model: recipes.py sits beside this file
    import recipes  # type: ignore[no-redef]

BUNDLE_FORMAT = 1
REFERENCE = "reference.json.gz"


# ---- preprocessing -----------------------------------------------------------------------------
DATETIME_PARTS = ("days", "month", "weekday")


def _datetime_parts(values: Any) -> np.ndarray:
    """Days since 1970, month and weekday of each value (text or datetime); NaN when missing."""
    stamps = pd.to_datetime(pd.Series(np.asarray(values)), errors="coerce", utc=True, format="mixed")
    days = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(days=1)
    return np.column_stack(
        [days.to_numpy(np.float64), stamps.dt.month.to_numpy(np.float64), stamps.dt.weekday.to_numpy(np.float64)]
    )


def encode(encoder: Mapping[str, Any], columns: Mapping[str, Any]) -> np.ndarray:
    """Turn raw columns into the model matrix: numeric as float32 (NaN for missing or infinite); datetimes as
    days since 1970, month and weekday; categorical one-hot over the levels seen in training
    (unseen and missing values are all zeros)."""
    numeric = encoder["numeric"]
    datetimes = encoder.get("datetime", [])
    categorical = encoder["categorical"]
    first = next(iter([*numeric, *datetimes, *categorical]))
    n_rows = len(columns[first])
    width = len(numeric) + len(DATETIME_PARTS) * len(datetimes) + sum(len(levels) for levels in categorical.values())
    matrix = np.zeros((n_rows, width), dtype=np.float32)
    if numeric:
        block = matrix[:, : len(numeric)]
        with np.errstate(over="ignore"):  # beyond float32 (1e300) is infinite, and so missing below
            for j, name in enumerate(numeric):
                values = np.asarray(columns[name])
                if values.dtype.kind not in "fiub":  # text, objects, None: what is not a number is missing
                    values = pd.to_numeric(pd.Series(values), errors="coerce")
                block[:, j] = values
        block[~np.isfinite(block)] = np.nan  # infinities are missing, not numbers
    offset = len(numeric)
    for name in datetimes:
        matrix[:, offset : offset + len(DATETIME_PARTS)] = _datetime_parts(columns[name])
        offset += len(DATETIME_PARTS)
    for name, levels in categorical.items():
        codes = _level_codes(columns[name], levels)
        seen = codes >= 0
        matrix[np.flatnonzero(seen), offset + codes[seen]] = 1.0
        offset += len(levels)
    return matrix


def _level_codes(values: Any, levels: list[str]) -> np.ndarray:
    """Each value's index in ``levels`` as text (-1: unseen or missing): looked up in a dict,
    or through pandas for large arrays (faster from about 20,000 rows)."""
    values = np.asarray(values, dtype=object)
    if len(values) > 20_000:
        return pd.Index(levels).get_indexer(pd.Series(values).astype("string").astype(object))
    index = {level: i for i, level in enumerate(levels)}
    return np.array(
        [index.get(v, -1) if type(v) is str else -1 if _missing(v) else index.get(str(v), -1) for v in values],
        dtype=np.int64,
    )


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def feature_names(encoder: Mapping[str, Any]) -> list[str]:
    names = list(encoder["numeric"])
    names.extend(f"{name}.{part}" for name in encoder.get("datetime", []) for part in DATETIME_PARTS)
    for name, levels in encoder["categorical"].items():
        names.extend(f"{name}={level}" for level in levels)
    return names


def category_blocks(encoder: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(first column, levels) of each categorical's one-hot block in the model matrix; the
    blocks follow the numeric and datetime columns."""
    offset = len(encoder["numeric"]) + len(DATETIME_PARTS) * len(encoder.get("datetime", []))
    blocks = []
    for levels in encoder["categorical"].values():
        blocks.append((offset, len(levels)))
        offset += len(levels)
    return blocks


def compact(X: np.ndarray, blocks: list[tuple[int, int]]) -> np.ndarray:
    """A one-hot model matrix with each categorical's block folded into one column of level
    codes (NaN: unseen or missing), after the columns before the blocks: the input of a tree
    model that splits on categories natively (a few columns where one-hot makes hundreds)."""
    if not blocks:
        return X
    head = blocks[0][0]
    out = np.empty((len(X), head + len(blocks)), dtype=np.float32)
    out[:, :head] = X[:, :head]
    for j, (offset, n) in enumerate(blocks):
        block = X[:, offset : offset + n]
        codes = block @ np.arange(n, dtype=np.float32)  # one level is 1 in a row, or none
        codes[block.sum(axis=1) == 0] = np.nan
        out[:, head + j] = codes
    return out


def feature_types(blocks: list[tuple[int, int]]) -> list[str] | None:
    """XGBoost's feature types of ``compact``'s output: quantitative, then one categorical per
    block (None without categoricals)."""
    if not blocks:
        return None
    return ["q"] * blocks[0][0] + ["c"] * len(blocks)


def _spread(values: np.ndarray, X: np.ndarray, blocks: list[tuple[int, int]], width: int) -> np.ndarray:
    """Per-column values of a compact matrix (the last axis) back on the one-hot columns: a
    categorical's value on the row's level, or shared by its levels where the row has none."""
    head = blocks[0][0]
    out = np.zeros((*values.shape[:-1], width), dtype=values.dtype)
    out[..., :head] = values[..., :head]
    for j, (offset, n) in enumerate(blocks):
        if not n:
            continue
        active = X[:, offset : offset + n].astype(values.dtype)
        active += (active.sum(axis=1, keepdims=True) == 0) / n
        out[..., offset : offset + n] = values[..., head + j, None] * active[:, None, :]
    return out


# ---- models ------------------------------------------------------------------------------------
CHUNK_ROWS = 32_768  # rows a NumPy model scores at once: its float64 copies stay small on any batch


def by_rows(score: Callable[[np.ndarray], np.ndarray], X: np.ndarray) -> np.ndarray:
    """``score`` applied to ``X`` in blocks of ``CHUNK_ROWS`` rows (a row's score depends on that
    row alone), so scoring a large batch never holds several float64 copies of it."""
    if len(X) <= CHUNK_ROWS:
        return score(X)
    return np.concatenate([score(X[i : i + CHUNK_ROWS]) for i in range(0, len(X), CHUNK_ROWS)])


class Standardiser:
    """Median fill for missing values, then centring and scaling, fitted on training rows; the
    inputs of the linear and MLP families."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self.task = state["task"]
        self.fill = np.asarray(state["fill"], dtype=np.float64)
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.scale = np.asarray(state["scale"], dtype=np.float64)

    def standardise(self, X: np.ndarray) -> np.ndarray:
        """A float64 copy of ``X``, filled, centred and scaled in place (one copy, however large)."""
        Z = np.array(X, dtype=np.float64)
        np.copyto(Z, self.fill, where=np.isnan(Z))
        Z -= self.mean
        Z /= self.scale
        return Z


class LinearModel(Standardiser):
    """A (multinomial) logistic or ridge model stored as plain numbers."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        super().__init__(state)
        self.coef = np.asarray(state["coef"], dtype=np.float64)
        self.intercept = np.asarray(state["intercept"], dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return by_rows(self._predict, X)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return _link(self.task, self.standardise(X) @ self.coef.T + self.intercept)

    def importance(self) -> np.ndarray:
        return np.abs(self.coef).mean(axis=0)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Each input's share of the raw output, (rows, outputs, inputs): coefficient times
        standardised value."""
        z = self.standardise(X)
        return z[:, None, :] * self.coef[None, :, :]


def _link(task: str, z: np.ndarray) -> np.ndarray:
    """Raw outputs to predictions: identity, logistic (binary) or softmax (multiclass)."""
    if task == "regression":
        return z.ravel()
    if task == "binary":
        return np.exp(-np.logaddexp(0.0, -z.ravel()))  # the logistic function, without overflow
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class MLPModel(Standardiser):
    """A multilayer perceptron (ReLU hidden layers) on the same standardised inputs as the linear
    model, stored as plain numbers. Trained with torch; scored here with NumPy, so serving a
    model needs no torch."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        super().__init__(state)
        self.layers = [
            (np.asarray(layer["weight"], dtype=np.float64), np.asarray(layer["bias"], dtype=np.float64))
            for layer in state["layers"]
        ]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return by_rows(self._predict, X)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        h = self.standardise(X)
        for weight, bias in self.layers[:-1]:
            h = np.maximum(h @ weight.T + bias, 0.0)
        weight, bias = self.layers[-1]
        return _link(self.task, h @ weight.T + bias)

    def importance(self) -> np.ndarray:
        """Mean absolute first-layer weight of each input (inputs are standardised)."""
        return np.abs(self.layers[0][0]).mean(axis=0)


class TreeModel:
    """An XGBoost booster loaded from its own UBJ format. A booster trained with native
    categorical splits names its categoricals' one-hot blocks (``CATEGORY_BLOCKS``); it takes
    the one-hot matrix like every model and folds the blocks itself (``compact``)."""

    CATEGORY_BLOCKS = "lepton_category_blocks"

    def __init__(self, raw: bytes, task: str, n_features: int) -> None:
        import xgboost as xgb

        self.task = task
        self.n_features = n_features
        self.booster = xgb.Booster()
        self.booster.load_model(bytearray(raw))
        blocks = self.booster.attr(self.CATEGORY_BLOCKS)
        self.blocks = [(int(a), int(n)) for a, n in json.loads(blocks)] if blocks else []

    def _input(self, X: np.ndarray) -> np.ndarray:
        return compact(np.asarray(X, dtype=np.float32), self.blocks)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(self._input(X)))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """XGBoost's per-feature contributions (SHAP values) to the raw output, (rows, outputs,
        inputs), the bias left out; a native categorical's on its one-hot columns (``_spread``)."""
        import xgboost as xgb

        types = feature_types(self.blocks)
        matrix = xgb.DMatrix(self._input(X), feature_types=types, enable_categorical=bool(types))
        raw = self.booster.predict(matrix, pred_contribs=True)
        raw = raw.reshape(len(X), -1, raw.shape[-1])[:, :, :-1]
        return _spread(raw, np.asarray(X), self.blocks, self.n_features) if self.blocks else raw

    def importance(self) -> np.ndarray:
        """Total gain of each input; a native categorical's shared by its one-hot columns."""
        gains = self.booster.get_score(importance_type="gain")
        width = self.blocks[0][0] + len(self.blocks) if self.blocks else self.n_features
        out = np.zeros(width)
        for key, value in gains.items():
            out[int(key[1:])] = value
        if not self.blocks:
            return out
        return _spread(out[None, None, :], np.zeros((1, self.n_features)), self.blocks, self.n_features)[0, 0]


class EnsembleModel:
    """A weighted average of member models' scores (greedy ensemble selection,
    ``lepton.tasks.ensemble``). Each member is stored in its own family's safe file, the weights
    and the members' files in ``ensemble.json``; nothing is pickled."""

    def __init__(self, state: Mapping[str, Any], task: str, n_features: int) -> None:
        self.task = task
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.members = [load_model(m["family"], m["payload"], task, n_features) for m in state["members"]]
        if len(self.members) != len(self.weights) or not np.isclose(self.weights.sum(), 1.0):
            raise ValueError("an ensemble needs one weight per member, summing to 1")
        if self._explained():  # the scorer asks ``hasattr``: an MLP alone gives no reasons
            self.contributions = self._contributions

    def predict(self, X: np.ndarray) -> np.ndarray:
        total = self.weights[0] * np.asarray(self.members[0].predict(X), dtype=np.float64)
        for weight, member in zip(self.weights[1:], self.members[1:], strict=True):
            total += weight * np.asarray(member.predict(X), dtype=np.float64)
        return total

    def _explained(self) -> list[tuple[float, Any]]:
        """The members that explain their outputs, with their weights scaled to sum to 1."""
        explained = [(w, m) for w, m in zip(self.weights, self.members, strict=True) if hasattr(m, "contributions")]
        total = sum(w for w, _ in explained)
        return [(w / total, m) for w, m in explained]

    def _contributions(self, X: np.ndarray) -> np.ndarray:
        """Each input's contributions to the members' raw outputs, (rows, outputs, inputs),
        weighted as their scores are (members without contributions left out)."""
        parts = [w * np.asarray(m.contributions(X), dtype=np.float64) for w, m in self._explained()]
        return np.sum(parts, axis=0)

    def importance(self) -> np.ndarray:
        """The members' importances, each scaled to sum to 1, weighted as their scores are."""
        out = 0.0
        for weight, member in zip(self.weights, self.members, strict=True):
            values = np.asarray(member.importance(), dtype=np.float64)
            out = out + weight * values / (values.sum() or 1.0)
        return np.asarray(out)


ENSEMBLE = "ensemble"

# The served side of each model family (``lepton.tasks.families`` trains them): the safe file its
# payload is stored in (``.json``: plain numbers; otherwise the library's own bytes) and the
# predictor that loads it from (payload, task, number of features). An ensemble's payload is
# ``{"weights": [...], "members": [{"family": ..., "payload": ...}]}``; each member is stored in
# its own family's file (``model_files``).
MODELS: dict[str, tuple[str, Any]] = {
    "linear": ("model.json", lambda state, task, n: LinearModel(state)),
    "mlp": ("model.json", lambda state, task, n: MLPModel(state)),
    "xgboost": ("model.ubj", lambda raw, task, n: TreeModel(bytes(raw), task, n)),
    ENSEMBLE: ("ensemble.json", EnsembleModel),
}


def _model_file(family: str) -> str:
    if family not in MODELS:
        raise ValueError(f"unknown model family {family!r}; this Lepton serves {', '.join(MODELS)}")
    return MODELS[family][0]


def load_model(family: str, payload: bytes | Mapping[str, Any], task: str, n_features: int):
    """The predictor of ``family`` from its payload (bytes as read from its file, or a mapping)."""
    if _model_file(family).endswith(".json") and not isinstance(payload, Mapping):
        payload = json.loads(payload)
    return MODELS[family][1](payload, task, n_features)


def model_files(family: str, payload: bytes | Mapping[str, Any]) -> dict[str, bytes]:
    """A model's files as stored (name: bytes): its family's one file, or for an ensemble
    ``ensemble.json`` (weights and member files) and ``member-K`` files in the members' formats."""
    name = _model_file(family)
    if family != ENSEMBLE:
        return {name: json.dumps(payload).encode() if name.endswith(".json") else bytes(payload)}
    files: dict[str, bytes] = {}
    listed = []
    for k, member in enumerate(payload["members"]):
        if member["family"] == ENSEMBLE:
            raise ValueError("an ensemble's members are single models")
        suffix = Path(_model_file(member["family"])).suffix
        ((_, data),) = model_files(member["family"], member["payload"]).items()
        files[f"member-{k}{suffix}"] = data
        listed.append({"family": member["family"], "file": f"member-{k}{suffix}"})
    files[name] = json.dumps({"weights": list(payload["weights"]), "members": listed}, indent=1).encode()
    return files


def read_payload(directory: Path, family: str, name: str | None = None) -> bytes | dict[str, Any]:
    """The payload ``model_files`` stored under ``directory`` (a member's file is named in
    ``ensemble.json`` and must lie in ``directory`` itself, in its family's format)."""
    raw = (directory / (name or _model_file(family))).read_bytes()
    if family != ENSEMBLE:
        return json.loads(raw) if _model_file(family).endswith(".json") else raw
    state = json.loads(raw)
    members = []
    for member in state["members"]:
        file, kind = str(member["file"]), str(member["family"])
        if kind == ENSEMBLE or Path(file).name != file or Path(file).suffix != Path(_model_file(kind)).suffix:
            raise ValueError(f"an ensemble member's file {file!r} is not a {kind} file of its bundle")
        members.append({"family": kind, "payload": read_payload(directory, kind, file)})
    return {"weights": state["weights"], "members": members}


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def apply_calibration(state: Mapping[str, Any], p: np.ndarray) -> np.ndarray:
    """A fitted calibration map (``lepton.tasks.calibrate``) applied to probabilities ``p``: sigmoid
    of ``a * logit(p) + b``, or isotonic (linear between its breakpoints, clipped at the ends); or,
    for class probabilities (rows), one such map per class (None: that class's raw scores), the
    rows then scaled to sum to 1."""
    if state["method"] == "one_vs_rest":
        p = np.asarray(p, dtype=np.float64)
        out = np.column_stack(
            [p[:, c] if m is None else apply_calibration(m, p[:, c]) for c, m in enumerate(state["classes"])]
        )
        total = out.sum(axis=1, keepdims=True)
        return np.divide(out, total, out=np.full_like(out, 1.0 / out.shape[1]), where=total > 0)
    if state["method"] == "sigmoid":
        return 1.0 / (1.0 + np.exp(-(state["a"] * logit(p) + state["b"])))
    if state["method"] == "isotonic":
        return np.interp(p, state["x"], state["y"])
    raise ValueError(f"unknown calibration method {state['method']!r}")


class Calibrated:
    """A binary model whose probabilities go through a calibration map; its explanations
    (contributions, importance) are the underlying model's."""

    def __init__(self, model: Any, state: Mapping[str, Any]) -> None:
        self.model = model
        self.state = state

    def predict(self, X: np.ndarray) -> np.ndarray:
        return apply_calibration(self.state, self.model.predict(X))

    def __getattr__(self, name: str) -> Any:  # only for what the instance itself lacks
        if name in ("model", "state"):
            raise AttributeError(name)
        return getattr(self.model, name)


def calibrated(model: Any, state: Mapping[str, Any] | None) -> Any:
    return Calibrated(model, state) if state else model


# ---- bundle ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BundleMeta:
    """What a bundle's ``meta.json`` says about its model: what it predicts (task, classes, the
    decision threshold, the alarm rule's normal class), what it takes (the raw input columns),
    what runs around it (the recipe before, the calibration map and smoothing after) and how it
    is stored (family, format)."""

    domain: str
    task: str
    family: str
    classes: tuple[str, ...] = ()
    threshold: float | None = None
    alarm_normal: int | None = None  # multiclass: the normal class's index when it decides by the alarm rule
    primary_metric: str | None = None
    inputs: tuple[str, ...] = ()
    recipe: recipes.RecipeConfig | None = None
    smoothing: recipes.SmoothingConfig | None = None
    calibration: Mapping[str, Any] | None = None
    # the map the estimate without labels draws through where the served scores are raw
    # (``lepton.tasks.calibrate.fit_estimation_map``); None: the served scores themselves
    estimation_map: Mapping[str, Any] | None = None
    # binary: the calibration's uncertainty per bin of the validation scores, which the estimate's
    # band carries (``lepton.tasks.calibrate.fit_calibration_spread``)
    estimation_spread: Mapping[str, Any] | None = None
    # the estimate of the holdout at training beside its realised metric (``lepton.tasks.estimate.holdout_check``)
    estimation_check: Mapping[str, Any] | None = None
    format: int = BUNDLE_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "classes": list(self.classes),
            "inputs": list(self.inputs),
            "recipe": self.recipe.to_json() if self.recipe else None,
            "smoothing": self.smoothing.to_json() if self.smoothing else None,
            "calibration": dict(self.calibration) if self.calibration else None,
            "estimation_map": dict(self.estimation_map) if self.estimation_map else None,
            "estimation_spread": dict(self.estimation_spread) if self.estimation_spread else None,
            "estimation_check": dict(self.estimation_check) if self.estimation_check else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BundleMeta:
        """A ``meta.json`` read back; a bundle of another format is refused."""
        if data.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"bundle format {data.get('format')} is not {BUNDLE_FORMAT}")
        threshold, normal = data.get("threshold"), data.get("alarm_normal")
        return cls(
            domain=str(data.get("domain", "")),
            task=str(data["task"]),
            family=str(data["family"]),
            classes=tuple(str(c) for c in data.get("classes") or ()),
            threshold=None if threshold is None else float(threshold),
            alarm_normal=None if normal is None else int(normal),
            primary_metric=data.get("primary_metric"),
            inputs=tuple(data.get("inputs") or ()),
            recipe=recipes.RecipeConfig.from_json(data.get("recipe")),
            smoothing=recipes.SmoothingConfig.from_json(data.get("smoothing")),
            calibration=data.get("calibration") or None,
            estimation_map=data.get("estimation_map") or None,
            estimation_spread=data.get("estimation_spread") or None,
            estimation_check=data.get("estimation_check") or None,
        )


def write_bundle(
    directory: Path, *, meta: BundleMeta, encoder: dict, payload: bytes | Mapping[str, Any], reference: dict
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta.json").write_text(json.dumps(meta.to_json(), indent=1))
    (directory / "encoder.json").write_text(json.dumps(encoder, indent=1))
    (directory / REFERENCE).write_bytes(gzip.compress(json.dumps(reference).encode(), mtime=0))
    for name, data in model_files(meta.family, payload).items():
        (directory / name).write_bytes(data)
    return directory


def read_reference(directory: Path) -> dict[str, Any]:
    """A bundle's reference statistics (``reference.json`` in bundles from before gzip)."""
    packed = directory / REFERENCE
    if packed.exists():
        return json.loads(gzip.decompress(packed.read_bytes()))
    return json.loads((directory / "reference.json").read_text())


def _apply_recipe(recipe: recipes.RecipeConfig, rows: Any) -> dict[str, Any]:
    """``rows`` (a pandas or polars frame, or a mapping of columns) as a mapping of columns,
    with the recipe's derived columns added."""
    if isinstance(rows, pd.DataFrame):  # through polars: nullable pandas types become NaN / None
        import polars as pl

        rows = pl.from_pandas(rows)
    if not isinstance(rows, Mapping):
        rows = {name: rows[name].to_numpy() for name in rows.columns}
    return {**rows, **recipes.derive(recipe, rows)}


def smooth_scores(scores: np.ndarray, groups: np.ndarray, order: np.ndarray, window: int) -> np.ndarray:
    """Each row's scores averaged with those of the ``window - 1`` rows before it in its group
    (by ``order``): past rows only, in whatever order the rows come."""
    if len(scores) == 1:  # a row alone in its window is its own mean
        return scores
    import polars as pl

    matrix = scores.reshape(len(scores), -1)
    names = [f"s{i}" for i in range(matrix.shape[1])]
    frame = pl.DataFrame(matrix, schema=names).with_columns(
        pl.Series("__group", groups), pl.Series("__order", order), pl.int_range(pl.len()).alias("__row")
    )
    smoothed = (
        frame.sort(["__group", "__order", "__row"])
        .with_columns(pl.col(names).rolling_mean(window, min_samples=1).over("__group"))
        .sort("__row")
    )
    return smoothed.select(names).to_numpy().reshape(scores.shape)


def smoothed(config: recipes.SmoothingConfig | None, scores: np.ndarray, rows: Any) -> np.ndarray:
    """``scores`` through a decision-smoothing config (``DomainSpec.smoothing_config``), reading
    the group and time columns from ``rows``; unchanged without one."""
    if config is None:
        return scores
    groups, order = np.asarray(rows[config.group]), np.asarray(rows[config.time])
    return smooth_scores(scores, groups, order, config.window)


def alarm_classes(proba: np.ndarray, normal: int | None = None, threshold: float | None = None) -> np.ndarray:
    """Multiclass decisions as class indices: the arg-max class; with an alarm rule (``normal``,
    the index of normal operation, and ``threshold``), the most probable fault when
    1 - P(normal) reaches the threshold and normal operation otherwise."""
    if normal is None or threshold is None:
        return proba.argmax(axis=1)
    faults = np.where(np.arange(proba.shape[1]) == normal, -np.inf, proba).argmax(axis=1)
    return np.where(1.0 - proba[:, normal] >= threshold, faults, normal)


class Scorer:
    """Score raw rows (a pandas or polars frame, or a mapping of columns) with a bundle."""

    def __init__(self, meta: BundleMeta, encoder: dict, model: Any) -> None:
        self.meta = meta
        self.encoder = encoder
        self.model = model
        self.feature_names = feature_names(encoder)

    @classmethod
    def from_dir(cls, directory: str | Path) -> Scorer:
        directory = Path(directory)
        meta = BundleMeta.from_json(json.loads((directory / "meta.json").read_text()))
        encoder = json.loads((directory / "encoder.json").read_text())
        model = load_model(meta.family, read_payload(directory, meta.family), meta.task, len(feature_names(encoder)))
        return cls(meta, encoder, calibrated(model, meta.calibration))

    @property
    def input_columns(self) -> list[str]:
        return [*self.encoder["numeric"], *self.encoder.get("datetime", []), *self.encoder["categorical"]]

    @property
    def raw_inputs(self) -> list[str]:
        """The columns a caller must send: before the recipe's derived features."""
        return list(self.meta.inputs or self.input_columns)

    def matrix(self, rows: Any) -> tuple[Any, np.ndarray]:
        """The rows with the recipe's derived columns, and their model matrix."""
        missing = [c for c in self.raw_inputs if c not in rows]
        if missing:
            raise KeyError(f"input lacks column(s) {missing}")
        if self.meta.recipe is not None:
            rows = _apply_recipe(self.meta.recipe, rows)
        return rows, encode(self.encoder, rows)

    def scores(self, rows: Any) -> np.ndarray:
        rows, X = self.matrix(rows)
        return smoothed(self.meta.smoothing, self.model.predict(X), rows)

    def reasons(self, X: np.ndarray, outputs: np.ndarray, top: int = 3) -> list[list[tuple[str, float]]] | None:
        """The ``top`` features that moved each row's raw output most (name, contribution), for
        output ``outputs[i]`` of row i (the predicted class; 0 for binary and regression).
        None for a family without contributions (the MLP)."""
        if not hasattr(self.model, "contributions"):
            return None
        names = self.feature_names
        contributions = self.model.contributions(X)
        picked = contributions[np.arange(len(X)), np.minimum(outputs, contributions.shape[1] - 1)]
        size = np.abs(picked)
        top = min(top, size.shape[1])
        order = np.empty((len(X), top), dtype=np.int64)
        every = np.arange(len(X))
        for k in range(top):  # the largest, then the next: cheaper than sorting each row
            order[:, k] = size.argmax(axis=1)
            size[every, order[:, k]] = -1.0
        values = np.take_along_axis(picked, order, axis=1).tolist()
        return [
            [(names[j], value) for j, value in zip(ranks, row, strict=True)]
            for ranks, row in zip(order.tolist(), values, strict=True)
        ]

    def decide(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(prediction, score, output) per row: the class label or value; the binary positive
        probability or the predicted class's probability (None for regression); and the index
        of the model output behind the decision (the predicted class; 0 otherwise)."""
        task, classes = self.meta.task, self.meta.classes
        first = np.zeros(len(scores), dtype=np.int64)
        if task == "regression":
            return scores, None, first
        if task == "binary":
            return np.where(scores >= self.meta.threshold, classes[1], classes[0]), scores, first
        best = alarm_classes(scores, self.meta.alarm_normal, self.meta.threshold)
        return np.asarray(classes, dtype=object)[best], scores[np.arange(len(best)), best], best

    def predict(self, rows: Any) -> pd.DataFrame:
        """``prediction`` (class label or value); ``score`` (binary: probability of the positive
        class; multiclass: probability of the predicted class)."""
        predictions, values, _ = self.decide(self.scores(rows))
        return pd.DataFrame({"prediction": predictions, **({} if values is None else {"score": values})})
