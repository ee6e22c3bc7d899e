"""Process one ingested session: video from the bucket, transcript and frames back into the bucket.

Processing never talks to UserTesting: its input is the ingested video, so it can run again (a new
model, another frame rate) without spending API calls, on any worker. A run claims the session for
processing as ingest does (a lease renewed while it works), so two runs or workers never process
the same session at once, and one killed mid-way is taken over. The video is copied to the run's
scratch folder for ffmpeg and removed afterwards; everything that lasts goes to the bucket.
Bad media (corrupt, empty, damaged beyond ``FrameOptions.max_loss``) ends as ``failed`` with the
stage and ffmpeg's or PyAV's reason; a full scratch disk as ``failed`` at stage ``scratch``; the run
goes on with the other sessions. Media without an audio or a video stream is not bad: the session
gets the output it allows and records the other as missing (see ``tasks.media.outputs``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from tasks.errors import describe, is_disk_full
from tasks.media.outputs import FRAMES, TRANSCRIPT, media_summary, outputs_update, skip_output
from tasks.media.scratch import ScratchSpace
from tasks.media.transcribe import Transcriber
from tasks.media.video import (
    DEFAULT_MAX_LOSS,
    DEFAULT_SCENE_THRESHOLD,
    Extraction,
    MediaError,
    extract,
    frames_index,
)
from tasks.outcome import Outcome
from tasks.redact import redact
from tasks.storage.layout import BucketLayout
from tasks.storage.owners import Holder, RunFinished
from tasks.storage.records import (
    Claim,
    ErrorInfo,
    FramesInfo,
    Held,
    ProcessingInfo,
    RecordStore,
    SessionRecord,
    Stage,
    Status,
    TranscriptInfo,
    utcnow,
)

log = logging.getLogger("ut_pipeline.process")


@dataclass(frozen=True)
class FrameOptions:
    rate: float = 1.0
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    ffmpeg: str | None = None
    max_loss: float = DEFAULT_MAX_LOSS


class _StageFailed(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class Processor:
    """Transcription and frame extraction for sessions already in the bucket; one per worker process."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        layout: BucketLayout,
        frames: FrameOptions,
        transcriber: Callable[[], Transcriber],
        progress: Callable[[str, float, float, float], None] | None = None,
        *,
        scratch: ScratchSpace | None = None,
        lease_seconds: float = 120.0,
        run_finished: RunFinished | None = None,
        worker_name: str | None = None,
    ) -> None:
        self.s3, self.bucket, self.layout = s3, bucket, layout
        self.records = RecordStore(s3, bucket, layout)
        self.options, self.transcriber, self.progress = frames, transcriber, progress
        self.scratch = scratch or ScratchSpace()
        self.lease_seconds, self.run_finished = lease_seconds, run_finished
        self.worker_name = worker_name  # UT_WORKER_NAME: which worker did the work, next to host:pid

    def process(self, session_id: UUID, run_id: str, stages: set[Stage], *, force: bool = False) -> Outcome:
        record, etag = self.records.get(session_id)
        test_id = str(record.test_id) if record and record.test_id else None

        def outcome(status: str, reason: str, **extra: Any) -> Outcome:
            return Outcome(str(session_id), test_id, status, reason, stage="process", **extra)

        if record is None or not record.has_video:
            return outcome("skipped", "no video in the bucket")
        transcribe = Stage.TRANSCRIBE in stages and not skip_output(record, TRANSCRIPT, force)
        frames = Stage.FRAMES in stages and not skip_output(record, FRAMES, force)
        if not (transcribe or frames) and record.status is Status.DONE:
            return outcome("skipped", "already processed")
        if not force and record.status is Status.FAILED and record.error and record.error.stage == "media":
            return outcome(
                "skipped", f"its video cannot be used ({record.error.message}); --force tries again"
            )
        claimed = record.model_copy(
            update={
                "status": Status.PROCESSING,
                "processing": ProcessingInfo(
                    run_id=run_id,
                    attempts=record.processing.attempts + 1,
                    worker="@".join(
                        filter(None, [self.worker_name, f"{socket.gethostname()}:{os.getpid()}"])
                    ),
                ),
            }
        )
        claim = self.records.claim(
            claimed, record, etag, Holder.this_process(run_id), self.lease_seconds, self.run_finished
        )
        if isinstance(claim, Held):
            return outcome("held", str(claim))
        with claim:
            return self._process_claimed(claim, run_id, outcome, transcribe=transcribe, frames=frames)

    def _process_claimed(
        self,
        claim: Claim,
        run_id: str,
        outcome: Callable[..., Outcome],
        *,
        transcribe: bool,
        frames: bool,
    ) -> Outcome:
        began = time.monotonic()
        try:
            # Nothing to redo (a killed run left the session marked processing): only the status is fixed.
            updates = (
                self._run(claim.record, run_id, transcribe=transcribe, frames=frames)
                if transcribe or frames
                else {}
            )
        except Exception as exc:
            stage, message = _failure(exc)
            log.debug("session %s: %s failed", claim.record.session_id, stage, exc_info=True)
            failed = claim.record.model_copy(
                update={
                    "status": Status.FAILED,
                    "error": ErrorInfo(stage=stage, message=message),
                    "processing": self._finished(claim, began),
                }
            )
            permanent = stage == "media"  # the file itself is bad: no rerun fixes it
            return self._release(claim, failed, outcome("failed", f"{stage}: {message}", permanent=permanent))
        done = claim.record.model_copy(
            update={
                **updates,
                "status": Status.DONE,
                "error": None,
                "processed_by": run_id,
                "processing": self._finished(claim, began),
            }
        )
        transcript, frame_info = done.transcript, done.frames
        return self._release(
            claim,
            done,
            outcome(
                "done",
                "; ".join(["processed", *(f"no {k}: {v}" for k, v in done.missing.items())]),
                audio_seconds=(transcript.audio_seconds or 0.0) if (transcribe and transcript) else 0.0,
                frames=frame_info.count if (frames and frame_info) else 0,
            ),
        )

    @staticmethod
    def _finished(claim: Claim, began: float) -> ProcessingInfo:
        return claim.record.processing.model_copy(
            update={"seconds": round(time.monotonic() - began, 3), "finished_at": utcnow()}
        )

    def _run(self, record: SessionRecord, run_id: str, *, transcribe: bool, frames: bool) -> dict[str, Any]:
        assert record.video is not None
        sid = record.session_id
        with self.scratch.session_dir(run_id, sid) as scratch:
            video = Path(scratch) / "video.mp4"
            self._download(record.video.key, record.video.sha256, video)
            try:
                extraction = extract(
                    video,
                    Path(scratch) / "out",
                    frame_rate=self.options.rate,
                    scene_threshold=self.options.scene_threshold,
                    want_audio=transcribe,
                    want_frames=frames,
                    ffmpeg=self.options.ffmpeg,
                    max_loss=self.options.max_loss,
                )
            except MediaError as exc:
                raise _StageFailed("media", str(exc)) from None
            updates: dict[str, Any] = {"media": media_summary(extraction, record.media)}
            if extraction.audio is not None:
                updates[TRANSCRIPT] = self._transcribe(sid, extraction)
            if extraction.frames:
                updates[FRAMES] = self._store_frames(sid, extraction)
        return {**updates, **outputs_update(record, updates, extraction)}

    def _download(self, key: str, sha256: str, target: Path) -> None:
        self.s3.download_file(self.bucket, key, str(target))
        digest = hashlib.sha256()
        with target.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != sha256:
            raise _StageFailed("media", f"the video in the bucket does not match its record's sha256 ({key})")

    def _transcribe(self, sid: UUID, extraction: Extraction) -> TranscriptInfo:
        assert extraction.audio is not None
        try:
            model = self.transcriber()  # loaded on first use: not part of this session's real-time factor
            started = time.monotonic()
            transcript = model.transcribe(
                extraction.audio,
                progress=(
                    lambda done, total: self.progress(str(sid), done, total, time.monotonic() - started)
                )
                if self.progress
                else None,
            )
        except Exception as exc:  # a model failure is this session's failure, not the run's
            raise _StageFailed("transcribe", f"{type(exc).__name__}: {exc}") from None
        elapsed = time.monotonic() - started
        keys = {ext: self.layout.session_file(sid, f"transcript.{ext}") for ext in ("json", "vtt", "srt")}
        bodies = {
            "json": (json.dumps(transcript.to_json(), indent=2, ensure_ascii=False), "application/json"),
            "vtt": (transcript.to_vtt(), "text/vtt"),
            "srt": (transcript.to_srt(), "application/x-subrip"),
        }
        for ext, (body, content_type) in bodies.items():
            self.s3.put_object(
                Bucket=self.bucket, Key=keys[ext], Body=body.encode(), ContentType=content_type
            )
        return TranscriptInfo(
            json_key=keys["json"],
            vtt_key=keys["vtt"],
            srt_key=keys["srt"],
            text=transcript.text,
            language=transcript.language,
            model=transcript.model,
            backend=transcript.backend,
            audio_seconds=transcript.duration,
            segments=len(transcript.segments),
            real_time_factor=round(transcript.duration / elapsed, 2) if elapsed > 0 else None,
            language_probability=transcript.language_probability,
            language_detected=transcript.language_detected,
        )

    def _store_frames(self, sid: UUID, extraction: Extraction) -> FramesInfo:
        prefix = self.layout.session_file(sid, "frames/")
        stale = {
            obj["Key"]
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        }
        for frame in extraction.frames:
            key = f"{prefix}{frame.path.name}"
            self.s3.upload_file(str(frame.path), self.bucket, key, ExtraArgs={"ContentType": "image/jpeg"})
            stale.discard(key)
        index = frames_index(extraction, prefix)
        index_key = f"{prefix}index.json"
        self.s3.put_object(
            Bucket=self.bucket,
            Key=index_key,
            Body=json.dumps(index, indent=2).encode(),
            ContentType="application/json",
        )
        stale.discard(index_key)
        for key in sorted(stale):  # frames of an earlier run with other settings
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        kinds = [f.kind for f in extraction.frames]
        return FramesInfo(
            prefix=prefix,
            index_key=index_key,
            count=len(kinds),
            interval_count=kinds.count("interval"),
            scene_count=kinds.count("scene"),
            frame_rate=self.options.rate,
            scene_threshold=self.options.scene_threshold,
        )

    def _release(self, claim: Claim, record: SessionRecord, result: Outcome) -> Outcome:
        """Write the final record; if that fails the lease lapses and the next run takes over."""
        try:
            if claim.release(record):
                return result
        except Exception as exc:
            log.debug("session %s: the outcome could not be recorded", record.session_id, exc_info=True)
            return Outcome(
                result.session_id,
                result.test_id,
                "failed",
                f"{result.reason} (not recorded: {describe(exc)}; the next run takes the session over)",
                stage="process",
            )
        return Outcome(
            result.session_id, result.test_id, "skipped", "another run took the session over", stage="process"
        )


def _failure(exc: BaseException) -> tuple[str, str]:
    """The stage a processing error belongs to, and its message for the record."""
    if is_disk_full(exc):
        return "scratch", f"no space left on device in the scratch folder: {describe(exc)}"
    if isinstance(exc, _StageFailed):
        return exc.stage, redact(str(exc))
    return "process", describe(exc)
