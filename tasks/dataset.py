"""The ML-ready table: one Parquet row per session, rebuilt from the ``session.json`` records.

The records are the source of truth; the table is derived from all of them at once and written as
one object (``{prefix}dataset/sessions.parquet``), so a rerun replaces rows instead of appending
them and a reader never sees half a publish. It reads straight from S3 with pyarrow, pandas or
DuckDB. The schema is fixed here (and documented in the README) so an empty or partial run still
produces the same columns.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.layout import BucketLayout
from tasks.records import RecordStore, SessionRecord

SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("test_id", pa.string()),
        ("start_time", pa.timestamp("us", tz="UTC")),
        ("finish_time", pa.timestamp("us", tz="UTC")),
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
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)


def record_row(record: SessionRecord) -> dict[str, Any]:
    """One session's row; columns a session does not have yet are null."""
    video, media, transcript, frames = record.video, record.media, record.transcript, record.frames
    api = record.api
    return {
        "session_id": str(record.session_id),
        "test_id": str(record.test_id) if record.test_id else None,
        "start_time": api.get("startTime"),
        "finish_time": api.get("finishTime"),
        "status": record.status.value,
        "error_stage": record.error.stage if record.error else None,
        "error_message": record.error.message if record.error else None,
        "video_key": video.key if video else None,
        "video_bytes": video.bytes if video else None,
        "video_sha256": video.sha256 if video else None,
        "duration_s": media.duration if media else None,
        "width": media.width if media else None,
        "height": media.height if media else None,
        "fps": media.fps if media else None,
        "video_codec": media.video_codec if media else None,
        "audio_codec": media.audio_codec if media else None,
        "transcript_text": transcript.text if transcript else None,
        "transcript_language": transcript.language if transcript else None,
        "transcript_model": transcript.model if transcript else None,
        "transcript_backend": transcript.backend if transcript else None,
        "transcript_key": transcript.json_key if transcript else None,
        "vendor_transcript_key": record.vendor_transcript_key,
        "frame_count": frames.count if frames else None,
        "frames_prefix": frames.prefix if frames else None,
        "frames_index_key": frames.index_key if frames else None,
        "updated_at": record.updated_at,
    }


def build_table(records: Iterable[SessionRecord]) -> pa.Table:
    """The table for these records, one row per session id (the latest record wins), sorted by id."""
    latest: dict[str, SessionRecord] = {}
    for record in records:
        key = str(record.session_id)
        if key not in latest or record.updated_at >= latest[key].updated_at:
            latest[key] = record
    rows = [record_row(latest[k]) for k in sorted(latest)]
    columns = {field.name: [row[field.name] for row in rows] for field in SCHEMA}
    for name in ("start_time", "finish_time"):
        columns[name] = [_timestamp(v) for v in columns[name]]
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def all_records(store: RecordStore, workers: int = 16) -> Iterator[SessionRecord]:
    """Every ``session.json`` under the prefix, read in parallel."""
    keys = [
        obj["Key"]
        for page in store.s3.get_paginator("list_objects_v2").paginate(
            Bucket=store.bucket, Prefix=store.layout.sessions_root()
        )
        for obj in page.get("Contents", [])
        if obj["Key"].endswith("/session.json")
    ]

    def read(key: str) -> SessionRecord:
        body = store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()
        return SessionRecord.model_validate_json(body)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(read, keys)


def publish(s3: Any, bucket: str, layout: BucketLayout) -> tuple[str, int]:
    """Rebuild the table from every record and replace the published object; returns (key, rows)."""
    table = build_table(all_records(RecordStore(s3, bucket, layout)))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    key = layout.dataset_table()
    s3.put_object(
        Bucket=bucket, Key=key, Body=buffer.getvalue(), ContentType="application/vnd.apache.parquet"
    )
    return key, table.num_rows


def _timestamp(value: Any) -> Any:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
