"""Register the pipeline's deployments with the Prefect server that ``PREFECT_API_URL`` names.

    python -m deployments.register [--pool ut-pipeline] [--cron "0 2 * * *"] [--source DIR_OR_GIT_URL]
        [--process-pool ut-process] [--gpu-pool ut-process-gpu]

- ``ut-nightly/nightly``: on a cron schedule (default 02:00 UTC), one run at a time, so a slow
  night never overlaps the next.
- ``ut-backfill/backfill``: no schedule; started from the UI's "Custom run", whose form is
  rendered from the flow's parameters
  and their docstring.
- ``ut-reprocess/reprocess``: no schedule; chosen stages again for ingested sessions.
- ``ut-process/cpu`` and ``ut-process/gpu``: batches of sessions to process, handed out by the runs
  above when ``UT_PROCESS_DEPLOYMENT`` names one of them (``flows/processing.py``). Each has a work
  pool of its own, so processing workers (big machines, GPU machines) take only processing work and
  GPU work goes only to GPU workers; ``cpu`` runs Whisper int8 on the CPU, ``gpu`` float16 on CUDA.

The pools are created as process pools if missing; a pool created beforehand with another type
(Docker, Kubernetes: README, "Scaling out") is used as it is. A process worker runs flows with its
own environment, so start it with the ``UT_*`` and ``AWS_*`` variables set. ``--source`` is where
workers load the code from: this checkout by default (workers on this machine, or in an image that
holds the code at the same path); a git URL for workers elsewhere.
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
PROCESS_POOL = "ut-process"
GPU_POOL = "ut-process-gpu"
# What each processing deployment sets in its flow runs' environment, whatever the worker has.
PROCESS_ENV = {
    "cpu": {"UT_WHISPER_DEVICE": "cpu", "UT_WHISPER_COMPUTE_TYPE": "int8"},
    "gpu": {"UT_WHISPER_DEVICE": "cuda", "UT_WHISPER_COMPUTE_TYPE": "float16"},
}


def ensure_work_pool(name: str, pool_type: str = "process") -> None:
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))


def register(
    pool: str = DEFAULT_POOL,
    cron: str = DEFAULT_CRON,
    source: str = str(REPO_ROOT),
    process_pool: str = PROCESS_POOL,
    gpu_pool: str = GPU_POOL,
) -> dict[str, UUID]:
    """Create or update every deployment; returns their ids by name."""
    for name in (pool, process_pool, gpu_pool):
        ensure_work_pool(name)
    nightly = flow.from_source(source=source, entrypoint="flows/pipeline.py:nightly")
    backfill = flow.from_source(source=source, entrypoint="flows/pipeline.py:backfill")
    reprocess = flow.from_source(source=source, entrypoint="flows/pipeline.py:reprocess")
    process = flow.from_source(source=source, entrypoint="flows/processing.py:process_batch")
    processing = {
        f"ut-process/{name}": process.deploy(
            name=name,
            work_pool_name=pool_name,
            job_variables={"env": PROCESS_ENV[name]},
            tags=["ut-pipeline", "processing", name],
            description=f"Transcribe and extract frames for batches of sessions ({name} workers).",
            print_next_steps=False,
        )
        for name, pool_name in (("cpu", process_pool), ("gpu", gpu_pool))
    }
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
        **processing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", default=DEFAULT_POOL, help="process work pool (created if missing)")
    parser.add_argument("--cron", default=DEFAULT_CRON, help="nightly schedule, UTC")
    parser.add_argument("--source", default=str(REPO_ROOT), help="where workers load the code from")
    parser.add_argument("--process-pool", default=PROCESS_POOL, help="work pool of ut-process/cpu")
    parser.add_argument("--gpu-pool", default=GPU_POOL, help="work pool of ut-process/gpu")
    args = parser.parse_args()
    registered = register(args.pool, args.cron, args.source, args.process_pool, args.gpu_pool)
    pools = {"ut-process/cpu": args.process_pool, "ut-process/gpu": args.gpu_pool}
    for name, deployment_id in registered.items():
        print(f"registered {name} ({deployment_id}) on work pool {pools.get(name, args.pool)!r}")


if __name__ == "__main__":
    main()
