"""The data makers, wired for the command line: ``lepton synth`` (a larger table in a built-in
domain's schema, drawn from its real sample) and ``lepton simulate-drift`` (a drifted, labelled
batch). Plain functions, not Prefect flows: writing one file needs no run record. The output
paths are resolved and checked (suffix, directory, an existing file) before anything is written;
each file is written whole (a temporary name, then a rename)."""

from __future__ import annotations

from pathlib import Path

from lepton.core.tables import read_table
from lepton.domains.spec import DomainSpec
from lepton.errors import InputPathError
from lepton.tasks.drift_demo import Shift, write_drifted
from lepton.tasks.synth import write_partitioned, write_synthetic


def output_path(output: Path, force: bool = False) -> Path:
    """``output`` resolved: a .parquet or .csv file in an existing directory, new unless ``force``."""
    out = output.expanduser().resolve()
    if out.suffix.lower() not in {".parquet", ".csv"}:
        raise InputPathError(f"{out}: write .parquet or .csv")
    if not out.parent.is_dir():
        raise InputPathError(f"{out.parent}: no such directory")
    if out.exists() and not force:
        raise InputPathError(f"{out}: exists; pass --force to overwrite it")
    return out


def output_folder(output: Path, force: bool = False) -> Path:
    """``output`` resolved: a new folder (replaced with ``force``) in an existing directory."""
    out = output.expanduser().resolve()
    if not out.parent.is_dir():
        raise InputPathError(f"{out.parent}: no such directory")
    if out.exists() and not force:
        raise InputPathError(f"{out}: exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise InputPathError(f"{out}: not a folder; --files writes a folder of Parquet files")
    return out


def synthesize(
    spec: DomainSpec, rows: int, output: Path, seed: int = 0, force: bool = False, files: int = 1
) -> list[tuple[Path, int]]:
    """``rows`` synthetic rows in ``spec``'s schema at ``output`` (and, for a domain split on a
    given test file, a holdout beside it, ``<stem>_holdout``, its ids and series numbered after
    the table's); each path and its row count.
    ``files`` above 1: ``output`` is a new folder of that many Parquet files (a partitioned table)."""
    if files > 1:
        import shutil

        out = output_folder(output, force)
        targets = [(spec.data.path, out)]
        if spec.data.holdout_path:
            targets.append((spec.data.holdout_path, output_folder(out.with_name(f"{out.name}_holdout"), force)))
        for _, path in targets:
            if path.exists():
                shutil.rmtree(path)
        # The holdout's ids and series are numbered after the table's (i * rows).
        return [
            (
                path,
                write_partitioned(spec, read_table(spec.data.resolve(source)), rows, path, files, seed + i, i * rows),
            )
            for i, (source, path) in enumerate(targets)
        ]
    out = output_path(output, force)
    targets = [(spec.data.path, out)]
    if spec.data.holdout_path:
        targets.append((spec.data.holdout_path, output_path(out.with_name(f"{out.stem}_holdout{out.suffix}"), force)))
    return [
        (path, write_synthetic(spec, read_table(spec.data.resolve(source)), rows, path, seed + i, i * rows))
        for i, (source, path) in enumerate(targets)
    ]


def simulate_drift(
    spec: DomainSpec, rows: int, output: Path, seed: int = 0, force: bool = False
) -> tuple[Path, int, Shift]:
    """A drifted, labelled batch of ``rows`` in ``spec``'s schema at ``output``: the path, the rows
    written and the shift that was applied."""
    out = output_path(output, force)
    written, shift = write_drifted(spec, rows, out, seed)
    return out, written, shift
