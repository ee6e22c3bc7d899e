"""A session's tasks and their timings, from the Results API's v3 session details, kept as ``tasks.json``.

The dataset aligns what was said and shown with the task the participant was doing; only the v3
details (``tasks[]``: prompt, type, start and end in ms from the session's start, skipped, answer)
say when each task ran. It costs one more rate-limited call per session, hence the setting
``UT_SESSION_DETAILS``. Only the tasks are stored: the participant's demographics in the same answer
are personal data the dataset has no use for.

Fetching happens after the video is in, and a failure never fails the video: it is recorded in
``session.json`` (``task_details.error``) and the next run that meets the session asks again.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

from tasks.api.client import ApiError, ResultsApiClient
from tasks.api.models import NotFound
from tasks.redact import redact
from tasks.storage.layout import BucketLayout
from tasks.storage.records import TaskDetailsInfo, utcnow

log = logging.getLogger("ut_pipeline.ingest")

TASKS_FILE = "tasks.json"


def fetch_task_details(
    client: ResultsApiClient, s3: Any, bucket: str, layout: BucketLayout, session_id: UUID
) -> TaskDetailsInfo:
    """Ask for the session's details, store its tasks beside the video and say what happened."""
    try:
        details = client.session_details(session_id)
    except ApiError as exc:
        message = redact(str(exc))
        log.warning("session %s: task details not fetched: %s", session_id, message)
        return TaskDetailsInfo(error=message)
    if isinstance(details, NotFound):
        return TaskDetailsInfo()
    key = layout.session_file(session_id, TASKS_FILE)
    body = {
        "session_id": str(session_id),
        "test_plan_id": str(details.test_plan_id) if details.test_plan_id else None,
        "fetched_at": utcnow().isoformat(),
        "tasks": details.tasks,
    }
    s3.put_object(
        Bucket=bucket, Key=key, Body=json.dumps(body, indent=2).encode(), ContentType="application/json"
    )
    return TaskDetailsInfo(key=key, count=len(details.tasks))


def needs_task_details(info: TaskDetailsInfo | None) -> bool:
    """Whether a session still lacks its tasks: never asked, or the last call failed."""
    return info is None or info.error is not None
