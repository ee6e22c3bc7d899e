"""Where everything lives in the work bucket: the one place that turns names into object keys.

The layout is a contract with the teams that read the bucket; the README documents it.

    {prefix}sessions/{session_id}/video.mp4     the session video, byte for byte as UserTesting serves it
    {prefix}sessions/{session_id}/session.json  where the session stands (see tasks/storage/records.py)
    {prefix}sessions/{session_id}/vendor-transcript.vtt   UserTesting's own transcript (optional)
    {prefix}sessions/{session_id}/transcript.json|.vtt|.srt   Whisper's transcript
    {prefix}sessions/{session_id}/frames/*.jpg, frames/index.json   interval and scene frames
    {prefix}sessions/{session_id}/tasks.json    the session's tasks and their timings (UT_SESSION_DETAILS)
    {prefix}dataset/{table}/                    the Delta tables: sessions, tasks, segments, frames
    {prefix}state/unpublished/{session_id}/{stamp}   a settled record change the dataset has not published
    {prefix}runs/{flow_run_id}/summary.json, api-calls.jsonl   what each run did, every API request
    {prefix}runs/{flow_run_id}/processing/{batch_run_id}/{session_id}.json   a pool worker's outcome
    {prefix}state/watermarks/{test_id}.json     the nightly run's progress per test
    {prefix}state/ratelimit/{client_key}.json   the shared Results API request ledger
    {prefix}state/late-videos/{session_id}.json  sessions whose video was not ready: asked again
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class BucketLayout:
    """Object keys under one prefix (``""`` or ``"some/path/"``, as :class:`Settings` normalises it)."""

    prefix: str = ""

    def session_dir(self, session_id: UUID) -> str:
        # Only a UUID becomes part of a key: nothing from outside can steer a write elsewhere.
        return f"{self.prefix}sessions/{UUID(str(session_id))}/"

    def session_video(self, session_id: UUID) -> str:
        return f"{self.session_dir(session_id)}video.mp4"

    def session_json(self, session_id: UUID) -> str:
        return f"{self.session_dir(session_id)}session.json"

    def session_file(self, session_id: UUID, name: str) -> str:
        """``transcript.json``, ``frames/index.json``, ... next to the session's video."""
        return f"{self.session_dir(session_id)}{name}"

    def dataset_table(self, name: str) -> str:
        """The folder of one Delta table (``sessions``, ``tasks``, ``segments``, ``frames``)."""
        if not name.isidentifier():
            raise ValueError(f"not a table name: {name!r}")
        return f"{self.prefix}dataset/{name}/"

    def legacy_sessions_parquet(self) -> str:
        """The single-file table that the Delta tables replaced; removed by the first publish."""
        return f"{self.prefix}dataset/sessions.parquet"

    def unpublished_root(self) -> str:
        return f"{self.prefix}state/unpublished/"

    def unpublished_marker(self, session_id: UUID, stamp: str) -> str:
        """One settled change of a session's record, named by the record's ``updated_at`` stamp."""
        return f"{self.unpublished_root()}{UUID(str(session_id))}/{stamp}"

    def run_file(self, run_id: str, name: str) -> str:
        return f"{self.prefix}runs/{UUID(run_id)}/{name}"

    def processing_outcomes(self, run_id: str, batch_run_id: str) -> str:
        """Where the batch flow run ``batch_run_id`` reports, for run ``run_id``, how each session fared."""
        return self.run_file(run_id, f"processing/{UUID(batch_run_id)}/")

    def processing_outcome(self, run_id: str, batch_run_id: str, session_id: UUID) -> str:
        return f"{self.processing_outcomes(run_id, batch_run_id)}{UUID(str(session_id))}.json"

    def sessions_root(self) -> str:
        return f"{self.prefix}sessions/"

    def watermark(self, test_id: UUID) -> str:
        return f"{self.prefix}state/watermarks/{UUID(str(test_id))}.json"

    def late_videos_root(self) -> str:
        return f"{self.prefix}state/late-videos/"

    def late_video(self, session_id: UUID) -> str:
        return f"{self.late_videos_root()}{UUID(str(session_id))}.json"

    def rate_limit_ledger(self, client_key: str) -> str:
        return f"{self.prefix}state/ratelimit/{client_key}.json"


def client_key(api_base_url: str, client_identity: str) -> str:
    """A stable, non-secret name for one API client's quota (the API counts per client)."""
    return hashlib.sha256(f"{api_base_url}\n{client_identity}".encode()).hexdigest()[:24]
