"""The torch MLP family: trained with torch, stored as plain numbers, scored with NumPy."""

import json

import numpy as np
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from lepton.core.scoring import MLPModel, load_model
from lepton.domains import get_spec
from lepton.tasks.families import searched
from lepton.tasks.families.linear import fit_linear
from lepton.tasks.families.mlp import fit_mlp, torch_device
from lepton.tasks.optimise import search
from lepton.tasks.preprocess import load_domain_data, prepare

# the torch extra is optional (`make TORCH= install`): without it the MLP family is not offered
torch = pytest.importorskip("torch", reason="the torch extra is not installed: no MLP family to test")


def _rings(n=3000, seed=0):
    """Inside or outside a circle: no linear model separates it."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = ((X[:, 0] ** 2 + X[:, 1] ** 2) > 1.4).astype(int)
    return X, y


def test_mlp_learns_what_a_linear_model_cannot_and_scores_without_torch():
    X, y = _rings()
    payload, _ = fit_mlp(X[:2000], y[:2000], X[2000:2500], y[2000:2500], "binary", 2, {"hidden": 32})
    model = load_model("mlp", json.loads(json.dumps(payload)), "binary", 4)
    assert isinstance(model, MLPModel)
    mlp_auc = roc_auc_score(y[2500:], model.predict(X[2500:]))
    linear_auc = roc_auc_score(
        y[2500:], load_model("linear", fit_linear(X[:2000], y[:2000], "binary"), "binary", 4).predict(X[2500:])
    )
    assert mlp_auc > 0.95 and linear_auc < 0.65
    # The NumPy forward pass is the torch network's: rebuild it in torch and compare.
    layers = [torch.nn.Linear(len(w[0]), len(w)) for w in (layer["weight"] for layer in payload["layers"])]
    with torch.no_grad():
        for layer, state in zip(layers, payload["layers"], strict=True):
            layer.weight.copy_(torch.tensor(state["weight"]))
            layer.bias.copy_(torch.tensor(state["bias"]))
    net = torch.nn.Sequential(*[m for layer in layers[:-1] for m in (layer, torch.nn.ReLU())], layers[-1]).double()
    z = net(torch.tensor(model.standardise(X[2500:].astype(np.float64)))).detach().numpy().ravel()
    np.testing.assert_allclose(model.predict(X[2500:]), 1 / (1 + np.exp(-z)), rtol=1e-6)


def test_mlp_is_reproducible_and_handles_missing_values():
    X, y = _rings(1200)
    X[::7, 2] = np.nan
    first, epoch = fit_mlp(X[:800], y[:800], X[800:], y[800:], "binary", 2, {"hidden": 16, "epochs": 15})
    second, _ = fit_mlp(X[:800], y[:800], X[800:], y[800:], "binary", 2, {"hidden": 16, "epochs": 15})
    assert first == second and 0 <= epoch < 15
    assert np.isfinite(MLPModel(first).predict(X)).all()


def test_an_mlp_sees_at_most_its_budget_of_examples(monkeypatch):
    from lepton.tasks.families import mlp

    X, y = _rings(1200)
    args = (X[:800], y[:800], X[800:], y[800:], "binary", 2, {"hidden": 16, "epochs": 15, "batch_size": 128})
    _, free = fit_mlp(*args)
    monkeypatch.setattr(mlp, "MLP_MAX_EXAMPLES", 800 * 2)  # two epochs of these rows
    _, capped = fit_mlp(*args)
    assert free >= 2 and capped <= 1  # best epochs, counted from 0


def test_mlp_regression_and_multiclass_outputs():
    X, _ = _rings(2000)
    target = 50.0 + 10.0 * np.sin(X[:, 0]) + 5.0 * X[:, 1] ** 2
    payload, _ = fit_mlp(X[:1500], target[:1500], X[1500:1800], target[1500:1800], "regression", 0, {"hidden": 32})
    assert r2_score(target[1800:], MLPModel(payload).predict(X[1800:])) > 0.8  # the target's scale is undone
    classes = np.digitize(X[:, 0], [-0.5, 0.5])
    payload, _ = fit_mlp(X[:1500], classes[:1500], X[1500:1800], classes[1500:1800], "multiclass", 3, {})
    probabilities = MLPModel(payload).predict(X[1800:])
    assert probabilities.shape == (200, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert (probabilities.argmax(axis=1) == classes[1800:]).mean() > 0.9


def test_the_optimiser_searches_the_mlp_family_when_torch_is_installed():
    assert searched() == ["linear", "xgboost", "mlp"]
    spec = get_spec("medical")
    data = prepare(spec, *load_domain_data(spec))
    models = search(spec, data, n_trials=10, seed=spec.split.seed)
    mlps = [m for m in models if m.family == "mlp"]
    assert mlps and all(0.5 < m.valid_score <= 1.0 for m in mlps)
    assert {"hidden", "layers", "learning_rate", "weight_decay", "batch_size"} <= set(mlps[0].params)


def test_mlp_asked_for_cuda_trains_wherever_torch_can_and_records_where():
    X, y = _rings(600)
    payload, _ = fit_mlp(X[:400], y[:400], X[400:], y[400:], "binary", 2, {"epochs": 2}, device="cuda")
    assert len(payload["layers"]) == 3  # two hidden layers and the output
    assert torch_device("cuda") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_device("cpu") == "cpu"


def test_a_diverging_mlp_still_returns_a_usable_model():
    X, y = _rings(600)
    X[0, 0] = np.nan
    payload, _ = fit_mlp(X[:400], y[:400], X[400:], y[400:], "binary", 2, {"learning_rate": 1e6, "epochs": 3})
    scores = MLPModel(payload).predict(X[400:])
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
