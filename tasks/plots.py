"""Plots logged with each run: ROC/PR curves or a confusion matrix, and feature importance."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from lepton.core.scoring import ENSEMBLE
from lepton.tasks.families import FAMILIES

ENSEMBLE_COLOUR = "tab:purple"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_pr_figure(y: np.ndarray, curves: dict[str, np.ndarray]):
    plt = _pyplot()
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(10, 4.5))
    for label, scores in curves.items():
        fpr, tpr, _ = skm.roc_curve(y, scores)
        precision, recall, _ = skm.precision_recall_curve(y, scores, drop_intermediate=True)
        roc.plot(fpr, tpr, label=f"{label} (AUC {skm.roc_auc_score(y, scores):.3f})")
        pr.plot(recall, precision, label=f"{label} (AP {skm.average_precision_score(y, scores):.3f})")
    roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
    pr.set(xlabel="recall", ylabel="precision", title="Precision-recall (holdout)")
    roc.legend(loc="lower right")
    pr.legend(loc="upper right")
    fig.tight_layout()
    return fig


def confusion_figure(y: np.ndarray, pred: np.ndarray, labels: list):
    plt = _pyplot()
    matrix = skm.confusion_matrix(y, pred, labels=np.arange(len(labels)), normalize="true")
    fig, ax = plt.subplots(figsize=(8, 7))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="true",
        title="Confusion matrix (holdout, row-normalised)",
    )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def residual_figure(y: np.ndarray, pred: np.ndarray):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(y, pred, s=4, alpha=0.4)
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([low, high], [low, high], "k:")
    ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (holdout)")
    fig.tight_layout()
    return fig


def importance_figure(names: list[str], importance: np.ndarray, top: int = 20):
    plt = _pyplot()
    order = np.argsort(importance)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(order) + 1.2))
    ax.barh([names[i] for i in order], importance[order])
    ax.set(
        title="Feature importance",
        xlabel="importance: gain (trees), |standardised coefficient| (linear),\nor mean |first-layer weight| (MLP)",
    )
    fig.tight_layout()
    return fig


def pareto_figure(trials: list, metric: str, budget_ms: float):
    """Validation quality against single-row latency for every trial (``TrialRecord``s): the
    Pareto front joined, the chosen model starred, pruned trials greyed, the budget a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for family, colour in [*((f.name, f.colour) for f in FAMILIES.values()), (ENSEMBLE, ENSEMBLE_COLOUR)]:
        done = [t for t in trials if t.family == family and t.state == "complete"]
        if done:
            ax.scatter([t.latency_ms for t in done], [abs(t.valid_score) for t in done], c=colour, s=22, label=family)
    pruned = [t for t in trials if t.state == "pruned"]
    if pruned:
        ax.scatter(
            [t.latency_ms for t in pruned], [abs(t.valid_score) for t in pruned], c="lightgrey", s=16, label="pruned"
        )
    front = sorted((t for t in trials if t.on_front), key=lambda t: t.latency_ms)
    ax.plot([t.latency_ms for t in front], [abs(t.valid_score) for t in front], "k--", lw=0.8, label="Pareto front")
    for t in trials:
        if t.chosen:
            ax.scatter([t.latency_ms], [abs(t.valid_score)], marker="*", s=260, c="red", zorder=5, label="chosen")
    ax.axvline(budget_ms, color="red", lw=0.8, ls=":", label=f"budget {budget_ms:g} ms")
    ax.set_xscale("log")
    # Plain tick labels: log axes default to mathtext ("$10^{-1}$"), whose parser is not safe
    # when domains run in threads side by side (``lepton run --all``).
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(
        xlabel="single-row latency, model only (ms, log scale)",
        ylabel=f"validation {metric}",
        title="Quality against latency: every trial",
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    _pyplot().close(fig)
