"""Ingest flows: enumerate completed sessions, fetch each link just in time, stream videos into the bucket.

``backfill`` takes its parameters as one pydantic model, so the Prefect UI renders a form for a
custom run. ``nightly`` covers ``UT_TEST_IDS`` plus the Results API tests of ``UT_WORKSPACE_IDS``
from each test's watermark (or a look-back on a first run) up to the run's start.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from tasks.ingest import Outcome
from tasks.results_api import ApiError
from tasks.steps import advance_watermark, enumerate_sessions, ingest_session, read_watermark, runtime


class Stage(StrEnum):
    INGEST = "ingest"


class BackfillParams(BaseModel):
    """What to (re)ingest. Every field is optional except at least one test."""

    test_ids: list[UUID] = Field(default_factory=list, description="Tests to cover; empty: UT_TEST_IDS")
    since: datetime | None = Field(default=None, description="Sessions finished at or after (UTC)")
    until: datetime | None = Field(default=None, description="Sessions finished before (UTC)")
    session_ids: list[UUID] = Field(default_factory=list, description="Only these sessions of the tests")
    force: bool = Field(
        default=False, description="Ingest again even if already done or recorded without video"
    )
    stages: list[Stage] = Field(default_factory=lambda: [Stage.INGEST], description="Stages to run")


@dataclass
class RunReport:
    """What a run did, per session; the CLI's exit code and the run summary come from it."""

    outcomes: list[Outcome] = field(default_factory=list)
    test_errors: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    @property
    def failed(self) -> bool:
        return bool(self.test_errors) or self.counts["failed"] > 0

    def failed_tests(self) -> set[str]:
        return set(self.test_errors) | {o.test_id or "" for o in self.outcomes if o.status == "failed"}

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessions": len(self.outcomes),
            "counts": dict(self.counts),
            "bytes": sum(o.bytes for o in self.outcomes),
            "link_requests": sum(o.link_requests for o in self.outcomes),
            "failures": [
                {"session_id": o.session_id, "reason": o.reason}
                for o in self.outcomes
                if o.status == "failed"
            ],
            "test_errors": self.test_errors,
        }


def _run_id() -> str:
    return str(flow_run.id or uuid4())


def ingest_windows(
    windows: dict[UUID, tuple[datetime | None, datetime | None]],
    *,
    session_ids: list[UUID] | None = None,
    force: bool = False,
) -> RunReport:
    """Enumerate each test's sessions in its window and ingest them, a few downloads at a time."""
    logger = get_run_logger()
    run_id, report = _run_id(), RunReport()
    wanted = set(session_ids or [])
    work: list[tuple[UUID, Any]] = []
    for test_id, (since, until) in windows.items():
        try:
            sessions = enumerate_sessions(test_id, since, until)
        except ApiError as exc:
            logger.error("test %s: cannot list sessions: %s", test_id, exc)
            report.test_errors[str(test_id)] = str(exc)
            continue
        work += [(test_id, s) for s in sessions if not wanted or s.session_id in wanted]
    missing = wanted - {s.session_id for _, s in work}
    for session_id in sorted(missing, key=str):
        report.test_errors[f"session {session_id}"] = "not among the completed sessions of the given tests"

    concurrency = runtime().settings.download_concurrency
    logger.info("%d sessions to consider, %d downloads at a time", len(work), concurrency)
    with ThreadPoolTaskRunner(max_workers=concurrency) as runner:
        futures = [
            runner.submit(
                ingest_session, {"session": session, "test_id": test_id, "run_id": run_id, "force": force}
            )
            for test_id, session in work
        ]
        for (test_id, session), future in zip(work, futures, strict=True):
            try:
                report.outcomes.append(future.result())
            except Exception as exc:
                logger.error("session %s: ingest crashed: %s", session.session_id, exc)
                report.outcomes.append(
                    Outcome(str(session.session_id), str(test_id), "failed", f"crashed: {type(exc).__name__}")
                )
    logger.info("ingest finished: %s", report.as_dict()["counts"])
    return report


@flow(name="ut-backfill", log_prints=True)
def backfill(params: BackfillParams | None = None) -> dict[str, Any]:
    """Ingest (again) chosen tests, time ranges or sessions, started by hand or from the UI's form."""
    params = params or BackfillParams()
    tests = params.test_ids or runtime().settings.test_ids
    if not tests:
        raise ValueError("no tests given and UT_TEST_IDS is empty")
    if Stage.INGEST not in params.stages:
        get_run_logger().info("no stage selected: nothing to do")
        return RunReport().as_dict()
    report = ingest_windows(
        {t: (params.since, params.until) for t in tests}, session_ids=params.session_ids, force=params.force
    )
    return report.as_dict()


@flow(name="ut-nightly", log_prints=True)
def nightly() -> dict[str, Any]:
    """Every configured test, from its watermark (or the look-back) to this run's start."""
    rt, logger = runtime(), get_run_logger()
    tests = list(dict.fromkeys(rt.settings.test_ids))
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
    report = ingest_windows(windows)
    failed = report.failed_tests()
    for test_id in tests:
        if str(test_id) in failed:
            logger.warning("test %s: watermark kept, some sessions failed and will be retried", test_id)
        else:
            advance_watermark(test_id, until, _run_id())
    return report.as_dict()
