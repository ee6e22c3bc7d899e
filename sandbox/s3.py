"""A real S3-protocol server on loopback for the tests and the demo: moto's S3 backend over HTTP.

    python -m sandbox.s3 [--host 127.0.0.1] [--port 0] [--ready-file F] [--log-requests]

Clients talk to it exactly as to AWS or MinIO (boto3 with ``endpoint_url``, any credentials, region
us-east-1), path-style since the host is an IP address. State lives in memory and is gone when the
process ends. Only S3 is served: the app is moto's S3 Flask app itself, without moto's dispatcher
that routes by host to its other services. Parents start it with
``sandbox.process.spawn("sandbox.s3", [...])``.
"""

from __future__ import annotations

import argparse
import io
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from sandbox.process import announce, bind_socket

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_CONDITIONAL_HEADERS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH")
_WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})


class SerializeConditionalWrites:
    """WSGI middleware that runs conditional writes one at a time, making them atomic.

    Why: the pipeline uses conditional writes as compare-and-swap (the shared rate-limit ledger in
    the bucket is updated with ``If-Match: <etag>``, objects are created with ``If-None-Match: *``).
    Real S3 and MinIO evaluate the condition and store the object atomically. moto does not: its
    PutObject handler checks ``If-Match`` / ``If-None-Match`` and then, in a separate step, writes,
    and its server runs every request in its own thread. Two concurrent PUTs carrying the same ETag
    can both pass the check and both succeed, one update silently lost. Holding one lock around each
    such request (PUT, and likewise moto's check-then-act DeleteObject with ``If-Match`` and
    CompleteMultipartUpload with ``If-None-Match``) closes that window.

    The request body is read before the lock is taken, so a slow or large upload does not hold up
    the other conditional writers, only moto's own check-and-store does. Unconditional writes are
    not serialized; a conditional write racing an unconditional write of the same key can still
    interleave, which the pipeline does not do (its ledger is only ever written conditionally).
    """

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in _WRITE_METHODS or not any(
            environ.get(header) for header in _CONDITIONAL_HEADERS
        ):
            return self._app(environ, start_response)
        _buffer_body(environ)
        with self._lock:
            # Run the whole response, body included, inside the lock: a WSGI app may defer work
            # until its response is iterated.
            response = self._app(environ, start_response)
            try:
                return list(response)
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()


def _buffer_body(environ: dict[str, Any]) -> None:
    """Replace the socket stream ``wsgi.input`` by the request body already read into memory."""
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):  # chunked transfer: the stream ends with the body
        body = stream.read()
    else:
        body = stream.read(int(environ.get("CONTENT_LENGTH") or 0))
    environ["wsgi.input"] = io.BytesIO(body)


def create_app() -> WSGIApp:
    """moto's S3 app with atomic conditional writes."""
    return SerializeConditionalWrites(create_backend_app("s3"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.s3", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--ready-file", help="write the server's URL here once it accepts connections")
    parser.add_argument("--log-requests", action="store_true", help="log one line per request")
    args = parser.parse_args(argv)

    # werkzeug logs every request at INFO; keep only its warnings and errors (tracebacks) by default.
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.log_requests else logging.WARNING)
    sock = bind_socket(args.host, args.port)
    server = make_server(
        args.host, 0, create_app(), threaded=True, request_handler=MotoRequestHandler, fd=sock.fileno()
    )
    sock.close()  # the server holds its own duplicate of the listening socket
    # Exit cleanly (status 0, sockets closed) when the parent stops us with SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host = f"[{args.host}]" if ":" in args.host else args.host
    announce(args.ready_file, f"http://{host}:{server.port}")
    server.serve_forever()


if __name__ == "__main__":
    main()
