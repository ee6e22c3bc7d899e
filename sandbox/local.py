"""The local world: the sandbox Results API and a local S3 server, started together on loopback.

The demo and the tests use it the same way: start it, then point the pipeline at it through the
same environment variables production uses (``UT_API_BASE_URL``, ``AWS_ENDPOINT_URL``, ...).
Nothing in ``tasks/`` or ``flows/`` knows it is talking to a double.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import boto3
import httpx

from sandbox.process import ServerProcess, spawn

SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_CLIENT_SECRET = "sandbox-secret-0123456789"
TOKEN_PATH = "/oauth2/aus1p3vtd8vtm4Bxv0h8/v1/token"
LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "local-test-key",
    "AWS_SECRET_ACCESS_KEY": "local-test-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class LocalWorld:
    """Both servers and the environment that points the pipeline at them."""

    api: ServerProcess
    s3: ServerProcess
    bucket: str
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: str = SANDBOX_CLIENT_SECRET
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The production variables, set to reach this world."""
        return {
            "UT_API_BASE_URL": self.api.url,
            "UT_TOKEN_URL": f"{self.api.url}{TOKEN_PATH}",
            "UT_CLIENT_ID": self.client_id,
            "UT_CLIENT_SECRET": self.client_secret,
            "UT_WORK_BUCKET": self.bucket,
            "AWS_ENDPOINT_URL": self.s3.url,
            **LOCAL_AWS,
        }

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the sandbox's ``/_sandbox/`` admin API (stats, reset, faults, world)."""
        response = httpx.request(method, f"{self.api.url}/_sandbox/{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def api_calls(self, operation: str | None = None, *, since: int = 0) -> list[dict[str, Any]]:
        """Results API requests as the sandbox counted them (from index ``since``), optionally of one operation."""
        calls = self.admin("GET", "stats")["api_requests"][since:]
        return [c for c in calls if operation is None or c["operation"] == operation]

    def mark(self) -> int:
        """A position in the sandbox's request log, for :meth:`api_calls` ``since``."""
        return len(self.admin("GET", "stats")["api_requests"])

    def s3_client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.s3.url,
            region_name=LOCAL_AWS["AWS_DEFAULT_REGION"],
            aws_access_key_id=LOCAL_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_AWS["AWS_SECRET_ACCESS_KEY"],
        )

    def stop(self) -> None:
        self._stack.close()

    def __enter__(self) -> LocalWorld:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_local_world(
    *,
    bucket: str = "ut-pipeline-work",
    rate_limit: int = 10,
    rate_window: float = 60.0,
    token_ttl: float = 3600.0,
    link_ttl: float = 3600.0,
    extra_args: list[str] | None = None,
) -> LocalWorld:
    """Start the sandbox API and the local S3 (bucket created), each on a free loopback port."""
    with ExitStack() as stack:
        api = stack.enter_context(
            spawn(
                "sandbox.server",
                [
                    "--rate-limit",
                    str(rate_limit),
                    "--rate-window",
                    str(rate_window),
                    "--token-ttl",
                    str(token_ttl),
                    "--link-ttl",
                    str(link_ttl),
                    "--client",
                    f"{SANDBOX_CLIENT_ID}:{SANDBOX_CLIENT_SECRET}",
                    *(extra_args or []),
                ],
            )
        )
        s3 = stack.enter_context(spawn("sandbox.s3", []))
        world = LocalWorld(api=api, s3=s3, bucket=bucket, _stack=stack.pop_all())
    try:
        world.s3_client().create_bucket(Bucket=bucket)
    except Exception:
        world.stop()
        raise
    return world


def max_in_window(times: list[float], window: float) -> int:
    """The most requests any sliding window of ``window`` seconds holds (from the sandbox's clock)."""
    ordered, best, left = sorted(times), 0, 0
    for right, t in enumerate(ordered):
        while t - ordered[left] >= window:
            left += 1
        best = max(best, right - left + 1)
    return best
