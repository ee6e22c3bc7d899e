"""How one session fared in one stage of one run: what the run summary and the exit code are made of."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    session_id: str
    test_id: str | None
    status: str  # done | no_video | failed | skipped
    reason: str
    bytes: int = 0
    link_requests: int = 0
    resumes: int = 0
    stage: str = "ingest"
    audio_seconds: float = 0.0
    frames: int = 0
    has_video: bool = False  # the bucket holds the session's video after this stage

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
