"""``ut-pipeline demo``: the pipeline on the embedded defaults, with no credentials and no internet.

It starts the local world (sandbox Results API and local S3 on loopback), points the pipeline at
it through the production environment variables, and runs the nightly flow on the sandbox's
think-out-loud test: discover, enumerate, fetch links under the real 10-per-minute limit, stream
every video into the bucket with its tasks (``UT_SESSION_DETAILS``), process it and publish the dataset. The bucket is then copied to a local folder
so the results outlive the in-memory S3 server, and the sandbox's own counters are printed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from flows.exitcodes import EXIT_FAILED, EXIT_OK
from sandbox.local import max_in_window, start_local_world
from sandbox.world import CHECKOUT_CORRUPT_SESSION_ID, CHECKOUT_TEST_ID
from tasks.settings import load_settings

OUTPUT_DIR = Path(".work") / "demo"


def run_demo() -> int:
    from flows.pipeline import nightly

    print("Starting the local world: sandbox Results API and local S3 on loopback ...")
    with start_local_world() as world:
        os.environ.update(world.env)
        os.environ["UT_TEST_IDS"] = str(CHECKOUT_TEST_ID)
        os.environ["UT_SESSION_DETAILS"] = "true"  # the dataset's tasks: one more API call per session
        settings = load_settings()
        print(f"Results API {world.api.url}   S3 {world.s3.url}   bucket s3://{world.bucket}")
        summary = nightly()
        calls = world.admin("GET", "stats")["api_requests"]
        copied = _mirror_bucket(world.s3_client(), world.bucket, OUTPUT_DIR)

    window = settings.rate_limit_window_seconds
    print("\nRun summary:", json.dumps(summary, indent=2))
    print(
        f"\nThe sandbox counted {len(calls)} API requests, {sum(c['status'] == 429 for c in calls)} answered 429,"
        f" at most {max_in_window([c['t'] for c in calls], window)} in any {window:.0f} s window"
        f" (limit {settings.rate_limit_requests})."
    )
    print(f"The bucket's {copied} objects were copied to {OUTPUT_DIR.resolve()}/ (layout: see README).")
    unexpected = [f for f in summary["failures"] if f["session_id"] != str(CHECKOUT_CORRUPT_SESSION_ID)]
    if unexpected or summary["test_errors"]:
        return EXIT_FAILED
    print("The sandbox's corrupt video failed at the media stage, as it should; everything else is done.")
    return EXIT_OK


def _mirror_bucket(s3: object, bucket: str, target: Path) -> int:
    shutil.rmtree(target, ignore_errors=True)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):  # type: ignore[attr-defined]
        for obj in page.get("Contents", []):
            path = target / obj["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(path))  # type: ignore[attr-defined]
            count += 1
    return count
