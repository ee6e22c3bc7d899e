"""The S3 client: boto3 configured only by its own standard variables and profiles.

``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points it at MinIO or the local test server;
nothing here is specific to either.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def s3_client(max_pool_connections: int = 32) -> Any:
    """A thread-safe S3 client with adaptive retries and a pool sized for parallel part uploads."""
    config = Config(
        retries={"max_attempts": 8, "mode": "adaptive"},
        max_pool_connections=max_pool_connections,
        connect_timeout=10,
        read_timeout=120,
    )
    return boto3.session.Session().client("s3", config=config)
