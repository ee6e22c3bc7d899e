"""Typed models of the Results API answers (``results-v2-openapi.yml``, ``legacy-v1-openapi.yml``).

Field names are snake_case in Python and camelCase on the wire. Unknown fields are kept
(``extra="allow"``) so a newer API version loses nothing on its way into ``session.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)


class SessionSummary(ApiModel):
    """``SessionSummaryResultItemDto``: one session in a test's list."""

    session_id: UUID
    audience_id: UUID | None = None
    status: str
    start_time: datetime
    finish_time: datetime | None = None

    @property
    def is_complete(self) -> bool:
        return self.status == "COMPLETE"


class Pagination(ApiModel):
    limit: int
    offset: int
    total_count: int


class SessionPageMeta(ApiModel):
    pagination: Pagination


class SessionPage(ApiModel):
    """``SessionSummaryResultsResponseDto``: one page of a test's sessions, newest first.

    The items stay raw here and are parsed one by one (``SessionSummary``): one malformed item must
    not cost the others on its page.
    """

    test_id: UUID
    sessions: list[Any]
    meta: SessionPageMeta


class VideoDownload(ApiModel):
    """``VideoDownloadResponseDto``. The URL is a credential, hence a SecretStr: it never prints."""

    video_url: SecretStr
    session_id: UUID
    expires_at: datetime


class SessionDetails(ApiModel):
    """``SessionResultsV3ResponseDto``: participant, task groups and task responses of a session."""

    session_id: UUID | None
    audience_id: UUID | None = None
    test_plan_id: UUID | None = None
    session_participant: dict[str, Any] | None = None
    task_groups: list[dict[str, Any]] = Field(default_factory=list)
    tasks: list[dict[str, Any]] = Field(default_factory=list)


class Workspace(ApiModel):
    """v1 ``Workspace``."""

    id: str | None = None
    name: str | None = None
    uuid: str


class WorkspaceStudy(ApiModel):
    """v1 ``WorkspaceStudy``: a test in a workspace; Results API tests have ``type == "STUDYV2"``."""

    uuid: str
    title: str | None = None
    type: str | None = None
    product_type: str | None = Field(
        default=None, validation_alias=AliasChoices("productType", "product_type")
    )
    cursor: str | None = None
    ordered_at: datetime | None = None

    @property
    def is_results_api_test(self) -> bool:
        return (self.type or "").upper() == "STUDYV2"


@dataclass(frozen=True)
class NotFound:
    """The API answered 404: no such test or session, no video or transcript, or no permission.

    Returned rather than raised because it is an ordinary answer (a session without a video),
    and never retried.
    """

    operation: str
    resource_id: str
    message: str
