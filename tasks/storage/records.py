"""``session.json``: the one durable record of where each session stands, kept next to its video.

Every write replaces the whole object, never a partial state. Writes are conditional on the
ETag that was read (S3 ``If-Match`` / ``If-None-Match``), so two runs working at once (the nightly
and a backfill) cannot overwrite each other's progress. A run *claims* a session, for ingest or for
processing, with a short lease that a background thread renews while it works (:class:`Claim`). A
run killed mid-work loses its claim when the lease lapses, or at once when its holder is provably
gone (its process ended on this machine, or Prefect reports its flow run finished; see
``tasks/storage/owners.py``), so the next run takes the session over.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from tasks.dataset import unpublished
from tasks.storage.layout import BucketLayout
from tasks.storage.owners import Holder, RunFinished, holder_gone

log = logging.getLogger("ut_pipeline.records")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(StrEnum):
    INGESTING = "ingesting"  # a run holds the session and is streaming its video
    INGESTED = "ingested"  # the video is in; not processed (yet)
    PROCESSING = "processing"  # a run holds the session and is transcribing / extracting frames
    DONE = "done"
    NO_VIDEO = "no_video"  # the API has no video; see ``no_video.final``
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
    """Who holds the session and until when; ``host``/``pid``/``boot``/``started`` identify its process."""

    owner: str  # the flow run id
    until: datetime
    host: str | None = None
    pid: int | None = None
    boot: str | None = None
    started: int | None = None

    @classmethod
    def of(cls, holder: Holder, seconds: float) -> Lease:
        return cls(
            owner=holder.run_id,
            until=utcnow() + timedelta(seconds=seconds),
            host=holder.host,
            pid=holder.pid,
            boot=holder.boot,
            started=holder.started,
        )

    def blocks(self, owner: str, run_finished: RunFinished | None) -> bool:
        """Whether this lease keeps ``owner`` out: another run's, not lapsed, holder not provably gone."""
        if self.owner == owner or self.until <= utcnow():
            return False
        if self.pid is None or self.host is None:
            return not (run_finished is not None and run_finished(self.owner))
        holder = Holder(self.owner, self.host, self.pid, self.boot or "", self.started)
        return not holder_gone(holder, run_finished)


class NoVideoInfo(BaseModel):
    """A 404 on the video link. Within the grace window after the session finished (UserTesting can take
    tens of minutes to process a video) it is not final: later runs ask again."""

    checked_at: datetime
    checks: int = 1
    final: bool
    message: str = ""


class ProcessingInfo(BaseModel):
    """Who processed the video and how often a run took the session for processing."""

    run_id: str | None = None
    attempts: int = 0
    worker: str | None = None  # [UT_WORKER_NAME@]host:pid of the process that did the work
    seconds: float | None = None
    finished_at: datetime | None = None


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
    language_probability: float | None = None
    language_detected: bool = False


class FramesInfo(BaseModel):
    prefix: str
    index_key: str
    count: int
    interval_count: int
    scene_count: int
    frame_rate: float
    scene_threshold: float


class TaskDetailsInfo(BaseModel):
    """The session's tasks from the v3 session details (``UT_SESSION_DETAILS``), for the dataset."""

    key: str | None = Field(default=None, description="tasks.json; null when the API has no details")
    count: int = 0
    error: str | None = Field(default=None, description="why the call failed; the next run asks again")
    fetched_at: datetime = Field(default_factory=utcnow)


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
    processing: ProcessingInfo = Field(default_factory=ProcessingInfo)
    no_video: NoVideoInfo | None = None
    lease: Lease | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    task_details: TaskDetailsInfo | None = None
    outputs: list[str] = Field(default_factory=list, description="the outputs that exist: transcript, frames")
    missing: dict[str, str] = Field(
        default_factory=dict,
        description="outputs the media cannot give, with the reason (e.g. no audio stream)",
    )

    @property
    def has_video(self) -> bool:
        return self.video is not None and bool(self.video.sha256)

    @property
    def no_video_is_final(self) -> bool:
        """Recorded without a video for good (an old record without ``no_video`` info counts as final)."""
        return self.status is Status.NO_VIDEO and (self.no_video is None or self.no_video.final)


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
        if record.lease is None:  # settled: the dataset must publish it (see tasks/dataset/unpublished.py)
            unpublished.mark(self.s3, self.bucket, self.layout, record.session_id, record.updated_at)
        body = json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True).encode()
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        key = self.layout.session_json(record.session_id)
        try:
            answer = self.s3.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition
            )
        except self.s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _CONFLICT_CODES:
                raise
            # The SDK retries a write whose answer was lost; if the first attempt landed, the retry
            # fails its own condition. The object then holds exactly these bytes: that is a success.
            current = self.s3.get_object(Bucket=self.bucket, Key=key)
            if current["Body"].read() != body:
                raise Conflict(str(record.session_id)) from None
            return str(current["ETag"])
        return str(answer["ETag"])

    def claim(
        self,
        new: SessionRecord,
        read: SessionRecord | None,
        etag: str | None,
        holder: Holder,
        seconds: float,
        run_finished: RunFinished | None = None,
    ) -> Claim | Held:
        """Write ``new`` with a lease for ``holder`` over ``read`` (the version at ``etag``, or None).

        A lease in ``read`` blocks the claim unless it is the holder's own run's, has lapsed, or its
        holder is provably gone. A run that wins the race to write first holds the session.
        """
        previous = read.lease if read is not None else None
        if previous is not None and previous.blocks(holder.run_id, run_finished):
            return Held(previous.owner, previous.until)
        claimed = new.model_copy(update={"lease": Lease.of(holder, seconds)})
        try:
            new_etag = self.put(claimed, etag)
        except Conflict:
            latest, _ = self.get(new.session_id)
            lease = latest.lease if latest is not None else None
            return Held(lease.owner if lease else "another run", lease.until if lease else utcnow())
        if previous is not None and previous.owner != holder.run_id:
            log.info("session %s: taken over from run %s", new.session_id, previous.owner)
        return Claim(self, claimed, new_etag, holder, seconds)

    def abort_stale_uploads(self, session_id: UUID) -> int:
        """Abort multipart uploads a killed run left for this session's video; returns how many."""
        key = self.layout.session_video(session_id)
        answer = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        stale = [u for u in answer.get("Uploads", []) if u["Key"] == key]
        for upload in stale:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
        return len(stale)


_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


@dataclass(frozen=True)
class Held:
    """Another run holds the session (its lease is live and its holder not known to be gone)."""

    owner: str
    until: datetime

    def __str__(self) -> str:
        return f"held by run {self.owner} (lease until {self.until.isoformat(timespec='seconds')})"


class Claim:
    """This run holds a session: its lease is renewed in the background until :meth:`release`.

    Renewal runs on its own thread every third of the lease, so a long ffmpeg pass or a stalled
    download cannot let the lease lapse while the process lives. If a renewal finds the record
    changed (another run judged this one gone and took over), the claim is lost: :meth:`release`
    then writes nothing and returns False. Use it as a context manager so renewal always stops.
    """

    def __init__(self, store: RecordStore, record: SessionRecord, etag: str, holder: Holder, seconds: float):
        self.store, self.holder, self.seconds = store, holder, seconds
        self._record, self._etag = record, etag
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(
            target=self._renew_until_stopped, name=f"lease-{record.session_id}", daemon=True
        )
        self._thread.start()

    @property
    def record(self) -> SessionRecord:
        return self._record

    def update(self, **changes: Any) -> None:
        """Write progress into the held record (the lease stays)."""
        with self._lock:
            if self.lost:
                raise Conflict(str(self._record.session_id))
            record = self._record.model_copy(update=changes)
            try:
                self._etag = self.store.put(record, self._etag)
            except Conflict:
                self.lost = True
                raise
            self._record = record

    def release(self, record: SessionRecord) -> bool:
        """Write the final ``record`` without a lease; False if the claim was lost meanwhile."""
        self._stop_renewing()
        with self._lock:
            if self.lost:
                return False
            try:
                self._etag = self.store.put(record.model_copy(update={"lease": None}), self._etag)
            except Conflict:
                self.lost = True
                return False
            return True

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_renewing()

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            with self._lock:
                if self.lost or self._stop.is_set():
                    return
                renewed = self._record.model_copy(update={"lease": Lease.of(self.holder, self.seconds)})
                try:
                    self._etag = self.store.put(renewed, self._etag)
                    self._record = renewed
                except Conflict:
                    self.lost = True
                    log.warning("session %s: another run took the session over", renewed.session_id)
                    return
                except Exception as exc:  # S3 blinking: the lease may lapse, the next renewal tries again
                    log.debug("session %s: lease renewal failed: %s", renewed.session_id, exc, exc_info=True)
