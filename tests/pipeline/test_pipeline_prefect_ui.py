"""The Prefect UI of `python -m flows.serve` on a port other than 4200 (the `served` fixture), looked at in
a real headless Chromium after the smoke run: the UI is told to talk to the server it came from
(`/ui-settings`), its runs page lists the flow run as Completed and the `elite-metrics` artifact page shows
the metrics tables, in both of Prefect's UIs (V1 at /, V2 at /v2; / itself redirects to V2).
Screenshots go to tests/artifacts/prefect-ui-*.png."""

from __future__ import annotations

import json
import urllib.request

import pytest
from browser import chrome, screenshot
from pipeline_helpers import api

UIS = ("v1", "v2")
RUN_LINKS = "a[href*='/runs/flow-run/']"


def test_ui_api_url_is_the_servers_own_address():
    from flows.serve import ui_api_url

    assert ui_api_url("127.0.0.1", 4310) == "http://127.0.0.1:4310/api"
    assert ui_api_url("::1", 4310) == "http://[::1]:4310/api"
    assert ui_api_url("0.0.0.0", 4310) not in ("http://0.0.0.0:4310/api", "http://127.0.0.1:4310/api")


@pytest.fixture(scope="module")
def ui_settings(smoke_run) -> dict:
    with urllib.request.urlopen(smoke_run.api.removesuffix("/api") + "/ui-settings", timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def browser():
    with chrome() as driver:
        yield driver


def ui_base(smoke_run, ui_settings: dict, ui: str) -> str:
    assert ui in ui_settings["available_uis"], ui_settings
    return smoke_run.api.removesuffix("/api") + ui_settings[f"{ui}_base_url"].rstrip("/")


def run_row(driver, flow_run_id: str):
    """The list item of the flow run: the largest element around its link holding no other flow run's link
    (None until the link is rendered)."""
    from selenium.webdriver.common.by import By

    links = driver.find_elements(By.CSS_SELECTOR, f"a[href$='/runs/flow-run/{flow_run_id}']")
    if not links:
        return None
    row = links[0]
    while row.tag_name != "body":
        parent = row.find_element(By.XPATH, "..")
        if len({a.get_attribute("href") for a in parent.find_elements(By.CSS_SELECTOR, RUN_LINKS)}) > 1:
            break
        row = parent
    return row


@pytest.mark.slow
def test_ui_settings_name_the_served_port(smoke_run, ui_settings):
    assert not smoke_run.api.endswith(":4200/api")
    assert ui_settings["api_url"] == smoke_run.api


@pytest.mark.slow
@pytest.mark.parametrize("ui", UIS)
def test_runs_page_lists_the_flow_run_completed(smoke_run, ui_settings, browser, ui):
    from selenium.webdriver.support.ui import WebDriverWait

    name = api(smoke_run.api, f"/flow_runs/{smoke_run.flow_run_id}")["name"]
    browser.get(ui_base(smoke_run, ui_settings, ui) + "/runs")
    try:
        row = WebDriverWait(browser, 90, poll_frequency=1).until(lambda d: run_row(d, smoke_run.flow_run_id))
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
    finally:
        screenshot(browser, f"prefect-ui-{ui}-runs")
    assert name in row.text and "elite" in row.text, row.text
    assert "Completed" in row.text, row.text


@pytest.mark.slow
@pytest.mark.parametrize("ui", UIS)
def test_artifact_page_shows_the_metrics_tables(smoke_run, ui_settings, browser, dvc_yaml, ui):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    arts = api(
        smoke_run.api,
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["elite-metrics"]}, "flow_run_id": {"any_": [smoke_run.flow_run_id]}}},
    )
    assert len(arts) == 1
    metrics_files = [line[3:] for line in arts[0]["data"].splitlines() if line.startswith("## ")]
    assert "metrics/dreambench.json" in metrics_files
    browser.get(ui_base(smoke_run, ui_settings, ui) + f"/artifacts/artifact/{arts[0]['id']}")
    try:
        tables = WebDriverWait(browser, 90, poll_frequency=1).until(
            lambda d: (found := d.find_elements(By.TAG_NAME, "table")) and "train_global" in found[0].text and found
        )
    finally:
        screenshot(browser, f"prefect-ui-{ui}-artifact")
    assert len(tables) == 1 + len(metrics_files)  # the stages, then one table per metrics file
    headers = [th.text.strip() for th in tables[0].find_elements(By.TAG_NAME, "th")]
    assert headers == ["stage", "result", "seconds"], headers
    rows = tables[0].find_elements(By.CSS_SELECTOR, "tbody tr")
    stages = [row.find_elements(By.TAG_NAME, "td")[0].text.strip() for row in rows]
    assert set(dvc_yaml["stages"]) <= set(stages), stages
    headings = [h.text.strip() for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert set(metrics_files) <= set(headings), headings
