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

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from tasks.models import SessionSummary
from tasks.outcome import Outcome
from tasks.records import Stage
from tasks.results_api import ApiError
from tasks.steps import (
    advance_watermark,
    enumerate_sessions,
    ingest_session,
    process_session,
    publish_dataset,
    read_watermark,
    runtime,
    sessions_in_bucket,
)

ALL_STAGES = [Stage.INGEST, Stage.TRANSCRIBE, Stage.FRAMES]
PROCESSING = {Stage.TRANSCRIBE, Stage.FRAMES}


class BackfillParams(BaseModel):
    """What to (re)ingest and process. Empty lists mean: the configured tests, every session."""

    test_ids: list[UUID] = Field(default_factory=list, description="Tests to cover; empty: UT_TEST_IDS")
    since: datetime | None = Field(default=None, description="Sessions finished at or after (UTC)")
    until: datetime | None = Field(default=None, description="Sessions finished before (UTC)")
    session_ids: list[UUID] = Field(default_factory=list, description="Only these sessions of the tests")
    force: bool = Field(default=False, description="Redo what is already done (videos, transcripts, frames)")
    stages: list[Stage] = Field(default_factory=lambda: list(ALL_STAGES), description="Stages to run")


class ReprocessParams(BaseModel):
    """Which ingested sessions to process again, and which stages."""

    session_ids: list[UUID] = Field(default_factory=list, description="These sessions")
    test_ids: list[UUID] = Field(default_factory=list, description="Or every ingested session of these tests")
    stages: list[Stage] = Field(
        default_factory=lambda: [Stage.TRANSCRIBE, Stage.FRAMES], description="transcribe and/or frames"
    )


@dataclass
class RunReport:
    """What a run did per session and stage; the exit code and the run summary come from it."""

    outcomes: list[Outcome] = field(default_factory=list)
    test_errors: dict[str, str] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)

    def failed_tests(self) -> set[str]:
        return set(self.test_errors) | {o.test_id or "" for o in self.outcomes if o.status == "failed"}

    def as_dict(self) -> dict[str, Any]:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for outcome in self.outcomes:
            counts[outcome.stage][outcome.status] += 1
        return {
            "sessions": len({o.session_id for o in self.outcomes}),
            "counts": {stage: dict(c) for stage, c in counts.items()},
            "bytes": sum(o.bytes for o in self.outcomes),
            "link_requests": sum(o.link_requests for o in self.outcomes),
            "audio_seconds": round(sum(o.audio_seconds for o in self.outcomes), 1),
            "frames": sum(o.frames for o in self.outcomes),
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
    wanted, work = set(session_ids), []
    for test_id, (since, until) in windows.items():
        try:
            sessions = enumerate_sessions(test_id, since, until)
        except ApiError as exc:
            get_run_logger().error("test %s: cannot list sessions: %s", test_id, exc)
            report.test_errors[str(test_id)] = str(exc)
            continue
        work += [(test_id, s) for s in sessions if not wanted or s.session_id in wanted]
    for missing in sorted(wanted - {s.session_id for _, s in work}, key=str):
        report.test_errors[f"session {missing}"] = "not among the completed sessions of the given tests"
    return work


class _Processing:
    """Processing tasks submitted as sessions become ready, collected at the end."""

    def __init__(self, runner: ThreadPoolTaskRunner, stages: list[Stage], force: bool, run_id: str) -> None:
        self.runner, self.stages, self.force, self.run_id = (
            runner,
            [s for s in stages if s in PROCESSING],
            force,
            run_id,
        )
        self.futures: list[tuple[PrefectFuture[Outcome], str, str | None]] = []

    def submit(self, session_id: UUID, test_id: str | None) -> None:
        if self.stages:
            parameters = {
                "session_id": session_id,
                "run_id": self.run_id,
                "stages": self.stages,
                "force": self.force,
            }
            self.futures.append((self.runner.submit(process_session, parameters), str(session_id), test_id))

    def collect(self, report: RunReport) -> None:
        for future, session_id, test_id in self.futures:
            report.outcomes.append(_crashed(future, session_id, test_id, "process"))


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
        processing = _Processing(processors, stages, force, _run_id())
        if Stage.INGEST not in stages:
            for test_id, session in work:
                processing.submit(session.session_id, str(test_id))
        else:
            ingests = {
                downloads.submit(
                    ingest_session, {"session": s, "test_id": t, "run_id": processing.run_id, "force": force}
                ): (s, t)
                for t, s in work
            }
            for future in as_completed(list(ingests)):
                session, test_id = ingests[future]
                outcome = _crashed(future, str(session.session_id), str(test_id), "ingest")
                report.outcomes.append(outcome)
                if outcome.has_video:
                    processing.submit(session.session_id, str(test_id))
        processing.collect(report)


def finish(report: RunReport) -> dict[str, Any]:
    report.dataset = publish_dataset()
    summary = report.as_dict()
    get_run_logger().info("run finished: %s", summary["counts"])
    return summary


@flow(name="ut-backfill", log_prints=True)
def backfill(params: BackfillParams | None = None) -> dict[str, Any]:
    """Ingest and process chosen tests, time ranges or sessions, started by hand or from the UI's form."""
    params = params or BackfillParams()
    tests = params.test_ids or runtime().settings.test_ids
    if not tests:
        raise ValueError("no tests given and UT_TEST_IDS is empty")
    report = RunReport()
    work = enumerate_windows({t: (params.since, params.until) for t in tests}, params.session_ids, report)
    ingest_and_process(work, params.stages, params.force, report)
    return finish(report)


@flow(name="ut-nightly", log_prints=True)
def nightly() -> dict[str, Any]:
    """Every configured test, from its watermark (or the look-back) to this run's start, every stage."""
    rt, logger = runtime(), get_run_logger()
    tests = list(rt.settings.test_ids)
    for workspace in rt.settings.workspace_ids:
        tests += [UUID(s.uuid) for s in rt.client.workspace_tests(workspace) if s.is_results_api_test]
    tests = list(dict.fromkeys(tests))
    if not tests:
        raise ValueError("nothing to do: set UT_TEST_IDS or UT_WORKSPACE_IDS")
    until = datetime.now(UTC)
    first_since = until - timedelta(days=rt.settings.nightly_lookback_days)
    windows = {t: (read_watermark(t) or first_since, until) for t in tests}
    for test_id, (since, _) in windows.items():
        logger.info("test %s: sessions finished since %s", test_id, since.isoformat())
    report = RunReport()
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
def reprocess(params: ReprocessParams | None = None) -> dict[str, Any]:
    """Chosen stages again for sessions already in the bucket, e.g. after a model change. No API calls."""
    params = params or ReprocessParams()
    if not (params.session_ids or params.test_ids):
        raise ValueError("name sessions or tests to reprocess")
    report = RunReport()
    sessions = sessions_in_bucket(params.test_ids, params.session_ids)
    get_run_logger().info("%d ingested sessions to reprocess: %s", len(sessions), ", ".join(params.stages))
    with ThreadPoolTaskRunner(max_workers=runtime().settings.process_concurrency) as processors:
        processing = _Processing(processors, params.stages, True, _run_id())
        for session_id, test_id in sessions:
            processing.submit(session_id, test_id)
        processing.collect(report)
    return finish(report)
