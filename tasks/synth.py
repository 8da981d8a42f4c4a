"""Synthetic scale-up of a domain's real sample, for benchmarks and load tests.

Features are drawn from the real table, so their joint distribution is the real one, and
perturbed: each float feature gets Gaussian noise of ``jitter`` x its standard deviation, ids
are renumbered. The target is not copied: a small XGBoost model fitted on the real table gives
P(target | features) for each synthetic row and the label is drawn from it (regression: the
model's value plus a real residual). Copied labels would let a model memorise jittered
duplicates of training rows and score a perfect, meaningless holdout; drawn labels keep the
real dependence and the real noise. For domains whose rows form time series (a group and a
time column, e.g. TEP runs), whole series are drawn and renumbered with their labels, so rolling
features stay meaningful. Written in chunks, so ten million rows need little memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from lepton.domains.spec import DomainSpec, Dtype, Role

CHUNK_ROWS = 500_000


def _jitter(chunk: pl.DataFrame, spec: DomainSpec, scale: dict[str, float], rng: np.random.Generator) -> pl.DataFrame:
    noisy = []
    for column in spec.feature_columns:
        if column.dtype is Dtype.FLOAT and scale.get(column.name, 0.0) > 0:
            noise = rng.normal(0.0, scale[column.name], chunk.height)
            noisy.append((pl.col(column.name) + pl.Series(noise)).alias(column.name))
    return chunk.with_columns(noisy) if noisy else chunk


def synthesize(
    spec: DomainSpec, source: pl.DataFrame, rows: int, seed: int = 0, jitter: float = 0.05, first: int = 0
) -> Iterator[pl.DataFrame]:
    """``rows`` synthetic rows in chunks, drawn from ``source`` (the domain's real table). Ids and
    series groups are numbered from ``first``: a holdout written beside a table starts after the
    table's, so no series (nor id) is in both."""
    rng = np.random.default_rng(seed)
    scale = {
        c.name: float(source[c.name].cast(pl.Float64).std() or 0.0) * jitter
        for c in spec.feature_columns
        if c.dtype is Dtype.FLOAT
    }
    ids = [c.name for c in spec.columns if c.role is Role.ID]
    group, time = spec.group_column, spec.time_column
    made = 0
    if group is not None and time is not None:
        series = source.partition_by(group, maintain_order=True)
        next_group = first
        while made < rows:
            chunk_parts = []
            size = 0
            while size < min(CHUNK_ROWS, rows - made):
                part = series[int(rng.integers(len(series)))]
                part = part.head(rows - made - size).with_columns(pl.lit(next_group, pl.Int64).alias(group))
                chunk_parts.append(part)
                size += part.height
                next_group += 1
            chunk = _jitter(pl.concat(chunk_parts), spec, scale, rng)
            yield _renumber(chunk, ids, first + made)
            made += chunk.height
        return
    draw = _label_model(spec, source)
    while made < rows:
        take = min(CHUNK_ROWS, rows - made)
        chunk = _jitter(source[rng.integers(0, source.height, take)], spec, scale, rng)
        yield _renumber(chunk.with_columns(draw(chunk, rng)), ids, first + made)
        made += take


def _label_model(spec: DomainSpec, source: pl.DataFrame) -> Callable[[pl.DataFrame, np.random.Generator], pl.Series]:
    """Fit P(target | features) on the real table; return a function drawing a chunk's labels."""
    import xgboost as xgb

    from lepton.tasks.preprocess import TabularEncoder

    by_dtype = {d: [c.name for c in spec.feature_columns if c.dtype is d] for d in Dtype}
    numeric = by_dtype[Dtype.FLOAT] + by_dtype[Dtype.INT] + by_dtype[Dtype.BOOL]
    encoder = TabularEncoder(numeric, by_dtype[Dtype.CATEGORY], datetime=tuple(by_dtype[Dtype.DATETIME]))
    labelled = source.filter(pl.col(spec.target).is_not_null())
    X = encoder.fit(labelled).transform(labelled)
    target = labelled[spec.target]
    params = {"max_depth": 4, "learning_rate": 0.1, "subsample": 0.8, "verbosity": 0, "nthread": 2, "seed": 0}
    if spec.task == "regression":
        y = target.cast(pl.Float64).to_numpy()
        booster = xgb.train({**params, "objective": "reg:squarederror"}, xgb.DMatrix(X, y), 150)
        residuals = y - booster.inplace_predict(X)

        def draw_value(chunk: pl.DataFrame, rng: np.random.Generator) -> pl.Series:
            value = booster.inplace_predict(encoder.transform(chunk)) + rng.choice(residuals, chunk.height)
            return pl.Series(spec.target, value).cast(target.dtype, strict=False)

        return draw_value
    classes = target.unique(maintain_order=True).sort()
    index = {v: i for i, v in enumerate(classes.to_list())}
    y = np.array([index[v] for v in target.to_list()])
    objective = {"objective": "multi:softprob", "num_class": len(classes)}
    booster = xgb.train({**params, **objective}, xgb.DMatrix(X, y), 150)

    def draw_class(chunk: pl.DataFrame, rng: np.random.Generator) -> pl.Series:
        proba = booster.inplace_predict(encoder.transform(chunk)).reshape(chunk.height, len(classes))
        picked = (proba.cumsum(axis=1) < rng.random((chunk.height, 1))).sum(axis=1)
        return classes.gather(np.minimum(picked, len(classes) - 1)).alias(spec.target)

    return draw_class


def _renumber(chunk: pl.DataFrame, ids: list[str], start: int) -> pl.DataFrame:
    return chunk.with_columns(pl.int_range(start, start + chunk.height, dtype=pl.Int64).alias(i) for i in ids)


def write_synthetic(spec: DomainSpec, source: pl.DataFrame, rows: int, out: Path, seed: int = 0, first: int = 0) -> int:
    """Write ``rows`` synthetic rows to ``out`` (.parquet or .csv) atomically, ids and groups
    numbered from ``first``; return the row count."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        written = _write(spec, source, rows, partial, out.suffix.lower() == ".csv", seed, first)
    except BaseException:
        partial.unlink(missing_ok=True)  # nothing half-written is left behind
        raise
    partial.replace(out)
    return written


def write_partitioned(
    spec: DomainSpec, source: pl.DataFrame, rows: int, folder: Path, files: int, seed: int = 0, first: int = 0
) -> int:
    """Write ``rows`` synthetic rows as ``files`` Parquet files ``part-NNNNN.parquet`` in the new
    folder ``folder`` (a partitioned table, ``lepton.core.partitions``), atomically: the folder is
    renamed into place once every file is written. Whole groups stay in one file; ids and groups
    are numbered from ``first``."""
    import shutil

    import pyarrow.parquet as pq

    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    per_file = -(-rows // files)
    whole = spec.group_column is not None and spec.time_column is not None
    written, index, in_file, writer = 0, 0, 0, None
    try:
        for made in synthesize(spec, source, rows, seed, first=first):
            chunk = made
            while chunk.height:
                take = chunk.height if whole else min(chunk.height, per_file - in_file)
                table = chunk.head(take).to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(partial / f"part-{index:05d}.parquet", table.schema, compression="zstd")
                writer.write_table(table)
                chunk, written, in_file = chunk.slice(take), written + take, in_file + take
                if in_file >= per_file:
                    writer.close()
                    writer, index, in_file = None, index + 1, 0
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.close()
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left behind
        raise
    partial.replace(folder)
    return written


def _write(spec: DomainSpec, source: pl.DataFrame, rows: int, path: Path, csv: bool, seed: int, first: int) -> int:
    import pyarrow.parquet as pq

    written = 0
    if csv:
        with path.open("wb") as handle:
            for i, chunk in enumerate(synthesize(spec, source, rows, seed, first=first)):
                chunk.write_csv(handle, include_header=i == 0)
                written += chunk.height
        return written
    writer = None
    try:
        for chunk in synthesize(spec, source, rows, seed, first=first):
            table = chunk.to_arrow()
            writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
            written += chunk.height
    finally:
        if writer is not None:
            writer.close()
    return written
