"""End-to-end benchmark: a backlog through the real backfill flow, against the same work in a plain loop.

    .venv/bin/python -m bench.end_to_end [--sessions 24] [--rounds 3] [--quick]

The sandbox API and moto's S3 run on loopback with a compressed quota (100 requests per 1 s), so the
API is not the bottleneck. A backlog of the onboarding test's newest sessions (each backed by the
11 s ``speech-1.mp4``) is handled two ways, each round on a fresh bucket prefix so nothing is skipped:

- ``flow``: ``flows.pipeline.backfill`` (enumerate, ingest 4 at a time, process each session as soon
  as its video is in, one at a time, publish the dataset, record the run), Prefect on its ephemeral
  local server as a plain ``ut-pipeline backfill`` runs it;
- ``loop``: the same per-session functions in a plain Python loop, no Prefect: enumerate, then for each
  session ``Ingestor.ingest`` then ``Processor.process``, then ``dataset.publish``. The clients are
  built as ``tasks.steps.runtime()`` builds them, without its progress loggers (they need a Prefect
  run context).

Runs alternate (flow, loop, loop, flow, ...) after a warm-up flow on one session, which starts
Prefect's ephemeral server and loads the Whisper model; the medians are compared. Every call of
``Ingestor.ingest`` and ``Processor.process`` is timed in both modes (the methods are wrapped for the
run), so the report shows:

- stage overlap in the flow: the run summary's ``wall_seconds`` per stage, their sum against the
  total, and the per-session work against the wall time;
- orchestration overhead per session: (flow total - loop total) / sessions, and the part of it on
  the processing path (the flow's processing wall time minus the time spent inside ``process``).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

RATE_LIMIT, RATE_WINDOW = 100, 1.0


@contextmanager
def _timed_calls(calls: list[tuple[str, float, float]]) -> Iterator[None]:
    """Record (stage, start, end) of every Ingestor.ingest and Processor.process call meanwhile."""
    from tasks.ingest import Ingestor
    from tasks.process import Processor

    def timed(stage: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                calls.append((stage, started, time.perf_counter()))

        return wrapper

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(Ingestor, "ingest", timed("ingest", Ingestor.ingest)))
        stack.enter_context(mock.patch.object(Processor, "process", timed("process", Processor.process)))
        yield


def _plain_loop(test_id: uuid.UUID, since: datetime, wanted: set[uuid.UUID]) -> dict[str, Any]:
    """The flow's work without Prefect; the clients built as ``tasks.steps.runtime`` builds them."""
    from tasks.api.client import open_client
    from tasks.api.http import new_client
    from tasks.dataset import publish as dataset
    from tasks.ingest import Ingestor
    from tasks.media.transcribe import load_transcriber
    from tasks.process import FrameOptions, Processor
    from tasks.settings import load_settings
    from tasks.storage.layout import BucketLayout
    from tasks.storage.records import Stage
    from tasks.storage.s3 import s3_client
    from tasks.storage.transfer import MIB

    started = time.perf_counter()
    settings = load_settings()
    s3 = s3_client(max_pool_connections=4 * settings.download_concurrency + 8)
    bucket, layout = settings.require_bucket(), BucketLayout(settings.work_prefix)
    client = open_client(settings, s3=s3)
    http = new_client(
        timeout_seconds=settings.http_timeout_seconds, max_connections=settings.download_concurrency
    )
    ingestor = Ingestor(
        client,
        s3,
        bucket,
        layout,
        http,
        part_size=settings.part_size_mib * MIB,
        lease_seconds=settings.session_lease_seconds,
        vendor_transcripts=settings.vendor_transcripts,
    )
    processor = Processor(
        s3,
        bucket,
        layout,
        FrameOptions(
            settings.frame_rate, settings.scene_threshold, settings.ffmpeg_path, settings.media_max_loss
        ),
        transcriber=lambda: load_transcriber(
            settings.whisper_backend,
            settings.whisper_model,
            settings.whisper_device,
            settings.whisper_compute_type,
            settings.whisper_vad,
        ),
    )
    run_id = f"loop-{uuid.uuid4()}"
    timings: dict[str, float] = {}
    began = time.perf_counter()
    sessions = [s for s in client.completed_sessions(test_id, since, None) if s.session_id in wanted]
    timings["enumerate"] = time.perf_counter() - began
    outcomes = []
    began = time.perf_counter()
    for session in sessions:
        ingested = ingestor.ingest(session, test_id, run_id)
        outcomes.append(ingested)
        if ingested.has_video:
            outcomes.append(processor.process(session.session_id, run_id, {Stage.TRANSCRIBE, Stage.FRAMES}))
    timings["sessions"] = time.perf_counter() - began
    began = time.perf_counter()
    dataset.publish(s3, bucket, layout)
    timings["publish"] = time.perf_counter() - began
    http.close()
    return {"wall": time.perf_counter() - started, "timings": timings, "outcomes": outcomes}


def _flow(test_id: uuid.UUID, since: datetime, wanted: list[uuid.UUID]) -> dict[str, Any]:
    from flows.pipeline import backfill

    started = time.perf_counter()
    summary = backfill(test_ids=[test_id], since=since, session_ids=wanted)
    return {"wall": time.perf_counter() - started, "summary": summary}


def _measure(mode: str, sessions: list[uuid.UUID], since: datetime) -> dict[str, Any]:
    from sandbox.world import ONBOARDING_TEST_ID

    os.environ["UT_WORK_PREFIX"] = f"bench/{mode}-{uuid.uuid4().hex[:8]}/"
    calls: list[tuple[str, float, float]] = []
    with _timed_calls(calls):
        if mode == "flow":
            result = _flow(ONBOARDING_TEST_ID, since, sessions)
        else:
            with warnings.catch_warnings():
                # After a flow, Prefect's API log handler warns about the pipeline's log lines outside a run.
                warnings.filterwarnings("ignore", message=r"Logger .* without a flow run id")
                result = _plain_loop(ONBOARDING_TEST_ID, since, set(sessions))
    counts: dict[str, dict[str, int]] = {}
    if mode == "flow":
        counts = result["summary"]["counts"]
    for outcome in result.get("outcomes", []):
        stage = counts.setdefault(outcome.stage, {})
        stage[outcome.status] = stage.get(outcome.status, 0) + 1
    done = counts.get("process", {}).get("done", 0)
    if done != len(sessions) or counts.get("ingest", {}).get("done", 0) != len(sessions):
        raise RuntimeError(f"{mode}: not every session was ingested and processed: {counts}")
    for stage in ("ingest", "process"):
        spans = [(start, end) for name, start, end in calls if name == stage]
        result[f"{stage}_calls"] = [end - start for start, end in spans]
    first = min(start for _, start, _ in calls)
    last = max(end for _, _, end in calls)
    result["work_span"] = last - first  # first ingest call starts to last process call ends
    result["mode"], result["counts"] = mode, counts
    return result


def run(sessions: int, rounds: int) -> dict[str, Any]:
    from sandbox.local import start_local_world
    from sandbox.world import ONBOARDING_SESSION_COUNT, ONBOARDING_SPAN, onboarding_session_id

    ids = [onboarding_session_id(i) for i in range(sessions)]
    since = (
        datetime.now(UTC) - ONBOARDING_SPAN / ONBOARDING_SESSION_COUNT * (sessions + 1) - timedelta(days=1)
    )
    with start_local_world(rate_limit=RATE_LIMIT, rate_window=RATE_WINDOW) as world:
        os.environ.update(
            {
                **world.env,
                "UT_RATE_LIMIT_REQUESTS": str(RATE_LIMIT),
                "UT_RATE_LIMIT_WINDOW_SECONDS": str(RATE_WINDOW),
                # The default 0.5 s margin of a 60 s window, scaled; the ledger in the bucket, as in production.
                "UT_RATE_LIMIT_MARGIN_SECONDS": str(0.5 * RATE_WINDOW / 60),
                "UT_RATE_LIMIT_BACKEND": "s3",
            }
        )
        started = time.perf_counter()
        _measure("flow", ids[:1], since)  # Prefect's ephemeral server, the Whisper model, caches
        warm_up = time.perf_counter() - started
        results: dict[str, list[dict[str, Any]]] = {"flow": [], "loop": []}
        for index in range(rounds):
            order = ("flow", "loop") if index % 2 == 0 else ("loop", "flow")
            for mode in order:
                results[mode].append(_measure(mode, ids, since))
        api_calls = len(world.admin("GET", "stats")["api_requests"])
    return {
        "cores": os.cpu_count(),
        "sessions": sessions,
        "rounds": rounds,
        "warm_up": warm_up,
        "results": results,
        "api_calls": api_calls,
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (the faster middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["wall"])
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=24, help="backlog size")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode")
    parser.add_argument("--quick", action="store_true", help="6 sessions, 3 runs of each mode (about 2 min)")
    args = parser.parse_args()
    sessions = 6 if args.quick else args.sessions
    r = run(sessions, args.rounds)

    n = r["sessions"]
    flows, loops = r["results"]["flow"], r["results"]["loop"]
    flow, loop = _median_run(flows), _median_run(loops)
    wall = flow["summary"]["wall_seconds"]
    stages = {k: v for k, v in wall.items() if k != "total"}
    print(
        f"\nEnd to end: {n} sessions of the onboarding test (11.4 s 640x360 clip each), ingest + transcribe + frames,"
        f" on {r['cores']} cores; quota {RATE_LIMIT} per {RATE_WINDOW:g} s; {r['rounds']} runs of each mode, alternating;"
        f" warm-up flow (Prefect server start, model load) {r['warm_up']:.1f} s"
    )
    print("\nruns: wall s (time inside ingest + process calls, s)")
    for mode, runs in (("flow", flows), ("loop", loops)):
        listed = ", ".join(
            f"{x['wall']:.2f} ({sum(x['ingest_calls']):.2f} + {sum(x['process_calls']):.2f})" for x in runs
        )
        print(f"  {mode}: {listed}")

    print("\nStage overlap in the flow (the median flow run's summary, wall_seconds)")
    for name, seconds in stages.items():
        print(f"  {name:28} {seconds:8.2f} s")
    print(f"  {'sum of stages':28} {sum(stages.values()):8.2f} s")
    print(f"  {'total (summary)':28} {wall['total']:8.2f} s")
    print(f"  {'sum of stages / total':28} {sum(stages.values()) / wall['total']:8.2f}")
    work = sum(flow["ingest_calls"]) + sum(flow["process_calls"])
    print(
        f"  per-session work: {sum(flow['ingest_calls']):.2f} s in ingest + {sum(flow['process_calls']):.2f} s in process"
        f" = {work:.2f} s, done in {flow['work_span']:.2f} s of wall time ({work / flow['work_span']:.2f})"
    )

    print(f"\nOrchestration overhead: the same {n} sessions, Prefect flow against a plain loop (median runs)")
    print(f"{'':34} {'flow':>8} {'loop':>8} {'flow - loop':>12}")

    def line(label: str, f: float, lo: float, unit: str = "s") -> None:
        print(f"{label:34} {f:8.3f} {lo:8.3f} {f - lo:12.3f} {unit}")

    line("total wall", flow["wall"], loop["wall"])
    line("total wall per session", flow["wall"] / n, loop["wall"] / n)
    line("ingest call, mean", statistics.fmean(flow["ingest_calls"]), statistics.fmean(loop["ingest_calls"]))
    line(
        "process call, mean", statistics.fmean(flow["process_calls"]), statistics.fmean(loop["process_calls"])
    )
    gap = (wall["process"] - sum(flow["process_calls"])) / n
    print(f"{'flow processing wall / session':34} {wall['process'] / n:8.3f}")
    print(f"{'  of which outside process()':34} {gap:8.3f}")
    fixed = flow["wall"] - wall["total"]
    print(
        f"\nflow - loop = {flow['wall'] - loop['wall']:.2f} s: {fixed:.2f} s once per run outside the run's own clock "
        f"(flow run creation, artifacts, state changes), then {(wall['total'] - loop['wall']) / n:+.3f} s per session"
    )
    print(
        f"All {n} sessions ingested and processed in every run; the sandbox counted {r['api_calls']} API requests "
        f"(a listing page and one link per session, per run)."
    )


if __name__ == "__main__":
    main()
