"""Remove credentials from text before it reaches a log line, an artifact or the bucket.

A pre-signed S3 link is a credential: anyone holding its query string can download the video.
Redaction keeps the URL's scheme, host and path (useful when reading a log) and drops the query.
Bearer tokens, JWTs, OAuth form secrets, AWS access key ids and any value registered at run time
(the client secret, the access token once fetched, AWS secret keys) are replaced as well.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

REDACTED = "[REDACTED]"

_PRESIGNED_QUERY = re.compile(
    r"(?P<keep>https?://[^\s?\"'<>]+)\?(?P<query>[^\s\"'<>]*(?:X-Amz-|AWSAccessKeyId=|Signature=)[^\s\"'<>]*)",
    re.IGNORECASE,
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    (
        re.compile(
            r"(?i)(\b(?:client_secret|access_token|refresh_token|password|aws_secret_access_key)"
            r"[\"']?\s*[=:]\s*[\"']?)[^\s&\"',}]+"
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^\s&\"'<>]+"), rf"\1{REDACTED}"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
)
_ENV_SECRETS = ("UT_CLIENT_SECRET", "UT_ACCESS_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

_lock = threading.Lock()
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact this exact value wherever it appears from now on (values under 8 characters are ignored)."""
    if value and len(value) >= 8:
        with _lock:
            _registered.add(value)


def redact(text: str) -> str:
    """``text`` with every known kind of credential replaced by ``[REDACTED]``."""
    for name in _ENV_SECRETS:
        register_secret(os.environ.get(name))
    with _lock:
        secrets = sorted(_registered, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _PRESIGNED_QUERY.sub(lambda m: f"{m.group('keep')}?{REDACTED}", text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_json(value: Any) -> Any:
    """A JSON-like structure with every string redacted: for summaries and artifacts."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(item) for item in value]
    return value


def redact_url(url: str) -> str:
    """A URL safe to log: scheme, host and path; a query string is replaced when present."""
    base, sep, _ = url.partition("?")
    return redact(f"{base}?{REDACTED}" if sep else base)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's final message (and traceback) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
