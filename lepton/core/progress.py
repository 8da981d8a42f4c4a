"""Progress and decisions, said once and heard twice: by the terminal and by Prefect.

Stages, trials, scoring chunks and decisions call ``emit``. The event goes to the listener the
caller set with ``listening`` (the CLI draws it: a live line on a terminal, periodic plain lines
otherwise; ``lepton.app.terminal``) and, inside a Prefect flow or task run, to that run's logger, so
the same words are in the UI's Logs tab and in a worker's terminal. Flows and tasks stay free
of display code; a listener never changes what a run computes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """One thing a run did or decided.

    ``kind``: ``start`` (a stage began), ``done`` (it ended; ``seconds``), ``step`` (a unit of
    a stage: a trial, a chunk; ``done`` of ``total``), ``decision`` (what was chosen and why),
    ``note`` (anything else worth a line). ``best`` is the best score so far (trials), named by
    ``metric``; ``eta`` the seconds left, from the pace so far."""

    kind: str
    stage: str
    message: str
    domain: str | None = None
    step: int | None = None
    total: int | None = None
    seconds: float | None = None
    best: float | None = None
    metric: str | None = None
    eta: float | None = None
    level: int = logging.INFO

    def line(self) -> str:
        """The event as one plain line (Prefect's log, a non-terminal's output)."""
        return f"{self.stage}: {self.message}"


Listener = Callable[[Event], None]
_LISTENER: ContextVar[Listener | None] = ContextVar("lepton_progress_listener", default=None)
_DOMAIN: ContextVar[str | None] = ContextVar("lepton_progress_domain", default=None)


@contextlib.contextmanager
def listening(listener: Listener | None, domain: str | None = None) -> Iterator[None]:
    """Send this context's events to ``listener`` (None: to Prefect's log only), labelled ``domain``."""
    token, named = _LISTENER.set(listener), _DOMAIN.set(domain)
    try:
        yield
    finally:
        _LISTENER.reset(token)
        _DOMAIN.reset(named)


def _run_logger() -> logging.Logger | logging.LoggerAdapter | None:
    try:
        from prefect.exceptions import MissingContextError
        from prefect.logging import get_run_logger
    except ImportError:
        return None
    try:
        return get_run_logger()
    except MissingContextError:
        return None


def emit(kind: str, stage: str, message: str, log: bool = True, **fields: object) -> Event:
    """Tell the listener and (with ``log``) the Prefect run, if any, that ``stage`` did ``message``."""
    event = Event(kind, stage, message, domain=fields.pop("domain", None) or _DOMAIN.get(), **fields)  # type: ignore[arg-type]
    listener = _LISTENER.get()
    if listener is not None:
        listener(event)
    logger = _run_logger() if log else None
    if logger is not None:
        logger.log(event.level, event.line())
    return event


class Steps:
    """Counts the units of one stage (``total`` known up front) and emits one ``step`` event per
    unit with the pace so far: elapsed seconds, an ETA, the best score when given (scores are
    maximised, a loss negated, as the optimiser sees them; shown as the metric's own value)."""

    def __init__(self, stage: str, total: int, unit: str, metric: str | None = None, logged: int = 1000) -> None:
        self.stage, self.total, self.unit, self.metric = stage, total, unit, metric
        self.logged = max(1, logged)  # at most this many of the steps go to the Prefect log (all to the listener)
        self.done = 0
        self.best: float | None = None
        self.start = time.perf_counter()

    def advance(self, score: float | None = None, detail: str = "") -> Event:
        self.done += 1
        if score is not None and (self.best is None or score > self.best):
            self.best = score
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.total else None
        best = f", best {self.metric} {abs(self.best):.4f}" if self.best is not None and self.metric else ""
        message = f"{self.unit} {self.done} of {self.total}{detail}{best}, {elapsed:.0f}s elapsed"
        if eta is not None and self.done < self.total:
            message += f", about {eta:.0f}s left"
        every = max(1, -(-self.total // self.logged))
        log = self.done in (1, self.total) or self.done % every == 0
        return emit(
            "step", self.stage, message, log, step=self.done, total=self.total, seconds=elapsed,
            best=None if self.best is None else abs(self.best),
            metric=self.metric, eta=eta,
        )  # fmt: skip
