"""Preprocess: read, validate against the domain schema, split without leakage, encode.

Everything here is a pure function of its inputs except ``read_table`` (the file edge).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from domains.spec import DomainSpec, Dtype, Role
from lepton.errors import EmptyDataError, InputPathError, Problem, SchemaError
from lepton.scoring import encode, feature_names

MAX_LEVELS = 50  # categorical levels kept per column; rarer levels share the all-zero code
MAX_FILE_BYTES = 20 * 2**30
READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_POLARS_DTYPES = {Dtype.FLOAT: pl.Float64, Dtype.INT: pl.Int64, Dtype.BOOL: pl.Boolean, Dtype.CATEGORY: pl.String}


# ---- artifacts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One side of the split: raw frame (for monitoring and examples), model matrix, labels."""

    frame: pl.DataFrame
    X: np.ndarray
    y: np.ndarray

    @property
    def rows(self) -> int:
        return self.frame.height


@dataclass(frozen=True)
class PreparedData:
    domain: str
    train: Part
    valid: Part
    holdout: Part
    encoder: dict[str, Any]
    classes: list[Any]
    fingerprint: str
    notes: tuple[str, ...] = field(default=())

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.encoder)


# ---- reading -----------------------------------------------------------------------------------
def resolve_input(path: str | Path) -> Path:
    """Resolve a user path and check it is a readable, non-empty file of a known format."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise InputPathError(f"{resolved}: no such file")
    if resolved.is_dir():
        raise InputPathError(f"{resolved}: is a directory, expected a CSV or Parquet file")
    if resolved.suffix.lower() not in READERS:
        raise InputPathError(f"{resolved}: unknown format {resolved.suffix!r}; use .csv or .parquet")
    size = resolved.stat().st_size
    if size == 0:
        raise EmptyDataError(f"{resolved}: the file is empty")
    if size > MAX_FILE_BYTES:
        raise InputPathError(f"{resolved}: {size / 2**30:.1f} GiB is over the {MAX_FILE_BYTES / 2**30:.0f} GiB limit")
    return resolved


def read_table(path: str | Path) -> pl.DataFrame:
    resolved = resolve_input(path)
    try:
        if READERS[resolved.suffix.lower()] == "csv":
            frame = pl.read_csv(resolved, infer_schema_length=10_000, null_values=["", "NA", "NaN", "null"])
        else:
            frame = pl.read_parquet(resolved)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputPathError(f"{resolved}: cannot be read ({exc.__class__.__name__}: {exc})") from exc
    if frame.height == 0:
        raise EmptyDataError(f"{resolved}: no data rows")
    return frame


# ---- validation --------------------------------------------------------------------------------
def validate(frame: pl.DataFrame, spec: DomainSpec, source: str = "data") -> pl.DataFrame:
    """Check ``frame`` against the schema and cast it; raise one SchemaError naming every problem."""
    if frame.height == 0:
        raise EmptyDataError(f"{source}: no data rows")
    problems: list[Problem] = []
    casts = []
    for column in spec.columns:
        if column.name not in frame.columns:
            problems.append(Problem("missing_column", column.name, f"required ({column.role.value}), not in {source}"))
            continue
        values = frame[column.name]
        target = _POLARS_DTYPES[column.dtype]
        cast = values.cast(target, strict=False)
        broken = cast.is_null() & values.is_not_null()
        if broken.any():
            row = int(broken.arg_max())
            problems.append(
                Problem(
                    "wrong_dtype",
                    column.name,
                    f"expected {column.dtype.value}, row {row} holds {values[row]!r} ({int(broken.sum())} such row(s))",
                )
            )
            continue
        if cast.null_count() == frame.height:
            problems.append(Problem("all_null", column.name, "every value is missing"))
            continue
        casts.append(cast)
    if not problems:
        problems.extend(_target_problems(frame[spec.target], spec))
    if problems:
        raise SchemaError(problems, source)
    return frame.with_columns(casts).select([c.name for c in spec.columns])


def _target_problems(target: pl.Series, spec: DomainSpec) -> list[Problem]:
    problems = []
    if target.null_count():
        rows = target.is_null().arg_true().head(5).to_list()
        problems.append(
            Problem("null_target", spec.target, f"{target.null_count()} missing label(s), e.g. rows {rows}")
        )
    values = target.drop_nulls().unique()
    if spec.task != "regression" and values.len() < 2:
        problems.append(
            Problem("single_class", spec.target, f"only {values.to_list()} present; need at least two classes")
        )
    if spec.task == "binary" and values.len() > 2:
        problems.append(Problem("unknown_class", spec.target, f"a binary target has {values.len()} classes"))
    if spec.task == "binary" and str(spec.positive_class) not in {str(v) for v in values.to_list()}:
        problems.append(
            Problem(
                "unknown_class",
                spec.target,
                f"positive class {spec.positive_class!r} never occurs; values are {values.to_list()[:10]}",
            )
        )
    return problems


# ---- fingerprint -------------------------------------------------------------------------------
def fingerprint(*frames: pl.DataFrame) -> str:
    """Content hash of the tables (schema and every value); equal data gives equal fingerprints."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(str(frame.schema).encode())
        digest.update(frame.hash_rows(seed=0).to_numpy().tobytes())
    return digest.hexdigest()


# ---- split -------------------------------------------------------------------------------------
def split_frame(
    frame: pl.DataFrame, spec: DomainSpec, holdout: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Return (train, valid, holdout). Time splits hold out the latest rows; a given test file is
    the holdout; stratified/random splits are seeded. Validation is carved from train the same way."""
    kind = spec.split.kind
    if kind == "given":
        if holdout is None:
            raise ValueError("split 'given' needs a holdout table")
        train, valid = _tail_split(frame, spec, spec.split.validation_size)
        return train, valid, holdout
    if kind == "time":
        rest, test = _tail_split(frame, spec, spec.split.holdout_size)
        train, valid = _tail_split(rest, spec, spec.split.validation_size)
        return train, valid, test
    rest, test = _random_split(frame, spec, spec.split.holdout_size, seed=spec.split.seed)
    train, valid = _random_split(rest, spec, spec.split.validation_size, seed=spec.split.seed + 1)
    return train, valid, test


def _tail_split(frame: pl.DataFrame, spec: DomainSpec, size: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hold out the last ``size`` of the rows by time (per group when the spec has one).
    Rows sharing a time stamp stay on the same side, so the future never leaks into the past."""
    time, group = spec.time_column, spec.group_column
    if time is None:
        return _random_split(frame, spec, size, seed=spec.split.seed)
    if group is not None:
        rank = pl.col(time).rank("dense").over(group) / pl.col(time).n_unique().over(group)
        late = rank > (1 - size)
    else:
        cutoff = frame[time].sort().gather(int(frame.height * (1 - size)))[0]
        late = pl.col(time) >= cutoff
    marked = frame.with_columns(late.alias("__late"))
    return marked.filter(~pl.col("__late")).drop("__late"), marked.filter(pl.col("__late")).drop("__late")


def _random_split(frame: pl.DataFrame, spec: DomainSpec, size: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    take = np.zeros(frame.height, dtype=bool)
    if spec.split.kind == "stratified" and spec.task != "regression":
        labels = frame[spec.target].to_numpy()
        for value in np.unique(labels.astype(str)):
            idx = np.flatnonzero(labels.astype(str) == value)
            take[rng.choice(idx, size=max(1, round(len(idx) * size)), replace=False)] = True
    else:
        take[rng.choice(frame.height, size=max(1, round(frame.height * size)), replace=False)] = True
    return frame.filter(pl.Series(~take)), frame.filter(pl.Series(take))


# ---- encoding ----------------------------------------------------------------------------------
class TabularEncoder:
    """Numeric columns pass through (missing as NaN); categoricals are one-hot over the
    ``max_levels`` most frequent training levels. Fitted on train only; state is plain JSON."""

    def __init__(self, numeric: list[str], categorical: list[str], max_levels: int = MAX_LEVELS) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.max_levels = max_levels

    def fit(self, frame: pl.DataFrame) -> TabularEncoder:
        levels = {}
        for name in self.categorical:
            counts = frame[name].cast(pl.String).drop_nulls().value_counts(sort=True)
            levels[name] = counts[name].head(self.max_levels).sort().to_list()
        self.state_ = {"numeric": list(self.numeric), "categorical": levels}
        return self

    def transform(self, frame: pl.DataFrame) -> np.ndarray:
        return encode(self.state_, {c: frame[c].to_numpy() for c in self.numeric + self.categorical})


def encode_labels(target: pl.Series, spec: DomainSpec, classes: list[Any]) -> np.ndarray:
    if spec.task == "regression":
        return target.cast(pl.Float64).to_numpy()
    as_text = target.cast(pl.String).to_numpy().astype(str)
    index = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted(set(as_text) - set(index))
    if unknown:
        raise SchemaError([Problem("unknown_class", spec.target, f"class(es) {unknown[:5]} not seen in training")])
    return np.array([index[v] for v in as_text], dtype=np.int32) if len(as_text) else np.zeros(0, np.int32)


def class_labels(train_target: pl.Series, spec: DomainSpec) -> list[Any]:
    """Binary: [negative, positive]; multiclass: sorted training classes; regression: []."""
    if spec.task == "regression":
        return []
    values = sorted(train_target.unique().to_list(), key=lambda v: (str(type(v)), v))
    if spec.task == "binary":
        positive = next(v for v in values if str(v) == str(spec.positive_class))
        return [next(v for v in values if v != positive), positive]
    return values


def prepare(spec: DomainSpec, frame: pl.DataFrame, holdout: pl.DataFrame | None = None) -> PreparedData:
    """Validate, split, fit the encoder on train, and encode every part."""
    frame = validate(frame, spec, "data")
    if holdout is not None:
        holdout = validate(holdout, spec, "holdout data")
    train, valid, test = split_frame(frame, spec, holdout)
    single = _target_problems(train[spec.target], spec) if spec.task != "regression" else []
    if any(p.kind == "single_class" for p in single):
        raise SchemaError(single, "training split")
    numeric = [c.name for c in spec.feature_columns if c.dtype is not Dtype.CATEGORY]
    categorical = [c.name for c in spec.feature_columns if c.dtype is Dtype.CATEGORY]
    encoder = TabularEncoder(numeric, categorical).fit(train)
    classes = class_labels(train[spec.target], spec)

    def part(f: pl.DataFrame) -> Part:
        return Part(frame=f, X=encoder.transform(f), y=encode_labels(f[spec.target], spec, classes))

    kept = [c.name for c in spec.columns if c.role is not Role.PII]
    return PreparedData(
        domain=spec.name,
        train=part(train.select(kept)),
        valid=part(valid.select(kept)),
        holdout=part(test.select(kept)),
        encoder=encoder.state_,
        classes=classes,
        fingerprint=fingerprint(frame, *([holdout] if holdout is not None else [])),
    )


def load_domain_data(
    spec: DomainSpec, data: str | None = None, holdout: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Read the domain's own sample, or the user's files standing in for it."""
    if holdout and spec.split.kind != "given":
        raise InputPathError(
            f"domain {spec.name!r} holds out by a {spec.split.kind} split of its data; a separate holdout file "
            "would be ignored, so it is refused"
        )
    main = read_table(data) if data else read_table(spec.data.resolve(spec.data.path))
    if holdout:
        return main, read_table(holdout)
    if spec.split.kind == "given":
        if data:
            raise InputPathError(f"domain {spec.name!r} splits on a given test file: pass holdout data too")
        return main, read_table(spec.data.resolve(spec.data.holdout_path))
    return main, None


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_task(spec: DomainSpec, data: str | None = None, holdout: str | None = None) -> PreparedData:
    """Read and prepare a domain's data.

    Args:
        spec: the domain.
        data: a user file to use instead of the domain's sample (same schema).
        holdout: a user test file, for domains that split on a given test file.
    Returns:
        PreparedData: encoded train/valid/holdout parts, the fitted encoder and a fingerprint.
    """
    frame, test = load_domain_data(spec, data, holdout)
    return prepare(spec, frame, test)
