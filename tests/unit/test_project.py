"""The project's declarative files agree with the code."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from lepton.domains import DOMAINS

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_has_a_pipeline_and_a_monitor_deployment_per_domain_on_the_process_pool():
    from lepton.domains import get_spec
    from lepton.flows.monitor import RECOMMENDED, resource

    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert set(deployments) == {f"{d}-{kind}" for d in DOMAINS for kind in ("pipeline", "monitor")}
    flows = {"pipeline": "lepton-pipeline", "monitor": "lepton-monitor"}
    for name, deployment in deployments.items():
        domain, kind = name.rsplit("-", 1)
        # a module path, as Prefect's worker imports it from any install (no source checkout)
        module, function = deployment["entrypoint"].rsplit(".", 1)
        assert module.startswith("lepton.flows.")
        flow = getattr(importlib.import_module(module), function)
        assert flow.name == flows[kind]
        assert deployment["parameters"]["domain"] == domain
        assert deployment["work_pool"]["name"] == "lepton-process"
        assert set(deployment["parameters"]) <= set(flow.parameters.properties)
        if kind == "pipeline":  # weekly on the spec's cron, and whenever the monitor finds drift
            assert [s["cron"] for s in deployment["schedules"]] == [get_spec(domain).schedule]
            (trigger,) = deployment["triggers"]
            assert trigger["expect"] == [RECOMMENDED]
            assert trigger["name"] == f"{domain}-retrain-when-recommended" and RECOMMENDED in trigger["description"]
            assert trigger["match"]["prefect.resource.id"] == resource(get_spec(domain))["prefect.resource.id"]
            assert set(trigger["parameters"]) <= set(flow.parameters.properties)
        else:
            assert len(deployment["schedules"]) == 1


# Run in a fresh interpreter: in the suite's own process every module is long imported, so an
# import's side effect would have happened before the check.
IMPORT_EVERYTHING = """
import json, os, pkgutil, importlib, sys
import mlflow
before = (mlflow.get_tracking_uri(), dict(os.environ), sorted(os.listdir(".")))
import lepton
names = sorted(m.name for m in pkgutil.walk_packages(lepton.__path__, "lepton."))
for extra in ("lepton.domains", "lepton.tasks", "lepton.flows"):
    names += sorted(m.name for m in pkgutil.walk_packages(importlib.import_module(extra).__path__, extra + "."))
for name in names:
    importlib.import_module(name)
after = (mlflow.get_tracking_uri(), dict(os.environ), sorted(os.listdir(".")))
print(json.dumps({"modules": len(names), "same": before == after,
                  "env": sorted(set(after[1].items()) ^ set(before[1].items())), "files": after[2]}))
"""


def test_importing_every_module_changes_nothing(tmp_path):
    """No module of any layer configures MLflow, writes the environment or creates a file when
    imported: that happens when a command or flow runs, never at import."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LEPTON_"))}
    out = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["modules"] > 50  # every layer was imported, not an empty walk
    assert report["same"], report
