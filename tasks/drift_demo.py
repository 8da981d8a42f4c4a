"""``lepton simulate-drift DOMAIN -o PATH``: a realistically drifted, labelled batch in the
domain's schema, so a user can watch the monitor -> event -> retrain loop end to end.

The domain's training data (never its holdout file) is tilted (rows drawn with exponential
weights on a standardised column: a riskier applicant mix, an older cohort), then a few columns
are moved as a real-world change would move them (incomes that lost ground to inflation, a
recalibrated creatinine assay); new rows are drawn from that population by ``lepton.tasks.synth``
(jittered values, fresh labels from a model of P(target | features), new ids). For a process
domain (a group and a time column), whole runs of a few fault classes only, under new run ids:
a plant where those faults have become common. Labels come with the rows, as they would arrive
later in practice, so the batch can also be added to the training data of a retrain
(``lepton run --append``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from lepton.core.tables import read_table
from lepton.domains.spec import DomainSpec, Dtype


@dataclass(frozen=True)
class Shift:
    description: str
    tilt: dict[str, float] = field(default_factory=dict)  # column -> strength (in standard deviations)
    scale: dict[str, float] = field(default_factory=dict)  # column -> factor
    add: dict[str, float] = field(default_factory=dict)  # column -> offset
    classes: tuple = ()  # series domains: runs of these target classes only


SHIFTS = {
    "finance": Shift(
        "riskier applicants (weighted towards high interest rates) whose incomes lost 15% to inflation",
        tilt={"int_rate": 1.0},
        scale={"annual_inc": 0.85},
    ),
    "medical": Shift(
        "an older cohort (weighted towards age) measured with a creatinine assay reading 0.3 higher",
        tilt={"age": 1.2},
        add={"creatinine": 0.3},
    ),
    "manufacturing": Shift(
        "a plant where faults 1, 2, 6 and 7 (feed composition, feed loss, condenser water) have become common",
        classes=(1, 2, 6, 7),
    ),
}


def shift_for(spec: DomainSpec) -> Shift:
    """The built-in domain's shift; for a user's spec, a tilt on its first two numeric features."""
    if spec.name in SHIFTS:
        return SHIFTS[spec.name]
    numeric = [c.name for c in spec.feature_columns if c.dtype in (Dtype.FLOAT, Dtype.INT)][:2]
    if not numeric:
        raise ValueError(f"{spec.name}: no numeric feature to shift")
    return Shift(f"rows weighted towards high {' and '.join(numeric)}", tilt=dict.fromkeys(numeric, 1.0))


def drifted_batch(spec: DomainSpec, rows: int, seed: int = 0) -> tuple[pl.DataFrame, Shift]:
    from lepton.tasks.synth import synthesize

    shift = shift_for(spec)
    table = read_table(spec.data.resolve(spec.data.path))
    rng = np.random.default_rng(seed)
    group = spec.group_column
    if shift.classes and group:
        runs = table.filter(pl.col(spec.target).is_in(list(shift.classes)))[group].unique()
        population = table.filter(pl.col(group).is_in(runs.implode()))
    else:
        weights = np.ones(table.height)
        for name, strength in shift.tilt.items():
            values = table[name].cast(pl.Float64).to_numpy()
            z = (values - np.nanmean(values)) / (np.nanstd(values) or 1.0)
            weights *= np.exp(strength * np.nan_to_num(z))
        population = table[rng.choice(table.height, size=table.height, p=weights / weights.sum())]
    moved = [(pl.col(n).cast(pl.Float64) * f).alias(n) for n, f in shift.scale.items()]
    moved += [(pl.col(n).cast(pl.Float64) + d).alias(n) for n, d in shift.add.items()]
    population = population.with_columns(moved) if moved else population
    batch = pl.concat(synthesize(spec, population, rows, seed), how="vertical_relaxed")
    if group:  # runs numbered after the real ones, so the batch can join the training data
        first = int(table[group].cast(pl.Int64).max() or 0) + 1
        batch = batch.with_columns((pl.col(group).cast(pl.Int64) + first).alias(group))
    return batch, shift


def write_drifted(spec: DomainSpec, rows: int, output: Path, seed: int = 0) -> tuple[int, Shift]:
    """Write the batch (Parquet or CSV by suffix) whole: a temporary name, then a rename."""
    batch, shift = drifted_batch(spec, rows, seed)
    partial = output.with_name(f".{output.name}.partial")
    try:
        if output.suffix.lower() == ".csv":
            batch.write_csv(partial)
        else:
            batch.write_parquet(partial, compression="zstd")
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return batch.height, shift
