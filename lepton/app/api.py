"""Lepton from Python, for notebooks and scripts: the same path as ``lepton run``.

    import lepton
    result = lepton.run(data="loans.csv", target="status", template="finance")
    result.metrics, result.version, result.alias
    result.predict(new_rows)          # scored by the registered model

``data`` may be a path or a polars/pandas DataFrame. A DataFrame is written (without its PII
columns) to ``$LEPTON_HOME/inputs/`` so every run keeps a file it can be traced back to.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from lepton.core.cost import load_prices
from lepton.core.settings import DEFAULT_TRIALS, load_settings, quiet_consoles, quiet_telemetry
from lepton.domains.infer import Hints, Inferred, infer_spec, make_hints, slug
from lepton.domains.spec import DomainSpec, Role
from lepton.errors import SpecError


def prepare_environment() -> Path:
    """Embedded defaults: Prefect's home under LEPTON_HOME, telemetry off. Before Prefect loads."""
    quiet_telemetry()
    settings = load_settings()
    load_prices()  # a bad LEPTON_PRICE_* / LEPTON_WATTS_* stops here, before a flow starts
    os.environ.setdefault("PREFECT_HOME", str(settings.prefect_home))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    quiet_consoles()
    return settings.home


# ---- from a table to a spec ----------------------------------------------------------------------
def spec_from_file(path: str | Path, hints: Hints, holdout: str | Path | None = None) -> Inferred:
    """Read the user's file (sniffing its format) and infer its spec; the reader's notes first.
    A ``holdout`` file makes the split "given": it is the test set, checked against the same spec."""
    from lepton.core.partitions import is_dataset, open_dataset, read_partition
    from lepton.core.tables import load

    if is_dataset(path):  # a table stored as many files: inferred from its first file
        dataset = open_dataset(path)
        first = dataset.partitions[0]
        frame, notes = read_partition(first, hints.encoding)
        named = hints if hints.name else hints.model_copy(update={"name": slug(Path(dataset.folder).name)})
        inferred = infer_spec(frame, named, dataset.root, _holdout_path(holdout))
        seen = f"{dataset.describe()}: the spec is inferred from its first file, {first.file_name}"
        return Inferred(spec=inferred.spec, notes=(seen, *notes, *inferred.notes), why=inferred.why)
    loaded = load(path, hints.encoding)
    inferred = infer_spec(loaded.frame, hints, loaded.path, _holdout_path(holdout))
    return Inferred(spec=inferred.spec, notes=loaded.notes + inferred.notes, why=inferred.why)


def _holdout_path(holdout: str | Path | None) -> Path | str | None:
    from lepton.core.partitions import is_dataset, is_url, open_dataset
    from lepton.core.tables import resolve_input

    if holdout is not None and is_dataset(holdout):
        root = open_dataset(holdout).root
        return root if is_url(root) else Path(root)
    return resolve_input(holdout) if holdout is not None else None


def spec_from_frame(frame: Any, hints: Hints, home: Path, holdout: str | Path | None = None) -> Inferred:
    """Infer a spec for an in-memory table and keep a copy of it (PII columns left out) under
    ``home/inputs`` for the flow to read; the file name carries the content hash."""
    from lepton.core.tables import coerce_types, fingerprint

    if not isinstance(frame, pl.DataFrame):
        try:
            frame = pl.from_pandas(frame)
        except (TypeError, ValueError) as exc:
            kind = type(frame).__name__
            raise SpecError([("data", f"expected a path or a polars/pandas DataFrame, not {kind}")]) from exc
    notes: list[str] = []
    frame = coerce_types(frame, notes)
    name = hints.name or "dataframe"
    inferred = infer_spec(
        frame, hints.model_copy(update={"name": name}), Path(f"{name}.parquet"), _holdout_path(holdout)
    )
    pii = [c.name for c in inferred.spec.columns if c.role is Role.PII]
    kept = frame.drop(pii)
    inputs = home / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    target = inputs / f"{slug(name)}-{fingerprint(kept)[:16]}.parquet"
    if not target.exists():
        partial = target.with_suffix(".parquet.partial")
        kept.write_parquet(partial)
        partial.replace(target)  # atomic: a crash never leaves a half-written input behind
    spec = inferred.spec.model_copy(update={"data": inferred.spec.data.model_copy(update={"path": str(target)})})
    return Inferred(spec=spec, notes=tuple(notes) + inferred.notes, why=inferred.why)


def allow_leakage(spec: DomainSpec, columns: tuple[str, ...]) -> DomainSpec:
    if not columns:
        return spec
    # The sentinel names a recipe's columns too (a rolling mean of a sensor), so they may be allowed.
    unknown = sorted(set(columns) - {c.name for c in spec.with_features().columns})
    if unknown:
        raise SpecError([("--allow-leakage", f"{unknown} are not columns of {spec.name!r}")])
    allowed = spec.leakage.model_copy(update={"allow": tuple(sorted({*spec.leakage.allow, *columns}))})
    return spec.model_copy(update={"leakage": allowed})


# ---- the result ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResult:
    """One run: holdout metrics against the baseline, the registered version and its alias."""

    spec: DomainSpec
    notes: tuple[str, ...]
    pipeline: Any = field(repr=False)  # lepton.core.result.PipelineResult

    @property
    def metrics(self) -> dict[str, float]:
        return self.pipeline.metrics

    @property
    def baseline_metrics(self) -> dict[str, float]:
        return self.pipeline.baseline_metrics

    @property
    def primary_metric(self) -> str:
        return self.spec.primary_metric

    @property
    def version(self) -> str:
        return self.pipeline.version

    @property
    def promoted(self) -> bool:
        return self.pipeline.promoted

    @property
    def alias(self) -> str:
        return "champion" if self.promoted else "challenger"

    @property
    def reasons(self) -> list[str]:
        return self.pipeline.reasons

    @property
    def model_name(self) -> str:
        return self.spec.model_name

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    @functools.cached_property
    def _model(self):
        import mlflow.pyfunc

        from lepton.core import tracking

        tracking.configure(load_settings())
        return mlflow.pyfunc.load_model(self.model_uri)

    def predict(self, rows: Any):
        """Score rows (polars or pandas, typed as the training file was read: text numbers,
        percentages and dates are parsed the same way) with the registered model, as MLflow
        serves it: a pandas frame with ``prediction`` (and ``score`` for classes)."""
        from lepton.core.inputs import input_frame
        from lepton.core.tables import coerce_types

        frame = coerce_types(rows if isinstance(rows, pl.DataFrame) else pl.from_pandas(rows))
        inputs = input_frame(self.spec, frame, strict=False)
        return self._model.predict(inputs)


def run(
    data: Any = None,
    target: str | None = None,
    *,
    spec: DomainSpec | str | Path | None = None,
    domain: str | None = None,
    trials: int = DEFAULT_TRIALS,
    holdout: str | Path | None = None,
    allow_leakage_of: tuple[str, ...] | list[str] = (),
    cache: bool = True,
    **hints: Any,
) -> RunResult:
    """Train, gate and register a model for a table, a spec file or a built-in domain.

    Args:
        data: a CSV/Parquet path or a polars/pandas DataFrame (with ``target``), or a file in a
            built-in ``domain``'s schema.
        target: the column to predict (with ``data``, unless a spec or domain is given).
        spec: a DomainSpec or the path of a spec YAML (as ``lepton init`` writes).
        domain: a built-in domain: finance, medical or manufacturing.
        trials: Optuna trial budget.
        holdout: a test file, for specs that split on a given file.
        allow_leakage_of: columns the leakage sentinel may let through.
        cache: reuse the stages whose inputs, spec and code are unchanged, or the whole earlier
            result when nothing changed (``lepton.flows.rerun``); False: ``--no-cache``.
        **hints: anything ``lepton run`` takes as a flag: task, template, name, time_col, group_col,
            id_cols, pii_cols, drop_cols, positive_class, encoding.
    Returns:
        RunResult: metrics, baseline metrics, version, alias, model URI and ``predict``.
    """
    home = prepare_environment()
    job = resolve(data, target, spec, domain, tuple(allow_leakage_of), hints, home, holdout)
    from lepton.flows.rerun import up_to_date

    # nothing changed since the same run: its result
    result = up_to_date(job.spec, job.data, job.holdout, job.append, trials, cache)
    if result is None:
        from lepton.app.stack import start_temporary_prefect
        from lepton.flows.pipeline import pipeline

        preflight(job)
        start_temporary_prefect(home)

        result = pipeline(domain=job.spec, trials=trials, data=job.data, holdout=job.holdout, cache=cache)
    return RunResult(spec=job.spec, notes=job.notes + tuple(result.notes), pipeline=result)


@dataclass(frozen=True)
class Job:
    """What to run: the spec, what was inferred, and the files the flow reads instead of the spec's."""

    spec: DomainSpec
    notes: tuple[str, ...] = ()
    data: str | None = None
    holdout: str | None = None
    append: str | None = None  # a labelled batch added to the training data


def resolve(
    data: Any,
    target: str | None,
    spec: DomainSpec | str | Path | None,
    domain: str | None,
    allowed: tuple[str, ...],
    hints: dict[str, Any],
    home: Path,
    holdout: str | Path | None = None,
) -> Job:
    """Turn what the user gave into a Job: a built-in domain (optionally on the user's files), a
    spec file, or a table and its target (the spec inferred, a holdout file making a given split)."""
    from lepton.domains import DOMAINS, get_spec

    given = [n for n, v in (("spec", spec), ("domain", domain), ("target", target)) if v is not None]
    if len(given) != 1:
        raise SpecError([("(arguments)", f"give exactly one of target (with data), spec or domain; got {given}")])
    hints = dict(hints)
    encoding = hints.pop("encoding", None) if domain is not None else None
    if (spec is not None or domain is not None) and hints:
        raise SpecError([(k, "applies when inferring from data and a target") for k in sorted(hints)])
    if domain is not None:
        if domain not in DOMAINS:
            raise SpecError([("domain", f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")])
        chosen = get_spec(domain)
        if encoding:
            chosen = chosen.model_copy(update={"data": chosen.data.model_copy(update={"encoding": encoding})})
        return Job(allow_leakage(chosen, allowed), (), _text(data), _text(holdout))
    if spec is not None:
        if data is not None:
            raise SpecError([("data", "a spec names its own data (data.path); edit the spec to change it")])
        loaded = spec if isinstance(spec, DomainSpec) else DomainSpec.from_yaml(spec)
        return Job(allow_leakage(loaded, allowed), (), None, _text(holdout))
    if data is None:
        raise SpecError([("data", "a target needs data: a CSV/Parquet path or a DataFrame")])
    full = make_hints(target=target, allow_leakage=allowed, **hints)
    if isinstance(data, str | Path):
        inferred = spec_from_file(data, full, holdout)
    else:
        inferred = spec_from_frame(data, full, home, holdout)
    return Job(inferred.spec, inferred.notes)


def preflight(job: Job) -> None:
    """Bad input and leaking columns stop the run here, with a typed error, before Prefect, Dask
    or MLflow start (``lepton.flows.pipeline.preflight``); the flow checks again on its own."""
    from lepton.flows.pipeline import preflight as check

    check(job.spec, job.data, job.holdout, job.append)


def _text(path: str | Path | None) -> str | None:
    return str(path) if path is not None else None
