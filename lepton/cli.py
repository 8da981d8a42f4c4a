"""The ``lepton`` command: a thin Typer layer over the flows."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from domains import DOMAINS
from lepton.settings import DEFAULT_TRIALS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Lepton: tabular data to a monitored model.")
err = Console(stderr=True)


def prepare_environment() -> Path:
    """Embedded defaults: Prefect's home under LEPTON_HOME, telemetry off. Before Prefect loads."""
    from lepton.settings import load_settings, quiet_telemetry

    quiet_telemetry()
    settings = load_settings()
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return settings.home


@app.callback()
def _root() -> None:
    """Lepton: tabular data to a monitored, served, continuously retrained model."""


def start_prefect_api_early() -> threading.Thread:
    """Without a Prefect server configured, Prefect starts a temporary local API on first use,
    which takes seconds. Start it now, alongside the heavy imports, rather than after them."""

    def start() -> None:
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

        if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
            return
        from prefect.server.api.server import SubprocessASGIServer

        with contextlib.suppress(Exception):  # the flow's own start reports any real failure
            SubprocessASGIServer().start()

    thread = threading.Thread(target=start, name="prefect-api-start", daemon=True)
    thread.start()
    return thread


class _HideUserErrorTracebacks(logging.Filter):
    """Bad input is reported once, as a clear message; Prefect's console need not print its
    traceback too. The records still reach the Prefect API, so the UI keeps the detail."""

    def filter(self, record: logging.LogRecord) -> bool:
        from lepton.errors import LeptonError

        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, LeptonError)


def _quiet_console_for_user_errors() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(_HideUserErrorTracebacks())


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _summary_tables(results: list) -> tuple[Table, Table]:
    summary = Table(title="Holdout: candidate vs baseline", title_justify="left")
    for column in ("domain", "model", "metric", "candidate", "baseline", "version", "alias"):
        summary.add_column(column, no_wrap=True)
    timing = Table(title="Seconds per stage", title_justify="left")
    timing.add_column("domain", no_wrap=True)
    for stage in results[0].stages:
        timing.add_column(stage, justify="right")
    for r in results:
        metric = r.primary_metric
        alias = "[green]champion[/] moved" if r.promoted else f"[yellow]challenger[/] (champion v{r.champion_version})"
        summary.add_row(
            r.domain,
            f"{r.family}/{r.device}",
            metric,
            f"{r.metrics[metric]:.4f}",
            f"{r.baseline_metrics[metric]:.4f}",
            f"v{r.version}",
            alias,
        )
        timing.add_row(r.domain, *(f"{v['seconds']:.2f}" for v in r.stages.values()))
    return summary, timing


@app.command()
def run(
    domain: Annotated[str | None, typer.Argument(help=f"One of: {', '.join(DOMAINS)}.")] = None,
    all_domains: Annotated[bool, typer.Option("--all", help="Run every built-in domain.")] = False,
    trials: Annotated[int, typer.Option(min=0, max=10_000, help="Optuna trial budget per domain.")] = DEFAULT_TRIALS,
    data: Annotated[Path | None, typer.Option(help="Your CSV/Parquet file in the domain's schema.")] = None,
    holdout: Annotated[Path | None, typer.Option(help="Your test file, for domains split on one.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per domain, one per line.")] = False,
) -> None:
    """Run preprocess -> train -> optimise -> deploy -> monitor for one domain or all."""
    if all_domains == (domain is not None):
        _fail("name one domain or pass --all")
    if domain is not None and domain not in DOMAINS:
        _fail(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    if all_domains and (data or holdout):
        _fail("--data/--holdout apply to one domain, not --all")
    home = prepare_environment()
    api_started = start_prefect_api_early()

    from flows.pipeline import STAGE_LISTENER, pipeline
    from lepton.errors import LeptonError
    from lepton.settings import load_settings

    _quiet_console_for_user_errors()
    api_started.join()
    results = []
    for name in DOMAINS if all_domains else (domain,):
        listener = (
            None
            if as_json
            else (lambda stage, seconds, _n=name: err.print(f"  [cyan]{_n}[/] {stage:<10} done in {seconds:6.2f}s"))
        )
        token = STAGE_LISTENER.set(listener)
        try:
            if not as_json:
                err.print(f"[bold]{name}[/]: preprocess -> train -> optimise -> deploy -> monitor")
            result = pipeline(
                domain=name, trials=trials, data=str(data) if data else None, holdout=str(holdout) if holdout else None
            )
        except LeptonError as exc:
            _fail(f"{name}: {exc}")
        finally:
            STAGE_LISTENER.reset(token)
        results.append(result)
        if as_json:
            print(json.dumps(result.as_json(), separators=(",", ":")), flush=True)
    if not as_json:
        console = Console(width=max(Console().width, 100))
        for table in _summary_tables(results):
            console.print(table)
        for r in results:
            if not r.promoted:
                err.print(f"[yellow]{r.domain}[/]: not promoted: {'; '.join(r.reasons)}")
        err.print(
            f"Compare runs: [bold]mlflow ui --backend-store-uri {load_settings().tracking_uri}[/]  (state under {home})"
        )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
