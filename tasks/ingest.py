"""Ingest one session: decide, claim, fetch a link just in time, stream the video, record the outcome.

Plain logic, no Prefect: the Prefect task in ``tasks/steps.py`` is a thin wrapper around
:meth:`Ingestor.ingest`, whose inputs (a session summary, a test id, flags) are serialisable.

Every claimed session ends in a recorded state, whatever happens: ``ingested``, ``no_video`` or
``failed`` with the reason. An unexpected error (a bug, S3 gone for longer than its retries) is
recorded as a failure too; only if even that write fails does the record keep its lease, which
lapses (or whose holder is seen to be gone) so the next run takes the session over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID

import httpx

from tasks.api.client import ApiError, ResultsApiClient
from tasks.api.models import NotFound, SessionSummary
from tasks.api.task_details import fetch_task_details, needs_task_details
from tasks.errors import describe
from tasks.outcome import Outcome
from tasks.storage.late_videos import LateVideos
from tasks.storage.layout import BucketLayout
from tasks.storage.owners import Holder, RunFinished
from tasks.storage.records import (
    Claim,
    Conflict,
    ErrorInfo,
    Held,
    IngestInfo,
    NoVideoInfo,
    RecordStore,
    SessionRecord,
    Status,
    TaskDetailsInfo,
    VideoInfo,
    utcnow,
)
from tasks.storage.transfer import DEFAULT_PART_SIZE, Link, TransferError, stream_to_s3

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
        late_video_grace: timedelta = timedelta(hours=72),
        vendor_transcripts: bool = False,
        progress: Callable[[str, int, int | None], None] | None = None,
        run_finished: RunFinished | None = None,
        session_details: bool = False,
    ) -> None:
        self.client, self.s3, self.bucket, self.layout, self.http = client, s3, bucket, layout, http
        self.records = RecordStore(s3, bucket, layout)
        self.late_videos = LateVideos(s3, bucket, layout)
        self.part_size, self.lease_seconds, self.progress = part_size, lease_seconds, progress
        self.late_video_grace = late_video_grace
        self.vendor_transcripts = vendor_transcripts
        self.run_finished = run_finished
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
            if record.no_video_is_final:
                return outcome("skipped", "recorded as having no video")
        new = SessionRecord(
            session_id=sid,
            test_id=test_id,
            status=Status.INGESTING,
            api=session.model_dump(mode="json", by_alias=True),
            ingest=IngestInfo(run_id=run_id, attempts=(record.ingest.attempts if record else 0) + 1),
            no_video=record.no_video if record else None,
            task_details=record.task_details if record else None,
        )
        claim = self.records.claim(
            new, record, etag, Holder.this_process(run_id), self.lease_seconds, self.run_finished
        )
        if isinstance(claim, Held):
            return outcome("held", str(claim))
        with claim:
            try:
                return self._ingest_claimed(claim, session, outcome)
            except Exception as exc:  # a bug or S3 gone for good: still a recorded state, never a stuck lease
                log.debug("session %s: ingest crashed", sid, exc_info=True)
                return self._fail(claim, describe(exc), outcome)

    def _ingest_claimed(
        self, claim: Claim, session: SessionSummary, outcome: Callable[..., Outcome]
    ) -> Outcome:
        sid = session.session_id
        self._abort_leftover_uploads(sid, "left by an interrupted run")
        link_requests = 0

        def get_link() -> Link:
            nonlocal link_requests
            link_requests += 1
            answer = self.client.video_download_url(sid)
            if isinstance(answer, NotFound):
                raise _NoVideo(answer.message)
            return Link(answer.video_url.get_secret_value(), answer.expires_at)

        try:
            result = stream_to_s3(
                get_link,
                self.http,
                self.s3,
                self.bucket,
                self.layout.session_video(sid),
                part_size=self.part_size,
                progress=(lambda received, total: self.progress(str(sid), received, total))
                if self.progress
                else None,
            )
        except _NoVideo as exc:
            return self._no_video(claim, session, exc.args[0] if exc.args else "", link_requests, outcome)
        except (TransferError, ApiError) as exc:
            return self._fail(claim, describe(exc), outcome, link_requests=link_requests)
        # CreateMultipartUpload is not idempotent: when S3 acted on a request whose answer was lost, the
        # SDK's retry opened a second upload and the first one stays open (and billed) unless aborted here.
        # A run that took the session over meanwhile may be uploading: its uploads are not ours to abort.
        if not claim.lost:
            self._abort_leftover_uploads(sid, "opened by a retried S3 request")

        video = VideoInfo(
            key=result.key,
            bytes=result.bytes,
            sha256=result.sha256,
            content_type=result.content_type,
            source_etag=result.source_etag,
        )
        ingest = claim.record.ingest.model_copy(
            update={
                "links_used": result.links_used,
                "resumes": result.resumes,
                "restarts": result.restarts,
                "seconds": round(result.seconds, 3),
                "finished_at": utcnow(),
            }
        )
        final = claim.record.model_copy(
            update={
                "status": Status.INGESTED,
                "video": video,
                "ingest": ingest,
                "no_video": None,
                "vendor_transcript_key": self._vendor_transcript(sid) if self.vendor_transcripts else None,
                "task_details": self._task_details(sid)
                if self.session_details
                else claim.record.task_details,
            }
        )
        if not self._release(claim, final, link_requests):
            return outcome("skipped", "another run took the session over", result.bytes, link_requests)
        if claim.record.no_video is not None:
            self.late_videos.remove(sid)
        return outcome("done", "ingested", result.bytes, link_requests, result.resumes, has_video=True)

    def _abort_leftover_uploads(self, sid: UUID, origin: str) -> None:
        """Abort open multipart uploads of this session's video; only the claim holder writes that key.

        Best effort: if S3 cannot even list them, the transfer that follows reports the outage, and a
        bucket lifecycle rule (see the README) is the backstop for what stays open.
        """
        try:
            aborted = self.records.abort_stale_uploads(sid)
        except Exception as exc:
            log.debug("session %s: open multipart uploads not checked: %s", sid, describe(exc))
            return
        if aborted:
            log.info("session %s: aborted %d multipart upload(s) %s", sid, aborted, origin)

    def _no_video(
        self,
        claim: Claim,
        session: SessionSummary,
        message: str,
        link_requests: int,
        outcome: Callable[..., Outcome],
    ) -> Outcome:
        """A 404 on the link: final once the grace window after the session's finish has passed."""
        now = utcnow()
        deadline = (session.finish_time or now) + self.late_video_grace
        earlier = claim.record.no_video
        info = NoVideoInfo(
            checked_at=now,
            checks=(earlier.checks if earlier else 0) + 1,
            final=now >= deadline,
            message=message,
        )
        if not info.final:
            self.late_videos.add(UUID(str(claim.record.test_id)), session)
        final = claim.record.model_copy(update={"status": Status.NO_VIDEO, "no_video": info})
        if not self._release(claim, final, link_requests):
            return outcome("skipped", "another run took the session over", link_requests=link_requests)
        if info.final:
            self.late_videos.remove(session.session_id)
            return outcome("no_video", message or "no video", link_requests=link_requests)
        return outcome(
            "no_video_yet",
            f"no video yet ({message or 'HTTP 404'}); asked again by every run until "
            f"{deadline.isoformat(timespec='minutes')}",
            link_requests=link_requests,
        )

    def _fail(
        self, claim: Claim, message: str, outcome: Callable[..., Outcome], *, link_requests: int = 0
    ) -> Outcome:
        """Record the failure; if even that write fails, say so (the lease then lapses for the next run)."""
        final = claim.record.model_copy(
            update={"status": Status.FAILED, "error": ErrorInfo(stage="ingest", message=message)}
        )
        try:
            if not self._release(claim, final, link_requests):
                return outcome("skipped", "another run took the session over", link_requests=link_requests)
        except Exception as exc:
            log.debug("session %s: the failure could not be recorded", claim.record.session_id, exc_info=True)
            message = f"{message} (not recorded: {describe(exc)}; the next run takes the session over)"
        return outcome("failed", message, link_requests=link_requests)

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

    def _release(self, claim: Claim, record: SessionRecord, link_requests: int) -> bool:
        """Write the final record; False if another run took the session over meanwhile."""
        if claim.release(record):
            return True
        log.warning(
            "session %s: lost the claim before recording (after %d link requests)",
            record.session_id,
            link_requests,
        )
        return False

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
