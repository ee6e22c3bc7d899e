"""``ut-pipeline demo``: the pipeline on the embedded defaults, with no credentials and no internet.

It starts the local world (sandbox Results API and local S3 on loopback), points the pipeline at
it through the production environment variables, and runs what the pipeline does today:
discover the workspace's Results API tests and enumerate their completed sessions under the
shared rate limit. It ends with what the sandbox itself counted.
"""

from __future__ import annotations

import os

from flows.cli import EXIT_OK, test_ids_to_cover
from sandbox.local import max_in_window, start_local_world
from tasks.results_api import open_client
from tasks.settings import load_settings


def run_demo() -> int:
    print("Starting the local world: sandbox Results API and local S3 on loopback ...")
    with start_local_world() as world:
        os.environ.update(world.env)
        settings = load_settings()
        client = open_client(settings)
        try:
            workspaces = [w.uuid for w in client.workspaces()]
            print(f"Results API: {world.api.url}   S3: {world.s3.url}   bucket: s3://{world.bucket}")
            print(f"Workspaces visible to the sandbox client: {len(workspaces)}")
            tests = test_ids_to_cover(client, [], workspaces)
            print(f"\n{'test id':36}  {'completed':>9}  newest finish")
            for test in tests:
                sessions = list(client.completed_sessions(test))
                newest = max((s.finish_time for s in sessions if s.finish_time), default=None)
                print(f"{test!s:36}  {len(sessions):>9}  {newest.isoformat() if newest else '-'}")
        finally:
            client.close()
        stats = world.admin("GET", "stats")
    calls = stats["api_requests"]
    window = settings.rate_limit_window_seconds
    print(
        f"\nSandbox counted {len(calls)} API requests, "
        f"{sum(1 for c in calls if c['status'] == 429)} answered 429, "
        f"at most {max_in_window([c['t'] for c in calls], window)} in any {window:.0f} s window "
        f"(limit {settings.rate_limit_requests})."
    )
    return EXIT_OK
