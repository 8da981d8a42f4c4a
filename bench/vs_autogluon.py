"""Each domain's champion against AutoGluon (``medium_quality`` or ``best_quality``) on the same split.

    make bench-autogluon            # AutoGluon in its own venv (.venv-autogluon), then this script
    python bench/vs_autogluon.py [--domains finance medical manufacturing] [--trials 8]
                              [--presets medium_quality] [--time-limit SECONDS]
                              [--autogluon-python PATH]

``--domains`` also takes the public tables of ``bench/real_tables.py`` (``credit-status``,
``hpc-jobs``, ...): Lepton runs on the table exported as a user's file (``lepton run --data``, the
sentinel's leaks dropped as a user would), AutoGluon on the same split's rows. ``--time-limit``
is AutoGluon's ``time_limit`` (none by default; ``best_quality`` on 2 cores is usually given one).

AutoGluon 1.6 needs pandas < 2.4 (Lepton's venv has pandas 3), so it runs from its own virtual
environment as a child process of this script; Lepton runs as its own child, ``lepton run DOMAIN``
in a fresh LEPTON_HOME, exactly as a user runs it.

The split is Lepton's (``lepton.tasks.preprocess.prepare``: seeded, by time or group where the domain
says so). AutoGluon gets the same raw features and target: the training rows as
``train_data``, the validation rows as ``tuning_data``; both are scored on the holdout rows with
Lepton's own metric code (``lepton.tasks.metrics.evaluate``), AutoGluon's from the probabilities it
writes. Manufacturing's decision is smoothed over each run's last 60 samples when Lepton scores;
AutoGluon's macro-F1 is reported both raw and through the same smoothing.

Measured: holdout quality (the domain's primary metric); fit time (Lepton: the features, train
and optimise stages, i.e. the search and the final fit; the whole run is reported beside it;
AutoGluon: ``fit``); single-row latency (Lepton: the registered bundle's p50, recipe and encoding
included, as ``lepton cost`` shows it; AutoGluon: the p50 of ``predict_proba`` on a one-row frame
after ``persist()``, 200 rows after 10 warm-up rows). Writes ``bench/results/autogluon.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AG_PYTHON = ROOT / ".venv-autogluon" / "bin" / "python"
DOMAINS = ("finance", "medical", "manufacturing")
BIN = Path(sys.executable).parent
METRICS = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "r2"}


def autogluon_side(folder: Path, label: str, problem: str, presets: str, time_limit: float | None = None) -> None:
    """(In AutoGluon's venv) fit, score the holdout, time single rows; print a JSON report."""
    import numpy as np
    import pandas as pd
    from autogluon.tabular import TabularPredictor

    train, valid, holdout = (pd.read_parquet(folder / f"{part}.parquet") for part in ("train", "valid", "holdout"))
    start = time.perf_counter()
    predictor = TabularPredictor(
        label=label, problem_type=problem, eval_metric=METRICS[problem], path=str(folder / "ag"), verbosity=0
    ).fit(
        train,
        tuning_data=valid,
        presets=presets,
        time_limit=time_limit,
        # bagged presets keep the tuning rows as a holdout for the ensemble's weights
        **({} if presets == "medium_quality" else {"use_bag_holdout": True}),
    )
    fit_seconds = time.perf_counter() - start
    features = holdout.drop(columns=[label])
    regression = problem == "regression"
    predict = predictor.predict if regression else predictor.predict_proba
    proba = predict(features)
    np.save(folder / "ag_proba.npy", proba.to_numpy(dtype=float))
    predictor.persist()
    times = []
    for i in range(210):
        row = features.iloc[[i % len(features)]]
        tick = time.perf_counter()
        predict(row)
        times.append(time.perf_counter() - tick)
    board = predictor.leaderboard(silent=True)
    print(
        json.dumps(
            {
                "fit_seconds": fit_seconds,
                "latency_p50_ms": float(np.median(times[10:]) * 1000),
                "classes": [] if regression else [str(c) for c in proba.columns],
                "best_model": str(predictor.model_best),
                "models": len(board),
            }
        )
    )


def export_split(domain: str, folder: Path) -> tuple[object, object]:
    """Lepton's split of ``domain`` (or of a public table, ``bench/quality.table_spec``) as three
    Parquet files of raw inputs and the target."""
    from bench.quality import table_spec
    from lepton.tasks.preprocess import prepare

    spec, read = table_spec(domain, folder)
    data = prepare(spec, *read(spec))
    # The features only: the run id and sample number order Lepton's rolling recipe and smoothing,
    # but as columns they identify TEP's training runs, one fault each (AutoGluon learnt the run).
    columns = [c.name for c in spec.feature_columns]
    for name, part in (("train", data.train), ("valid", data.valid), ("holdout", data.holdout)):
        frame = part.frame.select(columns).to_pandas()
        frame[spec.target] = part.y if spec.task == "regression" else [str(data.classes[i]) for i in part.y]
        frame.to_parquet(folder / f"{name}.parquet")
    return spec, data


def lepton_side(domain: str, trials: int, home: Path, folder: Path, name: str) -> dict:
    """``lepton run`` as a user runs it: the domain, or the public table's file exported in ``folder``."""
    from bench.harness import run_once

    env = {"LEPTON_HOME": str(home), "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    args = [domain]
    if domain not in DOMAINS:
        from bench import real_tables

        table = real_tables.TABLES[domain]
        args = ["--data", str(folder / table.file), "--target", table.target, *table.flags]
        if table.leaks:
            args += ["--drop-cols", ",".join(table.leaks)]
    sample, out = run_once([str(BIN / "lepton"), "run", *args, "--trials", str(trials), "--json"], env=env)
    report = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    _, history = run_once([str(BIN / "lepton"), "cost", name, "--json"], env=env)
    latest = json.loads(history)["runs"][-1]
    stages = report["stages"]
    return {
        "metric": report["metrics"][report["primary_metric"]],
        "fit_seconds": sum(stages[s]["seconds"] for s in ("features", "train", "optimise")),
        "run_seconds": sample.seconds,
        "latency_p50_ms": latest["latency_p50_ms"],
        "family": latest.get("family") or report.get("family", ""),
        "promoted": report["promoted"],
        "metrics": report["metrics"],
    }


def score_autogluon(spec, data, proba, classes: list[str]) -> dict[str, float]:
    """AutoGluon's holdout probabilities through Lepton's metrics (columns in Lepton's class order),
    decided as AutoGluon decides: arg-max (Lepton's alarm rule needs a threshold set on
    AutoGluon's validation scores, which it does not give back)."""
    import dataclasses

    import numpy as np

    from lepton.core.scoring import smoothed
    from lepton.tasks.metrics import evaluate
    from lepton.tasks.train import holdout_context

    if spec.task == "regression":
        scores = proba.ravel()
    else:
        scores = proba[:, [classes.index(str(c)) for c in data.classes]]
    if spec.task == "binary":
        scores = scores[:, 1]
    metric = spec.primary_metric
    context = dataclasses.replace(holdout_context(spec, data), alarm=None)
    raw = evaluate(spec, data.holdout.y, scores, context)
    out = {"metric_raw": raw[metric], "metrics_raw": raw}
    smoothing = spec.smoothing_config()
    if smoothing:
        same = evaluate(spec, data.holdout.y, smoothed(smoothing, np.asarray(scores), data.holdout.frame), context)
        out["metric_smoothed"], out["metrics_smoothed"] = same[metric], same
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["finance", "medical", "manufacturing"])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--presets", default="medium_quality")
    parser.add_argument("--time-limit", type=float, default=None)
    parser.add_argument("--autogluon-python", type=Path, default=AG_PYTHON)
    parser.add_argument("--side", nargs=3, metavar=("FOLDER", "LABEL", "PROBLEM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        autogluon_side(Path(args.side[0]), args.side[1], args.side[2], args.presets, args.time_limit)
        return
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from bench.harness import run_once, write

    if not args.autogluon_python.exists():
        sys.exit(f"no AutoGluon venv at {args.autogluon_python}: run `make bench-autogluon`")
    results = {"presets": args.presets, "time_limit": args.time_limit, "trials": args.trials}
    results |= {"cores": os.cpu_count(), "domains": {}}
    for domain in args.domains:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            spec, data = export_split(domain, folder)
            lepton = lepton_side(domain, args.trials, folder / "home", folder, spec.name)
            cmd = [str(args.autogluon_python), __file__, "--presets", args.presets]
            if args.time_limit:
                cmd += ["--time-limit", str(args.time_limit)]
            cmd += ["--side", str(folder), spec.target, spec.task]
            sample, out = run_once(cmd)
            ag = json.loads(out.strip().splitlines()[-1])
            ag.update(score_autogluon(spec, data, np.load(folder / "ag_proba.npy"), ag["classes"]))
            ag["peak_mb"] = sample.peak_rss_mb
        ag_metric = ag.get("metric_smoothed", ag["metric_raw"])
        row = {
            "primary_metric": spec.primary_metric,
            "rows": {"train": data.train.rows, "valid": data.valid.rows, "holdout": data.holdout.rows},
            "lepton": lepton,
            "autogluon": ag,
            "quality_delta": lepton["metric"] - ag_metric,
            "fit_time_ratio": lepton["fit_seconds"] / ag["fit_seconds"],
            "latency_ratio": lepton["latency_p50_ms"] / ag["latency_p50_ms"],
        }
        results["domains"][domain] = row
        print(
            f"{domain}: {spec.primary_metric} Lepton {lepton['metric']:.4f} vs AutoGluon {ag_metric:.4f}"
            f" (raw {ag['metric_raw']:.4f}); fit {lepton['fit_seconds']:.0f}s vs {ag['fit_seconds']:.0f}s"
            f" ({row['fit_time_ratio']:.2f}x); single row {lepton['latency_p50_ms']:.2f} ms vs"
            f" {ag['latency_p50_ms']:.1f} ms ({row['latency_ratio']:.3f}x)",
            flush=True,
        )
    print(write(f"autogluon-{args.presets}", results))


if __name__ == "__main__":
    main()
