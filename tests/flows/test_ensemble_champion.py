"""An ensemble candidate goes through the same deploy stage as any model: registered with its
members in their own safe files, loaded by MLflow's pyfunc without pickle, and served one row at
a time by the scoring service, with reasons."""

from pathlib import Path

import mlflow
import numpy as np
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from lepton.app.serve import ServeConfig, create_app
from lepton.core import tracking
from lepton.core.inputs import input_frame, input_records
from lepton.core.settings import load_settings
from lepton.domains import get_spec
from lepton.tasks import ensemble
from lepton.tasks.deploy import deploy_task, pipeline_run
from lepton.tasks.metrics import primary_score
from lepton.tasks.optimise import OptimiseResult, decision_threshold
from lepton.tasks.preprocess import load_domain_data, prepare
from lepton.tasks.train import train_task

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]


def test_an_ensemble_champion_is_registered_loaded_without_pickle_and_serves_a_row(lepton_home):
    spec = get_spec("finance")
    data = prepare(spec, *load_domain_data(spec))
    trained = train_task.fn(spec, data, "cpu")
    members = [trained.baseline, trained.default_tree]
    score = primary_score(
        spec, data.valid.y, 0.4 * members[0].predict(data.valid.X) + 0.6 * members[1].predict(data.valid.X)
    )
    blend = ensemble.assemble(spec, members, np.array([0.4, 0.6]), score)
    optimised = OptimiseResult(blend, decision_threshold(spec, data, blend), (), ("test: an ensemble candidate",))
    settings = load_settings()
    with tracking.recorded_run(*pipeline_run(spec, data, settings)) as run_id:
        deployed, evaluation = deploy_task.fn(spec, data, trained, optimised, settings, 0, run_id)
    assert MlflowClient().get_run(deployed.run_id).data.params["family"] == "ensemble"
    assert evaluation.metrics["roc_auc"] > 0.7

    uri = f"models:/{spec.model_name}/{deployed.version}"
    local = Path(mlflow.artifacts.download_artifacts(uri))
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"ensemble.json", "member-0.json", "member-1.ubj"} <= files
    assert not any(f.endswith((".pkl", ".pickle", ".joblib", ".pt")) for f in files)
    model = mlflow.pyfunc.load_model(uri)
    out = model.predict(input_frame(spec, data.holdout.frame.head(20)))
    expected = 0.4 * trained.baseline.predict(data.holdout.X[:20]) + 0.6 * trained.default_tree.predict(
        data.holdout.X[:20]
    )
    assert out["score"].to_numpy() == pytest.approx(expected, rel=1e-5)

    assert deployed.promoted  # the first version of a fresh registry: the champion the service loads
    row = input_records(spec, data.holdout.frame.head(1))[0]
    with TestClient(create_app(spec, load_settings(), ServeConfig(poll_seconds=60))) as client:
        answer = client.post("/predict", json=row)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["score"] == pytest.approx(expected[0], rel=1e-5)
    assert len(body["reasons"]) == 3 and all(r["feature"] in data.feature_names for r in body["reasons"])
