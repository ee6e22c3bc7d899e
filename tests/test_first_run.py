"""The first run on a brand-new machine: a Prefect home that has never held a database.

Creating and migrating Prefect's database takes longer than Prefect's default 20 s wait for its
ephemeral server on a 2-core machine; the pipeline gives it the time it needs, and a start-up that
still fails is one line naming the setting, not a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.local import LocalWorld
from sandbox.world import CHECKOUT_TEST_ID
from tests.conftest import env_for


def first_run(
    world: LocalWorld, home: Path, tmp_path: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        **env_for(world, tmp_path / "ledger"),
        "PREFECT_HOME": str(home),
        "UT_WORK_PREFIX": f"first-{home.name}/",
        "UT_LOG_DIR": str(tmp_path / "logs"),
        **extra,
    }
    command = [
        sys.executable,
        "-m",
        "flows.cli",
        "backfill",
        "--test-id",
        str(CHECKOUT_TEST_ID),
        "--stage",
        "ingest",
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_machine_that_never_ran_prefect_runs_a_backfill(world: LocalWorld, tmp_path: Path) -> None:
    home = tmp_path / "new-prefect-home"
    assert not home.exists()
    result = first_run(world, home, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["counts"]["ingest"]["done"] == 4
    assert (home / "prefect.db").exists()


def test_a_prefect_that_does_not_start_is_one_line(world: LocalWorld, tmp_path: Path) -> None:
    result = first_run(
        world, tmp_path / "slow-prefect-home", tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("ut-pipeline:")]
    assert len(lines) == 1 and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=1" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
