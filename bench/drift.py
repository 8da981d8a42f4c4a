"""Drift of a wide batch: Lepton's monitor against Evidently's data drift report, same data.

    make bench-drift                 # Evidently in its own venv (.venv-evidently), then this script
    python bench/drift.py [--rows 1000000] [--columns 50] [--repeat 3] [--evidently-python PATH]

Evidently 0.7 needs pandas < 3 (Lepton's venv has pandas 3), so it runs from its own virtual
environment; each measurement is a child process of this one script either way.

Data: the TEP process table (the manufacturing domain), ``--columns`` of its numeric process
variables. The reference is ``--rows`` synthetic rows of the training runs (``lepton.tasks.synth``), the
batch ``--rows`` rows of ``lepton simulate-drift manufacturing`` (runs of faults 1, 2, 6 and 7).
Each measurement runs in its own process (wall time of the drift computation itself, peak RSS
of the process, both tables loaded alike):

- Lepton: ``lepton.tasks.monitor.drift_report`` against the reference statistics stored with a model
  (computed once at training: timed apart, as ``reference``); PSI and a KS test per column in
  one pass, flags by PSI (``psi``: Evidently's binning, ``drift.psi_bins: sturges``, the training
  side from the stored sketch; ``psi-deciles``: Lepton's default, 10 training deciles; threshold
  0.1 as Evidently's) or by the test (``ks``, p < 0.05 as Evidently's);
- Evidently: ``Report([DataDriftPreset(method=...)]).run(current, reference)`` with its default
  tests, ``psi`` and ``ks``.

Reports seconds, peak memory, the ratios and whether the same columns were flagged; writes
``bench/results/drift.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import run_once, write  # noqa: E402 (after the path above)

THRESHOLDS = {"psi": 0.1, "ks": 0.05}  # Evidently's defaults for these tests


SHIFTED = 10  # the "partial" scenario: how many columns move, by 0.03 standard deviations


def make_data(rows: int, columns: int, directory: Path, scenario: str = "faults") -> tuple[Path, Path, list[str]]:
    import polars as pl

    from lepton.core.tables import read_table
    from lepton.domains import get_spec
    from lepton.domains.spec import Dtype
    from lepton.tasks.drift_demo import drifted_batch
    from lepton.tasks.synth import synthesize

    spec = get_spec("manufacturing")
    names = [c.name for c in spec.feature_columns if c.dtype in (Dtype.FLOAT, Dtype.INT)][:columns]
    train = read_table(spec.data.resolve(spec.data.path))
    reference = pl.concat(synthesize(spec, train, rows, seed=11)).select(names)
    if scenario == "faults":
        current = drifted_batch(spec, rows, seed=12)[0].select(names)
    else:  # another draw of the same population, with a few columns moved a little
        current = pl.concat(synthesize(spec, train, rows, seed=13)).select(names)
        moved = names[::5][:SHIFTED]
        current = current.with_columns((pl.col(n) + 0.03 * reference[n].std()).alias(n) for n in moved)
    paths = directory / "reference.parquet", directory / "current.parquet"
    reference.write_parquet(paths[0])
    current.write_parquet(paths[1])
    return *paths, names


# ---- one measurement, in a child process --------------------------------------------------------
def lepton(reference_path: str, current_path: str, method: str) -> dict:
    import polars as pl

    from lepton.domains.spec import DomainSpec, DriftSpec
    from lepton.tasks.monitor import drift_report, reference_statistics

    reference, current = pl.read_parquet(reference_path), pl.read_parquet(current_path)
    test = "test" if method == "ks" else "psi"
    # PSI as Evidently bins it (the comparison), and over training deciles (Lepton's default)
    binning = "quantile" if method == "psi-deciles" else "sturges"
    rule = DriftSpec(psi_threshold=THRESHOLDS["psi"], p_value=THRESHOLDS["ks"], method=test, psi_bins=binning)
    spec = DomainSpec.model_validate({
        "name": "bench", "data": {"path": "x.parquet"}, "task": "regression", "split": {"kind": "random"},
        "primary_metric": "r2", "metrics": ["r2"], "drift": rule.model_dump(),
        "columns": [*({"name": n, "dtype": "float"} for n in reference.columns), {"name": "y", "dtype": "float",
                    "role": "target"}],
    })  # fmt: skip
    start = time.perf_counter()
    stats = reference_statistics(reference, spec)
    built = time.perf_counter() - start
    del reference
    start = time.perf_counter()
    report = drift_report(spec, stats, current)
    seconds = time.perf_counter() - start
    values = {name: d.psi if test == "psi" else d.p_value for name, d in report.features.items()}
    return {"seconds": seconds, "reference_seconds": built, "flagged": report.drifted, "values": values}


def evidently(reference_path: str, current_path: str, method: str) -> dict:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    reference, current = pd.read_parquet(reference_path), pd.read_parquet(current_path)
    preset = DataDriftPreset() if method == "default" else DataDriftPreset(method=method.removesuffix("-deciles"))
    start = time.perf_counter()
    snapshot = Report([preset]).run(current, reference)
    result = snapshot.dict()
    seconds = time.perf_counter() - start
    columns = list(reference.columns)
    flagged, values = sorted(_evidently_flagged(result, columns)), _evidently_values(result, columns)
    return {"seconds": seconds, "flagged": flagged, "values": values}


P_VALUE_TESTS = {"ks", "chisquare", "z", "t_test", "mannw", "anderson", "cramer_von_mises", "fisher_exact", "g_test"}


def _drift_metrics(result: dict, columns: list[str]) -> list[dict]:
    return [
        metric
        for metric in result["metrics"]
        if metric.get("config", {}).get("column") in columns
        and str(metric["config"].get("type", "")).endswith("ValueDrift")
    ]


def _evidently_values(result: dict, columns: list[str]) -> dict[str, float]:
    return {metric["config"]["column"]: float(metric["value"]) for metric in _drift_metrics(result, columns)}


def _evidently_flagged(result: dict, columns: list[str]) -> set[str]:
    """Columns whose drift value crosses its test's threshold: below it for a p-value test,
    at or above it for a distance (PSI, Wasserstein, Jensen-Shannon)."""
    flagged = set()
    for metric in _drift_metrics(result, columns):
        config = metric["config"]
        value, threshold = metric["value"], config["threshold"]
        if (value < threshold) if config.get("method") in P_VALUE_TESTS else (value >= threshold):
            flagged.add(config["column"])
    return flagged


# ---- the comparison ------------------------------------------------------------------------------
def measure(command: list[str], repeat: int, env: dict[str, str]) -> dict:
    """One tool's child process run ``repeat`` times: the median time and peak, its flags and values."""
    samples = []
    for _ in range(repeat):
        sample, out = run_once(command, env)
        samples.append({**json.loads(out.strip().splitlines()[-1]), "peak_mb": sample.peak_rss_mb})
    return {
        "seconds": statistics.median(s["seconds"] for s in samples),
        "peak_mb": statistics.median(s["peak_mb"] for s in samples),
        "flagged": samples[0]["flagged"],
        "values": samples[0]["values"],
        **({"reference_seconds": samples[0]["reference_seconds"]} if "reference_seconds" in samples[0] else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="Lepton runs per method (Evidently runs once)")
    parser.add_argument(
        "--scenario",
        choices=["faults", "partial"],
        default="faults",
        help="faults: simulate-drift's fault runs; partial: the same population, 10 columns moved",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["psi", "ks", "default", "psi-deciles"],
        help="psi: Evidently's binning on both sides; psi-deciles: Lepton's default decile PSI against Evidently's",
    )
    parser.add_argument(
        "--tools",
        nargs="+",
        choices=["lepton", "evidently"],
        default=["lepton", "evidently"],
        help="lepton alone re-measures Lepton's side (after a change) without Evidently's minutes",
    )
    parser.add_argument("--evidently-python", default=str(ROOT / ".venv-evidently" / "bin" / "python"))
    parser.add_argument("--child", nargs=4, metavar=("TOOL", "METHOD", "REF", "CUR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tool, method, ref, cur = args.child
        print(json.dumps((lepton if tool == "lepton" else evidently)(ref, cur, method)))
        return
    env = {"DO_NOT_TRACK": "true", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
    report: dict = {"benchmark": "drift", "rows": args.rows, "columns": args.columns, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="lepton-drift-") as tmp:
        ref, cur, names = make_data(args.rows, args.columns, Path(tmp), args.scenario)
        print(f"{args.rows:,} rows x {len(names)} columns, reference and a batch ({args.scenario})", flush=True)
        report["scenario"] = args.scenario
        evidently_runs: dict[str, dict] = {}  # by Evidently's method: psi-deciles reuses psi's run
        for method in args.methods:
            runs = {}
            for tool, repeat in (("lepton", args.repeat), ("evidently", 1)):
                if tool not in args.tools:
                    continue
                if tool == "evidently" and method.removesuffix("-deciles") in evidently_runs:
                    runs[tool] = evidently_runs[method.removesuffix("-deciles")]
                    continue
                python = sys.executable if tool == "lepton" else args.evidently_python
                runs[tool] = measure([python, __file__, "--child", tool, method, str(ref), str(cur)], repeat, env)
                line = f"{runs[tool]['seconds']:8.2f} s, peak {runs[tool]['peak_mb']:,.0f} MB"
                print(f"{method:>11} {tool:>9}: {line}, {len(runs[tool]['flagged'])} columns flagged", flush=True)
                if tool == "evidently":
                    evidently_runs[method.removesuffix("-deciles")] = runs[tool]
            if len(runs) < 2:
                report["runs"][method] = runs
                continue
            lep, ev = runs["lepton"], runs["evidently"]
            runs["speedup"] = ev["seconds"] / lep["seconds"]
            runs["memory_ratio"] = lep["peak_mb"] / ev["peak_mb"]
            runs["same_flags"] = lep["flagged"] == ev["flagged"] if method != "default" else None
            runs["only_lepton"] = sorted(set(lep["flagged"]) - set(ev["flagged"]))
            runs["only_evidently"] = sorted(set(ev["flagged"]) - set(lep["flagged"]))
            if method in ("psi", "ks"):  # the same statistic on both sides: how far apart
                gaps = {n: abs(lep["values"][n] - ev["values"][n]) for n in ev["values"] if n in lep["values"]}
                runs["largest_gap"] = max(gaps.items(), key=lambda item: item[1], default=None)
            print(f"{method:>11}: {runs['speedup']:.0f}x faster, memory {runs['memory_ratio']:.2f}x, same columns "
                  f"flagged: {runs['same_flags']} (only Lepton {runs['only_lepton']}, only Evidently "
                  f"{runs['only_evidently']})", flush=True)  # fmt: skip
            report["runs"][method] = runs
    print(f"written to {write(f'drift-{args.scenario}', report)}")


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "true")
    main()
