"""Processing end to end: real Prefect runs, real ffmpeg, the bundled Whisper model, the local S3."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from flows.pipeline import backfill, reprocess
from sandbox.local import LocalWorld
from sandbox.media import MEDIA_DIR
from sandbox.media.score import word_error_rate
from sandbox.world import (
    CHECKOUT_CORRUPT_SESSION_ID,
    CHECKOUT_SPEECH_SESSION_IDS,
    CHECKOUT_TEST_ID,
    EDGE_AUDIO_ONLY_SESSION_ID,
    EDGE_CORRUPT_SESSION_ID,
    EDGE_EMPTY_SESSION_ID,
    EDGE_NO_AUDIO_SESSION_ID,
    MEDIA_EDGE_TEST_ID,
    SPEECH_CLIPS,
)
from tests.conftest import isolated_env

MANIFEST = json.loads((MEDIA_DIR / "manifest.json").read_text())["clips"]


@pytest.fixture(scope="module")
def processed(
    world: LocalWorld, prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One full backfill (every stage) of the checkout and media-edge tests, shared by the tests below."""
    with isolated_env(world, tmp_path_factory.mktemp("ledger"), "proc") as (prefix, mp):
        summary = backfill(test_ids=[CHECKOUT_TEST_ID, MEDIA_EDGE_TEST_ID])
        yield {"summary": summary, "prefix": prefix, "monkeypatch": mp}


def get_json(world: LocalWorld, key: str) -> Any:
    return json.loads(world.s3_client().get_object(Bucket=world.bucket, Key=key)["Body"].read())


def record(world: LocalWorld, prefix: str, session_id: UUID) -> dict[str, Any]:
    return get_json(world, f"{prefix}sessions/{session_id}/session.json")


def test_speech_is_transcribed_accurately(world: LocalWorld, processed: dict[str, Any]) -> None:
    prefix = processed["prefix"]
    for session_id, clip in zip(CHECKOUT_SPEECH_SESSION_IDS, SPEECH_CLIPS, strict=True):
        rec = record(world, prefix, session_id)
        assert rec["status"] == "done" and rec["error"] is None
        transcript = get_json(world, rec["transcript"]["json_key"])
        assert word_error_rate(MANIFEST[clip]["text"], transcript["text"]) <= 0.2, transcript["text"]
        assert transcript["language"] == "en" and transcript["backend"] == "faster-whisper"
        assert transcript["segments"] and all(s["words"] for s in transcript["segments"])
        assert rec["transcript"]["text"] == transcript["text"]
        body = (
            world.s3_client().get_object(Bucket=world.bucket, Key=rec["transcript"]["vtt_key"])["Body"].read()
        )
        assert body.startswith(b"WEBVTT")
        srt = (
            world.s3_client().get_object(Bucket=world.bucket, Key=rec["transcript"]["srt_key"])["Body"].read()
        )
        assert b" --> " in srt and b"," in srt.split(b" --> ")[0]
        assert abs(rec["media"]["duration"] - MANIFEST[clip]["duration"]) < 0.15
        assert (rec["media"]["width"], rec["media"]["height"]) == (640, 360)
        assert rec["outputs"] == ["frames", "transcript"] and rec["missing"] == {}


def test_frames_match_duration_and_scene_cuts(world: LocalWorld, processed: dict[str, Any]) -> None:
    s3 = world.s3_client()
    for session_id, clip in zip(CHECKOUT_SPEECH_SESSION_IDS, SPEECH_CLIPS, strict=True):
        rec = record(world, processed["prefix"], session_id)
        index = get_json(world, rec["frames"]["index_key"])
        interval = [f for f in index if f["kind"] == "interval"]
        scenes = [f for f in index if f["kind"] == "scene"]
        duration = MANIFEST[clip]["duration"]
        assert abs(len(interval) - duration * 1.0) <= 1
        for n, frame in enumerate(interval):
            assert frame["timestamp"] == pytest.approx(n / 1.0, abs=0.05)
        assert scenes[0]["timestamp"] == 0.0  # the opening scene
        for cut in MANIFEST[clip]["scene_changes"]:
            assert any(abs(f["timestamp"] - cut) <= 0.1 for f in scenes), (clip, cut, scenes)
        for frame in index:
            assert (frame["width"], frame["height"]) == (640, 360)
            head = s3.get_object(Bucket=world.bucket, Key=frame["key"], Range="bytes=0-2")["Body"].read()
            assert head == b"\xff\xd8\xff"  # a JPEG
        assert rec["frames"]["count"] == len(index)


def test_bad_media_fails_with_the_stage_and_a_clear_message(
    world: LocalWorld, processed: dict[str, Any]
) -> None:
    expected = {
        CHECKOUT_CORRUPT_SESSION_ID: "cannot read",
        EDGE_CORRUPT_SESSION_ID: "cannot read",
        EDGE_EMPTY_SESSION_ID: "empty file",
    }
    for session_id, message in expected.items():
        rec = record(world, processed["prefix"], session_id)
        assert rec["status"] == "failed", rec
        assert rec["error"]["stage"] == "media" and message in rec["error"]["message"], rec["error"]
        assert rec["video"]["sha256"]  # the ingest itself succeeded
        assert rec["outputs"] == []
    failures = {f["session_id"]: f for f in processed["summary"]["failures"]}
    assert set(failures) == {str(s) for s in expected}
    assert all(f["stage"] == "process" for f in failures.values())
    assert processed["summary"]["counts"]["process"]["done"] == 5  # the others went on


def test_a_missing_stream_costs_only_its_own_output(world: LocalWorld, processed: dict[str, Any]) -> None:
    """Video without audio keeps its frames, audio without video its transcript: both are done,
    with the output they cannot have recorded as missing, and a rerun does not try again."""
    no_audio = record(world, processed["prefix"], EDGE_NO_AUDIO_SESSION_ID)
    audio_only = record(world, processed["prefix"], EDGE_AUDIO_ONLY_SESSION_ID)

    assert (no_audio["status"], no_audio["error"]) == ("done", None)
    assert no_audio["outputs"] == ["frames"] and no_audio["missing"] == {"transcript": "no audio stream"}
    assert no_audio["transcript"] is None and no_audio["frames"]["interval_count"] == 6
    assert (audio_only["status"], audio_only["error"]) == ("done", None)
    assert audio_only["outputs"] == ["transcript"] and audio_only["missing"] == {"frames": "no video stream"}
    assert audio_only["frames"] is None
    assert word_error_rate(MANIFEST["audio-only.mp4"]["text"], audio_only["transcript"]["text"]) <= 0.2
    assert (audio_only["media"]["width"], audio_only["media"]["video_stream"]) == (None, None)

    summary = backfill(test_ids=[MEDIA_EDGE_TEST_ID], stages=["transcribe", "frames"])
    # Nothing left to do for the done ones, and a video that cannot be decoded is not tried again.
    assert summary["failures"] == [] and summary["counts"]["process"] == {"skipped": 4}
    assert (
        record(world, processed["prefix"], EDGE_NO_AUDIO_SESSION_ID)["updated_at"] == no_audio["updated_at"]
    )


def test_reprocess_runs_chosen_stages_from_the_bucket_without_api_calls(
    world: LocalWorld, processed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = CHECKOUT_SPEECH_SESSION_IDS[1]
    before = record(world, processed["prefix"], session_id)
    processed["monkeypatch"].setenv("UT_FRAME_RATE", "2")
    for name in ("UT_CLIENT_ID", "UT_CLIENT_SECRET", "UT_ACCESS_TOKEN"):  # and needs no API credentials
        monkeypatch.delenv(name, raising=False)
    mark = world.mark()
    summary = reprocess(session_ids=[session_id], stages=["frames"])
    assert summary["counts"] == {"process": {"done": 1}}
    assert world.api_calls(since=mark) == []  # processing never talks to UserTesting
    after = record(world, processed["prefix"], session_id)
    assert after["transcript"] == before["transcript"]  # not asked for: untouched
    assert after["frames"]["frame_rate"] == 2.0
    assert abs(after["frames"]["interval_count"] - 2 * before["frames"]["interval_count"]) <= 2
    listed = world.s3_client().list_objects_v2(Bucket=world.bucket, Prefix=after["frames"]["prefix"])[
        "Contents"
    ]
    assert len(listed) == after["frames"]["count"] + 1  # the frames and index.json, nothing stale
    processed["monkeypatch"].delenv("UT_FRAME_RATE")
