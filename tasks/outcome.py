"""How one session fared in one stage of one run: what the run summary and the exit code are made of."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    session_id: str
    test_id: str | None
    # done | no_video (final) | no_video_yet (asked again later) | failed | skipped (nothing to do)
    # | held (another live run holds the session)
    status: str
    reason: str
    bytes: int = 0
    link_requests: int = 0
    resumes: int = 0
    stage: str = "ingest"
    audio_seconds: float = 0.0
    frames: int = 0
    has_video: bool = False  # the bucket holds the session's video after this stage
    permanent: bool = False  # a failure that no rerun can fix (the media itself is bad)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
