"""Run logging: one redacting, optionally JSON, configuration for every logger; the API action log.

The pipeline's plain modules log to ``ut_pipeline.*``; Prefect's run logger sends those records to
the Prefect UI when ``PREFECT_LOGGING_EXTRA_LOGGERS`` names them (``flows`` sets that default).
:func:`configure_logging` puts the same redaction filter on every handler that exists (the console,
Prefect's API handler) and, with ``UT_LOG_FORMAT=json``, turns console output into JSON lines on
stdout for Datadog or ELK. It is safe to call again once Prefect has set up its own handlers.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from tasks.redact import RedactingFilter, redact

PIPELINE_LOGGER = "ut_pipeline"
_LOGGERS = ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra", PIPELINE_LOGGER)
_FILTER = RedactingFilter()
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, Prefect's run ids and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = (
                    value if isinstance(value, str | int | float | bool | dict | list | None) else str(value)
                )
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(body, default=str))


class PipelineConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so a second configuration finds and reuses it. (Its public name matters: Prefect keeps a
    root handler it takes for the user's instead of installing its own console.)"""


def configure_logging(log_format: str = "text") -> None:
    """Redact every handler; JSON lines on stdout or text on stderr; pipeline logs (every API call) at INFO."""
    root = logging.getLogger()
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.getLogger(PIPELINE_LOGGER).setLevel(logging.INFO)
    ours = next((h for h in root.handlers if isinstance(h, PipelineConsoleHandler)), None)
    if log_format == "json":
        # Every console line as JSON on stdout: ours replaces any other console handler (Prefect's).
        for handler in list(root.handlers):
            if _is_console(handler) and handler is not ours:
                root.removeHandler(handler)
        ours = ours or PipelineConsoleHandler()
        ours.setStream(sys.stdout)
        ours.setFormatter(JsonFormatter())
    elif ours is None and not any(_is_console(h) for h in root.handlers):
        ours = PipelineConsoleHandler(sys.stderr)  # only where nobody (Prefect) prints yet: never twice
        ours.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if ours is not None and ours not in root.handlers:
        root.addHandler(ours)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def _is_console(handler: logging.Handler) -> bool:
    # pytest's capture handler is a StreamHandler too, but it is not a console.
    return isinstance(handler, logging.StreamHandler) and type(handler).__name__ != "LogCaptureHandler"


class ApiCallLog:
    """The API action log of one flow run: one JSON line per Results API request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []

    def append(self, call: dict[str, Any]) -> None:
        with self._lock:
            self._calls.append(call)

    @property
    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._calls)

    def jsonl(self) -> str:
        return "".join(redact(json.dumps(call, sort_keys=True)) + "\n" for call in self.calls)
