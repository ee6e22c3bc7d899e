"""Stream a video from a pre-signed link straight into an S3 multipart upload.

The body never touches local disk and memory stays bounded (the part being filled plus at most
``max_inflight_parts`` parts uploading), whatever the video's size. The sha256 and byte count are
computed on the way and checked against ``Content-Length``.

Links are single-use and expire (UserTesting: one hour). A dropped connection, short body or
timeout resumes from the bytes already received with a ``Range`` request on the same link while
it is valid. When the link is refused (S3 answers 403 with an XML error) or has expired, a new one
is fetched and the download resumes with ``Range`` and ``If-Match`` on the source's ETag, so a
changed object is detected (412) and only then does the transfer restart from zero. An upload that
cannot complete is aborted, so no multipart upload is left behind.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from tasks.api.http import RETRYABLE_TRANSPORT_ERRORS
from tasks.redact import redact
from tasks.storage.s3 import describe_s3_error

log = logging.getLogger("ut_pipeline.transfer")

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MIB


@dataclass(frozen=True)
class Link:
    """A pre-signed download link. ``url`` is a credential: never log it, never store it."""

    url: str
    expires_at: datetime
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"Link(expires_at={self.expires_at.isoformat()})"

    def expired(self) -> bool:
        """True shortly before expiry: a request must *start* while the link is valid."""
        margin = min(timedelta(seconds=5), (self.expires_at - self.received_at) / 10)
        return datetime.now(UTC) >= self.expires_at - margin


@dataclass(frozen=True)
class TransferResult:
    """What landed in the bucket and what it took."""

    key: str
    bytes: int
    sha256: str
    content_type: str
    source_etag: str | None
    links_used: int
    resumes: int
    restarts: int
    seconds: float


class TransferError(Exception):
    """The video could not be copied; the multipart upload has been aborted."""


class _Restart(Exception):
    """The source changed (or ignored ``Range``): start the copy over from byte zero."""


class _Resume(Exception):
    """The body stopped early: continue from the bytes received."""


class _NewLink(Exception):
    """The link was refused or expired: ask for another one, then resume."""


@dataclass
class _Progress:
    received: int = 0
    total: int | None = None
    etag: str | None = None
    content_type: str = "video/mp4"


class MultipartWriter:
    """Parts of at least ``part_size`` uploaded in the background, at most ``max_inflight`` at once."""

    def __init__(
        self, s3: Any, bucket: str, key: str, content_type: str, part_size: int, max_inflight: int
    ) -> None:
        self.s3, self.bucket, self.key, self.part_size = s3, bucket, key, part_size
        self.content_type = content_type
        self.upload_id: str = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)[
            "UploadId"
        ]
        self._buffer = bytearray()
        self._futures: list[Future[dict[str, Any]]] = []
        self._slots = threading.BoundedSemaphore(max_inflight)
        self._pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="s3-part")

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= self.part_size:
            self._submit(bytes(self._buffer[: self.part_size]))
            del self._buffer[: self.part_size]

    def complete(self) -> None:
        if not self._futures and not self._buffer:
            # An empty object: multipart needs at least one part, a plain PUT does not.
            self.abort()
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=b"", ContentType=self.content_type)
            return
        if self._buffer:
            self._submit(bytes(self._buffer))  # the last part may be shorter than part_size
            self._buffer.clear()
        parts = [f.result() for f in self._futures]
        self._pool.shutdown()
        try:
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
            )
        except self.s3.exceptions.NoSuchUpload:
            # The SDK retried a completion whose answer was lost: the first attempt completed it.
            if not self._completed(parts):
                raise

    def abort(self) -> None:
        """Abort the upload. Never raises: during an S3 outage the abort fails too, and the error that
        matters is the one that made the transfer stop; the next run aborts what is left."""
        self._pool.shutdown(cancel_futures=True)
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception as exc:
            log.warning(
                "%s: the multipart upload could not be aborted now (%s); the next run will", self.key, exc
            )

    def _completed(self, parts: list[dict[str, Any]]) -> bool:
        """Whether the object now in place is this upload's: S3's multipart ETag is the MD5 of the parts'
        binary MD5s, then ``-`` and the part count."""
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self.key)
        except self.s3.exceptions.ClientError:
            return False
        digests = b"".join(bytes.fromhex(str(p["ETag"]).strip('"')) for p in parts)
        expected = f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"
        return str(head.get("ETag", "")).strip('"') == expected

    def _submit(self, body: bytes) -> None:
        self._slots.acquire()  # back-pressure: the download waits while parts are uploading
        number = len(self._futures) + 1

        def upload() -> dict[str, Any]:
            try:
                answer = self.s3.upload_part(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
                )
                return {"PartNumber": number, "ETag": answer["ETag"]}
            finally:
                self._slots.release()

        self._futures.append(self._pool.submit(upload))
        failed = next((f for f in self._futures if f.done() and f.exception()), None)
        if failed is not None:
            error = failed.exception()
            assert error is not None
            raise TransferError(f"part upload failed: {describe_s3_error(error)}")


def stream_to_s3(
    get_link: Callable[[], Link],
    http: httpx.Client,
    s3: Any,
    bucket: str,
    key: str,
    *,
    part_size: int = DEFAULT_PART_SIZE,
    max_inflight_parts: int = 2,
    max_interruptions: int = 8,
    progress: Callable[[int, int | None], None] | None = None,
) -> TransferResult:
    """Copy the video behind ``get_link()`` to ``s3://bucket/key``; see the module docstring.

    ``get_link`` is called once at the start and again only when a link is refused or expired
    (each call costs a rate-limited API request). ``progress(received, total)`` is called after
    every chunk; throttle in the callback.
    """
    if part_size < 5 * MIB:
        raise ValueError("S3 multipart parts must be at least 5 MiB")
    started = time.monotonic()
    link = get_link()
    links_used, resumes, restarts, stalled = 1, 0, 0, 0
    state = _Progress()
    sha = hashlib.sha256()
    writer = MultipartWriter(s3, bucket, key, "video/mp4", part_size, max_inflight_parts)
    try:
        while True:
            before, pause = state.received, True
            try:
                if link.expired():
                    raise _NewLink("link expired before the request")
                _read_once(http, link, state, sha, writer, progress)
                break
            except _NewLink as why:
                log.info("%s: fetching a new link (%s)", key, why)
                link, links_used, pause = get_link(), links_used + 1, False
            except _Resume as why:
                resumes += 1
                log.warning("%s: resuming at byte %d (%s)", key, state.received, why)
            except _Restart as why:
                restarts += 1
                log.warning("%s: restarting from zero (%s)", key, why)
                writer.abort()
                state, sha = _Progress(), hashlib.sha256()
                writer = MultipartWriter(s3, bucket, key, "video/mp4", part_size, max_inflight_parts)
            # A connection that keeps dropping while bytes keep coming is slow, not broken.
            stalled = 0 if state.received > before else stalled + 1
            _give_up_if(
                stalled > max_interruptions,
                restarts > max_interruptions,
                links_used - 1 + resumes + restarts > 8 * max_interruptions,
                max_interruptions,
                state.received,
            )
            if pause:  # a new link is used at once; a drop or a restart waits a little, longer when stuck
                time.sleep(_backoff(stalled + 1))
        writer.complete()
    except BaseException as exc:
        writer.abort()
        if isinstance(exc, TransferError):
            raise
        if isinstance(exc, BotoCoreError | ClientError):
            raise TransferError(describe_s3_error(exc)) from None
        if isinstance(exc, Exception):
            raise TransferError(redact(f"{type(exc).__name__}: {exc}")) from None
        raise
    return TransferResult(
        key=key,
        bytes=state.received,
        sha256=sha.hexdigest(),
        content_type=state.content_type,
        source_etag=state.etag,
        links_used=links_used,
        resumes=resumes,
        restarts=restarts,
        seconds=time.monotonic() - started,
    )


def _give_up_if(stalled: bool, restarting: bool, too_many: bool, limit: int, received: int) -> None:
    """Stop a transfer that cannot finish: no byte in ``limit`` attempts in a row, the source changing
    more than ``limit`` times, or more than ``8 * limit`` interruptions in all."""
    reasons = (
        (stalled, f"no progress in {limit + 1} attempts"),
        (restarting, f"the source changed {limit + 1} times"),
        (too_many, f"more than {8 * limit} interruptions"),
    )
    why = next((text for hit, text in reasons if hit), None)
    if why is not None:
        raise TransferError(f"gave up: {why}, at byte {received}")


def _backoff(interruptions: int) -> float:
    """Seconds to wait before the next attempt: 0.2, 0.4, 0.8 ... capped at 5 (a link is fetched without wait)."""
    return min(0.1 * 2**interruptions, 5.0)


def _read_once(
    http: httpx.Client,
    link: Link,
    state: _Progress,
    sha: Any,
    writer: MultipartWriter,
    progress: Callable[[int, int | None], None] | None,
) -> None:
    """One GET (ranged when resuming); appends to the upload; raises to resume, relink or restart."""
    headers = {"Accept-Encoding": "identity"}
    if state.received:
        headers["Range"] = f"bytes={state.received}-"
        if state.etag:
            headers["If-Match"] = state.etag
    try:
        with http.stream("GET", link.url, headers=headers) as response:
            status = response.status_code
            if status in (401, 403):
                raise _NewLink(f"HTTP {status} {_s3_error_code(response)}")
            if status == 412:
                raise _Restart("the video changed since the first request (ETag mismatch)")
            if state.received and status == 200:
                raise _Restart("the server ignored the Range header")
            if status >= 500:
                raise _Resume(f"HTTP {status} {_s3_error_code(response)}")  # S3's InternalError, SlowDown
            if status not in (200, 206):
                raise TransferError(f"video download answered HTTP {status} {_s3_error_code(response)}")
            _check_headers(response, state)
            for (
                chunk
            ) in response.iter_bytes():  # as received: a re-chunking buffer would lose bytes on a drop
                sha.update(chunk)
                writer.write(chunk)
                state.received += len(chunk)
                if progress:
                    progress(state.received, state.total)
    except RETRYABLE_TRANSPORT_ERRORS as exc:
        raise _Resume(f"{type(exc).__name__}") from None
    if state.total is not None and state.received < state.total:
        raise _Resume(f"short body: {state.received} of {state.total} bytes")
    if state.total is not None and state.received > state.total:
        raise TransferError(f"received {state.received} bytes, more than Content-Length {state.total}")


def _check_headers(response: httpx.Response, state: _Progress) -> None:
    if response.status_code == 200:
        length = response.headers.get("Content-Length")
        state.total = int(length) if length is not None else None
        state.etag = response.headers.get("ETag")
        state.content_type = response.headers.get("Content-Type", state.content_type).split(";")[0]
        return
    content_range = response.headers.get("Content-Range", "")  # "bytes 100-199/200"
    try:
        span, _, total = content_range.removeprefix("bytes ").partition("/")
        start = int(span.split("-")[0])
    except ValueError:
        raise _Restart(f"unusable Content-Range {content_range!r}") from None
    if start != state.received or (state.total is not None and total != "*" and int(total) != state.total):
        raise _Restart(f"Content-Range {content_range!r} does not continue at byte {state.received}")


def _s3_error_code(response: httpx.Response) -> str:
    """S3's XML ``<Code>`` from an error body (AccessDenied, SignatureDoesNotMatch, ...)."""
    body = response.read()[:2000].decode(errors="replace")
    start, end = body.find("<Code>"), body.find("</Code>")
    return body[start + 6 : end] if 0 <= start < end else ""
