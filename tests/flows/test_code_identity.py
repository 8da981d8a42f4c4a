"""One identity for "the same code", shared by the stage cache and the registry's run key.

Lepton runs here as a wheel installs it (``lepton/`` with ``domains``, ``tasks`` and ``flows``
inside), copied outside any git checkout, so the test can edit the code it runs: the edit is
not committed (there is no commit at all), yet it registers a new model version; an unchanged
re-run, even with every stage computed again (``--no-cache``), finds the version its inputs
registered and registers none.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lepton.core import tracking
from lepton.core.settings import load_settings

pytestmark = [pytest.mark.flow, pytest.mark.slow]  # three CLI runs, each with its own servers
REPO = Path(__file__).resolve().parents[2]
COPY = shutil.ignore_patterns("__pycache__", "*.pyc")


def _installed(root: Path) -> Path:
    shutil.copytree(REPO / "lepton", root / "lepton", ignore=COPY)
    for folder in ("domains", "tasks", "flows"):
        shutil.copytree(REPO / folder, root / "lepton" / folder, ignore=COPY)
    return root


def _run(root: Path, home: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "LEPTON_", "MLFLOW_"))}
    env.update(LEPTON_HOME=str(home), PYTHONPATH=str(root), PREFECT_HOME=str(home / "prefect"))
    out = subprocess.run(
        [sys.executable, "-m", "lepton.app.cli", "run", "medical", "--trials", "0", "--json", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))


def test_an_uncommitted_edit_registers_a_new_version_and_an_unchanged_rerun_none(tmp_path, monkeypatch):
    root, home = _installed(tmp_path / "site"), tmp_path / "home"
    probe = subprocess.run(
        [sys.executable, "-c", "import lepton.tasks.train as t; print(t.__file__)"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(probe.stdout.strip()).is_relative_to(root)  # the copy runs, not the checkout

    first = _run(root, home)
    again = _run(root, home, "--no-cache")  # every stage again, the same code: the same version
    assert not any(stage["cached"] for stage in again["stages"].values())
    assert again["version"] == first["version"] == "1"

    train = root / "lepton" / "tasks" / "train.py"
    train.write_text(train.read_text() + "\n# an edit nobody committed\n")
    edited = _run(root, home)
    assert not any(stage["cached"] for stage in edited["stages"].values())  # the cache saw the edit
    assert edited["version"] == "2"  # and so did the registry

    monkeypatch.setenv("LEPTON_HOME", str(home))
    tracking.configure(load_settings())
    versions = {str(v.version): v.tags for v in MlflowClient().search_model_versions("name='lepton-medical'")}
    assert sorted(versions) == ["1", "2"]
    assert versions["1"]["lepton.code"] != versions["2"]["lepton.code"]
    assert versions["1"]["lepton.run_key"] != versions["2"]["lepton.run_key"]
