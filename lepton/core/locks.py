"""Locks that processes sharing a LEPTON_HOME (or one PostgreSQL server) take in turns.

A file lock under ``LEPTON_HOME/locks`` serves processes on one machine; with a database URL
(PostgreSQL, the production configuration: runs on several machines against one registry) a
session-level advisory lock on that server. Either way the lock goes with its holder: a process
that crashes or is killed never wedges it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

from lepton.errors import PromotionConflictError


@contextlib.contextmanager
def exclusive(home: Path, name: str, database_url: str | None = None) -> Iterator[None]:
    """Hold the lock called ``name`` (blocking) for the body of the ``with``."""
    if database_url:
        with _advisory_lock(database_url, name):
            yield
        return
    locks = home / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _advisory_lock(database_url: str, name: str) -> Iterator[None]:
    import psycopg

    key = int.from_bytes(hashlib.sha256(f"lepton.promotion:{name}".encode()).digest()[:8], "big", signed=True)
    try:
        connection = psycopg.connect(database_url, autocommit=True)
    except psycopg.Error as exc:
        raise PromotionConflictError(f"could not reach the lock database for {name}: {exc}") from exc
    with connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
