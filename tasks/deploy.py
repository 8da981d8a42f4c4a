"""Deploy: register the candidate, gate it, and move the ``champion`` alias only if it passes.

``gate_failures`` is the pure decision; ``deploy_task`` is the MLflow edge around it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from lepton.core import tracking
from lepton.core.identity import code_identity
from lepton.core.inputs import input_frame, input_records, signature
from lepton.core.progress import emit
from lepton.core.scoring import Scorer, alarm_classes, smoothed, write_bundle
from lepton.core.settings import Settings
from lepton.core.timing import ATTEMPTS, MAX_SPREAD, time_calls
from lepton.domains.spec import DomainSpec
from lepton.errors import PromotionConflictError
from lepton.tasks import plots
from lepton.tasks.metrics import evaluate
from lepton.tasks.monitor import PREDICTION, prediction_reference, reference_statistics
from lepton.tasks.optimise import OptimiseResult, decision_threshold
from lepton.tasks.preprocess import PreparedData
from lepton.tasks.promotion import Comparison, paired_bootstrap, promotion_lock, run_key
from lepton.tasks.train import TrainedModel, TrainResult, alarm_normal, holdout_context

REQUIREMENTS = ["mlflow", "numpy", "pandas", "xgboost", "polars"]


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics of the candidate and the baseline, each at its own threshold."""

    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    threshold: float
    baseline_threshold: float
    scores: np.ndarray = field(repr=False)
    baseline_scores: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Deployment:
    run_id: str
    model_name: str
    version: str
    promoted: bool
    champion_version: str | None
    reasons: tuple[str, ...]
    reference: dict[str, Any] = field(repr=False, default_factory=dict)


def _within(spec: DomainSpec, metric: str, value: float, bound: float) -> bool:
    return value >= bound if spec.higher_is_better(metric) else value <= bound


def gate_failures(spec: DomainSpec, metrics: dict[str, float], baseline: dict[str, float]) -> list[str]:
    """Every gate the candidate fails and whether it is worse than the baseline, with the numbers."""
    failures = []
    for metric, bound in spec.gates.items():
        value = metrics.get(metric, float("nan"))
        if math.isnan(value) or not _within(spec, metric, value, bound):
            op = ">=" if spec.higher_is_better(metric) else "<="
            failures.append(f"gate {metric} {op} {bound}: got {value:.4f}")
    primary = spec.primary_metric
    if not _within(spec, primary, metrics[primary], baseline[primary]):
        failures.append(f"worse than the baseline on {primary}: {metrics[primary]:.4f} vs {baseline[primary]:.4f}")
    return failures


def evaluate_holdout(spec: DomainSpec, data: PreparedData, trained: TrainResult, opt: OptimiseResult) -> Evaluation:
    baseline_threshold = decision_threshold(spec, data, trained.baseline)
    y = data.holdout.y
    smoothing, frame = spec.smoothing_config(), data.holdout.frame  # as the served model scores
    scores = smoothed(smoothing, opt.candidate.predict(data.holdout.X), frame)
    baseline_scores = smoothed(smoothing, trained.baseline.predict(data.holdout.X), frame)
    return Evaluation(
        metrics=evaluate(spec, y, scores, holdout_context(spec, data, opt.threshold)),
        baseline_metrics=evaluate(spec, y, baseline_scores, holdout_context(spec, data, baseline_threshold)),
        threshold=opt.threshold,
        baseline_threshold=baseline_threshold,
        scores=scores,
        baseline_scores=baseline_scores,
    )


LATENCY_ROWS = 1000  # holdout rows timed: each alone, then as one batch


def scoring_latency(scorer: Scorer, records: list[dict[str, Any]], repeats: int = 5) -> dict[str, float]:
    """The bundle's scoring cost, as the service calls it (``Scorer.scores``, recipe and encoding
    included, no HTTP): single rows one at a time, by the CPU time of this thread as the optimiser
    times a model (``lepton.core.timing``: p50 and p99, ms; the wall-clock figures and the blocks'
    spread beside them), and the rows as one batch (rows per second, best of ``repeats``)."""
    columns = list(records[0]) if records else []
    rows = [{name: [record[name]] for name in columns} for record in records]
    single = time_calls(lambda i: scorer.scores(rows[i % len(rows)]), len(rows), warmup=20)
    batch = {name: [record[name] for record in records] for name in columns}
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        scorer.scores(batch)
        best = min(best, time.perf_counter() - start)
    return {
        "latency_p50_ms": single.cpu_p50_ms,
        "latency_p99_ms": single.cpu_p99_ms,
        "latency_wall_p50_ms": single.wall_p50_ms,
        "latency_wall_p99_ms": single.wall_p99_ms,
        "latency_spread": single.spread,
        "batch_rows_per_s": len(records) / best,
    }


def latency_failures(spec: DomainSpec, latency: dict[str, float]) -> list[str]:
    """The latency gate on the bundle's measured single-row cost: a failure with both figures,
    or, when the measurement was not steady enough to decide on, a reason that says so."""
    if latency["latency_spread"] > MAX_SPREAD:
        return [
            f"latency not decided: the quietest blocks of single-row timings disagreed by "
            f"{latency['latency_spread']:.0%} after {ATTEMPTS} measurements (at most {MAX_SPREAD:.0%} to decide); "
            "not promoted until it can be measured"
        ]
    if latency["latency_p50_ms"] > spec.latency_budget_ms:
        return [
            f"latency budget {spec.latency_budget_ms:g} ms: single-row p50 {latency['latency_p50_ms']:.2f} ms "
            f"of CPU time (wall p50 {latency['latency_wall_p50_ms']:.2f} ms)"
        ]
    return []


def calibration_metrics(spec: DomainSpec, data: PreparedData, opt: OptimiseResult) -> dict[str, float]:
    """Before and after calibration: out of fold on validation (every method tried), and on
    the holdout the raw scores' Brier and calibration error (the calibrated ones are the
    run's ``brier`` and ``calibration_error``)."""
    if opt.calibration is None:
        return {}
    out = opt.calibration.metrics()
    if opt.candidate.calibration is not None:
        from sklearn.metrics import brier_score_loss

        from lepton.tasks.metrics import calibration_error

        raw = opt.candidate.raw_predict(data.holdout.X)
        out["brier_uncalibrated"] = float(brier_score_loss(data.holdout.y, raw))
        out["calibration_error_uncalibrated"] = calibration_error(data.holdout.y, raw)
    return out


@dataclass(frozen=True)
class ChampionScores:
    """The current champion scored on this run's holdout (``scores`` None: compared on gates only)."""

    version: str | None
    scores: np.ndarray | None = None
    threshold: float = 0.5
    note: str | None = None
    normal: int | None = None  # multiclass: the normal class's index when it decides by the alarm rule


def champion_scores(spec: DomainSpec, data: PreparedData) -> ChampionScores:
    """Score the current champion on this run's holdout, from its own bundle with the same
    ``Scorer`` its pyfunc wraps, straight from the holdout frame (large holdouts skip the pandas
    round trip of pyfunc's schema checks)."""
    version = tracking.alias_version(spec.model_name, tracking.CHAMPION)
    if version is None:
        return ChampionScores(None)
    try:
        with tracking.scratch_dir() as tmp:
            scorer = Scorer.from_dir(tracking.download_bundle(spec.model_name, version, Path(tmp)))
        scores = scorer.scores(data.holdout.frame)
    except Exception as exc:  # an unloadable champion must not block a good model
        note = f"champion v{version} cannot score this holdout ({exc.__class__.__name__}: {exc})"
        return ChampionScores(version, note=note)
    if spec.task != "regression" and scorer.meta.get("classes") != [str(c) for c in data.classes]:
        return ChampionScores(version, note=f"champion v{version} predicts other classes; compared on gates only")
    threshold = scorer.meta.get("threshold")
    threshold = 0.5 if threshold is None else float(threshold)
    return ChampionScores(version, scores, threshold, normal=scorer.meta.get("alarm_normal"))


def compare_with_champion(
    spec: DomainSpec, data: PreparedData, evaluation: Evaluation, champion: ChampionScores
) -> Comparison | None:
    if champion.scores is None:
        return None
    groups = data.holdout.frame[spec.group_column].to_numpy() if spec.group_column else None
    return paired_bootstrap(
        spec,
        data.holdout.y,
        evaluation.scores,
        champion.scores,
        groups,
        evaluation.threshold,
        champion.threshold,
        normal=alarm_normal(spec, data.classes),
        champion_normal=champion.normal,
    )


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
        "rows_train": data.train.rows,
        "rows_valid": data.valid.rows,
        "rows_holdout": data.holdout.rows,
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
        },  # the baseline's metrics are on its own run, nested under this one
    )
    tracking.log_metrics(run_id, calibration_metrics(spec, data, opt))
    tracking.log_params(run_id, {"calibration": opt.calibration.method if opt.calibration else "none"})
    _log_trials(experiment, run_id, spec, opt, common)
    _log_plots(run_id, spec, data, candidate, evaluation)

    baseline = {**common, tracking.Tag.ROLE: "baseline"}
    with tracking.recorded_run(experiment, f"{spec.name}-baseline", baseline, parent_run_id=run_id) as base_id:
        threshold = {"threshold": round(evaluation.baseline_threshold, 6)} if spec.task == "binary" else {}
        tracking.log_params(base_id, {"family": "linear", **trained.baseline.params, **threshold})
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
            version, latency = _register(spec, data, opt, evaluation, run_id, reference, key)
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
        reasons, promoted = list(failures), not failures
        if comparison is not None:
            reasons.append(comparison.describe(spec.primary_metric, spec.promotion.level))
            promoted = promoted and comparison.p_value < spec.promotion.level
        if champion.version == version:
            promoted, reasons = True, [f"v{version} is already the champion (a re-run with the same inputs)"]
        elif promoted:
            reasons.insert(0, "passed every gate")
        if champion.note:
            reasons.append(champion.note)
        decision = "; ".join(reasons)
        tracking.set_alias(spec.model_name, tracking.CHAMPION if promoted else tracking.CHALLENGER, version)
        if promoted and tracking.alias_version(spec.model_name, tracking.CHALLENGER) == version:
            tracking.delete_alias(spec.model_name, tracking.CHALLENGER)  # one version, one role
        tracking.set_version_tags(spec.model_name, version, {tracking.Tag.DECISION: decision})  # the decision is done
        tracking.describe_version(spec.model_name, version, version_description(spec, version, promoted, reasons))
    tags = {tracking.Tag.PROMOTED: str(promoted), tracking.Tag.VERSION: version, tracking.Tag.DECISION: decision}
    tags[tracking.NOTE] = f"{version_description(spec, version, promoted, reasons)}\n\nChosen: {opt.reason}"
    if resumed:
        tags[tracking.Tag.RESUMED_VERSION] = version  # registered by an earlier run with the same inputs
    tracking.set_tags(run_id, tags)
    if comparison is not None:
        tracking.log_metrics(run_id, {"champion_delta": comparison.delta, "champion_p_value": comparison.p_value})
    return Deployment(
        run_id=run_id,
        model_name=spec.model_name,
        version=version,
        promoted=promoted,
        champion_version=version if promoted else champion.version,
        reasons=tuple(reasons),
        reference=reference,
    )


def registered_latency(spec: DomainSpec, version: str, data: PreparedData) -> dict[str, float]:
    """A registered version's bundle, downloaded and timed as at registration."""
    with tracking.scratch_dir() as tmp:
        scorer = Scorer.from_dir(tracking.download_bundle(spec.model_name, version, Path(tmp)))
    return scoring_latency(scorer, input_records(spec, data.holdout.frame.head(LATENCY_ROWS)))


def _register(
    spec: DomainSpec,
    data: PreparedData,
    opt: OptimiseResult,
    evaluation: Evaluation,
    run_id: str,
    reference: dict[str, Any],
    key: str,
) -> tuple[str, dict[str, float]]:
    """Log the model bundle to the run and register it as a new version tagged with the run key;
    the version and the bundle's measured scoring latency."""
    candidate = opt.candidate
    meta = {
        "domain": spec.name,
        "task": spec.task,
        "classes": [str(c) for c in data.classes],
        "threshold": evaluation.threshold,
        "alarm_normal": alarm_normal(spec, data.classes),  # multiclass decisions by the alarm rule
        "primary_metric": spec.primary_metric,
        "inputs": [c.name for c in spec.model_inputs],
        "recipe": spec.recipe_config(),
        "smoothing": spec.smoothing_config(),
        "calibration": candidate.calibration,
    }
    example = input_frame(spec, data.holdout.frame.head(5))
    with tracking.scratch_dir() as tmp:
        bundle = write_bundle(
            Path(tmp) / "bundle",
            meta=meta,
            encoder=data.encoder,
            family=candidate.family,
            payload=candidate.payload,
            reference=reference,
        )
        latency = scoring_latency(Scorer.from_dir(bundle), input_records(spec, data.holdout.frame.head(LATENCY_ROWS)))
        tracking.log_metrics(run_id, latency)
        model_uri = tracking.log_model(run_id, bundle, example, signature(spec), REQUIREMENTS)
    tags = {
        tracking.Tag.RUN_ID: run_id,
        tracking.Tag.RUN_KEY: key,
        tracking.Tag.DATA_FINGERPRINT: data.fingerprint,
        tracking.Tag.SPEC_HASH: spec.spec_hash(),
        tracking.Tag.CODE: code_identity().key,
        tracking.Tag.GIT_COMMIT: tracking.git_commit(),
        spec.primary_metric: f"{evaluation.metrics[spec.primary_metric]:.6f}",
    }
    version = tracking.register(model_uri, spec.model_name, run_id, tags)
    tracking.describe_model(spec.model_name, model_description(spec))
    return version, latency


def model_description(spec: DomainSpec) -> str:
    """The registered model's description, from its spec: what it predicts and how it is judged."""
    gates = ", ".join(f"{m} {'>=' if spec.higher_is_better(m) else '<='} {b:g}" for m, b in spec.gates.items())
    lines = [
        f"**{spec.description or spec.name}**",
        "",
        f"A {spec.task} model of `{spec.target}` ({len(spec.model_inputs)} input columns), trained by Lepton. "
        f"Judged on {spec.primary_metric} on the holdout; promoted to `champion` only when it passes "
        f"every gate ({gates or 'none'}), stays within {spec.latency_budget_ms:g} ms a row, and beats the "
        f"current champion by a paired bootstrap test at the {spec.promotion.level:g} level.",
    ]
    return "\n".join(lines)


def version_description(spec: DomainSpec, version: str, promoted: bool, reasons: list[str]) -> str:
    """A version's description: the promotion decision in words, first what was decided."""
    head = f"Champion: v{version} serves {spec.name}." if promoted else f"Not promoted: v{version} stays a challenger."
    return "\n".join([head, "", *(f"- {reason}" for reason in reasons)])


@task(name="deploy", cache_policy=NO_CACHE)
def deploy_task(
    spec: DomainSpec,
    data: PreparedData,
    trained: TrainResult,
    opt: OptimiseResult,
    settings: Settings,
    trials: int,
    run_id: str,
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
    Returns:
        (Deployment, Evaluation): the registered version and whether it became champion.
    """
    tracking.configure(settings)
    evaluation = evaluate_holdout(spec, data, trained, opt)
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
