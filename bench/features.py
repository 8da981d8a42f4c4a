"""The feature stage against a straightforward pandas implementation of the same recipe.

    python bench/features.py [--domains finance manufacturing] [--rows 1000000 10000000] [--repeats 3]

For each domain and size, ``lepton synth`` data is written once; then, as fresh processes taking
turns: Lepton's feature stage (``lepton.tasks.features.compute_features`` on a Dask LocalCluster that
is already up — its start is timed apart) and pandas (groupby-rolling for TEP runs, vectorised
columns for finance). Each side reads the file, computes, and prints the time of the computation
alone and a checksum of the derived columns; the driver checks the checksums agree and records
median seconds, the ratio and peak RSS. Results: ``bench/results/features-<domains>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Measurement, run_once, write
from lepton.domains import get_spec
from lepton.domains.manufacturing import SENSORS
from lepton.domains.recipes import RATE_BANDS, outputs


def pandas_features(domain: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The recipe as a pandas user would write it."""
    if domain == "finance":
        out = frame.copy()
        income = out["annual_inc"].where(out["annual_inc"] > 0)
        limit = out["total_il_high_credit_limit"].where(out["total_il_high_credit_limit"] > 0)
        out["loan_to_income"] = out["funded_amnt"] / income
        out["il_utilisation"] = out["total_bal_il"] / limit
        out["inquiries_total"] = out[["inq_last_6mths", "inq_last_12m", "inq_fi"]].sum(axis=1).astype(float)
        out["grade"] = out["sub_grade"].str[0]
        out["rate_band"] = pd.cut(out["int_rate"], [-np.inf, *RATE_BANDS, np.inf], labels=False)
        return out
    window = get_spec("manufacturing").features.window
    out = frame.sort_values(["run", "sample"], kind="stable")
    grouped = out.groupby("run", sort=False)[SENSORS]
    means = grouped.rolling(window, min_periods=1).mean().reset_index(level=0, drop=True)
    stds = grouped.rolling(window, min_periods=2).std().reset_index(level=0, drop=True)
    diffs = grouped.diff()
    derived = {}
    for name in SENSORS:
        derived[f"{name}_mean{window}"] = means[name]
        derived[f"{name}_std{window}"] = stds[name]
        derived[f"{name}_diff"] = diffs[name]
    return pd.concat([out, pd.DataFrame(derived, index=out.index)], axis=1).sort_index()


def checksum(columns: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.nansum(v.astype(float))) for k, v in columns.items()}


def side(kind: str, domain: str, path: str) -> None:
    spec = get_spec(domain)
    derived = [n for n, _ in outputs(spec.recipe_config())]
    numeric = [n for n, d in outputs(spec.recipe_config()) if d != "category"]
    report: dict = {}
    if kind == "pandas":
        frame = pd.read_parquet(path)
        start = time.perf_counter()
        out = pandas_features(domain, frame)
        report["seconds"] = time.perf_counter() - start
        report["checksum"] = checksum({n: out[n].to_numpy() for n in numeric})
    else:
        from lepton.core.engine import dask_engine
        from lepton.tasks.features import compute_features

        frame = pl.read_parquet(path)
        start = time.perf_counter()
        with dask_engine() as engine:
            report["engine_seconds"] = time.perf_counter() - start
            engine.client.submit(lambda: 0).result()  # workers up
            start = time.perf_counter()
            out, run = compute_features(spec, frame, engine.client)
            report["seconds"] = time.perf_counter() - start
            report["partitions"] = run.partitions
        report["checksum"] = checksum({n: out[n].to_numpy() for n in numeric})
    report["rows"] = len(frame)
    report["derived"] = len(derived)
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["lepton", "pandas"])
    parser.add_argument("--domain")
    parser.add_argument("--data")
    parser.add_argument("--domains", nargs="+", default=["finance", "manufacturing"])
    parser.add_argument("--rows", nargs="+", type=int, default=[1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.side:
        side(args.side, args.domain, args.data)
        return
    from lepton.core.tables import read_table
    from lepton.tasks.synth import write_synthetic

    cases = []
    with tempfile.TemporaryDirectory(prefix="lepton-bench-features-") as tmp:
        for domain in args.domains:
            spec = get_spec(domain)
            source = read_table(spec.data.resolve(spec.data.path))
            for rows in args.rows:
                path = Path(tmp) / f"{domain}_{rows}.parquet"
                write_synthetic(spec, source, rows, path)
                sides = {"lepton": Measurement("lepton"), "pandas": Measurement("pandas")}
                reports: dict[str, list[dict]] = {"lepton": [], "pandas": []}
                for _ in range(args.repeats):
                    for name, measurement in sides.items():
                        cmd = [sys.executable, __file__, "--side", name, "--domain", domain, "--data", str(path)]
                        sample, out = run_once(cmd)
                        report = json.loads(out.strip().splitlines()[-1])
                        sample.seconds = report["seconds"]  # the computation alone, not the file read
                        measurement.samples.append(sample)
                        reports[name].append(report)
                a, b = reports["lepton"][0]["checksum"], reports["pandas"][0]["checksum"]
                worst = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-9) for k in a)
                case = {
                    "domain": domain,
                    "rows": rows,
                    "lepton": sides["lepton"],
                    "pandas": sides["pandas"],
                    "speedup": sides["pandas"].median_seconds / sides["lepton"].median_seconds,
                    "engine_start_seconds": reports["lepton"][0]["engine_seconds"],
                    "partitions": reports["lepton"][0]["partitions"],
                    "checksum_max_relative_difference": worst,
                }
                cases.append(case)
                print(
                    f"{domain} {rows:>10,} rows: lepton {sides['lepton'].median_seconds:7.2f}s "
                    f"(peak {sides['lepton'].median_peak_mb:,.0f} MB)  pandas {sides['pandas'].median_seconds:7.2f}s "
                    f"(peak {sides['pandas'].median_peak_mb:,.0f} MB)  speed-up {case['speedup']:.1f}x  "
                    f"checksums agree to {worst:.1e}",
                    flush=True,
                )
    print(write("features-" + "-".join(args.domains), {"cases": cases}))


if __name__ == "__main__":
    main()
