"""Processing on a pool of workers: a real Prefect server, real process workers (separate processes,
as they would be on separate machines), the backfill CLI with ``UT_PROCESS_DEPLOYMENT`` set.

Each test gets a bucket prefix and workers of its own; the server and the deployments are shared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
from prefect.settings import PREFECT_API_URL, temporary_settings

from sandbox.local import LocalWorld
from sandbox.orchestrator import WorkerFleet
from sandbox.world import CHECKOUT_CORRUPT_SESSION_ID, CHECKOUT_SPEECH_SESSION_IDS, CHECKOUT_TEST_ID
from tests.conftest import env_for, register_deployments
from tests.test_faults import assert_clean_console, cli, records, start_cli, wait_for

POOL = "scale-process"
POOLS = ("--pool", "scale-flows", "--process-pool", POOL, "--gpu-pool", "scale-gpu")
WITH_VIDEO = [str(s) for s in (*CHECKOUT_SPEECH_SESSION_IDS, CHECKOUT_CORRUPT_SESSION_ID)]
SPEECH = [str(s) for s in CHECKOUT_SPEECH_SESSION_IDS]


@pytest.fixture(scope="module")
def registered(prefect_api: dict[str, str]) -> dict[str, str]:
    """The deployments, ``ut-process/cpu`` on its own pool; returns the environment reaching the server."""
    registered = register_deployments(prefect_api, *POOLS)
    assert "registered ut-process/cpu" in registered and repr(POOL) in registered, registered
    return prefect_api


@pytest.fixture
def fleet(registered: dict[str, str], world: LocalWorld, tmp_path: Path) -> Iterator[WorkerFleet]:
    """Workers of the processing pool (started by each test), with this test's bucket prefix."""
    env = {
        **registered,
        **env_for(world, tmp_path / "ledger"),
        "UT_WORK_PREFIX": f"scale-{uuid4().hex[:8]}/",
        "UT_LOG_DIR": str(tmp_path / "logs"),
        "UT_SCRATCH_DIR": str(tmp_path / "scratch"),
        "UT_SESSION_LEASE_SECONDS": "20",
    }
    with WorkerFleet(env, POOL, tmp_path / "workers") as workers:
        yield workers


def on_the_pool(fleet: WorkerFleet) -> dict[str, str]:
    """The CLI's environment: the fleet's, with processing handed to the pool one session a batch."""
    return {**fleet.env, "UT_PROCESS_DEPLOYMENT": "ut-process/cpu", "UT_PROCESS_BATCH_SIZE": "1"}


def worker_of(record: dict[str, object]) -> str:
    processing = record["processing"]
    assert isinstance(processing, dict)
    return str(processing["worker"]).split("@", 1)[0]


def batch_runs(fleet: WorkerFleet, run_ids: set[str]) -> dict[str, tuple[str, str]]:
    """Flow name and state of each of these flow runs, as the Prefect server has them."""
    with (
        temporary_settings(updates={PREFECT_API_URL: fleet.env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(r) for r in run_ids]))
        )
        flows = {r.flow_id: client.read_flow(r.flow_id).name for r in runs}
    return {str(r.id): (flows[r.flow_id], r.state.type.value if r.state else "") for r in runs}


@pytest.mark.slow
def test_a_backfill_spreads_over_two_workers_and_processes_each_session_once(
    fleet: WorkerFleet, world: LocalWorld
) -> None:
    fleet.start("w1", "w2")
    result = cli("backfill", "--test-id", str(CHECKOUT_TEST_ID), env=on_the_pool(fleet))
    assert result.returncode == 1, result.stderr[-3000:]  # the corrupt video fails, at the media stage
    assert_clean_console(result)
    summary = json.loads(result.stdout)
    assert summary["counts"]["process"] == {"done": 3, "failed": 1}, summary
    assert [f["session_id"] for f in summary["failures"]] == [str(CHECKOUT_CORRUPT_SESSION_ID)]
    assert summary["run_errors"] == [] and summary["dataset"], summary  # published after the pool's work

    found = records(world, fleet.env["UT_WORK_PREFIX"])
    for session_id in WITH_VIDEO:
        rec = found[session_id]
        assert rec["processing"]["attempts"] == 1, rec["processing"]  # claimed once: processed once
        assert rec["lease"] is None
    assert all(found[s]["status"] == "done" and found[s]["transcript"]["text"] for s in SPEECH)
    assert found[str(CHECKOUT_CORRUPT_SESSION_ID)]["error"]["stage"] == "media"
    assert {worker_of(found[s]) for s in WITH_VIDEO} == {"w1", "w2"}

    runs = {found[s]["processing"]["run_id"] for s in WITH_VIDEO}
    assert summary["run_id"] not in runs and len(runs) == len(WITH_VIDEO)  # one batch run each
    assert set(batch_runs(fleet, runs).values()) == {("ut-process", "COMPLETED")}


@pytest.mark.slow
def test_a_worker_killed_mid_session_loses_nothing_and_another_finishes_its_work(
    fleet: WorkerFleet, world: LocalWorld
) -> None:
    fleet.start("w1", "w2")
    prefix = fleet.env["UT_WORK_PREFIX"]
    run = start_cli("backfill", "--test-id", str(CHECKOUT_TEST_ID), env=on_the_pool(fleet))
    victim: dict[str, str] = {}

    def speech_session_in_progress() -> bool:
        found = records(world, prefix)
        for session_id in SPEECH:
            if session_id in found and found[session_id]["status"] == "processing":
                victim.update(session=session_id, worker=worker_of(found[session_id]))
                return True
        return False

    try:
        wait_for(speech_session_in_progress, "a speech session being processed", run, timeout=240)
        fleet.kill(victim["worker"])
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, stderr[-3000:]  # the corrupt video only
    summary = json.loads(stdout)
    assert summary["counts"]["process"] == {"done": 3, "failed": 1}, summary
    assert "is gone (its process ended or its claim lapsed): handing out its 1 session(s) again" in stderr

    found = records(world, prefix)
    survivor = ({"w1", "w2"} - {victim["worker"]}).pop()
    taken = found[victim["session"]]
    assert taken["status"] == "done" and taken["lease"] is None and taken["transcript"]["text"]
    assert taken["processing"]["attempts"] == 2, taken["processing"]  # the killed claim, then the survivor's
    assert worker_of(taken) == survivor
    for session_id in SPEECH:
        assert found[session_id]["status"] == "done" and found[session_id]["lease"] is None


@pytest.mark.slow
def test_with_no_worker_on_the_pool_a_run_ends_with_its_sessions_unprocessed_and_its_batches_cancelled(
    fleet: WorkerFleet, world: LocalWorld
) -> None:
    env = {**on_the_pool(fleet), "UT_PROCESS_WAIT_SECONDS": "5"}  # and not a worker started
    result = cli("backfill", "--test-id", str(CHECKOUT_TEST_ID), env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    assert_clean_console(result)
    summary = json.loads(result.stdout)
    assert summary["counts"]["ingest"]["done"] == len(WITH_VIDEO), summary
    assert summary["counts"]["process"] == {"failed": len(WITH_VIDEO)}, summary
    assert all("made no progress for 5 s" in f["reason"] for f in summary["failures"]), summary["failures"]

    found = records(world, fleet.env["UT_WORK_PREFIX"])
    assert all(found[s]["status"] == "ingested" and found[s]["lease"] is None for s in WITH_VIDEO)
    with (
        temporary_settings(updates={PREFECT_API_URL: fleet.env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        batches = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(summary["run_id"])])
            )
        )
    assert len(batches) == len(WITH_VIDEO)  # the run's subflow runs: one a session, batches of 1
    assert {r.state.type.value for r in batches if r.state} == {"CANCELLED"}
