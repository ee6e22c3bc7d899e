"""Run the sandbox Results API on loopback: ``python -m sandbox.server [options]``.

Binds first (port 0 picks a free port), so the URL the video links point at is known before the
app is built, then announces that URL through ``--ready-file`` for :func:`sandbox.process.spawn`.
Times are fractional seconds so tests can compress an hour of link validity into one second.
"""

from __future__ import annotations

import argparse
import logging
import socket
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

from sandbox.api import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, ConnectionDropped, SandboxConfig, create_app
from sandbox.process import announce, bind_socket
from sandbox.world import DEFAULT_MEDIA_DIR


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _anchor(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _client(text: str) -> tuple[str, str]:
    client_id, sep, secret = text.partition(":")
    if not sep or not client_id or not secret:
        raise argparse.ArgumentTypeError(f"expected ID:SECRET, got {text!r}")
    return client_id, secret


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--ready-file", help="write the base URL here once listening")
    parser.add_argument("--rate-limit", type=_positive_int, default=10, help="requests per window and client")
    parser.add_argument("--rate-window", type=_positive_float, default=60.0, help="sliding window, seconds")
    parser.add_argument(
        "--token-ttl", type=_positive_float, default=3600.0, help="access token life, seconds"
    )
    parser.add_argument("--link-ttl", type=_positive_float, default=3600.0, help="video link life, seconds")
    parser.add_argument(
        "--video-bytes-per-second",
        type=_positive_float,
        help="pace every video download at this rate (default: unpaced)",
    )
    parser.add_argument(
        "--anchor", type=_anchor, help="the world's 'now', ISO 8601 (default: start time, UTC)"
    )
    parser.add_argument(
        "--media-dir", type=Path, default=DEFAULT_MEDIA_DIR, help="media files and manifest.json"
    )
    parser.add_argument(
        "--client",
        type=_client,
        action="append",
        metavar="ID:SECRET",
        help=f"an accepted OAuth client, repeatable (default {DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET})",
    )
    return parser.parse_args(argv)


class _HideDroppedConnections(logging.Filter):
    """Injected connection drops are on purpose: keep uvicorn from logging them as crashes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that tells the parent its URL once startup has succeeded."""

    def __init__(self, config: uvicorn.Config, *, ready_file: str | None, url: str) -> None:
        super().__init__(config)
        self.ready_file, self.url = ready_file, url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            announce(self.ready_file, self.url)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    config = SandboxConfig(
        public_url=url,
        anchor=args.anchor,
        media_dir=args.media_dir,
        clients=dict(args.client or [(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)]),
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        token_ttl=args.token_ttl,
        link_ttl=args.link_ttl,
        video_bytes_per_second=args.video_bytes_per_second,
    )
    server = _AnnouncingServer(
        uvicorn.Config(
            create_app(config), log_level="info", server_header=False, timeout_graceful_shutdown=2
        ),
        ready_file=args.ready_file,
        url=url,
    )
    logging.getLogger("uvicorn.error").addFilter(_HideDroppedConnections())
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
