"""The monitor flow's steps (``lepton.flows.monitor`` wires them), each a Prefect task run:
load the champion, read the batch (a file, or a window of the prediction log with labels joined),
compare it with the champion's training reference, decide whether the batch is worth a retrain
(``lepton.tasks.retrain``), record the MLflow run, the HTML report and the Prefect artifact, keep
the logged rows whose labels came back, alert (``lepton.drift.detected``) when it drifted, and
recommend a retrain (``lepton.retrain.recommended``) when it is worth one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from lepton.core import tracking
from lepton.core.digest import rows_digest
from lepton.core.partitions import Dataset, is_dataset, open_dataset
from lepton.core.predlog import decisions_per_day, served_inputs
from lepton.core.scoring import Scorer, read_reference
from lepton.core.settings import Settings
from lepton.core.tables import read_table, resolve_input
from lepton.domains import recipes
from lepton.domains.spec import DomainSpec
from lepton.errors import InputPathError, Problem, SchemaError
from lepton.tasks.batch_scan import scan_batch
from lepton.tasks.estimate import Estimate, at_training, of_batch
from lepton.tasks.labels import encode_labels
from lepton.tasks.metrics import EvalContext, evaluate
from lepton.tasks.monitor import PREDICTION, DriftReport, drift_report
from lepton.tasks.preprocess import check_inputs
from lepton.tasks.report import DriftPoint, markdown_summary, render
from lepton.tasks.retrain import RECOMMENDED, RetrainDecision, RetrainHistory, Traffic, decide

EVENT = "lepton.drift.detected"


def resource(spec: DomainSpec) -> dict[str, str]:
    """The Prefect event resource of a domain (what the automation's trigger matches)."""
    return {"prefect.resource.id": f"lepton.domain.{spec.name}", "prefect.resource.name": spec.name}


# ---- what is monitored --------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    inputs: pl.DataFrame  # the model inputs, typed (empty for a dataset: its rows stay on the workers)
    source: str
    labels: pl.Series | None = None  # the target, where the rows have one
    dataset: Dataset | None = None  # a batch stored as many files, read where the workers run
    fingerprint: str | None = None  # a dataset's, once the workers have read it
    # with labels joined to the log: the domain's other columns the labels file carried (time, group, id)
    context: pl.DataFrame | None = None

    @property
    def digest(self) -> str:
        """A short fingerprint of the rows (MLflow's dataset lineage)."""
        return self.fingerprint or rows_digest(self.inputs)

    def describe(self) -> str:
        return self.dataset.describe() if self.dataset else f"{self.inputs.height:,} rows from {self.source}"


def batch_from_file(spec: DomainSpec, path: str) -> Batch:
    source = resolve_input(path)
    frame = read_table(source)
    if frame.is_empty():
        raise SchemaError([Problem("empty", "(file)", "no data rows")], str(source))
    inputs = check_inputs(frame, spec, 0, str(source))
    labels = frame[spec.target] if spec.target in frame.columns else None
    return Batch(inputs, source.name, labels)


def batch_from_log(spec: DomainSpec, settings: Settings, since_hours: float | None, labels: str | None) -> Batch:
    """The logged requests (of the last ``since_hours``), their inputs under their own names;
    with ``labels`` (a file of request_id, optional row, and the target) joined by request."""
    since = datetime.now(UTC) - timedelta(hours=since_hours) if since_hours else None
    directory = settings.home / "predictions" / spec.name
    frame = served_inputs(directory, since)
    window = f"the prediction log ({f'last {since_hours:g} h' if since_hours else 'all of it'})"
    if frame.is_empty():
        raise InputPathError(f"{spec.name}: no predictions logged in {window} under {directory}")
    if labels is not None:
        truth = read_table(resolve_input(labels))
        keys = ["request_id", "row"] if "row" in truth.columns else ["request_id"]
        missing = [c for c in (*keys, spec.target) if c not in truth.columns]
        if missing:
            raise SchemaError([Problem("missing_column", c, "needed to join labels to the log") for c in missing])
        inputs = {c.name for c in spec.model_inputs}
        carried = [c.name for c in spec.columns if c.name in truth.columns and c.name not in {*inputs, spec.target}]
        frame = frame.join(truth.select(*keys, spec.target, *carried).unique(keys), on=keys, how="left")
        return Batch(check_inputs(frame, spec, 0, window), window, frame[spec.target], context=frame.select(carried))
    return Batch(check_inputs(frame, spec, 0, window), window)


# ---- the steps ---------------------------------------------------------------------------------
def _performance(spec: DomainSpec, scorer: Scorer, scores: np.ndarray, labels: pl.Series) -> dict[str, float]:
    known = labels.is_not_null().to_numpy()
    if known.sum() < 2:
        return {}
    y = encode_labels(labels.filter(labels.is_not_null()), spec, list(scorer.meta.classes))
    context = EvalContext(threshold=0.5 if scorer.meta.threshold is None else scorer.meta.threshold)
    return {"labelled_rows": float(known.sum()), **evaluate(spec, y, scores[known], context)}


def _history(spec: DomainSpec, limit: int = 30) -> list[DriftPoint]:
    """Earlier monitor runs of this model, oldest first: time, PSI per feature, and the primary
    metric estimated (with its band) and realised, where the run had them."""
    name, live = f"estimated_{spec.primary_metric}", f"live_{spec.primary_metric}"
    points = []
    for run in tracking.run_history(f"{spec.model_name}-monitor", limit):
        m = run.metrics
        band = (m[name], m[f"{name}_lower"], m[f"{name}_upper"]) if f"{name}_upper" in m else None
        psi = {k.removeprefix("psi_"): v for k, v in m.items() if k.startswith("psi_")}
        points.append(DriftPoint(run.start, psi, band, m.get(live)))
    return points


@dataclass(frozen=True)
class Champion:
    version: str
    scorer: Scorer
    reference: dict[str, Any]
    holdout: dict[str, float]  # the version's holdout metrics at training, from its MLflow run


def _step(name: str):
    return task(name=name, cache_policy=NO_CACHE)


@_step("load champion")
def load_champion(spec: DomainSpec) -> Champion:
    """The champion's bundle (checked against its registered fingerprint), its training
    reference, and the holdout metrics it was promoted on."""
    version = tracking.alias_version(spec.model_name, tracking.CHAMPION)
    if version is None:
        raise InputPathError(f"{spec.model_name} has no champion to monitor; run `lepton run {spec.name}` first")
    with tracking.scratch_dir() as tmp:
        bundle = tracking.download_bundle(spec.model_name, version, Path(tmp))
        scorer = Scorer.from_dir(bundle)
        reference = read_reference(bundle)
    return Champion(version, scorer, reference, tracking.version_run_metrics(spec.model_name, version))


@_step("read batch")
def read_batch(
    spec: DomainSpec, settings: Settings, data: str | None, since_hours: float | None, labels: str | None
) -> Batch:
    if data and is_dataset(data):  # only the files' list and footers here; the rows stay where they are
        dataset = open_dataset(data)
        return Batch(pl.DataFrame(), dataset.root, dataset=dataset)
    return batch_from_file(spec, data) if data else batch_from_log(spec, settings, since_hours, labels)


@_step("compare")
def compare(
    spec: DomainSpec, settings: Settings, champion: Champion, batch: Batch
) -> tuple[DriftReport, dict, Estimate | None, Batch]:
    """Score the batch with the champion; drift of every feature and of the output; the
    metrics where the rows carry labels, and the primary metric estimated without them
    (``lepton.tasks.estimate``); the batch with its fingerprint. A dataset is read, scored and
    counted on the Dask workers (``lepton.tasks.batch_scan``), which send back a sample of its
    scores for the estimate."""
    if batch.dataset is not None:
        from lepton.core.engine import dask_engine

        with dask_engine(settings.dask_address) as engine:
            scanned = scan_batch(
                spec, champion.reference, champion.scorer, _monitored_output, batch.dataset, engine.client
            )
        performance = {}
        if scanned.labels is not None and scanned.scores is not None:
            performance = _performance(spec, champion.scorer, scanned.scores, scanned.labels)
        estimated = None
        if scanned.sample is not None:  # a sample of the scores: the band is the whole batch's
            estimated = of_batch(spec, champion.scorer.meta, scanned.sample, scanned.report.rows)
        return scanned.report, performance, estimated, replace(batch, fingerprint=scanned.digest)
    scores = champion.scorer.scores(batch.inputs)
    predictions = _monitored_output(spec, champion.scorer, scores)
    frame = recipes.apply(spec.recipe_config(), batch.inputs)
    if settings.dask_address:  # a cluster is configured: the columns go to its workers
        from lepton.core.engine import dask_engine

        with dask_engine(settings.dask_address) as engine:
            report = drift_report(spec, champion.reference, frame, predictions, engine.client)
    else:  # else threads here (NumPy releases the GIL): no cluster to start for a second's work
        report = drift_report(spec, champion.reference, frame, predictions)
    performance = _performance(spec, champion.scorer, scores, batch.labels) if batch.labels is not None else {}
    estimated = of_batch(spec, champion.scorer.meta, np.asarray(scores))
    return report, performance, estimated, batch


def retrain_history(spec: DomainSpec, limit: int = 50) -> RetrainHistory:
    """The domain's latest pipeline runs (what ``lepton cost`` lists): their USD cost, and how
    many moved the champion."""
    runs = tracking.run_history(spec.model_name, limit, role="candidate")
    costs = tuple(r.metrics["cost_usd_total"] for r in runs if r.metrics.get("cost_usd_total") is not None)
    promoted = sum(r.tags.get(tracking.Tag.PROMOTED) == "True" for r in runs)
    return RetrainHistory(costs, promoted, len(runs))


@_step("decide")
def decide_retrain(
    spec: DomainSpec,
    settings: Settings,
    champion: Champion,
    batch: Batch,
    report: DriftReport,
    performance: dict,
    estimated: Estimate | None,
) -> RetrainDecision:
    """Whether this batch is worth a retrain under the spec's policy (``lepton.tasks.retrain``),
    priced on the logged traffic and the domain's measured retrains."""
    before = at_training(spec, champion.scorer.meta, champion.reference.get(PREDICTION))
    logged = decisions_per_day(settings.home / "predictions" / spec.name)
    traffic = (
        Traffic(logged, "the prediction log's last 7 days")
        if logged
        else Traffic(float(report.rows), "the batch, taken as a day's traffic (nothing logged)")
    )
    return decide(
        spec,
        key=f"{batch.digest}-v{champion.version}",
        detected=report.detected,
        drifted=report.drifted,
        estimated=estimated,
        holdout=champion.holdout,
        performance=performance,
        history=retrain_history(spec),
        traffic=traffic,
        at_training=before,
    )


@dataclass(frozen=True)
class Labelled:
    """The logged rows whose labels came back, kept as a file a retrain appends; or why not."""

    path: Path | None
    rows: int
    note: str


@_step("keep labelled rows")
def keep_labelled(spec: DomainSpec, settings: Settings, batch: Batch) -> Labelled:
    """The prediction log's rows joined with the labels that came back, in the domain's schema
    (the model inputs, the target, and the columns the labels file carried), written whole
    under ``LEPTON_HOME/batches/DOMAIN/``: what ``lepton run --append`` and the retrain the
    monitor recommends train on. A time or group split needs its column in the labels file
    (the log holds the model inputs only); without it nothing is kept, and the note says so."""
    if batch.labels is None or batch.context is None:
        return Labelled(None, 0, "no labels were joined to the log")
    frame = pl.concat([batch.inputs, batch.context, batch.labels.to_frame()], how="horizontal")
    frame = frame.filter(pl.col(spec.target).is_not_null())
    needed = {"time": spec.time_column, "group": spec.group_column}
    missing = [f"{role} column {name!r}" for role, name in needed.items() if name and name not in frame.columns]
    if spec.split.kind in ("time", "group") and missing:
        note = f"{spec.name} splits by {' and '.join(missing)}: add it to the labels file to retrain on these rows"
        return Labelled(None, frame.height, note)
    if frame.is_empty():
        return Labelled(None, 0, "no logged row has its label yet")
    directory = settings.home / "batches" / spec.name
    directory.mkdir(parents=True, exist_ok=True)
    path = _write_whole(directory / f"labelled-{rows_digest(frame)}.parquet", frame.write_parquet)
    return Labelled(path, frame.height, f"{frame.height:,} labelled production rows kept for a retrain: {path}")


@_step("record")
def record(
    spec: DomainSpec,
    settings: Settings,
    champion: Champion,
    batch: Batch,
    report: DriftReport,
    performance: dict,
    estimated: Estimate | None = None,
    decision: RetrainDecision | None = None,
) -> tuple[str, Path]:
    """The monitor's MLflow run (metrics, the batch as its input, the drift table, the HTML
    report) and the Prefect artifact; the run id and the report's path."""
    version = champion.version
    history = _history(spec)
    created = datetime.now(UTC)
    experiment = tracking.experiment_id(f"{spec.model_name}-monitor", settings, f"Drift of {spec.name} batches")
    tags = {tracking.Tag.DOMAIN: spec.name, tracking.Tag.MODEL_VERSION: version, tracking.Tag.ROLE: "monitor"}
    with tracking.recorded_run(experiment, f"{spec.name}-monitor v{version}", tags) as run_id:
        tracking.log_params(run_id, {"source": batch.source, "method": spec.drift.method, "rows": report.rows})
        tracking.log_metrics(run_id, {**report.metrics(), **{f"live_{k}": v for k, v in performance.items()}})
        if estimated is not None:
            name = f"estimated_{estimated.metric}"
            tracking.log_metrics(
                run_id, {name: estimated.value, f"{name}_lower": estimated.lower, f"{name}_upper": estimated.upper}
            )
        if decision is not None:
            priced = {"expected_loss_usd": decision.expected_loss_usd, "retrain_cost_usd": decision.retrain_cost_usd}
            tracking.log_metrics(run_id, {k: v for k, v in priced.items() if v is not None})
            verdict = "recommended" if decision.recommended else "not recommended"
            tracking.set_tags(run_id, {tracking.Tag.RETRAIN: verdict})
            tracking.log_dict(run_id, decision.as_json(), "monitor/retrain.json")
        tracking.log_dataset(run_id, batch.source, batch.digest, "monitored", f"{spec.name} monitored batch")
        band = (estimated.value, estimated.lower, estimated.upper) if estimated is not None else None
        realised = performance.get(spec.primary_metric)
        page = render(
            domain=spec.name,
            model=spec.model_name,
            version=version,
            source=batch.source,
            created=created,
            report=report,
            history=[*history, DriftPoint(created, {**report.psi, **_prediction_psi(report)}, band, realised)],
            performance=performance,
            holdout=champion.holdout,
            metric=spec.primary_metric,
            decision=decision.as_json() if decision is not None else None,
        )
        tracking.log_dict(run_id, report.as_json(), "monitor/drift.json")
        local = _keep_report(settings, spec, created, page)
        tracking.log_artifact(run_id, local, "monitor")
        tracking.set_tags(run_id, {tracking.Tag.DRIFT: "detected" if report.detected else "none",
                                   tracking.Tag.DRIFTED_FEATURES: ",".join(report.drifted)[:5000]})  # fmt: skip
        _artifact(spec, version, report, str(local))
    return run_id, local


def _monitored_output(spec: DomainSpec, scorer: Scorer, scores: np.ndarray) -> Any:
    """The model's output as the reference has it (see ``lepton.tasks.monitor.prediction_reference``)."""
    if spec.task == "multiclass":
        return scorer.decide(scores)[0]  # the decided class, as served
    return np.asarray(scores, dtype=np.float64)


def _prediction_psi(report: DriftReport) -> dict[str, float]:
    return {PREDICTION: report.prediction.psi} if report.prediction else {}


def _keep_report(settings: Settings, spec: DomainSpec, created: datetime, page: str) -> Path:
    """The report under LEPTON_HOME/reports/DOMAIN/, written whole (temporary name, rename)."""
    directory = settings.home / "reports" / spec.name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"drift-{created:%Y%m%dT%H%M%S%f}.html"
    return _write_whole(path, lambda partial: partial.write_text(page, encoding="utf-8"))


def _write_whole(path: Path, write: Any) -> Path:
    """``write`` to a temporary name beside ``path``, then rename: a reader never sees half a
    file, and a failed write leaves nothing behind."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _artifact(spec: DomainSpec, version: str, report: DriftReport, location: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        key=f"{spec.name}-drift", markdown=markdown_summary(spec.name, version, report, location),
        description=f"Drift of {spec.name} against version {version}'s training data",
    )  # fmt: skip


@_step("alert")
def alert(
    spec: DomainSpec,
    version: str,
    report: DriftReport,
    run_id: str,
    data: str | None,
    estimated: Estimate | None = None,
) -> str | None:
    """``lepton.drift.detected`` on the domain's resource, with the drifted features and scores."""
    from prefect.events import emit_event

    scores = {name: round(report.features[name].psi, 4) for name in report.drifted}
    payload = {
        "domain": spec.name,
        "model_version": version,
        "features": report.drifted,
        "psi": scores,
        "prediction_drifted": bool(report.prediction and report.prediction.drifted),
        "rows": report.rows,
        "mlflow_run_id": run_id,
        "data": _batch_location(data),
        "estimated": estimated.as_json() if estimated is not None else None,
    }
    event = emit_event(EVENT, resource=resource(spec), payload=payload)
    return str(event.id) if event is not None else None


@_step("recommend")
def recommend(spec: DomainSpec, version: str, decision: RetrainDecision, run_id: str, data: str | None) -> str | None:
    """``lepton.retrain.recommended`` on the domain's resource (what the automations retrain
    on), with the decision's reasoning and the batch to append."""
    from prefect.events import emit_event

    payload = {
        "domain": spec.name,
        "model_version": version,
        "data": _batch_location(data),
        "mlflow_run_id": run_id,
        **decision.as_json(),
    }
    event = emit_event(RECOMMENDED, resource=resource(spec), payload=payload)
    return str(event.id) if event is not None else None


def _batch_location(data: str | None) -> str | None:
    """Where the batch is, as a retrain on another worker reads it."""
    if not data:
        return None
    return open_dataset(data).root if is_dataset(data) else str(resolve_input(data))
