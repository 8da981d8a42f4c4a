"""The same stage functions as ``lepton run``, called as a bare script: no Prefect, no MLflow.

    python bench/bare_pipeline.py finance [--data PATH] [--trials N]

Prints one JSON line with the holdout metrics, so both sides can be checked for equal work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lepton.core.engine import choose_device
from lepton.domains import get_spec
from lepton.tasks.evaluation import evaluate_holdout
from lepton.tasks.monitor import drift_report, reference_statistics
from lepton.tasks.optimise import optimise
from lepton.tasks.preprocess import load_domain_data, prepare
from lepton.tasks.train import BASELINE_PARAMS, DEFAULT_TREE_PARAMS, TrainResult, train_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("domain")
    parser.add_argument("--data")
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    spec = get_spec(args.domain)
    device = choose_device("auto")
    stages: dict[str, float] = {}

    def timed(name, call):
        start = time.perf_counter()
        out = call()
        stages[name] = round(time.perf_counter() - start, 3)
        return out

    data = timed("preprocess", lambda: prepare(spec, *load_domain_data(spec, args.data)))
    trained = timed(
        "train",
        lambda: TrainResult(
            baseline=train_model(spec, data, "linear", BASELINE_PARAMS),
            default_tree=train_model(spec, data, "xgboost", DEFAULT_TREE_PARAMS, device),
        ),
    )
    result = timed("optimise", lambda: optimise(spec, data, trained, args.trials, device))
    evaluation = timed("deploy", lambda: evaluate_holdout(spec, data, trained, result))
    reference = reference_statistics(data.train.frame, spec.with_features())
    drift = timed("monitor", lambda: drift_report(spec, reference, data.holdout.frame))
    print(
        json.dumps(
            {
                "metrics": evaluation.metrics,
                "baseline_metrics": evaluation.baseline_metrics,
                "psi_max": drift.max_psi,
                "stages": stages,
            }
        )
    )


if __name__ == "__main__":
    main()
