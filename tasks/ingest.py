"""Ingest one session: decide, claim, fetch a link just in time, stream the video, record the outcome.

Plain logic, no Prefect: the Prefect task in ``tasks/steps.py`` is a thin wrapper around
:meth:`Ingestor.ingest`, whose inputs (a session summary, a test id, flags) are serialisable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from uuid import UUID

import httpx

from tasks.layout import BucketLayout
from tasks.models import NotFound, SessionSummary
from tasks.outcome import Outcome
from tasks.records import (
    Conflict,
    ErrorInfo,
    IngestInfo,
    RecordStore,
    SessionRecord,
    Status,
    TaskDetailsInfo,
    VideoInfo,
    lease_for,
    utcnow,
)
from tasks.redact import redact
from tasks.results_api import ApiError, ResultsApiClient
from tasks.task_details import fetch_task_details, needs_task_details
from tasks.transfer import DEFAULT_PART_SIZE, Link, TransferError, stream_to_s3

log = logging.getLogger("ut_pipeline.ingest")


class _NoVideo(Exception):
    pass


class Ingestor:
    """Everything one worker process needs to ingest sessions; build once, call :meth:`ingest` many times."""

    def __init__(
        self,
        client: ResultsApiClient,
        s3: Any,
        bucket: str,
        layout: BucketLayout,
        http: httpx.Client,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        lease_seconds: float = 120.0,
        vendor_transcripts: bool = False,
        progress: Callable[[str, int, int | None], None] | None = None,
        session_details: bool = False,
    ) -> None:
        self.client, self.s3, self.bucket, self.layout, self.http = client, s3, bucket, layout, http
        self.records = RecordStore(s3, bucket, layout)
        self.part_size, self.lease_seconds, self.progress = part_size, lease_seconds, progress
        self.vendor_transcripts = vendor_transcripts
        self.session_details = session_details

    def ingest(self, session: SessionSummary, test_id: UUID, run_id: str, *, force: bool = False) -> Outcome:
        sid = session.session_id
        outcome = partial(Outcome, str(sid), str(test_id))
        record, etag = self.records.get(sid)
        if record is not None and not force:
            if record.has_video:
                if self.session_details and record.lease is None and needs_task_details(record.task_details):
                    self._complete_task_details(record, etag)
                return outcome("skipped", "already ingested", has_video=True)
            if record.status is Status.NO_VIDEO:
                return outcome("skipped", "recorded as having no video")
        if record is not None and record.lease and record.lease.held_by_other(run_id, utcnow()):
            return outcome("skipped", f"being ingested by run {record.lease.owner}")

        claimed = SessionRecord(
            session_id=sid,
            test_id=test_id,
            status=Status.INGESTING,
            api=session.model_dump(mode="json", by_alias=True),
            ingest=IngestInfo(run_id=run_id, attempts=(record.ingest.attempts if record else 0) + 1),
            lease=lease_for(run_id, self.lease_seconds),
        )
        try:
            etag = self.records.put(claimed, etag)
        except Conflict:
            return outcome("skipped", "claimed by another run")
        if aborted := self.records.abort_stale_uploads(sid):
            log.info("session %s: aborted %d multipart upload(s) left by an interrupted run", sid, aborted)

        link_requests = 0
        state = {"etag": etag, "renew_at": time.monotonic() + self.lease_seconds / 3}

        def get_link() -> Link:
            nonlocal link_requests
            link_requests += 1
            answer = self.client.video_download_url(sid)
            if isinstance(answer, NotFound):
                raise _NoVideo(answer.message)
            return Link(answer.video_url.get_secret_value(), answer.expires_at)

        def on_progress(received: int, total: int | None) -> None:
            if self.progress:
                self.progress(str(sid), received, total)
            if time.monotonic() >= state["renew_at"]:
                renewed = claimed.model_copy(update={"lease": lease_for(run_id, self.lease_seconds)})
                state["etag"] = self.records.put(renewed, state["etag"])
                state["renew_at"] = time.monotonic() + self.lease_seconds / 3

        try:
            result = stream_to_s3(
                get_link,
                self.http,
                self.s3,
                self.bucket,
                self.layout.session_video(sid),
                part_size=self.part_size,
                progress=on_progress,
            )
        except _NoVideo as exc:
            final = claimed.model_copy(update={"status": Status.NO_VIDEO, "lease": None})
            if not self._finish(final, state["etag"], link_requests):
                return outcome("skipped", "another run took the session over", link_requests=link_requests)
            return outcome("no_video", exc.args[0] if exc.args else "no video", link_requests=link_requests)
        except (TransferError, ApiError, Conflict) as exc:
            message = redact(str(exc))
            log.warning("session %s: ingest failed: %s", sid, message)
            error = ErrorInfo(stage="ingest", message=message)
            final = claimed.model_copy(update={"status": Status.FAILED, "error": error, "lease": None})
            if not self._finish(final, state["etag"], link_requests):
                return outcome("skipped", "another run took the session over", link_requests=link_requests)
            return outcome("failed", message, link_requests=link_requests)

        video = VideoInfo(
            key=result.key,
            bytes=result.bytes,
            sha256=result.sha256,
            content_type=result.content_type,
            source_etag=result.source_etag,
        )
        ingest = claimed.ingest.model_copy(
            update={
                "links_used": result.links_used,
                "resumes": result.resumes,
                "restarts": result.restarts,
                "seconds": round(result.seconds, 3),
                "finished_at": utcnow(),
            }
        )
        final = claimed.model_copy(
            update={
                "status": Status.INGESTED,
                "video": video,
                "ingest": ingest,
                "vendor_transcript_key": self._vendor_transcript(sid) if self.vendor_transcripts else None,
                "task_details": self._task_details(sid)
                if self.session_details
                else (record.task_details if record else None),
                "lease": None,
            }
        )
        if not self._finish(final, state["etag"], link_requests):
            return outcome("skipped", "another run took the session over", result.bytes, link_requests)
        return outcome("done", "ingested", result.bytes, link_requests, result.resumes, has_video=True)

    def _vendor_transcript(self, session_id: UUID) -> str | None:
        """UserTesting's own WebVTT (think-out-loud and live sessions only), stored beside the video."""
        try:
            vtt = self.client.transcript_vtt(session_id)
        except ApiError as exc:  # the video is in: a missing extra is a warning, not a failure
            log.warning("session %s: vendor transcript not fetched: %s", session_id, exc)
            return None
        if isinstance(vtt, NotFound):
            return None
        key = self.layout.session_file(session_id, "vendor-transcript.vtt")
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=vtt.encode(), ContentType="text/vtt")
        return key

    def _finish(self, record: SessionRecord, etag: str | None, link_requests: int) -> bool:
        """Write the final record; False if another run claimed the session meanwhile."""
        try:
            self.records.put(record, etag)
        except Conflict:
            log.warning(
                "session %s: lost the claim before recording (after %d link requests)",
                record.session_id,
                link_requests,
            )
            return False
        return True

    def _task_details(self, session_id: UUID) -> TaskDetailsInfo:
        return fetch_task_details(self.client, self.s3, self.bucket, self.layout, session_id)

    def _complete_task_details(self, record: SessionRecord, etag: str | None) -> None:
        """A session ingested without its tasks (the setting was off, or the call failed) gets them now."""
        info = self._task_details(record.session_id)
        try:
            self.records.put(record.model_copy(update={"task_details": info}), etag)
        except Conflict:
            log.info(
                "session %s: record changed meanwhile; its tasks are asked for again next run",
                record.session_id,
            )
