"""The project's declarative files agree with the code."""

import importlib
from pathlib import Path

import yaml

from domains import DOMAINS

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_has_a_pipeline_deployment_per_domain_on_the_process_pool():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert set(deployments) == {f"{d}-pipeline" for d in DOMAINS}
    for name, deployment in deployments.items():
        path, function = deployment["entrypoint"].split(":")
        assert (ROOT / path).is_file()
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        assert flow.name == "lepton-pipeline"
        assert deployment["parameters"]["domain"] == name.removesuffix("-pipeline")
        assert deployment["work_pool"]["name"] == "lepton-process"


def test_import_has_no_side_effects_on_mlflow():
    import mlflow

    before = mlflow.get_tracking_uri()
    importlib.import_module("lepton.tracking")
    importlib.import_module("flows.pipeline")
    assert mlflow.get_tracking_uri() == before
