"""Stage outputs on disk for the content cache (``lepton.core.cache``), in safe formats only: frames
as Parquet, arrays as ``.npy`` (never pickled), models as UBJ or JSON, the rest as JSON."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from lepton.core.cache import load_array, read_json, save_array, write_json
from lepton.core.scoring import model_files, read_payload
from lepton.tasks.calibrate import Calibration
from lepton.tasks.features import FeatureRun
from lepton.tasks.optimise import OptimiseResult, TrialRecord
from lepton.tasks.pareto import ServingCost
from lepton.tasks.preprocess import Part, PreparedData
from lepton.tasks.train import TrainedModel, TrainResult

PARTS = ("train", "valid", "holdout")


def write_prepared(value: tuple[PreparedData, FeatureRun], folder: Path) -> None:
    data, run = value
    for name in PARTS:
        part: Part = getattr(data, name)
        part.frame.write_parquet(folder / f"{name}.parquet")
        save_array(folder / f"{name}_X.npy", part.X)
        save_array(folder / f"{name}_y.npy", part.y)
    write_json(
        folder / "prepared.json",
        {
            "domain": data.domain,
            "encoder": data.encoder,
            "classes": data.classes,
            "fingerprint": data.fingerprint,
            "notes": list(data.notes),
            "feature_run": {"partitions": run.partitions, "workers": list(run.workers)},
        },
    )


def read_prepared(folder: Path) -> tuple[PreparedData, FeatureRun]:
    meta = read_json(folder / "prepared.json")
    parts = {
        name: Part(
            frame=pl.read_parquet(folder / f"{name}.parquet"),
            X=load_array(folder / f"{name}_X.npy"),
            y=load_array(folder / f"{name}_y.npy"),
        )
        for name in PARTS
    }
    data = PreparedData(
        domain=meta["domain"],
        **parts,
        encoder=meta["encoder"],
        classes=meta["classes"],
        fingerprint=meta["fingerprint"],
        notes=tuple(meta["notes"]),
    )
    run = meta["feature_run"]
    return data, FeatureRun(partitions=run["partitions"], workers=tuple(run["workers"]))


def _write_model(model: TrainedModel, folder: Path) -> None:
    folder.mkdir()
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name != "payload"}
    fields["serving"] = dataclasses.asdict(model.serving) if model.serving else None
    for name, data in model_files(model.family, model.payload).items():
        (folder / name).write_bytes(data)
    write_json(folder / "fields.json", fields)


def _read_model(folder: Path) -> TrainedModel:
    fields = read_json(folder / "fields.json")
    payload = read_payload(folder, fields["family"])
    measured = fields.pop("serving", None)
    serving = ServingCost(**measured) if measured else None
    return TrainedModel(**{**fields, "curve": tuple(fields["curve"])}, payload=payload, serving=serving)


def write_trained(value: TrainResult, folder: Path) -> None:
    _write_model(value.baseline, folder / "baseline")
    _write_model(value.default_tree, folder / "default_tree")


def read_trained(folder: Path) -> TrainResult:
    return TrainResult(baseline=_read_model(folder / "baseline"), default_tree=_read_model(folder / "default_tree"))


def write_optimised(value: OptimiseResult, folder: Path) -> None:
    _write_model(value.candidate, folder / "candidate")
    write_json(
        folder / "optimised.json",
        {
            "threshold": value.threshold,
            "reasons": list(value.reasons),
            "trials": [dataclasses.asdict(t) for t in value.trials],
            "calibration": dataclasses.asdict(value.calibration) if value.calibration else None,
        },
    )


def read_optimised(folder: Path) -> OptimiseResult:
    meta = read_json(folder / "optimised.json")
    calibration = meta["calibration"]
    return OptimiseResult(
        candidate=_read_model(folder / "candidate"),
        threshold=meta["threshold"],
        trials=tuple(TrialRecord(**t) for t in meta["trials"]),
        reasons=tuple(meta["reasons"]),
        calibration=Calibration(**calibration) if calibration else None,
    )
