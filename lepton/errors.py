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

    kind: str  # missing_column | wrong_dtype | all_null | single_class | null_target | unknown_class
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
