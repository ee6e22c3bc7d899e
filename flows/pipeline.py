"""The pipeline's flows: enumerate completed sessions, fetch each link just in time, stream the videos
into the bucket, transcribe them and extract frames, and publish the dataset.

- ``nightly``: every test of ``UT_TEST_IDS`` (and the Results API tests of ``UT_WORKSPACE_IDS``),
  from each test's watermark, or a look-back on a first run, up to the run's start.
- ``backfill``: chosen tests, time range or sessions, with ``force``; its parameters are one pydantic
  model, so the Prefect UI renders a form for a custom run.
- ``reprocess``: chosen stages again for sessions already in the bucket (after a model change),
  without any API call.

Ingest and processing overlap: a session is handed to processing as soon as its video is in.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from tasks.models import SessionSummary
from tasks.outcome import Outcome
from tasks.records import Stage
from tasks.redact import redact_json
from tasks.results_api import ApiCall, ApiError
from tasks.runlog import ApiCallLog, configure_logging
from tasks.steps import (
    advance_watermark,
    compact_dataset,
    enumerate_sessions,
    ingest_session,
    process_session,
    publish_dataset,
    read_watermark,
    record_run,
    runtime,
    sessions_in_bucket,
)

PROCESSING_STAGES = [Stage.TRANSCRIBE, Stage.FRAMES]
ALL_STAGES = [Stage.INGEST, *PROCESSING_STAGES]
PROCESSING = set(PROCESSING_STAGES)


@dataclass
class RunReport:
    """What a run did per session and stage, as it happens: the summary, artifacts and exit code come from it.

    It also keeps the run's API action log (every Results API request made by this flow run) and the
    progress artifact that a long backfill keeps up to date in the UI.
    """

    run_id: str
    outcomes: list[Outcome] = field(default_factory=list)
    test_errors: dict[str, str] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    api_log: ApiCallLog = field(default_factory=ApiCallLog)
    expected: int = 0
    started: float = field(default_factory=time.monotonic)
    progress_id: UUID | None = None

    @classmethod
    def start(cls) -> RunReport:
        rt = runtime()
        configure_logging(rt.settings.log_format)
        report = cls(run_id=_run_id())
        rt.client.observers.append(report.observe)
        report.progress_id = create_progress_artifact(
            0.0, key="ut-run-progress", description="sessions handled"
        )
        return report

    def observe(self, call: ApiCall) -> None:
        """Client observer: keep this flow run's requests (the client is shared by the process)."""
        if str(flow_run.id or self.run_id) == self.run_id:
            self.api_log.append(call.as_dict())

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if self.progress_id and self.expected:
            done = min(99.0, 100.0 * len(self.outcomes) / self.expected)
            update_progress_artifact(
                self.progress_id, done, description=f"{len(self.outcomes)} of {self.expected}"
            )

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.timings[stage] = round(self.timings.get(stage, 0.0) + time.monotonic() - began, 3)

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for outcome in self.outcomes:
            counts[outcome.stage][outcome.status] += 1
        calls = self.api_log.calls
        return {
            "run_id": self.run_id,
            "sessions": len({o.session_id for o in self.outcomes}),
            "counts": {stage: dict(c) for stage, c in counts.items()},
            "bytes": sum(o.bytes for o in self.outcomes),
            "link_requests": sum(o.link_requests for o in self.outcomes),
            "audio_seconds": round(sum(o.audio_seconds for o in self.outcomes), 1),
            "frames": sum(o.frames for o in self.outcomes),
            "api_calls": len(calls),
            "api_429s": sum(1 for c in calls if c["status"] == 429),
            "wall_seconds": {**self.timings, "total": round(time.monotonic() - self.started, 3)},
            "failures": [
                {"session_id": o.session_id, "stage": o.stage, "reason": o.reason}
                for o in self.outcomes
                if o.status == "failed"
            ],
            "test_errors": self.test_errors,
            "dataset": self.dataset,
        }


def _run_id() -> str:
    return str(flow_run.id or uuid4())


def _crashed(future: PrefectFuture[Outcome], session_id: str, test_id: str | None, stage: str) -> Outcome:
    """The task's outcome, or a failed one if the task itself raised (a bug, S3 down)."""
    try:
        return future.result()
    except Exception as exc:
        get_run_logger().error("session %s: %s crashed: %s", session_id, stage, exc)
        return Outcome(session_id, test_id, "failed", f"crashed: {type(exc).__name__}: {exc}", stage=stage)


def enumerate_windows(
    windows: dict[UUID, tuple[datetime | None, datetime | None]], session_ids: list[UUID], report: RunReport
) -> list[tuple[UUID, SessionSummary]]:
    """The completed sessions of each test in its window (only ``session_ids`` if given)."""
    wanted = set(session_ids)
    with report.timed("enumerate"):
        work = _enumerate(windows, wanted, report)
    for missing in sorted(wanted - {s.session_id for _, s in work}, key=str):
        report.test_errors[f"session {missing}"] = "not among the completed sessions of the given tests"
    return work


def _enumerate(
    windows: dict[UUID, tuple[datetime | None, datetime | None]], wanted: set[UUID], report: RunReport
) -> list[tuple[UUID, SessionSummary]]:
    work: list[tuple[UUID, SessionSummary]] = []
    for test_id, (since, until) in windows.items():
        try:
            sessions = enumerate_sessions(test_id, since, until)
        except ApiError as exc:
            get_run_logger().error("test %s: cannot list sessions: %s", test_id, exc)
            report.test_errors[str(test_id)] = str(exc)
            continue
        work += [(test_id, s) for s in sessions if not wanted or s.session_id in wanted]
    return work


class _Processing:
    """Processing tasks submitted as sessions become ready, collected at the end."""

    def __init__(self, runner: ThreadPoolTaskRunner, stages: list[Stage], force: bool, run_id: str) -> None:
        self.runner, self.force, self.run_id = runner, force, run_id
        self.stages = [s for s in stages if s in PROCESSING]
        self.futures: list[tuple[PrefectFuture[Outcome], str, str | None]] = []
        self.first_submit: float | None = None

    def submit(self, session_id: UUID, test_id: str | None) -> None:
        if self.stages:
            self.first_submit = self.first_submit or time.monotonic()
            parameters = {
                "session_id": session_id,
                "run_id": self.run_id,
                "stages": self.stages,
                "force": self.force,
            }
            self.futures.append((self.runner.submit(process_session, parameters), str(session_id), test_id))

    def collect(self, report: RunReport) -> None:
        for future, session_id, test_id in self.futures:
            report.add(_crashed(future, session_id, test_id, "process"))
        if self.first_submit is not None:
            report.timings["process"] = round(time.monotonic() - self.first_submit, 3)


def ingest_and_process(
    work: list[tuple[UUID, SessionSummary]], stages: list[Stage], force: bool, report: RunReport
) -> None:
    """Stream each video in (a few at a time), handing each to processing the moment it is in."""
    settings = runtime().settings
    get_run_logger().info(
        "%d sessions; stages %s; %d downloads and %d processing at a time",
        len(work),
        ", ".join(stages),
        settings.download_concurrency,
        settings.process_concurrency,
    )
    with (
        ThreadPoolTaskRunner(max_workers=settings.download_concurrency) as downloads,
        ThreadPoolTaskRunner(max_workers=settings.process_concurrency) as processors,
    ):
        processing = _Processing(processors, stages, force, report.run_id)
        report.expected = len(work) * ((Stage.INGEST in stages) + bool(processing.stages))
        if Stage.INGEST not in stages:
            for test_id, session in work:
                processing.submit(session.session_id, str(test_id))
        else:
            began = time.monotonic()
            ingests = {
                downloads.submit(
                    ingest_session, {"session": s, "test_id": t, "run_id": processing.run_id, "force": force}
                ): (s, t)
                for t, s in work
            }
            for future in as_completed(list(ingests)):
                session, test_id = ingests[future]
                outcome = _crashed(future, str(session.session_id), str(test_id), "ingest")
                report.add(outcome)
                if outcome.has_video:
                    processing.submit(session.session_id, str(test_id))
            report.timings["ingest"] = round(time.monotonic() - began, 3)
        processing.collect(report)


def finish(report: RunReport) -> dict[str, Any]:
    """Publish the dataset, then record the run: summary.json and the API log in the bucket, artifacts in Prefect."""
    rt = runtime()
    with report.timed("publish"):
        report.dataset = publish_dataset()
    rt.client.observers.remove(report.observe)
    summary = redact_json(report.as_dict())
    summary["files"] = record_run(report.run_id, summary, report.api_log.jsonl())
    create_table_artifact(summary_table(summary), key="ut-run-summary", description="What this run did")
    create_markdown_artifact(
        failures_markdown(summary), key="ut-run-failures", description="Failures and reasons"
    )
    if report.progress_id:
        update_progress_artifact(report.progress_id, 100.0, description=f"{len(report.outcomes)} handled")
    get_run_logger().info("run finished: %s", json.dumps(summary["counts"]))
    return summary


def summary_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The operator's table: one metric a row."""
    counts = summary["counts"]
    ingest, process = counts.get("ingest", {}), counts.get("process", {})
    rows = [
        ("sessions seen", summary["sessions"]),
        ("skipped (already done)", ingest.get("skipped", 0) + process.get("skipped", 0)),
        ("ingested", ingest.get("done", 0)),
        ("no video", ingest.get("no_video", 0)),
        ("processed", process.get("done", 0)),
        ("failed", len(summary["failures"])),
        ("bytes moved", summary["bytes"]),
        ("audio hours transcribed", round(summary["audio_seconds"] / 3600, 4)),
        ("frames written", summary["frames"]),
        ("API calls", summary["api_calls"]),
        ("API 429 answers", summary["api_429s"]),
        *((f"wall seconds: {stage}", seconds) for stage, seconds in summary["wall_seconds"].items()),
    ]
    return [{"metric": name, "value": value} for name, value in rows]


def failures_markdown(summary: dict[str, Any]) -> str:
    lines = ["# Failures", ""]
    for failure in summary["failures"]:
        lines.append(f"- `{failure['session_id']}` ({failure['stage']}): {failure['reason']}")
    for name, reason in summary["test_errors"].items():
        lines.append(f"- {name}: {reason}")
    if len(lines) == 2:
        lines.append("None: every session ended done, skipped or without video.")
    return "\n".join(lines)


@flow(name="ut-backfill", log_prints=True)
def backfill(
    test_ids: list[UUID] = Field(default=[]),
    since: datetime | None = None,
    until: datetime | None = None,
    session_ids: list[UUID] = Field(default=[]),
    force: bool = False,
    stages: list[Stage] = Field(default=ALL_STAGES),
) -> dict[str, Any]:
    """Ingest and process chosen tests, time ranges or sessions, started by hand or from the UI's form.

    Args:
        test_ids: Tests to cover; empty means the tests of UT_TEST_IDS.
        since: Only sessions finished at or after this time (UTC); empty means from the first.
        until: Only sessions finished before this time (UTC); empty means up to now.
        session_ids: Only these sessions of the tests; empty means every completed session.
        force: Redo what is already done (videos, transcripts, frames).
        stages: The stages to run: ingest, transcribe, frames.
    """
    tests = test_ids or runtime().settings.test_ids
    if not tests:
        raise ValueError("no tests given and UT_TEST_IDS is empty")
    report = RunReport.start()
    work = enumerate_windows({t: (since, until) for t in tests}, session_ids, report)
    ingest_and_process(work, stages, force, report)
    return finish(report)


@flow(name="ut-nightly", log_prints=True)
def nightly() -> dict[str, Any]:
    """Every configured test, from its watermark (or the look-back) to this run's start, every stage."""
    rt, logger = runtime(), get_run_logger()
    tests = rt.client.tests_to_cover(rt.settings.test_ids, rt.settings.workspace_ids)
    if not tests:
        raise ValueError("nothing to do: set UT_TEST_IDS or UT_WORKSPACE_IDS")
    until = datetime.now(UTC)
    first_since = until - timedelta(days=rt.settings.nightly_lookback_days)
    windows = {t: (read_watermark(t) or first_since, until) for t in tests}
    for test_id, (since, _) in windows.items():
        logger.info("test %s: sessions finished since %s", test_id, since.isoformat())
    report = RunReport.start()
    work = enumerate_windows(windows, [], report)
    ingest_and_process(work, ALL_STAGES, False, report)
    # Only listing and ingest failures hold a test back: processing is retried from the bucket.
    held = report.test_errors.keys() | {
        o.test_id for o in report.outcomes if o.status == "failed" and o.stage == "ingest"
    }
    for test_id in tests:
        if str(test_id) in held:
            logger.warning(
                "test %s: watermark kept, some sessions failed to ingest and will be retried", test_id
            )
        else:
            advance_watermark(test_id, until, _run_id())
    return finish(report)


@flow(name="ut-reprocess", log_prints=True)
def reprocess(
    session_ids: list[UUID] = Field(default=[]),
    test_ids: list[UUID] = Field(default=[]),
    stages: list[Stage] = Field(default=PROCESSING_STAGES),
) -> dict[str, Any]:
    """Chosen stages again for sessions already in the bucket, e.g. after a model change. No API calls.

    Args:
        session_ids: These sessions.
        test_ids: Or every ingested session of these tests.
        stages: The stages to run again: transcribe and/or frames.
    """
    if not (session_ids or test_ids):
        raise ValueError("name sessions or tests to reprocess")
    report = RunReport.start()
    sessions = sessions_in_bucket(test_ids, session_ids)
    get_run_logger().info("%d ingested sessions to reprocess: %s", len(sessions), ", ".join(stages))
    with ThreadPoolTaskRunner(max_workers=runtime().settings.process_concurrency) as processors:
        processing = _Processing(processors, stages, True, _run_id())
        for session_id, test_id in sessions:
            processing.submit(session_id, test_id)
        processing.collect(report)
    return finish(report)


@flow(name="ut-publish", log_prints=True)
def publish(full: bool = False, compact: bool = False) -> dict[str, Any]:
    """Publish the dataset on its own: the sessions changed since the last publish, or every session.

    Args:
        full: Rebuild every table from every record in the bucket.
        compact: Then merge small files and delete versions older than UT_DATASET_RETENTION_HOURS.
    """
    configure_logging(runtime().settings.log_format)
    summary: dict[str, Any] = {"dataset": publish_dataset(full), "failures": [], "test_errors": {}}
    if compact:
        summary["compaction"] = compact_dataset()
    return summary
