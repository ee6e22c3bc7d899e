"""Run logging, the API action log, artifacts and redaction, read back from a real Prefect run."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker

from flows.pipeline import backfill
from sandbox.local import LocalWorld
from sandbox.world import CHECKOUT_NO_VIDEO_SESSION_ID, CHECKOUT_SPEECH_SESSION_IDS, CHECKOUT_TEST_ID
from tasks import steps
from tasks.api.client import ResultsApiClient
from tests.conftest import env_for, ingest_cli, isolated_env


@pytest.fixture(scope="module")
def run(
    world: LocalWorld, prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One backfill of two sessions (every stage), with the links it was handed recorded on the side."""
    with isolated_env(world, tmp_path_factory.mktemp("ledger"), "logs") as (prefix, mp):
        yield _spied_run(world, prefix, mp)


def _spied_run(world: LocalWorld, prefix: str, mp: pytest.MonkeyPatch) -> dict[str, Any]:
    links: list[str] = []
    real = ResultsApiClient.video_download_url

    def spy(self: ResultsApiClient, session_id: Any) -> Any:
        answer = real(self, session_id)
        if hasattr(answer, "video_url"):
            links.append(answer.video_url.get_secret_value())
        return answer

    mp.setattr(ResultsApiClient, "video_download_url", spy)
    mark = world.mark()
    sessions = [CHECKOUT_SPEECH_SESSION_IDS[0], CHECKOUT_NO_VIDEO_SESSION_ID]
    summary = backfill(test_ids=[CHECKOUT_TEST_ID], session_ids=sessions)
    APILogWorker.drain_all(timeout=10)
    token = steps.runtime().client.tokens.get()
    return {"summary": summary, "prefix": prefix, "links": links, "token": token, "mark": mark}


def read_back(flow_run_id: str) -> tuple[list[Any], list[Any]]:
    """The run's logs and artifacts as the Prefect API holds them."""
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
        )
    return logs, artifacts


def bucket_objects(world: LocalWorld, prefix: str) -> dict[str, bytes]:
    s3 = world.s3_client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=world.bucket, Prefix=prefix).get("Contents", [])]
    return {k: s3.get_object(Bucket=world.bucket, Key=k)["Body"].read() for k in keys}


def test_api_action_log_has_one_line_per_request_the_sandbox_counted(
    world: LocalWorld, run: dict[str, Any]
) -> None:
    summary = run["summary"]
    key = f"{run['prefix']}runs/{summary['run_id']}/api-calls.jsonl"
    assert summary["files"]["api_calls"] == key
    lines = [json.loads(line) for line in bucket_objects(world, key)[key].decode().splitlines()]
    counted = world.api_calls(since=run["mark"])
    assert len(lines) == len(counted) == summary["api_calls"] == 3  # one listing page, two link requests
    assert Counter((c["endpoint"], c["status"]) for c in lines) == Counter(
        {
            ("/api/v2/sessionResults", 200): 1,
            ("/api/v2/sessionResults/{sessionId}/videoDownloadUrl", 200): 1,
            ("/api/v2/sessionResults/{sessionId}/videoDownloadUrl", 404): 1,
        }
    )
    for line in lines:
        assert {"timestamp", "method", "endpoint", "session_id", "status", "latency_ms", "attempt"} <= set(
            line
        )
        assert "ratelimit_remaining" in line


def test_artifacts_and_summary_match_what_the_run_did(world: LocalWorld, run: dict[str, Any]) -> None:
    summary = run["summary"]
    _, artifacts = read_back(summary["run_id"])
    by_key = {a.key: a for a in artifacts}
    table = {row["metric"]: row["value"] for row in json.loads(by_key["ut-run-summary"].data)}
    assert table["sessions seen"] == 2
    assert table["ingested"] == 1 and table["video not ready yet (asked again later)"] == 1
    assert table["processed"] == 1 and table["no video"] == 0
    assert table["failed"] == 0
    assert table["API calls"] == len(world.api_calls(since=run["mark"])) and table["API 429 answers"] == 0
    assert table["bytes moved"] == summary["bytes"] > 0
    assert table["frames written"] == summary["frames"] > 0
    assert table["audio hours transcribed"] == pytest.approx(summary["audio_seconds"] / 3600, abs=1e-4)
    assert all(f"wall seconds: {stage}" in table for stage in ("enumerate", "ingest", "process", "publish"))
    assert "None" in by_key["ut-run-failures"].data and table["held by another run (not done)"] == 0
    assert by_key["ut-run-progress"].data == 100.0
    stored = json.loads(bucket_objects(world, summary["files"]["summary"])[summary["files"]["summary"]])
    assert stored["counts"] == summary["counts"] and stored["api_calls"] == summary["api_calls"]


def test_run_log_shows_decisions_and_progress(run: dict[str, Any]) -> None:
    logs, _ = read_back(run["summary"]["run_id"])
    messages = "\n".join(log.message for log in logs)
    assert f"session {CHECKOUT_SPEECH_SESSION_IDS[0]}: done (ingested)" in messages
    assert f"session {CHECKOUT_NO_VIDEO_SESSION_ID}: no_video" in messages
    assert "transferred" in messages and "real time" in messages  # transfer and transcription progress
    assert "dataset s3://" in messages


def test_no_credential_anywhere(
    world: LocalWorld, run: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    """The client secret, the access token and the pre-signed query strings appear nowhere."""
    assert run["links"], "the spy saw no link"
    secrets = [world.client_secret, run["token"]]
    for link in run["links"]:
        query = link.partition("?")[2]
        secrets += [query] + [
            p.split("=", 1)[1]
            for p in query.split("&")
            if p.startswith(("X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token"))
        ]
    logs, artifacts = read_back(run["summary"]["run_id"])
    haystacks = {
        "prefect logs": "\n".join(log.message for log in logs),
        "artifacts": "\n".join(str(a.data) for a in artifacts),
        "summary": json.dumps(run["summary"]),
        "console": "".join(capfd.readouterr()),
        **{f"s3://{k}": v.decode(errors="replace") for k, v in bucket_objects(world, run["prefix"]).items()},
    }
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a credential leaked into {where}"


def test_json_log_format_is_json_lines_on_stdout(world: LocalWorld, tmp_path: Path) -> None:
    env = {
        **os.environ,
        **env_for(world, tmp_path / "ledger"),
        "UT_LOG_FORMAT": "json",
        "UT_WORK_PREFIX": f"json-{uuid4().hex[:8]}/",
    }
    cmd = ingest_cli(CHECKOUT_TEST_ID)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    (summary,) = [r for r in records if "counts" in r]  # the run summary, one line
    assert summary["counts"] == {"ingest": {"done": 4, "no_video_yet": 1}}
    logs = [r for r in records if r is not summary]
    assert {"timestamp", "level", "logger", "message"} <= set(logs[0])
    assert any(r["logger"].startswith("prefect") for r in logs)
    assert any("session" in r["message"] and "ingested" in r["message"] for r in logs)
    assert world.client_secret not in result.stdout + result.stderr
