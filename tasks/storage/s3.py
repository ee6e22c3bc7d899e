"""The S3 client: boto3 configured only by its own standard variables and profiles, plus its retries.

``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points it at MinIO or the local test server;
nothing here is specific to either.

Retries are botocore's own, in its ``legacy`` mode, on purpose. The ``standard`` and ``adaptive``
modes share one retry quota per client (500 units, 14 per retry, not configurable): when S3 blinks
while a dozen calls are in flight (parts uploading, leases renewing, the rate-limit ledger), the
quota runs dry within a second or two and every call fails at once. ``legacy`` has no quota; it
retries connection errors, timeouts and 5xx answers after ``rand(0, 1) * 2 ** (n - 1)`` seconds.
With ``UT_S3_MAX_ATTEMPTS=10`` a call gives up after 256 s on average (at most 511 s), and the
chance that it gives up within a 60 s outage is about 0.3 %. A missing bucket or a refused
credential is not retried: :func:`preflight` reports those before a run spends any API call.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

DEFAULT_MAX_ATTEMPTS = 10


class StorageUnavailable(Exception):
    """The work bucket cannot be used; the message names the setting to check."""


def s3_client(max_pool_connections: int = 32, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Any:
    """A thread-safe S3 client that rides out outages (see the module docstring)."""
    config = Config(
        retries={"mode": "legacy", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=10,
        read_timeout=120,
    )
    return boto3.session.Session().client("s3", config=config)


def preflight(bucket: str) -> None:
    """Check, with two quick attempts, that the endpoint answers and the bucket exists and is ours.

    Raises :class:`StorageUnavailable` with one line naming ``UT_WORK_BUCKET`` or
    ``AWS_ENDPOINT_URL``, so a misconfigured run stops before it spends API quota.
    """
    s3 = s3_client(max_pool_connections=2, max_attempts=2)
    endpoint = s3.meta.endpoint_url
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchBucket", "NotFound"}:
            raise StorageUnavailable(
                f"UT_WORK_BUCKET: bucket {bucket!r} does not exist at {endpoint}"
            ) from None
        if code in {"403", "AccessDenied", "Forbidden"}:
            raise StorageUnavailable(
                f"UT_WORK_BUCKET: access to bucket {bucket!r} at {endpoint} is denied "
                "(check the AWS credentials or profile)"
            ) from None
        raise StorageUnavailable(
            f"UT_WORK_BUCKET: bucket {bucket!r} at {endpoint}: {describe_s3_error(exc)}"
        ) from None
    except EndpointConnectionError:
        raise StorageUnavailable(
            f"AWS_ENDPOINT_URL: the S3 endpoint {endpoint} cannot be reached (connection failed)"
        ) from None
    except BotoCoreError as exc:
        raise StorageUnavailable(
            f"AWS_ENDPOINT_URL: the S3 endpoint {endpoint}: {describe_s3_error(exc)}"
        ) from None


def describe_s3_error(exc: BaseException) -> str:
    """One line an operator can act on, for an S3 error (the operation, S3's code and message)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"S3 {exc.operation_name} failed: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(
            ": "
        )
    if isinstance(exc, EndpointConnectionError):
        return f"S3 endpoint unreachable: {exc.kwargs.get('endpoint_url', '')}"
    return f"S3 error: {type(exc).__name__}: {exc}"
