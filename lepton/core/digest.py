"""A registered model's fingerprint: what every Lepton loader checks before it reads a model.

The manifest lists every file of a logged model (``MLmodel``, ``code/``, the bundle, the
examples, the environment files) by relative path with its SHA-256; the digest is the SHA-256
of that list. Both are recorded as tags of the model version at registration (``lepton.digest``,
``lepton.files``): in the tracking database, not in the artifact store, so write access to the
artifacts alone cannot make a changed model pass. (``lepton/core/pyfunc_entry.py`` computes the same
digest with its own few lines: it must not import the code it is checking.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lepton.errors import LeptonError

TAG, FILES_TAG = "lepton.digest", "lepton.files"
LOCAL_FILES = frozenset({"registered_model_meta"})  # written by MLflow on the caller's side


class ModelIntegrityError(LeptonError):
    """A registered model's files are not the ones registered: changed, added or removed."""


def manifest(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.relative_to(root).as_posix() not in LOCAL_FILES
    }


def digest(files: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{name}\0{files[name]}\n" for name in sorted(files)).encode()).hexdigest()


def tags(root: Path) -> dict[str, str]:
    """The version tags that fingerprint the model under ``root``."""
    files = manifest(root)
    return {TAG: digest(files), FILES_TAG: json.dumps(files, sort_keys=True, separators=(",", ":"))}


def verify(root: Path, recorded: dict[str, str], what: str) -> None:
    """Raise ``ModelIntegrityError`` unless the files under ``root`` are the ones ``recorded``
    (a version's tags) fingerprints; name the files that differ."""
    expected = recorded.get(TAG)
    if not expected:
        raise ModelIntegrityError(f"{what}: no {TAG} recorded at registration; Lepton does not load it unchecked")
    files = manifest(root)
    if digest(files) == expected:
        return
    try:
        listed = json.loads(recorded.get(FILES_TAG, "{}"))
    except json.JSONDecodeError:
        listed = {}
    changed = sorted(k for k in files.keys() | listed.keys() if files.get(k) != listed.get(k))
    raise ModelIntegrityError(
        f"{what}: its files are not the ones registered (changed, added or removed: {changed or 'see the digest'}); "
        "not loaded. Re-run the pipeline to register a fresh version"
    )


def rows_digest(frame: Any) -> str:
    """A short fingerprint of a polars frame's rows (dataset lineage in MLflow), not of a file."""
    return f"{int(frame.hash_rows(seed=0).sum()) & 0xFFFFFFFFFFFF:012x}"
