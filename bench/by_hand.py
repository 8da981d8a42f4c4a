"""What a Dask user writes by hand to train on a partitioned table: the peer of Lepton's final fit.

    python bench/by_hand.py DIR --address tcp://127.0.0.1:8786 --params '{"max_depth": 6, ...}' --rounds 300

``dask.dataframe.read_parquet`` -> categories known -> a seeded 60/20/20 random split ->
``xgboost.dask.DaskQuantileDMatrix`` (native categoricals) -> ``xgboost.dask.train`` with the given
parameters and rounds (early stopping on the validation part, as Lepton does) -> holdout ROC AUC.
No schema check, no leakage sentinel, no recipe, no calibration, no registry: the floor a pipeline
tool is measured against. Prints one JSON line: seconds per step, rows, ROC AUC.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--address", required=True)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--target", default="Class")
    parser.add_argument("--positive", default="bad")
    parser.add_argument("--drop", nargs="*", default=["rownames"])
    args = parser.parse_args()

    import dask.dataframe as dd
    import xgboost as xgb
    import xgboost.dask
    from distributed import Client
    from sklearn.metrics import roc_auc_score

    steps: dict[str, float] = {}
    start = time.perf_counter()
    with Client(args.address) as client:
        frame = dd.read_parquet(args.data).drop(columns=args.drop)
        y = (frame[args.target] == args.positive).astype("float32")
        X = frame.drop(columns=[args.target])
        text = [c for c, t in X.dtypes.items() if str(t) in ("object", "string", "str")]
        X = X.astype({c: "category" for c in text}).categorize(columns=text)
        X, y = client.persist([X, y])
        steps["read"] = time.perf_counter() - start
        train_X, valid_X, test_X = X.random_split([0.6, 0.2, 0.2], random_state=0)
        train_y, valid_y, test_y = y.random_split([0.6, 0.2, 0.2], random_state=0)
        mark = time.perf_counter()
        params = {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist"}
        params.update(json.loads(args.params))
        bins = int(params.get("max_bin", 256))
        train = xgb.dask.DaskQuantileDMatrix(client, train_X, train_y, enable_categorical=True, max_bin=bins)
        valid = xgb.dask.DaskQuantileDMatrix(client, valid_X, valid_y, ref=train, enable_categorical=True, max_bin=bins)
        output = xgb.dask.train(
            client, params, train, num_boost_round=args.rounds, evals=[(valid, "valid")], early_stopping_rounds=30
        )
        steps["fit"] = time.perf_counter() - mark
        mark = time.perf_counter()
        scores = xgb.dask.predict(client, output["booster"], test_X)
        truth, scores = client.compute([test_y, scores], sync=True)
        steps["score"] = time.perf_counter() - mark
        rows = len(truth)
        auc = float(roc_auc_score(truth, scores))
    booster = output["booster"]
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "steps": steps,
                "holdout_rows": rows,
                "roc_auc": auc,
                "rounds": booster.num_boosted_rounds(),  # early stopping may end it before --rounds
                "best_iteration": booster.best_iteration,
            }
        )
    )


if __name__ == "__main__":
    main()
