"""Preprocess: read a domain's tables and check them against its schema (``preprocess_task``).

The split without leakage and the encoder are defined here too; the features stage applies them
once the recipe's features are computed (``lepton.tasks.features``).

Everything here is a pure function of its inputs except ``load_domain_data``, which reads files
through ``lepton.core.tables`` (the file edge).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from lepton.core.partitions import Dataset, WorkerTable, is_dataset, open_dataset
from lepton.core.scoring import encode, feature_names
from lepton.core.tables import fingerprint, read_table, resolve_input
from lepton.domains.spec import DomainSpec, Dtype, Role
from lepton.errors import EmptyDataError, InputPathError, Problem, SchemaError
from lepton.tasks.labels import class_labels, encode_labels
from lepton.tasks.leakage import check_leakage

APPENDED = "__lepton_appended"  # marks the rows ``--append`` added, until the split
MAX_LEVELS = 50  # categorical levels kept per column; rarer levels share the all-zero code
_POLARS_DTYPES = {
    Dtype.FLOAT: pl.Float64,
    Dtype.INT: pl.Int64,
    Dtype.BOOL: pl.Boolean,
    Dtype.CATEGORY: pl.String,
    Dtype.DATETIME: pl.Datetime("us"),
}


# ---- artifacts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One side of the split: raw frame (for monitoring and examples), model matrix, labels.
    For a partitioned table's training side the frame holds only the first rows of the sample
    (``lepton.tasks.scan.REFERENCE_ROWS``); ``rows`` counts the matrix."""

    frame: pl.DataFrame
    X: np.ndarray
    y: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.y)


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
    # A partitioned table (``lepton.tasks.scan``): its split rows stay on the Dask workers for the
    # final fit; the parts above are then samples of each side.
    table: WorkerTable | None = None

    def rows(self, side: str) -> int:
        """Rows on a side ("train", "valid", "holdout") of the whole table, not only the sample here."""
        if self.table is not None:
            return self.table.total(side)
        return getattr(self, side).rows

    @property
    def feature_names(self) -> list[str]:
        return feature_names(self.encoder)

    def searched(self) -> PreparedData:
        """After the search, a partitioned table's data without the training sample's matrix (the
        driver's largest array, which only the candidates' fits read); its raw reference rows stay.
        A single table's data as it is (``rows`` counts its matrix)."""
        if self.table is None:
            return self
        X, y = self.train.X, self.train.y
        empty = Part(frame=self.train.frame, X=np.empty((0, *X.shape[1:]), X.dtype), y=np.empty(0, y.dtype))
        return dataclasses.replace(self, train=empty)

    def for_training(self) -> PreparedData:
        """The arrays a trial needs, without the raw frames (what is sent to Dask workers)."""

        def slim(part: Part, rows: int | None = None) -> Part:
            return Part(frame=part.frame.head(0), X=part.X[:rows], y=part.y[:rows])

        return dataclasses.replace(
            self, train=slim(self.train), valid=slim(self.valid), holdout=slim(self.holdout, 0), table=None
        )


# ---- validation --------------------------------------------------------------------------------
def validate(frame: pl.DataFrame, spec: DomainSpec, source: str = "data", whole: bool = True) -> pl.DataFrame:
    """Check ``frame`` against the schema and cast it; raise one SchemaError naming every problem.
    ``whole`` False: ``frame`` is one partition of a table, whose target is checked once merged.

    PII columns are dropped here, before anything else sees them, and their values are never
    quoted in an error."""
    if frame.height == 0:
        raise EmptyDataError(f"{source}: no data rows")
    problems: list[Problem] = []
    casts = []
    for column in spec.columns:
        if column.role is Role.PII:
            continue
        if column.name not in frame.columns:
            known = {c.name for c in spec.columns}
            close = difflib.get_close_matches(
                column.name, [c for c in frame.columns if c not in known], n=3, cutoff=0.6
            )
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            problems.append(
                Problem("missing_column", column.name, f"required ({column.role.value}), not in {source}{hint}")
            )
            continue
        cast, problem = cast_column(frame[column.name], column.dtype)
        if problem is not None:
            problems.append(problem)
            continue
        if cast.null_count() == frame.height:
            problems.append(Problem("all_null", column.name, "every value is missing"))
            continue
        casts.append(cast)
    if not problems and whole:
        problems.extend(target_problems(frame[spec.target], spec))
    if problems:
        raise SchemaError(problems, source)
    kept = [c.name for c in spec.columns if c.role is not Role.PII]
    return frame.with_columns(casts).select([*kept, *([APPENDED] if APPENDED in frame.columns else [])])


def cast_column(values: pl.Series, dtype: Dtype, offset: int = 0) -> tuple[pl.Series, Problem | None]:
    """``values`` cast to ``dtype``, or the problem naming the first value that is not one (its
    data row counted from 1, as a spreadsheet shows the rows below the header; ``offset``: the
    rows before this chunk, for files read in chunks)."""
    cast = _cast(values, dtype)
    broken = cast.is_null() & values.is_not_null()
    if not broken.any():
        return cast, None
    row = int(broken.arg_max())
    detail = f"expected {dtype.value}, row {offset + row + 1} holds {values[row]!r} ({int(broken.sum())} such row(s))"
    return cast, Problem("wrong_dtype", str(values.name), detail)


def _cast(values: pl.Series, dtype: Dtype) -> pl.Series:
    if dtype is Dtype.DATETIME and values.dtype == pl.String:
        return values.str.strip_chars().str.to_datetime(strict=False, time_unit="us")
    if dtype is Dtype.DATETIME and isinstance(values.dtype, pl.Datetime) and values.dtype.time_zone:
        return values.dt.replace_time_zone(None).cast(pl.Datetime("us"))
    if values.dtype == pl.String and dtype is not Dtype.CATEGORY:
        values = values.str.strip_chars()
    return values.cast(_POLARS_DTYPES[dtype], strict=False)


def drop_unlabelled(frame: pl.DataFrame, spec: DomainSpec, source: str = "data") -> tuple[pl.DataFrame, list[str]]:
    """Rows without a label (missing, NaN or infinite) cannot teach or test a model: drop them,
    and say how many."""
    label = frame[spec.target]
    unusable = label.is_null() | (~label.is_finite() if label.dtype.is_float() else False)
    missing = int(unusable.sum())
    if not missing:
        return frame, []
    rows = [r + 1 for r in unusable.arg_true().head(5).to_list()]  # data rows counted from 1
    note = f"{source}: {missing} row(s) without a {spec.target!r} label were left out (e.g. rows {rows})"
    return frame.filter(~unusable), [note]


def target_problems(target: pl.Series, spec: DomainSpec) -> list[Problem]:
    problems = []
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
# ---- split -------------------------------------------------------------------------------------
def split_frame(
    frame: pl.DataFrame, spec: DomainSpec, holdout: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Return (train, valid, holdout). Time splits hold out the latest rows; a given test file is
    the holdout; stratified/random splits are seeded. Validation is carved from train the same way.

    Rows marked ``APPENDED`` (a labelled batch that ``--append`` added) never move the split of
    the others: the holdout is the one the table alone gives, so a retrain is judged on the
    champion's own holdout, and the batch is carved into training and validation by the same
    rule. On a time split the batch is later than the holdout: it is what the retrain learns
    from, where the latest rows would otherwise have made it the holdout."""
    if APPENDED in frame.columns:
        marked = frame[APPENDED].fill_null(False)
        batch, frame = frame.filter(marked).drop(APPENDED), frame.filter(~marked).drop(APPENDED)
        train, valid, test = split_frame(frame, spec, holdout)
        if batch.height == 0:
            return train, valid, test
        batch, test = _grouped_with(batch, test, spec)
        more_train, more_valid = _carve(batch, spec, spec.split.validation_size, spec.split.seed + 1)
        return pl.concat([train, more_train]), pl.concat([valid, more_valid]), test
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


def _carve(frame: pl.DataFrame, spec: DomainSpec, size: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, valid) of ``frame`` by the split's own rule for validation. A batch whose rows
    share one time stamp has no order to keep within it: it is carved at random rather than
    sent to validation whole, where a model without a refit would never learn from it."""
    if spec.split.kind in ("given", "time"):
        train, valid = _tail_split(frame, spec, size)
        if train.height > 0 or frame.height < 2:
            return train, valid
    return _random_split(frame, spec, size, seed=seed)


def _grouped_with(batch: pl.DataFrame, test: pl.DataFrame, spec: DomainSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """On a group split, an appended row of a held-out group joins the holdout: no group is on
    both sides. (A time split's groups have rows on both sides by design.)"""
    group = spec.group_column
    if group is None or spec.split.kind in ("given", "time"):
        return batch, test
    held_out = test[group].cast(pl.String).fill_null("").unique().implode()
    held = batch[group].cast(pl.String).fill_null("").is_in(held_out)
    return batch.filter(~held), pl.concat([test, batch.filter(held)], how="vertical_relaxed")


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
    """Seeded random (stratified for classes) split; with a group column, whole groups move
    together so no group is on both sides."""
    rng = np.random.default_rng(seed)
    if spec.group_column is not None:
        groups = frame[spec.group_column].cast(pl.String).fill_null("").unique().sort().to_numpy()
        chosen = rng.choice(groups, size=max(1, round(len(groups) * size)), replace=False)
        late = frame[spec.group_column].cast(pl.String).fill_null("").is_in(chosen.tolist())
        return frame.filter(~late), frame.filter(late)
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

    def __init__(
        self, numeric: list[str], categorical: list[str], max_levels: int = MAX_LEVELS, datetime: tuple[str, ...] = ()
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.datetime = list(datetime)
        self.max_levels = max_levels

    def fit(self, frame: pl.DataFrame) -> TabularEncoder:
        levels = {}
        for name in self.categorical:
            counts = frame[name].cast(pl.String).drop_nulls().value_counts(sort=True)
            levels[name] = counts[name].head(self.max_levels).sort().to_list()
        self.state_ = {"numeric": list(self.numeric), "datetime": self.datetime, "categorical": levels}
        return self

    def transform(self, frame: pl.DataFrame) -> np.ndarray:
        return encode(self.state_, {c: frame[c].to_numpy() for c in self.numeric + self.datetime + self.categorical})


@dataclass(frozen=True)
class Validated:
    """The checked, typed tables (PII dropped, unlabelled rows left out) and their fingerprint."""

    frame: pl.DataFrame
    holdout: pl.DataFrame | None
    fingerprint: str
    notes: tuple[str, ...] = ()


def infinities_missing(frame: pl.DataFrame, spec: DomainSpec, source: str = "data") -> tuple[pl.DataFrame, list[str]]:
    """The policy for non-finite features: NaN is already missing (the reader and the service read
    it so); +/-inf is read as missing too, as the scoring service does, and each column where it
    occurs is named with its first rows. Gradient-boosted and linear models alike then treat it
    as any missing value."""
    notes, fixed = [], []
    for column in spec.feature_columns:
        values = frame[column.name] if column.name in frame.columns else None
        if values is None or not values.dtype.is_float():
            continue
        infinite = values.is_infinite()
        count = int(infinite.sum())
        if count:
            rows = [r + 1 for r in infinite.arg_true().head(5).to_list()]
            notes.append(f"{source}: column {column.name!r}: {count} infinite value(s) read as missing (rows {rows})")
            fixed.append(
                pl.when(pl.col(column.name).is_infinite()).then(None).otherwise(pl.col(column.name)).alias(column.name)
            )
    return (frame.with_columns(fixed) if fixed else frame), notes


def validate_tables(spec: DomainSpec, frame: pl.DataFrame, holdout: pl.DataFrame | None = None) -> Validated:
    frame, notes = drop_unlabelled(validate(frame, spec, "data"), spec, "data")
    frame, more = infinities_missing(frame, spec, "data")
    notes += more
    if holdout is not None:
        holdout, more = drop_unlabelled(validate(holdout, spec, "holdout data"), spec, "holdout data")
        holdout, also = infinities_missing(holdout, spec, "holdout data")
        notes += more + also
    digest = fingerprint(frame, *([holdout] if holdout is not None else []))
    return Validated(frame=frame, holdout=holdout, fingerprint=digest, notes=tuple(notes))


def prepare(spec: DomainSpec, frame: pl.DataFrame, holdout: pl.DataFrame | None = None) -> PreparedData:
    """Validate, add the recipe's features (in this process), split, check for leakage, fit the
    encoder on train, and encode every part."""
    from lepton.domains.recipes import apply

    checked = validate_tables(spec, frame, holdout)
    config = spec.recipe_config()
    test = apply(config, checked.holdout) if checked.holdout is not None else None
    return prepare_parts(spec, apply(config, checked.frame), test, checked.notes, checked.fingerprint)


def prepare_parts(
    spec: DomainSpec,
    frame: pl.DataFrame,
    holdout: pl.DataFrame | None,
    notes: tuple[str, ...] = (),
    digest: str | None = None,
) -> PreparedData:
    """Split tables that already carry the recipe's features, check for leakage, fit the encoder
    on train (over raw and derived features), and encode every part."""
    train, valid, test = split_frame(frame, spec, holdout)
    for name, part_frame in (("training", train), ("validation", valid), ("holdout", test)):
        if part_frame.height == 0:
            raise EmptyDataError(f"the {name} split is empty: {frame.height} labelled row(s) are too few to split")
    if spec.task != "regression":
        for name, part_frame in (("training", train), ("validation", valid), ("holdout", test)):
            single = [p for p in target_problems(part_frame[spec.target], spec) if p.kind == "single_class"]
            if single:
                raise SchemaError(single, f"the {name} split ({part_frame.height} rows)")
    classes = class_labels(train[spec.target], spec)
    model_spec = spec.with_features()
    notes = (*notes, *check_leakage(train, model_spec, classes).notes)
    kinds = {c.name: c.dtype for c in model_spec.feature_columns}
    encoder = TabularEncoder(
        [n for n, d in kinds.items() if d in (Dtype.FLOAT, Dtype.INT, Dtype.BOOL)],
        [n for n, d in kinds.items() if d is Dtype.CATEGORY],
        datetime=tuple(n for n, d in kinds.items() if d is Dtype.DATETIME),
    ).fit(train)

    def part(f: pl.DataFrame) -> Part:
        return Part(frame=f, X=encoder.transform(f), y=encode_labels(f[spec.target], spec, classes))

    return PreparedData(
        domain=spec.name,
        train=part(train),
        valid=part(valid),
        holdout=part(test),
        encoder=encoder.state_,
        classes=classes,
        fingerprint=digest or fingerprint(frame, *([holdout] if holdout is not None else [])),
        notes=tuple(notes),
    )


def load_domain_data(
    spec: DomainSpec, data: str | None = None, holdout: str | None = None, append: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Read the domain's own sample, or the user's files standing in for it; ``append``: a
    labelled batch in the same schema added to the training data (e.g. the batch a drift
    event came from), its rows marked ``APPENDED`` for ``split_frame``."""
    main, test = _domain_tables(spec, data, holdout)
    if append:
        extra = read_table(append, spec.data.encoding)
        unknown = sorted(set(extra.columns) - set(main.columns))
        if unknown:
            raise SchemaError([Problem("unknown_column", c, f"in {append}, not in the training data") for c in unknown])
        main = pl.concat(
            [main.with_columns(pl.lit(False).alias(APPENDED)), extra.with_columns(pl.lit(True).alias(APPENDED))],
            how="diagonal_relaxed",
        )
    return main, test


def _domain_tables(spec: DomainSpec, data: str | None, holdout: str | None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    encoding = spec.data.encoding
    if holdout and spec.split.kind != "given":
        raise InputPathError(
            f"domain {spec.name!r} holds out by a {spec.split.kind} split of its data; a separate holdout file "
            "would be ignored, so it is refused"
        )
    main = read_table(data or spec.data.resolve(spec.data.path), encoding)
    if holdout:
        return main, read_table(holdout, encoding)
    if spec.split.kind == "given":
        if data:
            raise InputPathError(f"domain {spec.name!r} splits on a given test file: pass holdout data too")
        return main, read_table(spec.data.resolve(spec.data.holdout_path), encoding)
    return main, None


def partitioned_inputs(
    spec: DomainSpec, data: str | None = None, holdout: str | None = None, append: str | None = None
) -> tuple[Dataset, Dataset | None] | None:
    """The training table and a given holdout as datasets when the training table is stored as
    many files (a directory or a glob, ``lepton.core.partitions``); None for a single file."""
    source = data or str(spec.data.resolve(spec.data.path))
    if not is_dataset(source):
        return None
    if append:
        raise InputPathError(f"{source} is a partitioned table: add the batch to it as one more file, not --append")
    if holdout and spec.split.kind != "given":
        raise InputPathError(f"domain {spec.name!r} holds out by a {spec.split.kind} split; a holdout would be ignored")
    test = holdout or (None if data else spec.data.resolve(spec.data.holdout_path))
    if spec.split.kind == "given" and test is None:
        raise InputPathError(f"domain {spec.name!r} splits on a given test file: pass holdout data too")
    return open_dataset(source), (open_dataset(test) if test and is_dataset(test) else _single(test))


def _single(path: str | Path | None) -> Dataset | None:
    """A single holdout file as a dataset of one partition."""
    if path is None:
        return None
    return Dataset.of_file(resolve_input(path))


PREFLIGHT_ROWS = 2_000_000  # larger tables are checked inside the flow, on the cluster


def preflight(spec: DomainSpec, data: str | None = None, holdout: str | None = None, append: str | None = None) -> int:
    """Every check that can stop a run, before anything starts or is recorded: read the files,
    validate them against the schema, add the recipe's features, split, and run the leakage
    sentinel on the training split, as the flow will. Raises the same typed errors; returns the
    rows checked (0 when the table is larger than ``PREFLIGHT_ROWS``: the flow checks it)."""
    from lepton.domains.recipes import apply

    if partitioned_inputs(spec, data, holdout, append) is not None:
        return 0  # listed and its footers read; the flow checks every partition on the workers
    frame, test = load_domain_data(spec, data, holdout, append)
    if frame.height > PREFLIGHT_ROWS:
        return 0
    checked = validate_tables(spec, frame, test)
    config = spec.recipe_config()
    table = apply(config, checked.frame)
    train, valid, rest = split_frame(
        table, spec, apply(config, checked.holdout) if checked.holdout is not None else None
    )
    for name, part_frame in (("training", train), ("validation", valid), ("holdout", rest)):
        if part_frame.height == 0:
            raise EmptyDataError(f"the {name} split is empty: {table.height} labelled row(s) are too few to split")
    check_leakage(train, spec.with_features(), class_labels(train[spec.target], spec))
    return table.height


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_task(
    spec: DomainSpec, data: str | None = None, holdout: str | None = None, append: str | None = None
) -> Validated:
    """Read a domain's data and check it against the schema.

    Args:
        spec: the domain.
        data: a user file to use instead of the domain's data (same schema).
        holdout: a user test file, for domains that split on a given test file.
        append: a labelled batch (same schema) added to the training data.
    Returns:
        Validated: typed tables (PII dropped, unlabelled rows left out), fingerprint and notes.
    """
    frame, test = load_domain_data(spec, data, holdout, append)
    return validate_tables(spec, frame, test)


def check_inputs(frame: pl.DataFrame, spec: DomainSpec, offset: int, source: str) -> pl.DataFrame:
    """The model inputs of ``frame`` cast to the spec's types; a SchemaError names every missing
    column and the first row (counted in the whole file) of each value that is not of its type."""
    problems: list[Problem] = []
    casts = []
    for column in spec.model_inputs:
        if column.name not in frame.columns:
            problems.append(Problem("missing_column", column.name, f"a model input, not in {source}"))
            continue
        cast, problem = cast_column(frame[column.name], column.dtype, offset)
        if problem is not None:
            problems.append(problem)
            continue
        casts.append(cast.cast(pl.String) if column.dtype in (Dtype.CATEGORY, Dtype.DATETIME) else cast)
    if problems:
        raise SchemaError(problems, source)
    return pl.DataFrame(casts)
