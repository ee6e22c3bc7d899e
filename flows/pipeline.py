"""The pipeline's flows: enumerate completed sessions, fetch each link just in time, stream the videos
into the bucket, transcribe them and extract frames, and publish the dataset.

- ``nightly``: every test of ``UT_TEST_IDS`` (and the Results API tests of ``UT_WORKSPACE_IDS``),
  from each test's watermark, or a look-back on a first run, up to the run's start.
- ``backfill``: chosen tests, time range or sessions, with ``force``; its parameters are flat, so the
  Prefect UI renders a form for a custom run.
- ``reprocess``: chosen stages again for sessions already in the bucket (after a model change),
  without any API call.

Ingest and processing overlap: a session is handed to processing as soon as its video is in. A
session another live run holds is waited for at the end (its own count if it stays held), and
sessions whose video was not ready when last asked are asked again by every run of their test.
"""

from __future__ import annotations

import json
import logging
import time
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
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from flows.processing import Processing, processing_for, task_outcome
from flows.report import RunReport, failures_markdown, summary_table, verdict
from tasks.api.client import ApiCall, ApiError, Unauthorized
from tasks.api.models import SessionSummary
from tasks.errors import describe
from tasks.redact import redact_json
from tasks.runlog import configure_logging
from tasks.steps import (
    advance_watermark,
    check_storage,
    compact_dataset,
    enumerate_sessions,
    ingest_session,
    late_videos,
    publish_dataset,
    read_watermark,
    record_run,
    runtime,
    sessions_in_bucket,
)
from tasks.storage.records import Stage

PROCESSING_STAGES = [Stage.TRANSCRIBE, Stage.FRAMES]
ALL_STAGES = [Stage.INGEST, *PROCESSING_STAGES]
PROCESSING = set(PROCESSING_STAGES)

Work = list[tuple[UUID, SessionSummary]]

log = logging.getLogger("ut_pipeline.flows")


def start_run() -> RunReport:
    """Logging, the storage check, the scratch sweep and the progress artifact of a new run."""
    rt = runtime()
    configure_logging(rt.settings.log_format, rt.settings.log_dir)
    check_storage()
    report = RunReport(run_id=_run_id())
    rt.scratch.sweep()
    rt.api_observers.append(lambda call: _observe(report, call))
    report.progress_id = create_progress_artifact(0.0, key="ut-run-progress", description="sessions handled")
    return report


def _observe(report: RunReport, call: ApiCall) -> None:
    """Client observer: keep this flow run's requests (the client is shared by the process)."""
    if str(flow_run.id or report.run_id) == report.run_id:
        report.api_log.append(call.as_dict())


def _run_id() -> str:
    return str(flow_run.id or uuid4())


def enumerate_windows(
    windows: dict[UUID, tuple[datetime | None, datetime | None]], session_ids: list[UUID], report: RunReport
) -> Work:
    """The completed sessions of each test in its window (only ``session_ids`` if given), plus the
    sessions of these tests whose video was not ready when last asked, whatever their finish time."""
    wanted = set(session_ids)
    work: Work = []
    with report.timed("enumerate"):
        for test_id, (since, until) in windows.items():
            try:
                listing = enumerate_sessions(test_id, since, until)
            except Unauthorized:
                raise
            except ApiError as exc:
                get_run_logger().error("test %s: cannot list sessions: %s", test_id, exc)
                report.test_errors[str(test_id)] = str(exc)
                continue
            report.list_problems += listing.problems
            work += [(test_id, s) for s in listing.sessions if not wanted or s.session_id in wanted]
        listed = {s.session_id for _, s in work}
        for late in late_videos():
            sid = late.session.session_id
            if late.test_id in windows and sid not in listed and (not wanted or sid in wanted):
                work.append((late.test_id, late.session))
    for missing in sorted(wanted - {s.session_id for _, s in work}, key=str):
        report.test_errors[f"session {missing}"] = "not among the completed sessions of the given tests"
    for _, session in work:
        if session.finish_time is not None:
            report.finish_times[str(session.session_id)] = session.finish_time
    return work


class SessionWork:
    """Ingest and processing tasks of one run: a few downloads at a time, each session handed to
    processing the moment its video is in, then a wait for the sessions another run holds."""

    def __init__(self, report: RunReport, stages: list[Stage], force: bool) -> None:
        self.report, self.force = report, force
        self.settings = runtime().settings
        self.ingest = Stage.INGEST in stages
        self.processing_stages = [s for s in stages if s in PROCESSING]
        self.tests: dict[str, str | None] = {}
        self.summaries: dict[str, SessionSummary] = {}
        self.processing_began: float | None = None
        self.processing: Processing = processing_for(
            self.settings, report.run_id, self.processing_stages, force
        )

    def ingest_and_process(self, work: Work) -> None:
        """Every stage asked for, for sessions as the API listed them."""
        for test_id, session in work:
            self.tests[str(session.session_id)] = str(test_id)
            self.summaries[str(session.session_id)] = session
        self._run(list(self.summaries) if self.ingest else [], [] if self.ingest else list(self.summaries))

    def process_only(self, sessions: list[tuple[UUID, str | None]]) -> None:
        """Processing stages for sessions already in the bucket."""
        self.tests.update({str(sid): test_id for sid, test_id in sessions})
        self._run([], [str(sid) for sid, _ in sessions])

    def _run(self, to_ingest: list[str], to_process: list[str]) -> None:
        get_run_logger().info(
            "%d sessions; stages %s; %d downloads at a time, %s",
            len(self.tests),
            ", ".join([*(["ingest"] if self.ingest else []), *self.processing_stages]),
            self.settings.download_concurrency,
            self.processing.describe(),
        )
        self.report.expected = len(self.tests) * (self.ingest + bool(self.processing_stages))
        with (
            ThreadPoolTaskRunner(max_workers=self.settings.download_concurrency) as downloads,
            self.processing,
        ):
            self._ingest(downloads, to_ingest)
            self._process(to_process)
            self._wait_for_held(downloads)

    def _ingest(self, downloads: ThreadPoolTaskRunner, ids: list[str]) -> None:
        if not ids:
            return
        began = time.monotonic()
        futures = {
            downloads.submit(
                ingest_session,
                {
                    "session": self.summaries[sid],
                    "test_id": UUID(str(self.tests[sid])),
                    "run_id": self.report.run_id,
                    "force": self.force,
                },
            ): sid
            for sid in ids
        }
        for future in as_completed(list(futures)):
            sid = futures[future]
            outcome = self.report.add(task_outcome(future, sid, self.tests[sid], "ingest"))
            if outcome.has_video and self.processing_stages:
                self._submit_processing(sid)
        self.report.timings["ingest"] = round(
            self.report.timings.get("ingest", 0) + time.monotonic() - began, 3
        )
        self._collect()

    def _process(self, ids: list[str]) -> None:
        if self.processing_stages:
            for sid in ids:
                self._submit_processing(sid)
            self._collect()

    def _submit_processing(self, session_id: str) -> None:
        self.processing_began = self.processing_began or time.monotonic()
        self.processing.submit(session_id, self.tests.get(session_id))

    def _collect(self) -> None:
        if self.processing.collect(self.report) and self.processing_began is not None:
            self.report.timings["process"] = round(time.monotonic() - self.processing_began, 3)

    def _wait_for_held(self, downloads: ThreadPoolTaskRunner) -> None:
        """Ask again, every few seconds, for the sessions another run held: until that run finishes
        them, its claim lapses or its holder is gone (then this run takes them over), or the wait ends."""
        held = self.report.held()
        if not held:
            return
        logger = get_run_logger()
        deadline = time.monotonic() + self.settings.held_wait_seconds
        poll = min(10.0, max(0.5, self.settings.session_lease_seconds / 4))
        logger.info(
            "%d session(s) held by other runs: waiting up to %.0f s",
            len(held),
            self.settings.held_wait_seconds,
        )
        with self.report.timed("waiting for other runs"):
            while held and time.monotonic() < deadline:
                time.sleep(poll)
                self._ingest(downloads, [o.session_id for o in held if o.stage == "ingest"])
                self._process([o.session_id for o in held if o.stage == "process"])
                held = self.report.held()
        for outcome in held:
            logger.error("session %s: %s not done: %s", outcome.session_id, outcome.stage, outcome.reason)


def finish(report: RunReport) -> dict[str, Any]:
    """Publish the dataset, then record the run: summary.json and the API log in the bucket, artifacts in
    Prefect. Each step that fails is a run error in the summary, never the end of the report."""
    rt, logger = runtime(), get_run_logger()
    with report.timed("publish"):
        try:
            report.dataset = publish_dataset()
        except Exception as exc:
            report.run_errors.append(f"dataset not published: {describe(exc)}")
    rt.scratch.finish_run(report.run_id)
    summary = redact_json(report.as_dict(report.api_log.calls))
    try:
        summary["files"] = record_run(report.run_id, summary, report.api_log.jsonl())
    except Exception as exc:
        summary["run_errors"].append(f"run summary not stored in the bucket: {describe(exc)}")
    create_table_artifact(summary_table(summary), key="ut-run-summary", description="What this run did")
    create_markdown_artifact(
        failures_markdown(summary), key="ut-run-failures", description="Problems and reasons"
    )
    if report.progress_id:
        update_progress_artifact(report.progress_id, 100.0, description=f"{summary['sessions']} handled")
    for error in summary["run_errors"]:
        logger.error("run: %s", error)
    logger.info("run finished: %s", json.dumps(summary["counts"]))
    (logger.warning if report.has_problems else logger.info)("%s", verdict(summary))
    return summary


def _guarded(report: RunReport, body: Any) -> None:
    """Run the flow's work; an error that stops it (S3 gone for good) is a run error, and the report
    is still finished. A refused credential is not: it ends the run as a configuration error."""
    try:
        body()
    except Unauthorized:
        raise
    except Exception as exc:
        log.debug("the run stopped early", exc_info=True)
        report.run_errors.append(f"stopped early: {describe(exc)}")


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
    report = start_run()

    def body() -> None:
        work = enumerate_windows({t: (since, until) for t in tests}, session_ids, report)
        SessionWork(report, stages, force).ingest_and_process(work)

    _guarded(report, body)
    return finish(report)


@flow(name="ut-nightly", log_prints=True)
def nightly() -> dict[str, Any]:
    """Every configured test, from its watermark (or the look-back) to this run's start, every stage.

    A test's watermark moves up to this run's start, or only up to the earliest session that is not
    settled (held by another run, failed in a way a rerun can fix, video not ready yet), so the next
    night lists it again. A test whose list could not be read, or had unusable items, keeps its mark.
    """
    rt = runtime()
    report = start_run()
    until = datetime.now(UTC)
    first_since = until - timedelta(days=rt.settings.nightly_lookback_days)
    tests: list[UUID] = []

    def body() -> None:
        tests.extend(rt.client.tests_to_cover(rt.settings.test_ids, rt.settings.workspace_ids))
        if not tests:
            raise ValueError("nothing to do: set UT_TEST_IDS or UT_WORKSPACE_IDS")
        windows = {t: (read_watermark(t) or first_since, until) for t in tests}
        for test_id, (since, _) in windows.items():
            get_run_logger().info("test %s: sessions finished since %s", test_id, since.isoformat())
        SessionWork(report, ALL_STAGES, False).ingest_and_process(enumerate_windows(windows, [], report))
        for test_id in tests:
            move_watermark(test_id, until, report)

    _guarded(report, body)
    return finish(report)


def move_watermark(test_id: UUID, until: datetime, report: RunReport) -> None:
    """Advance the test's watermark as far as every session before it is settled."""
    logger = get_run_logger()
    problems = [p for p in report.list_problems if p.test_id == str(test_id)]
    if str(test_id) in report.test_errors or problems:
        logger.warning("test %s: watermark kept: its session list could not be fully read", test_id)
        return
    unsettled = report.unsettled(test_id)
    if unsettled:
        finished, outcome = unsettled[0]
        logger.warning(
            "test %s: watermark held at %s, the finish of session %s (%s %s), so the next run lists it again",
            test_id,
            finished.isoformat(),
            outcome.session_id,
            outcome.stage,
            outcome.status,
        )
        until = min(until, finished)
    advance_watermark(test_id, until, report.run_id)


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
    report = start_run()

    def body() -> None:
        sessions = sessions_in_bucket(test_ids, session_ids)
        get_run_logger().info("%d ingested sessions to reprocess: %s", len(sessions), ", ".join(stages))
        SessionWork(report, [s for s in stages if s in PROCESSING], True).process_only(sessions)

    _guarded(report, body)
    return finish(report)


@flow(name="ut-publish", log_prints=True)
def publish(full: bool = False, compact: bool = False) -> dict[str, Any]:
    """Publish the dataset on its own: the sessions changed since the last publish, or every session.

    Args:
        full: Rebuild every table from every record in the bucket.
        compact: Then merge small files and delete versions older than UT_DATASET_RETENTION_HOURS.
    """
    settings = runtime().settings
    configure_logging(settings.log_format, settings.log_dir)
    check_storage()
    summary: dict[str, Any] = {"dataset": publish_dataset(full)}
    if compact:
        summary["compaction"] = compact_dataset()
    return summary
