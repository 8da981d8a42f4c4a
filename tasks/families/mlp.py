"""``mlp``: a small ReLU network trained with torch, offered when torch is installed (the
``torch`` extra); exported as plain weights and served with NumPy."""

from __future__ import annotations

import importlib.util
import itertools
from typing import Any

import numpy as np

from lepton.core.engine import cpu_threads
from lepton.core.scoring import Standardiser
from lepton.domains.spec import DomainSpec
from lepton.tasks.families.base import Family, Fit
from lepton.tasks.families.linear import standardisation
from lepton.tasks.preprocess import PreparedData

MLP_PATIENCE = 6  # epochs without a better validation loss before an MLP stops
MLP_MAX_STEPS = 20_000  # optimiser steps at most: on a million rows, a few epochs
# Training examples seen at most (rows x epochs): a search trial on a million rows runs three
# epochs whatever its batch size (at 1024 a row a step, the step cap alone allowed 20), so MLP
# trials stop costing most of a large table's search. The vendored tables are under it (TEP's
# MLP trials fit 8,464 rows: 354 epochs allowed, 60 run).
MLP_MAX_EXAMPLES = 3_000_000


def torch_available() -> bool:
    """The MLP family is offered when torch is installed (``pip install .[torch]``)."""
    return importlib.util.find_spec("torch") is not None


def torch_device(device: str) -> str:
    """``cuda`` when asked for and torch sees a GPU; else ``cpu``."""
    import torch

    return "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"


def _mlp_network(widths: list[int], rng: np.random.Generator, on: Any) -> tuple[Any, list[Any]]:
    """ReLU layers of the given widths, He-initialised from ``rng`` (not torch's global seed)."""
    import torch
    from torch import nn

    linears = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layer = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_out, fan_in))))
            layer.bias.zero_()
        linears.append(layer)
    net = nn.Sequential(*[m for layer in linears[:-1] for m in (layer, nn.ReLU())], linears[-1]).to(on)
    return net, linears


def _numbers(parameter: Any) -> np.ndarray:
    """A copy of a torch parameter's values (``.numpy()`` alone would share, and change)."""
    return parameter.detach().cpu().numpy().astype(np.float64)


def fit_mlp(
    X: np.ndarray,
    y: np.ndarray,
    X_valid: np.ndarray,
    y_valid: np.ndarray,
    task: str,
    n_classes: int,
    params: dict[str, Any],
    device: str = "cpu",
    seed: int = 0,
) -> tuple[dict[str, Any], int]:
    """A ReLU MLP trained with torch (AdamW, mini-batches, early stopping on validation loss);
    return (the model as plain numbers, best epoch). Weights start from a NumPy generator seeded
    with ``seed`` and batches are shuffled by it, so concurrent trials stay reproducible."""
    import torch
    from torch import nn

    torch.set_num_threads(cpu_threads())
    rng = np.random.default_rng(seed)
    state = {"task": task, **standardisation(X)}
    scaler = Standardiser(state)
    on = torch.device(torch_device(device))

    def tensor(a: np.ndarray, dtype=torch.float32) -> torch.Tensor:
        # an array that came through Dask is read-only: torch would warn on the screen, so copy it
        return torch.as_tensor(np.require(a, requirements=["C", "W"]), dtype=dtype, device=on)

    outputs = n_classes if task == "multiclass" else 1
    y_mean, y_scale = (float(np.mean(y)), float(np.std(y)) or 1.0) if task == "regression" else (0.0, 1.0)
    widths = [X.shape[1], *[int(params.get("hidden", 64))] * int(params.get("layers", 2)), outputs]
    net, linears = _mlp_network(widths, rng, on)
    if task == "multiclass":
        loss_fn: nn.Module = nn.CrossEntropyLoss()
        target, target_valid = tensor(y, torch.long), tensor(y_valid, torch.long)
    else:
        loss_fn = nn.BCEWithLogitsLoss() if task == "binary" else nn.MSELoss()
        target = tensor((np.asarray(y, float) - y_mean) / y_scale).unsqueeze(1)
        target_valid = tensor((np.asarray(y_valid, float) - y_mean) / y_scale).unsqueeze(1)
    inputs, inputs_valid = tensor(scaler.standardise(X)), tensor(scaler.standardise(X_valid))
    rate, decay = float(params.get("learning_rate", 1e-3)), float(params.get("weight_decay", 1e-4))
    optimiser = torch.optim.AdamW(net.parameters(), lr=rate, weight_decay=decay)
    batch = int(params.get("batch_size", 256))
    # Until an epoch improves on it (a diverging run never does), the model is its start.
    best_loss, best_epoch, waited = np.inf, 0, 0
    best_state = [(_numbers(m.weight), _numbers(m.bias)) for m in linears]
    budget = min(MLP_MAX_STEPS // -(-len(y) // batch), MLP_MAX_EXAMPLES // max(1, len(y)))
    epochs = min(int(params.get("epochs", 60)), max(1, budget))
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            rows = torch.as_tensor(order[start : start + batch], device=on)
            optimiser.zero_grad()
            loss_fn(net(inputs[rows]), target[rows]).backward()
            optimiser.step()
        net.eval()
        with torch.no_grad():
            loss = float(loss_fn(net(inputs_valid), target_valid))
        if loss < best_loss - 1e-6:
            best_loss, best_epoch, waited = loss, epoch, 0
            best_state = [(_numbers(m.weight), _numbers(m.bias)) for m in linears]
        else:
            waited += 1
            if waited >= MLP_PATIENCE:
                break
    weight, bias = best_state[-1]
    best_state[-1] = (weight * y_scale, bias * y_scale + y_mean)  # undo the target's scaling
    layers = [{"weight": w.tolist(), "bias": b.tolist()} for w, b in best_state]
    return {**state, "layers": layers}, best_epoch


class MLP(Family):
    name = "mlp"
    colour = "tab:green"
    summary = "a ReLU network trained with torch (the torch extra), exported as plain weights"

    def available(self) -> bool:
        return torch_available()

    def suggest(self, trial: Any, task: str) -> dict[str, Any]:
        return {
            "hidden": trial.suggest_int("hidden", 16, 256, log=True),
            "layers": trial.suggest_int("layers", 1, 3),
            "learning_rate": trial.suggest_float("mlp_learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512, 1024]),
            "epochs": 60,
        }

    def fit(
        self,
        spec: DomainSpec,
        data: PreparedData,
        params: dict[str, Any],
        device: str = "cpu",
        client: Any = None,
        pruning: Any = None,
    ) -> Fit:
        train, valid = data.train, data.valid
        payload, best = fit_mlp(
            train.X, train.y, valid.X, valid.y, spec.task, len(data.classes), params, device, spec.split.seed
        )
        return Fit(payload, device=torch_device(device), best_iteration=best)

    def refit_params(self, params: dict[str, Any], best_iteration: int | None) -> dict[str, Any] | None:
        return None  # its epochs count is not comparable on more rows: it keeps its fit
