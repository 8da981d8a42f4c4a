"""Issue 18, case 4: a model store changed behind the registry's back is refused by every
Lepton loader, before any of its code runs, naming the changed file; the registry is untouched.

Tampering needs write access to the artifacts only; the fingerprint (``lepton.digest``) lives in
the tracking database. MLflow's own loader executes what ``MLmodel`` names before any Lepton
check (a cloudpickled ``python_model`` would run): the README says so, and this test checks the
part Lepton controls (its loaders; the pyfunc entry's check of the code and bundle it imports)."""

import pickle
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from lepton.app.cli import app
from lepton.core.tables import read_table
from lepton.domains import get_spec
from lepton.flows.pipeline import pipeline

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
SPEC = get_spec("finance")


class _Marker:
    """Unpickling this creates a file: what an attacker's cloudpickled python_model would do."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "code ran"))


def _model_dir(home: Path) -> Path:
    (mlmodel,) = (home / "artifacts").rglob("MLmodel")
    return mlmodel.parent


def test_a_changed_model_store_is_refused_by_lepton_and_the_registry_is_untouched(lepton_home, tmp_path):
    import mlflow

    from lepton.core import tracking
    from lepton.core.settings import load_settings

    pipeline(domain="finance", trials=0)
    tracking.configure(load_settings())
    client = mlflow.MlflowClient()
    before = [(v.version, sorted(v.aliases)) for v in client.search_model_versions(f"name='{SPEC.model_name}'")]
    rows = tmp_path / "rows.csv"
    read_table(SPEC.data.resolve(SPEC.data.path)).drop(SPEC.target).head(200).write_csv(rows)
    model = _model_dir(lepton_home)
    pristine = tmp_path / "pristine"
    shutil.copytree(model, pristine)
    marker = tmp_path / "MARKER"

    def score_refused(changed: str) -> None:
        result = CliRunner().invoke(app, ["score", "finance", str(rows), "-o", str(tmp_path / "out.csv")])
        assert result.exit_code == 2, result.output
        assert "its files are not the ones registered" in result.stderr and changed in result.stderr, result.stderr
        assert not (tmp_path / "out.csv").exists() and not marker.exists()

    # 1. code the pyfunc imports, edited: Lepton's loader and the pyfunc entry both refuse it.
    with (model / "code" / "scoring.py").open("a") as handle:
        handle.write(f"\nimport pathlib; pathlib.Path({str(marker)!r}).write_text('code ran')\n")
    score_refused("code/scoring.py")
    with pytest.raises(Exception, match="not the ones registered"):
        mlflow.pyfunc.load_model(f"models:/{SPEC.model_name}@champion")
    assert not marker.exists()
    shutil.rmtree(model)
    shutil.copytree(pristine, model)

    # 2. MLmodel switched to a cloudpickled python_model: refused before anything is unpickled.
    described = yaml.safe_load((model / "MLmodel").read_text())
    flavor = described["flavors"]["python_function"]
    flavor.pop("model_code_path")
    flavor.update(loader_module="mlflow.pyfunc.model", python_model="python_model.pkl")
    (model / "MLmodel").write_text(yaml.safe_dump(described))
    (model / "python_model.pkl").write_bytes(pickle.dumps(_Marker(marker)))
    score_refused("MLmodel")
    shutil.rmtree(model)
    shutil.copytree(pristine, model)

    # 3. the weights edited: the service's loader refuses too (the same check, one function).
    (bundle_model,) = [p for p in (model / "artifacts" / "bundle").iterdir() if p.name.startswith("model.")]
    bundle_model.write_bytes(bundle_model.read_bytes()[:-8])
    score_refused(f"artifacts/bundle/{bundle_model.name}")
    from lepton.app.serve import Champion
    from lepton.core.digest import ModelIntegrityError

    with pytest.raises(ModelIntegrityError, match="not the ones registered"):
        Champion(SPEC.model_name).refresh()
    shutil.rmtree(model)
    shutil.copytree(pristine, model)

    # Restored, it loads again; the registry never moved.
    result = CliRunner().invoke(app, ["score", "finance", str(rows), "-o", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    assert pl.read_csv(tmp_path / "out.csv").height == 200
    after = [(v.version, sorted(v.aliases)) for v in client.search_model_versions(f"name='{SPEC.model_name}'")]
    assert after == before
