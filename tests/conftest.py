"""Shared fixtures: the local world (sandbox Results API + local S3) as real servers on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from prefect.testing.utilities import prefect_test_harness

from sandbox.local import LocalWorld, start_local_world
from sandbox.orchestrator import REPO_ROOT, local_prefect_server
from tasks.api.client import ResultsApiClient, open_client
from tasks.settings import load_settings

# Tests must never reach the real API or AWS, whatever the developer's shell exports.
for _name in [n for n in os.environ if n.startswith(("UT_", "AWS_", "PREFECT_API_URL"))]:
    del os.environ[_name]

# A compressed clock: 10 requests per second keeps the suite fast and the limiter exercised.
FAST = {"rate_limit": 10, "rate_window": 1.0}


@pytest.fixture(scope="session")
def world() -> Iterator[LocalWorld]:
    """One local world for the session, on a one-second rate window."""
    with start_local_world(**FAST) as started:
        yield started


@pytest.fixture
def fresh_world() -> Iterator[Callable[..., LocalWorld]]:
    """A factory for worlds with their own time scale (short token or link lifetimes)."""
    with ExitStack() as stack:

        def make(**kwargs: Any) -> LocalWorld:
            return stack.enter_context(start_local_world(**{**FAST, **kwargs}))

        yield make


def env_for(world: LocalWorld, ledger_dir: Path) -> dict[str, str]:
    """The production variables pointed at ``world``, on its fast clock, with a private file ledger."""
    return {
        **world.env,
        "UT_RATE_LIMIT_REQUESTS": str(FAST["rate_limit"]),
        "UT_RATE_LIMIT_WINDOW_SECONDS": str(FAST["rate_window"]),
        "UT_RATE_LIMIT_MARGIN_SECONDS": "0.02",
        "UT_RATE_LIMIT_BACKEND": "file",
        "UT_RATE_LIMIT_DIR": str(ledger_dir),
    }


@contextmanager
def isolated_env(world: LocalWorld, ledger_dir: Path, label: str) -> Iterator[tuple[str, pytest.MonkeyPatch]]:
    """For module-scoped fixtures: the world's environment with a bucket prefix of its own, undone on exit."""
    patch, prefix = pytest.MonkeyPatch(), f"{label}-{uuid4().hex[:8]}/"
    for name, value in {**env_for(world, ledger_dir), "UT_WORK_PREFIX": prefix}.items():
        patch.setenv(name, value)
    try:
        yield prefix, patch
    finally:
        patch.undo()


@pytest.fixture
def world_env(world: LocalWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The session world, its counters reset, as this test's environment."""
    env = env_for(world, tmp_path / "ledger")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    world.admin("POST", "reset")
    return env


@pytest.fixture
def client(world_env: dict[str, str]) -> Iterator[ResultsApiClient]:
    api = open_client(load_settings(max_attempts=4))
    api.max_backoff = 0.2
    yield api
    api.close()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server (SQLite) for in-process flow runs."""
    with prefect_test_harness():
        yield


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Prefect server as a process of its own, for workers; yields the environment that reaches it."""
    with local_prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env


def register_deployments(env: dict[str, str], *args: str) -> str:
    """``python -m deployments.register ARGS`` as ``prefect deploy`` would be run; returns its output."""
    result = subprocess.run(
        [sys.executable, "-m", "deployments.register", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def ingest_cli(test_id: UUID) -> list[str]:
    """``ut-pipeline backfill --test-id ID --stage ingest`` as a subprocess command line."""
    return [sys.executable, "-m", "flows.cli", "backfill", "--test-id", str(test_id), "--stage", "ingest"]
