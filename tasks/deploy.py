"""Deploy: evaluate the candidate, record its run, register it, and move the ``champion`` alias
only if the promotion decision says so.

The stage wires four modules: ``lepton.tasks.evaluation`` measures (the holdout, the latency,
the champion on the same rows), ``lepton.tasks.promotion.decide`` decides (a pure function),
``lepton.tasks.registration`` writes the bundle and the registry, and this module logs the
pipeline's MLflow run (params, metrics, plots, trials, the baseline's child run), which the flow
opens and closes (``pipeline_run`` and ``lepton.core.tracking.recorded_run``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from lepton.core import tracking
from lepton.core.identity import code_identity
from lepton.core.progress import emit
from lepton.core.scoring import alarm_classes
from lepton.core.settings import Settings
from lepton.domains.spec import DomainSpec
from lepton.errors import PromotionConflictError
from lepton.tasks import plots
from lepton.tasks.evaluation import (
    Evaluation,
    calibration_metrics,
    champion_scores,
    compare_with_champion,
    evaluate_holdout,
)
from lepton.tasks.monitor import PREDICTION, prediction_reference, reference_statistics
from lepton.tasks.optimise import OptimiseResult
from lepton.tasks.preprocess import PreparedData
from lepton.tasks.promotion import decide, gate_failures, latency_failures, promotion_lock, run_key, version_description
from lepton.tasks.registration import apply_decision, register, registered_latency
from lepton.tasks.train import TrainedModel, TrainResult, alarm_normal


@dataclass(frozen=True)
class Deployment:
    run_id: str
    model_name: str
    version: str
    promoted: bool
    champion_version: str | None
    reasons: tuple[str, ...]
    reference: dict[str, Any] = field(repr=False, default_factory=dict)


def _log_plots(run_id: str, spec: DomainSpec, data: PreparedData, model: TrainedModel, evaluation: Evaluation) -> None:
    y, scores = data.holdout.y, evaluation.scores
    if spec.task == "binary":
        fig = plots.roc_pr_figure(
            y, {f"candidate {model.family}": scores, "baseline linear": evaluation.baseline_scores}
        )
        tracking.log_figure(run_id, fig, "plots/roc_pr.png")
    elif spec.task == "multiclass":
        decided = alarm_classes(scores, alarm_normal(spec, data.classes), evaluation.threshold)
        fig = plots.confusion_figure(y, decided, [str(c) for c in data.classes])
        tracking.log_figure(run_id, fig, "plots/confusion_matrix.png")
    else:
        fig = plots.residual_figure(y, scores)
        tracking.log_figure(run_id, fig, "plots/predicted_vs_actual.png")
    plots.close(fig)
    fig = plots.importance_figure(data.feature_names, model.predictor.importance())
    tracking.log_figure(run_id, fig, "plots/feature_importance.png")
    plots.close(fig)


PARETO_COLUMNS = (
    "number",
    "source",
    "family",
    "state",
    "valid_score",
    "latency_ms",
    "batch_ms",
    "size_bytes",
    "seconds",
    "on_front",
    "eligible",
    "chosen",
)


def _log_trials(experiment: str, run_id: str, spec: DomainSpec, opt: OptimiseResult, common: dict[str, str]) -> None:
    """Every candidate of the search as a nested run (params, metrics and tags in one batch
    each), the Pareto table (``optimise/pareto.json``) and plot, and the front's figures."""
    metric = spec.primary_metric
    children = []
    for t in opt.trials:
        metrics = {
            f"valid_{metric}": abs(t.valid_score),
            "latency_ms": t.latency_ms,
            "batch_ms": t.batch_ms,
            "size_bytes": float(t.size_bytes),
            "fit_seconds": t.seconds,
        }
        tags = {
            **common,
            tracking.Tag.ROLE: "trial",
            tracking.Tag.TRIAL_STATE: t.state,
            tracking.Tag.SOURCE: t.source,
            tracking.Tag.ON_FRONT: str(t.on_front),
            tracking.Tag.CHOSEN: str(t.chosen),
        }
        children.append((f"{spec.name}-trial-{t.number}", {"family": t.family, **t.params}, metrics, tags))
    tracking.log_child_runs(experiment, run_id, children)
    table = {c: [getattr(t, c) for t in opt.trials] for c in PARETO_COLUMNS}
    table["valid_score"] = [abs(v) for v in table["valid_score"]]
    tracking.log_table(run_id, table, "optimise/pareto.json")
    fig = plots.pareto_figure(list(opt.trials), metric, spec.latency_budget_ms)
    tracking.log_figure(run_id, fig, "plots/pareto_front.png")
    plots.close(fig)
    chosen = next((t for t in opt.trials if t.chosen), None)
    tracking.log_metrics(
        run_id,
        {
            "pareto_front_size": float(sum(t.on_front for t in opt.trials)),
            "trials_pruned": float(sum(t.state == "pruned" for t in opt.trials)),
            **(
                {"chosen_latency_ms": chosen.latency_ms, "chosen_size_bytes": float(chosen.size_bytes)}
                if chosen
                else {}
            ),
        },
    )


def run_tags(spec: DomainSpec, data: PreparedData) -> dict[str, str]:
    """The tags every run of this pipeline carries: the pipeline run, its baseline and its trials."""
    return {
        tracking.Tag.DOMAIN: spec.name,
        tracking.Tag.DATA_FINGERPRINT: data.fingerprint,
        tracking.Tag.SPEC_HASH: spec.spec_hash(),
        tracking.Tag.CODE: code_identity().key,
        tracking.Tag.GIT_COMMIT: tracking.git_commit(),
    }


def pipeline_run(spec: DomainSpec, data: PreparedData, settings: Settings) -> tuple[str, str, dict[str, str]]:
    """(experiment, run name, tags) of the pipeline's MLflow run, which the flow opens
    (``tracking.recorded_run``) around deploy and monitor."""
    tracking.configure(settings)
    experiment = tracking.experiment_id(
        spec.model_name, settings, f"{spec.description or spec.name} (Lepton pipeline runs)"
    )
    return experiment, f"{spec.name}-pipeline", {**run_tags(spec, data), tracking.Tag.ROLE: "candidate"}


def record_run(
    spec: DomainSpec,
    data: PreparedData,
    trained: TrainResult,
    opt: OptimiseResult,
    evaluation: Evaluation,
    run_id: str,
    trials: int,
) -> None:
    """Log the pipeline run's params, metrics, plots and trials, and its baseline child run."""
    experiment = tracking.run_experiment(run_id)
    common = run_tags(spec, data)
    candidate = opt.candidate
    run_params = {
        "domain": spec.name,
        "task": spec.task,
        "trials": trials,
        "family": candidate.family,
        "device": candidate.device,
        "trained_on": candidate.trained_on,
        "rows_train": data.rows("train"),
        "rows_valid": data.rows("valid"),
        "rows_holdout": data.rows("holdout"),
        "rows_holdout_scored": evaluation.rows,  # the rows the holdout metrics read
        "features": len(data.feature_names),
        "split": spec.split.kind,
    }
    # The model's own parameters under the names the trial runs use, so MLflow's compare view
    # lines the parent up with its trials (a clash with the run's own keys keeps a prefix).
    model = {(f"model.{k}" if k in run_params else k): v for k, v in candidate.params.items()}
    tracking.log_params(run_id, {**run_params, **model})
    if spec.task == "binary":
        tracking.log_params(run_id, {"threshold": round(evaluation.threshold, 6)})
    tracking.set_tags(run_id, {tracking.Tag.CHOICE: opt.reason, tracking.Tag.DEVICE: candidate.device})
    tracking.log_metrics(
        run_id,
        {
            **evaluation.metrics,
            f"valid_{spec.primary_metric}": abs(candidate.valid_score),
            "fit_seconds": candidate.fit_seconds,  # the chosen model's last fit, as its trials report theirs
        },  # the baseline's metrics are on its own run, nested under this one
    )
    tracking.log_metrics(run_id, calibration_metrics(spec, data, opt))
    tracking.log_params(run_id, {"calibration": opt.calibration.method if opt.calibration else "none"})
    _log_trials(experiment, run_id, spec, opt, common)
    _log_plots(run_id, spec, data, candidate, evaluation)

    baseline = {**common, tracking.Tag.ROLE: "baseline"}
    with tracking.recorded_run(experiment, f"{spec.name}-baseline", baseline, parent_run_id=run_id) as base_id:
        threshold = {"threshold": round(evaluation.baseline_threshold, 6)} if spec.task == "binary" else {}
        tracking.log_params(base_id, {"family": trained.baseline.family, **trained.baseline.params, **threshold})
        valid = abs(trained.baseline.valid_score)
        tracking.log_metrics(base_id, {**evaluation.baseline_metrics, f"valid_{spec.primary_metric}": valid})


def register_and_gate(
    spec: DomainSpec,
    data: PreparedData,
    opt: OptimiseResult,
    evaluation: Evaluation,
    run_id: str,
    settings: Settings,
    key: str,
) -> Deployment:
    """Register the model (or find the version this run's inputs already registered) and move
    ``champion`` only if every gate passes and it beats the champion by the paired test.

    Under the model's promotion lock: the champion is scored, and its alias read again right
    before the move; if it moved meanwhile, the comparison is done again."""
    reference = reference_statistics(data.train.frame, spec.with_features())
    reference[PREDICTION] = prediction_reference(
        spec, evaluation.scores, [str(c) for c in data.classes], alarm_normal(spec, data.classes), evaluation.threshold
    )
    with promotion_lock(settings.home, spec.model_name, settings.lock_url):
        version = tracking.find_version(spec.model_name, tracking.Tag.RUN_KEY, key)
        resumed = version is not None
        if version is None:
            version, latency = register(spec, data, opt, evaluation, run_id, reference, key)
        else:  # found, not waved through: its registered bundle is timed again and gated as a new one
            latency = registered_latency(spec, version, data)
            tracking.log_metrics(run_id, latency)
        failures = gate_failures(spec, evaluation.metrics, evaluation.baseline_metrics)
        failures += latency_failures(spec, latency)
        for _ in range(3):
            champion = champion_scores(spec, data)
            comparison = (
                None if champion.version == version else compare_with_champion(spec, data, evaluation, champion)
            )
            if tracking.alias_version(spec.model_name, tracking.CHAMPION) == champion.version:
                break
        else:
            raise PromotionConflictError(
                f"the champion alias of {spec.model_name} kept moving while v{version} was compared"
            )
        decision = decide(spec, version, failures, comparison, champion.version, champion.note)
        apply_decision(spec, version, decision)
    tags = {
        tracking.Tag.PROMOTED: str(decision.promoted),
        tracking.Tag.VERSION: version,
        tracking.Tag.DECISION: decision.summary,
    }
    tags[tracking.NOTE] = f"{version_description(spec, version, decision)}\n\nChosen: {opt.reason}"
    if resumed:
        tags[tracking.Tag.RESUMED_VERSION] = version  # registered by an earlier run with the same inputs
    tracking.set_tags(run_id, tags)
    if comparison is not None:
        tracking.log_metrics(run_id, {"champion_delta": comparison.delta, "champion_p_value": comparison.p_value})
    return Deployment(
        run_id=run_id,
        model_name=spec.model_name,
        version=version,
        promoted=decision.promoted,
        champion_version=version if decision.promoted else champion.version,
        reasons=decision.reasons,
        reference=reference,
    )


@task(name="deploy", cache_policy=NO_CACHE)
def deploy_task(
    spec: DomainSpec,
    data: PreparedData,
    trained: TrainResult,
    opt: OptimiseResult,
    settings: Settings,
    trials: int,
    run_id: str,
    client: Any = None,
) -> tuple[Deployment, Evaluation]:
    """Evaluate on the holdout, log the run, register, and gate the promotion.

    Args:
        spec: the domain (gates, metrics).
        data: prepared splits; the holdout is used here for the first time.
        trained: the baseline the candidate must match.
        opt: the candidate and its threshold.
        settings: where MLflow keeps runs and artifacts.
        trials: the trial budget (logged).
        run_id: the pipeline's MLflow run, opened and ended by the flow (``pipeline_run``).
        client: a partitioned table's Dask client: its whole holdout is scored on the workers.
    Returns:
        (Deployment, Evaluation): the registered version and whether it became champion.
    """
    tracking.configure(settings)
    evaluation = evaluate_holdout(spec, data, trained, opt, client)
    search = {
        "search_rows": settings.search_rows,
        "distributed_rows": settings.distributed_rows,
        "device": settings.device,
    }
    key = run_key(spec, data.fingerprint, code_identity().key, trials, search)
    record_run(spec, data, trained, opt, evaluation, run_id, trials)
    deployed = register_and_gate(spec, data, opt, evaluation, run_id, settings, key)
    role = "is the champion" if deployed.promoted else "stays a challenger"
    emit("decision", "deploy", f"{deployed.model_name} v{deployed.version} {role}: {'; '.join(deployed.reasons)}")
    return deployed, evaluation
