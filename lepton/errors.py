"""Typed errors: every failure a user can cause names the column, row or field at fault."""

from __future__ import annotations

from dataclasses import dataclass


class LeptonError(Exception):
    """Base class: the CLI turns these into a clear message and exit code 2."""


class DataError(LeptonError):
    """The input data cannot be used as given."""


class InputPathError(DataError):
    """A path given by the user is missing, unreadable, a directory or of an unknown format."""


class EmptyDataError(DataError):
    """The file holds no rows."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a table, tied to the column (and row, where there is one)."""

    kind: str  # missing_column | wrong_dtype | all_null | single_class | null_target | unknown_class | duplicate_column
    column: str
    detail: str

    def __str__(self) -> str:
        return f"column {self.column!r}: {self.kind.replace('_', ' ')} - {self.detail}"


class SchemaError(DataError):
    """The table does not match the domain's schema; ``problems`` lists every violation."""

    def __init__(self, problems: list[Problem], source: str = "data") -> None:
        self.problems = problems
        lines = "\n  ".join(str(p) for p in problems)
        super().__init__(f"{source} does not match the schema ({len(problems)} problem(s)):\n  {lines}")

    @property
    def columns(self) -> list[str]:
        return [p.column for p in self.problems]


class EngineError(LeptonError):
    """The compute cluster failed in a way a retry could not mend (e.g. every worker lost)."""


class WorkerMemoryError(EngineError):
    """A Dask worker was lost while near its memory limit: most likely killed for using too much."""


class PromotionConflictError(LeptonError):
    """The champion alias kept moving while a candidate was compared with it."""


class SettingsError(LeptonError, ValueError):
    """An environment variable Lepton reads (``LEPTON_*``) has a value it cannot use."""


class SpecError(LeptonError):
    """A domain spec (YAML or flags) is invalid; ``problems`` lists (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "options") -> None:
        self.problems = problems
        lines = "\n  ".join(f"{field}: {message}" for field, message in problems)
        super().__init__(f"{source} not valid ({len(problems)} problem(s)):\n  {lines}")

    @classmethod
    def from_validation(cls, exc: Exception, source: str = "options") -> SpecError:
        """From a pydantic ``ValidationError``: one (dotted field path, message) per error."""
        errors = exc.errors()  # type: ignore[attr-defined]
        return cls([(".".join(str(p) for p in e["loc"]) or "(spec)", e["msg"]) for e in errors], source)

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.problems]


class LeakageError(DataError):
    """Columns that look like the answer in disguise (``lepton.tasks.leakage``): each suspect with the
    rule it broke and its evidence; ``suspects`` maps each column to (metric, its own score)."""

    def __init__(self, suspects: list, threshold: float) -> None:
        self.found = suspects
        self.suspects = {s.column: (s.metric, s.solo) for s in suspects}
        self.threshold = threshold
        lines = "\n  ".join(f"{s.column!r} ({s.rule}): {s.evidence}" for s in suspects)
        super().__init__(
            f"leakage sentinel: {len(suspects)} column(s) look like the outcome in disguise (measured on the "
            f"training split):\n  {lines}\nDrop them (--drop-cols {','.join(self.suspects)}) or, if they are "
            f"known before the outcome, allow them (--allow-leakage {','.join(self.suspects)})"
        )


class LatencyBudgetError(LeptonError):
    """No candidate model scores a row within the spec's ``latency_budget_ms``."""
