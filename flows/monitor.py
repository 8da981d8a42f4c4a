"""Monitoring: ``lepton monitor DOMAIN [--data PATH | --since HOURS]`` as a Prefect flow.

Reads a new batch (a CSV/Parquet file in the domain's schema, or a folder or glob of them, read
file by file on the Dask workers) or a window of the prediction log,
and compares it with the reference statistics stored with the champion version: per-feature
drift (PSI and a KS / chi-squared test), drift of the model's output, and the model's metrics
when the rows carry labels (a batch with the target column, or ``--labels`` joined to the log
by request id and row). Everything goes to an MLflow run in the ``<model>-monitor`` experiment
(metrics, the drift table, the HTML report), the summary to a Prefect markdown artifact, and when
the batch drifted a Prefect event ``lepton.drift.detected``. Whether the batch is worth a retrain
is decided apart from drift, by the spec's ``retrain`` policy (``lepton.tasks.retrain``: on drift,
on the loss estimated without labels, or on the labels' performance); when it is, the event
``lepton.retrain.recommended`` carries the reasoning, and the deployments' automation answers it by
running the domain's pipeline (``prefect.yaml``).

A file that is not in the domain's schema stops the run before anything is logged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect import flow

from lepton.core import tracking
from lepton.core.progress import emit
from lepton.core.settings import load_settings
from lepton.domains import get_spec
from lepton.domains.spec import DomainSpec
from lepton.tasks.estimate import Estimate
from lepton.tasks.retrain import RECOMMENDED
from lepton.tasks.watch import (
    EVENT,
    alert,
    compare,
    decide_retrain,
    keep_labelled,
    load_champion,
    read_batch,
    recommend,
    record,
    resource,
)

__all__ = ["EVENT", "RECOMMENDED", "MonitorResult", "monitor", "resource"]


@dataclass
class MonitorResult:
    domain: str
    model_name: str
    version: str
    source: str
    rows: int
    detected: bool
    drifted: list[str]
    prediction_drifted: bool
    psi_max: float
    run_id: str
    report: str
    performance: dict[str, float] = field(default_factory=dict)
    event: str | None = None  # the id of the emitted drift event
    holdout: dict[str, float] = field(default_factory=dict)  # the champion's holdout metrics at training
    # the primary metric estimated without labels (lepton.tasks.estimate): metric, value, lower, upper, level, ...
    estimated: dict[str, Any] | None = None
    # whether this batch is worth a retrain (lepton.tasks.retrain): policy, recommended, reason, key, USD
    retrain: dict[str, Any] = field(default_factory=dict)
    retrain_event: str | None = None  # the id of the emitted lepton.retrain.recommended event
    # with --labels: the logged rows whose labels came back, kept as a file a retrain appends
    labelled_batch: str | None = None
    labelled_note: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _run_name() -> str:
    from prefect.runtime import flow_run

    domain = flow_run.parameters.get("domain")
    name = domain.get("name") if isinstance(domain, dict) else getattr(domain, "name", domain)
    source = "batch" if flow_run.parameters.get("data") else "log"
    return f"{name}-monitor-{source}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@flow(name="lepton-monitor", flow_run_name=_run_name, validate_parameters=True)
def monitor(
    domain: str | DomainSpec, data: str | None = None, since_hours: float | None = None, labels: str | None = None
) -> MonitorResult:
    """Drift (and performance, with labels) of a batch or of the prediction log against the
    champion's training reference; an event when it drifted.

    Args:
        domain: a built-in domain name, or a DomainSpec.
        data: a CSV/Parquet file in the domain's schema, or a folder or glob of them (the target
            column, if present, is used as labels); without it, the prediction log.
        since_hours: with the prediction log, only its last hours.
        labels: with the prediction log, a file of request_id (and row) and the target.
    """
    spec = domain if isinstance(domain, DomainSpec) else get_spec(domain)
    settings = load_settings()
    tracking.configure(settings)
    champion = load_champion(spec)
    batch = read_batch(spec, settings, data, since_hours, labels)
    emit("note", "read batch", batch.describe())
    report, performance, estimated, batch = compare(spec, settings, champion, batch)
    if estimated is not None:
        emit("note", "compare", estimated.describe())
    decision = decide_retrain(spec, settings, champion, batch, report, performance, estimated)
    emit("decision", "retrain", f"{'recommended' if decision.recommended else 'not recommended'}: {decision.reason}")
    run_id, local = record(spec, settings, champion, batch, report, performance, estimated, decision)
    kept = keep_labelled(spec, settings, batch) if batch.context is not None else None
    if kept is not None:
        emit("note", "labels", kept.note)
    event = alert(spec, champion.version, report, run_id, data, estimated) if report.detected else None
    # the retrain appends the batch: the file read, or the logged rows whose labels came back
    append = data or (str(kept.path) if kept is not None and kept.path else None)
    asked = recommend(spec, champion.version, decision, run_id, append) if decision.recommended else None
    emit(
        "decision", "monitor",
        f"{spec.model_name} v{champion.version}: {'drift detected' if report.detected else 'no drift'} "
        f"({len(report.drifted)} of {len(report.features)} features drifted, PSI max {report.max_psi:.3f}); "
        f"report {local}" + ("; lepton.retrain.recommended asks for a retrain" if asked else ""),
    )  # fmt: skip
    return MonitorResult(
        domain=spec.name,
        model_name=spec.model_name,
        version=champion.version,
        source=batch.source,
        rows=report.rows,
        detected=report.detected,
        drifted=report.drifted,
        prediction_drifted=bool(report.prediction and report.prediction.drifted),
        psi_max=report.max_psi,
        run_id=run_id,
        report=str(local),
        performance=performance,
        event=event,
        holdout={k: v for k, v in champion.holdout.items() if k in performance or k == spec.primary_metric},
        estimated=_estimated(estimated, champion.scorer.meta.estimation_check),
        retrain=decision.as_json(),
        retrain_event=asked,
        labelled_batch=str(kept.path) if kept is not None and kept.path else None,
        labelled_note=kept.note if kept is not None else None,
    )


def _estimated(estimated: Estimate | None, check: dict[str, Any] | None) -> dict[str, Any] | None:
    """The batch's estimate for ``--json``, with what the same estimate made of the holdout at
    training beside the labels' figure there (``at_training``: value, realised), where kept."""
    if estimated is None:
        return None
    out = estimated.as_json()
    if check:
        out["at_training"] = {"value": check["value"], "realised": check["realised"]}
    return out
