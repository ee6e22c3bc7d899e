"""The deployments on a real local Prefect server, run by a real process worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from sandbox.local import LocalWorld
from sandbox.orchestrator import REPO_ROOT
from sandbox.world import CHECKOUT_SPEECH_SESSION_IDS, CHECKOUT_TEST_ID
from tests.conftest import env_for, register_deployments


def test_register_and_run_backfill_through_a_worker(
    prefect_api: dict[str, str], world: LocalWorld, tmp_path: Path
) -> None:
    env = {**prefect_api, **env_for(world, tmp_path / "ledger"), "UT_WORK_PREFIX": "deployed/"}
    registered = register_deployments(env, "--pool", "test-pool")
    assert "ut-backfill/backfill" in registered and "ut-nightly/nightly" in registered

    script = f"""
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    nightly = client.read_deployment_by_name("ut-nightly/nightly")
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC"), schedule
    backfill = client.read_deployment_by_name("ut-backfill/backfill")
    assert backfill.schedules == []
    run = client.create_flow_run_from_deployment(backfill.id, parameters={{"test_ids": ["{CHECKOUT_TEST_ID}"]}})
    print(run.id)
"""
    created = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert created.returncode == 0, created.stderr[-3000:]
    flow_run_id = created.stdout.strip().splitlines()[-1]

    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "test-pool", "--run-once"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]

    state = _flow_run_state(env, flow_run_id)
    assert state == "COMPLETED", worker.stdout[-3000:] + worker.stderr[-3000:]
    s3 = world.s3_client()
    for session_id in CHECKOUT_SPEECH_SESSION_IDS:
        key = f"deployed/sessions/{session_id}/session.json"
        assert b'"status": "done"' in s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()


def _flow_run_state(env: dict[str, Any], flow_run_id: str) -> str:
    script = f"""
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print(client.read_flow_run("{flow_run_id}").state.type.value)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
