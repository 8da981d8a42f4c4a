"""The prediction log: every served prediction, kept under ``LEPTON_HOME/predictions/DOMAIN/``.

Each record holds the request id, the row's place in its request, the time (UTC), the model
version, the prediction and its score, and the row's model inputs — which never include a PII
column (the spec keeps those out of the model, and the service refuses unknown fields).

Request threads only put records on a queue; one writer thread turns them into Parquet parts
(at most every ``flush_seconds`` or ``flush_rows``), each written under a temporary name and
renamed, so concurrent requests never share a file handle and a reader never sees half a part.
Several service processes may share one directory: part names are unique.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

log = logging.getLogger("lepton.core.predlog")
_STOP = object()


class PredictionLog:
    def __init__(self, directory: Path, flush_rows: int = 5_000, flush_seconds: float = 1.0) -> None:
        self.directory = directory
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.written = 0  # rows on disk

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._drain, name="lepton-predlog", daemon=True)
        self._thread.start()

    def append(self, request: str | list[str], version: str, rows: list[dict], predictions: list[dict]) -> None:
        """Queue one batch request's rows (``request``: its id; rows numbered from 0), or single-row
        requests scored together (``request``: one id per row). The request thread only queues:
        the writer thread turns the rows into columns."""
        self._queue.put((request, version, datetime.now(UTC).replace(tzinfo=None), rows, predictions))

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
        self._thread = None

    def _drain(self) -> None:
        pending: list[tuple] = []
        size = 0
        deadline = time.monotonic() + self.flush_seconds
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                self._write(pending)
                return
            if item is not None:
                pending.append(item)
                size += len(item[3])
            if size >= self.flush_rows or time.monotonic() >= deadline:
                self._write(pending)
                pending, size = [], 0
                deadline = time.monotonic() + self.flush_seconds

    def _write(self, items: list[tuple]) -> None:
        if not items:
            return
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        partial = self.directory / f".{name}.partial"
        try:
            frame = _frame(items)
            frame.write_parquet(partial)
            partial.replace(self.directory / name)
            self.written += frame.height
        except Exception:  # a full disk must not take the service down; the loss is logged
            log.exception("could not write %d request(s) to %s", len(items), self.directory)
            partial.unlink(missing_ok=True)


def _frame(items: list[tuple]) -> pl.DataFrame:
    """One frame of every queued request's rows (built column by column: a frame per request
    costs more than the requests when they are single rows)."""
    columns: dict[str, list[Any]] = {
        k: [] for k in ("request_id", "row", "time", "model_version", "prediction", "score")
    }
    inputs: dict[str, list[Any]] = {}
    for request, version, now, rows, predictions in items:
        n, single = len(rows), isinstance(request, list)
        start = len(columns["row"])
        columns["request_id"] += request if single else [request] * n
        columns["row"] += [0] * n if single else list(range(n))
        columns["time"] += [now] * n
        columns["model_version"] += [version] * n
        columns["prediction"] += [str(p["prediction"]) for p in predictions]
        columns["score"] += [p["score"] for p in predictions]
        for key in dict.fromkeys(k for row in rows for k in row):
            inputs.setdefault(key, [None] * start).extend(row.get(key) for row in rows)
        for values in inputs.values():  # a key this request lacked
            values.extend([None] * (start + n - len(values)))
    return pl.DataFrame({**columns, **{f"input.{k}": v for k, v in inputs.items()}}, strict=False)


def read_log(directory: Path, since: datetime | None = None) -> pl.DataFrame:
    """Every logged prediction in ``directory`` (optionally from ``since``, UTC), oldest first."""
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        return pl.DataFrame()
    frame = pl.concat([pl.read_parquet(p) for p in parts], how="diagonal_relaxed")
    if since is not None:
        frame = frame.filter(pl.col("time") >= since.replace(tzinfo=None))
    return frame.sort("time", maintain_order=True)


def served_inputs(directory: Path, since: datetime | None = None) -> pl.DataFrame:
    """The logged requests' model inputs under their own column names (what the monitor's drift
    check reads), with ``request_id`` and ``row`` (to join labels to), ``time`` and ``model_version``."""
    frame = read_log(directory, since)
    if frame.is_empty():
        return frame
    inputs = {c: c.removeprefix("input.") for c in frame.columns if c.startswith("input.")}
    return frame.select("request_id", "row", "time", "model_version", *inputs).rename(inputs)


def decisions_per_day(directory: Path, days: float = 7.0) -> float | None:
    """The logged decisions a day over the last ``days`` (over the time since the first of them
    when the log is younger, at least one day); None when nothing was logged in that window."""
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        return None
    now = datetime.now(UTC).replace(tzinfo=None)
    since = now - timedelta(days=days)
    times = pl.concat([pl.scan_parquet(p).select("time") for p in parts]).filter(pl.col("time") >= since)
    seen = times.select(pl.len().alias("rows"), pl.col("time").min().alias("first")).collect().row(0, named=True)
    if not seen["rows"]:
        return None
    span = max((now - seen["first"]).total_seconds() / 86_400, 1.0)
    return seen["rows"] / span
