"""Batch scoring: ``lepton score DOMAIN INPUT -o OUTPUT`` as a Prefect flow.

The champion (or a given version) scores a CSV/Parquet file in chunks: Parquet is read a chunk of
rows at a time, so memory stays flat however large the file; a series model (rolling features,
smoothed decisions) gets whole groups per chunk. Every chunk's inputs are checked before it is
scored (a missing column or a value of the wrong type names the column and the file's row), and
the output is written under a temporary name and renamed only when every row is scored, so a
failed run leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from prefect import flow

from lepton.core import tracking
from lepton.core.progress import emit
from lepton.core.scoring import Scorer
from lepton.core.settings import load_settings
from lepton.core.tables import resolve_input
from lepton.domains.spec import DomainSpec, Role
from lepton.errors import InputPathError, Problem, SchemaError
from lepton.tasks.preprocess import check_inputs

CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class ScoreResult:
    model_name: str
    version: str
    rows: int
    output: str
    chunks: int


def _chunks(path: Path, spec: DomainSpec, chunk_rows: int) -> Iterator[pl.DataFrame]:
    series = spec.reads_series
    if path.suffix.lower() == ".parquet" and not series:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield pl.from_arrow(batch)  # type: ignore[misc]
        return
    from lepton.core.tables import read_table

    frame = read_table(path)
    if not series or spec.group_column is None:
        yield from frame.iter_slices(chunk_rows)
        return
    chunk: list[pl.DataFrame] = []
    size = 0
    for group in frame.partition_by(spec.group_column, maintain_order=True):  # whole groups per chunk
        chunk.append(group)
        size += group.height
        if size >= chunk_rows:
            yield pl.concat(chunk)
            chunk, size = [], 0
    if chunk:
        yield pl.concat(chunk)


def _predictions(scorer: Scorer, inputs: pl.DataFrame) -> dict[str, np.ndarray]:
    out = scorer.predict(inputs)
    return {
        "prediction": out["prediction"].to_numpy(),
        **({"score": out["score"].to_numpy()} if "score" in out else {}),
    }


@flow(name="lepton-score", validate_parameters=False)
def score(
    spec: DomainSpec,
    input_path: str,
    output_path: str,
    version: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
) -> ScoreResult:
    """Score ``input_path`` with the model and write ``output_path`` (CSV or Parquet): the file's
    id, group and time columns, then ``prediction`` and ``score``."""
    source = resolve_input(input_path)
    out = Path(output_path).expanduser().resolve()
    if out.suffix.lower() not in {".parquet", ".csv"}:
        raise InputPathError(f"{out}: write .parquet or .csv")
    if not out.parent.is_dir():
        raise InputPathError(f"{out.parent}: no such directory")
    if out == source:
        raise InputPathError(f"{out}: is the input file; choose another output")
    tracking.configure(load_settings())
    version = version or tracking.alias_version(spec.model_name, tracking.CHAMPION)
    if version is None:
        raise InputPathError(f"{spec.model_name} has no champion yet; run `lepton run {spec.name}` first")
    with tracking.scratch_dir() as tmp:
        scorer = Scorer.from_dir(tracking.download_bundle(spec.model_name, version, Path(tmp)))
    keep = [c.name for c in spec.columns if c.role in (Role.ID, Role.GROUP, Role.TIME)]
    partial = out.with_name(f".{out.name}.partial")
    sink = _Sink(partial, csv=out.suffix.lower() == ".csv")
    rows = chunks = 0
    try:
        for chunk in _chunks(source, spec, chunk_rows):
            inputs = check_inputs(chunk, spec, rows, str(source))
            scored = chunk.select([c for c in keep if c in chunk.columns]).with_columns(
                pl.Series(name, values) for name, values in _predictions(scorer, inputs).items()
            )
            sink.write(scored)
            rows += chunk.height
            chunks += 1
            if progress is not None:
                progress(chunk.height)
            emit("step", "score", f"chunk {chunks}: {rows:,} rows scored", step=chunks)
        sink.close()
        if chunks == 0:
            raise SchemaError([Problem("empty", "(file)", "no data rows")], str(source))
        partial.replace(out)
    except BaseException:
        sink.close()
        partial.unlink(missing_ok=True)
        raise
    return ScoreResult(spec.model_name, version, rows, str(out), chunks)


class _Sink:
    """Chunks appended to one file: Parquet through one pyarrow writer, CSV as text."""

    def __init__(self, path: Path, csv: bool) -> None:
        self.path, self.csv = path, csv
        self.writer = None
        self.started = False

    def write(self, frame: pl.DataFrame) -> None:
        if self.csv:
            with self.path.open("ab" if self.started else "wb") as handle:
                frame.write_csv(handle, include_header=not self.started)
        else:
            import pyarrow.parquet as pq

            table = frame.to_arrow()
            self.writer = self.writer or pq.ParquetWriter(self.path, table.schema, compression="zstd")
            self.writer.write_table(table)
        self.started = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
