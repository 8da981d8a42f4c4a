"""CPU against CUDA XGBoost on the same data: quality parity and the speed ratio, in minutes.

    python bench/gpu_check.py [--rows 1000000] [--rounds 300]

Uses the finance recipe on ``lepton synth``-style data (drawn from the real Lending Club sample),
Lepton's own encoder and ``lepton.tasks.families.trees.fit_xgboost``, once with ``device="cpu"`` and once with
``device="cuda"``: the same parameters, split and early stopping. Prints and writes
``bench/results/gpu_check.json``: seconds per device, the speed-up, the validation ROC AUC of each
and their difference (parity: within 0.005). Without a CUDA-capable GPU it measures the CPU side,
says so, and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import roc_auc_score

from bench.harness import write
from lepton.core.engine import gpu_visible
from lepton.core.tables import read_table
from lepton.domains import get_spec
from lepton.domains.recipes import apply
from lepton.tasks.families.trees import fit_xgboost
from lepton.tasks.preprocess import prepare_parts
from lepton.tasks.synth import synthesize

PARAMS = {"max_depth": 8, "learning_rate": 0.1, "max_bin": 256}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    spec = get_spec("finance")
    import polars as pl

    source = read_table(spec.data.resolve(spec.data.path))
    frame = pl.concat(list(synthesize(spec, source, args.rows, seed=7)))
    data = prepare_parts(spec, apply(spec.recipe_config(), frame), None)
    results = {}
    for device in ("cpu", "cuda") if gpu_visible() else ("cpu",):
        start = time.perf_counter()
        raw, best, _ = fit_xgboost(
            data.train.X, data.train.y, data.valid.X, data.valid.y, "binary", 2,
            {**PARAMS, "n_estimators": args.rounds}, device=device,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        auc = float(roc_auc_score(data.valid.y, booster.inplace_predict(data.valid.X)))
        results[device] = {"seconds": seconds, "valid_roc_auc": auc, "best_iteration": best}
        print(f"{device}: {seconds:.1f}s, validation ROC AUC {auc:.4f}, best iteration {best}", flush=True)
    payload = {"rows": args.rows, "train_rows": data.train.rows, "features": len(data.feature_names), **results}
    if "cuda" in results:
        payload["speedup"] = results["cpu"]["seconds"] / results["cuda"]["seconds"]
        payload["auc_difference"] = abs(results["cpu"]["valid_roc_auc"] - results["cuda"]["valid_roc_auc"])
        payload["parity"] = payload["auc_difference"] <= 0.005
        print(f"CUDA is {payload['speedup']:.1f}x CPU; AUC difference {payload['auc_difference']:.4f}")
    else:
        payload["note"] = "no CUDA-capable GPU visible to XGBoost: CPU only"
        print(payload["note"])
    print(write("gpu_check", payload))


if __name__ == "__main__":
    main()
