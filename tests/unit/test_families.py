"""The model-family registry: every family the search offers fits, round-trips through a safe
bundle and scores the same; a new family registered in its two places is searched and served."""

from typing import Any

import numpy as np
import optuna
import pytest

from lepton.core import scoring
from lepton.core.scoring import BundleMeta, LinearModel, Scorer, write_bundle
from lepton.domains import get_spec
from lepton.tasks import families
from lepton.tasks.families import FAMILIES, Family, Fit
from lepton.tasks.families.linear import fit_linear
from lepton.tasks.optimise import search
from lepton.tasks.preprocess import load_domain_data, prepare
from lepton.tasks.train import train_model

SPEC = get_spec("medical")


@pytest.fixture(scope="module")
def data():
    return prepare(SPEC, *load_domain_data(SPEC))


@pytest.mark.parametrize("name", families.searched())
def test_each_family_fits_from_its_own_space_and_its_bundle_scores_the_same(tmp_path, data, name):
    family = families.get(name)
    params = family.suggest(optuna.trial.FixedTrial(_defaults(name)), SPEC.task)
    model = train_model(SPEC, data, name, params)
    assert model.family == name and 0.6 < model.valid_score <= 1.0
    meta = BundleMeta(domain=SPEC.name, task=SPEC.task, family=name, classes=("0", "1"), threshold=0.5)
    bundle = write_bundle(tmp_path / name, meta=meta, encoder=data.encoder, payload=model.payload, reference={})
    assert [p.name for p in bundle.iterdir() if p.name.startswith("model.")] == [scoring.MODELS[name][0]]
    served = Scorer.from_dir(bundle).scores(data.valid.frame)
    np.testing.assert_allclose(served, model.predict(data.valid.X), rtol=1e-5, atol=1e-6)
    again = family.refit_params(model.params, model.best_iteration)
    assert again is None or set(model.params) <= set(again)


def test_an_unknown_family_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"'forest'.*'linear', 'xgboost'"):
        families.get("forest")
    with pytest.raises(ValueError, match="unknown model family 'forest'"):
        scoring.load_model("forest", b"", "binary", 3)


class Shrunk(Family):
    """A toy family: a linear model with its coefficients halved (served as a linear model)."""

    name = "shrunk"
    colour = "tab:purple"
    summary = "a linear model, shrunk"

    def suggest(self, trial: Any, task: str) -> dict[str, Any]:
        return {"C": trial.suggest_float("shrunk_C", 0.01, 1.0, log=True)}

    def fit(self, spec, data, params, device="cpu", client=None, pruning=None) -> Fit:
        state = fit_linear(data.train.X, data.train.y, spec.task, C=params["C"])
        return Fit({**state, "coef": (np.asarray(state["coef"]) / 2).tolist()})


def test_a_new_family_is_one_registration_for_training_and_one_for_serving(monkeypatch, data):
    registry = {"linear": FAMILIES["linear"], "shrunk": Shrunk()}  # without the slower families, for time
    monkeypatch.setattr(families, "FAMILIES", registry)
    monkeypatch.setitem(scoring.MODELS, "shrunk", ("model.json", lambda state, task, n: LinearModel(state)))
    assert families.searched() == ["linear", "shrunk"]
    models = search(SPEC, data, n_trials=12, seed=3)
    shrunk = [m for m in models if m.family == "shrunk"]
    assert shrunk, "the search offers every registered family"
    assert all(m.serving is not None and 0.5 < m.valid_score <= 1.0 for m in shrunk)


def _defaults(name: str) -> dict[str, Any]:
    """A fixed point of each family's space, small enough to fit in seconds."""
    return {
        "linear": {"C": 1.0},
        "xgboost": {
            "max_depth": 3,
            "learning_rate": 0.2,
            "min_child_weight": 1.0,
            "subsample": 0.9,
            "colsample_bytree": 0.9,
            "reg_lambda": 1.0,
        },
        "mlp": {"hidden": 16, "layers": 1, "mlp_learning_rate": 1e-3, "weight_decay": 1e-4, "batch_size": 256},
    }[name]
