"""The backfill deployment's Custom run form in a real browser (issue #11): Debian's chromium, driven by
Playwright, opens ``ut-pipeline ui``, finds every parameter's field with its description, fills the form
for the sandbox's test, submits it, and watches the run complete; its sessions are then processed by
the UI's processing worker. A screenshot of the opened form is kept in the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import boto3
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.ui import stop_tree
from sandbox.local import LOCAL_AWS
from sandbox.orchestrator import REPO_ROOT
from sandbox.world import CHECKOUT_SPEECH_SESSION_IDS, CHECKOUT_TEST_ID
from tests.test_ui import _wait_ready

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# The backfill flow's parameters and the first words of their docstring descriptions.
FIELDS = {
    "test_ids": "Tests to cover",
    "since": "Only sessions finished at or after",
    "until": "Only sessions finished before",
    "session_ids": "Only these sessions",
    "force": "Redo what is already done",
    "stages": "The stages to run",
}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="no chromium browser here (Debian: apt-get install chromium)"
)


def open_custom_run(page: Page, ui_url: str) -> None:
    """Deployments > backfill > Run > Custom run, as an operator clicks through it."""
    page.goto(f"{ui_url}/deployments", wait_until="networkidle")
    page.get_by_role("link", name="backfill", exact=True).click()
    page.wait_for_url("**/deployments/deployment/**")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    page.wait_for_url("**/deployments/deployment/*/run**")


def _submitted_run(api_url: str, name: str, timeout: float = 60.0) -> UUID:
    """The id of the flow run the form created under ``name``, once the server has it."""
    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
            if runs:
                return runs[0].id
            assert time.monotonic() < deadline, f"no flow run named {name!r} {timeout:.0f} s after Submit"
            time.sleep(0.5)


def bucket_records(ui_output: str) -> dict[str, dict[str, object]]:
    """The session records in the UI's local S3 (its URL is printed at start)."""
    found = re.search(r"Work bucket\s+s3://(\S+) on (\S+)", ui_output)
    assert found, ui_output
    bucket, endpoint = found.groups()
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=LOCAL_AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id=LOCAL_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_AWS["AWS_SECRET_ACCESS_KEY"],
    )
    return {
        str(sid): json.loads(s3.get_object(Bucket=bucket, Key=f"sessions/{sid}/session.json")["Body"].read())
        for sid in CHECKOUT_SPEECH_SESSION_IDS
    }


@pytest.mark.slow
def test_the_backfill_form_opens_with_its_fields_and_runs_the_sandbox_test(tmp_path: Path) -> None:
    output = tmp_path / "ui.out"
    with output.open("wb") as out:
        ui = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "ui", "--port", "0"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},  # this checkout's code, wherever installed
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        api_url = _wait_ready(ui, output)
        ui_url = api_url.removesuffix("/api")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_custom_run(page, ui_url)
            for name, description in FIELDS.items():
                expect(page.get_by_text(f"{name} (Optional)", exact=True)).to_be_visible()
                expect(page.get_by_text(description).first).to_be_visible()
            expect(page.get_by_text("params", exact=True)).to_have_count(0)  # no single opaque field
            page.screenshot(path=tmp_path / "backfill-form.png", full_page=True)

            page.get_by_role("button", name="Add item").first.click()  # test_ids
            page.locator("textarea").first.fill(str(CHECKOUT_TEST_ID))
            run_name = page.get_by_role("textbox").first.input_value()
            page.get_by_role("button", name="Submit").click()
            # The UI confirms with a toast that links to the run; a toast can be gone before a slow
            # machine looks for it, so the run is found by its name through the API instead.
            flow_run_id = _submitted_run(api_url, run_name)
            page.goto(f"{ui_url}/runs/flow-run/{flow_run_id}", wait_until="networkidle")
            expect(page.locator(".page-heading .state-badge")).to_have_text("Completed", timeout=300_000)
            page.screenshot(path=tmp_path / "backfill-run.png")
            browser.close()

        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
        assert run.state is not None and run.state.is_completed(), run.state
        assert run.parameters["test_ids"] == [str(CHECKOUT_TEST_ID)]
        for record in bucket_records(output.read_text()).values():  # processed by the processing worker
            assert record["status"] == "done", record
            processing = record["processing"]
            assert isinstance(processing, dict) and str(processing["worker"]).startswith("ut-process-ui@")
    finally:
        stop_tree(ui)
