"""``session.json``: the one durable record of where each session stands, kept next to its video.

Every write replaces the whole object, never a partial state. Writes are conditional on the
ETag that was read (S3 ``If-Match`` / ``If-None-Match``), so two runs working at once (the nightly
and a backfill) cannot overwrite each other's progress; a run *claims* a session with a short
lease that it renews while it works, and a run killed mid-transfer loses its claim when the lease
lapses, so the next run takes the session over.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from tasks.layout import BucketLayout


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(StrEnum):
    INGESTING = "ingesting"
    INGESTED = "ingested"
    DONE = "done"
    NO_VIDEO = "no_video"
    FAILED = "failed"


class Stage(StrEnum):
    """The pipeline's stages, in order; a run may ask for any subset."""

    INGEST = "ingest"
    TRANSCRIBE = "transcribe"
    FRAMES = "frames"


class ErrorInfo(BaseModel):
    stage: str
    message: str
    at: datetime = Field(default_factory=utcnow)


class VideoInfo(BaseModel):
    key: str
    bytes: int
    sha256: str
    content_type: str
    source_etag: str | None = None


class Lease(BaseModel):
    owner: str
    until: datetime

    def held_by_other(self, owner: str, now: datetime) -> bool:
        return self.owner != owner and self.until > now


class IngestInfo(BaseModel):
    run_id: str | None = None
    attempts: int = 0
    links_used: int = 0
    resumes: int = 0
    restarts: int = 0
    seconds: float | None = None
    finished_at: datetime | None = None


class MediaSummary(BaseModel):
    """What probing and extracting the video found. ``width``/``height`` are the picture as displayed
    (after its rotation); ``coded_*`` as stored. The streams are the ones processing chose."""

    duration: float | None = None
    container: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    coded_width: int | None = None
    coded_height: int | None = None
    rotation: int | None = None
    video_stream: int | None = None
    audio_stream: int | None = None
    audio_choice: str | None = Field(default=None, description="why that audio track, when there are several")
    video_choice: str | None = Field(default=None, description="why that video track, when there are several")
    decode_errors: dict[str, int] = Field(
        default_factory=dict, description="undecodable packets per stream kind"
    )
    lost_seconds: dict[str, float] = Field(
        default_factory=dict, description="seconds lost to damage per stream kind: bad packets, a cut-off end"
    )


class TranscriptInfo(BaseModel):
    json_key: str
    vtt_key: str
    srt_key: str
    text: str
    language: str | None = None
    model: str
    backend: str
    audio_seconds: float | None = None
    segments: int = 0
    real_time_factor: float | None = None


class FramesInfo(BaseModel):
    prefix: str
    index_key: str
    count: int
    interval_count: int
    scene_count: int
    frame_rate: float
    scene_threshold: float


class SessionRecord(BaseModel):
    """The contents of ``sessions/{session_id}/session.json`` (documented in the README)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = 1
    session_id: UUID
    test_id: UUID | None = None
    status: Status
    error: ErrorInfo | None = None
    video: VideoInfo | None = None
    api: dict[str, Any] = Field(default_factory=dict, description="the session as the Results API listed it")
    ingest: IngestInfo = Field(default_factory=IngestInfo)
    vendor_transcript_key: str | None = None
    media: MediaSummary | None = None
    transcript: TranscriptInfo | None = None
    frames: FramesInfo | None = None
    processed_by: str | None = Field(default=None, description="the run that last processed the video")
    lease: Lease | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    outputs: list[str] = Field(default_factory=list, description="the outputs that exist: transcript, frames")
    missing: dict[str, str] = Field(
        default_factory=dict,
        description="outputs the media cannot give, with the reason (e.g. no audio stream)",
    )

    @property
    def has_video(self) -> bool:
        return self.video is not None and bool(self.video.sha256)


class Conflict(Exception):
    """Someone else wrote the record since it was read."""


class RecordStore:
    """Reads and conditionally writes ``session.json`` objects in the work bucket."""

    def __init__(self, s3: Any, bucket: str, layout: BucketLayout) -> None:
        self.s3, self.bucket, self.layout = s3, bucket, layout

    def get(self, session_id: UUID) -> tuple[SessionRecord | None, str | None]:
        """The record and its ETag, or ``(None, None)`` when the session was never seen."""
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.layout.session_json(session_id))
        except self.s3.exceptions.NoSuchKey:
            return None, None
        return SessionRecord.model_validate_json(obj["Body"].read()), obj["ETag"]

    def put(self, record: SessionRecord, etag: str | None) -> str:
        """Replace the record if it is still at ``etag`` (``None``: only if it does not exist)."""
        record = record.model_copy(update={"updated_at": utcnow()})
        body = json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True).encode()
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            answer = self.s3.put_object(
                Bucket=self.bucket,
                Key=self.layout.session_json(record.session_id),
                Body=body,
                ContentType="application/json",
                **condition,
            )
        except self.s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {
                "PreconditionFailed",
                "ConditionalRequestConflict",
            }:
                raise Conflict(str(record.session_id)) from None
            raise
        return str(answer["ETag"])

    def abort_stale_uploads(self, session_id: UUID) -> int:
        """Abort multipart uploads a killed run left for this session's video; returns how many."""
        key = self.layout.session_video(session_id)
        answer = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        stale = [u for u in answer.get("Uploads", []) if u["Key"] == key]
        for upload in stale:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
        return len(stale)


def lease_for(owner: str, seconds: float) -> Lease:
    return Lease(owner=owner, until=utcnow() + timedelta(seconds=seconds))
