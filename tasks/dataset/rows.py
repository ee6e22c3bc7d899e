"""One session's rows in each dataset table, from what the pipeline stored for it. Plain functions, no I/O.

Inputs are the session's record and the JSON beside its video: ``transcript.json`` (segments with
word timings), ``frames/index.json`` and ``tasks.json`` (the v3 task timings). Each transcript
segment and each frame is given the task it falls in, so a model can be trained on what was said and
shown during a given task: a frame belongs to the task whose [start, end) holds its timestamp; a
segment to the task it overlaps most. Skipped tasks, and times between tasks, belong to none
(``task_id`` null). Task times are ms from the session's start in the API; the recording starts with
the session, so they are turned into seconds on the video's clock like every other time here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tasks.dataset.tables import FRAMES, SEGMENTS, SESSIONS, TASKS, bucket_of
from tasks.storage.records import SessionRecord


@dataclass(frozen=True)
class SessionInputs:
    """What publishing reads for one session; a part the session does not have yet is ``None``."""

    record: SessionRecord
    transcript: dict[str, Any] | None = None
    frames: list[dict[str, Any]] | None = None
    tasks: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskSpan:
    task_id: str
    start: float
    end: float

    def overlap(self, start: float, end: float) -> float:
        return min(self.end, end) - max(self.start, start)


def session_rows(inputs: SessionInputs, speech_window: float) -> dict[str, list[dict[str, Any]]]:
    """The session's rows, by table name."""
    record = inputs.record
    key = {"session_id": str(record.session_id), "test_id": str(record.test_id) if record.test_id else None}
    bucket = {"bucket": bucket_of(record.session_id)}
    task_rows = _task_rows(inputs.tasks)
    spans = [
        TaskSpan(t["task_id"], t["start_s"], t["end_s"])
        for t in task_rows
        if not t["skipped"]
        and t["start_s"] is not None
        and t["end_s"] is not None
        and t["end_s"] > t["start_s"]
    ]
    segments = (inputs.transcript or {}).get("segments", [])
    segment_rows = [
        {
            **key,
            "segment_index": n,
            "task_id": _task_overlapping(spans, segment["start"], segment["end"]),
            "start_s": segment["start"],
            "end_s": segment["end"],
            "text": segment["text"],
            "words": [
                {
                    "word": w["word"],
                    "start_s": w["start"],
                    "end_s": w["end"],
                    "probability": w.get("probability"),
                }
                for w in segment.get("words", [])
            ],
            "language": inputs.transcript.get("language") if inputs.transcript else None,
            "model": inputs.transcript.get("model") if inputs.transcript else None,
            **bucket,
        }
        for n, segment in enumerate(segments)
    ]
    frame_rows = [
        {
            **key,
            "frame_index": n,
            "task_id": _task_at(spans, frame["timestamp"]),
            "timestamp_s": frame["timestamp"],
            "kind": frame["kind"],
            "key": frame["key"],
            "width": frame.get("width"),
            "height": frame.get("height"),
            "speech_text": _speech_around(segments, frame["timestamp"], speech_window),
            "speech_window_s": speech_window,
            **bucket,
        }
        for n, frame in enumerate(inputs.frames or [])
    ]
    session = {
        **session_row(record),
        "segment_count": len(segment_rows) if inputs.transcript is not None else None,
        "task_count": len(task_rows) if inputs.tasks is not None else None,
        **bucket,
    }
    return {
        SESSIONS.name: [session],
        TASKS.name: [{**key, **row, **bucket} for row in task_rows],
        SEGMENTS.name: segment_rows,
        FRAMES.name: frame_rows,
    }


def session_row(record: SessionRecord) -> dict[str, Any]:
    """Today's columns of the sessions table (the single-file table had the same ones)."""
    video, media, transcript, frames = record.video, record.media, record.transcript, record.frames
    return {
        "session_id": str(record.session_id),
        "test_id": str(record.test_id) if record.test_id else None,
        "start_time": _timestamp(record.api.get("startTime")),
        "finish_time": _timestamp(record.api.get("finishTime")),
        "status": record.status.value,
        "error_stage": record.error.stage if record.error else None,
        "error_message": record.error.message if record.error else None,
        "video_key": video.key if video else None,
        "video_bytes": video.bytes if video else None,
        "video_sha256": video.sha256 if video else None,
        "duration_s": media.duration if media else None,
        "width": media.width if media else None,
        "height": media.height if media else None,
        "fps": media.fps if media else None,
        "video_codec": media.video_codec if media else None,
        "audio_codec": media.audio_codec if media else None,
        "transcript_text": transcript.text if transcript else None,
        "transcript_language": transcript.language if transcript else None,
        "transcript_model": transcript.model if transcript else None,
        "transcript_backend": transcript.backend if transcript else None,
        "transcript_key": transcript.json_key if transcript else None,
        "vendor_transcript_key": record.vendor_transcript_key,
        "frame_count": frames.count if frames else None,
        "frames_prefix": frames.prefix if frames else None,
        "frames_index_key": frames.index_key if frames else None,
        "updated_at": record.updated_at,
    }


def _task_rows(tasks: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for n, task in enumerate((tasks or {}).get("tasks", [])):
        response = task.get("response") or {}
        answer = response.get("answer")
        rows.append(
            {
                "task_index": n,
                "task_id": task.get("uuid"),
                "text": task.get("text"),
                "type": task.get("type"),
                "start_s": _seconds(response.get("startTimeMs")),
                "end_s": _seconds(response.get("endTimeMs")),
                "skipped": response.get("skipped"),
                "answer": json.dumps(answer, sort_keys=True) if answer is not None else None,
            }
        )
    return rows


def _task_at(spans: list[TaskSpan], moment: float) -> str | None:
    return next((span.task_id for span in spans if span.start <= moment < span.end), None)


def _task_overlapping(spans: list[TaskSpan], start: float, end: float) -> str | None:
    best = max(spans, key=lambda span: span.overlap(start, end), default=None)
    if best is None or best.overlap(start, end) <= 0:
        return _task_at(spans, start)  # a zero-length segment: the task it sits in
    return best.task_id


def _speech_around(segments: list[dict[str, Any]], moment: float, window: float) -> str:
    """The words spoken within ``window`` seconds of ``moment`` (whole segments when a transcript has no words)."""
    low, high = moment - window, moment + window
    pieces = []
    for segment in segments:
        if segment["end"] < low or segment["start"] > high:
            continue
        words = segment.get("words")
        if not words:
            pieces.append(segment["text"].strip())
            continue
        pieces += [w["word"].strip() for w in words if w["end"] >= low and w["start"] <= high]
    return " ".join(piece for piece in pieces if piece)


def _seconds(millis: float | None) -> float | None:
    return None if millis is None else millis / 1000


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
