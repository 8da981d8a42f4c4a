"""The ``lepton`` command: Typer commands over the Python API (``lepton.app.api``), the flows and
the local servers (``lepton.app.stack``)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lepton.app.api import prepare_environment
from lepton.core.settings import DEFAULT_TRIALS, load_settings, overrides
from lepton.domains import DOMAINS

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Lepton: tabular data to a monitored model.")
err = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Lepton: tabular data to a monitored, served, continuously retrained model."""
    from lepton.core.settings import quiet_consoles

    quiet_consoles()  # every command, before its first import of Prefect or MLflow


def start_prefect_api_early() -> threading.Thread:
    """Without a Prefect server configured, Prefect starts a temporary local API on first use,
    which takes seconds. Start it now, alongside the heavy imports, rather than after them.
    ``prefect`` itself is imported here first: its import-time plugin hooks race with a second
    thread importing its submodules (Python then reports a module-lock deadlock)."""
    import prefect  # noqa: F401

    def start() -> None:
        from lepton.app.stack import start_temporary_prefect

        with contextlib.suppress(Exception):  # the flow's own start reports any real failure
            start_temporary_prefect(load_settings().home)

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


# With --json a failing command also prints one JSON object on stdout: {"error": {...}}.
JSON_ERRORS: dict[str, Any] = {"on": False}


def _fail(message: str, code: int = 2, error: BaseException | None = None, domain: str | None = None) -> None:
    if JSON_ERRORS["on"]:
        kind = type(error).__name__ if error is not None else "UsageError"
        body = {"error": {"type": kind, "message": message, "exit_code": code}}
        print(json.dumps({**({"domain": domain} if domain else {}), **body}, separators=(",", ":")), flush=True)
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _summary_tables(results: list) -> tuple[Table, Table]:
    summary = Table(title="Holdout: candidate vs baseline", title_justify="left")
    for column in ("domain", "model", "metric", "candidate", "baseline", "version", "alias"):
        summary.add_column(column, no_wrap=True)
    timing = Table(title="Seconds per stage, and the run's cost", title_justify="left")
    timing.add_column("domain", no_wrap=True)
    stages = next((list(r.stages) for r in results if not r.up_to_date), list(results[0].stages))
    checked = any(r.up_to_date for r in results)  # a column for an up-to-date run's lookup
    for stage in stages:
        timing.add_column(stage, justify="right", no_wrap=True, min_width=5)
    for column in ("checked", "CPU s", "Wh", "USD") if checked else ("CPU s", "Wh", "USD"):
        timing.add_column(column, justify="right", no_wrap=True, min_width=8)
    for r in results:
        metric = r.primary_metric
        champion = f"champion v{r.champion_version}" if r.champion_version else "no champion"
        refound = r.promoted and bool(r.reasons) and r.reasons[0].startswith(f"v{r.version} is already the champion")
        alias = "[green]champion[/] moved" if r.promoted else f"[yellow]challenger[/] ({champion})"
        alias = "[green]champion[/], re-found" if refound else alias  # the same inputs registered it before
        alias = f"{alias.removesuffix(' moved').removesuffix(', re-found')}, up to date" if r.up_to_date else alias
        summary.add_row(
            r.domain,
            f"{r.family}/{r.device}",
            metric,
            f"{r.metrics[metric]:.4f}",
            f"{r.baseline_metrics[metric]:.4f}",
            f"v{r.version}",
            alias,
        )
        total = r.cost
        timing.add_row(
            r.domain,
            *(("-",) * len(stages) if r.up_to_date else (f"{r.stages[s].seconds:.2f}" for s in stages)),
            *([f"{r.stages['preprocess'].seconds:.2f}" if r.up_to_date else ""] if checked else []),
            f"{total.get('cpu_seconds', 0):.1f}",
            f"{total.get('energy_wh', 0):.3f}",
            f"{total.get('cost_usd', 0):.6f}",
        )
    return summary, timing


# Flags shared by `run` and `init`: what the user says about their table.
Target = Annotated[str | None, typer.Option(help="The column to predict (with --data: any table).")]
Task = Annotated[str | None, typer.Option(help="binary | multiclass | regression (default: inferred).")]
Template = Annotated[str | None, typer.Option(help="Metrics, gates and cost model of: " + ", ".join(DOMAINS) + ".")]
Name = Annotated[str | None, typer.Option(help="Model name: registered as lepton-NAME (default: the file name).")]
TimeCol = Annotated[str | None, typer.Option("--time-col", help="Column ordering rows in time: hold out the latest.")]
GroupCol = Annotated[str | None, typer.Option("--group-col", help="Column whose groups never straddle the split.")]
IdCols = Annotated[str | None, typer.Option("--id-cols", help="Comma-separated identifier columns (not features).")]
PiiCols = Annotated[str | None, typer.Option("--pii-cols", help="Comma-separated personal-data columns (dropped).")]
DropCols = Annotated[str | None, typer.Option("--drop-cols", help="Comma-separated columns to ignore.")]
Positive = Annotated[str | None, typer.Option("--positive-class", help="The class a binary model scores.")]
Leakage = Annotated[str | None, typer.Option("--allow-leakage", help="Comma-separated columns the sentinel allows.")]
Encoding = Annotated[str | None, typer.Option(help="CSV text encoding when not UTF-8, e.g. latin-1.")]


def _columns(value: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in value.split(",") if c.strip()) if value else ()


HINTS = ("task", "template", "name", "time_col", "group_col", "id_cols", "pii_cols", "drop_cols", "positive_class",
         "encoding")  # fmt: skip


def _hints(params: dict[str, Any]) -> dict[str, Any]:
    """The table flags that were given, lists split on commas (``params``: the command's own)."""
    lists = {"id_cols", "pii_cols", "drop_cols"}
    return {k: (_columns(params[k]) if k in lists else params[k]) for k in HINTS if params.get(k) is not None}


def _print_notes(name: str, notes: tuple[str, ...] | list[str]) -> None:
    for note in notes:
        style = "yellow" if note.startswith(("warning", "review")) else "dim"
        err.print(f"  [cyan]{escape(name)}[/] [{style}]{escape(note)}[/]", highlight=False, soft_wrap=True)


def _environment() -> Path:
    """Lepton's home and settings, checked before anything runs (a bad LEPTON_* value exits 2)."""
    from lepton.errors import LeptonError

    try:
        home = prepare_environment()
    except LeptonError as exc:
        _fail(str(exc))
    return home


def _run_one(job: Any, trials: int, as_json: bool, cache: bool = True, view: Any = None):
    """Run one pipeline (a ``lepton.app.api.Job``) with live progress on ``view`` (a
    ``lepton.app.terminal.Terminal``; None with --json); a user error exits with its message."""
    from lepton.core import progress
    from lepton.errors import LeptonError
    from lepton.flows.pipeline import pipeline

    label = job.spec.name
    _print_notes(label, job.notes)
    try:
        if not as_json:
            err.print(f"[bold]{escape(label)}[/]: preprocess -> features -> train -> optimise -> deploy -> monitor")
        with progress.listening(view, domain=label):
            result = pipeline(
                domain=job.spec, trials=trials, data=job.data, holdout=job.holdout, append=job.append, cache=cache
            )
    except LeptonError as exc:
        _fail(f"{label}: {exc}", error=exc, domain=label)
    _print_notes(label, result.notes)
    if as_json:
        print(json.dumps(result.as_json(), separators=(",", ":")), flush=True)
    return result


def _reuse(job: Any, trials: int, as_json: bool, cache: bool):
    """The earlier result when nothing this run depends on changed (``lepton.flows.rerun``), shown
    as a run's would be; None when the pipeline must run."""
    from lepton.flows.rerun import up_to_date

    result = up_to_date(job.spec, job.data, job.holdout, job.append, trials, cache)
    if result is None:
        return None
    label = job.spec.name
    _print_notes(label, [*job.notes, *result.notes])
    if as_json:
        print(json.dumps(result.as_json(), separators=(",", ":")), flush=True)
    else:
        seconds = result.stages["preprocess"].seconds
        err.print(
            f"[bold]{escape(label)}[/]: {escape(result.reasons[0])}; checked in {seconds:.2f}s without running the "
            "pipeline (--no-cache runs it anew)",
            highlight=False,
            soft_wrap=True,
        )
    return result


def _run_together(jobs: list[Any], trials: int, as_json: bool, cache: bool = True, view: Any = None) -> list[Any]:
    """Run several pipelines at once, one thread each, sharing one Dask cluster (the configured
    one, or a LocalCluster started here); each writes only its own experiment and model."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    from lepton.core.engine import dask_engine

    settings = load_settings()
    with dask_engine(settings.dask_address, settings.dask_threads) as engine, overrides(dask_address=engine.address):
        err.print(f"[bold]{len(jobs)} domains at once[/] on {engine.describe()}", highlight=False, soft_wrap=True)
        if view is not None:
            view.seen.add(engine.describe())  # said once here, not once per domain
        # each run connects to this cluster: its thread copies this context, and the override with it
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="lepton-run") as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, _run_one, job, trials, as_json, cache, view) for job in jobs
            ]
            return [future.result() for future in futures]


@app.command()
def run(
    ctx: typer.Context,
    domain: Annotated[str | None, typer.Argument(help=f"A built-in domain: {', '.join(DOMAINS)}.")] = None,
    all_domains: Annotated[bool, typer.Option("--all", help="Run every built-in domain.")] = False,
    # text, not a Path: a URL (s3://bucket/table/) must keep its double slash
    data: Annotated[
        str | None,
        typer.Option(
            help="Your CSV/Parquet file, or a folder, glob or fsspec URL of them (with --target, or DOMAIN's schema)."
        ),
    ] = None,
    target: Target = None,
    spec: Annotated[Path | None, typer.Option(help="A spec file, as `lepton init` writes.")] = None,
    holdout: Annotated[str | None, typer.Option(help="Your test file(s): with --target, the holdout.")] = None,
    append: Annotated[
        Path | None, typer.Option(help="A labelled batch in the same schema, added to the training data.")
    ] = None,
    task: Task = None,
    template: Template = None,
    name: Name = None,
    time_col: TimeCol = None,
    group_col: GroupCol = None,
    id_cols: IdCols = None,
    pii_cols: PiiCols = None,
    drop_cols: DropCols = None,
    positive_class: Positive = None,
    allow_leakage: Leakage = None,
    encoding: Encoding = None,
    trials: Annotated[int, typer.Option(min=0, max=10_000, help="Optuna trial budget per domain.")] = DEFAULT_TRIALS,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per domain, one per line.")] = False,
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help="Train the chosen tree model with xgboost.dask across the Dask cluster at any size "
            "(by default from LEPTON_DISTRIBUTED_ROWS rows, 2,000,000).",
        ),
    ] = False,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Compute every stage afresh and store nothing (by default stages whose input files, "
            "spec and code are unchanged are reused from LEPTON_HOME/cache).",
        ),
    ] = False,
) -> None:
    """Train, gate and register a model: for your table (--data F --target C), a spec file
    (--spec), a built-in domain, or all of them (--all). Prints what it inferred."""
    hints = _hints(ctx.params)
    JSON_ERRORS["on"] = as_json
    # --distributed: this command's runs train with xgboost.dask from the first row
    scope = overrides(distributed_rows=0) if distributed else contextlib.nullcontext()
    try:
        with scope:
            _run_command(domain, all_domains, data, target, spec, holdout, append, allow_leakage, trials, as_json,
                         no_cache, hints)  # fmt: skip
    finally:
        JSON_ERRORS["on"] = False  # one command's --json, not the next one's in the same process


def _run_command(
    domain: str | None,
    all_domains: bool,
    data: str | None,
    target: str | None,
    spec: Path | None,
    holdout: str | None,
    append: Path | None,
    allow_leakage: str | None,
    trials: int,
    as_json: bool,
    no_cache: bool,
    hints: dict[str, Any],
) -> None:
    if all_domains and (domain or data or target or spec or holdout or hints or allow_leakage or append):
        _fail("--all runs the built-in domains on their own data; it takes no other input")
    if domain is not None and domain not in DOMAINS:
        _fail(f"{_unknown_domain(domain)} (or pass --data and --target)")
    if data is not None and not (domain or spec or target):
        _fail("--data needs --target COLUMN (or a DOMAIN whose schema the file follows)")
    if not (all_domains or domain or spec or target):
        _fail("say what to run: --data FILE --target COLUMN, --spec FILE, a domain name, or --all")
    home = _environment()

    from lepton.app.api import preflight, resolve
    from lepton.core.tables import resolve_input
    from lepton.errors import LeptonError

    try:
        if all_domains:
            jobs = [resolve(None, None, None, name, (), {}, home) for name in DOMAINS]
        else:
            jobs = [resolve(data, target, spec, domain, _columns(allow_leakage), hints, home, holdout)]
            if append is not None:
                jobs = [dataclasses.replace(jobs[0], append=str(resolve_input(append)))]
    except LeptonError as exc:
        _fail(str(exc), error=exc)

    done = {job.spec.name: _reuse(job, trials, as_json, not no_cache) for job in jobs}
    pending = [job for job in jobs if done[job.spec.name] is None]
    for job in pending:  # bad input and leaks stop here, before Prefect starts or MLflow records
        try:
            preflight(job)
        except LeptonError as exc:
            _print_notes(job.spec.name, job.notes)
            _fail(f"{job.spec.name}: {exc}", error=exc, domain=job.spec.name)
    if pending:  # Prefect (and for several, the shared Dask cluster) only for what must run
        api_started = start_prefect_api_early()
        _quiet_console_for_user_errors()
        api_started.join()
        run_jobs = _run_together if len(pending) > 1 else lambda js, *rest: [_run_one(js[0], *rest)]
        from lepton.app.terminal import Terminal

        view = None if as_json else Terminal(err)
        with view or contextlib.nullcontext():
            done.update((r.domain, r) for r in run_jobs(pending, trials, as_json, not no_cache, view))
    if not as_json:
        _print_summary([done[job.spec.name] for job in jobs], home)


def _print_summary(results: list[Any], home: Path) -> None:
    console = Console(width=max(Console().width, 120))
    for table in _summary_tables(results):
        console.print(table)
    for r in results:
        err.print(
            f"[cyan]{escape(r.domain)}[/]: {r.family} chosen: {escape(r.choice)}", highlight=False, soft_wrap=True
        )
        if not r.promoted:
            err.print(f"[yellow]{escape(r.domain)}[/]: not promoted: {escape('; '.join(r.reasons))}")
    err.print(
        f"Compare runs: [bold]{escape(_mlflow_ui(load_settings().tracking_uri))}[/]  (state under {escape(str(home))})"
    )


@app.command()
def init(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Argument(help="Your CSV/Parquet file (or --data FILE).")] = None,
    target: Annotated[str | None, typer.Option(help="The column to predict.")] = None,
    data_option: Annotated[
        Path | None, typer.Option("--data", help="Your CSV/Parquet file, as `lepton run --data` takes it.")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the spec (YAML).")] = Path("spec.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite the output file if it exists.")] = False,
    holdout: Annotated[Path | None, typer.Option(help="Your test file: the holdout (a 'given' split).")] = None,
    task: Task = None,
    template: Template = None,
    name: Name = None,
    time_col: TimeCol = None,
    group_col: GroupCol = None,
    id_cols: IdCols = None,
    pii_cols: PiiCols = None,
    drop_cols: DropCols = None,
    positive_class: Positive = None,
    allow_leakage: Leakage = None,
    encoding: Encoding = None,
) -> None:
    """Write a commented domain spec for your table, to review and then `lepton run --spec`."""
    from lepton.app.api import spec_from_file
    from lepton.domains.infer import make_hints, render_spec
    from lepton.errors import InputPathError, LeptonError

    if (data is None) == (data_option is None):
        _fail("give your file once: `lepton init FILE --target COLUMN` or `lepton init --data FILE --target COLUMN`")
    if target is None:
        _fail("--target COLUMN: the column to predict")
    data = data or data_option
    try:
        hints = make_hints(target=target, allow_leakage=_columns(allow_leakage), **_hints(ctx.params))
        out = output.expanduser().resolve()
        if out.is_dir():
            raise InputPathError(f"{out}: is a directory; name the spec file to write")
        if not out.parent.is_dir():
            raise InputPathError(f"{out.parent}: no such directory")
        if out.exists() and not force:
            raise InputPathError(f"{out}: exists; pass --force to overwrite it")
        inferred = spec_from_file(data, hints, holdout)
        text = render_spec(inferred.spec, inferred.notes, out.parent, inferred.why)
    except LeptonError as exc:
        _fail(str(exc))
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)
    _print_notes(inferred.spec.name, inferred.notes)
    err.print(
        f"wrote [bold]{escape(str(out))}[/]; review it, then run: [bold]lepton run --spec {escape(str(output))}[/]"
    )


@app.command()
def synth(
    domain: Annotated[str, typer.Argument(help=f"A built-in domain: {', '.join(DOMAINS)}.")],
    rows: Annotated[int, typer.Option(min=1, max=1_000_000_000, help="How many rows to write.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write (.parquet or .csv).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite the output file if it exists.")] = False,
    files: Annotated[
        int,
        typer.Option(min=1, max=100_000, help="Write a folder of this many Parquet files (a partitioned table)."),
    ] = 1,
) -> None:
    """Write a larger dataset in a domain's schema, drawn from its real sample (rows keep their
    real dependence between features and target; floats are jittered, ids renumbered). For a
    domain split on a given test file, a holdout file is written beside it. With --files, a
    folder of Parquet files that `lepton run DOMAIN --data FOLDER` reads partition by partition."""
    from lepton.domains import get_spec
    from lepton.errors import LeptonError
    from lepton.flows.datasets import synthesize

    if domain not in DOMAINS:
        _fail(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    try:
        written = synthesize(get_spec(domain), rows, output, seed, force, files)
    except LeptonError as exc:
        _fail(str(exc))
    for path, count in written:
        err.print(f"wrote {count:,} rows to [bold]{escape(str(path))}[/]")
    hint = f" --holdout {written[1][0]}" if len(written) > 1 else ""
    err.print(f"train on it: [bold]lepton run {domain} --data {escape(str(written[0][0]))}{escape(hint)}[/]")


@app.command()
def monitor(
    domain: Annotated[str | None, typer.Argument(help=f"A built-in domain: {', '.join(DOMAINS)}.")] = None,
    spec: Annotated[Path | None, typer.Option(help="A spec file, as `lepton init` writes (instead of DOMAIN).")] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="A CSV/Parquet batch in the domain's schema, or a folder, glob or URL of them (default: the log)."
        ),
    ] = None,
    since: Annotated[float | None, typer.Option(min=0.001, help="With the prediction log: its last HOURS.")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="With the prediction log: a file of request_id, row and the target.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Drift of a new batch, or of what the service logged, against the champion's training
    data: PSI and KS / chi-squared per feature, drift of the model's output, metrics when labels
    come with the rows; an HTML report, an MLflow run, and a Prefect event when it drifted."""
    from lepton.errors import LeptonError
    from lepton.flows.monitor import monitor as monitor_flow

    _environment()
    chosen = _chosen_spec(domain, spec)
    if data is not None and (since is not None or labels is not None):
        _fail("--since and --labels read the prediction log; with --data, the file's target column is the labels")
    _quiet_console_for_user_errors()
    try:
        result = monitor_flow(chosen, str(data) if data else None, since, str(labels) if labels else None)
    except LeptonError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(result.as_json(), separators=(",", ":")), flush=True)
        return
    verdict = "[bold red]drift detected[/]" if result.detected else "[green]no drift[/]"
    drifted = escape(f": {', '.join(result.drifted[:10])}") if result.drifted else ""
    output = " and the model's output" if result.prediction_drifted else ""
    err.print(
        f"{result.model_name} v{result.version}, {result.rows:,} rows from {escape(str(result.source))}: ", end=""
    )
    err.print(f"{verdict}{drifted}{output}")
    if result.estimated:
        e = result.estimated
        before = result.holdout.get(e["metric"])
        then = f"; {before:.4f} on the holdout at training" if before is not None else ""
        if e.get("at_training"):  # what the same estimate made of that holdout: its own bias
            then += f", estimated {e['at_training']['value']:.4f} there"
        method = e["calibration"]
        drawn = "labels drawn from the validation errors" if method == "residuals" else f"calibration {method}"
        if e.get("missed_at_training"):  # the estimate allows for its miss there (arg-max, at the threshold)
            labels = f"labels {e['at_training']['realised']:.4f}, " if e.get("at_training") else ""
            drawn += f"; allowing for the estimate's miss there ({labels}{e['missed_at_training']:+.4f})"
        err.print(
            f"  estimated without labels: {escape(e['metric'])} {e['value']:.4f} "
            f"({e['level']:.0%} band {e['lower']:.4f} to {e['upper']:.4f}{then}; {drawn})",
            highlight=False,
        )
        if e.get("sensitivity") is not None:
            cost = f", cost {e['expected_cost']:.4f} a decision" if e.get("expected_cost") is not None else ""
            err.print(
                f"  expected at the threshold: sensitivity {e['sensitivity']:.4f}, "
                f"false alarms {e['false_alarm_rate']:.4f}{cost}",
                highlight=False,
            )
    _print_performance(result.performance, result.holdout)
    if result.retrain:
        r = result.retrain
        verdict = "[bold]retrain recommended[/]" if r["recommended"] else "no retrain"
        err.print(f"{verdict} ({escape(r['policy'])}): {escape(r['reason'])}", highlight=False)
    if result.labelled_note:
        err.print(escape(result.labelled_note), highlight=False)
    events = [f"event {e}" for e in (result.event, result.retrain_event) if e]
    err.print(f"report: [bold]{escape(str(result.report))}[/]" + "".join(f"  {e}" for e in events))


def _print_performance(performance: dict[str, float], holdout: dict[str, float]) -> None:
    """The metrics on a batch's labelled rows, each beside the champion's holdout figure."""
    labelled = int(performance.get("labelled_rows", 0))
    if labelled:
        err.print(f"  on the {labelled:,} labelled rows (the champion's holdout at training in brackets):")
    for name, value in performance.items():
        if name == "labelled_rows":
            continue
        before = holdout.get(name)
        if not math.isfinite(value):  # e.g. a false-alarm rate on a batch without normal rows
            shown = "—  (not defined on these rows)" + (f"  ({before:.4f})" if before is not None else "")
            err.print(f"  {escape(name):<28} {shown}", highlight=False)
            continue
        then = f"  ({before:.4f}, {value - before:+.4f})" if before is not None else ""
        err.print(f"  {escape(name):<28} {value:.4f}{then}", highlight=False)


COST_COLUMNS = {  # the history's columns: (header, MLflow metric, format); --json has them all
    "seconds": ("wall s", "seconds_total", "{:.1f}"),
    "cpu_seconds": ("CPU s", "cpu_seconds_total", "{:.1f}"),
    "peak_mb": ("peak MB", "peak_mb_total", "{:,.0f}"),
    "energy_wh": ("Wh", "energy_wh_total", "{:.3f}"),
    "cost_usd": ("USD", "cost_usd_total", "{:.6f}"),
    "latency_p50_ms": ("p50 ms", "latency_p50_ms", "{:.2f}"),
    "latency_p99_ms": ("p99 ms", "latency_p99_ms", "{:.2f}"),
}
COST_SHOWN = ("seconds", "cpu_seconds", "energy_wh", "cost_usd", "latency_p50_ms", "latency_p99_ms")


@app.command()
def cost(
    domain: Annotated[str | None, typer.Argument(help=f"A built-in domain: {', '.join(DOMAINS)}.")] = None,
    spec: Annotated[Path | None, typer.Option(help="A spec file, as `lepton init` writes (instead of DOMAIN).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many of the latest runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print the history as one JSON object.")] = False,
) -> None:
    """The domain's pipeline runs, oldest first: cost (USD, CPU-seconds, memory, energy), holdout
    quality and single-row scoring latency side by side, from MLflow."""
    from lepton.core import tracking

    _environment()
    chosen = _chosen_spec(domain, spec)
    tracking.configure(load_settings())
    runs = tracking.run_history(chosen.model_name, limit, role="candidate")
    metric = chosen.primary_metric
    rows = [
        {
            "started": run.start.isoformat(timespec="seconds"),
            "run_id": run.run_id,
            "version": run.tags.get(tracking.Tag.VERSION),
            "promoted": run.tags.get(tracking.Tag.PROMOTED) == "True",
            "family": run.params.get("family"),
            "device": run.params.get("device"),
            metric: run.metrics.get(metric),
            **{key: run.metrics.get(name) for key, (_, name, _) in COST_COLUMNS.items()},
        }
        for run in runs
    ]
    if as_json:
        print(json.dumps({"domain": chosen.name, "primary_metric": metric, "runs": rows}, separators=(",", ":")))
        return
    if not rows:
        _fail(f"{chosen.model_name} has no finished pipeline runs; run `lepton run {chosen.name}` first")
    table = Table(
        title=f"{chosen.model_name}: cost, quality and latency per run",
        title_justify="left",
        box=None,
        pad_edge=False,
        collapse_padding=True,
    )
    headers = ("started", "version", "model", metric, *(COST_COLUMNS[key][0] for key in COST_SHOWN))
    for header in headers:
        table.add_column(header, no_wrap=True, justify="left" if header in ("started", "model") else "right")
    for row in rows:
        cells = [COST_COLUMNS[key][2].format(row[key]) if row[key] is not None else "-" for key in COST_SHOWN]
        version = f"v{row['version']}" + ("*" if row["promoted"] else "") if row["version"] else "-"
        quality = f"{row[metric]:.4f}" if row[metric] is not None else "-"
        started = row["started"][5:16].replace("T", " ")  # MM-DD HH:MM (UTC)
        table.add_row(started, version, str(row["family"]), quality, *cells)
    Console().print(table)
    err.print("* promoted to champion; times in UTC; peak memory and more with --json. Prices: ", end="")
    err.print("LEPTON_PRICE_CORE_HOUR, _GB_HOUR, _GPU_HOUR; power: LEPTON_WATTS_CORE, _GPU.")


@app.command("simulate-drift")
def simulate_drift(
    domain: Annotated[str | None, typer.Argument(help=f"A built-in domain: {', '.join(DOMAINS)}.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write (.parquet or .csv).")] = None,
    spec: Annotated[Path | None, typer.Option(help="A spec file, as `lepton init` writes (instead of DOMAIN).")] = None,
    rows: Annotated[int, typer.Option(min=100, max=10_000_000, help="How many rows to write.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite the output file if it exists.")] = False,
) -> None:
    """Write a realistically drifted, labelled batch in the domain's schema (a riskier applicant
    mix, an older cohort, a plant where some faults became common), to watch the loop:
    `lepton monitor DOMAIN --data PATH`."""
    from lepton.errors import LeptonError
    from lepton.flows.datasets import simulate_drift as write_drifted

    chosen = _chosen_spec(domain, spec)
    if output is None:
        _fail("give --output/-o PATH")
    try:
        out, written, shift = write_drifted(chosen, rows, output, seed, force)
    except LeptonError as exc:
        _fail(str(exc))
    err.print(f"wrote {written:,} drifted rows to [bold]{escape(str(out))}[/] ({escape(shift.description)})")
    err.print(f"check it: [bold]lepton monitor {chosen.name} --data {escape(str(out))}[/]")


@app.command()
def ui(
    prefect_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the Prefect server.")] = 4200,
    mlflow_port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the MLflow server.")] = 5000,
) -> None:
    """Start a Prefect server (schedules, runs, automations) and an MLflow server (runs, models)
    on 127.0.0.1 with lean settings, over Lepton's state (LEPTON_HOME, or PostgreSQL from
    LEPTON_PREFECT_DATABASE_URL and LEPTON_MLFLOW_BACKEND_URI); stop both with Ctrl-C."""
    from lepton.app import stack
    from lepton.errors import LeptonError

    home = _environment()
    settings = load_settings()
    env = stack.lean_environment(settings)
    children: list = []
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started in the background
    try:
        with stack.running(children):
            err.print("starting the Prefect and MLflow servers ...")
            children.append(
                stack.prefect_server(settings, prefect_port, env, os.environ.get("LEPTON_PREFECT_DATABASE_URL"))
            )
            children.append(
                stack.mlflow_server(settings, mlflow_port, env, os.environ.get("LEPTON_MLFLOW_BACKEND_URI"))
            )
            stack.wait_all(children)
            prefect_url, mlflow_url = children[0].url, children[1].url
            err.print(f"Prefect UI  [bold]{prefect_url}[/]   (runs, schedules, automations)")
            err.print(f"MLflow UI   [bold]{escape(_mlflow_ui(mlflow_url))}[/]   (runs, models)")
            err.print(
                f"state under {escape(str(home))}; logs under {escape(str(home / 'logs'))}. "
                "Point Lepton at these servers with:"
            )
            err.print(f"  export PREFECT_API_URL={prefect_url}/api MLFLOW_TRACKING_URI={mlflow_url}")
            err.print("then `lepton deploy` and `lepton worker`. Ctrl-C stops both servers.")
            while all(child.process.poll() is None for child in children):
                time.sleep(0.5)
            gone = next(child for child in children if child.process.poll() is not None)
            _fail(f"{gone.name} stopped (exit {gone.process.returncode}); its log: {gone.log}")
    except KeyboardInterrupt:
        err.print("stopped both servers")
    except LeptonError as exc:
        _fail(str(exc))


@app.command("deploy")
def deploy_command() -> None:
    """Create the `lepton-process` work pool and apply prefect.yaml on the Prefect server at
    PREFECT_API_URL: per domain a pipeline deployment (weekly, and when a monitor run recommends a retrain) and a
    monitor deployment (daily)."""
    from lepton.app import stack
    from lepton.errors import LeptonError

    _environment()
    try:
        names = stack.deploy(stack.lean_environment(load_settings()), say=lambda text: err.print(text, highlight=False))
    except LeptonError as exc:
        _fail(str(exc))
    err.print(f"deployed {len(names)} deployments on pool {stack.POOL}: {', '.join(names)}")
    err.print("start a worker with `lepton worker`")


@app.command()
def worker() -> None:
    """Run the `lepton-process` pool's worker (Prefect), which starts the deployments' flow runs
    with this environment (LEPTON_HOME, MLFLOW_TRACKING_URI, PREFECT_API_URL)."""
    from lepton.app import stack

    _environment()
    env = stack.lean_environment(load_settings())
    if not env.get("PREFECT_API_URL"):
        _fail("no Prefect server: start one with `lepton ui`, or set PREFECT_API_URL")
    command = stack.worker_command()
    os.execvpe(command[0], command, env)


def _mlflow_ui(tracking_uri: str) -> str:
    """Where to compare runs: the tracking server itself, or the command that opens a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        from lepton.core.tracking import ui_link

        return ui_link(tracking_uri)
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def _unknown_domain(name: str) -> str:
    """The error for an unknown domain, with the close match when there is one (difflib)."""
    import difflib

    close = difflib.get_close_matches(name, DOMAINS, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown domain {name!r}{hint} The built-in domains: {', '.join(DOMAINS)}"


def _chosen_spec(domain: str | None, spec: Path | None):
    """The built-in domain or the spec file the user named (exactly one); exits 2 otherwise."""
    from lepton.domains import get_spec
    from lepton.domains.spec import DomainSpec
    from lepton.errors import LeptonError

    try:
        if (domain is None) == (spec is None):
            raise LeptonError("name a built-in domain or give --spec FILE (one of them)")
        if spec is not None:
            return DomainSpec.from_yaml(spec.expanduser().resolve())
        if domain not in DOMAINS:
            raise LeptonError(f"{_unknown_domain(domain)} (or give --spec FILE)")
        return get_spec(domain)
    except LeptonError as exc:
        _fail(str(exc))


@app.command()
def score(
    domain: Annotated[str | None, typer.Argument(help=f"A built-in domain: {', '.join(DOMAINS)}.")] = None,
    input_file: Annotated[Path | None, typer.Argument(metavar="INPUT", help="CSV/Parquet file to score.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write (.parquet or .csv).")] = None,
    spec: Annotated[Path | None, typer.Option(help="A spec file, as `lepton init` writes (instead of DOMAIN).")] = None,
    version: Annotated[str | None, typer.Option(help="A registered version (default: the champion).")] = None,
    chunk_rows: Annotated[int, typer.Option(min=1000, help="Rows scored at a time.")] = 100_000,
    force: Annotated[bool, typer.Option(help="Overwrite the output file if it exists.")] = False,
) -> None:
    """Score a file with the domain's champion, in chunks, as a Prefect flow: the file's id,
    group and time columns with `prediction` and `score`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from lepton.errors import LeptonError
    from lepton.flows.score import score as score_flow

    _environment()
    if spec is not None and input_file is None and domain is not None:  # `lepton score --spec S INPUT`
        domain, input_file = None, Path(domain)
    if input_file is None or output is None:
        _fail("give the INPUT file and --output/-o")
    chosen = _chosen_spec(domain, spec)
    if output.expanduser().resolve().exists() and not force:
        _fail(f"{output.expanduser().resolve()}: exists; pass --force to overwrite it")
    total = _row_count(input_file)
    _quiet_console_for_user_errors()  # a bad file is one clear message, not a traceback too
    columns = (*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    from lepton.app.terminal import Terminal
    from lepton.core import progress

    plain = None if err.is_terminal else Terminal(err)  # off a terminal: a plain line per chunk, now and then
    with Progress(*columns, console=err, transient=True) as bar, progress.listening(plain, domain=chosen.name):
        task = bar.add_task(f"scoring with {chosen.model_name}", total=total)
        try:
            result = score_flow(
                chosen, str(input_file), str(output), version, chunk_rows, lambda n: bar.advance(task, n)
            )
        except LeptonError as exc:
            _fail(str(exc))
    err.print(
        f"scored {result.rows:,} rows with {result.model_name} v{result.version} -> "
        f"[bold]{escape(str(result.output))}[/]"
    )


def _row_count(path: Path) -> int | None:
    """Rows in the file, for the progress bar (None when it cannot be told cheaply)."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # the flow reports unreadable files properly
        return None
    return None


@app.command()
def serve(
    domain: Annotated[str | None, typer.Argument(help=f"A built-in domain: {', '.join(DOMAINS)}.")] = None,
    spec: Annotated[Path | None, typer.Option(help="A spec file, as `lepton init` writes.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between checks of the champion alias.")] = 5.0,
    max_body: Annotated[
        int | None,
        typer.Option(min=1024, help="Largest request body, in bytes (default: room for --max-batch full rows)."),
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Most rows in one batch request.")] = 5_000,
    no_reasons: Annotated[bool, typer.Option("--no-reasons", help="Leave out the top reasons.")] = False,
    public_metrics: Annotated[
        bool, typer.Option("--public-metrics", help="Serve /metrics without the API key.")
    ] = False,
) -> None:
    """Serve the domain's champion over HTTP (FastAPI): /predict, /predict/batch, /docs, /health,
    /ready, /metrics. A moved champion alias is picked up without a restart. With LEPTON_API_KEY
    set, scoring requests and /metrics need it in the X-API-Key header (--public-metrics: not
    /metrics)."""
    import uvicorn

    from lepton.app.serve import ServeConfig, create_app

    home = _environment()
    chosen = _chosen_spec(domain, spec)
    config = ServeConfig(
        poll_seconds=poll,
        api_key=os.environ.get("LEPTON_API_KEY") or None,
        max_body_bytes=max_body,
        max_batch_rows=max_batch,
        explain=not no_reasons,
        public_metrics=public_metrics,
    )
    application = create_app(chosen, load_settings(), config)
    err.print(
        f"serving [bold]{chosen.model_name}[/] (champion) on http://{host}:{port}  docs: /docs"
        f"{'  API key required' if config.api_key else ''}  "
        f"predictions logged under {escape(str(home / 'predictions'))}"
    )
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


def _interrupted(signum: int, frame: Any) -> None:
    """Ctrl-C (SIGINT) and SIGTERM unwind the stack as KeyboardInterrupt: context managers close
    the Dask cluster and the run is marked failed. Dask's own complaints about the clients and
    workers it loses on the way are not the user's business: they are silenced first."""
    if _inside_gc_callback(frame):
        # Raised here, the exception would be swallowed ("Exception ignored in ...") with the
        # callback's owner left half way (Dask's GC timer then asserts at the next collection),
        # and the run would go on. Deliver the signal again once the collection is over.
        threading.Timer(0.02, os.kill, (os.getpid(), signum)).start()
        return
    for name in ("distributed", "distributed.client", "distributed.worker", "distributed.nanny", "prefect", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C while unwinding is not a second traceback
    INTERRUPTED.append(signum)
    if _inside_native_callback(frame):
        # Raised here, the exception would cross XGBoost's C++ (its data-iterator callback runs
        # inside XGQuantileDMatrixCreateFromCallback): it comes back as XGBoostError or, now
        # and then under load, aborts the process (SIGABRT). Leave at once instead.
        _leave(signum)
    raise KeyboardInterrupt(signum)


def _inside_gc_callback(frame: Any) -> bool:
    """True when the interrupted Python code runs in one of ``gc.callbacks``, where Python
    prints and drops any exception raised."""
    codes = {getattr(getattr(c, "__func__", c), "__code__", None) for c in gc.callbacks}
    while frame is not None:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


def _swallowed(unraisable: Any) -> None:
    """``sys.unraisablehook``: an interruption raised where Python cannot propagate it (a
    ``__del__``, a weakref callback) would be printed and lost, and the run would go on. After
    a signal, leave as the handler would have; anything else is reported as usual."""
    if INTERRUPTED and isinstance(unraisable.exc_value, KeyboardInterrupt):
        _leave(INTERRUPTED[0])
    sys.__unraisablehook__(unraisable)


def _inside_native_callback(frame: Any) -> bool:
    """True when the interrupted Python code was called back from XGBoost's native code."""
    marker = f"{os.sep}xgboost{os.sep}"
    while frame is not None:
        if marker in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _leave(signum: int) -> None:
    _stop_children()
    err.print(f"[yellow]interrupted[/] ({signal.Signals(signum).name})")
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit now, without the interpreter's teardown: a native thread left running by an
    # interrupted XGBoost or Dask call would abort it ("terminate called without an active
    # exception", SIGABRT) and hide the exit code a shell expects: 128 + the signal.
    os._exit(128 + signum)


INTERRUPTED: list[int] = []  # the signal that stopped this process (typer turns its KeyboardInterrupt into Exit)


def _stop_children() -> None:
    """Prefect's temporary API server (a child process) stops with this one."""
    with contextlib.suppress(Exception):
        from prefect.server.api.server import SubprocessASGIServer

        for server in list(getattr(SubprocessASGIServer, "_instances", {}).values()):
            server.stop()


def _usage_errors_as_ours(command: typer.Typer) -> None:
    """Run the app; a usage error (unknown option, bad value, missing argument) is printed the
    way every other error is, ``error: ...`` (with Click's own did-you-mean) and a pointer to
    --help, exit 2, rather than in a panel of its own. Typer 0.2x vendors Click: its exception
    classes are then Typer's own (``typer._click``)."""
    try:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
    except ImportError:  # a Typer that uses Click itself
        from click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # type: ignore[no-redef]

    try:
        code = command(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "lepton"
        err.print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False, soft_wrap=True)
        err.print(f"see [bold]{escape(where)} --help[/]", highlight=False)
        sys.exit(exc.exit_code)
    except ClickException as exc:
        err.print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("[yellow]aborted[/]")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    sys.unraisablehook = _swallowed
    try:
        _usage_errors_as_ours(app)
    except BaseException:
        # Interrupted, whatever the KeyboardInterrupt became on its way up: raised inside a
        # native library's callback (XGBoost's QuantileDMatrix data iterator) it comes back as
        # that library's error, not as KeyboardInterrupt.
        if not INTERRUPTED:
            raise
        _leave(INTERRUPTED[0])


if __name__ == "__main__":
    main()
