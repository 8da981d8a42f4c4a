"""Partitioned tables: a table stored as many files, read one file at a time where it lies.

A dataset is a directory of Parquet or CSV files (hive-style ``key=value`` folders become
columns), or a glob (``data/part-*.parquet``). The driver only lists the files and reads their
metadata; each file is read whole by whichever process handles it (a Dask worker), with the
same reader as a single file (``lepton.core.tables.load``), so the same values come out.

A foundation module, not a stage: the scan stage (``lepton.tasks.scan``) reads partitions
through it, the CLI and the API tell a dataset from a file with ``is_dataset``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import polars as pl

from lepton.core.tables import READERS, _format, load, resolve_input
from lepton.errors import InputPathError

GLOB_CHARS = "*?["
HIDDEN = (".", "_")  # _SUCCESS, _metadata, .crc files written next to the data by Spark and Hadoop


@dataclass(frozen=True)
class Partition:
    """One file of a dataset, and the hive-style column values its folders give its rows."""

    path: Path
    keys: tuple[tuple[str, str], ...] = ()
    rows: int | None = None  # from the Parquet footer; None for CSV (known once read)

    @property
    def name(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class Dataset:
    """The files of a partitioned table, in a fixed order (sorted paths)."""

    root: str  # as the user gave it, resolved
    format: str  # "parquet" or "csv"
    partitions: tuple[Partition, ...]
    folder: str = ""  # the folder it lies in (a glob's fixed part)

    @property
    def rows(self) -> int | None:
        """Rows in all files, from the Parquet footers (None for CSV)."""
        counts = [p.rows for p in self.partitions]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    def describe(self) -> str:
        rows = self.rows
        size = f"{rows:,} rows in " if rows is not None else ""
        return f"{self.root}: {size}{len(self.partitions)} {self.format} file(s)"


def is_dataset(path: str | Path) -> bool:
    """True for a directory or a glob pattern: a table stored as many files."""
    text = str(path)
    return any(c in text for c in GLOB_CHARS) or Path(text).expanduser().is_dir()


def open_dataset(path: str | Path) -> Dataset:
    """List a dataset's files and read their footers (never their rows). Raises InputPathError
    when nothing matches, the files mix formats or a file is unreadable."""
    text = os.path.expanduser(str(path))
    if any(c in text for c in GLOB_CHARS):
        root = Path(_fixed_prefix(text)).resolve()  # hive keys: the folders below the pattern's fixed part
        found = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
        where = text
    else:
        root = Path(text).resolve()
        if not root.is_dir():
            raise InputPathError(f"{root}: not a directory of data files")
        found = [p for p in root.rglob("*") if p.is_file()]
        where = str(root)
    files = sorted(p.resolve() for p in found if not p.name.startswith(HIDDEN) and _format(p) is not None)
    if not files:
        raise InputPathError(f"{where}: no CSV or Parquet files ({', '.join(sorted(READERS))})")
    formats = {_format(p) for p in files}
    if len(formats) > 1:
        raise InputPathError(f"{where}: mixes CSV and Parquet files; a dataset is one format")
    partitions = tuple(Partition(resolve_input(p), _hive_keys(root, p), _footer_rows(p)) for p in files)
    names = [dict(p.keys).keys() for p in partitions]
    if len({tuple(n) for n in names}) > 1:
        raise InputPathError(f"{where}: the files sit under different key=value folders; one layout for all")
    return Dataset(root=where, format=formats.pop() or "", partitions=partitions, folder=str(root))


def _fixed_prefix(pattern: str) -> str:
    """The folder a glob starts from: its path up to the first part with a wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(c in part for c in GLOB_CHARS):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else "."


def _hive_keys(root: Path, path: Path) -> tuple[tuple[str, str], ...]:
    """``key=value`` folders between the root and the file, as (column, value) pairs."""
    try:
        folders = path.resolve().relative_to(root).parts[:-1]
    except ValueError:
        return ()
    return tuple((unquote(k), unquote(v)) for k, _, v in (f.partition("=") for f in folders if "=" in f))


def _footer_rows(path: Path) -> int | None:
    if _format(path) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError) as exc:
        raise InputPathError(f"{path}: not a readable Parquet file ({exc})") from exc


def read_partition(partition: Partition, encoding: str | None = None) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """One file read as a single file is (typed, blank rows skipped), with its hive key columns
    (text; the spec's types are applied by validation) and the reader's notes."""
    loaded = load(partition.path, encoding)
    frame = loaded.frame
    if partition.keys:
        frame = frame.with_columns(
            pl.lit(value, dtype=pl.String).alias(key) for key, value in partition.keys if key not in frame.columns
        )
    return frame, tuple(f"{partition.path.name}: {note}" for note in loaded.notes)


@dataclass(frozen=True)
class _WithValidation:
    """An encoder whose training side is both sides (``WorkerTable.with_validation``)."""

    encode: Callable[[Any, str], tuple[np.ndarray, np.ndarray]]

    def __call__(self, frame: Any, side: str) -> tuple[np.ndarray, np.ndarray]:
        if side != "train":
            return self.encode(frame, side)
        (X, y), (Xv, yv) = self.encode(frame, "train"), self.encode(frame, "valid")
        return np.concatenate([X, Xv]), np.concatenate([y, yv])


@dataclass(frozen=True)
class WorkerTable:
    """A split table the Dask workers read where they need it, never held whole: its partitions
    (each a file, its role and the digest of the rows the scan checked), how many rows each side
    holds there, ``read``, which reads a partition again and splits it as the scan did
    (``read(partition, role, digest) -> frame``), and ``encode``, which turns a frame's rows of one
    side (``train``, ``valid`` or ``holdout``) into the model matrix and labels (``encode(frame, side)
    -> (X, y)``, float32)."""

    sources: tuple[tuple[Partition, str, int], ...]  # (file, role, digest), one per partition
    rows: dict[str, tuple[int, ...]]  # side ("train", "valid", "holdout") -> rows per partition
    features: int
    read: Callable[[Partition, str, int], Any]
    encode: Callable[[Any, str], tuple[np.ndarray, np.ndarray]]

    def total(self, side: str) -> int:
        return sum(self.rows.get(side, ()))

    def holding(self, side: str) -> list[int]:
        """The partitions with rows on ``side``, by index."""
        return [i for i, rows in enumerate(self.rows.get(side, ())) if rows]

    def with_validation(self) -> WorkerTable:
        """The same table whose training side holds its validation rows too (a refit on both)."""
        rows = {**self.rows, "train": tuple(t + v for t, v in zip(self.rows["train"], self.rows["valid"], strict=True))}
        return dataclasses.replace(self, rows=rows, encode=_WithValidation(self.encode))

    def placed(self, workers: list[str]) -> dict[str, list[int]]:
        """The partitions with training or validation rows, by index, shared among ``workers``
        so that each reads about as many rows (the largest first, each to the least loaded; the
        same workers give the same shares). Workers with no share are left out."""
        used = [i for i, rows in enumerate(zip(self.rows["train"], self.rows["valid"], strict=True)) if any(rows)]
        size = {i: self.rows["train"][i] + self.rows["valid"][i] for i in used}
        load = dict.fromkeys(sorted(workers), 0)
        out: dict[str, list[int]] = {}
        for i in sorted(used, key=lambda i: (-size[i], i)):
            worker = min(load, key=lambda w: (load[w], w))
            load[worker] += size[i]
            out.setdefault(worker, []).append(i)
        return {w: sorted(parts) for w, parts in sorted(out.items())}
