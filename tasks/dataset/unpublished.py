"""Which sessions changed since the dataset was last published: one small marker object per settled change.

Why markers, and not the list of sessions a run touched: a run killed between writing a record and
publishing must not lose the change, and a nightly run and a backfill settle sessions at the same
time. Whenever a record reaches a settled state (no lease), :meth:`RecordStore.put` first writes an
empty object ``state/unpublished/{session_id}/{stamp}``, the stamp being the ``updated_at`` of the
record it is about to write, and then the record. Publishing lists the markers (one LIST request
per 1,000 changes, whatever the size of the dataset), reads those sessions' records, commits the
tables, and only then deletes the markers its commit covered: those stamped at or before the
``updated_at`` it published. So a change that lands while a publish is running keeps its marker for
the next publish, and a publish that fails deletes nothing.

Markers are never rewritten (each stamp is a new key), so no conditional write is needed. A marker
whose record write never landed (it lost a conditional write to another run) is dropped once it is
older than :data:`STALE_AFTER`, after its session's current state was published.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from tasks.storage.layout import BucketLayout

STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
STALE_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Marker:
    session_id: UUID
    stamp: datetime
    key: str


def stamp(moment: datetime) -> str:
    """The marker name for a record's ``updated_at``: UTC to the microsecond, sortable as text."""
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)


def mark(s3: Any, bucket: str, layout: BucketLayout, session_id: UUID, updated_at: datetime) -> None:
    """Announce a settled record change, before the record itself is written."""
    s3.put_object(Bucket=bucket, Key=layout.unpublished_marker(session_id, stamp(updated_at)), Body=b"")


def pending(s3: Any, bucket: str, layout: BucketLayout) -> list[Marker]:
    """Every marker in the bucket (keys that do not parse are left alone)."""
    root = layout.unpublished_root()
    markers = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root):
        for obj in page.get("Contents", []):
            session, _, name = obj["Key"][len(root) :].partition("/")
            try:
                markers.append(
                    Marker(
                        UUID(session), datetime.strptime(name, STAMP_FORMAT).replace(tzinfo=UTC), obj["Key"]
                    )
                )
            except ValueError:
                continue
    return markers


def covered(markers: list[Marker], published: dict[UUID, datetime | None], now: datetime) -> list[Marker]:
    """The markers a publish made obsolete.

    ``published`` maps each session to the ``updated_at`` of the record that was published, or
    ``None`` when the session has no record any more (its rows were removed).
    """
    done = []
    for marker in markers:
        if marker.session_id not in published:
            continue
        version = published[marker.session_id]
        if version is None or marker.stamp <= version or now - marker.stamp > STALE_AFTER:
            done.append(marker)
    return done


def delete(s3: Any, bucket: str, markers: list[Marker]) -> None:
    """Delete markers, 1,000 a request."""
    keys = [m.key for m in markers]
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
