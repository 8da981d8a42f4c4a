"""What a model family is to Lepton: a search space, a fit, and how its chosen model is refitted.

The served side of a family (its safe file format and the NumPy/XGBoost predictor that scores
it) is ``lepton.core.scoring.MODELS``, which a logged model carries without Lepton installed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from lepton.domains.spec import DomainSpec
    from lepton.tasks.preprocess import PreparedData


@dataclass(frozen=True)
class Fit:
    """One fitted model as its family returns it: the safe payload and how the fit went."""

    payload: Any  # plain numbers (a dict) or a format's bytes, as ``lepton.core.scoring.MODELS`` reads
    device: str = "cpu"  # where it was fitted
    best_iteration: int | None = None  # early stopping's choice (rounds, epochs)
    workers: int = 0  # Dask workers that trained it together; 0: one process
    curve: tuple[float, ...] = ()  # best validation loss so far at each check (pruning reads it)
    pruned: bool = False  # stopped by the pruning rule: not a candidate


class Family(ABC):
    """A model family. Subclasses set the class attributes and the two abstract methods;
    ``lepton.tasks.families.FAMILIES`` registers one instance of each."""

    name: ClassVar[str]  # as tagged on runs and stored in a bundle's meta.json
    colour: ClassVar[str]  # its points in the Pareto plot
    summary: ClassVar[str]  # one line: what it is and how it is exported
    refits_on_all_rows: ClassVar[bool] = False  # the chosen model is fitted again on every row

    def available(self) -> bool:
        """Whether the search offers it here (an optional extra may be missing)."""
        return True

    @abstractmethod
    def suggest(self, trial: Any, task: str) -> dict[str, Any]:
        """Its hyper-parameters for one Optuna trial."""

    @abstractmethod
    def fit(
        self,
        spec: DomainSpec,
        data: PreparedData,
        params: dict[str, Any],
        device: str = "cpu",
        client: Any = None,
        pruning: Any = None,
    ) -> Fit:
        """Fit on ``data.train`` (early stopping, if any, on ``data.valid``); ``pruning`` is the
        search's stopping rule for a family that can stop a trial early (``trees.Pruning``)."""

    def refit_params(self, params: dict[str, Any], best_iteration: int | None) -> dict[str, Any] | None:
        """The parameters to fit the chosen model again on train + validation with, or None to
        keep its fit."""
        return dict(params)
