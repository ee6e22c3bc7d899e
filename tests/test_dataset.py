"""The dataset end to end: real Prefect runs of the checkout test (with its task details), Delta tables
on the local S3, read back with the readers a downstream team would use, without this project."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import datasets
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from flows.cli import main as cli_main
from flows.pipeline import backfill, reprocess
from sandbox.local import LocalWorld
from sandbox.world import (
    CHECKOUT_CORRUPT_SESSION_ID,
    CHECKOUT_NO_VIDEO_SESSION_ID,
    CHECKOUT_SPEECH_SESSION_IDS,
    CHECKOUT_TEST_ID,
    build_world,
)
from tasks.dataset.publish import Dataset, unpublished
from tasks.dataset.tables import SESSIONS, TABLES, bucket_of
from tasks.storage.layout import BucketLayout
from tasks.storage.records import RecordStore, utcnow
from tests.conftest import isolated_env

CHECKOUT_SESSIONS = {*CHECKOUT_SPEECH_SESSION_IDS, CHECKOUT_NO_VIDEO_SESSION_ID, CHECKOUT_CORRUPT_SESSION_ID}
DETAILS_OP = "SessionResultsV3Controller_getSessionResults"


@pytest.fixture(scope="module")
def run(
    world: LocalWorld, prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One backfill of the checkout test with task details on; the dataset is published at its end."""
    with isolated_env(world, tmp_path_factory.mktemp("ledger"), "dataset") as (prefix, patch):
        patch.setenv("UT_SESSION_DETAILS", "true")
        mark = world.mark()
        summary = backfill(test_ids=[CHECKOUT_TEST_ID])
        yield {"summary": summary, "prefix": prefix, "patch": patch, "mark": mark}


def reader_options(world: LocalWorld) -> dict[str, str]:
    """What a downstream reader passes to deltalake/polars: plain AWS settings, nothing of this project."""
    return {
        "AWS_ENDPOINT_URL": world.s3.url,
        "AWS_ACCESS_KEY_ID": world.env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": world.env["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }


def uri(world: LocalWorld, run: dict[str, Any], table: str) -> str:
    return f"s3://{world.bucket}/{run['prefix']}dataset/{table}"


def read(
    world: LocalWorld, run: dict[str, Any], table: str, version: int | None = None
) -> list[dict[str, Any]]:
    delta = DeltaTable(uri(world, run, table), version=version, storage_options=reader_options(world))
    return delta.to_pyarrow_table().to_pylist()


def dataset(world: LocalWorld, run: dict[str, Any]) -> Dataset:
    return Dataset(world.s3_client(), world.bucket, BucketLayout(run["prefix"]))


def markers(world: LocalWorld, run: dict[str, Any]) -> list[unpublished.Marker]:
    return unpublished.pending(world.s3_client(), world.bucket, BucketLayout(run["prefix"]))


def test_one_run_publishes_every_table_with_one_key_scheme(world: LocalWorld, run: dict[str, Any]) -> None:
    published = run["summary"]["dataset"]
    assert published["mode"] == "full" and published["sessions"] == 5  # the first publish builds the tables
    sessions = {r["session_id"]: r for r in read(world, run, "sessions")}
    assert set(sessions) == {str(s) for s in CHECKOUT_SESSIONS}
    speech = sessions[str(CHECKOUT_SPEECH_SESSION_IDS[0])]
    assert speech["status"] == "done" and speech["transcript_language"] == "en" and speech["width"] == 640
    assert speech["segment_count"] > 0 and speech["task_count"] == 2 and speech["frame_count"] > 0
    assert speech["bucket"] == bucket_of(CHECKOUT_SPEECH_SESSION_IDS[0])
    assert sessions[str(CHECKOUT_NO_VIDEO_SESSION_ID)]["status"] == "no_video"
    assert sessions[str(CHECKOUT_CORRUPT_SESSION_ID)]["error_stage"] == "media"

    tasks = read(world, run, "tasks")
    assert {t["session_id"] for t in tasks} == {str(s) for s in CHECKOUT_SPEECH_SESSION_IDS} | {
        str(CHECKOUT_CORRUPT_SESSION_ID)
    }  # every session with a video; the no-video session has no details fetched
    assert {t["type"] for t in tasks} == {"WRITTEN", "RATING_SCALE"}
    rating = next(t for t in tasks if t["type"] == "RATING_SCALE")
    assert json.loads(rating["answer"])["ratingScale"]["scaleMaximum"] == 5
    frames, segments = read(world, run, "frames"), read(world, run, "segments")
    for sid in CHECKOUT_SPEECH_SESSION_IDS:
        mine = sorted((f for f in frames if f["session_id"] == str(sid)), key=lambda f: f["frame_index"])
        assert len(mine) == sessions[str(sid)]["frame_count"]
        assert [f["frame_index"] for f in mine] == list(range(len(mine)))
        spoken = [s for s in segments if s["session_id"] == str(sid)]
        assert len(spoken) == sessions[str(sid)]["segment_count"] and all(s["words"] for s in spoken)
    # The frames carry what was said around them: a frame mid-speech has words, within the window.
    assert any(f["speech_text"] for f in frames) and {f["speech_window_s"] for f in frames} == {5.0}
    # One details call per ingested video, after the link (the setting's budget).
    details = world.api_calls(DETAILS_OP, since=run["mark"])
    assert len(details) == 4 and all(c["status"] == 200 for c in details)
    assert markers(world, run) == []  # everything the run settled was published


def test_task_ids_on_segments_and_frames_agree_with_the_task_timings(
    world: LocalWorld, run: dict[str, Any]
) -> None:
    sandbox = build_world()  # the sandbox's own timings, computed here independently of the API
    tasks = read(world, run, "tasks")
    frames, segments = read(world, run, "frames"), read(world, run, "segments")
    assigned = 0
    for sid in CHECKOUT_SPEECH_SESSION_IDS:
        expected = sandbox.task_timings(sandbox.session(sid))
        mine = sorted((t for t in tasks if t["session_id"] == str(sid)), key=lambda t: t["task_index"])
        assert [(round(t["start_s"] * 1000), round(t["end_s"] * 1000)) for t in mine] == expected
        spans = [(t["task_id"], t["start_s"], t["end_s"]) for t in mine]
        for frame in (f for f in frames if f["session_id"] == str(sid)):
            inside = [tid for tid, start, end in spans if start <= frame["timestamp_s"] < end]
            assert frame["task_id"] == (inside[0] if inside else None), frame
            assigned += frame["task_id"] is not None
        for segment in (s for s in segments if s["session_id"] == str(sid)):
            overlaps = {
                tid: min(end, segment["end_s"]) - max(start, segment["start_s"]) for tid, start, end in spans
            }
            best = max(overlaps, key=lambda tid: overlaps[tid])
            assert segment["task_id"] == (best if overlaps[best] > 0 else None), (segment, spans)
    assert assigned and any(f["task_id"] is None for f in frames)  # the lead-in belongs to no task


def test_readers_without_the_project(world: LocalWorld, run: dict[str, Any]) -> None:
    """pyarrow, pandas, polars and Hugging Face datasets, and the frame-task join, as in the README."""
    options = reader_options(world)
    root = f"s3://{world.bucket}/{run['prefix']}dataset"
    arrow = DeltaTable(f"{root}/segments", storage_options=options).to_pyarrow_dataset()
    assert arrow.to_table(filter=pa.compute.field("task_id").is_valid()).num_rows > 0
    frames_pd: pd.DataFrame = DeltaTable(f"{root}/frames", storage_options=options).to_pandas()
    sessions_pl = pl.read_delta(f"{root}/sessions", storage_options=options)
    assert sessions_pl.height == 5 and frames_pd["session_id"].nunique() == 3
    hf = datasets.Dataset.from_pandas(
        DeltaTable(f"{root}/tasks", storage_options=options).to_pandas(), preserve_index=False
    )
    assert hf.num_rows == 8 and set(hf.column_names) >= {"session_id", "task_id", "text", "answer"}

    frames = pl.read_delta(f"{root}/frames", storage_options=options)
    tasks = pl.read_delta(f"{root}/tasks", storage_options=options)
    pairs = frames.join(
        tasks.select("session_id", "task_id", pl.col("text").alias("prompt"), "answer"),
        on=["session_id", "task_id"],
    ).select("key", "timestamp_s", "speech_text", "prompt", "answer")
    assert pairs.height == frames.filter(pl.col("task_id").is_not_null()).height > 0
    assert pairs["prompt"].str.contains("running shoes|check out").all()


def test_a_rerun_with_one_changed_session_replaces_only_its_rows(
    world: LocalWorld, run: dict[str, Any]
) -> None:
    changed = CHECKOUT_SPEECH_SESSION_IDS[1]
    before = {t.name: read(world, run, t.name) for t in TABLES}
    versions = {
        t.name: DeltaTable(uri(world, run, t.name), storage_options=reader_options(world)).version()
        for t in TABLES
    }
    run["patch"].setenv("UT_FRAME_RATE", "2")
    try:
        summary = reprocess(session_ids=[changed], stages=["frames"])
    finally:
        run["patch"].delenv("UT_FRAME_RATE")
    assert summary["dataset"]["mode"] == "incremental" and summary["dataset"]["sessions"] == 1
    after = {t.name: read(world, run, t.name) for t in TABLES}
    for name in before:
        kept = sorted(
            json.dumps(r, default=str, sort_keys=True)
            for r in before[name]
            if r["session_id"] != str(changed)
        )
        still = sorted(
            json.dumps(r, default=str, sort_keys=True) for r in after[name] if r["session_id"] != str(changed)
        )
        assert kept == still, name  # every other session's rows, untouched
    mine = [r for r in after["sessions"] if r["session_id"] == str(changed)]
    assert len(mine) == 1 and len(after["sessions"]) == 5
    old_frames = [r for r in before["frames"] if r["session_id"] == str(changed)]
    new_frames = [r for r in after["frames"] if r["session_id"] == str(changed)]
    assert len(new_frames) == mine[0]["frame_count"] and len(new_frames) > 1.5 * len(old_frames)
    # One commit per table, rewriting only the changed session's partition.
    for name in before:
        delta = DeltaTable(uri(world, run, name), storage_options=reader_options(world))
        assert delta.version() == versions[name] + 1
        touched = _files(world, run, name, versions[name]) ^ _files(world, run, name, versions[name] + 1)
        assert touched and all(path.startswith(f"bucket={bucket_of(changed)}/") for path in touched), touched
    # Time travel: the previous version still reads as it was.
    assert len(
        [r for r in read(world, run, "frames", versions["frames"]) if r["session_id"] == str(changed)]
    ) == len(old_frames)


def _files(world: LocalWorld, run: dict[str, Any], table: str, version: int) -> set[str]:
    return set(
        DeltaTable(uri(world, run, table), version=version, storage_options=reader_options(world))
        .get_add_actions(flatten=True)
        .column("path")
        .to_pylist()
    )


def test_a_forced_rerun_keeps_one_row_per_session(world: LocalWorld, run: dict[str, Any]) -> None:
    target = CHECKOUT_SPEECH_SESSION_IDS[2]
    before = {r["session_id"]: r for r in read(world, run, "sessions")}
    summary = backfill(test_ids=[CHECKOUT_TEST_ID], session_ids=[target], force=True)
    assert summary["counts"]["ingest"] == {"done": 1} and summary["dataset"]["mode"] == "incremental"
    after = read(world, run, "sessions")
    assert sorted(r["session_id"] for r in after) == sorted(before)
    row = next(r for r in after if r["session_id"] == str(target))
    assert row["updated_at"] > before[str(target)]["updated_at"] and row["status"] == "done"
    for table in ("tasks", "segments", "frames"):
        rows = [r for r in read(world, run, table) if r["session_id"] == str(target)]
        index = {"tasks": "task_index", "segments": "segment_index", "frames": "frame_index"}[table]
        assert sorted(r[index] for r in rows) == list(range(len(rows))), table  # no duplicates


def _touch(world: LocalWorld, run: dict[str, Any], session_ids: list[UUID]) -> None:
    """Rewrite these sessions' records (as a run settling them would): each leaves a marker."""
    store = RecordStore(world.s3_client(), world.bucket, BucketLayout(run["prefix"]))
    for sid in session_ids:
        record, etag = store.get(sid)
        assert record is not None
        store.put(record, etag)


def test_two_publishers_at_once_both_land_and_the_late_one_reads_again(
    world: LocalWorld, run: dict[str, Any]
) -> None:
    """A publisher that read records before another committed must not win with older rows: its
    commit conflicts and it reads again. A commit at a version someone else took is never overwritten."""
    changed = [CHECKOUT_SPEECH_SESSION_IDS[0], CHECKOUT_CORRUPT_SESSION_ID]
    _touch(world, run, changed)
    first, second = dataset(world, run), dataset(world, run)
    read_started, second_done = threading.Event(), threading.Event()
    original = first._read_inputs

    def slow_read(ids: list[UUID]) -> Any:
        if not read_started.is_set():
            read_started.set()
            assert second_done.wait(60)
            _touch(world, run, changed[:1])  # and one session changes again meanwhile
        return original(ids)

    first._read_inputs = slow_read  # type: ignore[method-assign]
    results: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: results.setdefault("first", first.publish()))
    thread.start()
    assert read_started.wait(60)
    results["second"] = second.publish()
    second_done.set()
    thread.join(120)
    assert results["second"].retries == 0 and results["first"].retries >= 1
    sessions = read(world, run, "sessions")
    assert len(sessions) == 5
    store = RecordStore(world.s3_client(), world.bucket, BucketLayout(run["prefix"]))
    for sid in changed:  # the table holds each session's latest record, not the one read first
        record, _ = store.get(sid)
        assert record is not None
        row = next(r for r in sessions if r["session_id"] == str(sid))
        assert row["updated_at"] == record.updated_at
    # The change made while the first publish was reading is in the table; its marker (listed by
    # neither publisher) goes with the next publish.
    assert len(markers(world, run)) == 1
    assert dataset(world, run).publish().sessions == 1 and markers(world, run) == []


def test_a_commit_never_overwrites_a_version_another_writer_took(
    world: LocalWorld, run: dict[str, Any]
) -> None:
    """delta-rs commits with a conditional put: an intruding commit at the next version is kept and
    the publish lands after it."""
    s3, layout = world.s3_client(), BucketLayout(run["prefix"])
    _touch(world, run, [CHECKOUT_SPEECH_SESSION_IDS[0]])
    publisher = dataset(world, run)
    original = publisher._read_inputs
    taken: dict[str, Any] = {}

    def intrude(ids: list[UUID]) -> Any:
        if not taken:
            for spec in TABLES:
                version = DeltaTable(publisher.uri(spec), storage_options=publisher.options).version() + 1
                key = f"{layout.dataset_table(spec.name)}_delta_log/{version:020d}.json"
                body = json.dumps({"commitInfo": {"timestamp": 1, "operation": "INTRUDER"}}) + "\n"
                s3.put_object(Bucket=world.bucket, Key=key, Body=body.encode(), IfNoneMatch="*")
                taken[spec.name] = (key, body)
        return original(ids)

    publisher._read_inputs = intrude  # type: ignore[method-assign]
    report = publisher.publish()
    assert report.commits == 4
    for spec in TABLES:
        key, body = taken[spec.name]
        assert s3.get_object(Bucket=world.bucket, Key=key)["Body"].read().decode() == body
        history = DeltaTable(publisher.uri(spec), storage_options=publisher.options).history(2)
        assert [h["operation"] for h in history] == ["WRITE", "INTRUDER"]


def test_a_failed_details_call_does_not_fail_the_video_and_is_asked_again(
    world: LocalWorld, run: dict[str, Any]
) -> None:
    target = CHECKOUT_SPEECH_SESSION_IDS[0]
    world.admin("POST", "faults", json=[{"target": DETAILS_OP, "session_id": str(target), "status": 403}])
    summary = backfill(test_ids=[CHECKOUT_TEST_ID], session_ids=[target], force=True, stages=["ingest"])
    assert summary["counts"]["ingest"] == {"done": 1} and not summary["failures"]
    store = RecordStore(world.s3_client(), world.bucket, BucketLayout(run["prefix"]))
    record, _ = store.get(target)
    assert (
        record is not None and record.task_details is not None and "403" in (record.task_details.error or "")
    )
    assert record.has_video
    backfill(
        test_ids=[CHECKOUT_TEST_ID], session_ids=[target], stages=["ingest"]
    )  # skipped, details asked again
    record, _ = store.get(target)
    assert record is not None and record.task_details is not None
    assert record.task_details.error is None and record.task_details.count == 2
    assert len([t for t in read(world, run, "tasks") if t["session_id"] == str(target)]) == 2


def test_publish_full_from_the_cli_and_a_table_from_an_older_schema(
    world: LocalWorld, run: dict[str, Any]
) -> None:
    """A table written before a column existed gains it (null in old rows) and readers of the old
    columns keep working; ``publish --full --compact`` rebuilds, merges files and vacuums."""
    options = reader_options(world)
    sessions_uri = uri(world, run, "sessions")
    old = DeltaTable(sessions_uri, storage_options=options).to_pyarrow_table().drop_columns(["task_count"])
    write_deltalake(sessions_uri, old, mode="overwrite", schema_mode="overwrite", storage_options=options)
    assert "task_count" not in DeltaTable(sessions_uri, storage_options=options).schema().to_arrow().names
    assert cli_main(["publish", "--full", "--compact"]) == 0
    table = DeltaTable(sessions_uri, storage_options=options)
    assert "task_count" in table.schema().to_arrow().names
    assert json.loads(table.metadata().description)["schema_version"] == SESSIONS.version
    old_reader = table.to_pyarrow_table(columns=old.column_names)
    assert old_reader.num_rows == 5 and old_reader.column_names == old.column_names
    assert markers(world, run) == []


def test_markers_are_settled_only_by_what_was_published() -> None:
    sid, now = UUID(int=1), utcnow()
    stamps = [now - timedelta(seconds=2), now, now + timedelta(seconds=1), now - timedelta(hours=2)]
    found = [unpublished.Marker(sid, s, f"k{n}") for n, s in enumerate(stamps)]
    other = unpublished.Marker(UUID(int=2), now, "other")
    done = unpublished.covered([*found, other], {sid: now - timedelta(seconds=1)}, now)
    # older than what was published: covered; newer: kept; ancient and never landed: dropped.
    assert [m.key for m in done] == ["k0", "k3"]
    assert [m.key for m in unpublished.covered(found, {sid: None}, now)] == ["k0", "k1", "k2", "k3"]
