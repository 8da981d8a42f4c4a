"""A no-change re-run against the first run: what the stage cache saves.

    make bench-cache
    python bench/cache.py [--target all|finance|medical|manufacturing ...] [--trials 8] [--repeat 3]

Each target runs as the user runs it, ``lepton run TARGET --trials N --json`` (``--all`` for
``all``), in a fresh LEPTON_HOME: once to fill the cache (the first run), then ``--repeat``
times with nothing changed (up to date: the earlier result, without Prefect, Dask or a new
MLflow run, ``lepton.flows.rerun``), then once with one more trial (the stage cache: preprocess,
features and train reused, optimise onward run), then once with ``--no-cache`` on the same home
(the same work as the first run, with the database and registry already there: the control).
Wall time of the whole command, process start included; medians. Writes ``bench/results/cache.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import Measurement, run_once, write  # noqa: E402 (after the path above)

BIN = Path(sys.executable).parent


def _payloads(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _stages(out: str) -> dict[str, list[str]]:
    """Per domain, the stages reused from the cache."""
    return {p["domain"]: [name for name, stage in p["stages"].items() if stage["cached"]] for p in _payloads(out)}


def target(name: str, trials: int, repeat: int) -> dict:
    args = ["--all"] if name == "all" else [name]
    cmd = [str(BIN / "lepton"), "run", *args, "--trials", str(trials), "--json"]
    with tempfile.TemporaryDirectory() as home:
        env = {"LEPTON_HOME": home, "DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        first = Measurement("first run")
        sample, out = run_once(cmd, env=env)
        first.samples.append(sample)
        assert not any(_stages(out).values()), "the first run found a cache entry"
        rerun, control = Measurement("no-change re-run"), Measurement("re-run with --no-cache")
        budget = Measurement("re-run with one more trial")
        up_to_date: dict[str, bool] = {}
        for _ in range(repeat):
            sample, out = run_once(cmd, env=env)
            rerun.samples.append(sample)
            up_to_date = {p["domain"]: p["up_to_date"] for p in _payloads(out)}
        more = [*cmd[:-3], "--trials", str(trials + 1), "--json"]
        sample, out = run_once(more, env=env)
        budget.samples.append(sample)
        reused = _stages(out)
        sample, _ = run_once([*cmd, "--no-cache"], env=env)
        control.samples.append(sample)
    row = {
        "first": first,
        "rerun": rerun,
        "one_more_trial": budget,
        "no_cache": control,
        "up_to_date": up_to_date,
        "reused_with_one_more_trial": reused,
        "ratio": rerun.median_seconds / first.median_seconds,
        "ratio_one_more_trial": budget.median_seconds / first.median_seconds,
        "ratio_to_no_cache": rerun.median_seconds / control.median_seconds,
    }
    print(
        f"{name}: first {first.median_seconds:.1f}s, no-change re-run {rerun.median_seconds:.1f}s "
        f"({row['ratio']:.3f}x, up to date {up_to_date}), one more trial {budget.median_seconds:.1f}s "
        f"({row['ratio_one_more_trial']:.3f}x, reused {reused}), --no-cache {control.median_seconds:.1f}s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", nargs="+", default=["all", "finance"])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {"trials": args.trials, "targets": {t: target(t, args.trials, args.repeat) for t in args.target}}
    print(write("cache", results))


if __name__ == "__main__":
    main()
