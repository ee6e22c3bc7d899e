"""API budget benchmark: a backlog of sessions ingested through the real backfill flow.

    .venv/bin/python -m bench.api_budget [--window 60] [--sessions 60] [--quick]

The sandbox enforces N requests per sliding window and counts every request on its own clock.
With a backlog, a good client keeps the quota busy without ever exceeding it. Printed:

- requests per window achieved / allowed: ``W / mean(t[i] - t[i-N])`` over the requests the
  sandbox counted, i.e. how soon each of the N slots is reused (1.0: the instant it may be);
- the most requests in any sliding window (must be at most N) and the number of 429s;
- API calls per ingested session (1 plus the listing pages is the floor);
- how long before its download each link was fetched (links are never queued).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any


def run(window: float, sessions: int, limit: int = 10) -> dict[str, Any]:
    from flows.pipeline import backfill
    from sandbox.local import max_in_window, start_local_world
    from sandbox.world import ONBOARDING_SPAN, ONBOARDING_TEST_ID
    from tasks.storage.records import Stage

    # The onboarding test spreads 1,230 sessions over two years: pick a `since` that covers `sessions`.
    spacing = ONBOARDING_SPAN / 1230
    since = datetime.now(UTC) - spacing * sessions - timedelta(days=1)
    with (
        tempfile.TemporaryDirectory(prefix="bench-api-") as ledger,
        start_local_world(rate_limit=limit, rate_window=window) as world,
    ):
        os.environ.update(
            {
                **world.env,
                "UT_RATE_LIMIT_REQUESTS": str(limit),
                "UT_RATE_LIMIT_WINDOW_SECONDS": str(window),
                # The whole time scale is compressed: the default 0.5 s margin of a 60 s window, scaled.
                "UT_RATE_LIMIT_MARGIN_SECONDS": str(0.5 * window / 60),
                "UT_RATE_LIMIT_BACKEND": "s3",
                "UT_RATE_LIMIT_DIR": ledger,
            }
        )
        started = time.monotonic()
        summary = backfill(test_ids=[ONBOARDING_TEST_ID], since=since, stages=[Stage.INGEST])
        wall = time.monotonic() - started
        stats = world.admin("GET", "stats")

    calls = sorted(stats["api_requests"], key=lambda c: c["t"])
    times = [c["t"] for c in calls]
    k = len(times)
    reuse = [times[i] - times[i - limit] for i in range(limit, k)]
    utilisation = window / statistics.fmean(reuse) if reuse else float("nan")
    link_at = {c["session_id"]: c["t"] for c in calls if c["operation"].endswith("getVideoDownloadUrl")}
    first_get: dict[str, float] = {}
    for v in sorted(stats["video_requests"], key=lambda v: v["t"]):
        first_get.setdefault(v["session_id"], v["t"])
    leads = [first_get[s] - t for s, t in link_at.items() if s in first_get]
    ingested = summary["counts"].get("ingest", {}).get("done", 0)
    return {
        "window_s": window,
        "limit": limit,
        "sessions_ingested": ingested,
        "api_requests": k,
        "requests_429": sum(c["status"] == 429 for c in calls),
        "max_in_any_window": max_in_window(times, window),
        "utilisation": utilisation,
        "calls_per_ingested_session": k / ingested if ingested else float("nan"),
        "link_lead_median_s": statistics.median(leads) if leads else float("nan"),
        "link_lead_max_s": max(leads) if leads else float("nan"),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--window", type=float, default=60.0, help="the quota window, seconds")
    parser.add_argument("--sessions", type=int, default=60, help="backlog size")
    parser.add_argument("--quick", action="store_true", help="a 3 s window and 60 sessions (about 25 s)")
    args = parser.parse_args()
    window = 3.0 if args.quick else args.window
    result = run(window, args.sessions)
    print(f"\nAPI budget: backlog of {args.sessions} sessions, {result['limit']} requests per {window:g} s\n")
    for name, value in result.items():
        print(f"{name:28} {value:10.3f}" if isinstance(value, float) else f"{name:28} {value:10}")


if __name__ == "__main__":
    main()
