"""What a Dask user writes by hand to train on a partitioned table: the peer of Lepton's final fit.

    python bench/by_hand.py DIR --address tcp://127.0.0.1:8786 --params '{"max_depth": 6, ...}' --rounds 300

``dask.dataframe.read_parquet`` -> (``--features credit``: the five columns Lepton's finance recipe
adds, written as pandas expressions, so that both fit the same model) -> categories known -> a
seeded 60/20/20 random split ->
``xgboost.dask.DaskQuantileDMatrix`` (native categoricals) -> ``xgboost.dask.train`` with the given
parameters and rounds (early stopping on the validation part, as Lepton does) -> holdout ROC AUC.
No schema check, no leakage sentinel, no recipe beyond ``--features``, no calibration, no
registry: the floor a pipeline tool is measured against. Prints one JSON line: seconds per step, rows, ROC AUC.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

RATE_BANDS = [-np.inf, 7.0, 10.0, 13.0, 16.0, 20.0, np.inf]  # right-closed, as the recipe's


def credit(frame: pd.DataFrame) -> pd.DataFrame:
    """The finance recipe's columns, as a Dask user writes them in pandas."""
    income = frame["annual_inc"].where(frame["annual_inc"] > 0)
    limit = frame["total_il_high_credit_limit"].where(frame["total_il_high_credit_limit"] > 0)
    return frame.assign(
        loan_to_income=frame["funded_amnt"] / income,
        il_utilisation=frame["total_bal_il"] / limit,
        inquiries_total=frame[["inq_last_6mths", "inq_last_12m", "inq_fi"]].sum(axis=1).astype("float64"),
        grade=frame["sub_grade"].str[:1],
        rate_band=pd.cut(frame["int_rate"], RATE_BANDS, labels=False).astype("float64"),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--address", required=True)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--target", default="Class")
    parser.add_argument("--positive", default="bad")
    parser.add_argument("--drop", nargs="*", default=["rownames"])
    parser.add_argument("--features", choices=["none", "credit"], default="none")
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
        if args.features == "credit":
            frame = frame.map_partitions(credit)
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
                "features": len(X.columns),
                "rounds": booster.num_boosted_rounds(),  # early stopping may end it before --rounds
                "best_iteration": booster.best_iteration,
            }
        )
    )


if __name__ == "__main__":
    main()
