"""The dispatcher's edge cases: batch runs that end or die without a session, a pool that makes no
progress, late reports from a batch run judged gone. The batch runs are an in-process stand-in driven
by the dispatcher's own sleep; the reports and the session records are real, in the local S3.
(The dispatcher with real Prefect workers: tests/test_scale_out.py.)
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Collection
from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from sandbox.local import LocalWorld
from tasks.handoff import MAX_HANDOUTS, BatchState, Dispatcher, OutcomeLedger
from tasks.outcome import Outcome
from tasks.storage.layout import BucketLayout
from tasks.storage.owners import boot_id
from tasks.storage.records import Lease, RecordStore, SessionRecord, Status, utcnow


class StandInRuns:
    """Batch runs that do nothing by themselves: each test moves them along from ``step``."""

    def __init__(self) -> None:
        self.batches: dict[str, list[str]] = {}
        self.state: dict[str, BatchState] = {}
        self.cancelled: set[str] = set()

    def start(self, session_ids: list[str]) -> str:
        run_id = str(uuid4())
        self.batches[run_id], self.state[run_id] = list(session_ids), BatchState.WAITING
        return run_id

    def states(self, run_ids: Collection[str]) -> dict[str, BatchState]:
        return {r: self.state[r] for r in run_ids}

    def cancel(self, run_ids: Collection[str]) -> None:
        self.cancelled |= set(run_ids)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bucket(world: LocalWorld) -> tuple[OutcomeLedger, RecordStore]:
    s3, layout = world.s3_client(), BucketLayout(f"handoff-{uuid4().hex[:8]}/")
    return OutcomeLedger(s3, world.bucket, layout), RecordStore(s3, world.bucket, layout)


def dispatcher(
    bucket: tuple[OutcomeLedger, RecordStore],
    runs: StandInRuns,
    step: Callable[[], None],
    clock: Clock,
    *,
    batch_size: int = 2,
    wait_seconds: float = 60.0,
) -> Dispatcher:
    def sleep(seconds: float) -> None:
        clock.now += seconds
        step()

    ledger, records = bucket
    return Dispatcher(
        runs,
        ledger,
        records,
        str(uuid4()),
        batch_size=batch_size,
        wait_seconds=wait_seconds,
        lease_seconds=4.0,
        poll_seconds=1.0,
        clock=clock,
        sleep=sleep,
    )


def sessions(n: int) -> list[str]:
    return [str(uuid4()) for _ in range(n)]


def report(dispatch: Dispatcher, batch: str, session_id: str, status: str) -> None:
    dispatch.ledger.put(
        dispatch.run_id, batch, Outcome(session_id, None, status, "by the stand-in", stage="process")
    )


def test_full_batches_go_out_at_once_the_rest_when_collecting_and_reports_settle_them(
    bucket: tuple[OutcomeLedger, RecordStore],
) -> None:
    runs, clock = StandInRuns(), Clock()

    def step() -> None:  # every batch runs and reports each of its sessions done
        for batch, session_ids in runs.batches.items():
            runs.state[batch] = BatchState.ENDED
            for session_id in session_ids:
                report(dispatch, batch, session_id, "done")

    dispatch = dispatcher(bucket, runs, step, clock)
    ids = sessions(5)
    for session_id in ids:
        dispatch.submit(session_id, "test-1")
    assert [len(b) for b in runs.batches.values()] == [2, 2]  # two full batches, handed out at once
    outcomes = list(dispatch.settle())
    assert [len(b) for b in runs.batches.values()] == [2, 2, 1]
    assert sorted(o.session_id for o in outcomes) == sorted(ids)
    assert {(o.status, o.test_id) for o in outcomes} == {("done", "test-1")}


def test_a_session_whose_batch_runs_end_without_it_is_handed_out_again_then_fails(
    bucket: tuple[OutcomeLedger, RecordStore],
) -> None:
    runs, clock = StandInRuns(), Clock()

    def step() -> None:  # every batch run ends at once, reporting nothing (it crashed on start)
        for batch in runs.batches:
            runs.state[batch] = BatchState.ENDED

    dispatch = dispatcher(bucket, runs, step, clock)
    (session_id,) = sessions(1)
    dispatch.submit(session_id, None)
    (outcome,) = dispatch.settle()
    assert len(runs.batches) == MAX_HANDOUTS
    assert outcome.status == "failed" and not outcome.permanent
    assert f"handed to {MAX_HANDOUTS} batch runs that ended or died without it" in outcome.reason


def test_a_pool_without_progress_is_given_up_on_and_its_waiting_batches_cancelled(
    bucket: tuple[OutcomeLedger, RecordStore],
) -> None:
    runs, clock = StandInRuns(), Clock()
    dispatch = dispatcher(bucket, runs, lambda: None, clock, wait_seconds=10.0)  # no worker takes anything
    ids = sessions(3)
    for session_id in ids:
        dispatch.submit(session_id, None)
    outcomes = list(dispatch.settle())
    assert 10.0 < clock.now <= 12.0
    assert {o.session_id for o in outcomes} == set(ids)
    assert all(o.status == "failed" and "made no progress for 10 s" in o.reason for o in outcomes)
    assert runs.cancelled == set(runs.batches)


def dead_holders_lease(batch: str) -> Lease:
    """A live-looking lease of ``batch`` whose process, on this machine, has ended."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    return Lease(
        owner=batch,
        until=utcnow() + timedelta(minutes=5),
        host=socket.gethostname(),
        pid=ended.pid,
        boot=boot_id(),
        started=1,
    )


def test_a_batch_run_whose_holder_is_gone_is_replaced_and_its_late_word_counts_only_for_work_done(
    bucket: tuple[OutcomeLedger, RecordStore],
) -> None:
    runs, clock = StandInRuns(), Clock()
    _, records = bucket
    ids = sessions(2)
    first: list[str] = []

    def step() -> None:
        for batch in runs.batches:
            runs.state[batch] = BatchState.RUNNING  # Prefect never hears that the first one died
        if not first:
            (batch,) = runs.batches
            first.append(batch)
            record = SessionRecord(session_id=UUID(ids[0]), status=Status.PROCESSING)
            records.put(record.model_copy(update={"lease": dead_holders_lease(batch)}), None)
        elif len(runs.batches) == 2:
            second = next(b for b in runs.batches if b != first[0])
            report(dispatch, first[0], ids[0], "skipped")  # too late, and not work: ignored
            report(dispatch, first[0], ids[1], "done")  # work done by the first: it counts
            report(dispatch, second, ids[0], "done")

    dispatch = dispatcher(bucket, runs, step, clock)
    for session_id in ids:
        dispatch.submit(session_id, None)
    outcomes = {o.session_id: o for o in dispatch.settle()}
    assert len(runs.batches) == 2 and runs.batches[first[0]] == ids
    second = next(b for b in runs.batches if b != first[0])
    assert runs.batches[second] == ids  # both sessions of the gone batch run, handed out again
    assert {s: o.status for s, o in outcomes.items()} == {ids[0]: "done", ids[1]: "done"}
