"""What a user sees in the Prefect and MLflow UIs after a run, a deploy and one loop iteration,
checked in headless Chromium (Debian's, driven by Playwright) on what the pages show. Each page is
saved as a screenshot under the given folder. Used by ``test_loop.py`` on its real servers."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STAGES = ("preprocess", "features", "train", "optimise", "deploy", "monitor")
MONITOR_STEPS = ("load champion", "read batch", "compare", "decide", "record", "alert", "recommend")
WAIT_MS = 30_000


def _flow_runs(api: str, flow: str) -> list[dict]:
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()}
    body = {"limit": 200, "sort": "START_TIME_DESC"}  # the newest first
    runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json()
    return [r for r in runs if flows.get(r["flow_id"]) == flow and r["state_type"] == "COMPLETED"]


def check_screens(api: str, tracking: str, domain: str, out: Path) -> list[Path]:
    """Open each page a user would and assert on its text; return the screenshots taken."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        shots: list[Path] = []

        def shot(name: str) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(path)

        cli_run = _prefect_runs(page, shot, api, domain)
        _prefect_definitions(page, shot, api, domain)
        _prefect_to_mlflow(page, shot, api, tracking, domain, cli_run)
        _mlflow(page, shot, tracking, domain)
        browser.close()
    return shots


def _prefect_runs(page, shot, api: str, domain: str) -> dict:
    """The pipeline run lists its six stage task runs and shows the stages' log lines; the
    monitor run (from its deployment) shows its steps as task runs. Returns the CLI's run."""
    from playwright.sync_api import expect

    ui = api.removesuffix("/api")
    cli_run = next(r for r in _flow_runs(api, "lepton-pipeline") if r["deployment_id"] is None)  # `lepton run`
    page.goto(f"{ui}/runs/flow-run/{cli_run['id']}")
    expect(page.get_by_text(cli_run["name"]).first).to_be_visible()
    expect(page.get_by_text("6 Task runs")).to_be_visible()
    expect(page.get_by_text("optimise: trial 1 of").first).to_be_visible()
    decided = re.compile(rf"deploy: lepton-{domain} v\d+ (is the champion|stays a challenger)")
    expect(page.get_by_text(decided)).to_be_visible()
    assert "This run didn't generate logs" not in page.inner_text("body")
    shot("prefect-pipeline-logs")
    page.get_by_text("Task Runs", exact=True).first.click()
    for stage in STAGES:
        expect(page.get_by_text(re.compile(rf"^{stage}-\w+$")).first).to_be_visible()
    shot("prefect-pipeline-task-runs")

    monitor_run = _flow_runs(api, "lepton-monitor")[0]
    page.goto(f"{ui}/runs/flow-run/{monitor_run['id']}")
    expect(page.get_by_text(f"{len(MONITOR_STEPS)} Task runs")).to_be_visible()
    expect(page.get_by_text(re.compile(r"monitor: lepton-\w+ v1: drift detected"))).to_be_visible()
    # the retrain decision in words, as the run's log shows it
    expect(page.get_by_text(re.compile(r"retrain: recommended: estimated roc_auc [0-9.]+ \(90% band"))).to_be_visible()
    page.get_by_text("Task Runs", exact=True).first.click()
    for step in MONITOR_STEPS:
        expect(page.get_by_text(re.compile(rf"^{step}-\w+$")).first).to_be_visible()
    shot("prefect-monitor-task-runs")
    return cli_run


def _prefect_definitions(page, shot, api: str, domain: str) -> None:
    """Deployments and automations say what they wait for and do."""
    from playwright.sync_api import expect

    ui = api.removesuffix("/api")
    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
    pipeline = next(d for d in deployments if d["name"] == f"{domain}-pipeline")
    page.goto(f"{ui}/deployments/deployment/{pipeline['id']}")
    expect(page.get_by_text(f"{domain}-pipeline").first).to_be_visible()
    page.get_by_text("Description", exact=True).first.click()
    described = re.compile(r"Weekly \(cron below\) and when the monitor recommends it")
    expect(page.get_by_text(described).first).to_be_visible()
    shot("prefect-deployment")
    page.goto(f"{ui}/automations")
    expect(page.get_by_text(f"{domain}-retrain-when-recommended")).to_be_visible()
    waits = re.compile(rf"Waits for lepton.retrain.recommended from the {domain} monitor")
    expect(page.get_by_text(waits)).to_be_visible()
    shot("prefect-automations")


def _prefect_to_mlflow(page, shot, api: str, tracking: str, domain: str, cli_run: dict) -> None:
    """The run's artifact links to its MLflow run, and the link lands there."""
    from playwright.sync_api import expect

    query = {"artifacts": {"flow_run_id": {"any_": [cli_run["id"]]}}}
    artifacts = httpx.post(f"{api}/artifacts/filter", json=query, timeout=30).json()
    links = next(a for a in artifacts if a["key"] == f"mlflow-{domain}")
    page.goto(f"{api.removesuffix('/api')}/artifacts/artifact/{links['id']}")
    anchor = page.get_by_role("link", name="MLflow run of this flow run")
    expect(anchor).to_be_visible()
    shot("prefect-artifact-links")
    href = anchor.get_attribute("href")
    assert href and href.startswith(tracking) and "workflowType=machine_learning" in href, href
    page.goto(href)
    expect(page.get_by_text(f"{domain}-pipeline").first).to_be_visible()
    expect(page.get_by_text("Metrics", exact=False).first).to_be_visible()
    shot("mlflow-run-from-prefect-link")


def _mlflow(page, shot, tracking: str, domain: str) -> None:
    """The experiment opens in model-training mode and lists the runs; the registered model
    shows its description, the champion alias and the versions' decisions."""
    from mlflow import MlflowClient
    from playwright.sync_api import expect

    from lepton.core.tracking import ui_link

    client = MlflowClient(tracking, tracking)
    experiment = client.get_experiment_by_name(f"lepton-{domain}")
    page.goto(ui_link(tracking, f"/experiments/{experiment.experiment_id}"))
    expect(page.get_by_text(f"{domain}-pipeline").first).to_be_visible()
    body = page.inner_text("body")
    assert "Detect Issues" not in body and "Token Usage" not in body, body[:2000]  # not the GenAI views
    assert "workflowType=machine_learning" in page.url
    shot("mlflow-experiment")
    page.goto(ui_link(tracking, f"/models/lepton-{domain}"))
    description = client.get_registered_model(f"lepton-{domain}").description.splitlines()[0].strip("*")
    expect(page.get_by_text(description).first).to_be_visible()
    expect(page.get_by_text("champion").first).to_be_visible()
    expect(page.get_by_text(re.compile(r"Champion: v1 serves")).first).to_be_visible()
    shot("mlflow-registered-model")
