"""An MLP champion goes through the same deploy stage: registered, served as a standard pyfunc
with no torch in its requirements, scored with NumPy."""

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from lepton.core import tracking
from lepton.core.inputs import input_frame
from lepton.core.settings import load_settings
from lepton.domains import get_spec
from lepton.tasks.deploy import deploy_task, pipeline_run
from lepton.tasks.optimise import OptimiseResult, decision_threshold
from lepton.tasks.preprocess import load_domain_data, prepare
from lepton.tasks.train import train_model, train_task

# training an MLP needs the torch extra; serving it (what this test is about) does not
pytest.importorskip("torch", reason="the torch extra is not installed: no MLP to train")

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]


def test_an_mlp_candidate_is_registered_and_served_without_torch(lepton_home):
    spec = get_spec("medical")
    data = prepare(spec, *load_domain_data(spec))
    trained = train_task.fn(spec, data, "cpu")
    mlp = train_model(spec, data, "mlp", {"hidden": 32, "layers": 2, "learning_rate": 3e-3})
    optimised = OptimiseResult(mlp, decision_threshold(spec, data, mlp), (), ("test: an MLP candidate",))
    settings = load_settings()
    with tracking.recorded_run(*pipeline_run(spec, data, settings)) as run_id:
        deployed, evaluation = deploy_task.fn(spec, data, trained, optimised, settings, 0, run_id)
    assert MlflowClient().get_run(run_id).info.status == "FINISHED"

    assert evaluation.metrics["roc_auc"] > 0.75
    run = MlflowClient().get_run(deployed.run_id)
    assert run.data.params["family"] == "mlp"
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{spec.model_name}/{deployed.version}"))
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert "model.json" in files and not any(f.endswith((".pkl", ".pt", ".pth")) for f in files)
    assert "torch" not in (local / "requirements.txt").read_text()
    model = mlflow.pyfunc.load_model(f"models:/{spec.model_name}/{deployed.version}")
    out = model.predict(input_frame(spec, data.holdout.frame.head(50)))
    expected = mlp.predict(data.holdout.X[:50])
    assert out["score"].to_numpy() == pytest.approx(expected, rel=1e-6)
