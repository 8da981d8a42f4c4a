"""Partitioned tables: a table stored as many files, read one file at a time where it lies.

A dataset is a directory of Parquet or CSV files (hive-style ``key=value`` folders become
columns), or a glob (``data/part-*.parquet``). The driver only lists the files and reads their
metadata; each file is read whole by whichever process handles it (a Dask worker), with the
same reader as a single file (``lepton.core.tables.load``), so the same values come out.

A foundation module, not a stage: the scan stage (``lepton.tasks.scan``) reads partitions
through it, the CLI and the API tell a dataset from a file with ``is_dataset``.
"""

from __future__ import annotations

import glob
import os
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


def _block(blocks: dict, side: str, item: int):
    return blocks[side][item]


@dataclass(frozen=True)
class WorkerTable:
    """Encoded rows that stay on the Dask workers: for each partition a future of
    ``{"train": (X, y), "valid": (X, y)}``, and how many rows each side holds there."""

    blocks: tuple[Any, ...]  # distributed futures, one per partition
    rows: dict[str, tuple[int, ...]]  # side -> rows per partition
    features: int
    holdout_rows: int = 0

    def total(self, side: str) -> int:
        return self.holdout_rows if side == "holdout" else sum(self.rows[side])

    def arrays(self, client: Any, side: str) -> tuple[Any, Any]:
        """A side as Dask arrays (X, y) whose row blocks are the partitions where they lie (empty
        ones left out): the graph references the futures, nothing moves to the driver."""
        import dask.array as da

        xs, ys = [], []
        for future, rows in zip(self.blocks, self.rows[side], strict=True):
            if not rows:
                continue
            x = client.submit(_block, future, side, 0, pure=False)
            y = client.submit(_block, future, side, 1, pure=False)
            xs.append(da.from_delayed(x, shape=(rows, self.features), dtype=np.float32))
            ys.append(da.from_delayed(y, shape=(rows,), dtype=np.float32))
        return da.concatenate(xs), da.concatenate(ys)
