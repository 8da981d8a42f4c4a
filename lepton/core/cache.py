"""Content caching of pipeline stages: a re-run with nothing changed reuses what was computed.

Each cached stage is keyed by a hash of what it depends on: the input files' bytes, the spec,
the code (``lepton.core.identity``: the sources, the extras, the libraries' versions), and
the settings that change its result; a stage's key includes the key of the stage before it, so
a change re-runs that stage and every one after it. Entries live under
``$LEPTON_HOME/cache/<domain>/<stage>/<key>/`` in safe formats only (Parquet, ``.npy`` without
pickle, JSON, XGBoost's UBJ), written to a temporary folder and renamed into place once complete
(a crash leaves no entry, never half of one); an entry that cannot be read is a miss.
The newest ``KEEP`` entries per domain and stage are kept.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from lepton.core.identity import code_identity

if TYPE_CHECKING:
    from collections.abc import Iterable

    from lepton.core.partitions import Dataset
    from lepton.core.settings import Settings
    from lepton.domains.spec import DomainSpec

T = TypeVar("T")
KEEP = 5
MANIFEST = "entry.json"
log = logging.getLogger(__name__)


@functools.cache
def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def key(*parts: Any) -> str:
    """A short stable hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class StageKeys:
    """The content keys of the cached stages, each including the one before it."""

    prepared: str  # preprocess and features together: the input files' bytes, the spec, the code
    train: str
    optimise: str
    run: str  # the whole run's result (``lepton.flows.rerun``): the optimise key and the MLflow store


def input_digests(
    spec: DomainSpec, data: str | None = None, holdout: str | None = None, append: str | None = None
) -> list[str] | None:
    """What identifies a run's inputs: a file's bytes (``file_digest``); a table stored as many
    files by each file's name, size and modification stamp (``Dataset.identity``: listed, never
    read, as DVC and make do, so the driver does not read the table to look the cache up). None
    when one cannot be read or identified (the run then says why, or runs without the cache)."""
    from lepton.core.partitions import Dataset, is_dataset, open_dataset
    from lepton.core.tables import input_paths, resolve_input
    from lepton.errors import DataError

    try:
        paths = input_paths(spec, data, holdout, append)
        return dataset_digests([open_dataset(p) if is_dataset(p) else Dataset.of_file(resolve_input(p)) for p in paths])
    except (DataError, OSError):
        return None


def dataset_digests(datasets: Iterable[Dataset | None]) -> list[str] | None:
    """``input_digests`` of inputs already opened (a run's partitioned table and its holdout):
    a single file by its bytes, a table of many files by its listing."""
    try:
        digests = [file_digest(d.root) if d.format == "file" else d.identity for d in datasets if d is not None]
    except OSError:
        return None
    return None if None in digests else digests  # type: ignore[return-value]


def stage_keys(
    spec: DomainSpec, digests: list[str] | None, settings: Settings, device: str, trials: int
) -> StageKeys | None:
    """None when the inputs cannot be read (preprocess then says why, as without a cache). The
    Dask cluster's size is not part of the key: a search on another cluster is not redone."""
    if digests is None:
        return None
    prepared = key("prepared", code_identity().key, spec.spec_hash(), digests)
    train = key("train", prepared, device, settings.search_rows)
    optimise = key("optimise", train, trials, device, settings.search_rows, settings.distributed_rows)
    return StageKeys(prepared, train, optimise, key("run", optimise, settings.tracking_uri))


@dataclasses.dataclass(frozen=True)
class StageCache:
    """The cache of one domain's stages; ``enabled`` False (``lepton run --no-cache``) reads
    nothing and writes nothing."""

    root: Path
    domain: str
    enabled: bool = True

    def _folder(self, stage: str, entry: str) -> Path:
        return self.root / self.domain / stage / entry

    def has(self, stage: str, entry: str) -> bool:
        return self.enabled and (self._folder(stage, entry) / MANIFEST).is_file()

    def load(self, stage: str, entry: str, read: Callable[[Path], T]) -> T | None:
        """The stage's output stored under ``entry``, or None (a miss, or unreadable)."""
        folder = self._folder(stage, entry)
        if not self.enabled or not (folder / MANIFEST).is_file():
            return None
        try:
            out = read(folder)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cache entry %s/%s unreadable (%s): recomputing", stage, entry, exc)
            return None
        os.utime(folder)  # recently used: kept longest
        return out

    def store(self, stage: str, entry: str, value: T, write: Callable[[T, Path], None], replace: bool = False) -> None:
        """Write ``value`` in full to a temporary folder, then rename it into place; an entry
        already there stays (the same inputs give the same output) unless ``replace``."""
        if not self.enabled:
            return
        folder = self._folder(stage, entry)
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{entry}-", dir=folder.parent))
        try:
            write(value, scratch)
            (scratch / MANIFEST).write_text(json.dumps({"stage": stage, "key": entry, "code": code_identity().key}))
            if replace and folder.exists():
                stale = Path(tempfile.mkdtemp(prefix=f".{entry}-stale-", dir=folder.parent))
                folder.rename(stale / "entry")
                shutil.rmtree(stale, ignore_errors=True)
            try:
                scratch.rename(folder)
            except OSError:  # written meanwhile by a concurrent run with the same inputs: theirs stays
                shutil.rmtree(scratch, ignore_errors=True)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        self._trim(folder.parent)

    def _trim(self, stage_folder: Path) -> None:
        entries = [p for p in stage_folder.iterdir() if (p / MANIFEST).is_file()]
        for old in sorted(entries, key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]:
            shutil.rmtree(old, ignore_errors=True)


# ---- safe formats ------------------------------------------------------------------------------


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, separators=(",", ":")))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def save_array(path: Path, array: np.ndarray) -> None:
    np.save(path, np.asarray(array), allow_pickle=False)


def load_array(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)
