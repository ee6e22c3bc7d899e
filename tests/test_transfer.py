"""Streaming into a multipart upload, edge cases first.

The source is an in-process HTTP double (httpx.MockTransport) so each failure mode is exact; the
destination is the real local S3 server. The end-to-end path against the sandbox's own pre-signed
links is covered in test_ingest.py.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandbox.local import LocalWorld
from tasks.storage.transfer import MIB, Link, TransferError, stream_to_s3

PART = 5 * MIB
BODY = random.Random(7).randbytes(12 * MIB + 12345)
ETAG = '"source-etag-1"'
FORBIDDEN = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"


class Source:
    """A pre-signed-URL server double: ranges, ETags, per-link validity and scripted failures."""

    def __init__(self, body: bytes = BODY) -> None:
        self.body = body
        self.valid_links: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        self.script: list[Callable[[httpx.Request], httpx.Response | None]] = []
        self.served = 0
        self.links_issued = 0

    def link(self) -> Link:
        self.links_issued += 1
        url = f"https://videos.example/v.mp4?X-Amz-Signature={self.links_issued}"
        self.valid_links.add(url)
        return Link(url, datetime.now(UTC) + timedelta(hours=1))

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((str(request.url), request.headers.get("Range")))
        if self.script:
            scripted = self.script.pop(0)(request)
            if scripted is not None:
                return scripted
        if str(request.url) not in self.valid_links:
            return httpx.Response(403, content=FORBIDDEN, headers={"Content-Type": "application/xml"})
        if request.headers.get("If-Match") not in (None, ETAG):
            return httpx.Response(412)
        start = int(request.headers.get("Range", "bytes=0-")[6:].rstrip("-"))
        chunk = self.body[start:]
        self.served += len(chunk)
        headers = {"ETag": ETAG, "Content-Length": str(len(chunk)), "Content-Type": "video/mp4"}
        if "Range" in request.headers:
            headers["Content-Range"] = f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
            return httpx.Response(206, content=chunk, headers=headers)
        return httpx.Response(200, content=chunk, headers=headers)


def truncated_after(nbytes: int, source: Source) -> Callable[[httpx.Request], httpx.Response]:
    """A 200 that promises the whole body but stops after ``nbytes`` (a dropped connection)."""

    def respond(request: httpx.Request) -> httpx.Response:
        source.served += nbytes

        def body() -> Any:
            yield source.body[:nbytes]
            raise httpx.ReadError("connection reset by peer")

        headers = {"ETag": ETAG, "Content-Length": str(len(source.body)), "Content-Type": "video/mp4"}
        return httpx.Response(200, content=body(), headers=headers)

    return respond


@pytest.fixture
def s3(world: LocalWorld) -> Any:
    return world.s3_client()


def run(source: Source, s3: Any, bucket: str, key: str, **kwargs: Any) -> Any:
    http = httpx.Client(transport=httpx.MockTransport(source.handler))
    return stream_to_s3(source.link, http, s3, bucket, key, part_size=PART, **kwargs)


def open_uploads(s3: Any, bucket: str) -> list[Any]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_streams_in_parts_with_sha256_and_size(world: LocalWorld, s3: Any) -> None:
    source = Source()
    result = run(source, s3, world.bucket, "t/plain.mp4")
    stored = s3.get_object(Bucket=world.bucket, Key="t/plain.mp4")["Body"].read()
    assert stored == BODY
    assert result.sha256 == hashlib.sha256(BODY).hexdigest() and result.bytes == len(BODY)
    parts = s3.head_object(Bucket=world.bucket, Key="t/plain.mp4", PartNumber=1)
    assert parts["ContentLength"] == PART and parts["PartsCount"] == 3
    assert (result.links_used, result.resumes, result.restarts) == (1, 0, 0)


def test_dropped_connection_resumes_with_range_on_the_same_link(world: LocalWorld, s3: Any) -> None:
    source = Source()
    source.script = [truncated_after(6 * MIB + 3, source)]
    result = run(source, s3, world.bucket, "t/resumed.mp4")
    assert s3.get_object(Bucket=world.bucket, Key="t/resumed.mp4")["Body"].read() == BODY
    assert [r for _, r in source.requests] == [None, f"bytes={6 * MIB + 3}-"]
    assert len({u for u, _ in source.requests}) == 1
    assert source.served == len(BODY)  # not a byte sent twice
    assert (result.links_used, result.resumes) == (1, 1)


def test_refused_link_is_replaced_and_the_rest_fetched_with_range(world: LocalWorld, s3: Any) -> None:
    source = Source()

    def expire_all(request: httpx.Request) -> None:
        source.valid_links.clear()  # the first link expires while the connection is down

    source.script = [truncated_after(2 * MIB, source), expire_all]
    result = run(source, s3, world.bucket, "t/relinked.mp4")
    assert s3.get_object(Bucket=world.bucket, Key="t/relinked.mp4")["Body"].read() == BODY
    ranges = [r for _, r in source.requests]
    assert ranges == [None, f"bytes={2 * MIB}-", f"bytes={2 * MIB}-"]  # 403 on the old link, then the new one
    assert len({u for u, _ in source.requests}) == 2
    assert source.served == len(BODY)
    assert result.links_used == 2


def test_changed_source_restarts_from_zero(world: LocalWorld, s3: Any) -> None:
    source = Source()
    changed = random.Random(8).randbytes(7 * MIB)

    def swap(request: httpx.Request) -> None:
        source.body = changed  # the If-Match on the resume no longer matches ...

    def new_etag(request: httpx.Request) -> httpx.Response:
        return httpx.Response(412)

    source.script = [truncated_after(MIB, source), new_etag, swap]
    result = run(source, s3, world.bucket, "t/restarted.mp4")
    assert result.restarts == 1
    assert s3.get_object(Bucket=world.bucket, Key="t/restarted.mp4")["Body"].read() == changed
    assert result.sha256 == hashlib.sha256(changed).hexdigest()
    assert open_uploads(s3, world.bucket) == []


def test_gives_up_and_aborts_the_upload(world: LocalWorld, s3: Any) -> None:
    source = Source()
    source.script = [truncated_after(PART + 10, source) for _ in range(20)]
    with pytest.raises(TransferError, match="gave up: the source changed 3 times"):
        run(source, s3, world.bucket, "t/failed.mp4", max_interruptions=2)
    assert open_uploads(s3, world.bucket) == []
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=world.bucket, Key="t/failed.mp4")


def test_server_errors_are_retried_and_client_errors_are_not(world: LocalWorld, s3: Any) -> None:
    source = Source()
    source.script = [lambda request: httpx.Response(503, content=b"<Error><Code>SlowDown</Code></Error>")]
    assert run(source, s3, world.bucket, "t/slowdown.mp4").resumes == 1

    missing = b"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>"
    source.script = [lambda request: httpx.Response(404, content=missing)]
    with pytest.raises(TransferError) as raised:
        run(source, s3, world.bucket, "t/error.mp4")
    assert "404 NoSuchKey" in str(raised.value)
    assert "X-Amz-Signature" not in str(raised.value)


def test_empty_video_is_stored_as_an_empty_object(world: LocalWorld, s3: Any) -> None:
    result = run(Source(body=b""), s3, world.bucket, "t/empty.mp4")
    assert result.bytes == 0
    assert s3.get_object(Bucket=world.bucket, Key="t/empty.mp4")["Body"].read() == b""
    assert open_uploads(s3, world.bucket) == []
