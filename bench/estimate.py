"""Performance estimated without labels: Lepton's estimate against the realised metric and against
NannyML's CBPE, on the same batches and the same calibrated scores.

    make bench-estimate              # NannyML in its own venv (.venv-nannyml), then this script
    python bench/estimate.py [--domains finance medical manufacturing] [--batches 20] [--rows 1000]
    python bench/estimate.py --domains credit-default hpc-jobs concrete   # public tables a user brings

Per domain: ``lepton run DOMAIN`` in a fresh LEPTON_HOME registers a champion (for a public table
of ``bench/real_tables.py``: the table written as a user's file, ``lepton run --data``); its
bundle scores Lepton's own validation and holdout rows (``lepton.tasks.preprocess.prepare``, the
run's split). A regression is estimated in RMSE, which NannyML's direct loss estimation (DLE,
a LightGBM model of the error from the numeric inputs and the prediction) estimates too; its
*harmful* scenario weights the largest predictions up, its *label* one the larger labels.
For each batch the holdout is split afresh in two random halves: on one, the estimate's check at
training is made again (``holdout_check``: the estimate against the labels there; where they
fall outside its band, on at least 1,000 rows, a batch's estimate allows for that miss,
``allowing_for_miss``); the batch is drawn from the other half, each row weighted by a
scenario, so that the labels stay the real ones and no batch's labels shape its own estimate.
A batch holds distinct rows, ``--rows`` or a quarter of a half if fewer (finance and medical:
about 250 and 200). Batches drawn from one fixed pool, or checked against one fixed half, would
all carry that pool's or that check's chance deviation, and twenty batches would test that one
deviation rather than the band: a scenario that leans on few rows (finance's *harmful* weights
rest on about 40 rows of a half, their effective number, printed per scenario) drew nearly the
same batch twenty times. The scenarios:
The scenarios:

- ``control``: every row alike (no drift);
- ``harmful``: rows where the champion is unsure weighted up (the inputs move to where it ranks
  worst; the chance of a label given a row is unchanged);
- ``harmless``: rows weighted by the input the champion's score depends on least (Spearman),
  so that input drifts and performance should not move;
- ``label``: the positive class (binary) or every fault (multiclass) weighted 3x, the label
  shift CBPE assumes away.

For each batch: the realised primary metric (the true labels, Lepton's metric code), Lepton's
estimate and its 90% band (``lepton.tasks.estimate``), and NannyML's CBPE fitted on the
validation rows' scores and labels (its reference), with its value and a 90% band from its
sampling error (value +- 1.645 sigma, the same level). Reported per scenario: the mean absolute
error, the band's coverage of the realised metric; and the seconds each tool takes for all the
batches (NannyML's with its fit on the reference), the median of five timings of the same work.
Writes ``bench/results/estimate.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NML_PYTHON = ROOT / ".venv-nannyml" / "bin" / "python"
SCENARIOS = ("control", "harmful", "harmless", "label")
Z90 = 1.6449
REPEATS = 5  # each tool's batches timed this many times; the median is reported


def nannyml_side(folder: Path) -> None:
    """(In NannyML's venv) CBPE fitted on the reference, estimated on the batches in order, one
    chunk per batch; prints the values, sampling errors and seconds as JSON."""
    import nannyml as nml
    import pandas as pd

    meta = json.loads((folder / "meta.json").read_text())
    reference, analysis = pd.read_parquet(folder / "reference.parquet"), pd.read_parquet(folder / "analysis.parquet")
    binary, regression = meta["task"] == "binary", meta["task"] == "regression"
    metric = meta["metric"] if regression else "roc_auc" if meta["metric"] == "roc_auc" else "f1"
    proba = "p" if binary else {c: f"p{c}" for c in range(meta["classes"])}
    timings = []
    for _ in range(REPEATS):  # the same work each time: the median is the figure, the machine being shared
        start = time.perf_counter()
        if regression:  # direct loss estimation: a LightGBM model of the error from the inputs and prediction
            estimator = nml.DLE(
                feature_column_names=meta["features"], y_pred="pred", y_true="y", metrics=[metric],
                chunk_size=meta["rows"],
            )  # fmt: skip
        else:
            estimator = nml.CBPE(
                y_pred_proba=proba,
                y_pred="pred",
                y_true="y",
                problem_type="classification_binary" if binary else "classification_multiclass",
                metrics=[metric],
                chunk_size=meta["rows"],
            )
        estimator.fit(reference)
        frame = estimator.estimate(analysis).filter(period="analysis").to_df()
        timings.append(time.perf_counter() - start)
    seconds = float(np.median(timings))
    values = frame[(metric, "value")].to_numpy(dtype=float)
    errors = frame[(metric, "sampling_error")].to_numpy(dtype=float)
    print(json.dumps({"value": values.tolist(), "sampling_error": errors.tolist(), "seconds": seconds}))


def _weights(scenario: str, spec, scores: np.ndarray, y: np.ndarray, inputs, threshold: float) -> np.ndarray:
    from scipy.stats import rankdata, spearmanr

    n = len(y)
    if scenario == "control":
        return np.ones(n)
    if scenario == "harmful" and spec.task == "regression":  # towards the largest predictions
        return (rankdata(scores) / n) ** 3
    if scenario == "harmful":
        unsure = np.abs(scores - threshold) if scores.ndim == 1 else scores.max(axis=1)
        return np.exp(-6 * unsure / max(float(np.std(unsure)), 1e-9))
    if scenario == "harmless":
        score = scores if scores.ndim == 1 else scores.max(axis=1)
        numeric = [c for c in inputs.columns if inputs[c].dtype.is_numeric() and inputs[c].n_unique() > 10]
        corr = {c: abs(spearmanr(inputs[c].fill_null(0).to_numpy(), score).statistic) for c in numeric}
        quiet = min(corr, key=lambda c: corr[c] if np.isfinite(corr[c]) else 1.0)
        rank = inputs[quiet].fill_null(0).rank().to_numpy() / n
        return rank**3
    if spec.task == "regression":  # the larger labels
        boosted = y > np.median(y)
    else:  # label shift: the positives, or the faults
        boosted = (y == 1) if scores.ndim == 1 else (y != 0)
    return np.where(boosted, 3.0, 1.0)


def _nannyml(folder: Path) -> dict:
    """NannyML's side, run in its own venv on the files written under ``folder``."""
    done = subprocess.run(
        [str(NML_PYTHON), __file__, "--nannyml-side", str(folder)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"NannyML failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(lepton: list[dict], nml: dict, scenario: str) -> dict[str, float]:
    """One scenario's batches: the realised mean, each tool's mean absolute error and coverage."""
    idx = [i for i, r in enumerate(lepton) if r["scenario"] == scenario]
    realised = np.array([lepton[i]["realised"] for i in idx])
    ours = np.array([lepton[i].get("value", np.nan) for i in idx])
    low = np.array([lepton[i].get("lower", np.nan) for i in idx])
    high = np.array([lepton[i].get("upper", np.nan) for i in idx])
    theirs = np.array([nml["value"][i] for i in idx])
    error = np.array([nml["sampling_error"][i] for i in idx])
    return {
        "realised_mean": float(realised.mean()),
        # the rows the scenario's weights lean on, in the half a batch is drawn from (Kish's n)
        "effective_rows": float(np.median([lepton[i].get("effective_rows", np.nan) for i in idx])),
        "lepton_mae": float(np.nanmean(np.abs(ours - realised))),
        "lepton_coverage": float(np.mean((low <= realised) & (realised <= high))),
        "nannyml_mae": float(np.nanmean(np.abs(theirs - realised))),
        "nannyml_coverage": float(np.mean(np.abs(theirs - realised) <= Z90 * error)),
    }


def _champion(name: str, home: Path, trials: int, folder: Path):
    """A champion registered in ``home``: a domain's (``lepton run DOMAIN``), or a public table's
    (``bench/real_tables.py``'s, written as a user's file and run as ``lepton run --data``); its
    spec, its bundle's scorer, the run's split, and its family."""
    from bench.harness import champion_home
    from bench.real_tables import TABLES, command, export
    from lepton.core import tracking
    from lepton.core.scoring import Scorer
    from lepton.core.tables import load
    from lepton.domains import get_spec
    from lepton.domains.infer import Hints, infer_spec
    from lepton.tasks.preprocess import load_domain_data, prepare

    if name in TABLES:
        table = TABLES[name]
        path = export(table, folder)
        run = champion_home(command(table, path, trials)[2:-2], home, trials)  # the arguments after `lepton run`
        loaded = load(path)
        flags = dict(zip(table.flags[::2], table.flags[1::2], strict=True))
        spec = infer_spec(loaded.frame, Hints(target=table.target, template=flags.get("--template")), loaded.path).spec
        data = prepare(spec, loaded.frame)
    else:
        run = champion_home(name, home, trials)
        spec = get_spec(name)
        data = prepare(spec, *load_domain_data(spec))
    scorer = Scorer.from_dir(tracking.download_bundle(spec.model_name, run["version"], folder / "bundle"))
    return spec, scorer, data, run["family"]


def _checked_on_half(spec, meta, scores: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """The holdout in two halves: the estimate's check at training (``holdout_check``: what a
    batch's band allows for) made again on one, the batches drawn from the other, so that no
    batch's labels shape its own band. The bundle's meta with that check, the other half's
    rows, and the check's figures."""
    from dataclasses import replace

    from lepton.tasks.estimate import holdout_check

    checked, kept = np.array_split(rng.permutation(len(y)), 2)
    check = holdout_check(spec, meta, scores[checked], y[checked]) or {}
    figures = {"rows": len(checked), "estimated": check.get("value"), "realised": check.get("realised")}
    return replace(meta, estimation_check=check or None), kept, figures


def _batches(spec, meta, scores: np.ndarray, y: np.ndarray, inputs, batches: int, rows: int, rng):
    """Every scenario's batches, each drawn from a fresh half of the holdout and estimated
    against a check made again on the other half: the rows of each batch, the meta each was
    estimated with, Lepton's figures per batch, and each batch's check."""
    from lepton.tasks.estimate import of_batch
    from lepton.tasks.metrics import primary_score

    threshold = 0.5 if meta.threshold is None else meta.threshold
    sign = 1.0 if spec.higher_is_better(spec.primary_metric) else -1.0
    picked, metas, lepton, checks = [], [], [], []
    for scenario in SCENARIOS:
        # each row's weight under the scenario, on the whole holdout (so that each half draws
        # from the same shift); its effective rows tell how few rows a scenario leans on
        w = _weights(scenario, spec, scores, y, inputs, threshold)
        for _ in range(batches):
            # a fresh pair of halves for each batch: the check made again on one, the batch
            # drawn from the other. Batches sharing one split would share its check's and its
            # pool's chance deviation, and coverage would count that one deviation many times
            checked, kept, check = _checked_on_half(spec, meta, scores, y, rng)
            rows_ = kept[rng.choice(len(kept), rows, replace=False, p=w[kept] / w[kept].sum())]
            realised = sign * primary_score(spec, y[rows_], scores[rows_], threshold)
            e = of_batch(spec, checked, scores[rows_])
            picked.append(rows_)
            metas.append(checked)
            checks.append({**check, "adjusted": bool(e and e.missed_at_training)})
            lepton.append({"scenario": scenario, "realised": realised, "value": e.value, "lower": e.lower,
                           "upper": e.upper, "effective_rows": float(w[kept].sum() ** 2 / (w[kept] ** 2).sum())}
                          if e else {"scenario": scenario, "realised": realised})  # fmt: skip
    return picked, metas, lepton, checks


def domain_side(name: str, home: Path, batches: int, rows: int, trials: int, folder: Path) -> dict:
    from lepton.core.inputs import input_frame
    from lepton.tasks.estimate import champion_calibration, of_batch

    spec, scorer, data, family = _champion(name, home, trials, folder)
    if spec.task == "regression":  # the metric NannyML's DLE estimates too (it has no R²)
        spec = spec.model_copy(update={"primary_metric": "rmse"})
    threshold = 0.5 if scorer.meta.threshold is None else scorer.meta.threshold
    calibration, _ = champion_calibration(scorer.meta)
    valid = np.asarray(scorer.scores(input_frame(spec, data.valid.frame)))
    inputs = [c.name for c in spec.feature_columns]
    scores, y = np.asarray(scorer.scores(input_frame(spec, data.holdout.frame))), data.holdout.y
    rng = np.random.default_rng(0)
    holdout = data.holdout.frame
    # batches of distinct rows, at most a quarter of a half each: batches resampled from one
    # small pool all carry its labels' chance deviation, and would test that one deviation
    # twenty times rather than the band
    rows = min(rows, len(y) // 8)

    def columns(s: np.ndarray) -> dict:
        if spec.task == "regression":
            return {"pred": s}
        if s.ndim == 1:
            return {"p": s, "pred": (s >= threshold).astype(int)}
        return {**{f"p{c}": s[:, c] for c in range(s.shape[1])}, "pred": s.argmax(axis=1)}

    import polars as pl

    features = [c.name for c in spec.model_inputs if data.valid.frame[c.name].dtype.is_numeric()]
    reference = pl.DataFrame({**columns(valid), "y": data.valid.y}).hstack(data.valid.frame.select(features))
    reference.write_parquet(folder / "reference.parquet")
    picked, metas, lepton, checks = _batches(spec, scorer.meta, scores, y, holdout.select(inputs), batches, rows, rng)
    timings = []
    for _ in range(REPEATS):  # every batch's estimate again, timed alone
        start = time.perf_counter()
        for rows_, meta in zip(picked, metas, strict=True):
            of_batch(spec, meta, scores[rows_])
        timings.append(time.perf_counter() - start)
    seconds = float(np.median(timings))
    every = np.concatenate(picked)
    analysis = pl.DataFrame({**columns(scores[every]), "y": y[every]})
    analysis = analysis.hstack(holdout[every].select(features))
    analysis.write_parquet(folder / "analysis.parquet")
    classes = scores.shape[1] if scores.ndim > 1 else 2
    described = {
        "task": spec.task,
        "metric": spec.primary_metric,
        "rows": rows,
        "classes": classes,
        "features": features,
    }
    (folder / "meta.json").write_text(json.dumps(described))
    nml = _nannyml(folder)
    out = {"calibration": calibration, "metric": spec.primary_metric, "family": family, "rows": rows}
    made = [c for c in checks if c.get("estimated") is not None]
    out["holdout_check"] = {  # the medians over the batches' checks
        "rows": checks[0]["rows"],
        "estimated": float(np.median([c["estimated"] for c in made])) if made else None,
        "realised": float(np.median([c["realised"] for c in made])) if made else None,
        "adjusted": float(np.mean([c["adjusted"] for c in checks])),  # the share of batches
    }
    out["scenarios"] = {scenario: _summary(lepton, nml, scenario) for scenario in SCENARIOS}
    out["lepton_seconds"] = seconds
    out["nannyml_seconds"] = nml["seconds"]
    out["batches"] = len(lepton)
    out["per_batch"] = [  # every batch's figures, for a look at where a band missed
        {**r, "nannyml": v, "nannyml_sampling_error": e}
        for r, v, e in zip(lepton, nml["value"], nml["sampling_error"], strict=True)
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--domains", nargs="+", default=["finance", "medical", "manufacturing"],
        help="domains, or public tables of bench/real_tables.py (e.g. credit-default hpc-jobs concrete)",
    )  # fmt: skip
    parser.add_argument("--batches", type=int, default=20, help="batches per scenario")
    parser.add_argument("--rows", type=int, default=1000, help="rows per batch")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--nannyml-side", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nannyml_side:
        nannyml_side(args.nannyml_side)
        return
    sys.path.insert(0, str(ROOT))
    from bench.harness import machine, write

    if not NML_PYTHON.exists():
        raise SystemExit(f"NannyML's venv is missing ({NML_PYTHON}): run `make bench-estimate`")
    report = {"benchmark": "estimate", "machine": machine(), "batches": args.batches, "rows": args.rows, "domains": {}}
    tmp = tempfile.TemporaryDirectory(prefix="lepton-estimate-")  # one home: MLflow is configured once a process
    for domain in args.domains:
        folder = Path(tmp.name) / domain
        folder.mkdir()
        result = domain_side(domain, Path(tmp.name) / "home", args.batches, args.rows, args.trials, folder)
        report["domains"][domain] = result
        write("estimate", report)
        print(f"{domain} ({result['metric']}, {result['family']}, calibration {result['calibration']}): "
              f"Lepton {result['lepton_seconds']:.2f}s, NannyML {result['nannyml_seconds']:.2f}s "
              f"for {result['batches']} batches", flush=True)  # fmt: skip
        check = result["holdout_check"]
        if check.get("estimated") is not None:
            print(f"  the check on {check['rows']} holdout rows: estimated {check['estimated']:.4f}, "
                  f"labels {check['realised']:.4f} (medians); batches adjusted: {check['adjusted']:.0%}",
                  flush=True)  # fmt: skip
        for scenario, s in result["scenarios"].items():
            print(f"  {scenario:<9} ({s['effective_rows']:,.0f} rows) realised {s['realised_mean']:.4f}"
                  f"  MAE Lepton {s['lepton_mae']:.4f} "
                  f"NannyML {s['nannyml_mae']:.4f}  90% coverage Lepton {s['lepton_coverage']:.0%} "
                  f"NannyML {s['nannyml_coverage']:.0%}", flush=True)  # fmt: skip
    tmp.cleanup()


if __name__ == "__main__":
    main()
