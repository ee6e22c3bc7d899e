"""Handing ingested sessions to a pool of processing workers, and knowing when each one is settled.

A run with a processing pool (``UT_PROCESS_DEPLOYMENT``) does not process its sessions itself: it
hands them out in batches, each batch one flow run that some worker of the pool runs, on any
machine. Nothing travels between the two but ids: the videos, the session records and the
outcomes are all in the bucket, so the hand-off survives any process dying.

- The batch run claims each session for processing like any run (a lease, renewed while it works;
  see ``tasks/storage/records.py``), so a session is never processed twice at once, and writes how each
  session fared to ``runs/{run}/processing/{batch run}/{session}.json`` once its record is final.
- The run that handed the batch out settles each session from those files. The batch run's state
  only says when to look again: a session whose batch run ended without reporting it, or whose
  claim by that batch run lapsed (or whose holder is provably gone: its process ended on this
  machine, or Prefect reports its run over), is handed out again in a new batch. Handing a session
  out twice is always safe: the second batch run finds it claimed, or already done.
- A session handed out :data:`MAX_HANDOUTS` times without a result (it crashes whichever worker
  takes it) fails; when the pool makes no progress for ``wait_seconds`` (no worker running, or none
  finishing anything), the rest fail with that reason and their batches still waiting are cancelled.

Nothing here imports Prefect: the batch runs are started and watched through :class:`BatchRuns`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from tasks.outcome import Outcome
from tasks.storage.layout import BucketLayout
from tasks.storage.owners import RunFinished
from tasks.storage.records import RecordStore

log = logging.getLogger("ut_pipeline.handoff")

MAX_HANDOUTS = 3
"""Batches one session may be handed to in one round before it counts as failed."""

POLL_SECONDS = 2.0
"""How often the batch runs' states and reports are read: a few requests per active batch."""

# Outcomes that report work done; anything else (held, skipped) only counts from the latest batch run.
_WORK = frozenset({"done", "failed"})


class BatchState(StrEnum):
    WAITING = "waiting"  # no worker has taken it yet
    RUNNING = "running"
    ENDED = "ended"  # completed, failed, crashed or cancelled: it reports nothing more


class BatchRuns(Protocol):
    """Where batches run: Prefect flow runs of the processing deployment (``flows/processing.py``)."""

    def start(self, session_ids: list[str]) -> str:
        """Start a batch run for these sessions; returns its run id."""
        ...

    def states(self, run_ids: Collection[str]) -> dict[str, BatchState]:
        """The state of each run; a run left out counts as ended."""
        ...

    def cancel(self, run_ids: Collection[str]) -> None:
        """Cancel batch runs that no worker has taken."""
        ...


class OutcomeLedger:
    """The batch runs' reports in the bucket: one small JSON object per session and batch run."""

    def __init__(self, s3: Any, bucket: str, layout: BucketLayout) -> None:
        self.s3, self.bucket, self.layout = s3, bucket, layout

    def put(self, run_id: str, batch_run_id: str, outcome: Outcome) -> None:
        key = self.layout.processing_outcome(run_id, batch_run_id, UUID(outcome.session_id))
        body = json.dumps(outcome.as_dict()).encode()
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    def read(self, run_id: str, batch_run_id: str, skip: Collection[str] = ()) -> dict[str, Outcome]:
        """Every session the batch run has reported on, by session id (those in ``skip`` unread)."""
        prefix = self.layout.processing_outcomes(run_id, batch_run_id)
        found: dict[str, Outcome] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                session_id = obj["Key"][len(prefix) :].removesuffix(".json")
                if session_id in skip:
                    continue
                body = self.s3.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                found[session_id] = Outcome(**json.loads(body))
        return found


@dataclass
class _Pending:
    test_id: str | None
    batches: list[str] = field(default_factory=list)  # batch runs it was handed to, latest last


class Dispatcher:
    """Hands sessions out in batches and settles each one from the bucket (see the module docstring)."""

    def __init__(
        self,
        runs: BatchRuns,
        ledger: OutcomeLedger,
        records: RecordStore,
        run_id: str,
        *,
        batch_size: int,
        wait_seconds: float,
        lease_seconds: float,
        run_finished: RunFinished | None = None,
        poll_seconds: float = POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.runs, self.ledger, self.records, self.run_id = runs, ledger, records, run_id
        self.batch_size, self.wait_seconds = batch_size, wait_seconds
        self.run_finished, self.poll_seconds = run_finished, poll_seconds
        # A live holder renews its lease every third of it: looking more often than this finds nothing new.
        self.liveness_every = max(poll_seconds, lease_seconds / 4)
        self.clock, self.sleep = clock, sleep
        self.pending: dict[str, _Pending] = {}
        self.queue: list[str] = []
        self.batches_started: set[str] = set()
        self._reported: dict[str, set[str]] = {}  # batch run -> sessions already read from its reports
        self._last_liveness = float("-inf")

    def submit(self, session_id: str, test_id: str | None) -> None:
        """Queue a session; a full batch is handed out at once. Submitting again starts a new round."""
        self.pending[session_id] = _Pending(test_id)
        if session_id not in self.queue:
            self.queue.append(session_id)
        if len(self.queue) >= self.batch_size:
            self._hand_out()

    def settle(self) -> Iterator[Outcome]:
        """Hand out what is queued, then yield each session's outcome as it settles, until none is left."""
        self._hand_out()
        progress = self.clock()
        while self.pending:
            settled, started = self._poll()
            yield from settled
            if settled or started:
                progress = self.clock()
            elif self.clock() - progress > self.wait_seconds:
                yield from self._give_up()
                return
            if self.pending:
                self.sleep(self.poll_seconds)

    def _hand_out(self) -> None:
        while self.queue:
            batch, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
            batch_run = self.runs.start(batch)
            for session_id in batch:
                self.pending[session_id].batches.append(batch_run)

    def _poll(self) -> tuple[list[Outcome], bool]:
        """One look at the batch runs and their reports: the sessions settled, and whether a batch started."""
        batches = {b for p in self.pending.values() for b in p.batches}
        states = self.runs.states(batches)
        running = {b for b in batches if states.get(b, BatchState.ENDED) is not BatchState.WAITING}
        started = bool(running - self.batches_started)
        self.batches_started |= running
        settled = [o for batch in sorted(running) for o in self._reports(batch)]

        latest: dict[str, list[str]] = {}
        for session_id, pending in self.pending.items():
            if pending.batches:
                latest.setdefault(pending.batches[-1], []).append(session_id)
        look = self.clock() - self._last_liveness >= self.liveness_every
        if look:
            self._last_liveness = self.clock()
        again: list[str] = []
        for batch, session_ids in latest.items():
            state = states.get(batch, BatchState.ENDED)
            if state is BatchState.ENDED:
                log.warning(
                    "batch run %s ended without %d session(s): handing them out again",
                    batch,
                    len(session_ids),
                )
                again += session_ids
            elif state is BatchState.RUNNING and look and self._gone(batch, session_ids):
                log.warning(
                    "batch run %s is gone (its process ended or its claim lapsed): handing out its %d session(s) again",
                    batch,
                    len(session_ids),
                )
                again += session_ids
        settled += self._again(again)
        return settled, started

    def _reports(self, batch: str) -> Iterator[Outcome]:
        """The outcomes ``batch`` reported that settle a pending session."""
        seen = self._reported.setdefault(batch, set())
        for session_id, outcome in self.ledger.read(self.run_id, batch, skip=seen).items():
            seen.add(session_id)
            pending = self.pending.get(session_id)
            if pending is None or batch not in pending.batches:
                continue
            # A batch run judged gone may still finish its session: its work counts. Its "held" or
            # "skipped" does not, once the session was handed to a newer batch run.
            if outcome.status in _WORK or batch == pending.batches[-1]:
                del self.pending[session_id]
                yield outcome if outcome.test_id else _with_test(outcome, pending.test_id)

    def _gone(self, batch: str, session_ids: list[str]) -> bool:
        """Whether a session record shows ``batch``'s claim lapsed or its holder gone: the run died."""
        for session_id in session_ids:
            record, _ = self.records.get(UUID(session_id))
            lease = record.lease if record is not None else None
            if (
                lease is not None
                and lease.owner == batch
                and not lease.blocks(self.run_id, self.run_finished)
            ):
                return True
        return False

    def _again(self, session_ids: list[str]) -> list[Outcome]:
        """Queue sessions for another batch, or fail those handed out too often; hand out the queue."""
        failed = []
        for session_id in session_ids:
            pending = self.pending[session_id]
            if len(pending.batches) >= MAX_HANDOUTS:
                del self.pending[session_id]
                failed.append(
                    self._failed(
                        session_id,
                        pending,
                        f"not processed: handed to {len(pending.batches)} batch runs that ended or died "
                        f"without it (the last: {pending.batches[-1]})",
                    )
                )
            elif session_id not in self.queue:
                self.queue.append(session_id)
        self._hand_out()
        return failed

    def _give_up(self) -> Iterator[Outcome]:
        """No progress for ``wait_seconds``: cancel the batches no worker took, fail what is left."""
        waiting = {p.batches[-1] for p in self.pending.values() if p.batches} - self.batches_started
        if waiting:
            self.runs.cancel(waiting)
        for session_id, pending in list(self.pending.items()):
            del self.pending[session_id]
            yield self._failed(
                session_id,
                pending,
                f"not processed: the processing pool made no progress for {self.wait_seconds:.0f} s "
                "(is a worker running on its work pool?)",
            )

    @staticmethod
    def _failed(session_id: str, pending: _Pending, reason: str) -> Outcome:
        return Outcome(session_id, pending.test_id, "failed", reason, stage="process")


def _with_test(outcome: Outcome, test_id: str | None) -> Outcome:
    return Outcome(**{**outcome.as_dict(), "test_id": test_id})
