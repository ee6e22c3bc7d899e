"""Processing as its own stage: in the run's own process, or on a pool of workers on any machines.

A flow run hands processing work to one of two :class:`Processing` implementations through two
calls, ``submit(session_id, test_id)`` and ``collect(report)``:

- :class:`LocalProcessing` (the default): the sessions are processed here, ``UT_PROCESS_CONCURRENCY``
  at a time, as Prefect tasks of this flow run.
- :class:`PoolProcessing` (``UT_PROCESS_DEPLOYMENT`` set): the sessions are handed, in batches of
  ``UT_PROCESS_BATCH_SIZE``, to the ``ut-process`` deployment (:func:`process_batch`), whose work pool
  has workers on as many machines as needed; workers may join or leave during a run. Each batch is
  one flow run in one process, so the Whisper model is loaded once per batch. The hand-off itself is
  the bucket and the claim on each session (``tasks/handoff.py``): a worker killed mid-session loses
  nothing, and another worker finishes its sessions.

Why work pools rather than Prefect's task workers or a Ray/Dask task runner: README, "Scaling out".
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterator
from types import TracebackType
from typing import Protocol
from uuid import UUID, uuid4

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner

from flows.report import RunReport
from tasks.errors import describe
from tasks.handoff import BatchState, Dispatcher, OutcomeLedger
from tasks.outcome import Outcome
from tasks.runlog import configure_logging
from tasks.settings import Settings
from tasks.steps import prefect_run_finished, process_session, runtime
from tasks.storage.records import RecordStore, Stage

log = logging.getLogger("ut_pipeline.processing")

# Prefect's API answers at most this many flow runs per query.
_STATES_PER_QUERY = 200


def task_outcome(future: PrefectFuture[Outcome], session_id: str, test_id: str | None, stage: str) -> Outcome:
    """The task's outcome, or a failed one if the task itself broke (tasks catch their own errors)."""
    try:
        return future.result()
    except Exception as exc:
        return Outcome(session_id, test_id, "failed", f"crashed: {describe(exc)}", stage=stage)


class Processing(Protocol):
    """Where a run's sessions are processed; used as a context manager around the run's work."""

    def describe(self) -> str: ...

    def submit(self, session_id: str, test_id: str | None) -> None: ...

    def collect(self, report: RunReport) -> int:
        """Wait until every submitted session has its outcome in ``report``; returns how many."""
        ...

    def __enter__(self) -> Processing: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class LocalProcessing:
    """Sessions processed in this process, ``concurrency`` at a time, each a ``process-session`` task."""

    def __init__(self, concurrency: int, run_id: str, stages: list[Stage], force: bool) -> None:
        self.concurrency, self.run_id, self.stages, self.force = concurrency, run_id, stages, force
        self._runner = ThreadPoolTaskRunner(max_workers=concurrency)
        self._futures: dict[PrefectFuture[Outcome], tuple[str, str | None]] = {}

    def describe(self) -> str:
        return f"{self.concurrency} processing at a time"

    def submit(self, session_id: str, test_id: str | None) -> None:
        parameters = {
            "session_id": UUID(session_id),
            "run_id": self.run_id,
            "stages": self.stages,
            "force": self.force,
        }
        self._futures[self._runner.submit(process_session, parameters)] = (session_id, test_id)

    def outcomes(self) -> Iterator[Outcome]:
        """The submitted sessions' outcomes, as they finish."""
        futures, self._futures = self._futures, {}
        for future in as_completed(list(futures)):
            session_id, test_id = futures[future]
            yield task_outcome(future, session_id, test_id, "process")

    def collect(self, report: RunReport) -> int:
        return len([report.add(outcome) for outcome in self.outcomes()])

    def __enter__(self) -> LocalProcessing:
        self._runner.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._runner.__exit__(exc_type, exc, tb)


class PrefectBatchRuns:
    """Batches as flow runs of the processing deployment, started without waiting for them."""

    def __init__(self, deployment: str, run_id: str, stages: list[Stage], force: bool) -> None:
        self.deployment, self.run_id, self.stages, self.force = deployment, run_id, stages, force

    def start(self, session_ids: list[str]) -> str:
        run = run_deployment(
            self.deployment,
            parameters={
                "session_ids": session_ids,
                "stages": [str(stage) for stage in self.stages],
                "force": self.force,
                "report_to": self.run_id,
            },
            timeout=0,
            flow_run_name=f"{len(session_ids)} sessions for {self.run_id[:8]}",
            tags=["ut-pipeline", "processing"],
        )
        log.info("%d session(s) handed to %s as batch run %s", len(session_ids), self.deployment, run.id)
        return str(run.id)

    def states(self, run_ids: Collection[str]) -> dict[str, BatchState]:
        """Each run's state; if Prefect cannot be asked, every run counts as running (nothing is decided)."""
        ids = sorted(run_ids)
        try:
            with get_client(sync_client=True) as client:
                runs = [
                    run
                    for start in range(0, len(ids), _STATES_PER_QUERY)
                    for run in client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(
                            id=FlowRunFilterId(any_=[UUID(i) for i in ids[start : start + _STATES_PER_QUERY]])
                        ),
                        limit=_STATES_PER_QUERY,
                    )
                ]
        except Exception as exc:
            log.warning("cannot read the batch runs' states from Prefect: %s", describe(exc))
            return dict.fromkeys(ids, BatchState.RUNNING)
        return {str(run.id): _batch_state(run.state.type if run.state else None) for run in runs}

    def cancel(self, run_ids: Collection[str]) -> None:
        with get_client(sync_client=True) as client:
            for run_id in run_ids:
                client.set_flow_run_state(UUID(run_id), Cancelled(message="no worker took it in time"))


def _batch_state(state: StateType | None) -> BatchState:
    if state in (None, StateType.SCHEDULED, StateType.PENDING):
        return BatchState.WAITING
    if state in (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED):
        return BatchState.ENDED
    return BatchState.RUNNING


class PoolProcessing:
    """Sessions handed to the processing deployment's work pool in batches (``tasks/handoff.py``)."""

    def __init__(
        self, deployment: str, settings: Settings, run_id: str, stages: list[Stage], force: bool
    ) -> None:
        rt = runtime()
        self.deployment, self.batch_size = deployment, settings.process_batch_size
        self.dispatcher = Dispatcher(
            PrefectBatchRuns(deployment, run_id, stages, force),
            OutcomeLedger(rt.s3, rt.bucket, rt.layout),
            RecordStore(rt.s3, rt.bucket, rt.layout),
            run_id,
            batch_size=settings.process_batch_size,
            wait_seconds=settings.process_wait_seconds,
            lease_seconds=settings.session_lease_seconds,
            run_finished=prefect_run_finished,
        )

    def describe(self) -> str:
        return f"processing on {self.deployment} in batches of {self.batch_size}"

    def submit(self, session_id: str, test_id: str | None) -> None:
        self.dispatcher.submit(session_id, test_id)

    def collect(self, report: RunReport) -> int:
        logger, settled = get_run_logger(), 0
        for outcome in self.dispatcher.settle():
            (logger.error if outcome.status == "failed" else logger.info)(
                "session %s: process %s (%s)", outcome.session_id, outcome.status, outcome.reason
            )
            report.add(outcome)
            settled += 1
        return settled

    def __enter__(self) -> PoolProcessing:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def processing_for(settings: Settings, run_id: str, stages: list[Stage], force: bool) -> Processing:
    """The pool when ``UT_PROCESS_DEPLOYMENT`` names one, else this process."""
    if settings.process_deployment:
        return PoolProcessing(settings.process_deployment, settings, run_id, stages, force)
    return LocalProcessing(runtime().process_concurrency, run_id, stages, force)


@flow(name="ut-process", log_prints=True)
def process_batch(
    session_ids: list[UUID],
    stages: list[Stage],
    force: bool = False,
    report_to: str | None = None,
) -> dict[str, int]:
    """Transcribe and extract frames for a batch of ingested sessions, in this one process.

    Args:
        session_ids: Ingested sessions to process.
        stages: The stages to run: transcribe and/or frames.
        force: Redo stages already done.
        report_to: The flow run that handed the batch out; each session's outcome is written to the
            bucket for it.
    """
    rt = runtime()
    configure_logging(rt.settings.log_format, rt.settings.log_dir)
    rt.scratch.sweep()
    run_id = str(flow_run.id or uuid4())
    ledger = OutcomeLedger(rt.s3, rt.bucket, rt.layout)
    counts: Counter[str] = Counter()
    try:
        with LocalProcessing(rt.process_concurrency, run_id, stages, force) as local:
            for session_id in session_ids:
                local.submit(str(session_id), None)
            for outcome in local.outcomes():
                counts[outcome.status] += 1
                if report_to:
                    ledger.put(report_to, run_id, outcome)
    finally:
        rt.scratch.finish_run(run_id)
    get_run_logger().info("batch of %d session(s): %s", len(session_ids), dict(counts))
    return dict(counts)
