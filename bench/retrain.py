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
holdout is a gain kept). What a retrain wins is **measured, not assumed**: per scenario, a real
``lepton run DOMAIN --append`` on one batch drawn from a random half of the holdout registers a
challenger, and the challenger and the champion score the same batches drawn, the same way, from
the other half (rows neither trained on; halves of whole runs where the spec has a group column);
their mean paired difference is the retrain's gain.
A retrained batch costs a retrain (the measured run) and, where the promotion gate promoted the
challenger, the loss at the champion's realised mean plus that gain; where the gate kept the
champion, the loss stays (the loss had the challenger been served anyway is kept beside). The
gate reads the table's holdout, which here holds the appended batch's rows: that leans it
towards the challenger, never away. Every loss carries its standard error (the scenario's
mean over its batches, and the gain's), so a total says how sure it is. Where the spec states
no USD rate (medical: relative harm), the totals cannot be added; the report says whether one
policy spends less on retrains and keeps no more harm than the other beyond twice its error,
which holds at any rate.
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
import polars as pl

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


def _scenario_weights(setup: Setup, scenario: str) -> np.ndarray:
    """Each holdout row's weight in the scenario's batches (``bench/estimate.py``'s)."""
    from bench.estimate import _weights

    inputs = [c.name for c in setup.spec.feature_columns]
    return _weights(scenario, setup.spec, setup.scores, setup.y, setup.frame.select(inputs), setup.threshold)


def _draw(pool: np.ndarray, w: np.ndarray, rows: int, rng) -> np.ndarray:
    """``rows`` distinct rows of ``pool`` by the scenario's weights."""
    return pool[rng.choice(len(pool), rows, replace=False, p=w[pool] / w[pool].sum())]


def _halves(setup: Setup, rng) -> tuple[np.ndarray, np.ndarray]:
    """Two random halves of the holdout's rows; by whole groups where the spec has a group column
    (TEP's runs: neighbouring rows of one run are near copies, and a challenger that trained on
    some of a run's rows would be scored on their neighbours)."""
    n, group = len(setup.y), setup.spec.group_column
    if group is None or group not in setup.frame.columns:
        order = rng.permutation(n)
        return order[: n // 2], order[n // 2 :]
    keys = setup.frame[group].cast(pl.String).fill_null("").to_numpy()
    levels = rng.permutation(np.unique(keys))
    first = np.isin(keys, levels[: len(levels) // 2])
    return np.flatnonzero(first), np.flatnonzero(~first)


def _retrain_gain(setup: Setup, scenario: str, home: Path, batches: int, rows: int, trials: int, rng) -> dict:
    """What a real retrain wins on the scenario: ``lepton run DOMAIN --append`` on one batch drawn
    from a random half of the holdout, then the challenger against the champion on ``batches``
    batches drawn from the other half, paired (the same rows, the same realised metric)."""
    from bench.harness import champion_home
    from lepton.core import tracking
    from lepton.core.inputs import input_frame
    from lepton.core.scoring import Scorer
    from lepton.tasks.metrics import primary_score

    spec, y = setup.spec, setup.y
    sign = 1.0 if spec.higher_is_better(spec.primary_metric) else -1.0
    w, n = _scenario_weights(setup, scenario), len(y)
    rows = min(rows, n // 8)
    appended, unseen = _halves(setup, rng)
    path = home / f"{spec.name}-{scenario}-batch.parquet"
    raw = [c.name for c in spec.columns if c.name in setup.frame.columns]  # the domain's schema, no recipe column
    setup.frame[_draw(appended, w, rows, rng)].select(raw).write_parquet(path)
    run = champion_home([spec.name, "--append", str(path)], home, trials)  # the real retrain, in the same home
    bundle = tracking.download_bundle(spec.model_name, run["version"], home / f"{spec.name}-{scenario}-challenger")
    challenger = Scorer.from_dir(bundle)
    scores = np.asarray(challenger.scores(input_frame(spec, setup.frame)))
    threshold = 0.5 if challenger.meta.threshold is None else challenger.meta.threshold
    gains = []
    for _ in range(batches):
        b = _draw(unseen, w, rows, rng)
        theirs = primary_score(spec, y[b], scores[b], threshold)
        gains.append(sign * (theirs - primary_score(spec, y[b], setup.scores[b], setup.threshold)))
    return {
        "gain": float(np.mean(gains)),
        "gain_se": float(np.std(gains, ddof=1) / np.sqrt(batches)),
        "version": run["version"],
        "family": run["family"],
        "promoted_by_gate": bool(run["promoted"]),
    }


def _scenario(setup: Setup, scenario: str, batches: int, rows: int, per_day: float, rng) -> dict:
    """Each batch through the monitor's steps: drift, the estimate, each policy's decision; and
    its realised metric."""
    from lepton.domains import recipes
    from lepton.tasks.estimate import estimate
    from lepton.tasks.metrics import primary_score
    from lepton.tasks.monitor import drift_report
    from lepton.tasks.retrain import Traffic, decide
    from lepton.tasks.watch import _monitored_output

    spec = setup.spec
    sign = 1.0 if spec.higher_is_better(spec.primary_metric) else -1.0
    w = _scenario_weights(setup, scenario)
    realised, drifted, retrained = [], 0, dict.fromkeys(POLICIES, 0)
    n = len(setup.y)
    rows = min(rows, n // 8)  # a quarter of a half, as ``bench/estimate.py`` draws them
    for b in range(batches):
        # distinct rows from a fresh random half for each batch: batches resampled from one pool
        # all carry its labels' chance deviation, and their spread would not show it
        picked = _draw(rng.permutation(n)[: n // 2], w, rows, rng)
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


def _score(setup: Setup, seen: dict, gain: dict, batches: int, decisions: float) -> dict:
    """A scenario's systematic loss (its mean realised metric against the holdout: the noise of
    one batch is not something a retrain wins back), the loss left after a retrain (that mean
    plus the measured gain), and each policy's total."""
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

    def loss(at: float) -> float:  # a batch's, in the cost unit, where the realised mean is ``at``
        return worth * _skill_lost(metric, before, at, higher) * decisions

    # each loss's uncertainty: its mean's standard error carried through (the loss is linear in it)
    kept, kept_se = loss(mean), abs(loss(mean + error) - loss(mean))
    # the retrain's gain reaches the traffic only where the gate promoted its challenger
    won, won_se = (gain["gain"], gain["gain_se"]) if gain["promoted_by_gate"] else (0.0, 0.0)
    after = loss(mean + won)
    after_se = abs(loss(mean + won + float(np.hypot(error, won_se))) - after)
    saved_se = abs(loss(mean + won_se) - loss(mean))
    usd = spec.cost.usd_per_unit if spec.cost is not None and spec.cost.usd_per_unit else None
    price = setup.history.retrain_cost_usd or 0.0
    out = {"realised_mean": mean, "realised_se": error, "holdout": before, "hurts": bool(hurts),
           "drifted": seen["drifted"], "loss_per_batch": kept, "loss_per_batch_se": kept_se,
           "retrain": gain, "loss_after_retrain": after, "loss_after_retrain_se": after_se,
           "loss_if_challenger_served": loss(mean + gain["gain"]),
           # what one retrain saves, and its error: the gain's alone (both losses share the mean)
           "saved_by_retrain": kept - after, "saved_by_retrain_se": saved_se}  # fmt: skip
    for policy, count in seen["retrained"].items():
        out[f"{policy}_retrained"] = count
        out[f"{policy}_kept_loss"] = (batches - count) * kept + count * after
        out[f"{policy}_kept_loss_se"] = (batches - count) * kept_se + count * after_se  # one scenario's: correlated
        out[f"{policy}_retrain_usd"] = count * price
        out[f"{policy}_total_usd"] = out[f"{policy}_kept_loss"] * usd + count * price if usd else None
    return out


def verdict(result: dict) -> str:
    """The two policies over all scenarios. They differ only on the batches one retrains and the
    other keeps: each such batch keeps what a retrain saved (nothing where the gate kept the
    champion), whose error is the measured gain's. ``on_estimated_loss`` costs less when it
    spends less on retrains and keeps no more loss beyond twice that error; without a USD rate
    that holds at any rate."""
    scenarios = list(result["scenarios"].values())
    count = {p: sum(s[f"{p}_retrained"] for s in scenarios) for p in POLICIES}
    spent = {p: sum(s[f"{p}_retrain_usd"] for s in scenarios) for p in POLICIES}
    fewer = [s["on_drift_retrained"] - s["on_estimated_loss_retrained"] for s in scenarios]
    more = sum(k * s["saved_by_retrain"] for k, s in zip(fewer, scenarios, strict=True))
    se = float(np.sqrt(sum((k * s["saved_by_retrain_se"]) ** 2 for k, s in zip(fewer, scenarios, strict=True))))
    usd = result["usd_per_unit"]
    unit = "USD" if usd else result["unit"] or "loss (no cost model: none priced)"
    scale = usd or 1.0
    shown = (
        f"on_estimated_loss retrains {count['on_estimated_loss']} times against {count['on_drift']} "
        f"(${spent['on_estimated_loss']:.4f} against ${spent['on_drift']:.4f}) and keeps "
        f"{more * scale:+,.2f} ± {se * scale:,.2f} {unit} more"
    )
    if spent["on_estimated_loss"] <= spent["on_drift"] and more <= 2 * se:
        return f"on_estimated_loss costs less{'' if usd else ' at any USD rate'} (within twice the error): {shown}"
    if more > 2 * se:
        return f"on_drift keeps less loss beyond twice the error: {shown}"
    return f"neither policy costs less: {shown}"


def domain_side(domain: str, home: Path, batches: int, rows: int, trials: int, per_day: float | None) -> dict:
    from bench.estimate import SCENARIOS

    setup = _setup(domain, home, trials)
    spec, rng = setup.spec, np.random.default_rng(0)
    usd = spec.cost.usd_per_unit if spec.cost is not None and spec.cost.usd_per_unit else None
    out: dict = {"family": setup.family, "retrain_cost_usd": setup.history.retrain_cost_usd, "usd_per_unit": usd,
                 "unit": spec.cost.unit if spec.cost else None, "scenarios": {}}  # fmt: skip
    for scenario in SCENARIOS:
        seen = _scenario(setup, scenario, batches, rows, per_day or rows, rng)
        gain = _retrain_gain(setup, scenario, home, batches, rows, trials, rng)
        decisions = (per_day or rows) * spec.retrain_horizon_days
        out["scenarios"][scenario] = _score(setup, seen, gain, batches, decisions)
    out["verdict"] = verdict(out)
    return out


def _print(domain: str, result: dict, batches: int) -> None:
    unit = "USD" if result["usd_per_unit"] else result["unit"]
    print(f"{domain} ({result['family']}; a retrain measured at ${result['retrain_cost_usd'] or 0:.4f}):", flush=True)
    for scenario, s in result["scenarios"].items():
        line = (
            f"  {scenario:<9} realised {s['realised_mean']:.4f} ± {s['realised_se']:.4f} (holdout {s['holdout']:.4f}"
            f"{', hurts' if s['hurts'] else ''}); drift in {s['drifted']:>2}/{batches}; retrained: "
            f"on_drift {s['on_drift_retrained']:>2}, on_estimated_loss {s['on_estimated_loss_retrained']:>2}; "
            f"a retrain wins {s['retrain']['gain']:+.4f} ± {s['retrain']['gain_se']:.4f}"
            f"{' (gate: promoted)' if s['retrain']['promoted_by_gate'] else ' (gate: kept the champion)'}"
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
    print(f"  {result['verdict']}", flush=True)


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
