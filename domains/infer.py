"""Infer a DomainSpec from a user's table: task, roles, dtypes, positive class, split and metrics.

Everything inferred is said in a note, so ``lepton run --data ... --target ...`` can print it and
``lepton init`` can write it into a commented spec file for review. What the user states (flags or
keyword arguments) always wins over inference.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lepton.domains.spec import (
    Column,
    DataSource,
    DomainSpec,
    Dtype,
    LeakageSpec,
    Role,
    SplitSpec,
)
from lepton.errors import DataError, SpecError

TEMPLATES = ("finance", "medical", "manufacturing")
MAX_CLASSES = 50  # a text target with more distinct values than this is not a classification target
MAX_INT_CLASSES = 20  # an integer target with at most this many values is taken as classes
MIN_ROWS = 30
HIGH_CARDINALITY = 50  # matches the encoder's one-hot level cap
# Below this many training rows a regression or multiclass model is refitted on train + validation
# once chosen (``SplitSpec.refit``): on public tables (bench/quality.py --refit) that was worth
# +0.09 R² (loans), +0.02 macro-F1 (hpc jobs), +0.007 R² (concrete); binary models gained
# nothing there and keep their calibration, which a refit gives up.
REFIT_ROWS = 50_000
TASK_DEFAULTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "binary": (
        "roc_auc",
        ("roc_auc", "average_precision", "brier", "log_loss", "calibration_error", "balanced_accuracy"),
    ),
    "multiclass": ("f1_macro", ("f1_macro", "accuracy", "balanced_accuracy", "log_loss")),
    "regression": ("r2", ("r2", "rmse", "mae")),
}
POSITIVE_WORDS = {
    "1", "true", "yes", "y", "t", "positive", "pos", "bad", "default", "defaulted", "fault", "faulty", "fail",
    "failed", "failure", "churn", "churned", "event", "dead", "died", "death", "deceased", "malignant",
    "abnormal", "fraud", "disease", "sick", "case", "attrition", "reject", "rejected", "defect", "defective",
}  # fmt: skip
NEGATIVE_WORDS = {
    "0", "false", "no", "n", "f", "negative", "neg", "good", "ok", "normal", "benign", "healthy", "alive",
    "control", "none", "pass", "passed", "accept", "accepted",
}  # fmt: skip
_PERSON_NAME = re.compile(
    r"(^|_)((first|last|given|middle|maiden|nick|sur|full|family|fore|birth)_?name|surname|forename|name)($|_)"
)
_PII_TOKEN = {  # what a column's name says it holds -> the value check that confirms it
    "email": re.compile(r"(^|_)(e_?mail|email_address)($|_)"),
    "phone": re.compile(r"(^|_)(phone|phone_number|telephone|tel|mobile|mobile_number|cell_phone|fax)($|_)"),
    "national id": re.compile(r"(^|_)(ssn|social_security|passport|national_id|tax_id|nino)($|_)"),
    "address": re.compile(r"(^|_)(street|street_address|home_address|address|address_line\d?|zip_?code|postcode)($|_)"),
    "birth date": re.compile(r"(^|_)(date_of_birth|dob|birth_?date|birthday)($|_)"),
    "network address": re.compile(r"(^|_)(ip|ip_address)($|_)"),
    "card number": re.compile(r"(^|_)(credit_card|card_number|card_no|iban|account_number)($|_)"),
}
_NOT_PERSON = re.compile(
    r"(^|_)(clinic|hospital|company|product|file|host|model|brand|team|site|plant|city|state|country"
    r"|street|place|station|store|event|item|drug|test|species|job|unit)_?name($|_)"
)
_ID_NAME = re.compile(r"(^|_)(id|key|uuid|guid|index|idx|row|rownames?|row_?number|record)$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+?[\d\s\-().]{7,20}$")
_DATE = r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})([ T].*)?$"  # not a phone number
_SSN = r"^\d{3}-\d{2}-\d{4}$"
_IBAN = r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$"
_CARD = r"^(\d[ -]?){12,18}\d$"
_WORDS = r"^[A-Za-z][A-Za-z'.\-]*( [A-Za-z][A-Za-z'.\-]*){0,3}$"  # one to four words, letters only
FEW_LEVELS = 10  # a name-matched column with at most this many levels, none personal, is kept
_YEAR_NAME = re.compile(r"(^|_)(year|yr|fiscal_year)($|_)")
_TIME_NAME = re.compile(r"(^|_)(date|day|week|month|quarter|period|timestamp|epoch)($|_)")  # "time": often a duration
_CYCLIC_NAME = re.compile(r"(^|_)(of_(week|month|year)|weekday|dow|hour|minute)($|_)")


class Hints(BaseModel):
    """What the user says about the table; anything left out is inferred."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str = Field(min_length=1)
    task: Literal["binary", "multiclass", "regression"] | None = None
    template: Literal["finance", "medical", "manufacturing"] | None = None
    name: str | None = None
    time_col: str | None = None
    group_col: str | None = None
    id_cols: tuple[str, ...] = ()
    pii_cols: tuple[str, ...] = ()
    drop_cols: tuple[str, ...] = ()
    positive_class: str | int | bool | None = None
    allow_leakage: tuple[str, ...] = ()
    encoding: str | None = None


def make_hints(**given: Any) -> Hints:
    """Hints from flags or keyword arguments; a wrong one is a SpecError naming it."""
    try:
        return Hints(**given)
    except ValidationError as exc:
        raise SpecError.from_validation(exc, "options") from exc


@dataclass(frozen=True)
class Inferred:
    spec: DomainSpec
    notes: tuple[str, ...]
    why: Mapping[str, str] = field(default_factory=dict)  # column -> why it is not a plain feature


# ---- helpers -----------------------------------------------------------------------------------
def snake(name: str) -> str:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")


def slug(stem: str) -> str:
    """A registry-safe name from a file name: ``Credit Data (2016).csv`` -> ``credit-data-2016``."""
    text = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")
    if not text or not text[0].isalpha():
        text = f"t-{text}".rstrip("-")
    return text[:63]


def _missing_column(flag: str, name: str, columns: list[str]) -> tuple[str, str]:
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
    lowered = [c for c in columns if c.lower() == name.lower() and c != name]
    hint = f"; did you mean {(lowered or close)}?" if lowered or close else ""
    return flag, f"no column {name!r} in the data{hint}"


@functools.cache
def _person_names() -> frozenset[str]:
    """Lower-cased first names and frequent surnames (US Census 1990; ``data/person_names.json``)."""
    table = pl.read_parquet(Path(__file__).parent / "data" / "person_names.parquet")
    return frozenset(table["name"].to_list())


def _luhn(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0


def _value_kind(sample: pl.Series) -> str | None:
    """What personal data the text values are, judged by the values alone, or None."""
    digits = sample.str.count_matches(r"\d")
    phones = sample.str.contains(_PHONE.pattern) & (digits >= 7) & (digits <= 15) & ~sample.str.contains(_DATE)
    cards = sample.filter(sample.str.contains(_CARD))
    checks = (
        (lambda: sample.str.contains(_EMAIL.pattern).mean() >= 0.5, "values that look like email addresses"),
        (lambda: sample.str.contains(_SSN).mean() >= 0.8, "values that look like US social security numbers"),
        (
            lambda: phones.mean() >= 0.8 and sample.str.contains(r"[\s\-().+]").mean() >= 0.5,
            "values that look like phone numbers",
        ),
        (lambda: sample.str.contains(_IBAN).mean() >= 0.8, "values that look like IBANs"),
        (
            lambda: cards.len() >= 0.8 * sample.len() and sum(map(_luhn, cards.to_list())) >= 0.8 * cards.len(),
            "values that look like card numbers (Luhn check digits)",
        ),
    )
    return next((reason for check, reason in checks if check()), None)


def _person_share(sample: pl.Series) -> float:
    """Share of distinct values made only of known first names and surnames (one to three words)."""
    known = _person_names()
    words = sample.unique().str.to_lowercase().str.split(" ").to_list()
    hits = [1.0 if 1 <= len(w) <= 3 and all(part in known for part in w) else 0.0 for w in words]
    return float(np.mean(hits)) if hits else 0.0


def pii_reason(name: str, values: pl.Series) -> str | None:
    """Why ``name`` holds personal data, or None. The values decide; the name is a hint that
    lowers the bar (see ``pii_check``)."""
    return pii_check(name, values)[0]


def pii_check(name: str, values: pl.Series) -> tuple[str | None, str | None]:  # noqa: PLR0911 (one verdict a rule)
    """(why the column is personal data, or None; a note when a match by name alone was kept).

    Values first: emails, phone, social-security, IBAN and card numbers are personal whatever
    the column is called, and so is text made of known first names and surnames. A name that
    says personal data lowers the bar: the column is dropped unless its values are clearly not
    personal (at most ``FEW_LEVELS`` levels, no digits, and for a person-name column none of them
    a known name), and then it is kept with a note."""
    key = snake(name)
    hint = next((kind for kind, pattern in _PII_TOKEN.items() if pattern.search(key)), None)
    if hint is None and _PERSON_NAME.search(key) and not _NOT_PERSON.search(key):
        hint = "person name"
    if values.dtype != pl.String:
        personal = hint is not None and values.dtype != pl.Boolean and values.n_unique() > FEW_LEVELS
        return (f"its name ({hint}) and {values.n_unique()} distinct values", None) if personal else (None, None)
    sample = values.drop_nulls().head(2000)
    if sample.len() < 5:
        return (f"its name ({hint})", None) if hint else (None, None)
    kind = _value_kind(sample)
    if kind:
        return kind, None
    if hint is None:
        words = sample.n_unique() >= 20 and sample.str.contains(_WORDS).mean() >= 0.8
        return (
            ("values that read as person names (first names and surnames)", None)
            if (words and _person_share(sample) >= 0.6)
            else (None, None)
        )
    distinct = sample.n_unique()
    if hint == "person name" and _person_share(sample) >= 0.3:
        return "its name and values that are first names or surnames", None
    if distinct > FEW_LEVELS or bool(sample.str.contains(r"\d").any()):
        return f"its name ({hint}) and {distinct} distinct values", None
    levels = sample.unique().sort().head(3).to_list()
    return None, (
        f"column {name!r}: named like personal data ({hint}), but its {distinct} value(s) such as {levels} "
        "are not; kept as a feature (--pii-cols to drop it)"
    )


def _id_like(name: str, values: pl.Series, rows: int) -> str | None:
    if rows < MIN_ROWS or not (values.dtype == pl.String or values.dtype.is_integer()):
        return None
    present = values.drop_nulls()
    unique = present.n_unique()
    hinted = bool(_ID_NAME.search(snake(name)))
    if values.dtype == pl.String:
        if unique >= 0.95 * present.len():
            return "unique per row (an identifier or free text)"
        return None
    if unique == present.len() == rows:
        span = int(present.max()) - int(present.min()) + 1  # type: ignore[arg-type]
        if hinted or span <= 2 * rows or bool((present.diff().drop_nulls() > 0).all()):
            return "unique per row, a row number or identifier (dense, or increasing down the file)"
    if hinted and unique >= 0.5 * present.len():
        return "named like an identifier and nearly unique"
    return None


def propose_time(frame: pl.DataFrame, exclude: set[str]) -> tuple[str | None, str]:
    """The column that orders the rows in time, judged by its values (a datetime, or text read as a
    date or month) or, for whole numbers, by a time-like name (a day, month or year number);
    (None, "") when there is none."""
    for name in frame.columns:
        values = frame[name]
        if name in exclude or values.drop_nulls().n_unique() < 3:
            continue
        if isinstance(values.dtype, pl.Datetime | pl.Date):
            return name, "its values are dates"
    for name in frame.columns:
        values, key = frame[name], snake(name)
        if name in exclude or not values.dtype.is_integer() or _CYCLIC_NAME.search(key):
            continue
        present = values.drop_nulls()
        if _YEAR_NAME.search(key) and present.n_unique() >= 3 and present.min() >= 1800 and present.max() <= 2200:
            return name, "years (whole numbers from 1800 to 2200 under a year-like name)"
        if _TIME_NAME.search(key) and present.n_unique() > 31:  # more steps than a day of the month
            return name, "a day, week or month number (whole numbers under a time-like name)"
    return None, ""


def _dtype(values: pl.Series) -> Dtype | None:
    dtype = values.dtype
    if dtype == pl.Boolean:
        return Dtype.BOOL
    if dtype.is_integer():
        return Dtype.INT
    if dtype.is_float() or isinstance(dtype, pl.Decimal):
        return Dtype.FLOAT
    if isinstance(dtype, pl.Datetime | pl.Date):
        return Dtype.DATETIME
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return Dtype.CATEGORY
    return None


def _integral(values: pl.Series) -> bool:
    present = values.drop_nulls()
    if values.dtype.is_integer():
        return True
    return values.dtype.is_float() and bool((present == present.round(0)).all())


# ---- the target ----------------------------------------------------------------------------------
def infer_task(target: pl.Series) -> tuple[str, str]:
    """(task, why) from the target's values."""
    present = target.drop_nulls()
    distinct = present.n_unique()
    if distinct < 2:
        value = present.head(1).to_list()
        raise SpecError(
            [("--target", f"{target.name!r} has one value ({value[0]!r}) in every labelled row: nothing to predict")]
        )
    if target.dtype.is_float():
        bad = present.filter(~present.is_finite())
        if len(bad):
            first = bad.head(1).to_list()[0]
            why = f"{target.name!r} holds {len(bad)} non-finite value(s) ({first}): a target must be a finite number"
            raise SpecError([("--target", why)])
    if target.dtype == pl.Boolean or distinct == 2:
        return "binary", "two distinct values"
    if _dtype(target) is Dtype.CATEGORY:
        if distinct <= MAX_CLASSES:
            return "multiclass", f"{distinct} text values"
        raise SpecError(
            [("--task", f"{target.name!r} holds {distinct} distinct text values: too many classes; is it the target?")]
        )
    if _dtype(target) in (Dtype.INT, Dtype.FLOAT):
        if _integral(target) and distinct <= MAX_INT_CLASSES:
            return "multiclass", f"{distinct} whole-number values"
        return "regression", f"numeric with {distinct} distinct values"
    raise SpecError([("--target", f"{target.name!r} has type {target.dtype}, which cannot be a target")])


def _class_key(value: Any) -> str:
    return str(value).strip().lower()


def infer_positive(target: pl.Series, given: Any) -> tuple[Any, str]:
    """The positive class as it appears in the data, and why it was chosen."""
    counts = target.drop_nulls().value_counts(sort=True)
    values = counts[target.name].to_list()
    if given is not None:
        match = [v for v in values if str(v) == str(given)] or [v for v in values if _class_key(v) == _class_key(given)]
        if not match:
            raise SpecError([("--positive-class", f"{given!r} never occurs in {target.name!r}; values are {values}")])
        return match[0], "as given"
    positive = [v for v in values if _class_key(v) in POSITIVE_WORDS]
    negative = [v for v in values if _class_key(v) in NEGATIVE_WORDS]
    if len(positive) == 1 and positive[0] not in negative:
        return positive[0], f"{positive[0]!r} names the event"
    if len(negative) == 1:
        other = next(v for v in values if v != negative[0])
        return other, f"{negative[0]!r} names the non-event"
    minority = values[-1]
    return minority, "the rarer class"


def infer_normal(target: pl.Series) -> tuple[Any, str]:
    counts = target.drop_nulls().value_counts(sort=True)
    values = counts[target.name].to_list()
    named = [v for v in values if _class_key(v) in {"0", "normal", "ok", "none", "no_fault", "nofault", "good"}]
    if len(named) == 1:
        return named[0], f"{named[0]!r} names normal operation"
    return values[0], "the most frequent class"


# ---- the spec ----------------------------------------------------------------------------------
def _check_hints(frame: pl.DataFrame, hints: Hints) -> None:
    columns = frame.columns
    problems = []
    singles = {"--target": hints.target, "--time-col": hints.time_col, "--group-col": hints.group_col}
    for flag, name in singles.items():
        if name is not None and name not in columns and not (flag == "--time-col" and name == NO_TIME):
            problems.append(_missing_column(flag, name, columns))
    lists = {
        "--id-cols": hints.id_cols,
        "--pii-cols": hints.pii_cols,
        "--drop-cols": hints.drop_cols,
        "--allow-leakage": hints.allow_leakage,
    }
    for flag, names in lists.items():
        problems.extend(_missing_column(flag, n, columns) for n in names if n not in columns)
    for flag, names in lists.items():
        if hints.target in names and flag != "--allow-leakage":
            problems.append((flag, f"{hints.target!r} is the target"))
    if problems:
        raise SpecError(problems, "options")


def infer_spec(
    frame: pl.DataFrame, hints: Hints, data_path: str | Path, holdout_path: str | Path | None = None
) -> Inferred:
    """Build a validated DomainSpec for ``frame`` (read from ``data_path``) from ``hints``; with
    ``holdout_path`` the split is "given": that file is the test set."""
    _check_hints(frame, hints)
    notes: list[str] = []
    target = frame[hints.target]
    labelled = target.drop_nulls().len()
    if labelled == 0:
        raise DataError(f"target {hints.target!r}: every value is missing")
    if labelled < MIN_ROWS:
        raise DataError(f"target {hints.target!r}: {labelled} labelled row(s); Lepton needs at least {MIN_ROWS}")
    if target.null_count():
        notes.append(f"{target.null_count()} row(s) have no {hints.target!r} and will be left out")

    task, why = (hints.task, "as given") if hints.task else infer_task(target)
    _check_task(target, task)
    notes.append(f"task: {task} ({why})")

    positive = normal = None
    if task == "binary":
        positive, why = infer_positive(target, hints.positive_class)
        notes.append(f"positive class: {positive!r} ({why}; --positive-class to change)")
    elif hints.positive_class is not None:
        raise SpecError([("--positive-class", f"applies to binary targets; this task is {task}")])

    personal = {  # judged once per column: the time proposal and the roles both need it
        name: ("--pii-cols", None) if name in hints.pii_cols else pii_check(name, frame[name])
        for name in frame.columns
        if name != hints.target and name not in hints.drop_cols
    }
    why: dict[str, str] = {}
    hints = _with_time(frame, hints, personal, notes, why)
    columns = [_target_column(target, task)]
    columns += _feature_columns(frame, hints, personal, notes, why)
    template = _template_fields(task, hints.template, notes)
    if task == "multiclass" and "normal_class" in template:
        normal, why = infer_normal(target)
        template["normal_class"] = normal
        notes.append(f"normal class: {normal!r} ({why})")
    split = _split(hints, task, holdout_path, notes, frame.height)
    name = hints.name or slug(Path(data_path).stem)
    try:
        spec = DomainSpec(
            name=name,
            description=f"{task} model of {hints.target!r} from {Path(data_path).name}",
            data=DataSource(
                path=str(data_path),
                holdout_path=str(holdout_path) if holdout_path else None,
                encoding=hints.encoding,
            ),
            columns=tuple(columns),
            task=task,  # type: ignore[arg-type]
            positive_class=positive,
            split=split,
            leakage=LeakageSpec(allow=hints.allow_leakage),
            **template,
        )
    except ValidationError as exc:
        raise SpecError.from_validation(exc, "inferred spec") from exc
    return Inferred(spec=spec, notes=tuple(notes), why=why)


NO_TIME = "none"  # --time-col none: no time column, whatever the data hold


def _with_time(
    frame: pl.DataFrame,
    hints: Hints,
    personal: dict[str, tuple[str | None, str | None]],
    notes: list[str],
    why: dict[str, str],
) -> Hints:
    """Time-aware by default: a column that orders the rows in time becomes the time column (the
    split holds out the latest rows) unless the user named one or said ``--time-col none``."""
    if hints.time_col == NO_TIME:
        notes.append("time: none, as asked (--time-col none); the split does not follow time")
        return hints.model_copy(update={"time_col": None})
    if hints.time_col is not None:
        return hints
    taken = {hints.target, hints.group_col, *hints.id_cols, *hints.drop_cols}
    taken |= {n for n, (reason, _) in personal.items() if reason}
    name, because = propose_time(frame, {t for t in taken if t})
    if name is None:
        return hints
    notes.append(
        f"time: {name!r} orders the rows in time ({because}); the latest rows are held out, as new data would "
        f"arrive (--time-col NAME for another, --time-col {NO_TIME} for a random split)"
    )
    why[name] = (
        f"proposed as the time column ({because}): the split holds out the latest rows. For a random split "
        "instead, make it role: feature and set split.kind (or pass --time-col none)"
    )
    return hints.model_copy(update={"time_col": name})


def _split(hints: Hints, task: str, holdout_path: str | Path | None, notes: list[str], rows: int) -> SplitSpec:
    time_col = hints.time_col
    if holdout_path is not None:
        kind = "given"
    elif time_col:
        kind = "time"
    elif task == "regression":
        kind = "random"
    else:
        kind = "stratified"
    split = SplitSpec(kind=kind)  # type: ignore[arg-type]
    training = rows * (1 - split.validation_size) * (1 if kind == "given" else 1 - split.holdout_size)
    if task != "binary" and training < REFIT_ROWS:
        split = split.model_copy(update={"refit": True})
    if kind == "given":
        where = (
            f"the latest {split.validation_size:.0%} by {time_col!r}" if time_col else f"{split.validation_size:.0%}"
        )
        text = f"split: the holdout is {Path(holdout_path).name}; validation is {where} of the training file"
    else:
        text = (
            f"split: {kind}"
            + (f" on {time_col!r}: the latest rows are held out" if time_col else "")
            + f" ({split.holdout_size:.0%} holdout, {split.validation_size:.0%} of the rest for validation)"
        )
    if hints.group_col:
        text += f"; whole {hints.group_col!r} groups stay on one side"
    if split.refit:
        text += (
            f"; the chosen model is then refitted on train + validation (about {training:,.0f} training "
            f"rows, under {REFIT_ROWS:,}: the validation rows are worth learning from)"
        )
    notes.append(text)
    return split


def _check_task(target: pl.Series, task: str) -> None:
    distinct = target.drop_nulls().n_unique()
    if task == "binary" and distinct != 2:
        raise SpecError([("--task", f"binary needs two classes; {target.name!r} has {distinct}")])
    if task == "multiclass" and distinct < 3:
        raise SpecError([("--task", f"multiclass needs three or more classes; {target.name!r} has {distinct}")])
    if task == "regression" and _dtype(target) not in (Dtype.INT, Dtype.FLOAT):
        raise SpecError([("--task", f"regression needs a numeric target; {target.name!r} is {target.dtype}")])


def _target_column(target: pl.Series, task: str) -> Column:
    kind = _dtype(target) or Dtype.CATEGORY
    if task != "regression" and kind is Dtype.FLOAT and _integral(target):
        kind = Dtype.INT
    return Column(name=target.name, dtype=kind, role=Role.TARGET)


def _role(name: str, values: pl.Series, hints: Hints, rows: int, notes: list[str], why: dict[str, str]) -> Role | None:
    """The column's role, or None to leave it out; every exclusion is noted."""
    stated = {hints.time_col: Role.TIME, hints.group_col: Role.GROUP, **dict.fromkeys(hints.id_cols, Role.ID)}
    if name in stated:
        return stated[name]
    if values.null_count() == rows:
        notes.append(f"column {name!r}: every value is missing; left out")
        return None
    if values.n_unique() <= 1:
        notes.append(f"column {name!r}: constant ({values.drop_nulls().head(1).to_list()}); left out")
        return None
    because = _id_like(name, values, rows)
    if because:
        notes.append(f"warning: column {name!r}: {because}; kept as an id, not a feature (--id-cols to say so)")
        why[name] = f"{because}: an id, never a feature"
        return Role.ID
    if _dtype(values) is Dtype.CATEGORY and values.n_unique() > HIGH_CARDINALITY:
        notes.append(
            f"column {name!r}: {values.n_unique()} levels; the {HIGH_CARDINALITY} most frequent become "
            "indicators, the rest share one code"
        )
    return Role.FEATURE


def _feature_columns(
    frame: pl.DataFrame,
    hints: Hints,
    personal: dict[str, tuple[str | None, str | None]],
    notes: list[str],
    why: dict[str, str],
) -> list[Column]:
    columns: list[Column] = []
    for name in frame.columns:
        if name == hints.target or name in hints.drop_cols:
            continue
        values = frame[name]
        reason, kept = personal[name]
        if kept:
            notes.append(kept)
        if reason:
            columns.append(Column(name=name, dtype=Dtype.CATEGORY, role=Role.PII))
            notes.append(f"column {name!r}: personal data ({reason}); dropped before anything is logged")
            why[name] = f"personal data ({reason}): dropped before anything is logged"
            continue
        kind = _dtype(values)
        if kind is None:
            notes.append(f"column {name!r}: type {values.dtype} is not supported; left out")
            continue
        role = _role(name, values, hints, frame.height, notes, why)
        if role is not None:
            columns.append(Column(name=name, dtype=kind, role=role))
    if hints.drop_cols:
        notes.append(f"dropped as asked: {list(hints.drop_cols)}")
    features = [c.name for c in columns if c.role is Role.FEATURE]
    if not features:
        raise SpecError([("columns", "no usable feature column is left after the exclusions above")])
    notes.append(f"{len(features)} feature(s): {features[:12]}{' ...' if len(features) > 12 else ''}")
    return columns


def _template_fields(task: str, template: str | None, notes: list[str]) -> dict[str, Any]:
    primary, metrics = TASK_DEFAULTS[task]
    fields: dict[str, Any] = {"primary_metric": primary, "metrics": metrics}
    if template is None:
        notes.append(f"metrics: {task} defaults, primary {primary} (no template)")
        return fields
    from lepton.domains import get_spec

    base = get_spec(template)
    fields |= {
        "latency_budget_ms": base.latency_budget_ms,
        "drift": base.drift,
        "schedule": base.schedule,
    }
    if base.task != task:
        fitting = [name for name in TEMPLATES if get_spec(name).task == task]
        instead = f"use --template {' or '.join(fitting)}, or" if fitting else "run it with"
        raise SpecError(
            [
                (
                    "--template",
                    f"{template!r} is for {base.task} targets and its gates, threshold rule and cost model mean "
                    f"nothing for a {task} one; {instead} no template ({task} metrics, no gates)",
                )
            ]
        )
    fields |= {
        "primary_metric": base.primary_metric,
        "metrics": base.metrics,
        "gates": dict(base.gates),
        "cost": base.cost,
        "target_specificity": base.target_specificity,
        "target_sensitivity": base.target_sensitivity,
    }
    if base.false_alarm_budget is not None and task == "multiclass":
        fields["false_alarm_budget"] = base.false_alarm_budget
    if base.normal_class is not None:
        fields["normal_class"] = None  # inferred from this target's classes by the caller
    notes.append(f"template {template!r}: primary {base.primary_metric}, gates {dict(base.gates) or 'none'}")
    return fields


# ---- the spec file -----------------------------------------------------------------------------
_SECTIONS: tuple[tuple[str, str], ...] = (
    ("name", "Registered model: lepton-<name>. Lower-case letters, digits, '-' and '_'."),
    ("description", ""),
    ("data", "The table. A relative path is read from this file's directory; encoding is for non-UTF-8 CSV."),
    (
        "columns",
        "One entry per column. dtype: float | int | category | bool | datetime.\n"
        "role: feature | target | time (orders rows) | group (kept together in the split)\n"
        "      | id (kept, never a feature) | pii (dropped before anything is logged).\n"
        "A column missing from this list is ignored.",
    ),
    ("task", "binary | multiclass | regression"),
    ("positive_class", "The class a binary model scores (the event: a bad loan, a death, a fault)."),
    ("normal_class", "Multiclass: the class meaning normal operation, for alarm metrics."),
    (
        "split",
        "How the holdout is chosen: stratified | random | time (needs a time column) | given (needs\n"
        "data.holdout_path). The holdout is never seen by fitting, tuning or thresholding.",
    ),
    ("primary_metric", "Picks the model; a new model must beat the baseline and the champion on it."),
    ("metrics", "Computed on the holdout and logged to MLflow."),
    ("gates", "Bounds every champion must meet: a minimum for higher-is-better metrics, else a maximum."),
    ("cost", "Cost of each kind of error; the decision threshold minimises expected cost on validation."),
    ("target_specificity", "Specificity at which sensitivity_at_specificity is reported."),
    (
        "target_sensitivity",
        "Binary: the decision threshold keeps this sensitivity on new rows (a 90% bound on validation);\n"
        "set, it replaces the cost model's threshold.",
    ),
    (
        "false_alarm_budget",
        "Multiclass with a normal_class: alarm (the most probable fault) only when 1 - P(normal) reaches\n"
        "a threshold set on validation's normal rows for at most this false-alarm rate (a 90% bound).",
    ),
    ("latency_budget_ms", "Single-row scoring budget, milliseconds."),
    ("drift", "Monitoring: a feature drifts when its PSI against training exceeds psi_threshold."),
    (
        "leakage",
        "The sentinel stops the run before anything is recorded when a feature alone predicts the target\n"
        "above threshold (ROC AUC, balanced accuracy or R²), carries most of what the table predicts,\n"
        "re-expresses the target, or is a per-row id; list a column in allow to keep it anyway.",
    ),
    ("schedule", "Cron schedule of the retraining deployment."),
)


def render_spec(
    spec: DomainSpec, notes: tuple[str, ...] | list[str], base: Path, why: Mapping[str, str] | None = None
) -> str:
    """The spec as commented YAML that ``DomainSpec.from_yaml`` reads back to the same spec.
    The data path is written relative to ``base`` (the spec file's directory) when it can be;
    ``why`` (column -> reason) is written as a comment above each column it explains."""
    import os

    import yaml

    def dump(value: Any) -> str:
        text = yaml.safe_dump(value, sort_keys=False, default_flow_style=True, allow_unicode=True, width=1000)
        return text.strip().removesuffix("...").strip()

    raw = spec.model_dump(mode="json")
    data = {k: v for k, v in raw["data"].items() if v is not None}
    for key in ("path", "holdout_path"):
        if key in data and Path(data[key]).is_absolute():
            try:
                data[key] = os.path.relpath(data[key], base)
            except ValueError:  # another drive (Windows): keep it absolute
                pass
    raw["data"] = data
    lines = [
        f"# Lepton domain spec for {spec.name!r}, written by `lepton init`.",
        "# Review it, then run:  lepton run --spec <this file>",
        "#",
        "# What was inferred from the data:",
        *(f"#   - {note}" for note in notes),
    ]
    for key, comment in _SECTIONS:
        value = raw.get(key)
        if value is None or value in ({}, [], ""):
            if key in {"positive_class", "normal_class", "cost", "gates", "description"}:
                continue
        lines.append("")
        lines.extend(f"# {line}" for line in comment.splitlines() if comment)
        if key == "columns":
            lines.append("columns:")
            for column in value:
                if why and column["name"] in why:
                    lines.append(f"  # {column['name']}: {why[column['name']]}")
                lines.append(f"  - {dump(column)}")
        elif isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {dump(v)}" for k, v in value.items())
        else:
            lines.append(f"{key}: {dump(value)}")
    return "\n".join(lines) + "\n"
