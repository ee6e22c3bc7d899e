"""Nothing lost: each fault end to end against the sandbox API and the local S3, then a rerun.

Every case asserts the records, the bucket (no multipart upload left open), the exit code and what
the operator's console shows (one line per problem, no traceback), and that a rerun without
``--force`` leaves every session in a final state with every available video in the bucket, byte
for byte. S3 outages go through a TCP proxy in front of the local S3 that can cut it for a while.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import httpx
import pytest
from botocore.exceptions import ConnectionClosedError

from flows.pipeline import backfill, reprocess
from sandbox.local import LocalWorld
from sandbox.media import MEDIA_DIR
from sandbox.world import (
    CHECKOUT_CORRUPT_SESSION_ID,
    CHECKOUT_NO_VIDEO_SESSION_ID,
    CHECKOUT_SPEECH_SESSION_IDS,
    CHECKOUT_TEST_ID,
    PRICING_TEST_ID,
    SPEECH_CLIPS,
)
from tasks.steps import runtime
from tests.conftest import env_for
from tests.tcpproxy import TcpProxy

LIST_OP = "SessionResultsController_getSessionSummaryResults"
LINK_OP = "SessionResultsController_getVideoDownloadUrl"
CLIPS = dict(zip(CHECKOUT_SPEECH_SESSION_IDS, SPEECH_CLIPS, strict=True))
WITH_VIDEO = [*CHECKOUT_SPEECH_SESSION_IDS, CHECKOUT_CORRUPT_SESSION_ID]
CHECKOUT = [*WITH_VIDEO, CHECKOUT_NO_VIDEO_SESSION_ID]
FINAL = {"done", "ingested", "no_video", "failed"}


# -- helpers ------------------------------------------------------------------------------------


def cli_env(world: LocalWorld, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The production variables for a CLI run against ``world``, with a bucket prefix of its own."""
    return {
        **os.environ,
        **env_for(world, tmp_path / "ledger"),
        "UT_WORK_PREFIX": f"faults-{uuid4().hex[:8]}/",
        "UT_LOG_DIR": str(tmp_path / "logs"),
        "UT_SCRATCH_DIR": str(tmp_path / "scratch"),
        **extra,
    }


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """A CLI run in its own process group (it and the ephemeral Prefect server it starts)."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def ingest_args(*tests: UUID) -> list[str]:
    return ["backfill", *(a for t in tests for a in ("--test-id", str(t))), "--stage", "ingest"]


def records(world: LocalWorld, prefix: str) -> dict[str, dict[str, Any]]:
    s3, found = world.s3_client(), {}
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=world.bucket, Prefix=f"{prefix}sessions/"
    ):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/session.json"):
                body = json.loads(s3.get_object(Bucket=world.bucket, Key=obj["Key"])["Body"].read())
                found[body["session_id"]] = body
    return found


def open_uploads(world: LocalWorld, prefix: str) -> list[str]:
    answer = world.s3_client().list_multipart_uploads(Bucket=world.bucket, Prefix=prefix)
    return [u["Key"] for u in answer.get("Uploads", [])]


def video_bytes(world: LocalWorld, key: str) -> bytes:
    return world.s3_client().get_object(Bucket=world.bucket, Key=key)["Body"].read()


def assert_nothing_lost(
    world: LocalWorld, prefix: str, media: Path = MEDIA_DIR, processed: bool = False
) -> None:
    """Every checkout session settled, each available video in the bucket byte for byte, no open upload."""
    found = records(world, prefix)
    for session_id in CHECKOUT:
        rec = found[str(session_id)]
        assert rec["status"] in FINAL and rec["lease"] is None, (session_id, rec["status"], rec["lease"])
    for session_id in WITH_VIDEO:
        rec = found[str(session_id)]
        assert rec["video"] is not None, (session_id, rec["status"], rec["error"])
        clip = CLIPS.get(session_id, "corrupt.mp4")
        assert hashlib.sha256(video_bytes(world, rec["video"]["key"])).hexdigest() == rec["video"]["sha256"]
        assert rec["video"]["sha256"] == hashlib.sha256((media / clip).read_bytes()).hexdigest()
        if processed and session_id != CHECKOUT_CORRUPT_SESSION_ID:
            assert rec["status"] == "done", (session_id, rec["error"])
    assert open_uploads(world, prefix) == []


def parse_time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def problem_lines(stderr: str) -> list[str]:
    """What the operator sees as problems: ERROR lines and the CLI's own lines."""
    return [line for line in stderr.splitlines() if " ERROR " in line or line.startswith("ut-pipeline:")]


def assert_clean_console(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-3000:]


def wait_for(
    condition: Callable[[], bool], what: str, process: subprocess.Popen[str], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def big_world(fresh_world: Callable[..., LocalWorld], tmp_path: Path) -> tuple[LocalWorld, Path]:
    """A world whose first speech video is 48 MB, served at 8 MB/s: a transfer that takes seconds."""
    media = tmp_path / "media"
    media.mkdir()
    for item in MEDIA_DIR.iterdir():
        (media / item.name).symlink_to(item)
    (media / SPEECH_CLIPS[0]).unlink()
    (media / SPEECH_CLIPS[0]).write_bytes(os.urandom(48 * 1024 * 1024))
    world = fresh_world(
        extra_args=["--media-dir", str(media), "--video-bytes-per-second", str(8 * 1024 * 1024)]
    )
    return world, media


@pytest.fixture
def in_process(
    world_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, prefect_server: None, tmp_path: Path
) -> str:
    """The session world as this process's environment, with a prefix of its own; returns the prefix."""
    prefix = f"faults-{uuid4().hex[:8]}/"
    monkeypatch.setenv("UT_WORK_PREFIX", prefix)
    monkeypatch.setenv("UT_SCRATCH_DIR", str(tmp_path / "scratch"))
    return prefix


# -- kills --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_killed_mid_upload_then_an_immediate_rerun_and_a_nightly(
    big_world: tuple[LocalWorld, Path], tmp_path: Path
) -> None:
    """SIGKILL mid-transfer; the rerun starts at once, with the default two-minute lease: the dead run's
    sessions are taken over because its process is gone, not because its lease lapsed."""
    world, media = big_world
    env = cli_env(world, tmp_path, UT_TEST_IDS=str(CHECKOUT_TEST_ID))
    prefix = env["UT_WORK_PREFIX"]
    victim = start_cli(*ingest_args(CHECKOUT_TEST_ID), env=env)
    wait_for(lambda: bool(open_uploads(world, prefix)), "the big transfer started", victim)
    time.sleep(1.0)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    held = records(world, prefix)[str(CHECKOUT_SPEECH_SESSION_IDS[0])]
    assert held["status"] == "ingesting" and held["lease"] is not None  # left claimed by the dead run

    began = time.monotonic()
    rerun = cli(*ingest_args(CHECKOUT_TEST_ID), env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert time.monotonic() - began < 100  # not a lease wait: 120 s would have been the lease
    assert "taken over from run" in rerun.stderr
    assert_clean_console(rerun)
    assert_nothing_lost(world, prefix, media)
    taken = records(world, prefix)[str(CHECKOUT_SPEECH_SESSION_IDS[0])]
    assert taken["ingest"]["attempts"] == 2 and taken["ingest"]["run_id"] != held["lease"]["owner"]

    nightly = cli("nightly", env=env)
    assert nightly.returncode == 1, nightly.stderr[-3000:]  # two videos fail processing, for good
    assert_clean_console(nightly)
    summary = json.loads(nightly.stdout)
    undecodable = {str(CHECKOUT_SPEECH_SESSION_IDS[0]), str(CHECKOUT_CORRUPT_SESSION_ID)}  # 48 MB of noise
    assert {f["session_id"] for f in summary["failures"]} == undecodable
    assert all(f["reason"].startswith("media: ") for f in summary["failures"])
    assert summary["held"] == [] and summary["counts"]["ingest"]["skipped"] == 4
    assert summary["counts"]["process"]["done"] == 2
    assert_nothing_lost(world, prefix, media)
    mark = json.loads(video_bytes(world, f"{prefix}state/watermarks/{CHECKOUT_TEST_ID}.json"))
    no_video = records(world, prefix)[str(CHECKOUT_NO_VIDEO_SESSION_ID)]
    assert parse_time(mark["until"]) == parse_time(no_video["api"]["finishTime"])  # held at the late video


@pytest.mark.slow
def test_killed_mid_transcription_then_an_immediate_rerun(world: LocalWorld, tmp_path: Path) -> None:
    env = cli_env(world, tmp_path)
    prefix = env["UT_WORK_PREFIX"]
    first = cli(*ingest_args(CHECKOUT_TEST_ID), env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    target = str(CHECKOUT_SPEECH_SESSION_IDS[1])
    victim = start_cli("reprocess", "--session-id", target, env=env)
    wait_for(lambda: records(world, prefix)[target]["status"] == "processing", "processing started", victim)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    left = records(world, prefix)[target]
    assert left["status"] == "processing" and left["lease"] is not None and left["transcript"] is None
    leftovers = list((tmp_path / "scratch").glob("run-*"))
    assert leftovers, "the killed run left no scratch folder"

    rerun = cli("backfill", "--test-id", str(CHECKOUT_TEST_ID), env=env)
    assert rerun.returncode == 1, rerun.stderr[-3000:]  # only the corrupt video fails
    assert_clean_console(rerun)
    assert "taken over from run" in rerun.stderr
    assert_nothing_lost(world, prefix, processed=True)
    done = records(world, prefix)[target]
    assert done["processing"]["attempts"] == 2 and done["transcript"]["text"]
    assert not any(path.exists() for path in leftovers)  # swept by the rerun
    assert list((tmp_path / "scratch").glob("run-*")) == []  # and the rerun removed its own


# -- garbage answers ----------------------------------------------------------------------------


def test_malformed_list_items_are_counted_and_the_rest_carries_on(world: LocalWorld, tmp_path: Path) -> None:
    env = cli_env(world, tmp_path, UT_TEST_IDS=f"{CHECKOUT_TEST_ID},{PRICING_TEST_ID}")
    prefix = env["UT_WORK_PREFIX"]
    # Newest first: 0 in progress, 1-3 speech, 4 no video, 5 corrupt.
    broken = [
        {"op": "replace", "path": "/sessions/1/sessionId", "value": "not-a-uuid"},
        {"op": "replace", "path": "/sessions/2/startTime", "value": "yesterday"},
        {"op": "remove", "path": "/sessions/3/finishTime"},
        {"op": "add", "path": "/sessions/-", "value": "just a string"},
    ]
    world.admin("POST", "reset")
    world.admin("POST", "faults", json=[{"target": LIST_OP, "patch": broken}])
    result = cli("nightly", env=env)
    assert result.returncode == 1
    assert_clean_console(result)
    summary = json.loads(result.stdout)
    assert len(summary["list_problems"]) == 4
    reasons = "\n".join(summary["list_problems"])
    assert "sessionId" in reasons and "startTime" in reasons and "finishTime" in reasons
    assert str(CHECKOUT_SPEECH_SESSION_IDS[2]) in reasons  # the id of an item that had a readable one
    lines = problem_lines(result.stderr)
    assert sum("item" in line for line in lines) >= 4
    found = records(world, prefix)
    assert found[str(CHECKOUT_CORRUPT_SESSION_ID)]["status"] == "failed"  # the good items carried on
    assert str(CHECKOUT_SPEECH_SESSION_IDS[0]) not in found
    marks = {
        o["Key"]
        for o in world.s3_client()
        .list_objects_v2(Bucket=world.bucket, Prefix=f"{prefix}state/watermarks/")
        .get("Contents", [])
    }
    assert marks == {f"{prefix}state/watermarks/{PRICING_TEST_ID}.json"}  # the damaged test keeps its mark

    world.admin("POST", "faults", json=[{"target": LIST_OP, "patch": broken}])
    listing = cli("sessions", "--test-id", str(CHECKOUT_TEST_ID), env=env)
    assert listing.returncode == 1 and listing.stderr.count("unusable list item") == 4
    assert_clean_console(listing)
    listed = {line.split("\t")[1] for line in listing.stdout.splitlines()}
    assert listed == {str(CHECKOUT_NO_VIDEO_SESSION_ID), str(CHECKOUT_CORRUPT_SESSION_ID)}  # the intact ones

    rerun = cli("nightly", env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]  # the corrupt video's failure is final: not retried
    summary = json.loads(rerun.stdout)
    assert summary["list_problems"] == [] and summary["counts"]["process"]["done"] == 3
    assert_nothing_lost(world, prefix, processed=True)


def test_a_page_that_is_not_json_costs_only_its_test(world: LocalWorld, in_process: str) -> None:
    world.admin("POST", "faults", json=[{"target": LIST_OP, "body": "<html>502 Bad Gateway</html>"}])
    summary = backfill(test_ids=[CHECKOUT_TEST_ID, PRICING_TEST_ID], stages=["ingest"])
    (name,) = summary["test_errors"]
    assert "not JSON" in summary["test_errors"][name] and "502 Bad Gateway" in summary["test_errors"][name]
    assert summary["counts"]["ingest"]  # the other test's sessions went on


def test_an_empty_page_that_should_not_be_is_reported(world: LocalWorld, in_process: str) -> None:
    world.admin(
        "POST",
        "faults",
        json=[{"target": LIST_OP, "patch": [{"op": "replace", "path": "/sessions", "value": []}]}],
    )
    summary = backfill(test_ids=[CHECKOUT_TEST_ID], stages=["ingest"])
    assert summary["sessions"] == 0
    (problem,) = summary["list_problems"]
    assert "empty page" in problem and "counts 6 sessions" in problem


def test_bad_link_answers_fail_the_session_with_the_reason(world: LocalWorld, in_process: str) -> None:
    not_json, no_url = CHECKOUT_SPEECH_SESSION_IDS[0], CHECKOUT_SPEECH_SESSION_IDS[1]
    world.admin(
        "POST",
        "faults",
        json=[
            {"target": LINK_OP, "session_id": str(not_json), "body": "Service temporarily unavailable"},
            {"target": LINK_OP, "session_id": str(no_url), "patch": [{"op": "remove", "path": "/videoUrl"}]},
        ],
    )
    first = backfill(test_ids=[CHECKOUT_TEST_ID], stages=["ingest"])
    reasons = {f["session_id"]: f["reason"] for f in first["failures"]}
    assert (
        "not JSON" in reasons[str(not_json)] and "Service temporarily unavailable" in reasons[str(not_json)]
    )
    assert "videoUrl" in reasons[str(no_url)] and "Field required" in reasons[str(no_url)]
    found = records(world, in_process)
    for session_id in (not_json, no_url):
        rec = found[str(session_id)]
        assert rec["status"] == "failed" and rec["lease"] is None and rec["error"]["stage"] == "ingest"
    assert open_uploads(world, in_process) == []

    second = backfill(test_ids=[CHECKOUT_TEST_ID], stages=["ingest"])
    assert second["failures"] == [] and second["counts"]["ingest"]["done"] == 2
    assert_nothing_lost(world, in_process)


def test_a_timeout_is_reported_as_a_timeout(
    world: LocalWorld, in_process: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UT_HTTP_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("UT_MAX_ATTEMPTS", "2")
    target = CHECKOUT_SPEECH_SESSION_IDS[0]
    world.admin(
        "POST",
        "faults",
        json=[{"target": LINK_OP, "session_id": str(target), "delay_seconds": 2, "times": 2}],
    )
    summary = backfill(test_ids=[CHECKOUT_TEST_ID], session_ids=[target], stages=["ingest"])
    (failure,) = summary["failures"]
    assert "timed out waiting for the answer" in failure["reason"] and "HTTP 503" not in failure["reason"]


# -- S3 -----------------------------------------------------------------------------------------


def test_s3_unreachable_or_bucket_missing_is_a_configuration_error(world: LocalWorld, tmp_path: Path) -> None:
    mark = world.mark()
    dead = f"http://127.0.0.1:{closed_port()}"
    unreachable = cli(
        *ingest_args(CHECKOUT_TEST_ID), env=cli_env(world, tmp_path, AWS_ENDPOINT_URL=dead), timeout=120
    )
    missing = cli(
        *ingest_args(CHECKOUT_TEST_ID), env=cli_env(world, tmp_path, UT_WORK_BUCKET="no-such-bucket")
    )
    for result, named in ((unreachable, "AWS_ENDPOINT_URL"), (missing, "UT_WORK_BUCKET")):
        assert result.returncode == 2, result.stderr[-3000:]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and named in lines[0], result.stderr[-3000:]
    assert world.api_calls(since=mark) == []  # no API quota spent


@pytest.mark.slow
def test_an_s3_outage_mid_stream_is_ridden_out(big_world: tuple[LocalWorld, Path], tmp_path: Path) -> None:
    world, media = big_world
    upstream = urlsplit(world.s3.url)
    with TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 80)) as proxy:
        env = cli_env(world, tmp_path, AWS_ENDPOINT_URL=proxy.url)
        prefix = env["UT_WORK_PREFIX"]
        run = start_cli(*ingest_args(CHECKOUT_TEST_ID), env=env)
        wait_for(lambda: bool(open_uploads(world, prefix)), "the big transfer started", run)
        time.sleep(0.5)
        proxy.cut(20)
        stdout, stderr = run.communicate(timeout=400)
    assert proxy.refused > 0  # the outage happened and was felt
    assert run.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    assert_nothing_lost(world, prefix, media)
    assert json.loads(stdout)["failures"] == []


@pytest.mark.slow
def test_an_s3_outage_longer_than_the_retries_fails_cleanly_and_the_rerun_finishes(
    big_world: tuple[LocalWorld, Path], tmp_path: Path
) -> None:
    world, media = big_world
    upstream = urlsplit(world.s3.url)
    with TcpProxy((upstream.hostname or "127.0.0.1", upstream.port or 80)) as proxy:
        env = cli_env(world, tmp_path, AWS_ENDPOINT_URL=proxy.url, UT_S3_MAX_ATTEMPTS="2")
        prefix = env["UT_WORK_PREFIX"]
        run = start_cli(*ingest_args(CHECKOUT_TEST_ID), env=env)
        wait_for(lambda: bool(open_uploads(world, prefix)), "the big transfer started", run)
        proxy.cut(60)
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 1, stderr[-3000:]
        assert "Traceback" not in stderr
        failed = [line for line in problem_lines(stderr) if str(CHECKOUT_SPEECH_SESSION_IDS[0]) in line]
        assert failed and "S3" in failed[0]
        proxy.cut(0)
        rerun = cli(*ingest_args(CHECKOUT_TEST_ID), env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_nothing_lost(world, prefix, media)


def test_an_upload_s3_opened_but_whose_answer_was_lost_is_not_left_open(
    world: LocalWorld, in_process: str
) -> None:
    """CreateMultipartUpload is not idempotent: S3 acts on the request, the answer is lost, the SDK
    retries and opens a second upload. The first must not stay open (and billed) for good."""
    s3 = runtime().s3
    lost: list[str] = []

    def lose_the_first_answer(request: Any, **_: Any) -> None:
        if lost:
            return
        lost.append(request.url)
        answer = httpx.request(
            request.method, request.url, headers=dict(request.headers), content=request.body
        )
        assert answer.status_code == 200  # S3 opened the upload ...
        raise ConnectionClosedError(endpoint_url=request.url)  # ... and the connection died before the answer

    s3.meta.events.register("before-send.s3.CreateMultipartUpload", lose_the_first_answer)
    try:
        summary = backfill(test_ids=[CHECKOUT_TEST_ID], stages=["ingest"])
    finally:
        s3.meta.events.unregister("before-send.s3.CreateMultipartUpload", lose_the_first_answer)
    assert len(lost) == 1
    assert summary["failures"] == [] and summary["counts"]["ingest"]["done"] == 4
    assert open_uploads(world, in_process) == []


# -- credentials, late videos, concurrency, disk -------------------------------------------------


def test_bad_credentials_are_a_configuration_error(world: LocalWorld, tmp_path: Path) -> None:
    mark = world.mark()
    result = cli(
        *ingest_args(CHECKOUT_TEST_ID), env=cli_env(world, tmp_path, UT_CLIENT_SECRET="wrong-secret")
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "UT_CLIENT_SECRET" in lines[0] and "401" in lines[0], result.stderr
    assert "wrong-secret" not in result.stderr
    assert world.api_calls(since=mark) == []


def test_a_late_video_is_asked_again_until_the_grace_window_ends(
    world: LocalWorld, in_process: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = CHECKOUT_SPEECH_SESSION_IDS[2]  # finished 13 hours ago
    world.admin("POST", "faults", json=[{"target": LINK_OP, "session_id": str(late), "status": 404}])
    first = backfill(test_ids=[CHECKOUT_TEST_ID], stages=["ingest"])
    assert first["counts"]["ingest"]["no_video_yet"] == 2  # it, and the session that never has one
    rec = records(world, in_process)[str(late)]
    assert rec["status"] == "no_video" and rec["no_video"]["final"] is False and rec["no_video"]["checked_at"]
    marker = f"{in_process}state/late-videos/{late}.json"
    assert json.loads(video_bytes(world, marker))["test_id"] == str(CHECKOUT_TEST_ID)

    # A backfill whose window no longer covers the session still asks again: the marker finds it.
    mark = world.mark()
    since = parse_time(rec["api"]["finishTime"]) + timedelta(seconds=1)
    second = backfill(test_ids=[CHECKOUT_TEST_ID], since=since, stages=["ingest"])
    assert str(late) in {c["session_id"] for c in world.api_calls(LINK_OP, since=mark)}
    assert second["counts"]["ingest"]["done"] == 1
    rec = records(world, in_process)[str(late)]
    assert rec["status"] == "ingested" and rec["no_video"] is None
    with pytest.raises(world.s3_client().exceptions.NoSuchKey):
        video_bytes(world, marker)

    monkeypatch.setenv("UT_LATE_VIDEO_GRACE_HOURS", "1")  # the no-video session finished 18 h ago
    third = backfill(test_ids=[CHECKOUT_TEST_ID], stages=["ingest"])
    assert third["counts"]["ingest"].get("no_video") == 1
    assert records(world, in_process)[str(CHECKOUT_NO_VIDEO_SESSION_ID)]["no_video"]["final"] is True
    mark = world.mark()
    backfill(test_ids=[CHECKOUT_TEST_ID], stages=["ingest"])
    assert world.api_calls(LINK_OP, since=mark) == []  # final: never asked again


@pytest.mark.slow
def test_two_runs_at_once_never_work_on_the_same_session(world: LocalWorld, tmp_path: Path) -> None:
    env = cli_env(world, tmp_path, UT_LATE_VIDEO_GRACE_HOURS="0")
    prefix = env["UT_WORK_PREFIX"]
    mark = world.mark()
    args = ["backfill", "--test-id", str(CHECKOUT_TEST_ID)]
    runs = [start_cli(*args, env=env), start_cli(*args, env=env)]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode in (0, 1), stderr[-3000:]
        assert "Traceback" not in stderr
    summaries = [json.loads(stdout) for stdout, _ in outputs]
    assert all(s["held"] == [] for s in summaries)
    assert sum(len(s["failures"]) for s in summaries) == 1  # the corrupt video, by one of them
    assert_nothing_lost(world, prefix, processed=True)
    found = records(world, prefix)
    for session_id in WITH_VIDEO:
        rec = found[str(session_id)]
        assert rec["ingest"]["attempts"] == 1 and rec["processing"]["attempts"] == 1, rec
    links = [c["session_id"] for c in world.api_calls(LINK_OP, since=mark)]
    assert sorted(links) == sorted(str(s) for s in CHECKOUT)  # one link per session, across both runs
    done = [s["counts"].get("process", {}).get("done", 0) for s in summaries]
    assert sum(done) == len(CHECKOUT_SPEECH_SESSION_IDS)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 500 KB tmpfs: room for a session's video (283 KB), not for its audio and frames."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=500k", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs, and mounting one is not permitted here: {result.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_scratch_disk_is_a_scratch_failure(
    world: LocalWorld, in_process: str, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = CHECKOUT_SPEECH_SESSION_IDS[0]
    backfill(test_ids=[CHECKOUT_TEST_ID], session_ids=[target], stages=["ingest"])
    monkeypatch.setenv("UT_SCRATCH_DIR", str(small_disk))
    summary = reprocess(session_ids=[target])
    (failure,) = summary["failures"]
    assert failure["reason"].startswith("scratch: no space left on device")
    rec = records(world, in_process)[str(target)]
    assert rec["status"] == "failed" and rec["error"]["stage"] == "scratch" and rec["lease"] is None
    assert list(small_disk.glob("run-*")) == []  # the run's scratch folder is gone

    monkeypatch.setenv("UT_SCRATCH_DIR", str(small_disk.parent / "roomy"))
    assert reprocess(session_ids=[target])["failures"] == []


def _lease_from_elsewhere(world: LocalWorld, prefix: str, session_id: UUID, owner: str) -> None:
    """Make a session look held by ``owner`` on another machine, for another hour."""
    key = f"{prefix}sessions/{session_id}/session.json"
    rec = json.loads(video_bytes(world, key))
    rec["status"] = "processing"
    rec["lease"] = {
        "owner": owner,
        "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        "host": "another-machine",
        "pid": 4242,
        "boot": "another-boot",
        "started": 1,
    }
    world.s3_client().put_object(Bucket=world.bucket, Key=key, Body=json.dumps(rec).encode())


def test_a_lease_of_a_run_prefect_reports_finished_is_taken_over_at_once(
    world: LocalWorld, in_process: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UT_HELD_WAIT_SECONDS", "0")
    target, other = CHECKOUT_SPEECH_SESSION_IDS[0], CHECKOUT_SPEECH_SESSION_IDS[1]
    earlier = backfill(test_ids=[CHECKOUT_TEST_ID], session_ids=[target, other], stages=["ingest"])
    _lease_from_elsewhere(world, in_process, target, owner=earlier["run_id"])  # a run Prefect knows is over
    _lease_from_elsewhere(world, in_process, other, owner=str(uuid4()))  # a run Prefect cannot vouch for
    summary = reprocess(session_ids=[target, other])
    assert summary["counts"]["process"] == {"done": 1, "held": 1}
    (held,) = summary["held"]
    assert held["session_id"] == str(other) and "lease until" in held["reason"]
    found = records(world, in_process)
    assert found[str(target)]["status"] == "done" and found[str(target)]["lease"] is None
    assert found[str(other)]["lease"]["host"] == "another-machine"  # respected until it lapses
