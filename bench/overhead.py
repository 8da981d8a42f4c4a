"""Orchestration overhead: the whole ``lepton run finance`` against the same stage functions
called as a bare script (no Prefect, no MLflow), at the sample's size and on scale-ups.

    python bench/overhead.py --rows sample 1000000 [--repeats 3] [--trials 8]

The scale-up resamples the Lending Club sample's rows with replacement (same schema). Both sides
run as fresh processes, alternating; Lepton keeps one LEPTON_HOME throughout, as a user's would,
after one warm-up run on the sample that is not counted (it creates the stores).
Results: ``bench/results/overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Measurement, run_once, write
from lepton.domains import get_spec

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def scale_up(rows: int, directory: Path) -> Path:
    spec = get_spec("finance")
    sample = pl.read_parquet(spec.data.resolve(spec.data.path))
    big = sample.sample(n=rows, with_replacement=True, seed=rows)
    path = directory / f"finance_{rows}.parquet"
    big.write_parquet(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", nargs="+", default=["sample", "1000000"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    report = {"benchmark": "overhead", "trials": args.trials, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as tmp:
        tmpdir = Path(tmp)
        env = {"LEPTON_HOME": str(tmpdir / "home"), "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        run_once([str(BIN / "lepton"), "run", "finance", "--json", "--trials", "0"], env)
        for size in args.rows:
            data = [] if size == "sample" else ["--data", str(scale_up(int(size), tmpdir))]
            # --no-cache: each repeat computes every stage, as the bare script does (a repeat would
            # otherwise be a no-change re-run, answered from the stage cache in seconds)
            lepton_cmd = [str(BIN / "lepton"), "run", "finance", "--json", "--no-cache", "--trials", str(args.trials)]
            lepton_cmd += data
            bare_cmd = [
                sys.executable,
                str(ROOT / "bench" / "bare_pipeline.py"),
                "finance",
                "--trials",
                str(args.trials),
                *data,
            ]
            lepton, bare = Measurement("lepton run finance"), Measurement("bare stage functions")
            stages, bare_stages = [], []
            for _ in range(args.repeats):
                sample, out = run_once(lepton_cmd, env)
                lepton.samples.append(sample)
                stages.append({k: v["seconds"] for k, v in json.loads(out.strip().splitlines()[-1])["stages"].items()})
                sample, out = run_once(bare_cmd, env)
                bare.samples.append(sample)
                bare_stages.append(json.loads(out.strip().splitlines()[-1])["stages"])
            ratio = lepton.median_seconds / bare.median_seconds
            report["sizes"][size] = {
                "lepton": lepton,
                "bare": bare,
                "ratio": ratio,
                "lepton_stages": stages,
                "bare_stages": bare_stages,
            }
            write("overhead", report)  # keep what is measured so far
            print(
                f"{size:>10} rows: lepton {lepton.median_seconds:7.1f}s ({lepton.median_peak_mb:.0f} MB), "
                f"bare {bare.median_seconds:7.1f}s ({bare.median_peak_mb:.0f} MB), ratio {ratio:.3f}",
                flush=True,
            )
    print(f"written to {write('overhead', report)}")


if __name__ == "__main__":
    main()
