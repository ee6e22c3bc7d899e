"""``ut-pipeline``: the command line that operators and automation call.

Exit codes: 0 success, 1 the work ran but some of it failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from flows.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tasks.api.client import ApiError, ApiUnavailable, ListProblem, Unauthorized, open_client
from tasks.runlog import configure_logging
from tasks.settings import ConfigError, Settings, load_settings
from tasks.storage.s3 import StorageUnavailable, preflight

_STARTUP = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
STAGES = ["ingest", "transcribe", "frames"]


def _aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a timezone, e.g. {value}Z or {value}+00:00")
    return parsed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ut-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "demo",
        help="run the pipeline end to end on the local sandbox API and a local S3 server",
    )

    ui = commands.add_parser(
        "ui",
        help="a local Prefect server with the deployments, a worker and the local world: the operator's view",
    )
    ui.add_argument("--port", type=int, default=4200, help="the UI's port on 127.0.0.1; 0 picks a free one")

    backfill = commands.add_parser("backfill", help="ingest chosen tests, time ranges or sessions")
    backfill.add_argument(
        "--test-id", action="append", type=UUID, default=[], help="repeatable; default UT_TEST_IDS"
    )
    backfill.add_argument("--since", type=_aware, help="ISO time with zone: finished at or after")
    backfill.add_argument("--until", type=_aware, help="ISO time with zone: finished before")
    backfill.add_argument(
        "--session-id", action="append", type=UUID, default=[], help="repeatable: only these"
    )
    backfill.add_argument("--force", action="store_true", help="redo what is already done")
    backfill.add_argument(
        "--stage", action="append", choices=STAGES, default=[], help="repeatable; default all"
    )

    commands.add_parser("nightly", help="ingest and process what finished since each test's watermark")

    reprocess = commands.add_parser("reprocess", help="run stages again on ingested sessions (no API calls)")
    reprocess.add_argument("--session-id", action="append", type=UUID, default=[], help="repeatable")
    reprocess.add_argument("--test-id", action="append", type=UUID, default=[], help="repeatable")
    reprocess.add_argument(
        "--stage",
        action="append",
        choices=["transcribe", "frames"],
        default=[],
        help="repeatable; default both",
    )

    publish = commands.add_parser("publish", help="publish the dataset's changed sessions (no API calls)")
    publish.add_argument("--full", action="store_true", help="rebuild every table from every record")
    publish.add_argument(
        "--compact", action="store_true", help="then merge small files and vacuum old versions"
    )

    sessions = commands.add_parser("sessions", help="list the completed sessions of tests (UT_* settings)")
    sessions.add_argument(
        "--test-id", action="append", type=UUID, default=[], help="repeatable; default UT_TEST_IDS"
    )
    sessions.add_argument("--since", type=_aware, help="ISO time with zone: finished at or after")
    sessions.add_argument("--until", type=_aware, help="ISO time with zone: finished before")
    return parser


def list_sessions(args: argparse.Namespace) -> int:
    """Print each completed session; an unusable list item is one line on stderr, and exit 1."""
    settings = load_settings()
    client = open_client(settings)
    problems: list[ListProblem] = []

    def on_problem(problem: ListProblem) -> None:
        problems.append(problem)
        print(f"ut-pipeline: unusable list item: {problem}", file=sys.stderr)

    try:
        tests = client.tests_to_cover(args.test_id or settings.test_ids, settings.workspace_ids)
        if not tests:
            raise ConfigError("no tests to list: pass --test-id, or set UT_TEST_IDS or UT_WORKSPACE_IDS")
        for test in tests:
            count = 0
            for session in client.completed_sessions(test, args.since, args.until, on_problem=on_problem):
                count += 1
                print(
                    f"{test}\t{session.session_id}\t{session.finish_time.isoformat() if session.finish_time else ''}"
                )
            print(f"# test {test}: {count} completed sessions", file=sys.stderr)
    finally:
        client.close()
    return EXIT_FAILED if problems else EXIT_OK


def check_credentials(settings: Settings) -> None:
    """Fetch a token before any flow starts: refused credentials are a configuration error. (The
    token endpoint is not the Results API: this costs nothing against its quota.)"""
    client = open_client(settings)
    try:
        if client.tokens.can_refresh:
            client.tokens.get()
    finally:
        client.close()


def run_flow(args: argparse.Namespace) -> int:
    """Run a flow here (an ephemeral Prefect unless PREFECT_API_URL names a server); print its summary."""
    from flows.pipeline import backfill, nightly, publish, reprocess
    from flows.report import verdict

    settings = load_settings()
    preflight(settings.require_bucket())  # fail before Prefect starts, with the variable's name
    if args.command in ("backfill", "nightly"):  # reprocess and publish make no API call
        check_credentials(settings)
    if args.command == "publish":
        published = publish(full=args.full, compact=args.compact)
        print(json.dumps(published) if settings.log_format == "json" else json.dumps(published, indent=2))
        return EXIT_OK
    if args.command == "backfill":
        if not (args.test_id or settings.test_ids):
            raise ConfigError("no tests to backfill: pass --test-id or set UT_TEST_IDS")
        summary = backfill(
            test_ids=args.test_id,
            since=args.since,
            until=args.until,
            session_ids=args.session_id,
            force=args.force,
            **({"stages": args.stage} if args.stage else {}),
        )
    elif args.command == "reprocess":
        if not (args.test_id or args.session_id):
            raise ConfigError("name what to reprocess: --session-id or --test-id")
        summary = reprocess(
            session_ids=args.session_id,
            test_ids=args.test_id,
            **({"stages": args.stage} if args.stage else {}),
        )
    else:
        if not (settings.test_ids or settings.workspace_ids):
            raise ConfigError("UT_TEST_IDS and UT_WORKSPACE_IDS are both empty: nothing to do")
        summary = nightly()
    print(json.dumps(summary) if settings.log_format == "json" else json.dumps(summary, indent=2))
    problems = any(summary[k] for k in ("failures", "held", "list_problems", "test_errors", "run_errors"))
    print(f"ut-pipeline: {verdict(summary)}", file=sys.stderr)
    return EXIT_FAILED if problems else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        log_format, log_dir = settings.log_format, settings.log_dir
    except ConfigError:
        log_format, log_dir = "text", None  # the error itself is reported below, as one line
    configure_logging(log_format, log_dir)
    try:
        if args.command == "demo":
            from flows.demo import run_demo

            return run_demo()
        if args.command == "ui":
            from flows.ui import run_ui

            return run_ui(args.port)
        if args.command == "sessions":
            return list_sessions(args)
        return run_flow(args)
    except (ConfigError, StorageUnavailable) as exc:
        print(f"ut-pipeline: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unauthorized as exc:
        print(
            f"ut-pipeline: configuration error: UT_CLIENT_ID / UT_CLIENT_SECRET (or UT_ACCESS_TOKEN) "
            f"refused: {exc}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except ApiUnavailable as exc:
        print(f"ut-pipeline: the API cannot be reached: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ApiError as exc:
        print(f"ut-pipeline: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RuntimeError as exc:
        if "ephemeral Prefect API server" not in str(exc):
            raise
        print(
            "ut-pipeline: the local Prefect server did not start in time "
            f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS={os.environ.get(_STARTUP, '?')} s); "
            "raise it, or point PREFECT_API_URL at a running server",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
