"""The code's identity: what "the same code" means, for the stage cache and the registry alike.

Two runs ran the same code when the sources of Lepton's packages are the same bytes, the
optional extras that change the search are the same (torch installed or not: it adds the MLP
family) and the libraries whose arithmetic a result depends on are the same versions. The
sources are read as installed, so a checkout with uncommitted edits, a checkout outside git and
a wheel in site-packages all have an identity, and the same files give the same one in every
layout (a path is named by its package, ``lepton.tasks/train.py``). The stage cache keys its
entries with it (``lepton.core.cache``) and the registry's run key holds it
(``lepton.tasks.promotion.run_key``), so a code change both recomputes the stages and registers
the model they give. It is read once per process: the code a process runs is the code it
imported.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# The import packages whose sources are Lepton's code (each installs from its own folder).
PACKAGES = ("lepton", "lepton.domains", "lepton.tasks", "lepton.flows")
# The distributions a result depends on: the learners, the numerics, the data frames, the search,
# and the optional MLP family (its absence is part of the identity: the search space differs).
LIBRARIES = ("xgboost", "scikit-learn", "numpy", "scipy", "polars", "pandas", "pyarrow", "optuna", "torch")
ABSENT = "not installed"


@dataclass(frozen=True)
class CodeIdentity:
    """The sources' digest and the versions of the libraries that change results."""

    sources: str
    libraries: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        """A short stable hash of the whole identity (the tag ``lepton.code``)."""
        text = json.dumps([self.sources, self.libraries], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def describe(self) -> str:
        """One line for a run's record: the key, then each library's version."""
        return f"{self.key} ({', '.join(f'{name} {version}' for name, version in self.libraries)})"


def _folders() -> dict[str, Path]:
    return {name: Path(importlib.import_module(name).__path__[0]).resolve() for name in PACKAGES}


def source_files() -> list[tuple[str, Path]]:
    """Every ``.py`` file of Lepton's packages, named by package and relative path, sorted. In a
    wheel the subpackages sit inside ``lepton/``; each file is counted once, under its own package."""
    folders = _folders()
    inner = [folder for name, folder in folders.items() if name != "lepton"]
    files = []
    for name, folder in folders.items():
        for path in folder.rglob("*.py"):
            if name == "lepton" and any(path.is_relative_to(other) for other in inner):
                continue
            files.append((f"{name}/{path.relative_to(folder).as_posix()}", path))
    return sorted(files)


def sources_digest() -> str:
    digest = hashlib.sha256()
    for name, path in source_files():
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ABSENT


@functools.cache
def code_identity() -> CodeIdentity:
    """This process's code identity (computed on first use, then kept)."""
    return CodeIdentity(sources_digest(), tuple((name, _version(name)) for name in LIBRARIES))
