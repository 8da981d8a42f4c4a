"""Feature recipes: derived columns computed from a domain's raw inputs.

A recipe is named in the DomainSpec (``features: {name: ..., window: ...}``) and described to this
module by a ``RecipeConfig`` (``DomainSpec.recipe_config()``), so the same file computes features in
training (per partition, on Dask workers) and inside a logged model (it travels with the model as
code). It imports nothing but NumPy and polars.

- ``rolling`` (polars): per group (e.g. a process run), in time order: each numeric input's rolling
  mean and standard deviation over the last ``window`` samples and its first difference. Past rows
  only, so a row's features never see the future.
- ``credit`` (NumPy): loan-to-income, instalment-loan utilisation, recent inquiries, the letter
  grade and interest-rate bands.
- ``clinical`` (NumPy): total free light chain, kappa/lambda ratio, decade of age, raised creatinine.

The row-wise recipes are written over NumPy columns because a scoring service calls them on one
row at a time, where a polars query costs about 0.3 ms in planning alone; on a whole table they
take the same time as the polars expressions did. ``apply`` takes a polars frame (training),
``derive`` a mapping of columns (scoring); both run the same functions. Missing values are NaN
(numbers) or None (text) in NumPy and null in polars.

Every recipe is partition-local: ``rolling`` needs whole groups in one partition (``partition_by``
says which column); the others work on any block of rows.

``SmoothingConfig`` (decision smoothing, applied to a model's scores by ``scoring.smoothed``) is
kept here beside ``RecipeConfig`` because both travel with a logged model as plain JSON in its
bundle and are read back without Lepton installed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

RATE_BANDS = np.array([7.0, 10.0, 13.0, 16.0, 20.0])  # right-closed: (-inf, 7], (7, 10], ... (20, inf)
INQUIRIES = ("inq_last_6mths", "inq_last_12m", "inq_fi")  # summed where present

# The columns a recipe reads (beyond these, ``credit`` sums whichever of INQUIRIES are given).
INPUTS = {
    "credit": ("funded_amnt", "annual_inc", "total_bal_il", "total_il_high_credit_limit", "sub_grade", "int_rate"),
    "clinical": ("kappa", "lambda", "age", "creatinine"),
}
Columns = Mapping[str, Any]


@dataclass(frozen=True)
class RecipeConfig:
    """A recipe as this module reads it: its name and window; for ``rolling`` the numeric
    columns it rolls, per ``group`` (None: one series) in ``time`` order."""

    name: str
    window: int = 0
    numeric: tuple[str, ...] = ()
    group: str | None = None
    time: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "numeric": list(self.numeric)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RecipeConfig | None:
        if not data:
            return None
        return cls(
            name=str(data["name"]),
            window=int(data.get("window") or 0),
            numeric=tuple(data.get("numeric") or ()),
            group=data.get("group"),
            time=data.get("time"),
        )


@dataclass(frozen=True)
class SmoothingConfig:
    """Decision smoothing: each row's scores averaged over the last ``window`` rows of its
    ``group`` in ``time`` order."""

    window: int
    group: str | None
    time: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> SmoothingConfig | None:
        if not data:
            return None
        return cls(window=int(data["window"]), group=data.get("group"), time=str(data["time"]))


def _number(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _ratio(numerator: Any, denominator: Any) -> np.ndarray:
    num, den = _number(numerator), _number(denominator)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _known(values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out`` where ``values`` is known, NaN where it is missing."""
    return np.where(np.isnan(values), np.nan, out)


def credit(columns: Columns, config: RecipeConfig) -> dict[str, np.ndarray]:
    rate = _number(columns["int_rate"])
    inquiries = [_number(columns[c]) for c in INQUIRIES if c in columns]
    grades = columns["sub_grade"]
    return {
        "loan_to_income": _ratio(columns["funded_amnt"], columns["annual_inc"]),
        "il_utilisation": _ratio(columns["total_bal_il"], columns["total_il_high_credit_limit"]),
        "inquiries_total": np.nansum(inquiries, axis=0) if inquiries else np.zeros(len(rate)),
        "grade": np.array([g[:1] if isinstance(g, str) else None for g in grades], dtype=object),
        "rate_band": _known(rate, np.searchsorted(RATE_BANDS, rate, side="left").astype(np.float64)),
    }


def clinical(columns: Columns, config: RecipeConfig) -> dict[str, np.ndarray]:
    kappa, lam = _number(columns["kappa"]), _number(columns["lambda"])
    age, creatinine = _number(columns["age"]), _number(columns["creatinine"])
    return {
        "flc_total": kappa + lam,
        "kappa_lambda_ratio": _ratio(kappa, lam),
        "age_decade": np.floor_divide(age, 10),
        "creatinine_raised": _known(creatinine, (creatinine > 1.2).astype(np.float64)),
    }


def in_order(frame: pl.DataFrame, group: str | None, time: str) -> bool:
    """True when each group's rows are contiguous and in time order (as series files usually are)."""
    if frame.height < 2:
        return True
    if group is None:
        return bool(frame[time].is_sorted())
    starts = frame.select((pl.col(group) != pl.col(group).shift()).fill_null(True).sum()).item()
    forward = frame.select((pl.col(time).diff().over(group).fill_null(0) >= 0).all()).item()
    return bool(starts == frame[group].n_unique() and forward)


def rolling(frame: pl.DataFrame, config: RecipeConfig) -> pl.DataFrame:
    window, group, time = config.window, config.group, config.time
    keys = [group] if group else []
    ready = in_order(frame, group, time)
    ordered = frame if ready else frame.with_row_index("__row").sort([*keys, time, "__row"])
    exprs = []
    for name in config.numeric:
        x = pl.col(name).cast(pl.Float64)
        mean = x.rolling_mean(window, min_samples=1)
        std = x.rolling_std(window, min_samples=2)
        diff = x.diff()
        if group:
            mean, std, diff = mean.over(group), std.over(group), diff.over(group)
        exprs += [mean.alias(f"{name}_mean{window}"), std.alias(f"{name}_std{window}"), diff.alias(f"{name}_diff")]
    out = ordered.with_columns(exprs)
    return out if ready else out.sort("__row").drop("__row")


def _rolling_one_row(config: RecipeConfig, columns: Columns) -> dict[str, np.ndarray]:
    """``rolling`` for a single row (a scoring call's usual size), without building a frame:
    its own value is the window's mean; a spread and a difference need two rows."""
    window, out = config.window, {}
    for name in config.numeric:
        x = np.asarray(columns[name], dtype=np.float64)
        out[f"{name}_mean{window}"] = x
        out[f"{name}_std{window}"] = out[f"{name}_diff"] = np.full(1, np.nan)
    return out


RowWise = Callable[[Columns, RecipeConfig], dict[str, np.ndarray]]
ROW_WISE: dict[str, RowWise] = {"credit": credit, "clinical": clinical}

# The columns each recipe adds: (name, dtype) where dtype is a DomainSpec dtype.
OUTPUTS = {
    "credit": [
        ("loan_to_income", "float"),
        ("il_utilisation", "float"),
        ("inquiries_total", "float"),
        ("grade", "category"),
        ("rate_band", "int"),
    ],
    "clinical": [
        ("flc_total", "float"),
        ("kappa_lambda_ratio", "float"),
        ("age_decade", "int"),
        ("creatinine_raised", "int"),
    ],
}


def outputs(config: RecipeConfig) -> list[tuple[str, str]]:
    if config.name == "rolling":
        w = config.window
        return [(f"{n}_{k}", "float") for n in config.numeric for k in (f"mean{w}", f"std{w}", "diff")]
    return list(OUTPUTS[config.name])


_POLARS = {"float": pl.Float64, "int": pl.Int64, "category": pl.String}


def apply(config: RecipeConfig | None, frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with the recipe's columns added (unchanged without a recipe)."""
    if not config:
        return frame
    if config.name == "rolling":
        return rolling(frame, config)
    names = [*INPUTS[config.name], *(c for c in INQUIRIES if c in frame.columns)]
    columns = {name: frame[name].to_numpy() for name in dict.fromkeys(names) if name in frame.columns}
    derived = ROW_WISE[config.name](columns, config)
    return frame.with_columns(
        pl.Series(name, derived[name], nan_to_null=dtype != "category").cast(_POLARS[dtype])
        for name, dtype in outputs(config)
    )


def derive(config: RecipeConfig, columns: Columns) -> dict[str, np.ndarray]:
    """The recipe's columns for a mapping of raw columns (name -> array): what a scoring call
    needs, without building a frame for row-wise recipes."""
    if config.name in ROW_WISE:
        return ROW_WISE[config.name](columns, config)
    if len(next(iter(columns.values()), ())) == 1:
        return _rolling_one_row(config, columns)
    out = rolling(pl.DataFrame({name: np.asarray(values) for name, values in columns.items()}), config)
    return {name: out[name].to_numpy() for name, _ in outputs(config)}
