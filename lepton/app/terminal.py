"""How ``lepton run`` shows a run's progress events (``lepton.core.progress``) on its stderr.

On a terminal, one live line per domain (rich: spinner, stage, trial k of N with the best score
so far, elapsed and ETA) above which each finished stage is printed once. Elsewhere (CI, cron,
a pipe) plain lines: each stage's start and end, and of a stage's steps the first, the last and
at most one every ``every`` seconds in between, so a log shows life without drowning in it.
Display only: what a run computes never depends on it.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from lepton.core.progress import Event

PLAIN_EVERY = 10.0  # seconds between two plain lines of one stage's steps


def stage_line(name: str, stage: str, message: str) -> str:
    return f"  [cyan]{escape(name)}[/] {stage:<10} {escape(message)}"


class Terminal:
    """A progress listener for one command; use as a context manager around the runs."""

    def __init__(self, console: Console, live: bool | None = None, every: float = PLAIN_EVERY) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.every = every
        self.seen: set[str] = set()  # notes already printed (one engine line for `--all`)
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._tasks: dict[str, int] = {}
        self._bar: Progress | None = None
        if self.live:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )

    def __enter__(self) -> Terminal:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def print(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def __call__(self, event: Event) -> None:
        name = event.domain or "lepton"
        with self._lock:
            if event.kind == "done":
                self.print(stage_line(name, event.stage, event.message))
            elif event.kind == "note":  # decisions are in the summary at the end (and in Prefect's log)
                if event.message not in self.seen:
                    self.seen.add(event.message)
                    self.print(f"  [cyan]{escape(name)}[/] [dim]{event.stage:<10} {escape(event.message)}[/]")
            elif event.kind == "start" and not self.live:
                self.print(stage_line(name, event.stage, event.message))
            elif event.kind == "step" and not self.live and self._due(name, event):
                self.print(stage_line(name, event.stage, event.message))
            self._draw(name, event)

    def _due(self, name: str, event: Event) -> bool:
        key, now = (name, event.stage), time.monotonic()
        last = self._last.get(key)
        if last is None or event.step == event.total or now - last >= self.every:
            self._last[key] = now
            return True
        return False

    def _draw(self, name: str, event: Event) -> None:
        if self._bar is None:
            return
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = self._bar.add_task(name, total=None, detail="")
        label = f"[cyan]{escape(name)}[/] {event.stage}"
        if event.kind == "start":
            self._bar.update(task, description=label, total=None, completed=0, detail="")
        elif event.kind == "step":
            best = f"best {event.metric} {event.best:.4f}" if event.best is not None and event.metric else ""
            eta = f"~{event.eta:.0f}s left" if event.eta else ""
            self._bar.update(
                task, description=f"{label} {event.step}/{event.total}" if event.total else label,
                total=event.total, completed=event.step or 0, detail=escape("  ".join(p for p in (best, eta) if p)),
            )  # fmt: skip
