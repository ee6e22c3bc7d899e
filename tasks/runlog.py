"""Run logging: one redacting, optionally JSON, configuration for every logger; the API action log.

The pipeline's plain modules log to ``ut_pipeline.*``; Prefect's run logger sends those records to
the Prefect UI when ``PREFECT_LOGGING_EXTRA_LOGGERS`` names them (``flows`` sets that default).
:func:`configure_logging` puts the same redaction filter on every handler that exists (the console,
Prefect's API handler) and, with ``UT_LOG_FORMAT=json``, turns console output into JSON lines on
stdout for Datadog or ELK. It is safe to call again once Prefect has set up its own handlers.

The operator's console gets one line per record: a record that carries a traceback (Prefect logs a
failed task with one) shows the exception's type and message and where the traceback is, and the
traceback itself goes to the debug log (``UT_LOG_DIR``), with every ``ut_pipeline`` debug record.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from tasks.redact import RedactingFilter, redact

PIPELINE_LOGGER = "ut_pipeline"
_LOGGERS = ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra", PIPELINE_LOGGER)
_FILTER = RedactingFilter()
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


DEBUG_LOG_NAME = "ut-pipeline.debug.log"


def _first_line(text: str) -> str:
    head, _, rest = text.strip().partition("\n")
    return f"{head} …" if rest.strip() else head


def _exception_line(record: logging.LogRecord) -> str | None:
    """``Type: message`` of the record's exception, on one line; None if it carries none."""
    if not record.exc_info or record.exc_info[1] is None:
        return None
    exc = record.exc_info[1]
    return _first_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class ConsoleFormatter(logging.Formatter):
    """One line per record: the message's first line, and an exception as ``Type: message`` with the
    path of the debug log that holds its traceback."""

    def __init__(self, debug_log: Path | None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.debug_log = debug_log

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record)} {record.levelname} {record.name}: {_first_line(record.getMessage())}"
        )
        exception = _exception_line(record)
        if exception and exception not in line:
            line += f" [{exception}]"
        if exception and self.debug_log is not None:
            line += f" (traceback: {self.debug_log})"
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, Prefect's run ids and any extras; an
    exception as its type and message (the traceback is in the debug log)."""

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
        if exception := _exception_line(record):
            body["exception"] = exception
        return redact(json.dumps(body, default=str))


class PipelineConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so a second configuration finds and reuses it. (Its public name matters: Prefect keeps a
    root handler it takes for the user's instead of installing its own console.)

    Prefect's line for every task run that completed says nothing the session's own line has not said
    already; it stays in the run log and the debug log, not on the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "prefect.task_runs" and record.getMessage() == "Finished in state Completed()":
            return False
        return super().filter(record)


class DebugLogHandler(RotatingFileHandler):
    """Everything, tracebacks included, in a rotating file (10 MB, 5 kept): where a one-line console
    message points for the details."""


def configure_logging(log_format: str = "text", log_dir: Path | None = None) -> None:
    """Redact every handler; one-line JSON on stdout or text on stderr (ours replaces Prefect's rich
    console); pipeline logs (every API call) at INFO; the debug log in ``log_dir`` if given."""
    root = logging.getLogger()
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.getLogger(PIPELINE_LOGGER).setLevel(logging.DEBUG)
    debug_log = _debug_log(root, log_dir)
    ours = next((h for h in root.handlers if isinstance(h, PipelineConsoleHandler)), None)
    for handler in list(root.handlers):
        if _is_console(handler) and handler is not ours:
            root.removeHandler(handler)
    ours = ours or PipelineConsoleHandler()
    ours.setLevel(logging.INFO)
    if log_format == "json":
        ours.setStream(sys.stdout)
        ours.setFormatter(JsonFormatter())
    else:
        ours.setStream(sys.stderr)
        ours.setFormatter(ConsoleFormatter(debug_log))
    if ours not in root.handlers:
        root.addHandler(ours)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def _debug_log(root: logging.Logger, log_dir: Path | None) -> Path | None:
    """The debug log's path, its handler added to the root logger once; None without a folder."""
    existing = next((h for h in root.handlers if isinstance(h, DebugLogHandler)), None)
    if log_dir is None:
        return Path(existing.baseFilename) if existing else None
    path = (log_dir / DEBUG_LOG_NAME).resolve()
    if existing is not None and Path(existing.baseFilename) == path:
        return path
    if existing is not None:
        root.removeHandler(existing)
        existing.close()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = DebugLogHandler(path, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8")
    except OSError as exc:
        logging.getLogger(PIPELINE_LOGGER).warning("no debug log in %s: %s", log_dir, exc)
        return None
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s")
    )
    root.addHandler(handler)
    return path


def _is_console(handler: logging.Handler) -> bool:
    # pytest's capture handler is a StreamHandler too, but it is not a console; nor is a log file.
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and type(handler).__name__ != "LogCaptureHandler"
    )


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
