"""Publishing one changed session into dataset tables of 1,000 to 100,000 sessions, against today's full rebuild.

    python -m bench.dataset [--sizes 1000,10000,100000] [--repeats 3] [--quick]

For each size, a fresh local S3 (moto, every request logged) gets N synthetic ``session.json``
records written straight to the bucket (32 at a time), and the four Delta tables are built from the
same N synthetic sessions through the publisher's own full-rebuild path (``Dataset._commit``), with
the inputs generated in memory instead of read back from S3 (reading them would only lengthen the
setup). Each session has 3 tasks, 10 transcript segments of 8 words and 30 frames.

Then, ``--repeats`` times, one session's record is rewritten the way a run settles it (which leaves
its marker) and the incremental publish runs: wall time and the S3 requests the server logged.
"Today's full rebuild" is the single-file publish this project had before (list every key under
``sessions/``, GET every ``session.json``, write ``dataset/sessions.parquet``), measured once per size.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.local import LOCAL_AWS
from sandbox.process import ServerProcess, spawn
from tasks.dataset.publish import Dataset, PublishReport, all_records
from tasks.dataset.rows import SessionInputs, session_row
from tasks.dataset.tables import SESSIONS, TABLES
from tasks.storage.layout import BucketLayout
from tasks.storage.records import (
    FramesInfo,
    RecordStore,
    SessionRecord,
    Status,
    TaskDetailsInfo,
    TranscriptInfo,
    VideoInfo,
)
from tasks.storage.s3 import s3_client

BUCKET = "ut-bench-dataset"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://bench.ut-video-pipeline.invalid/dataset")
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
REQUEST_LINE = re.compile(r'"(GET|PUT|POST|DELETE|HEAD) ')
LIST_LINE = re.compile(r'"GET /[^/ ?]+\?list-type=2')
WORDS = [
    "okay",
    "so",
    "I",
    "am",
    "looking",
    "at",
    "the",
    "checkout",
    "page",
    "now",
    "and",
    "the",
    "total",
    "is",
    "at",
    "the",
    "bottom",
]


def session_id(n: int) -> UUID:
    return uuid.uuid5(NAMESPACE, f"session/{n}")


def synthetic(n: int, layout: BucketLayout) -> SessionInputs:
    """The n-th synthetic session: a record and the JSON a processed session has beside its video."""
    sid = session_id(n)
    finish = ANCHOR - timedelta(minutes=n)
    record = SessionRecord(
        session_id=sid,
        test_id=uuid.uuid5(NAMESPACE, f"test/{n % 20}"),
        status=Status.DONE,
        api={
            "sessionId": str(sid),
            "status": "COMPLETE",
            "startTime": (finish - timedelta(minutes=9)).isoformat(),
            "finishTime": finish.isoformat(),
        },
        video=VideoInfo(
            key=layout.session_video(sid), bytes=10_000_000 + n, sha256=f"{n:064x}", content_type="video/mp4"
        ),
        transcript=TranscriptInfo(
            json_key=layout.session_file(sid, "transcript.json"),
            vtt_key="",
            srt_key="",
            text=" ".join(WORDS * 5),
            language="en",
            model="tiny.en",
            backend="faster-whisper",
            segments=10,
        ),
        frames=FramesInfo(
            prefix=layout.session_file(sid, "frames/"),
            index_key=layout.session_file(sid, "frames/index.json"),
            count=30,
            interval_count=30,
            scene_count=0,
            frame_rate=1.0,
            scene_threshold=0.2,
        ),
        task_details=TaskDetailsInfo(key=layout.session_file(sid, "tasks.json"), count=3),
        updated_at=ANCHOR,
    )
    segments = [
        {
            "start": 3.0 * s,
            "end": 3.0 * s + 2.5,
            "text": " ".join(WORDS[s % 8 : s % 8 + 8]),
            "words": [
                {
                    "start": 3.0 * s + 0.3 * w,
                    "end": 3.0 * s + 0.3 * w + 0.25,
                    "word": f" {WORDS[(s + w) % len(WORDS)]}",
                    "probability": 0.9,
                }
                for w in range(8)
            ],
        }
        for s in range(10)
    ]
    frames = [
        {
            "key": f"{record.frames.prefix}interval-{f:06d}.jpg",
            "timestamp": float(f),
            "kind": "interval",
            "width": 1280,
            "height": 720,
        }
        for f in range(30)
    ]  # type: ignore[union-attr]
    tasks = {
        "tasks": [
            {
                "uuid": str(uuid.uuid5(NAMESPACE, f"task/{t}")),
                "text": f"Task {t}",
                "type": "WRITTEN",
                "response": {
                    "startTimeMs": 10_000 * t,
                    "endTimeMs": 10_000 * t + 9_000,
                    "skipped": False,
                    "answer": {"written": {"response": "fine"}},
                },
            }
            for t in range(3)
        ]
    }
    return SessionInputs(
        record=record,
        transcript={"language": "en", "model": "tiny.en", "segments": segments},
        frames=frames,
        tasks=tasks,
    )


class SyntheticDataset(Dataset):
    """The publisher, with the inputs of a full rebuild generated here instead of read from S3."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generated = False

    def _read_inputs(self, session_ids: list[UUID]) -> list[SessionInputs | None]:
        if self.generated:
            return super()._read_inputs(session_ids)
        return [synthetic(self.index[sid], self.layout) for sid in session_ids]

    def build(self, count: int) -> None:
        self.index = {session_id(n): n for n in range(count)}
        tables: dict[str, Any] = {spec.name: None for spec in TABLES}
        self._commit(sorted(self.index, key=str), None, tables, PublishReport("full"))
        self._finish_rebuild(tables)
        self.generated = True


def write_records(s3: Any, layout: BucketLayout, count: int, changed: list[int]) -> None:
    """Every session.json, and the inputs of the sessions that will change, straight to the bucket."""

    def put(n: int) -> None:
        found = synthetic(n, layout)
        s3.put_object(
            Bucket=BUCKET,
            Key=layout.session_json(found.record.session_id),
            Body=found.record.model_dump_json().encode(),
        )
        if n in changed:
            for key, body in (
                (found.record.transcript.json_key, found.transcript),  # type: ignore[union-attr]
                (found.record.frames.index_key, found.frames),  # type: ignore[union-attr]
                (found.record.task_details.key, found.tasks),
            ):  # type: ignore[union-attr]
                s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(body).encode())

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(put, range(count)))


def legacy_full_rebuild(s3: Any, layout: BucketLayout) -> int:
    """Today's publish before this change: every key listed, every session.json read, one Parquet file."""
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=layout.sessions_root())
        for obj in page.get("Contents", [])
        if obj["Key"].endswith("/session.json")
    ]

    def read(key: str) -> SessionRecord:
        return SessionRecord.model_validate_json(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    with ThreadPoolExecutor(max_workers=16) as pool:
        rows = [session_row(r) for r in pool.map(read, keys)]
    schema = pa.schema(
        [f for f in SESSIONS.schema if f.name not in {"segment_count", "task_count", "bucket"}]
    )
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer, compression="zstd")
    s3.put_object(Bucket=BUCKET, Key=layout.legacy_sessions_parquet(), Body=buffer.getvalue())
    return len(rows)


def requests_logged(server: ServerProcess) -> tuple[int, int]:
    """Requests and LIST requests in the server's log so far."""
    log = server.log()
    return len(REQUEST_LINE.findall(log)), len(LIST_LINE.findall(log))


def measure(server: ServerProcess, action: Any) -> tuple[float, tuple[int, int], Any]:
    before = requests_logged(server)
    began = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - began
    time.sleep(0.2)  # let the server flush its log lines
    after = requests_logged(server)
    return seconds, (after[0] - before[0], after[1] - before[1]), result


def list_seconds(s3: Any) -> float:
    """What one LIST of an empty prefix costs this server: moto scans every key of the bucket for
    each LIST (real S3 answers in time proportional to what it returns), so this grows with N."""
    times = []
    for _ in range(5):
        began = time.perf_counter()
        s3.list_objects_v2(Bucket=BUCKET, Prefix="nothing/here/")
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def run_size(count: int, repeats: int) -> dict[str, Any]:
    with spawn("sandbox.s3", ["--log-requests"]) as server:
        os.environ.update({**LOCAL_AWS, "AWS_ENDPOINT_URL": server.url})
        s3 = s3_client(max_pool_connections=48)
        s3.create_bucket(Bucket=BUCKET)
        layout = BucketLayout("bench/")
        changed = [count // (repeats + 1) * (k + 1) for k in range(repeats)]
        began = time.perf_counter()
        write_records(s3, layout, count, changed)
        SyntheticDataset(s3, BUCKET, layout).build(count)
        setup = time.perf_counter() - began
        publisher = SyntheticDataset(s3, BUCKET, layout)
        publisher.generated = True
        store = RecordStore(s3, BUCKET, layout)
        runs = []
        for n in changed:
            record, etag = store.get(session_id(n))
            assert record is not None
            store.put(record.model_copy(update={"error": None}), etag)  # settles the session again: a marker
            seconds, requests, report = measure(server, publisher.publish)
            assert report.mode == "incremental" and report.sessions == 1, report
            runs.append((seconds, requests, report))
        legacy_seconds, legacy_requests, rows = measure(server, lambda: legacy_full_rebuild(s3, layout))
        one_list = list_seconds(s3)
        assert rows == count and sum(1 for _ in all_records(store)) == count
    return {
        "sessions": count,
        "setup_s": round(setup, 1),
        "publish_s": round(statistics.median(r[0] for r in runs), 3),
        "publish_requests": statistics.median(r[1][0] for r in runs),
        "publish_lists": statistics.median(r[1][1] for r in runs),
        "rows_written": runs[0][2].rows,
        "legacy_s": round(legacy_seconds, 3),
        "legacy_requests": legacy_requests[0],
        "legacy_lists": legacy_requests[1],
        "moto_list_s": round(one_list, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dataset", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="comma-separated table sizes in sessions"
    )
    parser.add_argument("--repeats", type=int, default=3, help="one-session publishes per size (median)")
    parser.add_argument("--quick", action="store_true", help="sizes 1,000 and 10,000 only")
    args = parser.parse_args()
    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sizes.split(",")]
    results = []
    for count in sizes:
        result = run_size(count, args.repeats)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(
        "\n| sessions | setup | publish 1 changed session | its requests (LISTs) | today's full rebuild"
        " | its requests (LISTs) | rebuild / publish | one LIST on this server |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['sessions']:,} | {r['setup_s']} s | {r['publish_s']} s | {r['publish_requests']:.0f}"
            f" ({r['publish_lists']:.0f}) | {r['legacy_s']} s | {r['legacy_requests']} ({r['legacy_lists']})"
            f" | {r['legacy_s'] / r['publish_s']:.1f}x | {r['moto_list_s'] * 1000:.1f} ms |"
        )
    first, last = results[0], results[-1]
    print(
        f"\npublish time {last['sessions']:,} vs {first['sessions']:,}: {last['publish_s'] / first['publish_s']:.2f}x;"
        f" requests {last['publish_requests'] / first['publish_requests']:.2f}x;"
        f" one LIST on this server {last['moto_list_s'] / first['moto_list_s']:.0f}x"
    )


if __name__ == "__main__":
    main()
