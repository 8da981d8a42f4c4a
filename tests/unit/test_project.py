"""The project's declarative files agree with the code."""

import importlib
from pathlib import Path

import yaml

from lepton.domains import DOMAINS

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_has_a_pipeline_and_a_monitor_deployment_per_domain_on_the_process_pool():
    from lepton.domains import get_spec
    from lepton.flows.monitor import EVENT, resource

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert set(deployments) == {f"{d}-{kind}" for d in DOMAINS for kind in ("pipeline", "monitor")}
    flows = {"pipeline": "lepton-pipeline", "monitor": "lepton-monitor"}
    for name, deployment in deployments.items():
        domain, kind = name.rsplit("-", 1)
        path, function = deployment["entrypoint"].split(":")
        assert (ROOT / path).is_file()
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
        assert flow.name == flows[kind]
        assert deployment["parameters"]["domain"] == domain
        assert deployment["work_pool"]["name"] == "lepton-process"
        assert set(deployment["parameters"]) <= set(flow.parameters.properties)
        if kind == "pipeline":  # weekly on the spec's cron, and whenever the monitor finds drift
            assert [s["cron"] for s in deployment["schedules"]] == [get_spec(domain).schedule]
            (trigger,) = deployment["triggers"]
            assert trigger["expect"] == [EVENT]
            assert trigger["name"] == f"{domain}-retrain-on-drift" and EVENT in trigger["description"]
            assert trigger["match"]["prefect.resource.id"] == resource(get_spec(domain))["prefect.resource.id"]
            assert set(trigger["parameters"]) <= set(flow.parameters.properties)
        else:
            assert len(deployment["schedules"]) == 1


def test_import_has_no_side_effects_on_mlflow():
    import mlflow

    before = mlflow.get_tracking_uri()
    importlib.import_module("lepton.core.tracking")
    importlib.import_module("lepton.flows.pipeline")
    assert mlflow.get_tracking_uri() == before
