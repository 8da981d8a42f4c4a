"""``linear``: regularised logistic (binary/multiclass) or ridge regression on median-imputed,
standardised features; exported as plain numbers. Also the baseline every model must beat."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge

from lepton.core.scoring import Standardiser
from lepton.domains.spec import DomainSpec
from lepton.tasks.families.base import Family, Fit
from lepton.tasks.preprocess import PreparedData


def standardisation(X: np.ndarray) -> dict[str, list[float]]:
    """Median fill for missing values, then mean and scale: fitted on training rows only."""
    with warnings.catch_warnings():  # an all-missing column has no median: it is filled with 0
        warnings.simplefilter("ignore", RuntimeWarning)
        fill = np.nanmedian(np.where(np.isfinite(X), X, np.nan), axis=0)
    fill = np.where(np.isnan(fill), 0.0, fill)
    Xf = np.array(X, dtype=np.float64)  # filled in place: one float64 copy of a large sample, not three
    np.copyto(Xf, fill, where=np.isnan(Xf))
    mean, scale = Xf.mean(axis=0), Xf.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return {"fill": fill.tolist(), "mean": mean.tolist(), "scale": scale.tolist()}


def fit_linear(X: np.ndarray, y: np.ndarray, task: str, C: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Fit on median-imputed, standardised features; return the model as plain numbers."""
    state = {"task": task, **standardisation(X)}
    Z = Standardiser(state).standardise(X)
    if task == "regression":
        model = Ridge(alpha=1.0 / C).fit(Z, y)
        coef, intercept = np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_)
    else:
        model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(Z, y)
        coef, intercept = model.coef_, model.intercept_
    return {**state, "coef": coef.tolist(), "intercept": intercept.tolist()}


class Linear(Family):
    name = "linear"
    colour = "tab:blue"
    summary = "regularised logistic or ridge regression, exported as plain numbers"

    def suggest(self, trial: Any, task: str) -> dict[str, Any]:
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}

    def fit(
        self,
        spec: DomainSpec,
        data: PreparedData,
        params: dict[str, Any],
        device: str = "cpu",
        client: Any = None,
        pruning: Any = None,
    ) -> Fit:
        C = float(params.get("C", 1.0))
        return Fit(fit_linear(data.train.X, data.train.y, spec.task, C=C, seed=spec.split.seed))
