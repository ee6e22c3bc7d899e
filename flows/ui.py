"""``ut-pipeline ui``: the operator's view of the deployments, on one machine with no account.

It starts, on loopback, what the README's deployments section sets up by hand: a Prefect server
(its own ``PREFECT_HOME`` under ``.work/prefect-ui/``, so run history survives a restart), the
local world (sandbox Results API and local S3), the deployments, a process worker whose
environment points the pipeline at the local world, and a processing worker on the ``ut-process``
pool, to which the runs hand their sessions (``UT_PROCESS_DEPLOYMENT``), as on a scaled-out set-up. An operator can then start a backfill from the
UI's form and read each session's fate in the run's logs, exactly as in production.

Every child runs in its own session, so a Ctrl-C in the terminal reaches this process alone and it
stops them in order. Flow runs start their own sessions too (Prefect isolates them from the
worker's group), so a child is stopped with the process groups of its whole tree, not just its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from contextlib import ExitStack, redirect_stdout, suppress
from pathlib import Path

import httpx
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.register import DEFAULT_CRON, GPU_POOL, PROCESS_POOL, register
from flows.exitcodes import EXIT_FAILED, EXIT_OK
from sandbox.local import start_local_world
from sandbox.world import CHECKOUT_TEST_ID
from tasks.settings import ConfigError, without_api_credentials

UI_HOME = Path(".work") / "prefect-ui"
HOST = "127.0.0.1"
POOL = "ut-pipeline"
WORKER_NAME = "ut-pipeline-ui"  # one name, so restarts reuse one worker entry in the UI
PROCESS_WORKER_NAME = "ut-process-ui"
WORKER_COMMAND = (sys.executable, "-m", "prefect", "worker", "start")
STOP_GRACE_SECONDS = 15.0


def loopback_port(port: int) -> int:
    """``port`` if it is free on loopback (0: any free port), checked now so a server already
    listening there is never mistaken for ours."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no obstacle
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise ConfigError(
                f"port {port} on {HOST} is in use ({exc.strerror}): pass --port N or --port 0"
            ) from exc
        return int(sock.getsockname()[1])


def wait_for_prefect(
    api_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0
) -> None:
    """Return once the server answers ``/health``; fail with its log if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the Prefect server did not start (exit code {process.returncode}):\n{tail}")
        time.sleep(0.3)


def _processes() -> list[tuple[int, int, int]]:
    """``(pid, ppid, pgid)`` of every live process. Zombies are left out: they are dead, only unreaped."""
    out = subprocess.run(
        ["ps", "-A", "-o", "pid=", "-o", "ppid=", "-o", "pgid=", "-o", "stat="],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [
        (int(pid), int(ppid), int(pgid)) for pid, ppid, pgid, stat, *_ in rows if not stat.startswith("Z")
    ]


def process_groups(root: int) -> set[int]:
    """The process groups of ``root`` and of all its descendants, whatever session they started."""
    table = {pid: (ppid, pgid) for pid, ppid, pgid in _processes()}
    tree = {root}
    while more := {pid for pid, (ppid, _) in table.items() if ppid in tree} - tree:
        tree |= more
    return {table[pid][1] for pid in tree if pid in table}


def live_groups(groups: Iterable[int]) -> set[int]:
    """Those of ``groups`` that still hold a live process."""
    return {pgid for _, _, pgid in _processes()} & set(groups)


def _terminate(groups: set[int], grace: float) -> None:
    """SIGTERM every process of ``groups``, wait up to ``grace`` seconds, SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + grace
        while (groups := live_groups(groups)) and time.monotonic() < deadline:
            time.sleep(0.2)


def stop_tree(process: subprocess.Popen[bytes], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop ``process`` and every process group of its tree, the inner groups first: a worker's flow
    runs, stopped while the worker still runs, record themselves as crashed; stopped with it, they
    are killed before they can and stay "Running" in the UI forever."""
    if process.poll() is not None:
        return
    inner = process_groups(process.pid) - {process.pid}
    if inner:
        _terminate(inner, grace)
    _terminate({process.pid}, grace)
    process.wait()


def _start(stack: ExitStack, cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session, its output in ``log``; ``stack`` stops its tree."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop_tree, process)
    return process


def _child_env(home: Path, api_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment pointed at the local server, without the shell's ``UT_*``/``AWS_*``: nothing
    started here may reach a real account or bucket, whatever the operator exported."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("UT_", "AWS_"))}
    return {
        **inherited,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        **(extra or {}),
    }


def run_ui(port: int = 4200) -> int:
    """Start everything, print where to click, wait for Ctrl-C or SIGTERM, then stop it all."""
    port = loopback_port(port)
    home = UI_HOME.resolve()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:  # Ctrl-C and SIGTERM stop it, even where the shell set SIGINT to be ignored
        signal.signal(sig, signal.default_int_handler)
    try:
        with ExitStack() as stack:
            try:
                return _serve(stack, port, home, logs)
            except KeyboardInterrupt:
                print("\nStopping the worker, the local world and the Prefect server ...", flush=True)
                return EXIT_OK
            except RuntimeError as exc:
                print(f"ut-pipeline ui: {exc}", file=sys.stderr)
                return EXIT_FAILED
            finally:
                for sig in previous:  # a second Ctrl-C must not cut the shutdown short
                    signal.signal(sig, signal.SIG_IGN)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("Stopped.", flush=True)


def _serve(stack: ExitStack, port: int, home: Path, logs: Path) -> int:
    """Start it all, say where to click, then watch the children: returns only if one of them dies."""
    ui_url = f"http://{HOST}:{port}"
    api_url = f"{ui_url}/api"
    print("Starting a local Prefect server, the sandbox Results API and a local S3 ...", flush=True)
    server = _start(
        stack,
        [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
        _child_env(home, api_url),
        logs / "server.log",
    )
    world = stack.enter_context(start_local_world())
    wait_for_prefect(api_url, server, logs / "server.log")

    print("Registering the deployments ...", flush=True)
    # Prefect's deploy() prints a table per deployment and a hint about process pools: to the log.
    with (
        (logs / "register.log").open("w") as out,
        redirect_stdout(out),
        temporary_settings(updates={PREFECT_API_URL: api_url}),
    ):
        registered = register(pool=POOL)
    worker_env = {
        **world.env,
        "UT_TEST_IDS": str(CHECKOUT_TEST_ID),
        "UT_PROCESS_DEPLOYMENT": "ut-process/cpu",
    }
    worker = _start(
        stack,
        [*WORKER_COMMAND, "--pool", POOL, "--name", WORKER_NAME],
        _child_env(home, api_url, worker_env),
        logs / "worker.log",
    )
    process_worker = _start(
        stack,
        [*WORKER_COMMAND, "--pool", PROCESS_POOL, "--name", PROCESS_WORKER_NAME, "--limit", "1"],
        _child_env(
            home, api_url, {**without_api_credentials(world.env), "UT_WORKER_NAME": PROCESS_WORKER_NAME}
        ),
        logs / "process-worker.log",
    )
    children = {
        "Prefect server": server,
        "worker": worker,
        "processing worker": process_worker,
        "sandbox Results API": world.api.process,
        "local S3": world.s3.process,
    }

    names = "\n".join(f"  {name}" for name in registered)
    print(
        f"""
Prefect UI     {ui_url}   (run history kept in {home})
Prefect API    export PREFECT_API_URL={api_url}   (for the prefect CLI and clients)
Results API    {world.api.url}   (the sandbox, 10 requests a minute like UserTesting)
Work bucket    s3://{world.bucket} on {world.s3.url}   (in memory: gone when this stops)

Registered, served by worker {WORKER_NAME!r} on work pool {POOL!r} and by processing worker
{PROCESS_WORKER_NAME!r} on {PROCESS_POOL!r} (ut-process/gpu waits for a GPU worker on {GPU_POOL!r}):
{names}
  (nightly: cron "{DEFAULT_CRON}" UTC, on UT_TEST_IDS={CHECKOUT_TEST_ID})

To backfill: open {ui_url}/deployments, choose ut-backfill > backfill, then Run > Custom run;
under test_ids choose Add item and enter {CHECKOUT_TEST_ID} (the sandbox's checkout test),
optionally pick stages or force, and submit. The worker picks the run up within about 10 s and
hands its sessions to the processing worker in batches: they show as subflow runs of ut-process.
One of that test's videos is corrupt on purpose: it ends failed at the media stage.

Logs and artifacts: each run's page under {ui_url}/runs: Logs (a line per session and stage,
then "run finished" with the counts) and Artifacts (summary, failures, progress); the bucket
also gets runs/<flow run id>/summary.json. Server and worker output: {logs}/
Against a real Prefect server and account: README.md, "Deployments".

UI ready: {ui_url}
Ctrl-C to stop.""",
        flush=True,
    )
    while True:
        for name, process in children.items():
            if process.poll() is not None:
                print(
                    f"ut-pipeline ui: the {name} exited (code {process.returncode}); stopping",
                    file=sys.stderr,
                )
                return EXIT_FAILED
        time.sleep(1)
