"""Model families, one module each, registered here in one place.

A family (``base.Family``) gives the search its space (``suggest``), fits a model on prepared
data (``fit``, returning a safe payload), and says how its chosen model is refitted. The stages
ask this registry and never name a family: ``lepton.tasks.train.train_model`` fits through it,
``lepton.tasks.optimise`` searches the families ``available()`` here, the Pareto plot takes each
family's colour. The served side (file format, predictor) is ``lepton.core.scoring.MODELS``.

A new family is a module here with a ``Family`` subclass, its entry in ``FAMILIES``, its
predictor in ``lepton.core.scoring.MODELS``, and its tests.
"""

from __future__ import annotations

from lepton.tasks.families.base import Family, Fit
from lepton.tasks.families.linear import Linear
from lepton.tasks.families.mlp import MLP
from lepton.tasks.families.trees import Pruning, Trees

FAMILIES: dict[str, Family] = {f.name: f for f in (Linear(), Trees(), MLP())}  # simplest first


def get(name: str) -> Family:
    """The registered family called ``name``; a ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; use one of {', '.join(map(repr, FAMILIES))}") from None


def searched() -> list[str]:
    """The families the search offers here, simplest first (the MLP when torch is installed)."""
    return [name for name, family in FAMILIES.items() if family.available()]


__all__ = ["FAMILIES", "Family", "Fit", "Pruning", "get", "searched"]
