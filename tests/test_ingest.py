"""Ingest end to end: real Prefect runs against the sandbox API and the local S3 server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from flows.pipeline import backfill, nightly
from sandbox.local import LocalWorld
from sandbox.media import MEDIA_DIR
from sandbox.world import (
    CHECKOUT_CORRUPT_SESSION_ID,
    CHECKOUT_IN_PROGRESS_SESSION_ID,
    CHECKOUT_NO_VIDEO_SESSION_ID,
    CHECKOUT_SPEECH_SESSION_IDS,
    CHECKOUT_TEST_ID,
    PRICING_SESSION_IDS,
    PRICING_TEST_ID,
    SPEECH_CLIPS,
)
from tasks.storage.records import Stage
from tests.conftest import env_for, ingest_cli

LINK_OP = "SessionResultsController_getVideoDownloadUrl"
INGEST = [Stage.INGEST]  # these tests are about ingest; processing has its own


@pytest.fixture
def work(world_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, prefect_server: None) -> str:
    """A prefix of the bucket private to this test; returns it."""
    prefix = f"test-{uuid4().hex[:8]}/"
    monkeypatch.setenv("UT_WORK_PREFIX", prefix)
    return prefix


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(world: LocalWorld, prefix: str, session_id: UUID) -> dict[str, Any]:
    obj = world.s3_client().get_object(Bucket=world.bucket, Key=f"{prefix}sessions/{session_id}/session.json")
    return json.loads(obj["Body"].read())


def link_calls(world: LocalWorld, since: int = 0) -> list[dict[str, Any]]:
    return world.api_calls(LINK_OP, since=since)


def test_backfill_ingests_every_completed_session_byte_for_byte(world: LocalWorld, work: str) -> None:
    summary = backfill(test_ids=[CHECKOUT_TEST_ID], stages=INGEST)
    # The sandbox's session without a video finished within the last day: not final yet.
    assert summary["counts"] == {"ingest": {"done": 4, "no_video_yet": 1}}
    assert summary["failures"] == [] and summary["test_errors"] == {}

    for session_id, clip in zip(CHECKOUT_SPEECH_SESSION_IDS, SPEECH_CLIPS, strict=True):
        rec = record(world, work, session_id)
        assert rec["status"] == "ingested" and rec["error"] is None and rec["lease"] is None
        assert rec["test_id"] == str(CHECKOUT_TEST_ID)
        assert rec["video"]["sha256"] == sha256_file(MEDIA_DIR / clip)
        assert rec["video"]["bytes"] == (MEDIA_DIR / clip).stat().st_size
        assert rec["video"]["key"] == f"{work}sessions/{session_id}/video.mp4"
        assert rec["api"]["sessionId"] == str(session_id) and rec["api"]["finishTime"]
        body = world.s3_client().get_object(Bucket=world.bucket, Key=rec["video"]["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == rec["video"]["sha256"]

    assert (
        record(world, work, CHECKOUT_CORRUPT_SESSION_ID)["status"] == "ingested"
    )  # bytes are bytes to ingest
    no_video = record(world, work, CHECKOUT_NO_VIDEO_SESSION_ID)
    assert no_video["status"] == "no_video" and no_video["video"] is None
    assert no_video["no_video"]["final"] is False and no_video["no_video"]["checks"] == 1
    with pytest.raises(world.s3_client().exceptions.NoSuchKey):
        record(world, work, CHECKOUT_IN_PROGRESS_SESSION_ID)  # not complete: not touched

    calls = link_calls(world)
    assert len(calls) == 5  # one link per completed session, nothing fetched twice
    assert world.s3_client().list_multipart_uploads(Bucket=world.bucket).get("Uploads", []) == []


def test_second_run_makes_no_link_calls_and_force_redoes(world: LocalWorld, work: str) -> None:
    backfill(test_ids=[CHECKOUT_TEST_ID], stages=INGEST)
    mark = world.mark()
    again = backfill(test_ids=[CHECKOUT_TEST_ID], stages=INGEST)
    # Only the session whose video is not there yet is asked again.
    assert again["counts"] == {"ingest": {"skipped": 4, "no_video_yet": 1}}
    assert [c["session_id"] for c in link_calls(world, mark)] == [str(CHECKOUT_NO_VIDEO_SESSION_ID)]

    one = CHECKOUT_SPEECH_SESSION_IDS[0]
    mark = world.mark()
    forced = backfill(test_ids=[CHECKOUT_TEST_ID], session_ids=[one], force=True, stages=INGEST)
    assert forced["counts"] == {"ingest": {"done": 1}}
    assert [c["session_id"] for c in link_calls(world, mark)] == [str(one)]
    assert record(world, work, one)["ingest"]["attempts"] == 2


def test_failures_are_recorded_and_retried_by_the_next_run(world: LocalWorld, work: str) -> None:
    target = CHECKOUT_SPEECH_SESSION_IDS[2]
    world.admin("POST", "faults", json=[{"target": "video", "session_id": str(target), "status": 404}])
    first = backfill(test_ids=[CHECKOUT_TEST_ID], stages=INGEST)
    assert first["counts"]["ingest"]["failed"] == 1
    failed = record(world, work, target)
    assert failed["status"] == "failed"
    assert failed["error"]["stage"] == "ingest" and "404" in failed["error"]["message"]
    assert "X-Amz" not in json.dumps(failed)

    mark = world.mark()
    second = backfill(test_ids=[CHECKOUT_TEST_ID], stages=INGEST)
    assert second["counts"] == {"ingest": {"done": 1, "skipped": 3, "no_video_yet": 1}}
    assert sorted(c["session_id"] for c in link_calls(world, mark)) == sorted(
        [str(target), str(CHECKOUT_NO_VIDEO_SESSION_ID)]
    )
    assert record(world, work, target)["status"] == "ingested"


def test_nightly_uses_and_advances_watermarks(
    world: LocalWorld, work: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UT_TEST_IDS", f"{CHECKOUT_TEST_ID},{PRICING_TEST_ID}")
    monkeypatch.setenv(
        "UT_LATE_VIDEO_GRACE_HOURS", "0"
    )  # a 404 is final at once: nothing holds the marks back
    first = nightly()
    assert first["counts"]["ingest"] == {"done": 4, "no_video": 1 + len(PRICING_SESSION_IDS)}
    assert first["counts"]["process"] == {"done": 3, "failed": 1}  # the corrupt video fails processing only
    marks = {
        t: json.loads(
            world.s3_client()
            .get_object(Bucket=world.bucket, Key=f"{work}state/watermarks/{t}.json")["Body"]
            .read()
        )
        for t in (CHECKOUT_TEST_ID, PRICING_TEST_ID)
    }
    # The corrupt video failed at the media stage, for good: it does not hold the mark back.
    assert len({m["until"] for m in marks.values()}) == 1

    mark = world.mark()
    second = nightly()
    assert second["sessions"] == 0  # nothing finished since the watermark
    assert link_calls(world, mark) == []


def test_link_expiring_during_a_dropped_download_is_replaced(
    fresh_world: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prefect_server: None
) -> None:
    world = fresh_world(link_ttl=0.15)  # shorter than the pause before resuming
    for name, value in env_for(world, tmp_path / "ledger").items():
        monkeypatch.setenv(name, value)
    target, clip = CHECKOUT_SPEECH_SESSION_IDS[1], SPEECH_CLIPS[1]
    size = (MEDIA_DIR / clip).stat().st_size
    world.admin(
        "POST", "faults", json=[{"target": "video", "session_id": str(target), "drop_after_bytes": size // 3}]
    )
    summary = backfill(test_ids=[CHECKOUT_TEST_ID], session_ids=[target], stages=INGEST)
    assert summary["counts"] == {"ingest": {"done": 1}}
    stats = world.admin("GET", "stats")
    # The first link expired while the connection was down (on a loaded machine a link may also
    # lapse before its first request: then it is replaced before any byte, and the same holds).
    assert stats["links_issued"][str(target)] >= 2
    served = [
        v for v in stats["video_requests"] if v["session_id"] == str(target) and v["status"] in (200, 206)
    ]
    assert [v["range"] for v in served] == [None, f"bytes={size // 3}-"]
    assert sum(v["bytes_sent"] for v in served) == size  # not a byte sent twice
    rec = json.loads(
        world.s3_client()
        .get_object(Bucket=world.bucket, Key=f"sessions/{target}/session.json")["Body"]
        .read()
    )
    assert rec["video"]["sha256"] == sha256_file(MEDIA_DIR / clip)
    assert rec["ingest"]["links_used"] >= 2 and rec["ingest"]["resumes"] == 1


@pytest.mark.slow
def test_killed_run_is_taken_over_with_nothing_lost(fresh_world: Any, tmp_path: Path) -> None:
    """SIGKILL mid-transfer, then a new run: every video complete, no orphaned multipart upload."""
    big = tmp_path / "media"
    big.mkdir()
    for item in MEDIA_DIR.iterdir():
        (big / item.name).symlink_to(item)
    (big / SPEECH_CLIPS[0]).unlink()
    (big / SPEECH_CLIPS[0]).write_bytes(
        os.urandom(48 * 1024 * 1024)
    )  # large enough to be mid-way when killed
    world = fresh_world(
        extra_args=["--media-dir", str(big), "--video-bytes-per-second", str(8 * 1024 * 1024)]
    )
    env = {
        **os.environ,
        **world.env,
        "UT_RATE_LIMIT_WINDOW_SECONDS": "1",
        "UT_RATE_LIMIT_MARGIN_SECONDS": "0.02",
        "UT_SESSION_LEASE_SECONDS": "3",
        "UT_WORK_PREFIX": "killed/",
    }
    cmd = ingest_cli(CHECKOUT_TEST_ID)
    # Its own process group, killed whole: the run and the ephemeral Prefect server it started.
    victim = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    s3 = world.s3_client()
    deadline = time.monotonic() + 120
    while not s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads"):
        assert time.monotonic() < deadline and victim.poll() is None, "the transfer never started"
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads")  # left behind by the kill

    time.sleep(3.5)  # the killed run's claim lapses
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads", []) == []
    for session_id, clip in zip(CHECKOUT_SPEECH_SESSION_IDS, SPEECH_CLIPS, strict=True):
        rec = record(world, "killed/", session_id)
        assert rec["status"] == "ingested"
        assert rec["video"]["sha256"] == sha256_file(big / clip)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=world.bucket, Prefix="killed/sessions/")["Contents"]]
    assert len(keys) == len(set(keys))
    assert sum(k.endswith("video.mp4") for k in keys) == 4


def test_vendor_transcripts_are_stored_when_asked(
    world: LocalWorld, work: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UT_VENDOR_TRANSCRIPTS", "true")
    target = CHECKOUT_SPEECH_SESSION_IDS[0]
    mark = world.mark()
    backfill(test_ids=[CHECKOUT_TEST_ID], session_ids=[target], stages=INGEST)
    operations = [c["operation"] for c in world.api_calls(since=mark)]
    assert operations.count("SessionResultsController_getTranscriptVtt") == 1  # one extra call, as documented
    rec = record(world, work, target)
    assert rec["vendor_transcript_key"] == f"{work}sessions/{target}/vendor-transcript.vtt"
    body = world.s3_client().get_object(Bucket=world.bucket, Key=rec["vendor_transcript_key"])["Body"].read()
    assert body.startswith(b"WEBVTT")
