"""A TCP proxy on loopback that can cut its upstream for a while: S3 blinking, for the fault tests.

Clients connect to the proxy instead of the server. ``cut(seconds)`` drops every open connection
with a reset and, for that long, resets each new one as soon as it arrives, which is what a client
sees when a load balancer or the network fails. Afterwards it forwards again.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from types import TracebackType

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on with a zero timeout: close() sends RST


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    sock.close()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``; stops with :meth:`close` (or as a context manager)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._down_until = 0.0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.refused = 0
        threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self, seconds: float) -> None:
        """Reset every connection now and refuse new ones for ``seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            doomed, self._open = self._open, set()
        for sock in doomed:
            _reset(sock)

    @property
    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut(0)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.is_down:
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                cut_meanwhile = self.is_down  # a cut while connecting: it must not leak a working link
                if not cut_meanwhile:
                    self._open |= {client, server}
            if cut_meanwhile:
                self.refused += 1
                _reset(client)
                _reset(server)
                continue
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, target}
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
