"""Prefect tasks: thin wrappers that give the plain functions a run log, retries and a place in the UI.

Inputs are plain data (ids, session summaries, flags), so any worker can run any task. Clients
are built once per worker process from the settings (:func:`runtime`), not shipped with the task.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.exceptions import MissingContextError

from tasks.api.client import ApiCall, ListProblem, ResultsApiClient, open_client
from tasks.api.http import new_client
from tasks.api.models import SessionSummary
from tasks.dataset import publish as dataset
from tasks.errors import describe
from tasks.ingest import Ingestor
from tasks.media.scratch import ScratchSpace
from tasks.media.transcribe import Transcriber, auto_process_concurrency, load_transcriber, session_threads
from tasks.outcome import Outcome
from tasks.process import FrameOptions, Processor
from tasks.redact import redact
from tasks.settings import Settings, load_settings
from tasks.storage.late_videos import LateVideo, LateVideos
from tasks.storage.layout import BucketLayout
from tasks.storage.records import RecordStore, Stage
from tasks.storage.s3 import preflight, s3_client
from tasks.storage.transfer import MIB
from tasks.storage.watermarks import WatermarkStore


@dataclass
class Runtime:
    """The clients one worker process shares across its tasks.

    The Results API client, and the ingestor that uses it, are built on first use: processing
    workers, ``reprocess`` and ``publish`` make no API call, so they need no API credentials (and a
    GPU machine is not handed a client secret it never uses).
    """

    settings: Settings
    s3: Any
    bucket: str
    layout: BucketLayout
    processor: Processor
    watermarks: WatermarkStore
    scratch: ScratchSpace
    process_concurrency: int  # UT_PROCESS_CONCURRENCY, with "auto" resolved for this machine
    api_observers: list[Callable[[ApiCall], None]] = field(default_factory=list)  # the client's, once built
    _client: ResultsApiClient | None = field(default=None, repr=False)
    _ingestor: Ingestor | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def client(self) -> ResultsApiClient:
        """The Results API client; raises ``ConfigError`` when no credentials are set."""
        with self._lock:
            if self._client is None:
                self._client = open_client(self.settings, s3=self.s3)
                self._client.observers = self.api_observers
            return self._client

    @property
    def ingestor(self) -> Ingestor:
        client = self.client
        with self._lock:
            if self._ingestor is None:
                self._ingestor = _build_ingestor(self.settings, client, self.s3, self.bucket, self.layout)
            return self._ingestor


log = logging.getLogger("ut_pipeline.steps")

_runtimes: dict[str, Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's clients for the current settings (built on first use, then reused)."""
    settings = load_settings()
    key = settings.model_dump_json()
    with _runtimes_lock:
        if key not in _runtimes:
            s3 = s3_client(
                max_pool_connections=4 * settings.download_concurrency + 8,
                max_attempts=settings.s3_max_attempts,
            )
            bucket = settings.require_bucket()
            layout = BucketLayout(settings.work_prefix)
            scratch = ScratchSpace(settings.scratch_dir)
            concurrency = (
                auto_process_concurrency()
                if settings.process_concurrency == "auto"
                else settings.process_concurrency
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
                transcriber=lambda: _transcriber(settings, concurrency),
                progress=_TranscriptionLog().update,
                scratch=scratch,
                lease_seconds=settings.session_lease_seconds,
                run_finished=prefect_run_finished,
                worker_name=settings.worker_name,
            )
            watermarks = WatermarkStore(s3, bucket, layout)
            _runtimes[key] = Runtime(
                settings, s3, bucket, layout, processor, watermarks, scratch, concurrency
            )
        return _runtimes[key]


def _build_ingestor(
    settings: Settings, client: ResultsApiClient, s3: Any, bucket: str, layout: BucketLayout
) -> Ingestor:
    return Ingestor(
        client,
        s3,
        bucket,
        layout,
        new_client(
            timeout_seconds=settings.http_timeout_seconds, max_connections=settings.download_concurrency
        ),
        part_size=settings.part_size_mib * MIB,
        lease_seconds=settings.session_lease_seconds,
        late_video_grace=timedelta(hours=settings.late_video_grace_hours),
        vendor_transcripts=settings.vendor_transcripts,
        progress=_TransferLog().update,
        run_finished=prefect_run_finished,
        session_details=settings.session_details,
    )


def prefect_run_finished(run_id: str) -> bool:
    """Whether Prefect reports flow run ``run_id`` as over (completed, failed, crashed, cancelled).

    A lease whose run is over is taken over at once. Anything uncertain (no such run, no API) is
    "not known to be over": the lease's own expiry then decides.
    """
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(run_id)).state
    except Exception:
        logging.getLogger("ut_pipeline.records").debug(
            "cannot ask Prefect about run %s", run_id, exc_info=True
        )
        return False
    return state is not None and state.is_final()


def _transcriber(settings: Settings, concurrency: int) -> Transcriber:
    """The Whisper model, loaded on first use in this process (not at start-up) and then kept. With
    several sessions at once, as many model workers, the cores split between them."""
    parallel = (
        {"workers": concurrency, "cpu_threads": session_threads(concurrency)} if concurrency > 1 else {}
    )
    return load_transcriber(
        settings.whisper_backend,
        settings.whisper_model,
        settings.whisper_device,
        settings.whisper_compute_type,
        settings.whisper_vad,
        language=settings.whisper_language,
        batch_size=settings.whisper_batch_size,
        **parallel,
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


def _logged(stage: str, session_id: UUID, test_id: UUID | str | None, work: Callable[[], Outcome]) -> Outcome:
    """Run one session's stage and log its decision in one line: errors for failures, warnings for
    sessions held by another run, so they stand out. Whatever ``work`` raises becomes a failed
    outcome with the cause in words (the traceback goes to the debug log): a task never fails."""
    logger = get_run_logger()
    try:
        outcome = work()
    except Exception as exc:
        log.debug("session %s: %s crashed", session_id, stage, exc_info=True)
        outcome = Outcome(
            str(session_id), str(test_id) if test_id else None, "failed", describe(exc), stage=stage
        )
    if outcome.status == "failed":
        logger.error("session %s: %s failed: %s", outcome.session_id, outcome.stage, outcome.reason)
    elif outcome.status == "held":
        logger.warning("session %s: %s waits: %s", outcome.session_id, outcome.stage, outcome.reason)
    else:
        logger.info("session %s: %s (%s)", outcome.session_id, outcome.status, outcome.reason)
    return outcome


@dataclass
class Listing:
    """A test's completed sessions in a window, and what in the list could not be used."""

    test_id: UUID
    sessions: list[SessionSummary] = field(default_factory=list)
    problems: list[ListProblem] = field(default_factory=list)


@task(name="check-storage")
def check_storage() -> None:
    """The work bucket answers and exists, before the run spends any API call (see ``preflight``)."""
    preflight(load_settings().require_bucket())


@task(name="enumerate-sessions", task_run_name="enumerate {test_id}")
def enumerate_sessions(test_id: UUID, since: datetime | None, until: datetime | None) -> Listing:
    """The test's completed sessions finished in ``[since, until)``; malformed items are reported."""
    logger = get_run_logger()
    listing = Listing(test_id)

    def on_problem(problem: ListProblem) -> None:
        logger.error("%s", problem)
        listing.problems.append(problem)

    listing.sessions = list(runtime().client.completed_sessions(test_id, since, until, on_problem=on_problem))
    logger.info(
        "test %s: %d completed sessions finished in [%s, %s)%s",
        test_id,
        len(listing.sessions),
        since.isoformat() if since else "the beginning",
        until.isoformat() if until else "now",
        f", {len(listing.problems)} list item(s) unusable" if listing.problems else "",
    )
    return listing


@task(name="late-videos")
def late_videos() -> list[LateVideo]:
    """Sessions whose video was not ready when last asked (see ``tasks/storage/late_videos.py``)."""
    rt = runtime()
    return LateVideos(rt.s3, rt.bucket, rt.layout).pending()


@task(name="ingest-session", task_run_name="ingest {session.session_id}")
def ingest_session(session: SessionSummary, test_id: UUID, run_id: str, force: bool) -> Outcome:
    """Stream one session's video into the work bucket and record the outcome in ``session.json``."""
    return _logged(
        "ingest",
        session.session_id,
        test_id,
        lambda: runtime().ingestor.ingest(session, test_id, run_id, force=force),
    )


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
    return _logged(
        "process",
        session_id,
        None,
        lambda: runtime().processor.process(session_id, run_id, set(stages), force=force),
    )


@task(name="publish-dataset")
def publish_dataset(full: bool = False) -> dict[str, Any]:
    """Publish the sessions whose records changed into the dataset's Delta tables (all of them if ``full``)."""
    rt = runtime()
    report = _dataset().publish(full=full)
    get_run_logger().info(
        "dataset s3://%s/%sdataset/: %s publish of %d sessions in %d commits (%d retried), versions %s",
        rt.bucket,
        rt.layout.prefix,
        report.mode,
        report.sessions,
        report.commits,
        report.retries,
        report.versions,
    )
    return report.as_dict()


@task(name="compact-dataset")
def compact_dataset() -> dict[str, Any]:
    """Merge the dataset's small files and delete the files of versions older than the retention."""
    done = _dataset().compact(runtime().settings.dataset_retention_hours)
    get_run_logger().info("dataset compacted: %s", done)
    return done


def _dataset() -> dataset.Dataset:
    rt = runtime()
    return dataset.Dataset(
        rt.s3, rt.bucket, rt.layout, speech_window=rt.settings.dataset_speech_window_seconds
    )


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
