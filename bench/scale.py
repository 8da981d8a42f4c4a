"""The whole pipeline at scale: ``lepton run finance`` on tables from ``lepton synth finance``.

    python bench/scale.py --rows 1000000 10000000 [--trials 8]

Each size: the synthetic table (the domain's schema, the real dependence between features and
target) is written once, then ``lepton run finance --data F --json`` runs as a fresh process;
its wall time, peak RSS (wait4), the seconds of each stage, the holdout metrics and where the
model was trained are kept in ``bench/results/scale.json``. Candidates are fitted on at most
LEPTON_SEARCH_ROWS training rows, and the chosen tree model on every row (xgboost.dask from
LEPTON_DISTRIBUTED_ROWS), as in any run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import run_once, write

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="+", type=int, default=[1_000_000, 10_000_000])
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    report: dict = {"benchmark": "scale", "domain": "finance", "trials": args.trials, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="lepton-scale-") as tmp:
        env = {
            "LEPTON_HOME": str(Path(tmp) / "home"),
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        for rows in args.rows:
            data = Path(tmp) / f"finance_{rows}.parquet"
            start = time.perf_counter()
            run_once([str(BIN / "lepton"), "synth", "finance", "--rows", str(rows), "-o", str(data)], env)
            synth_seconds = time.perf_counter() - start
            cmd = [str(BIN / "lepton"), "run", "finance", "--data", str(data), "--json", "--trials", str(args.trials)]
            sample, out = run_once(cmd, env, tree=True)
            result = json.loads(out.strip().splitlines()[-1])
            report["sizes"][str(rows)] = {
                "seconds": sample.seconds,
                "peak_rss_mb": sample.peak_rss_mb,
                "tree_peak_mb": sample.tree_peak_mb,
                "synth_seconds": synth_seconds,
                "file_mb": data.stat().st_size / 2**20,
                "stages": {k: v["seconds"] for k, v in result["stages"].items()},
                "metrics": result["metrics"],
                "baseline_metrics": result["baseline_metrics"],
                "trained_on": result["engine"]["trained_on"],
            }
            write("scale", report)
            data.unlink()
            print(
                f"{rows:>10,} rows: {sample.seconds:7.1f}s, peak {sample.peak_rss_mb:,.0f} MB "
                f"(all processes {sample.tree_peak_mb:,.0f} MB), "
                f"ROC AUC {result['metrics']['roc_auc']:.4f} (baseline {result['baseline_metrics']['roc_auc']:.4f}), "
                f"stages {report['sizes'][str(rows)]['stages']}, trained on {result['engine']['trained_on']}",
                flush=True,
            )
    print(f"written to {write('scale', report)}")


if __name__ == "__main__":
    main()
