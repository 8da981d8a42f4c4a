"""Model quality over split seeds: Lepton's choice with and without the ensemble, against
scikit-learn's HistGradientBoosting default, on the three domains and public tables.

    python bench/quality.py [--tables finance medical manufacturing credit-status ...]
                            [--seeds 5] [--trials 8]

One seeded search per table and split seed, in this process (no Dask, trials one at a time), on
the data Lepton's own preprocess stage prepares (its reader, inference, recipes and split). From
the same search two choices are made (``lepton.tasks.optimise._choose``): with the ensemble
candidate (``lepton.tasks.ensemble``) and without it, so the difference is the ensemble's alone.
The chosen model is refitted on train + validation where the domain says so, as the pipeline
does, and scored on the holdout with the domain's metric (smoothed where it serves smoothed).
HistGradientBoosting's default is fitted on the same training and validation rows (it needs no
validation split of its own) and scored on the same holdout rows, through the same smoothing;
its multiclass decisions are arg-max (Lepton's alarm rule is set on validation scores).

Seeds: a stratified or random split is drawn again per seed (finance and the public tables);
a time or given split has one holdout (medical, manufacturing), so there the spread is a
bootstrap of the holdout rows (paired: both models on the same resamples). Reports mean and sd
of each figure over seeds, and the paired difference Lepton - HGB with its sd.

Also: each choice's single-row latency (the model alone, CPU time) and HGB's (``predict_proba``
on one row, median of 100), and the search's seconds. Writes ``bench/results/quality.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DOMAINS = ("finance", "medical", "manufacturing")
PUBLIC = ("credit-status", "credit-default", "biopsy", "concrete", "hpc-jobs", "loans-rate")
BOOTSTRAP = 200


def table_spec(name: str, workdir: Path):
    """The spec and data of a domain, or of a public table exported as a user's file and read
    the way ``lepton run --data`` reads it (leaks the sentinel names left out, as a user would)."""
    from lepton.domains import get_spec
    from lepton.tasks.preprocess import load_domain_data

    if name in DOMAINS:
        spec = get_spec(name)
        return spec, load_domain_data
    import real_tables

    from lepton.core.tables import load
    from lepton.domains.infer import Hints, infer_spec

    table = real_tables.TABLES[name]
    path = real_tables.export(table, workdir)
    flags = dict(zip(table.flags[::2], table.flags[1::2], strict=True))
    dropped = tuple(c for c in flags.get("--drop-cols", "").split(",") if c) + table.leaks
    hints = Hints(target=table.target, template=flags.get("--template"), drop_cols=dropped)
    loaded = load(path)
    spec = infer_spec(loaded.frame, hints, loaded.path).spec
    return spec, lambda s: (loaded.frame, None)


def seeded(spec, seed: int, refit: bool = False):
    """``spec`` with split seed ``seed`` (and ``refit`` on, when asked: the chosen model fitted
    again on train + validation before the holdout)."""
    split = {"seed": seed, **({"refit": True} if refit else {})}
    return spec.model_copy(update={"split": spec.split.model_copy(update=split)})


def holdout_scores(spec, data, model) -> np.ndarray:
    from lepton.core.scoring import smoothed

    return smoothed(spec.smoothing_config(), model.predict(data.holdout.X), data.holdout.frame)


def hgb(spec, data) -> tuple[np.ndarray, float]:
    """HistGradientBoosting's default on train + validation: its holdout scores (smoothed as
    Lepton's are) and its single-row latency in ms."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from lepton.core.scoring import smoothed

    X = np.concatenate([data.train.X, data.valid.X])
    y = np.concatenate([data.train.y, data.valid.y])
    if spec.task == "regression":
        model = HistGradientBoostingRegressor(random_state=0).fit(X, y)
        scores, predict = model.predict(data.holdout.X), model.predict
    else:
        model = HistGradientBoostingClassifier(random_state=0).fit(X, y)
        proba = np.zeros((data.holdout.rows, len(data.classes)))
        proba[:, model.classes_.astype(int)] = model.predict_proba(data.holdout.X)
        scores, predict = (proba[:, 1] if spec.task == "binary" else proba), model.predict_proba
    times = []
    for i in range(110):
        row = data.holdout.X[i % data.holdout.rows : i % data.holdout.rows + 1]
        tick = time.thread_time()
        predict(row)
        times.append(time.thread_time() - tick)
    return smoothed(spec.smoothing_config(), scores, data.holdout.frame), float(np.median(times[10:]) * 1000)


def metric(spec, data, scores: np.ndarray, threshold: float | None, rows: np.ndarray | None = None) -> float:
    """The primary metric on the holdout (or the ``rows`` of it), as the deploy stage computes it;
    ``threshold`` None: multiclass decisions by arg-max (HGB's own; Lepton's alarm rule needs a
    threshold set on validation scores of the same model)."""
    from lepton.tasks.metrics import evaluate
    from lepton.tasks.train import holdout_context

    context = holdout_context(spec, data, 0.5 if threshold is None else threshold)
    if rows is not None:
        groups = None if context.groups is None else context.groups[rows]
        order = None if context.order is None else context.order[rows]
        context = holdout_context(spec, data, context.threshold, groups=groups, order=order)
    if threshold is None:
        context = dataclasses.replace(context, alarm=None)
    y = data.holdout.y if rows is None else data.holdout.y[rows]
    return float(evaluate(spec, y, scores if rows is None else scores[rows], context)[spec.primary_metric])


def one_split(spec, read, trials: int) -> dict:
    """Search once; score the choice with and without the ensemble and HGB's default on the holdout."""
    from lepton.tasks.optimise import _choose, decision_threshold, measured, refit_with_validation, search
    from lepton.tasks.preprocess import prepare
    from lepton.tasks.train import train_task

    data = prepare(spec, *read(spec))
    start = time.perf_counter()
    trained = train_task.fn(spec, data, "cpu")
    found = search(spec, data, trials, seed=spec.split.seed)
    base = [measured(trained.baseline, data), measured(trained.default_tree, data)]
    sources = ["baseline", "default"] + ["search"] * len(found)
    out: dict = {"search_seconds": time.perf_counter() - start, "rows": {"train": data.train.rows,
                 "valid": data.valid.rows, "holdout": data.holdout.rows}}  # fmt: skip
    scores = {}
    for name, whole in (("single", False), ("ensemble", True)):
        tick = time.perf_counter()
        pool, choice, reasons = _choose(spec, data, [*base, *found], list(sources), whole=whole)
        model = pool[choice.index]
        threshold = decision_threshold(spec, data, model)
        assert model.serving is not None
        latency = model.serving.latency_ms
        if spec.split.refit:
            model = refit_with_validation(spec, data, model, "cpu")
        scores[name] = (holdout_scores(spec, data, model), threshold)
        out[name] = {
            "family": model.family,
            "holdout": metric(spec, data, *scores[name]),
            "valid": abs(model.valid_score),
            "latency_ms": latency,
            "choice_seconds": time.perf_counter() - tick,
            "reason": reasons[-1] if whole else reasons[0],
        }
    hgb_scores, hgb_ms = hgb(spec, data)
    # binary: Lepton's threshold (ROC AUC reads none); multiclass: arg-max, HGB's own decision
    threshold = None if spec.task == "multiclass" else scores["single"][1]
    out["hgb"] = {"holdout": metric(spec, data, hgb_scores, threshold), "latency_ms": hgb_ms}
    if spec.split.kind in ("time", "given"):  # one holdout: a paired bootstrap of its rows
        rng = np.random.default_rng(0)
        draws = {k: [] for k in ("single", "ensemble", "hgb")}
        for _ in range(BOOTSTRAP):
            rows = rng.integers(0, data.holdout.rows, data.holdout.rows)
            draws["single"].append(metric(spec, data, *scores["single"], rows))
            draws["ensemble"].append(metric(spec, data, *scores["ensemble"], rows))
            draws["hgb"].append(metric(spec, data, hgb_scores, threshold, rows))
        out["bootstrap"] = {k: np.asarray(v).tolist() for k, v in draws.items()}
    return out


def summary(name: str, spec, runs: list[dict]) -> dict:
    """Mean and sd over seeds (or over bootstrap draws of a single holdout) of each figure."""
    if "bootstrap" in runs[0]:
        draws = {k: np.asarray(v) for k, v in runs[0]["bootstrap"].items()}
        point = {k: runs[0][k]["holdout"] for k in ("single", "ensemble", "hgb")}
        spread = {k: float(np.std(v, ddof=1)) for k, v in draws.items()}
        diff = {k: draws[k] - draws["hgb"] for k in ("single", "ensemble")}
        how = f"one {spec.split.kind} split, sd of {BOOTSTRAP} paired bootstrap draws of the holdout"
    else:
        values = {k: np.array([r[k]["holdout"] for r in runs]) for k in ("single", "ensemble", "hgb")}
        point = {k: float(v.mean()) for k, v in values.items()}
        spread = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()}
        diff = {k: values[k] - values["hgb"] for k in ("single", "ensemble")}
        how = f"{len(runs)} {spec.split.kind} split seed(s), mean and sd over seeds"
    return {
        "table": name,
        "metric": spec.primary_metric,
        "how": how,
        "mean": point,
        "sd": spread,
        "minus_hgb": {k: [float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0] for k, v in diff.items()},
        "families": {k: [r[k]["family"] for r in runs] for k in ("single", "ensemble")},
        "ensemble_chosen": sum(r["ensemble"]["family"] == "ensemble" for r in runs),
        "latency_ms": {k: float(np.median([r[k]["latency_ms"] for r in runs])) for k in ("single", "ensemble", "hgb")},
        "search_seconds": float(np.median([r["search_seconds"] for r in runs])),
        "rows": runs[0]["rows"],
        "runs": [{k: v for k, v in r.items() if k != "bootstrap"} for r in runs],
    }


def main() -> None:
    from harness import write

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    import real_tables

    known = [*DOMAINS, *real_tables.TABLES]
    parser.add_argument("--tables", nargs="+", default=[*DOMAINS, *PUBLIC], choices=known, metavar="TABLE")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--refit", action="store_true", help="refit the chosen model on train + validation")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tables:
            spec, read = table_spec(name, Path(tmp))
            seeds = range(args.seeds) if spec.split.kind in ("stratified", "random") else [spec.split.seed]
            runs = [one_split(seeded(spec, s, args.refit), read, args.trials) for s in seeds]
            row = summary(name, spec, runs)
            rows.append(row)
            m, sd, d = row["mean"], row["sd"], row["minus_hgb"]
            print(
                f"{name:>14} {row['metric']}: single {m['single']:.4f}±{sd['single']:.4f}, "
                f"with ensemble {m['ensemble']:.4f}±{sd['ensemble']:.4f} "
                f"(chosen {row['ensemble_chosen']}/{len(runs)}), "
                f"HGB {m['hgb']:.4f}±{sd['hgb']:.4f}; Lepton-HGB {d['ensemble'][0]:+.4f}±{d['ensemble'][1]:.4f}; "
                f"{row['search_seconds']:.0f}s search; {row['how']}",
                flush=True,
            )
    name = "quality-refit" if args.refit else "quality"
    path = write(name, {"trials": args.trials, "seeds": args.seeds, "refit": args.refit, "tables": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
