"""The nightly run's progress per test: sessions finished before the watermark have been handled.

Kept in the work bucket (``{prefix}state/watermarks/{test_id}.json``) so any worker on any machine
sees it, and advanced only after a run in which no session of that test failed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from tasks.storage.layout import BucketLayout
from tasks.storage.records import utcnow


class WatermarkStore:
    def __init__(self, s3: Any, bucket: str, layout: BucketLayout) -> None:
        self.s3, self.bucket, self.layout = s3, bucket, layout

    def get(self, test_id: UUID) -> datetime | None:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.layout.watermark(test_id))
        except self.s3.exceptions.NoSuchKey:
            return None
        return datetime.fromisoformat(json.loads(obj["Body"].read())["until"])

    def advance(self, test_id: UUID, until: datetime, run_id: str) -> None:
        """Move the watermark forward to ``until``; never backwards (an older run finishing late)."""
        current = self.get(test_id)
        if current is not None and current >= until:
            return
        body = {
            "test_id": str(test_id),
            "until": until.isoformat(),
            "run_id": run_id,
            "updated_at": utcnow().isoformat(),
        }
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.layout.watermark(test_id),
            Body=json.dumps(body, indent=2).encode(),
            ContentType="application/json",
        )
