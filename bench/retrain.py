"""The retrain decision: ``on_drift`` against ``on_estimated_loss`` on the same batches.

    python bench/retrain.py [--domains finance medical] [--batches 20] [--rows 1000]

Per domain, ``lepton run DOMAIN`` in a fresh LEPTON_HOME registers a champion and measures what a
run costs; the batches are drawn as ``bench/estimate.py`` draws them (the holdout's real rows and
labels, distinct rows from a fresh random half for each batch, by the scenario's weights:
``control``, ``harmful``, ``harmless``, ``label``). Each batch goes through
what the monitor does: the drift report against the champion's stored reference, the estimate
without labels, and ``lepton.tasks.retrain.decide`` under each policy, with the champion's own
run as the retrain history and ``--per-day`` decisions a day (the batch's size by default, as the
monitor assumes when nothing is logged) over the spec's horizon.

Scored against the labels, by the decision's own loss model: a batch's **loss if kept** is what
the champion saves a decision over deciding without it (flag all or none; the realised costs on
its whole holdout, the spec's cost model at its threshold) × the share of its skill the realised
fall took (Gini, for ROC AUC: the batch's labels against the holdout's) × the decisions at
stake, in USD where the spec gives a rate; signed (a batch the champion ranks better than its
holdout is a gain kept). A retrained batch costs a retrain (the measured run) and is taken to
win back a loss (a gain stays); a kept one costs its loss. The loss carries the standard error
of the scenario's mean over its batches, so a total says how sure it is.
Reported per scenario and policy: the batches retrained and the total. Writes
``bench/results/retrain.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ("on_drift", "on_estimated_loss")


@dataclass
class Setup:
    """A domain's registered champion and what the decision and the scoring read."""

    spec: Any
    scorer: Any
    reference: dict
    holdout: dict  # the version's holdout metrics
    history: Any  # lepton.tasks.retrain.RetrainHistory
    at_training: Any  # the estimate the champion made of its holdout at training
    frame: Any  # the holdout's rows
    scores: np.ndarray
    y: np.ndarray
    threshold: float
    calibration: str
    through: dict | None  # the estimate's own calibration map (``champion_calibration``)
    family: str


def _setup(domain: str, home: Path, trials: int) -> Setup:
    from bench.harness import champion_home
    from lepton.core import tracking
    from lepton.core.inputs import input_frame
    from lepton.core.scoring import Scorer, read_reference
    from lepton.domains import get_spec
    from lepton.tasks.estimate import at_training, champion_calibration
    from lepton.tasks.monitor import PREDICTION
    from lepton.tasks.preprocess import load_domain_data, prepare
    from lepton.tasks.watch import retrain_history

    run = champion_home(domain, home, trials)
    spec = get_spec(domain)
    bundle = tracking.download_bundle(spec.model_name, run["version"], home / f"{domain}-bundle")
    scorer, reference = Scorer.from_dir(bundle), read_reference(bundle)
    data = prepare(spec, *load_domain_data(spec))
    threshold = 0.5 if scorer.meta.threshold is None else scorer.meta.threshold
    calibration, through = champion_calibration(scorer.meta)
    return Setup(
        spec=spec, scorer=scorer, reference=reference,
        holdout=tracking.version_run_metrics(spec.model_name, run["version"]),
        history=retrain_history(spec),
        at_training=at_training(spec, scorer.meta, reference.get(PREDICTION)),
        frame=data.holdout.frame, scores=np.asarray(scorer.scores(input_frame(spec, data.holdout.frame))),
        y=data.holdout.y, threshold=threshold, calibration=calibration, through=through, family=run["family"],
    )  # fmt: skip


def _scenario(setup: Setup, scenario: str, batches: int, rows: int, per_day: float, rng) -> dict:
    """Each batch through the monitor's steps: drift, the estimate, each policy's decision; and
    its realised metric."""
    from bench.estimate import _weights
    from lepton.domains import recipes
    from lepton.tasks.estimate import estimate
    from lepton.tasks.metrics import primary_score
    from lepton.tasks.monitor import drift_report
    from lepton.tasks.retrain import Traffic, decide
    from lepton.tasks.watch import _monitored_output

    spec = setup.spec
    inputs = [c.name for c in spec.feature_columns]
    sign = 1.0 if spec.higher_is_better(spec.primary_metric) else -1.0
    w = _weights(scenario, spec, setup.scores, setup.y, setup.frame.select(inputs), setup.threshold)
    realised, drifted, retrained = [], 0, dict.fromkeys(POLICIES, 0)
    n = len(setup.y)
    rows = min(rows, n // 8)  # a quarter of a half, as ``bench/estimate.py`` draws them
    for b in range(batches):
        # distinct rows from a fresh random half for each batch: batches resampled from one pool
        # all carry its labels' chance deviation, and their spread would not show it
        half = rng.permutation(n)[: n // 2]
        picked = half[rng.choice(len(half), rows, replace=False, p=w[half] / w[half].sum())]
        s = setup.scores[picked]
        # the rows as the monitor reads them (a rolling recipe needs its group and time columns)
        frame = recipes.apply(spec.recipe_config(), setup.frame[picked].select([c.name for c in spec.model_inputs]))
        report = drift_report(spec, setup.reference, frame, _monitored_output(spec, setup.scorer, s))
        drifted += report.detected
        estimated = estimate(
            spec, s, setup.threshold, setup.calibration, seed=b, drawn_through=setup.through,
            spread=setup.scorer.meta.estimation_spread,
        )  # fmt: skip
        realised.append(sign * primary_score(spec, setup.y[picked], s, setup.threshold))
        for policy in POLICIES:
            decision = decide(
                spec.model_copy(update={"retrain": policy}), key=f"{scenario}-{b}", detected=report.detected,
                drifted=report.drifted, estimated=estimated, holdout=setup.holdout, performance={},
                history=setup.history, traffic=Traffic(per_day, "the bench"), at_training=setup.at_training,
            )  # fmt: skip
            retrained[policy] += decision.recommended
    return {"realised": realised, "drifted": drifted, "retrained": retrained}


def _score(setup: Setup, seen: dict, batches: int, decisions: float) -> dict:
    """A scenario's systematic loss (its mean realised metric against the holdout: the noise of
    one batch is not something a retrain wins back), and each policy's total."""
    from lepton.tasks.metrics import expected_cost
    from lepton.tasks.retrain import _skill_lost

    spec, y = setup.spec, setup.y
    metric, before = spec.primary_metric, setup.holdout[spec.primary_metric]
    mean = float(np.mean(seen["realised"]))
    error = float(np.std(seen["realised"], ddof=1) / np.sqrt(batches))
    higher = spec.higher_is_better(metric)
    hurts = (before - mean if higher else mean - before) > 2 * error
    worth = 0.0
    if spec.task == "binary" and spec.cost is not None:  # the champion's saving a decision on its holdout
        rate = float(np.mean(y))
        none = min(rate * spec.cost.false_negative, (1 - rate) * spec.cost.false_positive)
        worth = none - expected_cost(y, setup.scores >= setup.threshold, spec.cost)
    loss = worth * _skill_lost(metric, before, mean, higher) * decisions  # a batch's, in the cost unit
    # the loss's own uncertainty: the mean's standard error carried through (the loss is linear in it)
    loss_se = abs(
        worth * (_skill_lost(metric, before, mean + error, higher) - _skill_lost(metric, before, mean, higher))
    )
    loss_se *= decisions
    usd = spec.cost.usd_per_unit if spec.cost is not None and spec.cost.usd_per_unit else None
    price = setup.history.retrain_cost_usd or 0.0
    out = {"realised_mean": mean, "realised_se": error, "holdout": before, "hurts": bool(hurts),
           "drifted": seen["drifted"], "loss_per_batch": loss, "loss_per_batch_se": loss_se}  # fmt: skip
    for policy, count in seen["retrained"].items():
        kept = (batches - count) * loss + count * min(loss, 0.0)  # a retrain wins back a loss, not a gain
        out[f"{policy}_retrained"] = count
        out[f"{policy}_kept_loss"] = kept
        out[f"{policy}_kept_loss_se"] = (batches - count if loss > 0 else batches) * loss_se
        out[f"{policy}_retrain_usd"] = count * price
        out[f"{policy}_total_usd"] = kept * usd + count * price if usd else None
    return out


def domain_side(domain: str, home: Path, batches: int, rows: int, trials: int, per_day: float | None) -> dict:
    from bench.estimate import SCENARIOS

    setup = _setup(domain, home, trials)
    spec, rng = setup.spec, np.random.default_rng(0)
    usd = spec.cost.usd_per_unit if spec.cost is not None and spec.cost.usd_per_unit else None
    out: dict = {"family": setup.family, "retrain_cost_usd": setup.history.retrain_cost_usd, "usd_per_unit": usd,
                 "unit": spec.cost.unit if spec.cost else None, "scenarios": {}}  # fmt: skip
    for scenario in SCENARIOS:
        seen = _scenario(setup, scenario, batches, rows, per_day or rows, rng)
        out["scenarios"][scenario] = _score(setup, seen, batches, (per_day or rows) * spec.retrain_horizon_days)
    return out


def _print(domain: str, result: dict, batches: int) -> None:
    unit = "USD" if result["usd_per_unit"] else result["unit"]
    print(f"{domain} ({result['family']}; a retrain measured at ${result['retrain_cost_usd'] or 0:.4f}):", flush=True)
    for scenario, s in result["scenarios"].items():
        line = (
            f"  {scenario:<9} realised {s['realised_mean']:.4f} ± {s['realised_se']:.4f} (holdout {s['holdout']:.4f}"
            f"{', hurts' if s['hurts'] else ''}); drift in {s['drifted']:>2}/{batches}; retrained: "
            f"on_drift {s['on_drift_retrained']:>2}, on_estimated_loss {s['on_estimated_loss_retrained']:>2}"
        )
        for policy in POLICIES:
            total = s[f"{policy}_total_usd"]
            kept = (
                f"{s[f'{policy}_kept_loss']:,.1f} ± {s[f'{policy}_kept_loss_se']:,.1f} {unit} kept"
                if unit
                else "no cost model"
            )
            shown = f"${total:,.2f}" if total is not None else kept
            line += f"; {policy} {shown}"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", nargs="+", default=["finance", "medical"])
    parser.add_argument("--batches", type=int, default=20, help="batches per scenario")
    parser.add_argument("--rows", type=int, default=1000, help="rows per batch")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--per-day", type=float, default=None, help="decisions a day (default: a batch's rows)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.harness import machine, write

    report = {"benchmark": "retrain", "machine": machine(), "batches": args.batches, "rows": args.rows, "domains": {}}
    tmp = tempfile.TemporaryDirectory(prefix="lepton-retrain-")  # one home: MLflow is configured once a process
    for domain in args.domains:
        result = domain_side(domain, Path(tmp.name), args.batches, args.rows, args.trials, args.per_day)
        report["domains"][domain] = result
        write("retrain", report)
        _print(domain, result, args.batches)
    tmp.cleanup()


if __name__ == "__main__":
    main()
