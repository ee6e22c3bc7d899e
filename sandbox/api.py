"""The sandbox's HTTP face: UserTesting's token endpoint, Results API (v1/v2/v3) and the S3 links.

Behaviour follows the published specs (``results-v2-openapi.yml``, ``legacy-v1-openapi.yml``) and
the help-center article on video downloads, including the parts a generic mock would skip:
NestJS-style error bodies, a per-client rate limit with its headers, pre-signed video links that
expire and work once, S3's XML errors. Where the real service is lenient or unknown the sandbox
is strict (a sliding rate window; links tracked server-side), so a client that passes here has no
slack to rely on in production.

Besides the API, ``/_sandbox/`` offers what tests need and the real service lacks: server-side
counts of every request (``stats``), a ``reset``, one-shot injected ``faults`` and the ``world``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode
from uuid import UUID
from xml.sax.saxutils import escape

import anyio
import anyio.to_thread
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sandbox.world import DEFAULT_MEDIA_DIR, ProductType, Session, Test, World, build_world, isoformat_ms

DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"

AUTH_SERVER_PATH = "/oauth2/aus1p3vtd8vtm4Bxv0h8"
TOKEN_PATH = f"{AUTH_SERVER_PATH}/v1/token"
SCOPE = "studies:read"

# operationIds from results-v2-openapi.yml; the v1 spec has none, so its two get names of our own.
LIST_SESSIONS = "SessionResultsController_getSessionSummaryResults"
SESSION_DETAILS = "SessionResultsV3Controller_getSessionResults"
VIDEO_DOWNLOAD_URL = "SessionResultsController_getVideoDownloadUrl"
TRANSCRIPT = "SessionResultsController_getTranscriptVtt"
LIST_WORKSPACES = "listWorkspaces"
WORKSPACE_STUDIES = "getWorkspaceStudies"
TOKEN_TARGET = "token"
VIDEO_TARGET = "video"
FAULT_TARGETS = frozenset(
    {
        LIST_SESSIONS,
        SESSION_DETAILS,
        VIDEO_DOWNLOAD_URL,
        TRANSCRIPT,
        LIST_WORKSPACES,
        WORKSPACE_STUDIES,
        TOKEN_TARGET,
        VIDEO_TARGET,
    }
)

VIDEO_BUCKET = "usertesting-sandbox-videos"
VIDEO_REGION = "us-east-2"
VIDEO_ACCESS_KEY_ID = "AKIAIOSFODNN7SANDBOX"  # fake, shaped like an IAM access key id
VIDEO_PATH = re.compile(rf"^/{VIDEO_BUCKET}/videos/(?P<session>[0-9a-fA-F-]{{36}})/session\.mp4$")

LIMIT_RANGE = (1, 500)
OFFSET_RANGE = (0, 10_000)
WORKSPACE_PAGE_SIZE = 50
CHUNK_SIZE = 256 * 1024

UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Headers every Results API answer carries, per the spec's response headers.
API_HEADERS = {
    "Cache-Control": "private, no-store",
    "Pragma": "no-cache",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
}


@dataclass(frozen=True)
class SandboxConfig:
    """How one sandbox server behaves; the CLI's flags one to one, times in (fractional) seconds."""

    public_url: str
    anchor: datetime | None = None
    media_dir: Path = DEFAULT_MEDIA_DIR
    clients: Mapping[str, str] = field(default_factory=lambda: {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET})
    rate_limit: int = 10
    rate_window: float = 60.0
    token_ttl: float = 3600.0
    link_ttl: float = 3600.0
    video_bytes_per_second: float | None = None  # pace each video download; None: as fast as it goes


# -- responses ----------------------------------------------------------------------------------


class ApiJSON(JSONResponse):
    media_type = "application/json; charset=utf-8"


class ApiProblem(Exception):
    """A handler's refusal (400, 404): the operation's wrapper renders it in its API's error style."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# NestJS's built-in exceptions use these messages when thrown without one.
_NEST_DEFAULT_MESSAGES = {
    401: "Unauthorized",
    429: "ThrottlerException: Too Many Requests",
    500: "Internal server error",
}


def nest_error(status: int, message: str | None = None) -> dict[str, Any]:
    """A NestJS error body: ``{statusCode, message}``, plus ``error`` when a message was given."""
    phrase = HTTPStatus(status).phrase
    if message is None:
        return {"statusCode": status, "message": _NEST_DEFAULT_MESSAGES.get(status, phrase)}
    return {"statusCode": status, "message": message, "error": phrase}


def legacy_error(status: int, message: str | None = None) -> dict[str, Any]:
    """The v1 API's ``HttpErrorResponse``."""
    http_status = HTTPStatus(status)
    return {"errorCode": http_status.name, "errorMessage": message or http_status.phrase}


def api_error(legacy: bool, status: int, message: str | None = None) -> ApiJSON:
    return ApiJSON(
        legacy_error(status, message) if legacy else nest_error(status, message), status_code=status
    )


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


@dataclass(frozen=True)
class S3Error:
    """An S3 error answer: status, code and message, plus the extra elements S3 adds for that code."""

    status: int
    code: str
    message: str
    details: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        request_id = secrets.token_hex(8).upper()
        host_id = base64.b64encode(secrets.token_bytes(48)).decode()
        elements = [("Code", self.code), ("Message", self.message), *self.details.items()]
        elements += [("RequestId", request_id), ("HostId", host_id)]
        body = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in elements)
        return Response(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{body}</Error>',
            status_code=self.status,
            media_type="application/xml",
            headers={"x-amz-request-id": request_id, "x-amz-id-2": host_id},
        )


_S3_STATUS_ERRORS = {
    403: ("AccessDenied", "Access Denied"),
    404: ("NoSuchKey", "The specified key does not exist."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


def s3_status_error(status: int) -> S3Error:
    """The error S3 would send with ``status``, for injected faults."""
    phrase = HTTPStatus(status).phrase
    code, message = _S3_STATUS_ERRORS.get(status, (phrase.replace(" ", "").replace("-", ""), phrase))
    return S3Error(status, code, message)


# -- OAuth tokens -------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenAuthority:
    """Issues HMAC-signed JWTs and remembers each one, so expiry and reset are the server's call.

    The JWT's ``exp`` claim is informative only: a token is valid while the server's own record of
    it (by ``jti``) is younger than the TTL, which can be a fraction of a second in tests.
    """

    def __init__(self, issuer: str, ttl: float) -> None:
        self._issuer, self._ttl = issuer, ttl
        self._key = secrets.token_bytes(32)
        self._expiry: dict[str, tuple[str, float]] = {}  # jti -> (client id, monotonic expiry)

    def issue(self, client_id: str) -> IssuedToken:
        now = time.monotonic()
        self._expiry = {jti: grant for jti, grant in self._expiry.items() if grant[1] > now}
        jti = f"AT.{secrets.token_urlsafe(24)}"
        expires_in = max(1, int(self._ttl))
        issued_at = int(time.time())
        header = {"kid": "sandbox", "alg": "HS256"}
        claims = {
            "ver": 1,
            "jti": jti,
            "iss": self._issuer,
            "aud": "api://default",
            "iat": issued_at,
            "exp": issued_at + expires_in,
            "cid": client_id,
            "scp": [SCOPE],
            "sub": client_id,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        token = f"{signing_input}.{_b64url(self._sign(signing_input))}"
        self._expiry[jti] = (client_id, now + self._ttl)
        return IssuedToken(token, expires_in)

    def client_for(self, authorization: str | None) -> str | None:
        """The client a ``Bearer`` header authenticates, or None when missing, forged or expired."""
        scheme, _, token = (authorization or "").partition(" ")
        parts = token.strip().split(".")
        if scheme.lower() != "bearer" or len(parts) != 3:
            return None
        signing_input = f"{parts[0]}.{parts[1]}"
        try:
            valid = hmac.compare_digest(_unb64url(parts[2]), self._sign(signing_input))
            jti = json.loads(_unb64url(parts[1]))["jti"] if valid else None
        except (binascii.Error, ValueError, KeyError, TypeError):
            return None
        grant = self._expiry.get(jti) if isinstance(jti, str) else None
        if grant is None or time.monotonic() >= grant[1]:
            return None
        return grant[0]

    def reset(self) -> None:
        self._expiry.clear()

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()


# -- rate limit ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # whole seconds (rounded up) until the oldest counted request leaves the window

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset),
        }


class SlidingWindowLimiter:
    """At most ``limit`` admitted requests per client in any ``window`` seconds.

    Refused requests are not counted, so waiting ``Retry-After`` seconds always frees a slot.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._admitted: dict[str, deque[float]] = {}

    def admit(self, client_id: str, now: float) -> RateDecision:
        """Admit or refuse a request that arrived at ``now`` (monotonic seconds)."""
        times = self._admitted.setdefault(client_id, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        allowed = len(times) < self.limit
        if allowed:
            times.append(now)
        reset = math.ceil(times[0] + self.window - now) if times else 0
        return RateDecision(allowed, self.limit, self.limit - len(times), max(reset, 0))

    def reset(self) -> None:
        self._admitted.clear()


# -- pre-signed video links ---------------------------------------------------------------------


@dataclass(slots=True)
class Link:
    """A link the API handed out; the server decides expiry and single use, as UserTesting documents."""

    session_id: UUID
    expires_at: float  # monotonic
    expires_wall: datetime
    expires_param: int
    used: bool = False


@dataclass(frozen=True, slots=True)
class IssuedLink:
    url: str
    expires_at: datetime


def _canonical_query(pairs: list[tuple[str, str]]) -> str:
    """SigV4's canonical query string: sorted, RFC 3986-encoded, the signature itself left out."""
    kept = sorted((k, v) for k, v in pairs if k != "X-Amz-Signature")
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in kept)


class VideoLinks:
    """Pre-signed S3-style GET links to session videos, signed with a key only this server knows."""

    def __init__(self, public_url: str, ttl: float) -> None:
        self._public_url, self._ttl = public_url.rstrip("/"), ttl
        self._key = secrets.token_bytes(32)
        self._links: dict[str, Link] = {}

    def issue(self, session_id: UUID) -> IssuedLink:
        signed_at = datetime.now(UTC)
        expires_wall = signed_at + timedelta(seconds=self._ttl)
        expires_param = max(1, math.ceil(self._ttl))
        path = f"/{VIDEO_BUCKET}/videos/{session_id}/session.mp4"
        params = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", f"{VIDEO_ACCESS_KEY_ID}/{signed_at:%Y%m%d}/{VIDEO_REGION}/s3/aws4_request"),
            ("X-Amz-Date", f"{signed_at:%Y%m%dT%H%M%SZ}"),
            ("X-Amz-Expires", str(expires_param)),
            # Temporary credentials put a token in every link; here it also makes each link unique.
            ("X-Amz-Security-Token", secrets.token_urlsafe(24)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        signature = self._sign("GET", path, _canonical_query(params))
        self._links[signature] = Link(session_id, time.monotonic() + self._ttl, expires_wall, expires_param)
        query = urlencode([*params, ("X-Amz-Signature", signature)], quote_via=quote, safe="")
        return IssuedLink(f"{self._public_url}{path}?{query}", expires_wall)

    def verify(self, method: str, path: str, query_string: str) -> Link | S3Error:
        """The link a request presents, or the 403 S3 would answer (bad signature, expired, used)."""
        pairs = parse_qsl(query_string, keep_blank_values=True)
        signature = dict(pairs).get("X-Amz-Signature")
        if not signature:
            return S3Error(403, "AccessDenied", "Access Denied")
        expected = self._sign(method, path, _canonical_query(pairs))
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            return S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method.",
                {"AWSAccessKeyId": VIDEO_ACCESS_KEY_ID},
            )
        link = self._links.get(signature)
        if link is None or time.monotonic() >= link.expires_at:
            details = {"ServerTime": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"}
            if link is not None:
                details = {
                    "X-Amz-Expires": str(link.expires_param),
                    "Expires": f"{link.expires_wall:%Y-%m-%dT%H:%M:%SZ}",
                    **details,
                }
            return S3Error(403, "AccessDenied", "Request has expired", details)
        if link.used:
            return S3Error(403, "AccessDenied", "Access Denied")
        return link

    def reset(self) -> None:
        self._links.clear()

    def _sign(self, method: str, path: str, canonical_query: str) -> str:
        return hmac.new(
            self._key, f"{method}\n{path}\n{canonical_query}".encode(), hashlib.sha256
        ).hexdigest()


# -- injected faults ----------------------------------------------------------------------------


class PatchOp(BaseModel):
    """One JSON Patch (RFC 6902) operation on an answer: ``replace``, ``add`` or ``remove`` at a JSON
    Pointer, e.g. ``{"op": "replace", "path": "/sessions/2/sessionId", "value": "not-a-uuid"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: str = Field(pattern="^(replace|add|remove)$")
    path: str = Field(pattern="^(/[^/]*)+$")
    value: Any = None


class FaultSpec(BaseModel):
    """One injected failure: the next ``times`` matching requests fail, stall, get cut off, or get a
    garbage answer (``body``: this raw text with status 200; ``patch``: the real answer, edited)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str
    session_id: UUID | None = None
    status: int | None = None
    drop_after_bytes: int | None = Field(default=None, ge=0)
    delay_seconds: float | None = Field(default=None, gt=0)
    body: str | None = None
    patch: tuple[PatchOp, ...] | None = None
    times: int = Field(default=1, ge=1)

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if value not in FAULT_TARGETS:
            raise ValueError(f"unknown target; one of {sorted(FAULT_TARGETS)}")
        return value

    @field_validator("status")
    @classmethod
    def _error_status(cls, value: int | None) -> int | None:
        if value is not None and (value not in HTTPStatus._value2member_map_ or not 400 <= value <= 599):
            raise ValueError("must be an HTTP error status (400-599)")
        return value

    @model_validator(mode="after")
    def _one_effect(self) -> FaultSpec:
        effects = [
            x
            for x in (self.status, self.drop_after_bytes, self.delay_seconds, self.body, self.patch)
            if x is not None
        ]
        if len(effects) != 1:
            raise ValueError("give exactly one of status, drop_after_bytes, delay_seconds, body, patch")
        if self.drop_after_bytes is not None and self.target != VIDEO_TARGET:
            raise ValueError("drop_after_bytes only applies to the video target")
        if (self.body is not None or self.patch is not None) and self.target in (VIDEO_TARGET, TOKEN_TARGET):
            raise ValueError("body and patch apply to the Results API's JSON answers")
        return self


def apply_patch(document: Any, ops: tuple[PatchOp, ...]) -> Any:
    """The document with the JSON Patch operations applied (a copy; the world is never changed)."""
    document = json.loads(json.dumps(document))
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op.path.split("/")[1:]]
        target = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key: Any = int(last) if isinstance(target, list) and last != "-" else last
        if op.op == "remove":
            del target[key]
        elif isinstance(target, list) and op.op == "add":
            target.insert(len(target) if key == "-" else key, op.value)
        else:
            target[key] = op.value
    return document


FAULT_LIST = TypeAdapter(list[FaultSpec])


@dataclass(slots=True)
class _PendingFault:
    spec: FaultSpec
    left: int


class Faults:
    """Pending faults, matched in the order they were added and used up one request at a time."""

    def __init__(self) -> None:
        self._pending: list[_PendingFault] = []

    def add(self, specs: list[FaultSpec]) -> None:
        self._pending += [_PendingFault(spec, spec.times) for spec in specs]

    def take(self, target: str, session_id: UUID | None) -> FaultSpec | None:
        for entry in self._pending:
            if entry.spec.target == target and entry.spec.session_id in (None, session_id):
                entry.left -= 1
                if entry.left == 0:
                    self._pending.remove(entry)
                return entry.spec
        return None

    def pending(self) -> list[dict[str, Any]]:
        return [{**entry.spec.model_dump(mode="json"), "times": entry.left} for entry in self._pending]

    def reset(self) -> None:
        self._pending.clear()


# -- server-side statistics ---------------------------------------------------------------------


@dataclass(slots=True)
class ApiRecord:
    """One request to the Results API. ``counted``: it entered its client's rate window."""

    t: float
    client_id: str | None
    method: str
    path: str
    operation: str | None
    session_id: str | None
    status: int | None = None
    counted: bool = False


@dataclass(slots=True)
class TokenRecord:
    """One request to the token endpoint; ``client_id`` once the client authenticated."""

    t: float
    client_id: str | None = None
    status: int | None = None


@dataclass(slots=True)
class VideoRecord:
    """One request for a video object; ``bytes_sent`` grows while it streams."""

    t: float
    session_id: str | None
    range: str | None
    status: int | None = None
    bytes_sent: int = 0
    completed: bool = False


@dataclass
class Stats:
    api_requests: list[ApiRecord] = field(default_factory=list)
    video_requests: list[VideoRecord] = field(default_factory=list)
    token_requests: list[TokenRecord] = field(default_factory=list)
    links_issued: Counter[str] = field(default_factory=Counter)
    tokens_issued: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "api_requests": [asdict(r) for r in self.api_requests],
            "video_requests": [asdict(r) for r in self.video_requests],
            "token_requests": [asdict(r) for r in self.token_requests],
            "links_issued": dict(self.links_issued),
            "tokens_issued": self.tokens_issued,
        }


# -- state --------------------------------------------------------------------------------------


class SandboxState:
    """Everything one server remembers; ``reset`` forgets all of it but the world."""

    def __init__(self, config: SandboxConfig, world: World) -> None:
        self.config, self.world = config, world
        self.tokens = TokenAuthority(f"{config.public_url.rstrip('/')}{AUTH_SERVER_PATH}", config.token_ttl)
        self.limiter = SlidingWindowLimiter(config.rate_limit, config.rate_window)
        self.links = VideoLinks(config.public_url, config.link_ttl)
        self.faults = Faults()
        self.stats = Stats()
        self._etags: dict[tuple[Path, int, int], str] = {}
        self._epoch_offset = time.time() - time.monotonic()

    def epoch(self, monotonic: float) -> float:
        """Wall-clock seconds for a monotonic reading.

        Stats times then differ exactly as the rate limiter's clock does, so requests counted per
        window from ``/_sandbox/stats`` agree with what the limiter saw.
        """
        return monotonic + self._epoch_offset

    def reset(self) -> None:
        self.tokens.reset()
        self.limiter.reset()
        self.links.reset()
        self.faults.reset()
        self.stats = Stats()

    async def etag(self, path: Path, size: int, mtime_ns: int) -> str:
        """The quoted MD5 of a file, as S3 reports for single-part uploads; cached per file version."""
        key = (path, size, mtime_ns)
        if key not in self._etags:
            self._etags[key] = f'"{await anyio.to_thread.run_sync(_file_md5, path)}"'
        return self._etags[key]


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# -- answers of the Results API -----------------------------------------------------------------


def session_summary(session: Session) -> dict[str, Any]:
    """``SessionSummaryResultItemDto``."""
    return {
        "sessionId": str(session.session_id),
        "audienceId": str(session.audience_id) if session.audience_id else None,
        "status": session.status,
        "startTime": isoformat_ms(session.start_time),
        "finishTime": isoformat_ms(session.finish_time) if session.finish_time else None,
    }


def _task_answer(task_type: str, index: int) -> dict[str, Any]:
    """A plausible ``TaskAnswerDto``: the one key for the task's type, varied by session."""
    answers: dict[str, dict[str, Any]] = {
        "WRITTEN": {"written": {"response": "Spoken answer; see the session transcript."}},
        "RATING_SCALE": {"ratingScale": {"value": 1 + index % 5, "scaleMinimum": 1, "scaleMaximum": 5}},
        "MULTIPLE_CHOICE": {
            "multipleChoice": {
                "selected": [("Account details", "Permissions", "Plan selection")[index % 3]],
                "multiSelect": False,
            }
        },
        "NPS": {"nps": {"score": index * 3 % 11}},
        "URL": {"url": {"url": "https://app.example.com/signup"}},
        "BLANK": {"blank": {}},
    }
    return answers[task_type]


def session_details(world: World, session: Session) -> dict[str, Any]:
    """``SessionResultsV3ResponseDto``: participant demographics, task groups and task responses."""
    test = world.test_of(session)
    participant = world.participant(session)
    demographics = [
        ("GENDER", "What is your gender?", participant.gender),
        ("AGE_GROUP", "What is your age?", participant.age_group),
        ("COUNTRY", "Where do you live?", participant.country),
    ]
    timings = world.task_timings(session)
    # A session still in progress has answered its first task only. Unanswered tasks are left out
    # rather than given ``response: null``: the spec's ``nullable`` beside ``allOf`` does not allow
    # null under OpenAPI 3.0.3's rules, so a strict client could reject it.
    answered = test.tasks if session.finish_time is not None else test.tasks[:1]
    tasks = [
        {
            "uuid": str(task.task_id),
            "text": task.text,
            "type": task.type,
            "response": {
                "startTimeMs": timings[n][0],
                "endTimeMs": timings[n][1],
                "skipped": False,
                "answer": _task_answer(task.type, session.index),
            },
        }
        for n, task in enumerate(answered)
    ]
    task_groups = []
    if test.product_type is ProductType.NON_THINK_OUT_LOUD:
        task_groups.append(
            {
                "uuid": str(UUID(int=test.test_plan_id.int ^ 1)),
                "type": "QX_SCORE",
                "response": {"score": 40 + session.index * 7 % 61},
            }
        )
    return {
        "sessionId": str(session.session_id),
        "audienceId": str(session.audience_id) if session.audience_id else None,
        "testPlanId": str(test.test_plan_id),
        "sessionParticipant": {
            "participantId": str(participant.participant_id),
            "demographicsInfo": [
                {
                    "id": str(UUID(int=participant.participant_id.int ^ (n + 1))),
                    "code": code,
                    "label": label,
                    "value": value,
                    "type": "DEMOGRAPHIC_QUESTION_TYPE_SINGLE",
                }
                for n, (code, label, value) in enumerate(demographics)
            ],
        },
        "taskGroups": task_groups,
        "tasks": tasks,
    }


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def webvtt(text: str, duration: float | None) -> str:
    """A WebVTT transcript: one cue per sentence, spread over the clip by sentence length."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    duration = duration or 0.0
    lead = 0.5 if duration > 2 else 0.0
    span = max(duration - 2 * lead, 0.5 * len(sentences))
    total_chars = sum(len(s) for s in sentences)
    cues, start = [], lead
    for sentence in sentences:
        end = start + span * len(sentence) / total_chars
        cues.append(f"{_vtt_time(start)} --> {_vtt_time(end)}\n{sentence}")
        start = end
    return "WEBVTT\n\n" + "\n\n".join(cues) + "\n"


def workspace_study(test: Test, position: int) -> dict[str, Any]:
    """v1 ``WorkspaceStudy``; ``cursor`` is the 1-based position, base64 without padding (``MQ``)."""
    return {
        "cursor": _b64url(str(position).encode()),
        "orderedAt": f"{test.ordered_at:%Y-%m-%dT%H:%M:%SZ}",
        "orderedBy": {"email": test.ordered_by.email, "name": test.ordered_by.name},
        "productType": test.product_type,
        "title": test.title,
        "type": test.type,
        "uuid": str(test.test_id),
    }


# -- request validation -------------------------------------------------------------------------


def _uuid_param(value: str | None, name: str, message: str) -> UUID:
    if value is None or not UUID_PATTERN.match(value):
        raise ApiProblem(400, message.format(name=name))
    return UUID(value)


def _int_query(request: Request, name: str, default: int, bounds: tuple[int, int]) -> int:
    """A NestJS-validated integer query parameter: 400 with class-validator's message when wrong."""
    values = request.query_params.getlist(name)
    if not values:
        return default
    try:
        number = float(values[-1])
    except ValueError:
        number = math.nan
    if len(values) > 1 or not math.isfinite(number) or number != int(number):
        raise ApiProblem(400, f"{name} must be an integer number")
    if number < bounds[0]:
        raise ApiProblem(400, f"{name} must not be less than {bounds[0]}")
    if number > bounds[1]:
        raise ApiProblem(400, f"{name} must not be greater than {bounds[1]}")
    return int(number)


def _session_or_404(state: SandboxState, request: Request, not_found: str) -> Session:
    session_id = _uuid_param(
        request.path_params["sessionId"], "sessionId", "Validation failed (uuid is expected)"
    )
    session = state.world.session(session_id)
    if session is None:
        raise ApiProblem(404, not_found)
    return session


# -- API operations -----------------------------------------------------------------------------

Handler = Callable[[Request, SandboxState], Awaitable[Response]]


async def list_sessions(request: Request, state: SandboxState) -> Response:
    test_id = _uuid_param(request.query_params.get("testId"), "testId", "{name} must be a UUID")
    limit = _int_query(request, "limit", 25, LIMIT_RANGE)
    offset = _int_query(request, "offset", 0, OFFSET_RANGE)
    test = state.world.test(test_id)
    if test is None or not test.in_results_api:
        raise ApiProblem(404, "Test not found")
    page = test.sessions[offset : offset + limit]
    return ApiJSON(
        {
            "testId": str(test.test_id),
            "sessions": [session_summary(s) for s in page],
            "meta": {"pagination": {"limit": limit, "offset": offset, "totalCount": len(test.sessions)}},
        }
    )


async def get_session_details(request: Request, state: SandboxState) -> Response:
    session = _session_or_404(state, request, "Session not found")
    return ApiJSON(session_details(state.world, session))


async def get_video_download_url(request: Request, state: SandboxState) -> Response:
    session = _session_or_404(state, request, "Video not found")
    if not state.world.has_video(session):
        raise ApiProblem(404, "Video not found")
    link = state.links.issue(session.session_id)
    state.stats.links_issued[str(session.session_id)] += 1
    return ApiJSON(
        {
            "videoUrl": link.url,
            "sessionId": str(session.session_id),
            "expiresAt": isoformat_ms(link.expires_at),
        }
    )


async def get_transcript(request: Request, state: SandboxState) -> Response:
    session = _session_or_404(state, request, "Transcript not found")
    text = state.world.transcript_text(session)
    if text is None:
        raise ApiProblem(404, "Transcript not found")
    clip = state.world.clips[session.media or ""]
    return Response(webvtt(text, clip.duration), media_type="text/vtt", headers={"Accept-Ranges": "bytes"})


async def list_workspaces(request: Request, state: SandboxState) -> Response:
    workspace = state.world.workspace
    return ApiJSON([{"id": workspace.id, "name": workspace.name, "uuid": str(workspace.uuid)}])


def _cursor_position(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        position = int(_unb64url(cursor).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiProblem(400, "Invalid cursor") from None
    if position < 1:
        raise ApiProblem(400, "Invalid cursor")
    return position


async def list_workspace_studies(request: Request, state: SandboxState) -> Response:
    """Tests of a workspace, newest first, 50 a page; ``after``/``before`` take an entry's cursor."""
    workspace_id = _uuid_param(request.path_params["workspaceUuid"], "workspaceUuid", "Not a valid UUID")
    after = _cursor_position(request.query_params.get("after"))
    before = _cursor_position(request.query_params.get("before"))
    if workspace_id != state.world.workspace.uuid:
        raise ApiProblem(404, "Workspace not found")
    ordered = sorted(state.world.tests, key=lambda t: t.ordered_at, reverse=True)
    entries = [
        (position, test)
        for position, test in enumerate(ordered, start=1)
        if (after is None or position > after) and (before is None or position < before)
    ]
    page = (
        entries[-WORKSPACE_PAGE_SIZE:]
        if before is not None and after is None
        else entries[:WORKSPACE_PAGE_SIZE]
    )
    return ApiJSON([workspace_study(test, position) for position, test in page])


@dataclass(frozen=True)
class Operation:
    """An authenticated, rate-limited Results API operation. ``legacy``: a v1 endpoint."""

    operation_id: str
    paths: tuple[str, ...]
    handler: Handler
    legacy: bool = False


# The v1 spec's server URL ends in /usertesting/api: that is where the v1 operations live.
OPERATIONS = (
    Operation(LIST_SESSIONS, ("/api/v2/sessionResults",), list_sessions),
    Operation(SESSION_DETAILS, ("/api/v3/sessionResults/{sessionId}",), get_session_details),
    Operation(
        VIDEO_DOWNLOAD_URL, ("/api/v2/sessionResults/{sessionId}/videoDownloadUrl",), get_video_download_url
    ),
    Operation(TRANSCRIPT, ("/api/v2/sessionResults/{sessionId}/transcript",), get_transcript),
    Operation(LIST_WORKSPACES, ("/usertesting/api/v1/workspaces",), list_workspaces, True),
    Operation(
        WORKSPACE_STUDIES,
        ("/usertesting/api/v1/workspaces/{workspaceUuid}",),
        list_workspace_studies,
        True,
    ),
)


def _as_uuid(value: str | None) -> UUID | None:
    return UUID(value) if value and UUID_PATTERN.match(value) else None


def operation_endpoint(operation: Operation, state: SandboxState) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler the way the real API's guards do: token, then rate limit, then the handler."""

    async def endpoint(request: Request) -> Response:
        session_id = request.path_params.get("sessionId")
        arrived = time.monotonic()
        record = ApiRecord(
            t=state.epoch(arrived),
            client_id=state.tokens.client_for(request.headers.get("authorization")),
            method=request.method,
            path=request.url.path,
            operation=operation.operation_id,
            session_id=session_id,
        )
        state.stats.api_requests.append(record)
        if record.client_id is None:
            response: Response = api_error(operation.legacy, 401)
        else:
            decision = state.limiter.admit(record.client_id, arrived)
            record.counted = decision.allowed
            if decision.allowed:
                response = await _answer(operation, state, request, _as_uuid(session_id))
            else:
                response = api_error(operation.legacy, 429)
            response.headers.update(decision.headers())
            if response.status_code == 429:
                response.headers["Retry-After"] = str(max(1, decision.reset))
        response.headers.update(API_HEADERS)
        record.status = response.status_code
        return response

    return endpoint


async def _answer(
    operation: Operation, state: SandboxState, request: Request, session_id: UUID | None
) -> Response:
    fault = state.faults.take(operation.operation_id, session_id)
    if fault is not None and fault.delay_seconds is not None:
        await anyio.sleep(fault.delay_seconds)
    if fault is not None and fault.status is not None:
        return api_error(operation.legacy, fault.status)
    if fault is not None and fault.body is not None:
        return Response(fault.body, status_code=200, media_type="application/json")
    try:
        response = await operation.handler(request, state)
    except ApiProblem as problem:
        return api_error(operation.legacy, problem.status, problem.message)
    if fault is not None and fault.patch is not None:
        return ApiJSON(apply_patch(json.loads(bytes(response.body)), fault.patch))
    return response


# -- OAuth token endpoint -----------------------------------------------------------------------


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str] | None:
    """Client id and secret from the form (client_secret_post) or a Basic header (client_secret_basic)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password
    if "client_id" in form and "client_secret" in form:
        return form["client_id"], form["client_secret"]
    return None


async def token_endpoint(request: Request, state: SandboxState) -> Response:
    record = TokenRecord(t=state.epoch(time.monotonic()))
    state.stats.token_requests.append(record)
    response = await _token_answer(request, state, record)
    record.status = response.status_code
    return response


async def _token_answer(request: Request, state: SandboxState, record: TokenRecord) -> Response:
    fault = state.faults.take(TOKEN_TARGET, None)
    if fault is not None and fault.delay_seconds is not None:
        await anyio.sleep(fault.delay_seconds)
    if fault is not None and fault.status is not None:
        error = "server_error" if fault.status >= 500 else "invalid_request"
        return oauth_error(fault.status, error, f"Injected fault: HTTP {fault.status}")
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return oauth_error(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded.")
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    credentials = _client_credentials(request, form)
    expected = state.config.clients.get(credentials[0]) if credentials else None
    if (
        credentials is None
        or expected is None
        or not hmac.compare_digest(expected.encode(), credentials[1].encode())
    ):
        return oauth_error(
            401,
            "invalid_client",
            "Client authentication failed. Either the client or the client credentials are invalid.",
        )
    if form.get("grant_type") != "client_credentials":
        return oauth_error(
            400,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server. "
            "Configured grant types: [client_credentials].",
        )
    scopes = form.get("scope", "").split()
    if not scopes:
        return oauth_error(
            400,
            "invalid_scope",
            "The authorization server resource does not have any configured default scopes, "
            "'scope' must be provided.",
        )
    if any(scope != SCOPE for scope in scopes):
        return oauth_error(
            400,
            "invalid_scope",
            "One or more scopes are not configured for the authorization server resource.",
        )
    record.client_id = credentials[0]
    issued = state.tokens.issue(credentials[0])
    state.stats.tokens_issued += 1
    return JSONResponse(
        {
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "access_token": issued.access_token,
            "scope": SCOPE,
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


# -- video objects (the sandbox playing S3) -----------------------------------------------------


class ConnectionDropped(Exception):
    """Raised after an injected ``drop_after_bytes`` fault: the server closes the connection mid-body."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    stop: int  # exclusive


class RangeNotSatisfiable(Exception):
    """The ``Range`` starts past the object's end (S3: 416 InvalidRange)."""


RANGE_PATTERN = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range a ``Range`` header asks for, or None (whole object) when it asks none.

    Like S3, a header that is not one valid ``bytes=`` range is ignored; one that starts past the
    end raises :class:`RangeNotSatisfiable`.
    """
    match = RANGE_PATTERN.match(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return ByteRange(start, size if last == "" else min(int(last) + 1, size))


def _etag_matches(header: str, etag: str) -> bool:
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in tags or etag.strip('"') in tags


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


class ObjectResponse(Response):
    """Part of a media file, streamed in chunks (never whole in memory) and counted as it goes.

    The link is marked used once a response has delivered the object's last byte. An injected
    delay stalls after the headers; an injected drop closes the connection mid-body. With
    ``bytes_per_second`` the body is paced, so tests can catch a download mid-way.
    """

    def __init__(
        self,
        path: Path,
        body_range: ByteRange,
        object_size: int,
        *,
        status_code: int,
        headers: dict[str, str],
        link: Link,
        record: VideoRecord,
        fault: FaultSpec | None,
        bytes_per_second: float | None,
    ) -> None:
        super().__init__(status_code=status_code, headers=headers, media_type="video/mp4")
        self.path, self.range, self.object_size = path, body_range, object_size
        self.link, self.record, self.fault = link, record, fault
        self.bytes_per_second = bytes_per_second

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        dropped = False
        async with anyio.create_task_group() as group:
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            dropped = await self._send_body(send)
            group.cancel_scope.cancel()
        if dropped:
            raise ConnectionDropped(f"closed after {self.record.bytes_sent} body bytes")

    async def _send_body(self, send: Send) -> bool:
        """Send the body; True when the connection must be cut short instead of completing."""
        if self.fault is not None and self.fault.delay_seconds is not None:
            await anyio.sleep(self.fault.delay_seconds)
        length = self.range.stop - self.range.start
        cut = self.fault.drop_after_bytes if self.fault is not None else None
        remaining = length if cut is None else min(length, cut)
        rate = self.bytes_per_second
        chunk_size = CHUNK_SIZE if rate is None else max(4096, min(CHUNK_SIZE, int(rate / 20)))
        started = time.monotonic()
        with self.path.open("rb") as file:
            file.seek(self.range.start)
            while remaining > 0:
                chunk = await anyio.to_thread.run_sync(file.read, min(chunk_size, remaining))
                if not chunk:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.record.bytes_sent += len(chunk)
                remaining -= len(chunk)
                if rate is not None:  # behind schedule (a loaded machine): no pause, never a negative one
                    await anyio.sleep(max(0.0, self.record.bytes_sent / rate - (time.monotonic() - started)))
        if self.record.bytes_sent < length:
            return True
        # Used before the response ends, so a client that has every byte can never reuse the link.
        if self.range.stop == self.object_size:
            self.link.used = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.record.completed = True
        return False


async def video_object(request: Request, state: SandboxState) -> Response:
    match = VIDEO_PATH.match(request.url.path)
    record = VideoRecord(
        t=state.epoch(time.monotonic()),
        session_id=match.group("session").lower() if match else None,
        range=request.headers.get("range"),
    )
    state.stats.video_requests.append(record)
    response = await _video_answer(request, state, record)
    record.status = response.status_code
    return response


async def _video_answer(request: Request, state: SandboxState, record: VideoRecord) -> Response:
    checked = state.links.verify(
        request.method, request.url.path, request.scope["query_string"].decode("latin-1")
    )
    if isinstance(checked, S3Error):
        return checked.response()
    link = checked
    session = state.world.session(link.session_id)
    path = state.world.media_path(session) if session else None
    if session is None or path is None or not path.is_file():
        return S3Error(
            404, "NoSuchKey", "The specified key does not exist.", {"Key": request.url.path}
        ).response()
    fault = state.faults.take(VIDEO_TARGET, link.session_id)
    if fault is not None and fault.status is not None:
        return s3_status_error(fault.status).response()
    stat = path.stat()
    etag = await state.etag(path, stat.st_size, stat.st_mtime_ns)
    if_match = request.headers.get("if-match")
    if if_match is not None and not _etag_matches(if_match, etag):
        return S3Error(
            412,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            {"Condition": "If-Match"},
        ).response()
    try:
        body_range = parse_range(record.range, stat.st_size)
    except RangeNotSatisfiable:
        error = S3Error(
            416,
            "InvalidRange",
            "The requested range is not satisfiable",
            {"RangeRequested": record.range or "", "ActualObjectSize": str(stat.st_size)},
        ).response()
        error.headers["Content-Range"] = f"bytes */{stat.st_size}"
        return error
    served = body_range or ByteRange(0, stat.st_size)
    headers = {
        "Content-Length": str(served.stop - served.start),
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Last-Modified": format_datetime(session.finish_time or session.start_time, usegmt=True),
        "x-amz-request-id": secrets.token_hex(8).upper(),
    }
    if body_range is not None:
        headers["Content-Range"] = f"bytes {body_range.start}-{body_range.stop - 1}/{stat.st_size}"
    return ObjectResponse(
        path,
        served,
        stat.st_size,
        status_code=206 if body_range else 200,
        headers=headers,
        link=link,
        record=record,
        fault=fault,
        bytes_per_second=state.config.video_bytes_per_second,
    )


# -- admin --------------------------------------------------------------------------------------


async def admin_stats(request: Request, state: SandboxState) -> Response:
    return JSONResponse(state.stats.as_json())


async def admin_reset(request: Request, state: SandboxState) -> Response:
    state.reset()
    return JSONResponse({"reset": True})


async def admin_faults(request: Request, state: SandboxState) -> Response:
    try:
        specs = FAULT_LIST.validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"detail": json.loads(exc.json(include_url=False))}, status_code=422)
    state.faults.add(specs)
    return JSONResponse({"pending": state.faults.pending()})


async def admin_world(request: Request, state: SandboxState) -> Response:
    return JSONResponse(state.world.summary())


# -- the application ----------------------------------------------------------------------------


def _bind(handler: Handler, state: SandboxState) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(request, state)

    return endpoint


ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def create_app(config: SandboxConfig) -> Starlette:
    """The sandbox application: token endpoint, Results API, video objects and ``/_sandbox/`` admin."""
    state = SandboxState(config, build_world(config.anchor, config.media_dir))

    async def unknown_route(request: Request, exc: Exception) -> Response:
        """NestJS answers unknown routes (and wrong methods) with a 404 naming them."""
        record = ApiRecord(
            t=state.epoch(time.monotonic()),
            client_id=None,
            method=request.method,
            path=request.url.path,
            operation=None,
            session_id=None,
            status=404,
        )
        state.stats.api_requests.append(record)
        return api_error(False, 404, f"Cannot {request.method} {request.url.path}")

    routes = [
        Route(TOKEN_PATH, _bind(token_endpoint, state), methods=["POST"]),
        *(
            Route(path, operation_endpoint(operation, state), methods=["GET"])
            for operation in OPERATIONS
            for path in operation.paths
        ),
        Route(f"/{VIDEO_BUCKET}/{{key:path}}", _bind(video_object, state), methods=ALL_METHODS),
        Route("/_sandbox/stats", _bind(admin_stats, state), methods=["GET"]),
        Route("/_sandbox/reset", _bind(admin_reset, state), methods=["POST"]),
        Route("/_sandbox/faults", _bind(admin_faults, state), methods=["POST"]),
        Route("/_sandbox/world", _bind(admin_world, state), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: unknown_route, 405: unknown_route})
