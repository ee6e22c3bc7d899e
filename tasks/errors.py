"""Exceptions in words: the one line an operator reads in a session's record and on the console.

A failure's message names its real cause (a timeout, a refused connection, an HTTP status, a full
disk, an S3 error code), never just an exception's class; the traceback goes to the debug log.
"""

from __future__ import annotations

import errno

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from tasks.api.http import transport_reason
from tasks.redact import redact
from tasks.storage.s3 import describe_s3_error


def describe(exc: BaseException) -> str:
    """``exc`` as one redacted line that says what happened."""
    if isinstance(exc, BotoCoreError | ClientError):
        text = describe_s3_error(exc)
    elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        text = f"no space left on device{f' ({exc.filename})' if exc.filename else ''}"
    elif isinstance(exc, httpx.TransportError):
        text = transport_reason(exc)
    elif type(exc).__module__.startswith("tasks.") and str(exc):
        text = str(exc)  # the pipeline's own errors already say what happened
    else:
        detail = str(exc)
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return redact(" ".join(text.split()))


def is_disk_full(exc: BaseException) -> bool:
    """A write failed because the disk (the scratch space) is full."""
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc)
