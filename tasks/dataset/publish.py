"""Publishing the dataset: four Delta Lake tables in the bucket, updated by session, incrementally.

Why Delta Lake (through ``deltalake``, delta-rs: no Spark, no JVM): each publish is one atomic
commit per table, so a reader never sees half of one; a session's rows are replaced (delete and
insert in the same commit), never duplicated; old versions stay readable until vacuumed; and every
common reader (pyarrow, pandas, polars, DuckDB, Spark, Hugging Face ``datasets`` through pandas)
reads it without this project. Commits are conditional S3 writes (``If-None-Match``), so two
publishers at once both land, or one finds the other's commit and is retried.

What a publish costs: the changed sessions are known from the markers in ``state/unpublished/``
(see :mod:`tasks.dataset.unpublished`), their inputs are read (up to four small objects each), and each
table rewrites only the partitions (:func:`~tasks.dataset.tables.bucket_of`) that hold them. A full
rebuild from every record (``publish --full``, and the first publish into an empty prefix) reads
everything, as the single-file table used to on every run.

Correctness under concurrency: a publish snapshots the tables *before* reading the records, and
commits against that snapshot. A publish that read older records than another's commit therefore
conflicts with it (delta-rs detects rows added or removed under its predicate since its snapshot)
and starts again from a fresh snapshot, so stale rows can never overwrite newer ones.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow as pa
from deltalake import DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from tasks.dataset import unpublished
from tasks.dataset.rows import SessionInputs, session_rows
from tasks.dataset.tables import TABLES, TableSpec, bucket_of
from tasks.storage.layout import BucketLayout
from tasks.storage.records import RecordStore, SessionRecord, utcnow

log = logging.getLogger("ut_pipeline.dataset")

BATCH_SESSIONS = 2000  # changed sessions per commit: bounds memory and the predicate's size
COMMIT_ATTEMPTS = 6
READ_WORKERS = 16
WRITER = WriterProperties(compression="ZSTD")


def storage_options() -> dict[str, str]:
    """delta-rs's S3 settings. It does not use boto3 but reads the same ``AWS_*`` variables itself
    (keys, session token, region, profile); only the endpoint of an S3-compatible server needs
    passing, and plain-HTTP endpoints (a local server) need allowing. ``conditional_put=etag``
    makes every commit a ``PutObject`` with ``If-None-Match: *``: atomic on S3 since 2024 and on
    MinIO, so no DynamoDB lock and never the unsafe-rename mode."""
    options = {"conditional_put": "etag"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    return options


@dataclass
class PublishReport:
    """What one publish did (it goes into the run summary)."""

    mode: str
    sessions: int = 0
    markers_settled: int = 0
    commits: int = 0
    retries: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "sessions": self.sessions,
            "markers_settled": self.markers_settled,
            "commits": self.commits,
            "retries": self.retries,
            "rows_written": self.rows,
            "versions": self.versions,
            "seconds": round(self.seconds, 3),
        }


class Dataset:
    """The four tables under ``{prefix}dataset/`` and how to publish changed sessions into them."""

    def __init__(self, s3: Any, bucket: str, layout: BucketLayout, *, speech_window: float = 5.0) -> None:
        self.s3, self.bucket, self.layout, self.speech_window = s3, bucket, layout, speech_window
        self.records = RecordStore(s3, bucket, layout)
        self.options = storage_options()

    def uri(self, spec: TableSpec) -> str:
        return f"s3://{self.bucket}/{self.layout.dataset_table(spec.name)}".rstrip("/")

    def table(self, spec: TableSpec) -> DeltaTable | None:
        """The table at its latest version, or ``None`` before the first publish."""
        try:
            return DeltaTable(self.uri(spec), storage_options=self.options)
        except TableNotFoundError:
            return None

    def publish(self, *, full: bool = False) -> PublishReport:
        """Publish the sessions whose records changed (every session when ``full`` or on first use)."""
        began = time.monotonic()
        # Each table is loaded once, before anything is read: the snapshot the commits are checked against.
        tables = {spec.name: self.table(spec) for spec in TABLES}
        markers = unpublished.pending(self.s3, self.bucket, self.layout)
        full = full or any(table is None for table in tables.values())
        report = PublishReport("full" if full else "incremental")
        changed = sorted({m.session_id for m in markers}, key=str)
        if full:
            listed = list(session_ids(self.s3, self.bucket, self.layout))
            published = self._commit(sorted(set(listed) | set(changed), key=str), None, tables, report)
            self._finish_rebuild(tables)
        else:
            published = self._commit(changed, _predicate(changed), tables, report) if changed else {}
        settled = unpublished.covered(markers, published, utcnow())
        unpublished.delete(self.s3, self.bucket, settled)
        report.sessions = sum(1 for stamp in published.values() if stamp is not None)
        report.markers_settled = len(settled)
        report.versions = {name: table.version() for name, table in tables.items() if table is not None}
        report.seconds = time.monotonic() - began
        return report

    def compact(self, retention_hours: float) -> dict[str, Any]:
        """Merge each partition's small files, then delete files no version younger than
        ``retention_hours`` reads: time travel reaches back that far, and no further."""
        done: dict[str, Any] = {}
        for spec in TABLES:
            table = self.table(spec)
            if table is None:
                continue
            metrics = table.optimize.compact(writer_properties=WRITER)
            removed = table.vacuum(
                retention_hours=int(retention_hours), enforce_retention_duration=False, dry_run=False
            )
            table.create_checkpoint()
            table.cleanup_metadata()
            done[spec.name] = {
                "files_added": metrics.get("numFilesAdded", 0),
                "files_removed": metrics.get("numFilesRemoved", 0),
                "files_vacuumed": len(removed),
                "version": table.version(),
            }
        return done

    # -- publishing ---------------------------------------------------------------------------

    def _commit(
        self,
        ids: list[UUID],
        predicate: str | None,
        tables: dict[str, DeltaTable | None],
        report: PublishReport,
    ) -> dict[UUID, datetime | None]:
        """Replace these sessions' rows (every row when ``predicate`` is None): one commit per table,
        a table whose commit conflicts with another publisher's is snapshotted, read and written again.

        ``tables`` holds the snapshots loaded before anything was read; each is left at the version
        its commit made. Returns the ``updated_at`` published per session (the oldest, if a retry
        read a newer one)."""
        published: dict[UUID, datetime | None] = {}
        remaining = list(TABLES)
        for attempt in range(COMMIT_ATTEMPTS):
            if attempt:  # snapshots again, before reading again: see the module's doc
                tables.update({spec.name: self.table(spec) for spec in remaining})
            conflicts = []
            with tempfile.TemporaryDirectory(prefix="ut-dataset-") as scratch:
                stamps, rows = self._stage(ids, remaining, Path(scratch))
                for spec in list(remaining):
                    with pa.ipc.open_stream(Path(scratch) / spec.name) as data:
                        try:
                            tables[spec.name] = self._write(spec, tables[spec.name], data, predicate)
                        except CommitFailedError as exc:
                            conflicts.append(f"{spec.name}: {exc}")
                            continue
                    report.commits += 1
                    report.rows[spec.name] = rows[spec.name]
                    remaining.remove(spec)
            for sid, stamp in stamps.items():
                previous = published.get(sid, stamp)
                published[sid] = min(previous, stamp) if previous and stamp else None
            if not remaining:
                return published
            report.retries += 1
            log.info("dataset: changed under this publish, reading again: %s", "; ".join(conflicts))
            time.sleep(min(0.2 * 2**attempt, 5.0))
        raise RuntimeError(f"dataset: gave up after {COMMIT_ATTEMPTS} conflicting commits: {remaining}")

    def _stage(
        self, ids: list[UUID], specs: list[TableSpec], scratch: Path
    ) -> tuple[dict[UUID, datetime | None], dict[str, int]]:
        """Read the sessions' inputs a batch at a time into one compressed Arrow stream per table on
        scratch disk: a full rebuild holds one batch of rows in memory, not the dataset, and every
        input is read once for the four tables. Returns the ``updated_at`` read per session, and
        the rows staged per table."""
        stamps: dict[UUID, datetime | None] = {}
        rows = {spec.name: 0 for spec in specs}
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        writers = {
            spec.name: pa.ipc.new_stream(scratch / spec.name, spec.schema, options=options) for spec in specs
        }
        try:
            for start in range(0, len(ids), BATCH_SESSIONS):
                batch = ids[start : start + BATCH_SESSIONS]
                inputs = self._read_inputs(batch)
                stamps.update(
                    {sid: i.record.updated_at if i else None for sid, i in zip(batch, inputs, strict=True)}
                )
                tables = _tables_for([i for i in inputs if i is not None], self.speech_window)
                for spec in specs:
                    writers[spec.name].write_table(tables[spec.name])
                    rows[spec.name] += tables[spec.name].num_rows
        finally:
            for writer in writers.values():
                writer.close()
        return stamps, rows

    def _write(
        self, spec: TableSpec, snapshot: DeltaTable | None, data: pa.RecordBatchReader, predicate: str | None
    ) -> DeltaTable:
        """Commit the staged rows; returns the table at the version this commit made."""
        if snapshot is None:  # the first publish creates the table
            write_deltalake(
                self.uri(spec),
                data,
                mode="overwrite",
                schema_mode="merge",
                partition_by=["bucket"],
                name=spec.name,
                description=spec.description,
                storage_options=self.options,
                writer_properties=WRITER,
            )
            created = self.table(spec)
            assert created is not None
            return created
        write_deltalake(
            snapshot,
            data,
            mode="overwrite",
            predicate=predicate,
            schema_mode="merge",
            writer_properties=WRITER,
        )
        return snapshot

    def _finish_rebuild(self, tables: dict[str, DeltaTable | None]) -> None:
        """After a full rebuild: the schema version in each description (a table made by an older
        version keeps its own), a checkpoint so loading a table does not parse every file's log
        entry, and the single-file table of earlier versions removed (README: migration)."""
        for spec in TABLES:
            table = tables[spec.name]
            assert table is not None
            if table.metadata().description != spec.description:
                table.alter.set_table_description(spec.description)
            table.create_checkpoint()
        self.s3.delete_object(Bucket=self.bucket, Key=self.layout.legacy_sessions_parquet())

    # -- reading the records --------------------------------------------------------------------

    def _read_inputs(self, session_ids: list[UUID]) -> list[SessionInputs | None]:
        with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
            return list(pool.map(self._inputs, session_ids))

    def _inputs(self, session_id: UUID) -> SessionInputs | None:
        """The session's record and the JSON beside its video; ``None`` when it has no record."""
        record, _ = self.records.get(session_id)
        if record is None:
            return None
        details = record.task_details
        return SessionInputs(
            record=record,
            transcript=self._json(record.transcript.json_key) if record.transcript else None,
            frames=self._json(record.frames.index_key) if record.frames else None,
            tasks=self._json(details.key) if details and details.key else None,
        )

    def _json(self, key: str) -> Any:
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            log.warning("dataset: %s is named by its record but missing; published without it", key)
            return None


def session_ids(s3: Any, bucket: str, layout: BucketLayout) -> Iterator[UUID]:
    """Every session folder in the bucket, listed by prefix (one request per 1,000 sessions)."""
    root = layout.sessions_root()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            try:
                yield UUID(common["Prefix"][len(root) :].rstrip("/"))
            except ValueError:
                continue


def all_records(store: RecordStore, workers: int = READ_WORKERS) -> Iterator[SessionRecord]:
    """Every ``session.json`` under the prefix, read in parallel."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for record, _ in pool.map(store.get, list(session_ids(store.s3, store.bucket, store.layout))):
            if record is not None:
                yield record


def _tables_for(inputs: list[SessionInputs], speech_window: float) -> dict[str, pa.Table]:
    rows: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in TABLES}
    for found in sorted(inputs, key=lambda i: str(i.record.session_id)):
        for name, table_rows in session_rows(found, speech_window).items():
            rows[name] += table_rows
    return {spec.name: pa.Table.from_pylist(rows[spec.name], schema=spec.schema) for spec in TABLES}


def _predicate(session_ids: list[UUID]) -> str:
    """The rows of these sessions; the bucket term lets delta-rs skip every other partition.
    Only UUIDs and hex digits reach the SQL text."""
    buckets = sorted({bucket_of(s) for s in session_ids})
    ids = ", ".join(f"'{UUID(str(s))}'" for s in session_ids)
    return f"bucket IN ({', '.join(repr(b) for b in buckets)}) AND session_id IN ({ids})"
