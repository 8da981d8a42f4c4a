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
    """(what, digest) recorded for the registered version MLflow downloaded into ``root``; None
    when it was not loaded from the registry."""
    meta = root / "registered_model_meta"
    if not meta.is_file():
        return None
    import yaml

    info = yaml.safe_load(meta.read_text())
    name, version = info["model_name"], str(info["model_version"])
    tags = mlflow.MlflowClient().get_model_version(name, version).tags
    return f"{name} v{version}", tags.get("lepton.digest")


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
            if not expected or _digest(root) != expected:
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
