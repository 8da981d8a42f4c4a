"""MLflow "model from code" entry point: MLflow copies this file into each logged model.

It holds no weights: ``load_context`` reads the safe bundle (JSON + XGBoost UBJ) logged beside
it, with ``lepton/core/scoring.py`` carried in the model's ``code/`` directory. Before it imports that
code or reads the bundle, it checks every file of the model against the fingerprint the registry
recorded for the version (``lepton.digest``, see ``lepton/core/digest.py``), when MLflow loaded it from
the registry (``models:/...``). MLflow itself has by then read ``MLmodel`` and run this file:
what they say runs before any check (see the README's security notes).
"""

import hashlib
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel


def _registry_digest(root):
    """(what, digests) recorded for the registered versions the model in ``root`` may be; None
    when it is not a registered model.

    MLflow before 3.18 wrote ``registered_model_meta`` (the name and version) into a model it
    downloaded from the registry; 3.18 no longer does. Then the versions registered from the
    run named in ``MLmodel`` are the candidates, and the files must be one of them: an edited
    module or bundle matches none. (Whoever can rewrite ``MLmodel`` runs code before this file
    anyway: the README's security notes.)"""
    import yaml

    meta = root / "registered_model_meta"
    if meta.is_file():
        info = yaml.safe_load(meta.read_text())
        name, version = info["model_name"], str(info["model_version"])
        tags = mlflow.MlflowClient().get_model_version(name, version).tags
        return f"{name} v{version}", {tags.get("lepton.digest")}
    run_id = (yaml.safe_load((root / "MLmodel").read_text()) or {}).get("run_id")
    registry = mlflow.get_registry_uri()
    if not run_id or (registry.startswith("sqlite:///") and not Path(registry[len("sqlite:///") :]).exists()):
        return None  # not logged by a run, or no registry here (a search would create its file)
    versions = mlflow.MlflowClient().search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        return None
    what = ", ".join(sorted(f"{v.name} v{v.version}" for v in versions))
    return what, {v.tags.get("lepton.digest") for v in versions}


def _digest(root):
    # The same figure as lepton.digest: this file must not import the code it is checking.
    names = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    names.pop("registered_model_meta", None)  # written by MLflow on the caller's side
    lines = sorted(f"{name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n" for name, path in names.items())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


class LeptonModel(PythonModel):
    # Inputs are checked against the logged signature, not predict's type hints.
    _skip_type_hint_validation = True

    def load_context(self, context):
        root = Path(context.artifacts["bundle"]).resolve().parents[1]
        registered = _registry_digest(root)
        if registered is not None:
            what, expected = registered
            if _digest(root) not in expected - {None}:
                raise RuntimeError(f"{what}: its files are not the ones registered (lepton.digest); not loaded")
        from scoring import Scorer  # carried in the model's code/ directory by code_paths

        self.scorer = Scorer.from_dir(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        return self.scorer.predict(_checked(model_input, self.scorer))


def _checked(model_input, scorer):
    """The rows as the scorer takes them: every input column the request left out is missing
    (each may be: the model was trained to handle missing values), and a numeric column holds
    numbers, of any width (the signature declares numbers as ``Any``: MLflow refuses an int64
    column declared ``double``). A value that is not a number is a 400 naming its column and row,
    not a stack trace."""
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    updates = {name: None for name in scorer.raw_inputs if name not in frame.columns}
    numeric = set(scorer.encoder["numeric"])
    for name in (c for c in scorer.raw_inputs if c in numeric and c in frame.columns):
        column = frame[name]
        if column.dtype.kind in "fiub":
            continue
        values = pd.to_numeric(column, errors="coerce")
        bad = column.notna() & values.isna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise MlflowException(
                f"column {name!r}, row {row}: {str(column.iloc[row])[:80]!r} is not a number",
                error_code=INVALID_PARAMETER_VALUE,
            )
        updates[name] = values.astype("float64")
    return frame.assign(**updates) if updates else frame  # the caller's frame is not changed


mlflow.models.set_model(LeptonModel())
