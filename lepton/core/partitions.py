"""Partitioned tables: a table stored as many files, read one file at a time where it lies.

A dataset is a directory of Parquet or CSV files (hive-style ``key=value`` folders become
columns), or a glob (``data/part-*.parquet``), on this machine or at any fsspec URL the workers
can read (``s3://bucket/loans/``, ``gs://…``, ``abfs://…``: the filesystem's package installed,
its credentials configured as that package reads them, never in the URL). The driver only lists
the files and reads their metadata; each file is read whole by whichever process handles it (a
Dask worker), with the same reader as a single file (``lepton.core.tables.load``; a remote file
is copied to the worker's disk first), so the same values come out.

A foundation module, not a stage: the scan stage (``lepton.tasks.scan``) reads partitions
through it, the CLI and the API tell a dataset from a file with ``is_dataset``.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import polars as pl

from lepton.core.tables import READERS, _format, load, resolve_input
from lepton.domains.spec import is_url
from lepton.errors import InputPathError

GLOB_CHARS = "*?["
HIDDEN = (".", "_")  # _SUCCESS, _metadata, .crc files written next to the data by Spark and Hadoop


@dataclass(frozen=True)
class Partition:
    """One file of a dataset, and the hive-style column values its folders give its rows."""

    path: Path | str  # a local file, or an fsspec URL (``s3://bucket/key``)
    keys: tuple[tuple[str, str], ...] = ()
    rows: int | None = None  # from the Parquet footer; None for CSV (known once read)
    # this version of the file, known without reading it: its size and modification time (an
    # object store's ETag where it gives one); "" when the filesystem says neither
    stamp: str = ""

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def file_name(self) -> str:
        """The file's own name, without its folders."""
        return self.path.name if isinstance(self.path, Path) else self.path.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dataset:
    """The files of a partitioned table, in a fixed order (sorted paths)."""

    root: str  # as the user gave it, resolved
    format: str  # "parquet" or "csv"
    partitions: tuple[Partition, ...]
    folder: str = ""  # the folder it lies in (a glob's fixed part)

    @classmethod
    def of_file(cls, path: Path) -> Dataset:
        """One (resolved) file as a dataset of one partition, read where the workers are."""
        return cls(root=str(path), format="file", partitions=(Partition(path),))

    @property
    def rows(self) -> int | None:
        """Rows in all files, from the Parquet footers (None for CSV)."""
        counts = [p.rows for p in self.partitions]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    @property
    def identity(self) -> str | None:
        """A digest of every file's name, stamp and folder keys: the same files unchanged give
        the same one (the stage cache's key for the table), any file added, removed, rewritten or
        touched another; None when a file has no stamp."""
        if any(not p.stamp for p in self.partitions):
            return None
        listed = [[p.name, p.stamp, list(p.keys)] for p in self.partitions]
        return hashlib.sha256(json.dumps([self.format, listed]).encode()).hexdigest()

    def describe(self) -> str:
        rows = self.rows
        size = f"{rows:,} rows in " if rows is not None else ""
        return f"{self.root}: {size}{len(self.partitions)} {self.format} file(s)"


def is_dataset(path: str | Path) -> bool:
    """True for a directory, a glob pattern or a remote URL: a table stored as many files (a
    remote single file is a dataset of one file, read on a worker)."""
    text = _local(str(path))
    return is_url(text) or any(c in text for c in GLOB_CHARS) or Path(text).expanduser().is_dir()


def _local(text: str) -> str:
    return text.removeprefix("file://")


def open_dataset(path: str | Path) -> Dataset:
    """List a dataset's files and read their footers (never their rows). Raises InputPathError
    when nothing matches, the files mix formats or a file is unreadable."""
    if is_url(path):
        return _open_remote(str(path))
    text = os.path.expanduser(_local(str(path)))
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
    kind = _one_format(where, files)
    partitions = [
        Partition(resolve_input(p), _hive_keys(root, p), _footer_rows(str(p), lambda p=p: open(p, "rb")), _stamp(p))
        for p in files
    ]
    return Dataset(root=where, format=kind, partitions=_one_layout(where, partitions), folder=str(root))


def _one_format(where: str, files: list[Path] | list[str]) -> str:
    """The dataset's one format; InputPathError when it has no data files or mixes formats."""
    if not files:
        raise InputPathError(f"{where}: no CSV or Parquet files ({', '.join(sorted(READERS))})")
    formats = {_format(Path(f)) for f in files}
    if len(formats) > 1:
        raise InputPathError(f"{where}: mixes CSV and Parquet files; a dataset is one format")
    return formats.pop() or ""


def _one_layout(where: str, partitions: list[Partition]) -> tuple[Partition, ...]:
    """The partitions, when every file sits under the same ``key=value`` folder names."""
    if len({tuple(dict(p.keys)) for p in partitions}) > 1:
        raise InputPathError(f"{where}: the files sit under different key=value folders; one layout for all")
    return tuple(partitions)


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
    return _keys(folders)


def _keys(folders: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((unquote(k), unquote(v)) for k, _, v in (f.partition("=") for f in folders if "=" in f))


def _stamp(path: Path) -> str:
    status = path.stat()
    return f"{status.st_size}:{status.st_mtime_ns}"


def _footer_rows(name: str, opened: Callable[[], Any]) -> int | None:
    """A Parquet file's rows from its footer (None for CSV); ``opened`` opens it for reading,
    on this disk or through its filesystem."""
    if _format(Path(name)) != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        with opened() as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)
    except Exception as exc:  # a corrupt footer (ValueError, OSError) or a remote filesystem's own errors
        raise InputPathError(f"{name}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc


# ---- datasets at an fsspec URL ------------------------------------------------------------------
def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path inside it; a typed error when the URL
    carries credentials (they would reach logs and MLflow) or its filesystem is not installed."""
    from urllib.parse import urlsplit

    import fsspec

    parts = urlsplit(url)
    if "@" in parts.netloc:  # user:password@ or a key alone
        raise InputPathError(
            f"{parts.scheme}://…: the URL carries credentials, which would be written to logs and MLflow; "
            "configure them for the filesystem instead (for S3: AWS_PROFILE or the AWS_* variables)"
        )
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        raise InputPathError(f"{url}: reading it needs a package that is not installed ({exc})") from exc
    except ValueError as exc:
        raise InputPathError(f"{url}: not a URL fsspec can read ({exc})") from exc


def _open_remote(url: str) -> Dataset:
    """``open_dataset`` for a URL: a folder (every file below it), a glob or one file."""
    fs, inside = _filesystem(url)
    scheme = url.partition("://")[0]
    try:
        if any(c in inside for c in GLOB_CHARS):
            base, found = _fixed_prefix(inside), fs.glob(inside, detail=True)
        else:
            info = fs.info(inside)  # one request: a folder (prefix) or a file
            folder = info["type"] == "directory"
            base = inside.rstrip("/") if folder else inside.rsplit("/", 1)[0]
            found = fs.find(inside, detail=True) if folder else {inside: info}
    except FileNotFoundError as exc:
        raise InputPathError(f"{url}: no such file or folder") from exc
    except Exception as exc:  # the filesystem's own errors (botocore's NoCredentialsError is not an OSError)
        raise InputPathError(f"{url}: cannot be listed ({type(exc).__name__}: {exc})") from exc
    files = sorted(
        f
        for f, info in found.items()
        if info.get("type") == "file" and not f.rsplit("/", 1)[-1].startswith(HIDDEN) and _format(Path(f)) is not None
    )
    kind = _one_format(url, files)
    partitions = [
        Partition(
            f"{scheme}://{f}",
            _keys(f[len(base) :].strip("/").split("/")[:-1]),
            _footer_rows(f"{scheme}://{f}", lambda f=f: fs.open(f, "rb")),
            _remote_stamp(found[f]),
        )
        for f in files
    ]
    return Dataset(root=url, format=kind, partitions=_one_layout(url, partitions), folder=url.rstrip("/"))


def _remote_stamp(info: dict[str, Any]) -> str:
    """Size and the object store's version of a file: S3's ETag, GCS's md5Hash, else its time."""
    version = next(
        (info[k] for k in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "last_modified") if info.get(k)), None
    )
    return f"{info.get('size')}:{version}" if version is not None else ""


def _load_remote(url: str, encoding: str | None) -> Any:
    """A remote file read as a local one is: copied to a temporary file of the same name, read by
    the same reader, the copy removed; errors name the URL, not the copy."""
    import tempfile

    from lepton.errors import DataError

    fs, inside = _filesystem(url)
    with tempfile.TemporaryDirectory(prefix="lepton-part-") as folder:
        local = Path(folder) / inside.rsplit("/", 1)[-1]
        try:
            fs.get_file(inside, str(local))
        except Exception as exc:  # as in _open_remote: whatever the filesystem raises, named with the URL
            raise InputPathError(f"{url}: cannot be read ({type(exc).__name__}: {exc})") from exc
        try:
            return load(local, encoding)
        except DataError as exc:
            exc.args = tuple(a.replace(str(local), url) if isinstance(a, str) else a for a in exc.args)
            raise


def read_partition(partition: Partition, encoding: str | None = None) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """One file read as a single file is (typed, blank rows skipped), with its hive key columns
    (text; the spec's types are applied by validation) and the reader's notes."""
    loaded = (
        load(partition.path, encoding) if isinstance(partition.path, Path) else _load_remote(partition.path, encoding)
    )
    frame = loaded.frame
    if partition.keys:
        frame = frame.with_columns(
            pl.lit(value, dtype=pl.String).alias(key) for key, value in partition.keys if key not in frame.columns
        )
    return frame, tuple(f"{partition.file_name}: {note}" for note in loaded.notes)


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
