"""`lepton monitor`: drift of a batch or of the prediction log against the champion's training
reference, through the real flow, MLflow store and Prefect API; the report rendered in Chromium."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from lepton.app.cli import app
from lepton.domains import get_spec
from lepton.flows.pipeline import pipeline
from lepton.tasks.drift_demo import drifted_batch

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
SPEC = get_spec("medical")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def champion(lepton_home):
    pipeline(domain="medical", trials=0)
    return lepton_home


def _monitor(*args: str) -> dict:
    result = CliRunner().invoke(app, ["monitor", "medical", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _steady(tmp_path: Path) -> Path:
    """Held-out-like rows of the domain's own data: the same population as training."""
    from lepton.core.tables import read_table

    path = tmp_path / "steady.parquet"
    read_table(SPEC.data.resolve(SPEC.data.path)).sample(3_000, seed=5).write_parquet(path)
    return path


def run_metrics(run_id: str) -> dict[str, float]:
    from mlflow import MlflowClient

    return MlflowClient().get_run(run_id).data.metrics


def test_a_drifted_batch_is_flagged_logged_and_reported_and_a_steady_one_is_not(champion, tmp_path):
    from mlflow import MlflowClient

    drifted = tmp_path / "drifted.parquet"
    result = CliRunner().invoke(app, ["simulate-drift", "medical", "-o", str(drifted), "--rows", "3000"])
    assert result.exit_code == 0, result.output
    batch = pl.read_parquet(drifted)
    assert batch.height == 3000 and SPEC.target in batch.columns  # labels come with the rows

    steady = _monitor("--data", str(_steady(tmp_path)))
    assert not steady["detected"] and steady["drifted"] == [] and steady["event"] is None
    # estimated without labels from the champion's calibrated probabilities: where the rows come
    # from the training population, the labels they carry land in the band
    estimated = steady["estimated"]
    assert estimated["metric"] == "roc_auc" and estimated["level"] == 0.9 and estimated["calibration"]
    assert estimated["lower"] <= steady["performance"]["roc_auc"] <= estimated["upper"], (estimated, steady)
    assert not steady["retrain"]["recommended"] and "does not hurt" in steady["retrain"]["reason"]
    assert steady["retrain_event"] is None
    moved = _monitor("--data", str(drifted))
    assert moved["detected"] and {"age", "creatinine"} <= set(moved["drifted"])
    assert moved["event"] and moved["performance"]["labelled_rows"] == 3000
    assert 0.5 < moved["performance"]["roc_auc"] <= 1.0
    # beside the champion's own holdout figure at training, from the run that registered it
    champion_run = MlflowClient().get_model_version(SPEC.model_name, "1").run_id
    assert moved["holdout"]["roc_auc"] == MlflowClient().get_run(champion_run).data.metrics["roc_auc"]
    assert "labelled_rows" not in moved["holdout"]
    assert moved["estimated"]["rows"] == 3000 and moved["estimated"]["lower"] < moved["estimated"]["upper"]
    # the band carries the calibration's own uncertainty, which the bundle keeps per bin of validation
    assert 0 < moved["estimated"]["calibration_sd"] < (moved["estimated"]["upper"] - moved["estimated"]["lower"]) / 2
    # the same estimate made of the holdout at training, kept in the bundle beside the labels' figure
    at_training = moved["estimated"]["at_training"]
    assert at_training["realised"] == pytest.approx(moved["holdout"]["roc_auc"], abs=1e-9)
    assert abs(at_training["value"] - at_training["realised"]) < 0.05, at_training
    # the band allows for that miss where the labels fell outside the band there, and only then
    missed = moved["estimated"]["missed_at_training"]
    assert missed == 0.0 or missed == pytest.approx(at_training["value"] - at_training["realised"])
    # in MLflow beside the realised figure, and on the event the automation reads
    assert run_metrics(moved["run_id"])["estimated_roc_auc"] == moved["estimated"]["value"]
    # the estimated fall, priced: worth a retrain, and the event the automations answer says why
    retrain = moved["retrain"]
    assert retrain["policy"] == "on_estimated_loss" and retrain["recommended"], retrain
    assert "fell from the champion's" in retrain["reason"] and retrain["expected_loss"] > 0
    assert retrain["key"].endswith("-v1") and moved["retrain_event"]

    client = MlflowClient()
    run = client.get_run(moved["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["lepton.drift"] == "detected"
    assert run.data.tags["lepton.retrain"] == "recommended"
    assert [d.tags[0].value for d in run.inputs.dataset_inputs] == ["monitored"]  # the batch's lineage
    assert run.data.metrics["psi_age"] > SPEC.drift.psi_threshold and "ks_p_age" in run.data.metrics
    assert run.data.tags["lepton.model_version"] == moved["version"] == "1"
    artifacts = {a.path for a in client.list_artifacts(moved["run_id"], "monitor")}
    assert {"monitor/drift.json", f"monitor/{Path(moved['report']).name}"} <= artifacts
    assert Path(moved["report"]).is_file() and not list(Path(moved["report"]).parent.glob(".*.partial"))


def test_drift_that_does_not_move_the_estimate_is_reported_and_does_not_retrain(champion, tmp_path):
    """Covariate shift in a column the model leans on little (nine women for each man, chosen
    by sex alone, so each row's label follows its inputs as before): drift, and no retrain."""
    from lepton.core.tables import read_table

    table = read_table(SPEC.data.resolve(SPEC.data.path))
    women = table.filter(pl.col("sex") == "F").sample(2_700, seed=3)
    men = table.filter(pl.col("sex") == "M").sample(300, seed=3)
    path = tmp_path / "women.parquet"
    pl.concat([women, men]).write_parquet(path)
    result = _monitor("--data", str(path))
    assert result["detected"] and "sex" in result["drifted"] and result["event"]
    assert not result["retrain"]["recommended"] and result["retrain_event"] is None, result["retrain"]
    assert "does not hurt" in result["retrain"]["reason"]
    estimated = result["estimated"]  # and the labels agree: the realised figure is in the band
    assert estimated["lower"] <= result["performance"]["roc_auc"] <= estimated["upper"], (estimated, result)


def test_the_prediction_log_is_monitored_with_labels_joined_by_request(champion, tmp_path):
    from lepton.core.inputs import input_records
    from lepton.core.predlog import PredictionLog
    from lepton.core.settings import load_settings

    batch, _ = drifted_batch(SPEC, 400, seed=2)
    rows = input_records(SPEC, batch)
    log = PredictionLog(load_settings().home / "predictions" / "medical", flush_seconds=0.05)
    log.start()
    ids = [f"r{i}" for i in range(len(rows))]
    log.append(ids, "1", rows, [{"prediction": 0, "score": 0.5}] * len(rows))
    log.close()
    labels = tmp_path / "labels.csv"
    pl.DataFrame({"request_id": ids, SPEC.target: batch[SPEC.target]}).write_csv(labels)

    result = _monitor("--since", "1", "--labels", str(labels))
    assert result["rows"] == 400 and result["detected"] and "age" in result["drifted"]
    assert result["performance"]["labelled_rows"] == 400
    assert result["source"].startswith("the prediction log")
    # medical splits by time, which the log does not hold: no rows kept, and the note says why
    assert result["labelled_batch"] is None and "add it to the labels file" in result["labelled_note"]

    # the labels file carries the time column (and one label has not come back yet)
    late = batch[SPEC.target].cast(pl.Int64).scatter([0], [None])
    truth = pl.DataFrame({"request_id": ids, SPEC.target: late, SPEC.time_column: batch[SPEC.time_column]})
    truth.write_csv(labels)
    result = _monitor("--since", "1", "--labels", str(labels))
    kept = Path(result["labelled_batch"])
    rows = pl.read_parquet(kept)
    assert rows.height == 399 and {SPEC.target, SPEC.time_column, "age", "creatinine"} <= set(rows.columns)
    assert rows["age"].to_list() == batch["age"][1:].cast(rows["age"].dtype).to_list()  # the logged inputs

    # a retrain on those production rows registers a challenger that the gate judges
    from mlflow import MlflowClient

    retrained = pipeline(domain="medical", trials=0, append=str(kept))
    assert retrained.version == "2"
    version = MlflowClient().get_model_version(SPEC.model_name, "2")
    assert version.tags["lepton.decision"]  # judged: promoted or not, with the reason
    run = MlflowClient().get_run(version.run_id)
    assert "medical appended batch" in {d.dataset.name for d in run.inputs.dataset_inputs}  # its lineage
    # the production rows train (a time split would have held the latest out); the holdout is the champion's
    first = MlflowClient().get_run(MlflowClient().get_model_version(SPEC.model_name, "1").run_id).data.params
    learned = {k: int(run.data.params[k]) - int(first[k]) for k in ("rows_train", "rows_valid", "rows_holdout")}
    assert learned["rows_train"] + learned["rows_valid"] == 399 and learned["rows_holdout"] == 0, learned
    assert learned["rows_train"] > learned["rows_valid"] > 0


def test_bad_input_stops_before_anything_is_logged(champion, tmp_path):
    from mlflow import MlflowClient

    broken = tmp_path / "broken.csv"
    frame = pl.read_parquet(_steady(tmp_path)).with_columns(pl.lit("old").alias("age"))
    frame.write_csv(broken)
    result = CliRunner().invoke(app, ["monitor", "medical", "--data", str(broken)])
    assert result.exit_code != 0 and "age" in result.output
    empty = CliRunner().invoke(app, ["monitor", "medical"])  # nothing served yet
    assert empty.exit_code != 0 and "no predictions logged" in empty.output
    assert MlflowClient().get_experiment_by_name("lepton-medical-monitor") is None


def _cut(frame: pl.DataFrame, folder: Path, files: int) -> Path:
    """``frame``'s rows shuffled and written as ``files`` Parquet files under ``folder``."""
    folder.mkdir()
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=11)
    size = -(-frame.height // files)
    for i in range(files):
        shuffled[i * size : (i + 1) * size].write_parquet(folder / f"part-{i}.parquet")
    return folder


def _drift_metrics(run_id: str) -> dict[str, float]:
    from mlflow import MlflowClient

    metrics = MlflowClient().get_run(run_id).data.metrics
    return {k: v for k, v in metrics.items() if k.startswith(("psi_", "ks_p_", "chi2_p_", "drift"))}


def test_a_batch_in_many_files_is_judged_on_the_workers_as_one_file_is(champion, tmp_path):
    """A folder is read, scored and counted file by file on the Dask workers; the counts add up
    to the very statistics the same rows give as one file, and the labels to the same metrics —
    with Sturges' bins too, whose range needs a second pass over the files."""
    from mlflow import MlflowClient

    from lepton.flows.monitor import monitor

    drifted = tmp_path / "drifted.parquet"
    result = CliRunner().invoke(app, ["simulate-drift", "medical", "-o", str(drifted), "--rows", "3000"])
    assert result.exit_code == 0, result.output
    folder = _cut(pl.read_parquet(drifted), tmp_path / "drifted", 4)
    one, many = _monitor("--data", str(drifted)), _monitor("--data", str(folder))

    assert many["detected"] and many["drifted"] == one["drifted"] and many["rows"] == one["rows"] == 3000
    assert many["source"] == str(folder) and many["prediction_drifted"] == one["prediction_drifted"]
    assert many["performance"] == pytest.approx(one["performance"], abs=1e-12)
    assert many["performance"]["labelled_rows"] == 3000
    # estimated without labels from the scores the workers send back: for a batch this small all
    # of them, in the files' order, so the very estimate one file gives
    numbers = ("value", "lower", "upper", "rows", "expected_cost", "sensitivity")
    assert [many["estimated"][k] for k in numbers] == pytest.approx([one["estimated"][k] for k in numbers])
    metrics = [_drift_metrics(r["run_id"]) for r in (one, many)]
    assert len(metrics[0]) > 10 and metrics[1] == pytest.approx(metrics[0], rel=1e-9, abs=1e-12)
    runs = [MlflowClient().get_run(r["run_id"]) for r in (one, many)]
    digests = [run.inputs.dataset_inputs[0].dataset.digest for run in runs]
    assert digests[0] == digests[1]  # the same rows, whatever the files

    evidently = SPEC.model_copy(update={"drift": SPEC.drift.model_copy(update={"psi_bins": "sturges"})})
    binned = [monitor(evidently, str(path)) for path in (drifted, folder)]
    metrics = [_drift_metrics(r.run_id) for r in binned]
    assert metrics[1] == pytest.approx(metrics[0], rel=1e-9, abs=1e-12) and binned[1].drifted == binned[0].drifted
    assert metrics[1]["psi_age"] != _drift_metrics(many["run_id"])["psi_age"]  # other bins, other PSI

    steady = _monitor("--data", str(_cut(pl.read_parquet(_steady(tmp_path)), tmp_path / "steady", 3)))
    assert not steady["detected"] and steady["rows"] == 3000


def test_a_bad_value_in_a_batchs_last_file_is_named_before_anything_is_logged(champion, tmp_path):
    from mlflow import MlflowClient

    folder = _cut(pl.read_parquet(_steady(tmp_path)), tmp_path / "batch", 3)
    last = folder / "part-2.parquet"
    rows = pl.read_parquet(last)
    bad = pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("old")).otherwise(pl.col("age").cast(pl.String))
    rows.with_columns(bad.alias("age")).write_parquet(last)
    result = CliRunner().invoke(app, ["monitor", "medical", "--data", str(folder)])
    assert result.exit_code == 2, result.output
    assert f"{last}: expected int, row 8 holds 'old'" in " ".join(result.stderr.split())
    assert MlflowClient().get_experiment_by_name("lepton-medical-monitor") is None


def test_the_report_renders_its_plots_in_headless_chromium(champion, tmp_path):
    from playwright.sync_api import sync_playwright

    drifted = tmp_path / "drifted.parquet"
    drifted_batch(SPEC, 2000, seed=3)[0].write_parquet(drifted)
    _monitor("--data", str(_steady(tmp_path)))  # an earlier run: the report draws drift over time
    report = Path(_monitor("--data", str(drifted))["report"])
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page()
        page.goto(report.as_uri())
        images = page.eval_on_selector_all(
            "img.plot", "els => els.map(e => [e.alt, e.complete, e.naturalWidth, e.naturalHeight])"
        )
        assert {alt for alt, *_ in images} == {"drift scores", "distributions", "drift over time", "performance"}
        assert all(complete and width > 200 and height > 100 for _, complete, width, height in images), images
        # the plot has ink: a screenshot of it is not one flat colour
        import io

        from matplotlib import image

        pixels = image.imread(io.BytesIO(page.locator("img.plot").first.screenshot()), format="png")
        assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.05
        assert "Drift detected" in page.inner_text("p.verdict")
        assert page.locator("tr.drifted").count() >= 2
        # the retrain decision in words, and the primary metric over time: estimated, realised
        decision = page.inner_text("p.decision")
        assert decision.startswith(("Retrain recommended (policy on_estimated_loss)", "No retrain (policy")), decision
        assert "estimated roc_auc" in decision
        caption = page.locator("figcaption", has_text="roc_auc over time")
        assert caption.inner_text() == "roc_auc over time: estimated without labels, and realised"
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
