"""TEP: what each piece adds to macro-F1 on the test files, one default XGBoost fit per row.

    python bench/tep_ablation.py

Window features (per run: rolling mean/std over the last 10 samples, first difference), then a
refit on train + validation (the tail 20% of each training run), then decision smoothing over
the run's last k samples. This reads the test files for every figure: it explains the pipeline's
choices, it is not how they are validated (see the closing notes of issue 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import xgboost as xgb
from sklearn.metrics import f1_score

DATA = Path(__file__).resolve().parents[1] / "domains" / "data"
PARAMS = {"objective": "multi:softprob", "num_class": 22, "tree_method": "hist", "max_depth": 6,
          "learning_rate": 0.1, "verbosity": 0, "eval_metric": "mlogloss"}  # fmt: skip


def features(frame: pl.DataFrame, window: int = 10) -> pl.DataFrame:
    sensors = [c for c in frame.columns if c.startswith("xm")]
    exprs = []
    for name in sensors:
        x = pl.col(name).cast(pl.Float64)
        exprs += [
            x.rolling_mean(window, min_samples=1).over("run").alias(f"{name}_m"),
            x.rolling_std(window, min_samples=2).over("run").alias(f"{name}_s"),
            x.diff().over("run").alias(f"{name}_d"),
        ]
    return frame.sort(["run", "sample"]).with_columns(exprs)


def main() -> None:
    train = features(pl.read_parquet(DATA / "tep_train.parquet"))
    test = features(pl.read_parquet(DATA / "tep_test.parquet"))
    cols = [c for c in train.columns if c not in ("run", "sample", "fault")]
    tail = pl.col("sample").rank("ordinal").over("run") > pl.len().over("run") * 0.8
    fit, valid = train.filter(~tail), train.filter(tail)
    dvalid = xgb.DMatrix(valid[cols].to_numpy(), valid["fault"].to_numpy())
    dfit = xgb.DMatrix(fit[cols].to_numpy(), fit["fault"].to_numpy())
    booster = xgb.train(PARAMS, dfit, 400, evals=[(dvalid, "valid")], early_stopping_rounds=30, verbose_eval=False)
    rounds = booster.best_iteration + 1
    y = test["fault"].to_numpy()
    X = xgb.DMatrix(test[cols].to_numpy())

    def f1(p: np.ndarray) -> float:
        return f1_score(y, p.argmax(axis=1), average="macro")

    print(f"window features:             {f1(booster[:rounds].predict(X)):.4f}")
    refit = xgb.train(PARAMS, xgb.DMatrix(train[cols].to_numpy(), train["fault"].to_numpy()), rounds)
    proba = refit.predict(X)
    print(f"+ refit on train+validation: {f1(proba):.4f}")
    for k in (20, 40, 60, 80, 120):
        smoothed = (
            pl.DataFrame(proba)
            .with_columns(pl.Series("run", test["run"].to_numpy()))
            .with_columns(pl.all().exclude("run").rolling_mean(k, min_samples=1).over("run"))
            .drop("run")
            .to_numpy()
        )
        print(f"+ smoothing over {k:>3} samples: {f1(smoothed):.4f}")


if __name__ == "__main__":
    main()
