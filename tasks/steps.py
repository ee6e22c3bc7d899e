"""Prefect tasks: thin wrappers that give the plain functions a run log, retries and a place in the UI.

Inputs are plain data (ids, session summaries, flags), so any worker can run any task. Clients
are built once per worker process from the settings (:func:`runtime`), not shipped with the task.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError

from tasks import dataset
from tasks.http import new_client
from tasks.ingest import Ingestor
from tasks.layout import BucketLayout
from tasks.models import SessionSummary
from tasks.outcome import Outcome
from tasks.process import FrameOptions, Processor
from tasks.records import RecordStore, Stage
from tasks.redact import redact
from tasks.results_api import ResultsApiClient, open_client
from tasks.settings import Settings, load_settings
from tasks.storage import s3_client
from tasks.transcribe import Transcriber, load_transcriber
from tasks.transfer import MIB
from tasks.watermarks import WatermarkStore


@dataclass
class Runtime:
    """The clients one worker process shares across its tasks."""

    settings: Settings
    client: ResultsApiClient
    s3: Any
    bucket: str
    layout: BucketLayout
    ingestor: Ingestor
    processor: Processor
    watermarks: WatermarkStore


_runtimes: dict[str, Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's clients for the current settings (built on first use, then reused)."""
    settings = load_settings()
    key = settings.model_dump_json()
    with _runtimes_lock:
        if key not in _runtimes:
            s3 = s3_client(max_pool_connections=4 * settings.download_concurrency + 8)
            bucket = settings.require_bucket()
            layout = BucketLayout(settings.work_prefix)
            client = open_client(settings, s3=s3)
            ingestor = Ingestor(
                client,
                s3,
                bucket,
                layout,
                new_client(
                    timeout_seconds=settings.http_timeout_seconds,
                    max_connections=settings.download_concurrency,
                ),
                part_size=settings.part_size_mib * MIB,
                lease_seconds=settings.session_lease_seconds,
                vendor_transcripts=settings.vendor_transcripts,
                progress=_TransferLog().update,
            )
            processor = Processor(
                s3,
                bucket,
                layout,
                FrameOptions(
                    settings.frame_rate,
                    settings.scene_threshold,
                    settings.ffmpeg_path,
                    settings.media_max_loss,
                ),
                transcriber=lambda: _transcriber(settings),
                progress=_TranscriptionLog().update,
            )
            watermarks = WatermarkStore(s3, bucket, layout)
            _runtimes[key] = Runtime(settings, client, s3, bucket, layout, ingestor, processor, watermarks)
        return _runtimes[key]


def _transcriber(settings: Settings) -> Transcriber:
    """The Whisper model, loaded on first use in this process (not at start-up) and then kept."""
    return load_transcriber(
        settings.whisper_backend,
        settings.whisper_model,
        settings.whisper_device,
        settings.whisper_compute_type,
        settings.whisper_vad,
    )


def _progress_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger inside a task; the plain pipeline logger outside one. A progress line must
    never be what fails a transfer or a transcription."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("ut_pipeline.progress")


class _TransferLog:
    """Logs long transfers every few seconds (percent and MB/s), not every chunk."""

    every_seconds = 5.0

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def update(self, session_id: str, received: int, total: int | None) -> None:
        now = time.monotonic()
        last_time, last_bytes = self._last.setdefault(session_id, (now, 0))
        if now - last_time < self.every_seconds and (total is None or received < total):
            return
        self._last[session_id] = (now, received)
        rate = (received - last_bytes) / max(now - last_time, 1e-6) / 1e6
        share = f"{100 * received / total:.0f}%" if total else f"{received / 1e6:.0f} MB"
        _progress_logger().info("session %s: %s transferred, %.1f MB/s", session_id, share, rate)
        if total is not None and received >= total:
            self._last.pop(session_id, None)


def _logged(outcome: Outcome) -> Outcome:
    """Each session's decision in the run log: errors for failures, so they stand out in the UI."""
    if outcome.status == "failed":
        get_run_logger().error("session %s: %s failed: %s", outcome.session_id, outcome.stage, outcome.reason)
    else:
        get_run_logger().info("session %s: %s (%s)", outcome.session_id, outcome.status, outcome.reason)
    return outcome


@task(name="enumerate-sessions", task_run_name="enumerate {test_id}")
def enumerate_sessions(test_id: UUID, since: datetime | None, until: datetime | None) -> list[SessionSummary]:
    """The test's completed sessions finished in ``[since, until)``."""
    sessions = list(runtime().client.completed_sessions(test_id, since, until))
    get_run_logger().info(
        "test %s: %d completed sessions finished in [%s, %s)",
        test_id,
        len(sessions),
        since.isoformat() if since else "the beginning",
        until.isoformat() if until else "now",
    )
    return sessions


@task(name="ingest-session", task_run_name="ingest {session.session_id}")
def ingest_session(session: SessionSummary, test_id: UUID, run_id: str, force: bool) -> Outcome:
    """Stream one session's video into the work bucket and record the outcome in ``session.json``."""
    return _logged(runtime().ingestor.ingest(session, test_id, run_id, force=force))


class _TranscriptionLog:
    """Logs long transcriptions every few seconds with their real-time factor (audio s per compute s)."""

    every_seconds = 5.0

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def update(self, session_id: str, done: float, total: float, elapsed: float) -> None:
        now = time.monotonic()
        if now - self._last.get(session_id, 0.0) < self.every_seconds and done < total:
            return
        self._last[session_id] = now
        _progress_logger().info(
            "session %s: transcribed %.0f of %.0f s of audio (%.1fx real time)",
            session_id,
            done,
            total,
            done / max(elapsed, 1e-3),
        )
        if done >= total:
            self._last.pop(session_id, None)


@task(name="process-session", task_run_name="process {session_id}")
def process_session(session_id: UUID, run_id: str, stages: list[Stage], force: bool) -> Outcome:
    """Transcribe and extract frames for one ingested session, from the bucket into the bucket."""
    return _logged(runtime().processor.process(session_id, run_id, set(stages), force=force))


@task(name="publish-dataset")
def publish_dataset() -> dict[str, Any]:
    """Rebuild the Parquet table from every session record."""
    rt = runtime()
    key, rows = dataset.publish(rt.s3, rt.bucket, rt.layout)
    get_run_logger().info("dataset s3://%s/%s: %d sessions", rt.bucket, key, rows)
    return {"key": key, "rows": rows}


@task(name="sessions-in-bucket")
def sessions_in_bucket(test_ids: list[UUID], session_ids: list[UUID]) -> list[tuple[UUID, str | None]]:
    """Ingested sessions (with their test), chosen by id and/or test, read from the records: no API call."""
    rt = runtime()
    store = RecordStore(rt.s3, rt.bucket, rt.layout)
    tests, wanted = {str(t) for t in test_ids}, set(session_ids)
    if wanted and not tests:  # named sessions: read just their records
        records = [r for r in (store.get(s)[0] for s in dict.fromkeys(session_ids)) if r is not None]
    else:
        records = list(dataset.all_records(store))
    return [
        (r.session_id, str(r.test_id) if r.test_id else None)
        for r in records
        if r.has_video and (not tests or str(r.test_id) in tests) and (not wanted or r.session_id in wanted)
    ]


@task(name="record-run")
def record_run(run_id: str, summary: dict[str, Any], api_calls_jsonl: str) -> dict[str, str]:
    """The run's summary and API action log, next to the data it describes."""
    rt = runtime()
    keys = {
        "summary": rt.layout.run_file(run_id, "summary.json"),
        "api_calls": rt.layout.run_file(run_id, "api-calls.jsonl"),
    }
    rt.s3.put_object(
        Bucket=rt.bucket,
        Key=keys["summary"],
        Body=redact(json.dumps(summary, indent=2, default=str)).encode(),
        ContentType="application/json",
    )
    rt.s3.put_object(
        Bucket=rt.bucket,
        Key=keys["api_calls"],
        Body=api_calls_jsonl.encode(),
        ContentType="application/x-ndjson",
    )
    return keys


@task(name="read-watermark")
def read_watermark(test_id: UUID) -> datetime | None:
    return runtime().watermarks.get(test_id)


@task(name="advance-watermark")
def advance_watermark(test_id: UUID, until: datetime, run_id: str) -> None:
    runtime().watermarks.advance(test_id, until, run_id)
    get_run_logger().info("test %s: watermark advanced to %s", test_id, until.isoformat())
