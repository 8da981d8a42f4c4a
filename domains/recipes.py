"""Feature recipes: derived columns computed from a domain's raw inputs, in polars.

A recipe is named in the DomainSpec (``features: {name: ..., window: ...}``) and described to this
module by a plain dict (``DomainSpec.recipe_config()``), so the same file computes features in
training (per partition, on Dask workers) and inside a logged model (it travels with the model as
code). It imports nothing but polars.

- ``rolling``: per group (e.g. a process run), in time order: each numeric input's rolling mean and
  standard deviation over the last ``window`` samples and its first difference. Past rows only, so
  a row's features never see the future.
- ``credit``: loan-to-income, instalment-loan utilisation, recent inquiries, the letter grade and
  interest-rate bands.
- ``clinical``: total free light chain, kappa/lambda ratio, decade of age, raised creatinine.

Every recipe is partition-local: ``rolling`` needs whole groups in one partition (``partition_by``
says which column); the others work on any block of rows.
"""

from __future__ import annotations

from typing import Any

import polars as pl

RATE_BANDS = [7.0, 10.0, 13.0, 16.0, 20.0]


def _ratio(numerator: str, denominator: str) -> pl.Expr:
    den = pl.col(denominator).cast(pl.Float64)
    return pl.when(den > 0).then(pl.col(numerator).cast(pl.Float64) / den).otherwise(None)


def in_order(frame: pl.DataFrame, group: str | None, time: str) -> bool:
    """True when each group's rows are contiguous and in time order (as series files usually are)."""
    if frame.height < 2:
        return True
    if group is None:
        return bool(frame[time].is_sorted())
    starts = frame.select((pl.col(group) != pl.col(group).shift()).fill_null(True).sum()).item()
    forward = frame.select((pl.col(time).diff().over(group).fill_null(0) >= 0).all()).item()
    return bool(starts == frame[group].n_unique() and forward)


def rolling(frame: pl.DataFrame, config: dict[str, Any]) -> pl.DataFrame:
    window, group, time = int(config["window"]), config.get("group"), config["time"]
    keys = [group] if group else []
    ready = in_order(frame, group, time)
    ordered = frame if ready else frame.with_row_index("__row").sort([*keys, time, "__row"])
    exprs = []
    for name in config["numeric"]:
        x = pl.col(name).cast(pl.Float64)
        mean = x.rolling_mean(window, min_samples=1)
        std = x.rolling_std(window, min_samples=2)
        diff = x.diff()
        if group:
            mean, std, diff = mean.over(group), std.over(group), diff.over(group)
        exprs += [mean.alias(f"{name}_mean{window}"), std.alias(f"{name}_std{window}"), diff.alias(f"{name}_diff")]
    out = ordered.with_columns(exprs)
    return out if ready else out.sort("__row").drop("__row")


def credit(frame: pl.DataFrame, config: dict[str, Any]) -> pl.DataFrame:
    inquiries = [c for c in ("inq_last_6mths", "inq_last_12m", "inq_fi") if c in frame.columns]
    return frame.with_columns(
        _ratio("funded_amnt", "annual_inc").alias("loan_to_income"),
        _ratio("total_bal_il", "total_il_high_credit_limit").alias("il_utilisation"),
        pl.sum_horizontal(inquiries).cast(pl.Float64).alias("inquiries_total"),
        pl.col("sub_grade").cast(pl.String).str.slice(0, 1).alias("grade"),
        pl.col("int_rate").cast(pl.Float64).cut(RATE_BANDS).to_physical().cast(pl.Int64).alias("rate_band"),
    )


def clinical(frame: pl.DataFrame, config: dict[str, Any]) -> pl.DataFrame:
    return frame.with_columns(
        (pl.col("kappa") + pl.col("lambda")).cast(pl.Float64).alias("flc_total"),
        _ratio("kappa", "lambda").alias("kappa_lambda_ratio"),
        (pl.col("age") // 10).cast(pl.Int64).alias("age_decade"),
        (pl.col("creatinine").cast(pl.Float64) > 1.2).cast(pl.Int64).alias("creatinine_raised"),
    )


RECIPES = {"rolling": rolling, "credit": credit, "clinical": clinical}

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


def outputs(config: dict[str, Any]) -> list[tuple[str, str]]:
    if config["name"] == "rolling":
        w = int(config["window"])
        return [(f"{n}_{k}", "float") for n in config["numeric"] for k in (f"mean{w}", f"std{w}", "diff")]
    return list(OUTPUTS[config["name"]])


def apply(config: dict[str, Any] | None, frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with the recipe's columns added (unchanged without a recipe)."""
    if not config:
        return frame
    return RECIPES[config["name"]](frame, config)
