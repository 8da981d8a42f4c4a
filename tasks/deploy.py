"""Deploy: register the candidate, gate it, and move the ``champion`` alias only if it passes.

``gate_failures`` is the pure decision; ``deploy_task`` is the MLflow edge around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from domains.spec import DomainSpec, Dtype
from lepton import tracking
from lepton.scoring import Scorer, smoothed, write_bundle
from lepton.settings import Settings
from tasks import plots
from tasks.metrics import evaluate
from tasks.monitor import reference_statistics
from tasks.optimise import OptimiseResult, decision_threshold
from tasks.preprocess import PreparedData
from tasks.train import TrainedModel, TrainResult, holdout_context

REQUIREMENTS = ["mlflow", "numpy", "pandas", "xgboost", "polars"]
TEXT_INPUTS = (Dtype.CATEGORY, Dtype.DATETIME)  # passed to the model as strings


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


def gate_failures(
    spec: DomainSpec, metrics: dict[str, float], baseline: dict[str, float], champion: float | None
) -> list[str]:
    """Every reason the candidate may not become champion, with the numbers (empty: promote)."""
    failures = []
    for metric, bound in spec.gates.items():
        value = metrics.get(metric, float("nan"))
        if math.isnan(value) or not _within(spec, metric, value, bound):
            op = ">=" if spec.higher_is_better(metric) else "<="
            failures.append(f"gate {metric} {op} {bound}: got {value:.4f}")
    primary = spec.primary_metric
    if not _within(spec, primary, metrics[primary], baseline[primary]):
        failures.append(f"worse than the baseline on {primary}: {metrics[primary]:.4f} vs {baseline[primary]:.4f}")
    if champion is not None and not _within(spec, primary, metrics[primary], champion):
        failures.append(f"worse than the champion on {primary}: {metrics[primary]:.4f} vs {champion:.4f}")
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


def input_frame(spec: DomainSpec, frame: pl.DataFrame, strict: bool = True):
    """The model's raw inputs (those ``frame`` has) as pandas: numbers as float64 (the
    signature's ``double``), categories and datetimes as text. Not ``strict``: a value that is
    not a number becomes missing, as a served model would treat it."""
    kind = {c.name: pl.String if c.dtype in TEXT_INPUTS else pl.Float64 for c in spec.model_inputs}
    cols = [pl.col(name).cast(dtype, strict=strict) for name, dtype in kind.items() if name in frame.columns]
    return frame.select(cols).to_pandas()


def input_records(spec: DomainSpec, frame: pl.DataFrame) -> list[dict[str, Any]]:
    """The model's raw inputs as JSON-ready rows, missing values as None: what a client sends
    to ``lepton serve``."""
    rows = input_frame(spec, frame).to_dict("records")
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


def signature(spec: DomainSpec):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema(
        [ColSpec("string" if c.dtype in TEXT_INPUTS else "double", c.name, required=False) for c in spec.model_inputs]
    )
    pred_type = "double" if spec.task == "regression" else "string"
    outputs = [ColSpec(pred_type, "prediction")] + ([] if spec.task == "regression" else [ColSpec("double", "score")])
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def champion_primary(spec: DomainSpec, data: PreparedData) -> tuple[str | None, float | None, str | None]:
    """Score the current champion on this run's holdout: (version, primary metric, note).

    The champion's own bundle is scored with the same ``Scorer`` its pyfunc wraps, straight from
    the holdout frame, so large holdouts skip the pandas round trip of pyfunc's schema checks.
    """
    version = tracking.alias_version(spec.model_name, tracking.CHAMPION)
    if version is None:
        return None, None, None
    try:
        with tracking.scratch_dir() as tmp:
            scorer = Scorer.from_dir(tracking.download_bundle(spec.model_name, version, Path(tmp)))
        scores = scorer.scores(data.holdout.frame)
    except Exception as exc:  # an unloadable champion must not block a good model
        return version, None, f"champion v{version} cannot score this holdout ({exc.__class__.__name__}: {exc})"
    if spec.task != "regression" and scorer.meta.get("classes") != [str(c) for c in data.classes]:
        return version, None, f"champion v{version} predicts other classes; compared on gates only"
    metrics = evaluate(spec, data.holdout.y, scores, holdout_context(spec, data))
    return version, metrics[spec.primary_metric], None


def _log_plots(run_id: str, spec: DomainSpec, data: PreparedData, model: TrainedModel, evaluation: Evaluation) -> None:
    y, scores = data.holdout.y, evaluation.scores
    if spec.task == "binary":
        fig = plots.roc_pr_figure(
            y, {f"candidate {model.family}": scores, "baseline linear": evaluation.baseline_scores}
        )
        tracking.log_figure(run_id, fig, "plots/roc_pr.png")
    elif spec.task == "multiclass":
        fig = plots.confusion_figure(y, scores.argmax(axis=1), [str(c) for c in data.classes])
        tracking.log_figure(run_id, fig, "plots/confusion_matrix.png")
    else:
        fig = plots.residual_figure(y, scores)
        tracking.log_figure(run_id, fig, "plots/predicted_vs_actual.png")
    plots.close(fig)
    fig = plots.importance_figure(data.feature_names, model.predictor.importance())
    tracking.log_figure(run_id, fig, "plots/feature_importance.png")
    plots.close(fig)


def record_run(
    spec: DomainSpec,
    data: PreparedData,
    trained: TrainResult,
    opt: OptimiseResult,
    evaluation: Evaluation,
    settings: Settings,
    trials: int,
) -> str:
    """Create the pipeline run and its baseline child run; log params, metrics, plots, trials."""
    experiment = tracking.experiment_id(spec.model_name, settings)
    common = {
        "lepton.domain": spec.name,
        "lepton.data_fingerprint": data.fingerprint,
        "lepton.spec_hash": spec.spec_hash(),
        "lepton.git_commit": tracking.git_commit(),
    }
    run_id = tracking.start_run(experiment, f"{spec.name}-pipeline", {**common, "lepton.role": "candidate"})
    candidate = opt.candidate
    tracking.log_params(
        run_id,
        {
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
            **{f"model.{k}": v for k, v in candidate.params.items()},
        },
    )
    if spec.task == "binary":
        tracking.log_params(run_id, {"threshold": round(evaluation.threshold, 6)})
    tracking.set_tags(run_id, {"lepton.choice": opt.reason, "lepton.device": candidate.device})
    tracking.log_metrics(
        run_id,
        {
            **evaluation.metrics,
            f"valid_{spec.primary_metric}": abs(candidate.valid_score),
            **{f"baseline_{k}": v for k, v in evaluation.baseline_metrics.items()},
        },
    )
    tracking.log_dict(run_id, [t.__dict__ for t in opt.trials], "trials.json")
    _log_plots(run_id, spec, data, candidate, evaluation)

    base_id = tracking.start_run(
        experiment, f"{spec.name}-baseline", {**common, "lepton.role": "baseline"}, parent_run_id=run_id
    )
    threshold = {"threshold": round(evaluation.baseline_threshold, 6)} if spec.task == "binary" else {}
    tracking.log_params(base_id, {"family": "linear", **trained.baseline.params, **threshold})
    tracking.log_metrics(
        base_id, {**evaluation.baseline_metrics, f"valid_{spec.primary_metric}": abs(trained.baseline.valid_score)}
    )
    tracking.end_run(base_id)
    return run_id


def register_and_gate(
    spec: DomainSpec, data: PreparedData, opt: OptimiseResult, evaluation: Evaluation, run_id: str
) -> Deployment:
    """Log the model, register a version, and move ``champion`` only if every gate passes."""
    candidate = opt.candidate
    reference = reference_statistics(data.train.frame, spec.with_features())
    meta = {
        "domain": spec.name,
        "task": spec.task,
        "classes": [str(c) for c in data.classes],
        "threshold": evaluation.threshold,
        "primary_metric": spec.primary_metric,
        "inputs": [c.name for c in spec.model_inputs],
        "recipe": spec.recipe_config(),
        "smoothing": spec.smoothing_config(),
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
        tracking.log_dict(run_id, reference, "reference_statistics.json")
        model_uri = tracking.log_model(run_id, bundle, example, signature(spec), REQUIREMENTS)

    champion_version, champion_value, note = champion_primary(spec, data)
    failures = gate_failures(spec, evaluation.metrics, evaluation.baseline_metrics, champion_value)
    tags = {
        "lepton.run_id": run_id,
        "lepton.data_fingerprint": data.fingerprint,
        "lepton.spec_hash": spec.spec_hash(),
        "lepton.git_commit": tracking.git_commit(),
        spec.primary_metric: f"{evaluation.metrics[spec.primary_metric]:.6f}",
    }
    version = tracking.register(model_uri, spec.model_name, run_id, tags)
    promoted = not failures
    reasons = tuple(failures) or ("passed every gate",)
    if note:
        reasons += (note,)
    tracking.set_version_tags(spec.model_name, version, {"lepton.decision": "; ".join(reasons)})
    tracking.set_alias(spec.model_name, tracking.CHAMPION if promoted else tracking.CHALLENGER, version)
    tracking.set_tags(
        run_id, {"lepton.promoted": str(promoted), "lepton.version": version, "lepton.decision": "; ".join(reasons)}
    )
    return Deployment(
        run_id=run_id,
        model_name=spec.model_name,
        version=version,
        promoted=promoted,
        champion_version=version if promoted else champion_version,
        reasons=reasons,
        reference=reference,
    )


@task(name="deploy", cache_policy=NO_CACHE)
def deploy_task(
    spec: DomainSpec, data: PreparedData, trained: TrainResult, opt: OptimiseResult, settings: Settings, trials: int
) -> tuple[Deployment, Evaluation]:
    """Evaluate on the holdout, record the runs, register, and gate the promotion.

    Args:
        spec: the domain (gates, metrics).
        data: prepared splits; the holdout is used here for the first time.
        trained: the baseline the candidate must match.
        opt: the candidate and its threshold.
        settings: where MLflow keeps runs and artifacts.
        trials: the trial budget (logged).
    Returns:
        (Deployment, Evaluation): the registered version and whether it became champion.
    """
    tracking.configure(settings)
    evaluation = evaluate_holdout(spec, data, trained, opt)
    run_id = record_run(spec, data, trained, opt, evaluation, settings, trials)
    try:
        return register_and_gate(spec, data, opt, evaluation, run_id), evaluation
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
