"""What a run did, as it happens: the run summary, the artifacts, the exit code and the watermarks
are all read from one :class:`RunReport`.

Every session a run touches ends in exactly one of these, per stage:

| status | meaning | a problem? |
| --- | --- | --- |
| ``done`` | ingested / processed by this run | no |
| ``skipped`` | nothing to do: already done before this run | no |
| ``done_elsewhere`` | another run held it and finished it while this run waited | no |
| ``no_video`` | the API has no video, for good | no |
| ``no_video_yet`` | 404 within the grace window: later runs ask again | no (recorded) |
| ``held`` | another live run still holds it when this run ends | yes |
| ``failed`` | recorded as failed, with the stage and the reason | yes |

"Skipped" never hides "not done": a held session has its own count and keeps the nightly
watermark behind it, as do failures that a rerun can fix.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.artifacts import update_progress_artifact

from tasks.api.client import ListProblem
from tasks.outcome import Outcome
from tasks.runlog import ApiCallLog

# Outcomes that leave nothing for a later run to do.
SETTLED = frozenset({"done", "skipped", "done_elsewhere", "no_video"})


@dataclass
class RunReport:
    """Outcomes per session and stage (the latest wins), listing problems, run-level errors and timings.

    It also keeps the run's API action log (every Results API request made by this flow run) and the
    progress artifact that a long backfill keeps up to date in the UI.
    """

    run_id: str
    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    finish_times: dict[str, datetime] = field(default_factory=dict)
    list_problems: list[ListProblem] = field(default_factory=list)
    test_errors: dict[str, str] = field(default_factory=dict)
    run_errors: list[str] = field(default_factory=list)
    dataset: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    api_log: ApiCallLog = field(default_factory=ApiCallLog)
    expected: int = 0
    started: float = field(default_factory=time.monotonic)
    progress_id: UUID | None = None

    def add(self, outcome: Outcome) -> Outcome:
        """Record a session's outcome in a stage; one that was held and is now found done by the other
        run counts as ``done_elsewhere``, not as an ordinary skip."""
        key = (outcome.session_id, outcome.stage)
        previous = self.outcomes.get(key)
        if previous is not None and previous.status == "held" and outcome.status == "skipped":
            outcome = Outcome(
                **{
                    **outcome.as_dict(),
                    "status": "done_elsewhere",
                    "reason": f"{outcome.reason} by another run",
                }
            )
        self.outcomes[key] = outcome
        if self.progress_id and self.expected:
            handled = sum(o.status != "held" for o in self.outcomes.values())
            update_progress_artifact(
                self.progress_id,
                min(99.0, 100.0 * handled / self.expected),
                description=f"{handled} of {self.expected}",
            )
        return outcome

    def held(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.status == "held"]

    def unsettled(self, test_id: UUID) -> list[tuple[datetime, Outcome]]:
        """This test's listed sessions that a later run still has to finish, with their finish times."""
        found = []
        for outcome in self.outcomes.values():
            finished = self.finish_times.get(outcome.session_id)
            if outcome.test_id == str(test_id) and finished is not None and not _settled(outcome):
                found.append((finished, outcome))
        return sorted(found, key=lambda pair: pair[0])

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.timings[stage] = round(self.timings.get(stage, 0.0) + time.monotonic() - began, 3)

    @property
    def has_problems(self) -> bool:
        return bool(
            self.run_errors
            or self.test_errors
            or self.list_problems
            or any(o.status in ("failed", "held") for o in self.outcomes.values())
        )

    def as_dict(self, api_calls: list[dict[str, Any]]) -> dict[str, Any]:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for outcome in self.outcomes.values():
            counts[outcome.stage][outcome.status] += 1
        outcomes = list(self.outcomes.values())
        return {
            "run_id": self.run_id,
            "sessions": len({o.session_id for o in outcomes}),
            "counts": {stage: dict(c) for stage, c in counts.items()},
            "bytes": sum(o.bytes for o in outcomes),
            "link_requests": sum(o.link_requests for o in outcomes),
            "audio_seconds": round(sum(o.audio_seconds for o in outcomes), 1),
            "frames": sum(o.frames for o in outcomes),
            "api_calls": len(api_calls),
            "api_429s": sum(1 for c in api_calls if c["status"] == 429),
            "wall_seconds": {**self.timings, "total": round(time.monotonic() - self.started, 3)},
            "failures": [
                {"session_id": o.session_id, "stage": o.stage, "reason": o.reason}
                for o in outcomes
                if o.status == "failed"
            ],
            "held": [
                {"session_id": o.session_id, "stage": o.stage, "reason": o.reason}
                for o in outcomes
                if o.status == "held"
            ],
            "list_problems": [str(p) for p in self.list_problems],
            "test_errors": self.test_errors,
            "run_errors": self.run_errors,
            "dataset": self.dataset,
        }


def _settled(outcome: Outcome) -> bool:
    return outcome.status in SETTLED or (outcome.status == "failed" and outcome.permanent)


def summary_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The operator's table: one metric a row."""
    counts = summary["counts"]
    ingest, process = counts.get("ingest", {}), counts.get("process", {})

    def both(status: str) -> int:
        return ingest.get(status, 0) + process.get(status, 0)

    rows = [
        ("sessions seen", summary["sessions"]),
        ("skipped (already done)", both("skipped")),
        ("finished by another run during this run", both("done_elsewhere")),
        ("held by another run (not done)", both("held")),
        ("ingested", ingest.get("done", 0)),
        ("no video", ingest.get("no_video", 0)),
        ("video not ready yet (asked again later)", ingest.get("no_video_yet", 0)),
        ("processed", process.get("done", 0)),
        ("failed", len(summary["failures"])),
        ("unusable list items", len(summary["list_problems"])),
        ("bytes moved", summary["bytes"]),
        ("audio hours transcribed", round(summary["audio_seconds"] / 3600, 4)),
        ("frames written", summary["frames"]),
        ("API calls", summary["api_calls"]),
        ("API 429 answers", summary["api_429s"]),
        *((f"wall seconds: {stage}", seconds) for stage, seconds in summary["wall_seconds"].items()),
    ]
    return [{"metric": name, "value": value} for name, value in rows]


def failures_markdown(summary: dict[str, Any]) -> str:
    """Every problem of the run, one line each: what an operator has to look at."""
    lines = ["# Problems", ""]
    for error in summary["run_errors"]:
        lines.append(f"- run: {error}")
    for failure in summary["failures"]:
        lines.append(f"- `{failure['session_id']}` ({failure['stage']}) failed: {failure['reason']}")
    for held in summary["held"]:
        lines.append(f"- `{held['session_id']}` ({held['stage']}) not done, {held['reason']}")
    for problem in summary["list_problems"]:
        lines.append(f"- unusable list item: {problem}")
    for name, reason in summary["test_errors"].items():
        lines.append(f"- {name}: {reason}")
    if len(lines) == 2:
        lines.append("None: every session ended done, skipped or without video.")
    return "\n".join(lines)


def verdict(summary: dict[str, Any]) -> str:
    """The run's outcome in one line, for the end of the console output."""
    problems = {
        "failed": len(summary["failures"]),
        "held by another run": len(summary["held"]),
        "unusable list items": len(summary["list_problems"]),
        "tests not listed": len(summary["test_errors"]),
        "run errors": len(summary["run_errors"]),
    }
    found = [f"{count} {what}" for what, count in problems.items() if count]
    seen = f"{summary['sessions']} sessions"
    return f"{seen}: " + (", ".join(found) + " (see the run's problems artifact)" if found else "no problems")
