"""Scale-out benchmark: the processing hand-off at 1, 2, 4 and 8 workers (orchestration only).

    .venv/bin/python -m bench.scale_out [--workers 1,2,4,8] [--seconds 3] [--batch 8]
        [--batches-per-worker 2] [--poll 2] [--quick]

The orchestration is the pipeline's own: a local Prefect server, real process workers (``prefect
worker start --limit 1``, one process each, as on separate machines), the dispatcher of
``tasks/handoff.py`` handing batches to a deployment with ``run_deployment`` and settling them from
the bucket (moto's S3 on loopback), and the batch flow of ``flows/processing.py`` claiming each session
(lease renewed in the background), writing its record and its report. Only the work is a stand-in:
each session costs a fixed ``--seconds`` of sleep instead of ffmpeg and Whisper. **Orchestration only**:
on a 2-core machine eight real transcriptions would share two cores; a sleep lets the eight workers
run side by side, so what is measured is the hand-off, not the cores.

Each worker count gets ``workers * batches-per-worker * batch`` sessions (ingested records, seeded in
a fresh bucket prefix) and its own fleet of workers (started, online, then the clock starts). Reported:

- throughput (sessions a minute) against the ideal ``workers * 60 / seconds``, and their ratio;
- the hand-off overhead per session: worker-seconds not spent on the stand-in work, per session,
  ``(workers * wall - sessions * seconds) / sessions``, and as a share of a 1-minute session;
- where a batch's overhead goes (medians over the batch runs, from their Prefect state history):
  waiting for a worker's poll once a worker is free, starting the flow-run process (Python, imports,
  loading the flow), and the rest of the run beyond ``batch * seconds`` (claims, records, reports,
  Prefect task runs), and the parent's wait after the last batch ended.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack, redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.processing import PrefectBatchRuns, process_batch
from sandbox.local import LocalWorld, start_local_world
from sandbox.orchestrator import REPO_ROOT, WorkerFleet, local_prefect_server
from tasks.handoff import Dispatcher, OutcomeLedger
from tasks.process import FrameOptions, Processor
from tasks.steps import prefect_run_finished, runtime
from tasks.storage.layout import BucketLayout
from tasks.storage.records import RecordStore, SessionRecord, Stage, Status, VideoInfo

POOL = "bench-scale"
DEPLOYMENT = "ut-process-standin/standin"
STAGES = [Stage.TRANSCRIBE, Stage.FRAMES]


class StandInProcessor(Processor):
    """The real claim, lease renewal and record writes around a fixed sleep instead of the work."""

    seconds = 0.0

    def _run(self, record: SessionRecord, run_id: str, *, transcribe: bool, frames: bool) -> dict[str, Any]:
        time.sleep(self.seconds)
        return {}


@flow(name="ut-process-standin")
def standin_batch(
    session_ids: list[UUID],
    stages: list[Stage],
    force: bool = False,
    report_to: str | None = None,
    seconds: float = 6.0,
) -> dict[str, int]:
    """``ut-process``'s batch flow, its processor swapped for a sleep of ``seconds`` per session."""
    rt = runtime()
    standin = StandInProcessor(
        rt.s3,
        rt.bucket,
        rt.layout,
        FrameOptions(),
        transcriber=rt.processor.transcriber,
        scratch=rt.scratch,
        lease_seconds=rt.settings.session_lease_seconds,
        run_finished=prefect_run_finished,
        worker_name=rt.settings.worker_name,
    )
    standin.seconds = seconds
    rt.processor = standin
    return process_batch.fn(session_ids, stages, force, report_to)


@dataclass
class Row:
    workers: int
    sessions: int
    wall: float
    seconds: float
    batch: int
    poll_wait: float
    process_start: float
    in_run: float
    settle_wait: float
    spread: int

    @property
    def throughput(self) -> float:
        return self.sessions * 60 / self.wall

    @property
    def ideal(self) -> float:
        return self.workers * 60 / self.seconds

    @property
    def overhead(self) -> float:
        return (self.workers * self.wall - self.sessions * self.seconds) / self.sessions

    def line(self) -> str:
        return (
            f"| {self.workers} | {self.sessions} | {self.wall:.1f} s | {self.throughput:.1f} / {self.ideal:.1f} "
            f"| **{self.throughput / self.ideal:.2f}** | {self.overhead:.2f} s ({100 * self.overhead / 60:.1f} %) "
            f"| {self.poll_wait:.2f} / {self.process_start:.2f} / {self.in_run:.2f} s | {self.settle_wait:.2f} s "
            f"| {self.spread} of {self.workers} |"
        )


def register(seconds: float) -> None:
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    standin = flow.from_source(source=str(REPO_ROOT), entrypoint="bench/scale_out.py:standin_batch")
    with redirect_stdout(io.StringIO()):  # deploy() prints a table
        standin.deploy(
            name="standin", work_pool_name=POOL, parameters={"seconds": seconds}, print_next_steps=False
        )


def seed(records: RecordStore, count: int) -> list[str]:
    """``count`` ingested sessions (the stand-in reads no video, so the record is all there is)."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for session_id in ids:
        video = VideoInfo(key=f"{session_id}/video.mp4", bytes=1, sha256="0" * 64, content_type="video/mp4")
        records.put(SessionRecord(session_id=UUID(session_id), status=Status.INGESTED, video=video), None)
    return ids


def history(run_id: str) -> dict[str, datetime]:
    """When the batch run entered each state (SCHEDULED, PENDING, RUNNING, COMPLETED)."""
    with get_client(sync_client=True) as client:
        return {s.type.value: s.timestamp for s in client.read_flow_run_states(UUID(run_id))}


def phases(batch_worker: dict[str, str], work: float) -> dict[str, float]:
    """Medians over the batch runs of: the wait for a worker's poll once a worker was free (it is free
    when its previous batch ended), the flow-run process's start, and the run beyond ``work`` seconds."""
    states = {run: history(run) for run in batch_worker}
    poll, start, rest = [], [], []
    for worker in set(batch_worker.values()):
        free: datetime | None = None
        for run in sorted(
            (r for r, w in batch_worker.items() if w == worker), key=lambda r: states[r]["PENDING"]
        ):
            at = states[run]
            poll.append((at["PENDING"] - max(at["SCHEDULED"], free or at["SCHEDULED"])).total_seconds())
            start.append((at["RUNNING"] - at["PENDING"]).total_seconds())
            rest.append((at["COMPLETED"] - at["RUNNING"]).total_seconds() - work)
            free = at["COMPLETED"]
    return {
        "poll_wait": statistics.median(poll),
        "process_start": statistics.median(start),
        "in_run": statistics.median(rest),
        "last_end": max(at["COMPLETED"] for at in states.values()).timestamp(),
    }


def measure(
    workers: int, args: argparse.Namespace, world: LocalWorld, env: dict[str, str], logs: Path
) -> Row:
    """One worker count: a fleet of its own, a fresh prefix, every session handed out and settled."""
    prefix = f"bench-scale-{uuid.uuid4().hex[:8]}/"
    layout, s3 = BucketLayout(prefix), world.s3_client()
    records = RecordStore(s3, world.bucket, layout)
    ids = seed(records, workers * args.batches_per_worker * args.batch)
    fleet_env = {**env, "UT_WORK_PREFIX": prefix, "UT_SCRATCH_DIR": str(logs / "scratch")}
    with WorkerFleet(fleet_env, POOL, logs / f"workers-{workers}", poll_seconds=args.poll) as fleet:
        fleet.start(*(f"w{n}" for n in range(1, workers + 1)))
        run_id = str(uuid.uuid4())
        dispatcher = Dispatcher(
            PrefectBatchRuns(DEPLOYMENT, run_id, STAGES, False),
            OutcomeLedger(s3, world.bucket, layout),
            records,
            run_id,
            batch_size=args.batch,
            wait_seconds=600,
            lease_seconds=120,
            run_finished=prefect_run_finished,
        )
        began = time.time()
        for session_id in ids:
            dispatcher.submit(session_id, None)
        outcomes = list(dispatcher.settle())
        ended = time.time()
    assert sorted(o.session_id for o in outcomes) == sorted(ids), "a session was lost"
    assert {o.status for o in outcomes} == {"done"}, {o.status for o in outcomes}
    batch_worker: dict[str, str] = {}
    for session_id in ids:
        record, _ = records.get(UUID(session_id))
        assert record is not None and record.processing.attempts == 1, "a session was processed twice"
        assert record.processing.run_id and record.processing.worker
        batch_worker[record.processing.run_id] = record.processing.worker.split("@")[0]
    found = phases(batch_worker, args.batch * args.seconds)
    return Row(
        workers=workers,
        sessions=len(ids),
        wall=ended - began,
        seconds=args.seconds,
        batch=args.batch,
        poll_wait=found["poll_wait"],
        process_start=found["process_start"],
        in_run=found["in_run"],
        settle_wait=ended - found["last_end"],
        spread=len(set(batch_worker.values())),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=6.0, help="stand-in cost of one session")
    parser.add_argument("--batch", type=int, default=8, help="sessions per batch (UT_PROCESS_BATCH_SIZE)")
    parser.add_argument("--batches-per-worker", type=int, default=2)
    parser.add_argument("--poll", type=float, default=2.0, help="PREFECT_WORKER_QUERY_SECONDS of the workers")
    parser.add_argument("--quick", action="store_true", help="1 and 2 workers, 1 s sessions, batches of 4")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.seconds, args.batch, args.batches_per_worker = "1,2", 1.0, 4, 2
    counts = [int(n) for n in args.workers.split(",")]
    print(
        f"stand-in work: {args.seconds:g} s of sleep per session (orchestration only); batches of {args.batch}, "
        f"{args.batches_per_worker} per worker; workers poll every {args.poll:g} s; {os.cpu_count()} CPUs",
        flush=True,
    )
    with ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
        world = stack.enter_context(start_local_world())
        server_env = stack.enter_context(local_prefect_server(logs))
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server_env["PREFECT_API_URL"]}))
        env = {**server_env, **world.env}
        register(args.seconds)
        print(
            "| workers | sessions | wall | sessions/min: measured / ideal | of linear | hand-off per session "
            "(of a 1-min session) | per batch: poll wait / process start / rest of run | parent's wait "
            "after the last batch | workers used |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            sep="\n",
            flush=True,
        )
        for workers in counts:
            print(measure(workers, args, world, env, logs).line(), flush=True)


if __name__ == "__main__":
    main()
