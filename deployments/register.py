"""Register the pipeline's deployments with the Prefect server that ``PREFECT_API_URL`` names.

    python -m deployments.register [--pool ut-pipeline] [--cron "0 2 * * *"] [--source DIR_OR_GIT_URL]

- ``ut-nightly/nightly``: on a cron schedule (default 02:00 UTC), one run at a time, so a slow
  night never overlaps the next.
- ``ut-backfill/backfill``: no schedule; started from the UI's "Custom run", whose form is
  rendered from the flow's parameters
  and their docstring.
- ``ut-reprocess/reprocess``: no schedule; chosen stages again for ingested sessions.

Both run on a process work pool (created if missing). A process worker runs flows with its own
environment, so start it with the ``UT_*`` and ``AWS_*`` variables set. ``--source`` is where
workers load the code from: this checkout by default (a worker on this machine); a git URL for
workers elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POOL = "ut-pipeline"
DEFAULT_CRON = "0 2 * * *"


def ensure_work_pool(name: str, pool_type: str = "process") -> None:
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))


def register(
    pool: str = DEFAULT_POOL, cron: str = DEFAULT_CRON, source: str = str(REPO_ROOT)
) -> dict[str, UUID]:
    """Create or update both deployments; returns their ids by name."""
    ensure_work_pool(pool)
    nightly = flow.from_source(source=source, entrypoint="flows/pipeline.py:nightly")
    backfill = flow.from_source(source=source, entrypoint="flows/pipeline.py:backfill")
    reprocess = flow.from_source(source=source, entrypoint="flows/pipeline.py:reprocess")
    return {
        "ut-nightly/nightly": nightly.deploy(
            name="nightly",
            work_pool_name=pool,
            schedules=[Cron(cron, timezone="UTC")],
            concurrency_limit=1,
            tags=["ut-pipeline", "nightly"],
            description="Ingest every configured test's sessions finished since its watermark.",
            print_next_steps=False,
        ),
        "ut-backfill/backfill": backfill.deploy(
            name="backfill",
            work_pool_name=pool,
            tags=["ut-pipeline", "backfill"],
            description="Ingest and process chosen tests, time ranges or sessions: a custom run from the UI.",
            print_next_steps=False,
        ),
        "ut-reprocess/reprocess": reprocess.deploy(
            name="reprocess",
            work_pool_name=pool,
            tags=["ut-pipeline", "reprocess"],
            description="Transcribe and/or extract frames again for ingested sessions (no API calls).",
            print_next_steps=False,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", default=DEFAULT_POOL, help="process work pool (created if missing)")
    parser.add_argument("--cron", default=DEFAULT_CRON, help="nightly schedule, UTC")
    parser.add_argument("--source", default=str(REPO_ROOT), help="where workers load the code from")
    args = parser.parse_args()
    for name, deployment_id in register(args.pool, args.cron, args.source).items():
        print(f"registered {name} ({deployment_id}) on work pool {args.pool!r}")


if __name__ == "__main__":
    main()
