"""Sessions whose video was not there yet: every run asks again until the grace window closes.

UserTesting can take tens of minutes to process a video after a session completes, so a 404 on the
video link of a recently finished session is not an answer yet. Such a session gets a small marker
object (``{prefix}state/late-videos/{session_id}.json``) holding what the listing said of it. Every
run (nightly or backfill) reads these markers, one LIST and a GET each, and asks again for the
sessions of its tests, whatever time window it covers; the marker goes when the video is in or
when the grace window has passed and ``no_video`` became final.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from tasks.api.models import SessionSummary
from tasks.storage.layout import BucketLayout
from tasks.storage.records import utcnow

log = logging.getLogger("ut_pipeline.ingest")


@dataclass(frozen=True)
class LateVideo:
    test_id: UUID
    session: SessionSummary


class LateVideos:
    """The markers of sessions whose video is expected but not ready."""

    def __init__(self, s3: Any, bucket: str, layout: BucketLayout) -> None:
        self.s3, self.bucket, self.layout = s3, bucket, layout

    def add(self, test_id: UUID, session: SessionSummary) -> None:
        body = {
            "test_id": str(test_id),
            "session": session.model_dump(mode="json", by_alias=True),
            "marked_at": utcnow().isoformat(),
        }
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.layout.late_video(session.session_id),
            Body=json.dumps(body, indent=2).encode(),
            ContentType="application/json",
        )

    def remove(self, session_id: UUID) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.layout.late_video(session_id))

    def pending(self) -> list[LateVideo]:
        """Every marked session; an unreadable marker is logged and left for a person to look at."""
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.layout.late_videos_root()
        ):
            for obj in page.get("Contents", []):
                body = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                try:
                    raw = json.loads(body)
                    found.append(
                        LateVideo(UUID(raw["test_id"]), SessionSummary.model_validate(raw["session"]))
                    )
                except (ValueError, KeyError, TypeError, ValidationError) as exc:
                    log.warning("late-video marker %s is unreadable, ignored: %s", obj["Key"], exc)
        return found
