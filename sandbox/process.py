"""Start a local server as a child process and learn its URL once it is really listening.

Both local servers (the sandbox Results API and the local S3) bind port 0 so tests and demos never
collide on a fixed port, then write their base URL to a ``--ready-file``. The parent waits for that
file instead of sleeping or polling the port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


@dataclass
class ServerProcess:
    """A running child server; a context manager that stops it on exit."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _tmpdir: tempfile.TemporaryDirectory[str] = field(repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._tmpdir.cleanup()

    def log(self) -> str:
        """What the server printed so far (its stdout and stderr together)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def spawn(
    module: str, args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60.0
) -> ServerProcess:
    """Run ``python -m module --ready-file F *args`` and wait until it writes its URL to ``F``."""
    tmpdir = tempfile.TemporaryDirectory(prefix="ut-server-")
    ready = Path(tmpdir.name) / "ready"
    log_path = Path(tmpdir.name) / "server.log"
    cmd = [sys.executable, "-m", module, "--ready-file", str(ready), *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    server = ServerProcess(url="", process=process, log_path=log_path, _tmpdir=tmpdir)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            output = server.log()
            server.stop()
            raise RuntimeError(f"{module} did not start (exit code {process.returncode}):\n{output}")
        time.sleep(0.05)
    server.url = ready.read_text().strip()
    return server


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it every keep-alive answer waits ~40 ms for a delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def announce(ready_file: str | None, url: str) -> None:
    """Tell the parent the server listens at ``url``: atomically, so it never reads half a line."""
    print(f"listening on {url}", flush=True)
    if ready_file:
        tmp = Path(f"{ready_file}.tmp")
        tmp.write_text(url)
        tmp.replace(ready_file)
