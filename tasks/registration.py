"""Registration: the candidate written as a safe bundle, logged to its run and registered as a
new version of the domain's model, and a promotion decision applied to the registry.

- ``bundle_meta``: what the bundle says about its model (``lepton.core.scoring.BundleMeta``).
- ``register``: the bundle logged with its signature and input example, timed as the service
  calls it, and registered with the run key a re-run finds it by.
- ``apply_decision``: the aliases moved as ``lepton.tasks.promotion.decide`` said (one version,
  one role), and the version's tags and description written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lepton.core import tracking
from lepton.core.identity import code_identity
from lepton.core.inputs import input_frame, input_records, signature
from lepton.core.scoring import BundleMeta, Scorer, write_bundle
from lepton.domains.spec import DomainSpec
from lepton.tasks.estimate import holdout_check
from lepton.tasks.evaluation import LATENCY_ROWS, Evaluation, scoring_latency
from lepton.tasks.optimise import OptimiseResult
from lepton.tasks.preprocess import PreparedData
from lepton.tasks.promotion import Decision, version_description
from lepton.tasks.train import alarm_normal

REQUIREMENTS = ["mlflow", "numpy", "pandas", "xgboost", "polars"]


def bundle_meta(spec: DomainSpec, data: PreparedData, opt: OptimiseResult, evaluation: Evaluation) -> BundleMeta:
    """The candidate's bundle metadata: its decisions as evaluated, its inputs, what runs around
    it, and how well the estimate without labels did on its holdout."""
    meta = BundleMeta(
        domain=spec.name,
        task=spec.task,
        family=opt.candidate.family,
        classes=tuple(str(c) for c in data.classes),
        threshold=evaluation.threshold,
        alarm_normal=alarm_normal(spec, data.classes),  # multiclass decisions by the alarm rule
        primary_metric=spec.primary_metric,
        inputs=tuple(c.name for c in spec.model_inputs),
        recipe=spec.recipe_config(),
        smoothing=spec.smoothing_config(),
        calibration=opt.candidate.calibration,
        estimation_map=opt.estimation_map,
        estimation_spread=opt.estimation_spread,
    )
    return dataclasses.replace(meta, estimation_check=holdout_check(spec, meta, evaluation.scores, data.holdout.y))


def registered_latency(spec: DomainSpec, version: str, data: PreparedData) -> dict[str, float]:
    """A registered version's bundle, downloaded and timed as at registration."""
    with tracking.scratch_dir() as tmp:
        scorer = Scorer.from_dir(tracking.download_bundle(spec.model_name, version, Path(tmp)))
    return scoring_latency(scorer, input_records(spec, data.holdout.frame.head(LATENCY_ROWS)))


def register(
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
    example = input_frame(spec, data.holdout.frame.head(5))
    with tracking.scratch_dir() as tmp:
        bundle = write_bundle(
            Path(tmp) / "bundle",
            meta=bundle_meta(spec, data, opt, evaluation),
            encoder=data.encoder,
            payload=opt.candidate.payload,
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


def apply_decision(spec: DomainSpec, version: str, decision: Decision) -> None:
    """Move ``champion`` (or ``challenger``) to ``version`` as decided, and record the decision
    on the version: its tag last, so a version with a decision tag is one whose alias moved."""
    tracking.set_alias(spec.model_name, tracking.CHAMPION if decision.promoted else tracking.CHALLENGER, version)
    if decision.promoted and tracking.alias_version(spec.model_name, tracking.CHALLENGER) == version:
        tracking.delete_alias(spec.model_name, tracking.CHALLENGER)  # one version, one role
    tracking.set_version_tags(spec.model_name, version, {tracking.Tag.DECISION: decision.summary})
    tracking.describe_version(spec.model_name, version, version_description(spec, version, decision))


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
