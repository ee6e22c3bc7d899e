"""The local S3 server (``python -m sandbox.s3``) behaves like S3 where the pipeline depends on it.

It is started as the tests and the demo start it, with ``spawn``, and driven with boto3 over HTTP.
The concurrency tests pin down the compare-and-swap behaviour of conditional writes that the shared
rate-limit ledger relies on; moto alone lets two conditional writers both win.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sandbox.process import spawn

THREADS = 8
ROUNDS = 5
MIB = 1024 * 1024


def _client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        # One connection per worker thread, and no retries that could hide a failed request.
        config=Config(max_pool_connections=2 * THREADS, retries={"total_max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with spawn("sandbox.s3", ["--host", "127.0.0.1", "--port", "0"]) as server:
        yield server.url


@pytest.fixture(scope="module")
def s3(s3_url: str) -> Any:
    return _client(s3_url)


@pytest.fixture(scope="module")
def s3_on_disk() -> Iterator[Any]:
    """A server that keeps every object in a temporary file instead of memory.

    Then moto's step from checking a condition to storing the object includes real file I/O, as in
    a real server, and other threads run in between. With objects in memory the GIL rarely switches
    threads inside that step, and the races below would go unnoticed against plain moto.
    """
    env = {"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": "1"}
    with spawn("sandbox.s3", ["--port", "0"], env=env) as server:
        yield _client(server.url)


def _bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(s3: Any) -> str:
    return _bucket(s3)


def _error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def _attempt(put: Callable[..., Any], **kwargs: Any) -> str:
    """Make one conditional request: "won", or the error code it failed with."""
    try:
        put(**kwargs)
    except ClientError as exc:
        return _error_code(exc)
    return "won"


def _in_lockstep(work: Callable[[int], Any], barrier: threading.Barrier) -> list[Any]:
    """Run ``work(i)`` for i in 0..THREADS-1, each in its own thread synchronised by ``barrier``.

    A worker that raises breaks the barrier, so the others fail at once instead of waiting.
    """

    def run(worker: int) -> Any:
        try:
            return work(worker)
        except BaseException:
            barrier.abort()
            raise

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(run, range(THREADS)))


def test_serves_at_announced_loopback_url(s3_url: str) -> None:
    assert s3_url.startswith("http://127.0.0.1:")


def test_put_get_round_trip(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello", ContentType="text/plain")

    got = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
    assert got["Body"].read() == b"hello"
    assert got["ContentType"] == "text/plain"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dir/")
    assert [o["Key"] for o in listed["Contents"]] == ["dir/hello.txt"]
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="dir/absent")
    assert _error_code(missing.value) == "NoSuchKey"


def test_concurrent_multipart_uploads_of_8_mib_parts(s3: Any, bucket: str) -> None:
    """Two objects uploaded at once, all their parts in parallel, as boto3's transfer manager does."""
    keys = ["video-a.mp4", "video-b.mp4"]
    data = {key: [os.urandom(8 * MIB) for _ in range(3)] + [os.urandom(MIB // 3)] for key in keys}
    uploads = {key: s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"] for key in keys}
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in listed) == sorted(uploads.items())

    def put_part(key_and_number: tuple[str, int]) -> dict[str, Any]:
        key, number = key_and_number
        body = data[key][number - 1]
        response = s3.upload_part(Bucket=bucket, Key=key, UploadId=uploads[key], PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": response["ETag"]}

    jobs = [(key, number) for key in keys for number in range(1, len(data[key]) + 1)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        etags = list(pool.map(put_part, jobs))
    for key in keys:
        parts = [etag for (job_key, _), etag in zip(jobs, etags, strict=True) if job_key == key]
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=uploads[key], MultipartUpload={"Parts": parts}
        )

    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(b"".join(data[key])).hexdigest()
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == sum(map(len, data[key]))
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_aborted_multipart_upload_leaves_nothing(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="partial.mp4")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="partial.mp4", UploadId=upload, PartNumber=1, Body=os.urandom(MIB))

    s3.abort_multipart_upload(Bucket=bucket, Key="partial.mp4", UploadId=upload)

    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    with pytest.raises(ClientError) as gone:
        s3.list_parts(Bucket=bucket, Key="partial.mp4", UploadId=upload)
    assert _error_code(gone.value) == "NoSuchUpload"


def test_if_match_put_is_an_atomic_compare_and_swap(s3_on_disk: Any) -> None:
    """Each round, all threads read the same ETag, then race their conditional PUTs: one must win."""
    s3, bucket = s3_on_disk, _bucket(s3_on_disk)
    s3.put_object(Bucket=bucket, Key="counter", Body=json.dumps({"count": 0}))
    barrier = threading.Barrier(THREADS, timeout=30)

    def increment(worker: int) -> list[str]:
        outcomes = []
        for _ in range(ROUNDS):
            current = s3.get_object(Bucket=bucket, Key="counter")
            count, etag = json.loads(current["Body"].read())["count"], current["ETag"]
            barrier.wait()  # nobody writes before everybody has read this round's ETag
            body = json.dumps({"count": count + 1})
            outcomes.append(_attempt(s3.put_object, Bucket=bucket, Key="counter", Body=body, IfMatch=etag))
            barrier.wait()  # the round ends when every writer has had its answer
        return outcomes

    outcomes = [o for worker in _in_lockstep(increment, barrier) for o in worker]

    final = json.loads(s3.get_object(Bucket=bucket, Key="counter")["Body"].read())["count"]
    wins = outcomes.count("won")
    assert wins == final, f"{wins} compare-and-swaps succeeded but the counter reads {final}: lost updates"
    assert final == ROUNDS
    assert set(outcomes) == {"won", "PreconditionFailed"}


def test_if_none_match_lets_exactly_one_creator_win(s3_on_disk: Any) -> None:
    """Each round, all threads try to create the same new key at once: exactly one may succeed."""
    s3, bucket = s3_on_disk, _bucket(s3_on_disk)
    barrier = threading.Barrier(THREADS, timeout=30)

    def create(worker: int) -> list[str]:
        outcomes = []
        for round_ in range(ROUNDS):
            barrier.wait()
            outcomes.append(
                _attempt(
                    s3.put_object,
                    Bucket=bucket,
                    Key=f"lock-{round_}",
                    Body=f"worker {worker}",
                    IfNoneMatch="*",
                )
            )
        return outcomes

    by_worker = _in_lockstep(create, barrier)

    for round_ in range(ROUNDS):
        outcomes = [by_worker[worker][round_] for worker in range(THREADS)]
        winners = [worker for worker, outcome in enumerate(outcomes) if outcome == "won"]
        assert len(winners) == 1, f"round {round_}: workers {winners} all created the same object"
        assert set(outcomes) == {"won", "PreconditionFailed"}
        stored = s3.get_object(Bucket=bucket, Key=f"lock-{round_}")["Body"].read()
        assert stored == f"worker {winners[0]}".encode()
