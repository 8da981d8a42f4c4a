"""The DomainSpec: everything Lepton needs to know about a domain, as validated, frozen data.

A domain module builds one in Python; a user's YAML file becomes the same object through
``DomainSpec.from_yaml``. Nothing here imports Prefect, MLflow or Dask.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lepton.domains import recipes

DATA_DIR = Path(__file__).parent / "data"

# Metrics a spec may name (allowlist: configuration never names arbitrary code).
HIGHER_IS_BETTER = {
    "roc_auc",
    "average_precision",
    "gini",
    "ks",
    "accuracy",
    "f1_macro",
    "balanced_accuracy",
    "r2",
    "sensitivity_at_specificity",
    "sensitivity",
    "specificity",
    "fault_detection_rate",
}
LOWER_IS_BETTER = {
    "brier",
    "log_loss",
    "expected_cost",
    "calibration_error",
    "false_alarm_rate",
    "detection_delay",
    "rmse",
    "mae",
}
KNOWN_METRICS = HIGHER_IS_BETTER | LOWER_IS_BETTER
TASK_METRICS = {
    "binary": {
        "roc_auc",
        "average_precision",
        "gini",
        "ks",
        "accuracy",
        "f1_macro",
        "balanced_accuracy",
        "brier",
        "log_loss",
        "expected_cost",
        "calibration_error",
        "sensitivity_at_specificity",
        "sensitivity",
        "specificity",
    },
    "multiclass": {
        "accuracy",
        "f1_macro",
        "balanced_accuracy",
        "log_loss",
        "fault_detection_rate",
        "false_alarm_rate",
        "detection_delay",
    },
    "regression": {"r2", "rmse", "mae"},
}

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class Role(StrEnum):
    FEATURE = "feature"
    TARGET = "target"
    TIME = "time"
    GROUP = "group"
    ID = "id"
    PII = "pii"


class Dtype(StrEnum):
    FLOAT = "float"
    INT = "int"
    CATEGORY = "category"
    BOOL = "bool"
    DATETIME = "datetime"  # a feature as days since 1970, month and weekday


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Column(_Frozen):
    name: str = Field(min_length=1)
    dtype: Dtype
    role: Role = Role.FEATURE


def is_url(path: str | Path) -> bool:
    """True for an fsspec URL other than a local file's (``s3://…``; not ``C:\\…``): a dataset
    that lives where the workers read it (``lepton.core.partitions``)."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum() and scheme != "file"


class DataSource(_Frozen):
    """Where the domain's table lives: a path relative to ``domains/data`` (built-in domains),
    to the spec file (YAML specs), or absolute."""

    path: str
    holdout_path: str | None = None  # a given test file (e.g. TEP's *_te runs)
    encoding: str | None = None  # CSV text encoding when not UTF-8, e.g. latin-1

    def resolve(self, relative: str | None) -> Path | str | None:
        """The path to read: an fsspec URL as written, a local path made absolute."""
        if relative is None or is_url(relative):
            return relative
        path = Path(relative)
        return path if path.is_absolute() else DATA_DIR / path


class SplitSpec(_Frozen):
    """Leakage-safe split: the holdout is never seen by fitting, tuning or thresholding."""

    kind: Literal["stratified", "time", "given", "random"]
    holdout_size: Fraction = 0.2
    validation_size: Fraction = 0.2
    seed: int = 0
    # After the choice (and its threshold) is made on validation, fit the chosen model again on
    # train + validation with the same settings: worth it when the validation rows carry
    # behaviour training lacks (the later part of each process run, the newest loans).
    refit: bool = False


class CostModel(_Frozen):
    """Cost of each kind of error, in the domain's unit (e.g. dollars lost)."""

    false_negative: float = Field(ge=0)
    false_positive: float = Field(ge=0)
    unit: str = "cost"
    # USD per unit, where the unit is not USD already: what lets the monitor weigh the loss of
    # keeping a model against the measured price of retraining it (``lepton.tasks.retrain``).
    usd_per_unit: float | None = Field(default=None, gt=0)


class LeakageSpec(_Frozen):
    """The leakage sentinel: a feature that alone predicts the target on the training split with
    ROC AUC / balanced accuracy / R² above ``threshold`` stops the run, unless listed in ``allow``.
    ``one_class``: for a multiclass target, a feature that alone tells one class from the rest
    above ``threshold`` stops it too (a test result that is one of the outcomes). Off where one
    measurement isolating one class is what the model is for (a sensor that shows one fault)."""

    threshold: float = Field(default=0.99, gt=0.5, le=1.0)
    allow: tuple[str, ...] = ()
    one_class: bool = True


class FeatureRecipe(_Frozen):
    """A built-in feature recipe (``domains/recipes.py``): ``rolling`` (per group, in time order:
    rolling mean/std over ``window`` samples and first differences), ``credit`` or ``clinical``."""

    name: Literal["rolling", "credit", "clinical"]
    window: int = Field(default=10, ge=2, le=10_000)


class DriftSpec(_Frozen):
    """When a feature (or the prediction) counts as drifted. ``method`` ``psi``: its population
    stability index is above ``psi_threshold``; over ``bins`` quantile bins of the training data
    (``psi_bins: quantile``, the credit-scoring PSI), or Evidently's binning (``sturges``: equal-width
    bins over training and batch together, Sturges' count, its floor for empty bins; the training
    side read from the stored CDF sketch), so thresholds carried over from Evidently flag alike;
    ``test``: a two-sample test rejects "same distribution" at ``p_value`` (Kolmogorov-Smirnov for
    numbers, chi-squared for categories). Both are always computed and logged. A monitor run
    reports drift (and emits ``lepton.drift.detected``) when at least ``min_features`` features
    drifted or the prediction did."""

    method: Literal["psi", "test"] = "psi"
    psi_threshold: float = Field(default=0.2, gt=0)
    p_value: float = Field(default=0.01, gt=0, lt=0.5)
    bins: int = Field(default=10, ge=2, le=100)
    psi_bins: Literal["quantile", "sturges"] = "quantile"
    min_features: int = Field(default=1, ge=1)


RetrainPolicy = Literal["on_drift", "on_estimated_loss", "on_label_performance"]


class PromotionSpec(_Frozen):
    """When a challenger replaces the champion: better on the primary metric, on the same holdout,
    by a paired bootstrap test at ``level`` (one-sided; rows resampled together, whole groups
    when the spec has a group column) with ``resamples`` draws."""

    level: float = Field(default=0.05, gt=0, lt=0.5)
    resamples: int = Field(default=1000, ge=100, le=100_000)


class DomainSpec(_Frozen):
    name: Name
    description: str = ""
    data: DataSource
    columns: tuple[Column, ...] = Field(min_length=2)
    task: Literal["binary", "multiclass", "regression"]
    positive_class: bool | int | str | None = None
    normal_class: bool | int | str | None = None  # multiclass: the "no fault" class for alarm metrics
    split: SplitSpec
    primary_metric: str
    metrics: tuple[str, ...]
    gates: dict[str, float] = Field(default_factory=dict)
    cost: CostModel | None = None
    target_specificity: Fraction = 0.9
    # Binary: the decision threshold keeps this sensitivity (the share of positives flagged) on new
    # rows, at the best specificity: its Clopper-Pearson lower bound (90%) on validation meets it.
    # Set, it replaces the cost model's threshold (the cost is still reported).
    target_sensitivity: Fraction | None = None
    # Multiclass with a normal class: raise an alarm (the most probable fault) only when
    # 1 - P(normal) reaches a threshold chosen on validation so that the false-alarm rate (the
    # share of normal rows alarmed) stays within this budget on new rows: its Clopper-Pearson
    # upper bound (90%) on validation's normal rows meets it. Unset: the arg-max class.
    false_alarm_budget: Fraction | None = None
    latency_budget_ms: float = Field(default=10.0, gt=0)
    drift: DriftSpec = DriftSpec()
    promotion: PromotionSpec = PromotionSpec()
    leakage: LeakageSpec = LeakageSpec()
    features: FeatureRecipe | None = None
    # An alarm filter for series (a group and a time column): each decision uses the class
    # probabilities averaged over the last ``smoothing`` samples of its group, past rows only.
    # Fewer flickering decisions, at the cost of detection delay (which the alarm metrics report).
    smoothing: int | None = Field(default=None, ge=2)
    schedule: str = "0 3 * * 1"
    # When a monitored batch asks for a retrain (``lepton.retrain.recommended``): on any drift;
    # when the estimated performance fell beyond its band and keeping the champion for
    # ``retrain_horizon_days`` of the logged traffic costs more than a retrain (by the cost
    # model); or when the labels that came with the batch show the fall.
    retrain: RetrainPolicy = "on_estimated_loss"
    retrain_horizon_days: float = Field(default=30.0, gt=0, le=3650)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - KNOWN_METRICS)
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(KNOWN_METRICS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DomainSpec:
        names = [c.name for c in self.columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"columns: duplicated name(s) {duplicated}")
        targets = [c.name for c in self.columns if c.role is Role.TARGET]
        if len(targets) != 1:
            raise ValueError(f"columns: exactly one column must have role 'target', found {targets}")
        if not self.feature_columns:
            raise ValueError("columns: no column has role 'feature'")
        allowed = TASK_METRICS[self.task]
        for field, chosen in (
            ("metrics", set(self.metrics)),
            ("gates", set(self.gates)),
            ("primary_metric", {self.primary_metric}),
        ):
            wrong = sorted(chosen - allowed)
            if wrong:
                raise ValueError(f"{field}: {wrong} do not apply to a {self.task} task; use {sorted(allowed)}")
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary_metric: {self.primary_metric!r} must be listed in metrics")
        if self.split.kind == "time" and self.time_column is None:
            raise ValueError("split: kind 'time' needs a column with role 'time'")
        if self.split.kind == "given" and self.data.holdout_path is None:
            raise ValueError("split: kind 'given' needs data.holdout_path")
        return self

    @model_validator(mode="after")
    def _classes(self) -> DomainSpec:
        names = [c.name for c in self.columns]
        if self.task == "binary" and self.positive_class is None:
            raise ValueError("positive_class: a binary task must say which class is positive")
        if self.task != "binary" and self.positive_class is not None:
            raise ValueError(f"positive_class: applies to binary tasks, not {self.task}")
        if self.normal_class is not None and self.task != "multiclass":
            raise ValueError(f"normal_class: applies to multiclass tasks, not {self.task}")
        alarms = {"fault_detection_rate", "false_alarm_rate", "detection_delay"} & set(self.metrics)
        if self.false_alarm_budget is not None and self.normal_class is None:
            raise ValueError("false_alarm_budget: needs a multiclass task with a normal_class")
        if alarms and self.normal_class is None:
            raise ValueError(f"normal_class: metrics {sorted(alarms)} need the class that means normal operation")
        unknown = sorted(set(self.leakage.allow) - set(names))
        if unknown:
            raise ValueError(f"leakage.allow: {unknown} are not columns")
        if self.smoothing is not None and (self.task == "regression" or not (self.group_column and self.time_column)):
            raise ValueError("smoothing: needs a classification task with a 'group' and a 'time' column")
        if self.features is not None:
            if self.features.name == "rolling" and self.time_column is None:
                raise ValueError("features: the rolling recipe needs a column with role 'time'")
            missing = sorted(set(recipes.INPUTS.get(self.features.name, ())) - {c.name for c in self.feature_columns})
            if missing:
                raise ValueError(f"features: recipe {self.features.name!r} needs feature column(s) {missing}")
        return self

    # ---- derived views -------------------------------------------------------------------
    @property
    def target(self) -> str:
        return next(c.name for c in self.columns if c.role is Role.TARGET)

    @property
    def feature_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.role is Role.FEATURE)

    @property
    def time_column(self) -> str | None:
        return next((c.name for c in self.columns if c.role is Role.TIME), None)

    @property
    def group_column(self) -> str | None:
        return next((c.name for c in self.columns if c.role is Role.GROUP), None)

    def recipe_config(self) -> recipes.RecipeConfig | None:
        """The feature recipe as ``lepton.domains.recipes`` reads it (and a logged model carries)."""
        if self.features is None:
            return None
        if self.features.name != "rolling":
            return recipes.RecipeConfig(name=self.features.name, window=self.features.window)
        numeric = tuple(c.name for c in self.feature_columns if c.dtype in (Dtype.FLOAT, Dtype.INT))
        return recipes.RecipeConfig(
            name="rolling", window=self.features.window, numeric=numeric, group=self.group_column, time=self.time_column
        )

    @property
    def partition_by(self) -> str | None:
        """The column whose groups must stay whole in one partition when features are computed."""
        return self.group_column if self.features is not None and self.features.name == "rolling" else None

    @property
    def reads_series(self) -> bool:
        """Whether a row's answer depends on the rows before it in its series (a rolling recipe,
        decision smoothing): such rows are scored in order, with their history."""
        return self.smoothing is not None or (self.features is not None and self.features.name == "rolling")

    @property
    def model_inputs(self) -> tuple[Column, ...]:
        """What a logged model takes: the raw features, plus the group and time columns a
        rolling recipe or decision smoothing orders rows by."""
        extra = {self.group_column, self.time_column} - {None} if self.reads_series else set()
        return (*self.feature_columns, *(c for c in self.columns if c.name in extra and c.role is not Role.FEATURE))

    def smoothing_config(self) -> recipes.SmoothingConfig | None:
        """Decision smoothing as the scoring code reads it (None without it)."""
        if self.smoothing is None:
            return None
        return recipes.SmoothingConfig(window=self.smoothing, group=self.group_column, time=self.time_column)

    def with_features(self) -> DomainSpec:
        """The spec the model sees: the raw columns plus the recipe's derived feature columns."""
        config = self.recipe_config()
        if config is None:
            return self
        derived = tuple(Column(name=n, dtype=Dtype(d)) for n, d in recipes.outputs(config))
        return self.model_copy(update={"columns": (*self.columns, *derived)})

    @property
    def model_name(self) -> str:
        return f"lepton-{self.name}"

    def higher_is_better(self, metric: str) -> bool:
        return metric in HIGHER_IS_BETTER

    def spec_hash(self) -> str:
        """A stable hash of the spec's content, recorded with every model version."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_yaml(cls, path: str | Path) -> DomainSpec:
        """Load a spec file. Relative data paths are taken from the file's own directory.
        Every problem is reported at once, each naming its field (e.g. ``columns.3.dtype``)."""
        import yaml
        from pydantic import ValidationError

        from lepton.errors import InputPathError, SpecError

        resolved = Path(path).expanduser().resolve()
        if not resolved.is_file():
            raise InputPathError(f"{resolved}: no such spec file")
        try:
            raw = yaml.safe_load(resolved.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise SpecError([("(file)", f"not valid YAML: {exc}")], str(resolved)) from exc
        if not isinstance(raw, dict):
            raise SpecError([("(file)", "expected a mapping of fields at the top level")], str(resolved))
        data = raw.get("data")
        if isinstance(data, dict):
            for key in ("path", "holdout_path"):
                value = data.get(key)
                if isinstance(value, str) and not (is_url(value) or Path(value).expanduser().is_absolute()):
                    data[key] = str((resolved.parent / Path(data[key]).expanduser()).resolve())
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise SpecError.from_validation(exc, str(resolved)) from exc
