"""Where everything lives in the work bucket: the one place that turns names into object keys.

The layout is a contract with the teams that read the bucket; the README documents it.

    {prefix}state/ratelimit/{client_key}.json   the shared Results API request ledger
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketLayout:
    """Object keys under one prefix (``""`` or ``"some/path/"``, as :class:`Settings` normalises it)."""

    prefix: str = ""

    def rate_limit_ledger(self, client_key: str) -> str:
        return f"{self.prefix}state/ratelimit/{client_key}.json"


def client_key(api_base_url: str, client_identity: str) -> str:
    """A stable, non-secret name for one API client's quota (the API counts per client)."""
    return hashlib.sha256(f"{api_base_url}\n{client_identity}".encode()).hexdigest()[:24]
