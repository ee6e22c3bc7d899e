"""``ut-pipeline ui`` as an operator uses it: started, a backfill run through its worker, stopped with Ctrl-C.

The command runs in a temporary folder, so its ``.work/prefect-ui`` (the Prefect history) is the
test's own, and in its own session, so the Ctrl-C reaches it alone, as from a terminal.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import State
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.ui import live_groups, process_groups, stop_tree
from sandbox.world import CHECKOUT_NO_VIDEO_SESSION_ID, CHECKOUT_SPEECH_SESSION_IDS, CHECKOUT_TEST_ID

DEPLOYMENTS = ("ut-nightly/nightly", "ut-backfill/backfill", "ut-reprocess/reprocess")


def _wait_ready(ui: subprocess.Popen[bytes], output: Path, timeout: float = 90.0) -> str:
    """The API URL the command printed, once it printed that the UI is ready."""
    deadline = time.monotonic() + timeout
    while "UI ready: " not in (text := output.read_text()):
        assert ui.poll() is None, f"ut-pipeline ui exited with {ui.returncode}:\n{text}"
        assert time.monotonic() < deadline, f"no 'UI ready' within {timeout:.0f} s:\n{text}"
        time.sleep(0.2)
    found = re.search(r"PREFECT_API_URL=(\S+)", text)
    assert found, text
    return found.group(1)


def _final_state(client: SyncPrefectClient, flow_run_id: UUID, timeout: float = 180.0) -> State:
    deadline = time.monotonic() + timeout
    while not (state := client.read_flow_run(flow_run_id).state) or not state.is_final():
        assert time.monotonic() < deadline, f"flow run still {state} after {timeout:.0f} s"
        time.sleep(1)
    return state


def _log_lines(client: SyncPrefectClient, flow_run_id: UUID, wanted: list[str], timeout: float = 20.0) -> str:
    """The run's log as the UI shows it, once each ``wanted`` pattern has a line (logs arrive in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        text = "\n".join(log.message for log in logs)
        if all(re.search(pattern, text) for pattern in wanted) or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


@pytest.mark.slow
def test_ui_registers_runs_a_backfill_from_its_worker_and_stops_cleanly(tmp_path: Path) -> None:
    output = tmp_path / "ui.out"
    with output.open("wb") as out:
        ui = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "ui", "--port", "0"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        api_url = _wait_ready(ui, output)
        printed = output.read_text()
        assert str(CHECKOUT_TEST_ID) in printed and "Ctrl-C to stop" in printed
        assert all(name in printed for name in DEPLOYMENTS), printed
        groups = process_groups(ui.pid)
        assert len(groups) >= 5, groups  # itself, Prefect server, worker, sandbox API, local S3

        with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            deployments = {name: client.read_deployment_by_name(name) for name in DEPLOYMENTS}
            run = client.create_flow_run_from_deployment(
                deployments["ut-backfill/backfill"].id,
                parameters={"test_ids": [str(CHECKOUT_TEST_ID)], "stages": ["ingest"]},
            )
            state = _final_state(client, run.id)
            wanted = [f"{s}.*ingested" for s in CHECKOUT_SPEECH_SESSION_IDS]
            wanted += [f"{CHECKOUT_NO_VIDEO_SESSION_ID}.*no_video", "run finished"]
            log = _log_lines(client, run.id, wanted)
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
        assert state.is_completed(), f"{state}\n{log}"
        for pattern in wanted:
            assert re.search(pattern, log), f"no log line matching {pattern!r} in:\n{log}"
        assert artifacts, "the run published no artifact"

        groups |= process_groups(ui.pid)
        os.killpg(ui.pid, signal.SIGINT)
        assert ui.wait(30) == 0, output.read_text()
        assert "Stopped." in output.read_text()
        assert not live_groups(groups), f"left behind: process groups {live_groups(groups)}"
    finally:
        stop_tree(ui)
