"""The dataset's four tables: their names, versioned schemas and the one key scheme they share.

This is the contract with the teams that train on the dataset (the README documents every column).
Every table has ``session_id``; the child tables (``tasks``, ``segments``, ``frames``) add a
position within the session and the ``task_id`` their time falls in. Every table is partitioned by
``bucket``, the first two hex digits of the session id (256 buckets), so publishing a new session
adds a small file to one partition, and a changed one rewrites only the files of its partition
that hold it, never the whole table.

Schema rules, so a reader written against an older version keeps working: a new column is only
ever added (nullable, published with Delta's schema merge) and the version below goes up by one; no
column is renamed, retyped or removed. A change that cannot follow those rules gets new table names.
Times are seconds on the video's clock (the session's start is 0 s), in every table.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import pyarrow as pa

BUCKET_DIGITS = 2

UTC_TIME = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    name: str
    version: int
    schema: pa.Schema

    @property
    def description(self) -> str:
        """Stored as the Delta table's description: readers find the schema version there."""
        return (
            f'{{"producer": "ut-video-pipeline", "table": "{self.name}", "schema_version": {self.version}}}'
        )


def bucket_of(session_id: UUID | str) -> str:
    """The partition a session's rows live in, in every table."""
    return str(UUID(str(session_id))).replace("-", "")[:BUCKET_DIGITS]


_KEY = [("session_id", pa.string()), ("test_id", pa.string())]

SESSIONS = TableSpec(
    "sessions",
    1,
    pa.schema(
        [
            *_KEY,
            ("start_time", UTC_TIME),
            ("finish_time", UTC_TIME),
            ("status", pa.string()),
            ("error_stage", pa.string()),
            ("error_message", pa.string()),
            ("video_key", pa.string()),
            ("video_bytes", pa.int64()),
            ("video_sha256", pa.string()),
            ("duration_s", pa.float64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("fps", pa.float64()),
            ("video_codec", pa.string()),
            ("audio_codec", pa.string()),
            ("transcript_text", pa.string()),
            ("transcript_language", pa.string()),
            ("transcript_model", pa.string()),
            ("transcript_backend", pa.string()),
            ("transcript_key", pa.string()),
            ("vendor_transcript_key", pa.string()),
            ("frame_count", pa.int32()),
            ("frames_prefix", pa.string()),
            ("frames_index_key", pa.string()),
            ("updated_at", UTC_TIME),
            ("segment_count", pa.int32()),
            ("task_count", pa.int32()),
            ("bucket", pa.string()),
        ]
    ),
)

TASKS = TableSpec(
    "tasks",
    1,
    pa.schema(
        [
            *_KEY,
            ("task_index", pa.int32()),
            ("task_id", pa.string()),
            ("text", pa.string()),
            ("type", pa.string()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("skipped", pa.bool_()),
            ("answer", pa.string()),
            ("bucket", pa.string()),
        ]
    ),
)

WORD = pa.struct(
    [("word", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()), ("probability", pa.float64())]
)

SEGMENTS = TableSpec(
    "segments",
    1,
    pa.schema(
        [
            *_KEY,
            ("segment_index", pa.int32()),
            ("task_id", pa.string()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("text", pa.string()),
            ("words", pa.list_(WORD)),
            ("language", pa.string()),
            ("model", pa.string()),
            ("bucket", pa.string()),
        ]
    ),
)

FRAMES = TableSpec(
    "frames",
    1,
    pa.schema(
        [
            *_KEY,
            ("frame_index", pa.int32()),
            ("task_id", pa.string()),
            ("timestamp_s", pa.float64()),
            ("kind", pa.string()),
            ("key", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("speech_text", pa.string()),
            ("speech_window_s", pa.float64()),
            ("bucket", pa.string()),
        ]
    ),
)

TABLES = (SESSIONS, TASKS, SEGMENTS, FRAMES)
