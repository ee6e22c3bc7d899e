"""A polite client of UserTesting's Results API (v2/v3, and v1 workspaces).

Polite means: every request waits for the shared :class:`~tasks.api.ratelimit.RateLimiter`, so all
runs on all machines together stay under the per-client quota; a 429 pauses every worker until the
server's reset; 5xx answers and broken connections are retried with jittered exponential backoff;
a 404 is an ordinary typed answer (:class:`~tasks.api.models.NotFound`), never retried; an expired
token is refreshed once. Every attempt is reported as an :class:`ApiCall` to the module logger and
to any observers (the run's API action log), with the path *template*, never a token or a link.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, RootModel, SecretStr, ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from tasks.api.http import RETRYABLE_TRANSPORT_ERRORS, new_client, transport_reason
from tasks.api.models import (
    NotFound,
    SessionDetails,
    SessionPage,
    SessionSummary,
    VideoDownload,
    Workspace,
    WorkspaceStudy,
)
from tasks.api.ratelimit import FileLedgerStore, LedgerStore, RateLimiter, S3LedgerStore
from tasks.redact import redact, register_secret
from tasks.settings import ConfigError, Settings
from tasks.storage.layout import BucketLayout, client_key
from tasks.storage.s3 import s3_client

log = logging.getLogger("ut_pipeline.api")

LIST_OPERATION = "SessionResultsController_getSessionSummaryResults"
VIDEO_OPERATION = "SessionResultsController_getVideoDownloadUrl"
PAGE_LIMIT = 500
MAX_OFFSET = 10_000
WORKSPACE_PAGE_SIZE = 50


class ApiError(Exception):
    """The API refused a request for a reason retrying cannot fix; carries its status and message.

    ``status`` is None when no HTTP answer came (a timeout, a refused connection).
    """

    def __init__(self, operation: str, status: int | None, message: str) -> None:
        super().__init__(f"{operation}: HTTP {status}: {message}" if status else f"{operation}: {message}")
        self.operation, self.status, self.message = operation, status, message


class MalformedAnswer(ApiError):
    """The API answered, but not with what its spec promises: invalid JSON, a missing or mistyped field,
    an id that is not a UUID. Not retried: the caller records it against the session or test."""


class BadRequest(ApiError):
    """HTTP 400: the request itself is wrong (a bad id, limit or offset)."""


class Unauthorized(ApiError):
    """HTTP 401 that survived a token refresh, or credentials the token endpoint rejected."""


class ApiUnavailable(ApiError):
    """5xx answers, 429s, timeouts or broken connections outlasted every retry."""


@dataclass(frozen=True)
class ListProblem:
    """Something in a test's session list the pipeline could not use: a malformed item (``index`` in
    the list, and its ``session_id`` if it had a readable one) or a page that contradicts itself."""

    test_id: str
    index: int | None
    session_id: str | None
    reason: str

    def __str__(self) -> str:
        where = f"item {self.index}" if self.index is not None else "page"
        who = f" (session {self.session_id})" if self.session_id else ""
        return f"test {self.test_id}: {where}{who}: {self.reason}"


@dataclass(frozen=True)
class ApiCall:
    """One HTTP attempt against the Results API, as the action log records it."""

    timestamp: str
    method: str
    endpoint: str
    session_id: str | None
    status: int | None
    latency_ms: float
    attempt: int
    ratelimit_remaining: int | None
    waited_ms: float
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TokenSource:
    """OAuth client-credentials tokens, fetched once, shared and refreshed before they expire.

    One instance serves every thread of a process; a lock makes concurrent callers share a single
    refresh. After a 401 the caller hands back the token it used; only if it is still the current
    one is it dropped, so twenty threads failing with the same stale token cause one refresh.
    """

    def __init__(
        self,
        http: httpx.Client,
        token_url: str,
        client_id: str | None,
        client_secret: SecretStr | None,
        scope: str,
        static_token: SecretStr | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http, self._url, self._scope, self._clock = http, token_url, scope, clock
        self._client_id, self._secret = client_id, client_secret
        self._lock = threading.Lock()
        self._token: str | None = static_token.get_secret_value() if static_token else None
        self._expires_at = math.inf if static_token else 0.0
        self.fetches = 0
        if client_secret:
            register_secret(client_secret.get_secret_value())
        register_secret(self._token)

    @property
    def can_refresh(self) -> bool:
        return self._secret is not None

    def get(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        with self._lock:
            if self._token == token and self.can_refresh:
                self._token = None

    def _fetch(self) -> None:
        assert self._client_id and self._secret
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._secret.get_secret_value(),
            "scope": self._scope,
        }
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(5),
                wait=wait_random_exponential(multiplier=0.5, max=20),
                retry=retry_if_exception_type(_Retry),
                reraise=True,
            ):
                with attempt:
                    started = self._clock()
                    try:
                        response = self._http.post(
                            self._url, data=form, headers={"Accept": "application/json"}
                        )
                    except RETRYABLE_TRANSPORT_ERRORS as exc:
                        raise _Retry(transport_reason(exc)) from exc
                    if response.status_code >= 500:
                        raise _Retry(f"HTTP {response.status_code}", status=response.status_code)
                    if response.status_code != 200:
                        raise Unauthorized("token", response.status_code, _error_message(response))
        except _Retry as exc:
            raise ApiUnavailable(
                "token", exc.status, f"the token endpoint failed 5 times, the last: {exc}"
            ) from exc
        answer = _parse(_TokenAnswer, "token", response)
        token = answer.access_token.get_secret_value()
        register_secret(token)
        lifetime = answer.expires_in
        # Refresh ahead of expiry: a tenth of the lifetime, at most a minute (3600 s -> 60 s early).
        self._token = token
        self._expires_at = started + lifetime - min(60.0, lifetime / 10)
        self.fetches += 1
        log.info("access token fetched, valid %.0f s", lifetime)


class _TokenAnswer(BaseModel):
    access_token: SecretStr
    expires_in: float = 3600.0


class _Retry(Exception):
    """Internal: this attempt failed in a way another attempt may fix.

    ``immediate`` retries skip the backoff: after a 429 the limiter already holds every worker
    back until the server's reset, and after a token refresh there is nothing to wait for.
    """

    def __init__(self, reason: str, *, immediate: bool = False, status: int | None = None) -> None:
        super().__init__(reason)
        self.immediate, self.status = immediate, status


class ResultsApiClient:
    """Typed access to the Results API endpoints the pipeline uses."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        limiter: RateLimiter,
        *,
        http: httpx.Client | None = None,
        max_attempts: int = 6,
        timeout_seconds: float = 60.0,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens, self.limiter = tokens, limiter
        self.http = http or new_client(base_url=self.base_url, timeout_seconds=timeout_seconds)
        self.max_attempts, self.max_backoff = max_attempts, max_backoff_seconds
        self.observers: list[Callable[[ApiCall], None]] = []

    # -- endpoints ---------------------------------------------------------------------------

    def list_sessions_page(
        self, test_id: UUID | str, limit: int = PAGE_LIMIT, offset: int = 0
    ) -> SessionPage | NotFound:
        """``GET /api/v2/sessionResults``: one page of a test's sessions, newest first."""
        test = str(UUID(str(test_id)))
        response = self._request(
            LIST_OPERATION,
            "/api/v2/sessionResults",
            params={"testId": test, "limit": limit, "offset": offset},
            resource_id=test,
        )
        return response if isinstance(response, NotFound) else _parse(SessionPage, LIST_OPERATION, response)

    def completed_sessions(
        self,
        test_id: UUID | str,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        overlap: timedelta = timedelta(days=1),
        on_problem: Callable[[ListProblem], None] | None = None,
    ) -> Iterator[SessionSummary]:
        """Every ``COMPLETE`` session of a test that finished in ``[since, until)``, newest first.

        Pages of 500 are fetched while ``meta.pagination.totalCount`` says more exist. Because the
        list runs newest first, paging stops once a page ends with a session that *started* more
        than ``overlap`` before ``since``: whether the API orders by start or finish time, no
        session lasting less than ``overlap`` can still follow. Sessions shifted onto the next
        page by new arrivals during paging are yielded once.

        An item that does not parse (a missing or mistyped field, an id that is not a UUID) is
        skipped and reported to ``on_problem`` (logged as a warning without one); so is a page that
        contradicts the count it announces. The other items and pages carry on.

        Raises :class:`ApiError` (status 404) for an unknown test, :class:`MalformedAnswer` for a
        page that is not a session list at all.
        """
        test = str(test_id)

        def problem(index: int | None, session_id: str | None, reason: str) -> None:
            found = ListProblem(test, index, session_id, reason)
            if on_problem is None:
                log.warning("%s", found)
            else:
                on_problem(found)

        seen: set[UUID] = set()
        offset = 0
        while True:
            page = self.list_sessions_page(test_id, PAGE_LIMIT, offset)
            if isinstance(page, NotFound):
                raise ApiError(page.operation, 404, page.message)
            if not page.sessions and offset < page.meta.pagination.total_count:
                problem(
                    None,
                    None,
                    f"empty page at offset {offset} although the API counts "
                    f"{page.meta.pagination.total_count} sessions",
                )
                return
            oldest_start: datetime | None = None
            for index, item in enumerate(page.sessions, start=offset):
                session = _session_item(item)
                if isinstance(session, str):
                    problem(index, _item_id(item), session)
                    continue
                oldest_start = session.start_time
                if session.is_complete and session.finish_time is None:
                    problem(index, str(session.session_id), "status COMPLETE but no finishTime")
                    continue
                if session.session_id in seen or not session.is_complete:
                    continue
                seen.add(session.session_id)
                if (since is None or session.finish_time >= since) and (
                    until is None or session.finish_time < until
                ):
                    yield session
            offset += len(page.sessions)
            if not page.sessions or offset >= page.meta.pagination.total_count:
                return
            if since is not None and oldest_start is not None and oldest_start < since - overlap:
                return
            if offset > MAX_OFFSET:
                log.warning(
                    "test %s: the API pages no further than offset %d; %d older sessions are not listed",
                    test_id,
                    MAX_OFFSET,
                    page.meta.pagination.total_count - offset,
                )
                return

    def session_details(self, session_id: UUID | str) -> SessionDetails | NotFound:
        """``GET /api/v3/sessionResults/{sessionId}``."""
        response = self._session_request(
            "SessionResultsV3Controller_getSessionResults", "/api/v3/sessionResults/{sessionId}", session_id
        )
        return (
            response
            if isinstance(response, NotFound)
            else _parse(SessionDetails, "SessionResultsV3Controller_getSessionResults", response)
        )

    def video_download_url(self, session_id: UUID | str) -> VideoDownload | NotFound:
        """``GET .../videoDownloadUrl``: a pre-signed link, valid one hour, single use."""
        response = self._session_request(
            VIDEO_OPERATION,
            "/api/v2/sessionResults/{sessionId}/videoDownloadUrl",
            session_id,
        )
        if isinstance(response, NotFound):
            return response
        body = _json(VIDEO_OPERATION, response)
        if isinstance(body, dict):
            register_secret(str(body.get("videoUrl", "")).partition("?")[2])
        return _parse(VideoDownload, VIDEO_OPERATION, response, body)

    def transcript_vtt(self, session_id: UUID | str) -> str | NotFound:
        """``GET .../transcript``: UserTesting's WebVTT transcript (think-out-loud and live sessions)."""
        response = self._session_request(
            "SessionResultsController_getTranscriptVtt",
            "/api/v2/sessionResults/{sessionId}/transcript",
            session_id,
            accept="text/vtt",
        )
        return response if isinstance(response, NotFound) else response.text

    def workspaces(self) -> list[Workspace]:
        """``GET /v1/workspaces`` (served under ``/usertesting/api``, as the v1 spec's server URL says)."""
        response = self._request("listWorkspaces", "/usertesting/api/v1/workspaces", resource_id="")
        return [] if isinstance(response, NotFound) else _parse(_Workspaces, "listWorkspaces", response).root

    def workspace_tests(self, workspace_id: UUID | str) -> Iterator[WorkspaceStudy]:
        """``GET /v1/workspaces/{workspaceUuid}``: every test in a workspace, 50 a page by cursor."""
        wid = str(UUID(str(workspace_id)))
        after: str | None = None
        while True:
            response = self._request(
                "getWorkspaceStudies",
                "/usertesting/api/v1/workspaces/{workspaceUuid}",
                path_params={"workspaceUuid": wid},
                params={"after": after} if after else None,
                resource_id=wid,
            )
            if isinstance(response, NotFound):
                raise ApiError(response.operation, 404, response.message)
            studies = _parse(_WorkspaceStudies, "getWorkspaceStudies", response).root
            yield from studies
            if len(studies) < WORKSPACE_PAGE_SIZE or not studies[-1].cursor:
                return
            after = studies[-1].cursor

    def tests_to_cover(self, test_ids: Sequence[UUID], workspace_ids: Sequence[UUID]) -> list[UUID]:
        """The tests named explicitly, then the Results API (STUDYV2) tests of the named workspaces."""
        found = list(dict.fromkeys(test_ids))
        for workspace in workspace_ids:
            for study in self.workspace_tests(workspace):
                if study.is_results_api_test and UUID(study.uuid) not in found:
                    found.append(UUID(study.uuid))
        return found

    # -- transport ---------------------------------------------------------------------------

    def _session_request(
        self, operation: str, template: str, session_id: UUID | str, accept: str = "application/json"
    ) -> httpx.Response | NotFound:
        """A per-session endpoint; the id is validated as a UUID before it becomes part of a path."""
        sid = str(UUID(str(session_id)))
        return self._request(
            operation, template, path_params={"sessionId": sid}, resource_id=sid, accept=accept
        )

    def _request(
        self,
        operation: str,
        template: str,
        *,
        resource_id: str,
        path_params: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        accept: str = "application/json",
    ) -> httpx.Response | NotFound:
        """One logical call: rate-limited attempts until an answer that retrying cannot change."""
        path = template.format(**(path_params or {}))
        session_id = (path_params or {}).get("sessionId")
        refreshed = False

        def attempt_once(attempt: int) -> httpx.Response | NotFound:
            nonlocal refreshed
            with self.limiter.slot() as permit:
                token = self.tokens.get()
                started = time.monotonic()
                status, remaining, error = None, None, None
                try:
                    response = self.http.get(
                        path, params=params, headers={"Authorization": f"Bearer {token}", "Accept": accept}
                    )
                    status = response.status_code
                    remaining = _int_header(response, "x-ratelimit-remaining")
                except RETRYABLE_TRANSPORT_ERRORS as exc:
                    error = transport_reason(exc)
                    raise _Retry(error) from exc
                finally:
                    self._report(
                        ApiCall(
                            timestamp=datetime.now(UTC).isoformat(timespec="milliseconds"),
                            method="GET",
                            endpoint=template,
                            session_id=session_id,
                            status=status,
                            latency_ms=round((time.monotonic() - started) * 1000, 1),
                            attempt=attempt,
                            ratelimit_remaining=remaining,
                            waited_ms=round(permit.waited * 1000, 1),
                            error=error,
                        )
                    )
            if status == 429:
                pause = _retry_after(response)
                self.limiter.block(pause)
                raise _Retry(f"429 Too Many Requests, paused {pause:.1f} s", immediate=True, status=429)
            if status == 401 and not refreshed and self.tokens.can_refresh:
                refreshed = True
                self.tokens.invalidate(token)
                raise _Retry("401 Unauthorized, token refreshed", immediate=True)
            if status is not None and status >= 500:
                raise _Retry(f"HTTP {status}", status=status)
            return self._interpret(operation, resource_id, response)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._backoff,
            retry=retry_if_exception_type(_Retry),
            before_sleep=lambda rs: log.warning(
                "%s %s attempt %d failed (%s), retrying",
                "GET",
                template,
                rs.attempt_number,
                rs.outcome.exception(),
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return attempt_once(attempt.retry_state.attempt_number)
        except _Retry as exc:
            raise ApiUnavailable(
                operation, exc.status, f"gave up after {self.max_attempts} attempts, the last: {exc}"
            ) from exc
        raise AssertionError("unreachable")

    def _backoff(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retry) and exc.immediate:
            return 0.0
        return wait_random_exponential(multiplier=0.5, max=self.max_backoff)(state)

    def _interpret(
        self, operation: str, resource_id: str, response: httpx.Response
    ) -> httpx.Response | NotFound:
        status = response.status_code
        if status < 300:
            return response
        message = _error_message(response)
        if status == 404:
            return NotFound(operation, resource_id, message)
        if status == 400:
            raise BadRequest(operation, status, message)
        if status == 401:
            raise Unauthorized(operation, status, message)
        raise ApiError(operation, status, message)

    def _report(self, call: ApiCall) -> None:
        log.info(
            "%s %s session=%s status=%s latency_ms=%.0f ratelimit_remaining=%s attempt=%d waited_ms=%.0f%s",
            call.method,
            call.endpoint,
            call.session_id or "-",
            call.status if call.status is not None else "-",
            call.latency_ms,
            call.ratelimit_remaining if call.ratelimit_remaining is not None else "-",
            call.attempt,
            call.waited_ms,
            f" error={call.error}" if call.error else "",
            extra={"api_call": call.as_dict()},
        )
        for observer in self.observers:
            observer(call)

    def close(self) -> None:
        self.http.close()


M = TypeVar("M", bound=BaseModel)


class _Workspaces(RootModel[list[Workspace]]):
    pass


class _WorkspaceStudies(RootModel[list[WorkspaceStudy]]):
    pass


def _json(operation: str, response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise MalformedAnswer(operation, response.status_code, f"not JSON: {_snippet(response)}") from None


def _parse(model: type[M], operation: str, response: httpx.Response, body: Any = None) -> M:
    """The answer as ``model``, or a :class:`MalformedAnswer` that says what is wrong with it."""
    data = _json(operation, response) if body is None else body
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise MalformedAnswer(operation, response.status_code, validation_reason(exc)) from None


def validation_reason(exc: ValidationError, most: int = 2) -> str:
    """pydantic's complaint in one line: ``field.path: message`` for the first few errors."""
    parts = []
    for error in exc.errors()[:most]:
        where = ".".join(str(p) for p in error["loc"]) or "answer"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - most
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _session_item(item: Any) -> SessionSummary | str:
    """One list item as a session, or why it is not one."""
    try:
        return SessionSummary.model_validate(item)
    except ValidationError as exc:
        return validation_reason(exc)


def _item_id(item: Any) -> str | None:
    """A malformed item's session id, if it has a well-formed one (for the operator's report)."""
    raw = item.get("sessionId") if isinstance(item, dict) else None
    try:
        return str(UUID(str(raw))) if raw is not None else None
    except ValueError:
        return None


def _snippet(response: httpx.Response) -> str:
    text = " ".join(response.text[:120].split())
    return repr(redact(text)) if text else "an empty body"


def _int_header(response: httpx.Response, name: str) -> int | None:
    try:
        return int(float(response.headers[name]))
    except (KeyError, ValueError):
        return None


def _retry_after(response: httpx.Response) -> float:
    """Seconds to pause after a 429: the later of ``Retry-After`` and ``x-ratelimit-reset``, at least 1."""
    hints = [
        float(v)
        for v in (response.headers.get("retry-after"), response.headers.get("x-ratelimit-reset"))
        if v and v.replace(".", "", 1).isdigit()
    ]
    return max([1.0, *hints])


def _error_message(response: httpx.Response) -> str:
    """The API's own explanation: NestJS ``message``, v1 ``errorMessage``, OAuth ``error_description``."""
    try:
        body = response.json()
    except ValueError:
        return redact(response.text[:300]) or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "errorMessage", "error_description", "error"):
            value = body.get(key)
            if value:
                return redact(value if isinstance(value, str) else "; ".join(map(str, value)))
    return response.reason_phrase


def build_limiter(settings: Settings, s3: Any | None = None) -> RateLimiter:
    """The limiter every process using these credentials shares: a ledger in the work bucket or a file.

    The ledger is named after the client (the API counts per client), so runs with different
    credentials do not hold each other back.
    """
    identity = settings.client_id or (
        "token:" + hashlib.sha256(settings.access_token.get_secret_value().encode()).hexdigest()
        if settings.access_token
        else "anonymous"
    )
    key = client_key(settings.api_base_url, identity)
    store: LedgerStore
    if settings.ledger_backend == "s3":
        layout = BucketLayout(settings.work_prefix)
        store = S3LedgerStore(s3 or s3_client(), settings.require_bucket(), layout.rate_limit_ledger(key))
    else:
        store = FileLedgerStore(settings.rate_limit_dir / f"ratelimit-{key}.json")
    return RateLimiter(
        store,
        limit=settings.rate_limit_requests,
        window=settings.rate_limit_window_seconds,
        margin=settings.rate_limit_margin_seconds,
        lease=2 * settings.http_timeout_seconds + 60,
    )


def open_client(settings: Settings, *, s3: Any | None = None) -> ResultsApiClient:
    """A ready client from the settings; raises :class:`ConfigError` naming what is missing."""
    if not settings.access_token and not (settings.client_id and settings.client_secret):
        raise ConfigError("UT_CLIENT_ID and UT_CLIENT_SECRET (or UT_ACCESS_TOKEN) must be set")
    http = new_client(base_url=settings.api_base_url, timeout_seconds=settings.http_timeout_seconds)
    tokens = TokenSource(
        http,
        settings.token_url,
        settings.client_id,
        settings.client_secret,
        settings.token_scope,
        static_token=settings.access_token,
    )
    return ResultsApiClient(
        settings.api_base_url,
        tokens,
        build_limiter(settings, s3),
        http=http,
        max_attempts=settings.max_attempts,
    )
