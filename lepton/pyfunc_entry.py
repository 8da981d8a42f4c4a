"""MLflow "model from code" entry point: MLflow copies this file into each logged model.

It holds no weights: ``load_context`` reads the safe bundle (JSON + XGBoost UBJ) logged beside
it, with ``lepton/scoring.py`` carried in the model's ``code/`` directory.
"""

import mlflow
from mlflow.pyfunc import PythonModel


class LeptonModel(PythonModel):
    # Inputs are checked against the logged signature, not predict's type hints.
    _skip_type_hint_validation = True

    def load_context(self, context):
        from scoring import Scorer  # carried in the model's code/ directory by code_paths

        self.scorer = Scorer.from_dir(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        return self.scorer.predict(model_input)


mlflow.models.set_model(LeptonModel())
