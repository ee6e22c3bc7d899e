"""``tasks.media.outputs``: what a record says about its outputs and media, across partial reruns.

Unit tests on hand-made extractions; the end-to-end proof is tests/test_corpus.py and
tests/test_processing.py, through real ffmpeg and ``reprocess``.
"""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

from tasks.media.outputs import media_summary, outputs_update, skip_output
from tasks.media.video import AudioInfo, Extraction, MediaInfo, StreamLoss, VideoInfo
from tasks.storage.records import FramesInfo, MediaSummary, SessionRecord, Status

SCREEN = VideoInfo(0, "h264", 540, 960, 960, 540, 90, 30.0, 270, 0.0, 9.0)
MIC = AudioInfo(2, "aac", 48000, 1, 0.0, 9.0)
INFO = MediaInfo(
    "mov,mp4,m4a,3gp,3g2,mj2", 9.0, 1000, (SCREEN,), (AudioInfo(1, "aac", 48000, 1, 0.0, 9.0), MIC), True
)
FRAMES = FramesInfo(
    prefix="p/",
    index_key="p/index.json",
    count=3,
    interval_count=2,
    scene_count=1,
    frame_rate=1,
    scene_threshold=0.07,
)


def extraction(*, audio: bool, frames: bool, missing: dict[str, str] | None = None) -> Extraction:
    losses = []
    if audio:
        losses.append(StreamLoss(2, "audio", 400, 4, 0.0, 9.0))
    if frames:
        losses.append(StreamLoss(0, "video", 270, 0, 0.0, 9.0))
    return Extraction(
        info=INFO,
        audio=Path("audio.wav") if audio else None,
        audio_duration=9.0 if audio else None,
        audio_stream=MIC if audio else None,
        audio_choice="stream 2: the only audio stream with sound" if audio else None,
        video_stream=SCREEN if frames else None,
        frames=[],
        missing=missing or {},
        losses=losses,
        duration=9.0,
        seconds=0.1,
    )


def record(**fields: object) -> SessionRecord:
    return SessionRecord(session_id=uuid4(), status=Status.INGESTED, **fields)  # type: ignore[arg-type]


def test_missing_stream_is_recorded_under_its_output() -> None:
    update = outputs_update(
        record(),
        {"frames": FRAMES},
        extraction(audio=False, frames=True, missing={"audio": "no audio stream"}),
    )

    assert update == {"outputs": ["frames"], "missing": {"transcript": "no audio stream"}}


def test_an_output_made_again_is_no_longer_missing_and_the_other_is_kept() -> None:
    before = record(frames=FRAMES, missing={"transcript": "audio stream 1 holds no sound"})

    assert outputs_update(before, {}, extraction(audio=False, frames=False)) == {
        "outputs": ["frames"],
        "missing": {"transcript": "audio stream 1 holds no sound"},
    }
    assert (
        outputs_update(before, {"transcript": object()}, extraction(audio=True, frames=False))["missing"]
        == {}
    )


def test_outputs_the_media_cannot_give_are_not_tried_again_unless_forced() -> None:
    done = record(frames=FRAMES, missing={"transcript": "no audio stream"})

    assert skip_output(done, "transcript", force=False) and skip_output(done, "frames", force=False)
    assert not skip_output(done, "transcript", force=True)
    assert not skip_output(record(), "frames", force=False)


def test_media_summary_gives_the_displayed_size_and_the_chosen_streams() -> None:
    summary = media_summary(extraction(audio=True, frames=True), None)

    assert (summary.width, summary.height, summary.coded_width, summary.coded_height) == (540, 960, 960, 540)
    assert (summary.rotation, summary.video_stream, summary.audio_stream) == (90, 0, 2)
    assert summary.audio_choice == "stream 2: the only audio stream with sound"
    assert summary.decode_errors == {"audio": 4, "video": 0}
    assert summary.lost_seconds == {"audio": 0.09, "video": 0.0}


def test_redoing_the_frames_keeps_what_the_record_said_about_the_audio() -> None:
    previous = media_summary(extraction(audio=True, frames=True), None)
    frames_only = media_summary(extraction(audio=False, frames=True), previous)

    assert (frames_only.audio_stream, frames_only.audio_choice) == (2, previous.audio_choice)
    assert frames_only.lost_seconds == previous.lost_seconds
    assert frames_only == previous
    assert media_summary(extraction(audio=False, frames=True), None).audio_stream == 1  # nothing better known


def test_a_summary_from_before_these_fields_still_reads() -> None:
    old = MediaSummary.model_validate({"duration": 9.0, "width": 960, "height": 540})

    assert (old.decode_errors, old.lost_seconds, old.rotation) == ({}, {}, None)
    assert record(media=old).outputs == [] and record().missing == {}
