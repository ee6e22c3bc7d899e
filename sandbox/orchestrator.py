"""A local Prefect server and a fleet of process workers, for the tests and the benchmarks.

The same commands an operator runs (``prefect server start``, ``prefect worker start``), as child
processes on loopback, each in its own session so that one worker and its flow runs can be killed
together, as a machine that dies would be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.ui import HOST, WORKER_COMMAND, loopback_port, process_groups, stop_tree, wait_for_prefect
from tasks.settings import without_api_credentials

REPO_ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def local_prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """A Prefect server of its own (SQLite in ``home``); yields this environment pointed at it."""
    port = loopback_port(0)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_API_URL": f"http://{HOST}:{port}/api",
    }
    log = home / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_prefect(env["PREFECT_API_URL"], server, log)
        yield env
    finally:
        stop_tree(server)


@dataclass
class WorkerFleet:
    """Process workers of one work pool, each named (``UT_WORKER_NAME`` too) and running one flow run
    at a time; ``env`` is what they and their flow runs see (the Prefect API, the ``UT_*`` settings)."""

    env: dict[str, str]
    pool: str
    log_dir: Path
    poll_seconds: float = 1.0
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, *names: str) -> None:
        """Start these workers and return once the server lists every one of them as online."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            env = {
                **without_api_credentials(self.env),  # as in production: processing never calls the API
                "UT_WORKER_NAME": name,
                "PREFECT_WORKER_QUERY_SECONDS": str(self.poll_seconds),
                "PREFECT_WORKER_PREFETCH_SECONDS": str(self.poll_seconds),
            }
            with (self.log_dir / f"{name}.log").open("ab") as out:
                self.workers[name] = subprocess.Popen(
                    [*WORKER_COMMAND, "--pool", self.pool, "--name", name, "--limit", "1"],
                    env=env,
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        self._wait_online(set(names))

    def _wait_online(self, names: set[str], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with temporary_settings(updates={PREFECT_API_URL: self.env["PREFECT_API_URL"]}):
            while True:
                with get_client(sync_client=True) as client:
                    online = {
                        w.name for w in client.read_workers_for_work_pool(self.pool) if w.status == "ONLINE"
                    }
                if names <= online:
                    return
                for name in names:
                    if self.workers[name].poll() is not None:
                        raise RuntimeError(f"worker {name} exited:\n{self.log(name)[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers {sorted(names - online)} not online after {timeout:.0f} s")
                time.sleep(0.3)

    def kill(self, name: str) -> None:
        """SIGKILL the worker and every flow run process it started: what a machine that dies does."""
        worker = self.workers.pop(name)
        for pgid in process_groups(worker.pid):
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        worker.wait()

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop every worker and its flow runs (Ctrl-C first, as an operator would)."""
        for name in list(self.workers):
            stop_tree(self.workers.pop(name))

    def __enter__(self) -> WorkerFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
