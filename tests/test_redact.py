"""Credentials never survive redaction; what makes a line useful (host, path) does."""

from __future__ import annotations

import logging
import sys

import pytest

from tasks.redact import REDACTED, RedactingFilter, redact, redact_url, register_secret

LINK = (
    "https://mock-bucket.s3.amazonaws.com/videos/123/session.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260114%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260114T120000Z"
    "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=abcdef1234567890abcdef"
)
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJjaWQiOiJzYW5kYm94In0.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        (
            f"GET {LINK} -> 200",
            ["X-Amz-Signature", "abcdef1234567890", "AKIAIOSFODNN7EXAMPLE"],
            ["/videos/123/session.mp4"],
        ),
        (f"Authorization: Bearer {JWT}", [JWT, "c2lnbmF0dXJl"], ["Authorization: Bearer"]),
        (f'{{"access_token": "{JWT}", "expires_in": 3600}}', [JWT], ["expires_in"]),
        (
            "grant_type=client_credentials&client_id=me&client_secret=hunter2hunter2",
            ["hunter2hunter2"],
            ["client_id=me"],
        ),
        ("key AKIAIOSFODNN7EXAMPLE used", ["AKIAIOSFODNN7EXAMPLE"], ["used"]),
        ("X-Amz-Security-Token=FwoGZXIvYXdzEJr%2F", ["FwoGZXIvYXdzEJr"], []),
    ],
)
def test_redact_removes_credentials_and_keeps_context(text: str, gone: list[str], kept: list[str]) -> None:
    cleaned = redact(text)
    assert REDACTED in cleaned
    for secret in gone:
        assert secret not in cleaned
    for context in kept:
        assert context in cleaned


def test_redact_url_keeps_host_and_path_only() -> None:
    assert redact_url(LINK) == f"https://mock-bucket.s3.amazonaws.com/videos/123/session.mp4?{REDACTED}"
    assert redact_url("https://api.use2.usertesting.com/api/v2/sessionResults") == (
        "https://api.use2.usertesting.com/api/v2/sessionResults"
    )


def test_registered_and_environment_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    register_secret("opaque-token-without-shape")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    line = "token opaque-token-without-shape and key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    assert "opaque-token" not in redact(line)
    assert "wJalrXUtnFEMI" not in redact(line)


def test_filter_rewrites_messages_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "fetching %s", (LINK,), None)
    try:
        raise RuntimeError(f"failed on {LINK}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert "X-Amz-Signature" not in record.getMessage()
    assert record.exc_text and "X-Amz-Signature" not in record.exc_text
