"""Optuna trials per minute with one Dask worker against two (one thread each).

    python bench/trials.py [--domain manufacturing] [--trials 12] [--repeats 3]

Each configuration runs as a fresh process: prepare the domain's data (recipe included), start a
LocalCluster with N single-thread workers, and time ``lepton.tasks.optimise.search`` alone. Both sides
run the same seeded search (told in trial order): TPE's random-start trials are the same models
on both sides (checked); later ones differ because two workers take two TPE trials per batch.
Records median trials per minute and the ratio. Results: ``bench/results/trials.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Measurement, run_once, write
from lepton.tasks.optimise import STARTUP_TRIALS


def side(domain: str, workers: int, trials: int) -> None:
    from lepton.core.engine import dask_engine
    from lepton.domains import get_spec
    from lepton.tasks.optimise import search
    from lepton.tasks.preprocess import load_domain_data, prepare

    spec = get_spec(domain)
    data = prepare(spec, *load_domain_data(spec))
    with dask_engine(threads_per_worker=1, workers=workers) as engine:
        start = time.perf_counter()
        models = search(spec, data, trials, client=engine.client, seed=spec.split.seed)
        seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "scores": [round(m.valid_score, 8) for m in models]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, help="(internal) run one side with this many workers")
    parser.add_argument("--domain", default="manufacturing")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.side:
        side(args.domain, args.side, args.trials)
        return
    sides = {1: Measurement("1 worker"), 2: Measurement("2 workers")}
    scores: dict[int, list[float]] = {}
    for _ in range(args.repeats):
        for workers, measurement in sides.items():
            cmd = [sys.executable, __file__, "--side", str(workers), "--domain", args.domain]
            cmd += ["--trials", str(args.trials)]
            sample, out = run_once(cmd)
            report = json.loads(out.strip().splitlines()[-1])
            sample.seconds = report["seconds"]
            measurement.samples.append(sample)
            scores[workers] = report["scores"]
    per_minute = {w: args.trials * 60 / m.median_seconds for w, m in sides.items()}
    payload = {
        "domain": args.domain,
        "trials": args.trials,
        "one_worker": sides[1],
        "two_workers": sides[2],
        "trials_per_minute": per_minute,
        "ratio": per_minute[2] / per_minute[1],
        "same_random_start_models": scores[1][:STARTUP_TRIALS] == scores[2][:STARTUP_TRIALS],
    }
    print(
        f"{args.domain}: {per_minute[1]:.1f} trials/min with 1 worker, {per_minute[2]:.1f} with 2 "
        f"= {payload['ratio']:.2f}x (same random-start models: {payload['same_random_start_models']})"
    )
    print(write("trials", payload))


if __name__ == "__main__":
    main()
