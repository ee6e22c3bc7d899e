"""The one place that builds HTTP clients, so every caller gets the same timeouts, pool and identity.

Retries are not done here: the Results API client decides per status code (and must count each
attempt against the rate limit), and downloads resume with ``Range`` rather than repeat.
"""

from __future__ import annotations

import httpx

from tasks.redact import redact

USER_AGENT = "ut-video-pipeline/0.1 (+httpx)"

RETRYABLE_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def new_client(
    *, base_url: str = "", timeout_seconds: float = 60.0, max_connections: int = 16
) -> httpx.Client:
    """A synchronous client with a connect timeout shorter than the read timeout and no redirects.

    Redirects stay off: a redirected pre-signed link or API call would carry credentials to a host
    nobody chose.
    """
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


def transport_reason(exc: Exception) -> str:
    """What went wrong on the wire, in words: timed out, connection refused, connection dropped."""
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.ConnectTimeout: "timed out connecting",
            httpx.ReadTimeout: "timed out waiting for the answer",
            httpx.WriteTimeout: "timed out sending the request",
            httpx.PoolTimeout: "timed out waiting for a free connection",
        }.get(type(exc), "timed out")
    elif isinstance(exc, httpx.ConnectError):
        what = "could not connect"
    elif isinstance(exc, httpx.RemoteProtocolError):
        what = "the server closed the connection"
    else:
        what = "network error"
    detail = redact(str(exc))
    return f"{what} ({type(exc).__name__}{': ' + detail if detail else ''})"
