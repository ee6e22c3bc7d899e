"""The sandbox Results API over real HTTP: answers checked against the published OpenAPI schemas.

Two servers run for the module: ``sandbox`` with generous limits for the functional tests (reset
before each), and ``tight`` with a one-second clock (rate window, token and link lifetimes) for
the tests about time. On ``tight`` each test uses its own client, because the rate limit is per
client. The sandbox's ``/_sandbox/stats`` is the truth every count is checked against.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import httpx
import pytest
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from sandbox.process import ServerProcess, spawn
from sandbox.world import (
    CHECKOUT_CORRUPT_SESSION_ID,
    CHECKOUT_IN_PROGRESS_SESSION_ID,
    CHECKOUT_NO_VIDEO_SESSION_ID,
    CHECKOUT_SPEECH_SESSION_IDS,
    CHECKOUT_TEST_ID,
    CLASSIC_TEST_ID,
    DEFAULT_MEDIA_DIR,
    EDGE_AUDIO_ONLY_SESSION_ID,
    EDGE_CORRUPT_SESSION_ID,
    EDGE_EMPTY_SESSION_ID,
    EDGE_NO_AUDIO_SESSION_ID,
    MEDIA_EDGE_TEST_ID,
    ONBOARDING_SESSION_COUNT,
    ONBOARDING_TEST_ID,
    PRICING_SESSION_IDS,
    PRICING_TEST_ID,
    SPEECH_CLIPS,
    WORKSPACE_ID,
    build_world,
    onboarding_session_id,
)

SPECS = Path(__file__).resolve().parent.parent / "sandbox" / "spec"  # the published OpenAPI files
TOKEN_PATH = "/oauth2/aus1p3vtd8vtm4Bxv0h8/v1/token"
MAIN_CLIENT = ("main", "main-secret")
OTHER_CLIENT = ("other", "other-secret")
TIGHT_CLIENTS = {name: f"{name}-secret" for name in ("rate", "expiry", "link", "slow", "anchor")}
TIGHT_ANCHOR = "2025-01-15T12:00:00Z"
NEST_401 = {"statusCode": 401, "message": "Unauthorized"}
NEST_429 = {"statusCode": 429, "message": "ThrottlerException: Too Many Requests"}
LIST = "SessionResultsController_getSessionSummaryResults"
DETAILS = "SessionResultsV3Controller_getSessionResults"
VIDEO_URL = "SessionResultsController_getVideoDownloadUrl"


# -- the spec's schemas -------------------------------------------------------------------------


def _inline_refs(node: Any, components: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_refs(components[node["$ref"].rsplit("/", 1)[1]], components)
        return {key: _inline_refs(value, components) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, components) for item in node]
    return node


def _load_schemas(name: str) -> dict[str, Any]:
    spec_path = SPECS / name
    components = yaml.safe_load(spec_path.read_text())["components"]["schemas"]
    return {key: _inline_refs(value, components) for key, value in components.items()}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    return {**_load_schemas("legacy-v1-openapi.yml"), **_load_schemas("results-v2-openapi.yml")}


def assert_valid(instance: Any, schema: dict[str, Any]) -> None:
    OAS30Validator(schema, format_checker=oas30_format_checker).validate(instance)


def array_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": schema}


# -- servers and clients ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_server() -> Iterator[ServerProcess]:
    clients = [f"{cid}:{secret}" for cid, secret in (MAIN_CLIENT, OTHER_CLIENT)]
    args = ["--rate-limit", "1000", "--rate-window", "60", "--link-ttl", "60"]
    with spawn("sandbox.server", [*args, *(a for c in clients for a in ("--client", c))]) as server:
        yield server


@pytest.fixture(scope="module")
def tight_server() -> Iterator[ServerProcess]:
    args = ["--rate-limit", "3", "--rate-window", "1", "--token-ttl", "1", "--link-ttl", "1"]
    args += ["--anchor", TIGHT_ANCHOR]
    clients = [a for cid, secret in TIGHT_CLIENTS.items() for a in ("--client", f"{cid}:{secret}")]
    with spawn("sandbox.server", [*args, *clients]) as server:
        yield server


@dataclass
class Api:
    """A test's view of one server, as one OAuth client."""

    url: str
    client_id: str
    secret: str
    http: httpx.Client
    token: str = ""

    def fetch_token(self) -> str:
        response = self.http.post(
            f"{self.url}{TOKEN_PATH}",
            data={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self.secret,
                "scope": "studies:read",
            },
        )
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]
        return self.token

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token or self.fetch_token()}", **kwargs.pop("headers", {})}
        return self.http.get(f"{self.url}{path}", headers=headers, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.url}/_sandbox/{path}", **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def video_link(self, session_id: UUID) -> str:
        response = self.get(f"/api/v2/sessionResults/{session_id}/videoDownloadUrl")
        assert response.status_code == 200, response.text
        return str(response.json()["videoUrl"])


@pytest.fixture
def api(sandbox_server: ServerProcess) -> Iterator[Api]:
    """The functional server, reset: no stats, tokens, links or faults left by earlier tests."""
    with httpx.Client(timeout=30) as http:
        client = Api(sandbox_server.url, *MAIN_CLIENT, http)
        client.admin("POST", "reset")
        yield client


@pytest.fixture
def tight(tight_server: ServerProcess) -> Iterator[Any]:
    """A factory for clients of the one-second server, each a client id of its own."""
    with httpx.Client(timeout=30) as http:
        yield lambda client_id: Api(tight_server.url, client_id, TIGHT_CLIENTS[client_id], http)


def media_bytes(name: str) -> bytes:
    return (DEFAULT_MEDIA_DIR / name).read_bytes()


def s3_error_code(response: httpx.Response) -> tuple[str, str]:
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    code = re.search(r"<Code>(.*?)</Code>", response.text)
    message = re.search(r"<Message>(.*?)</Message>", response.text)
    assert code and message, response.text
    return code.group(1), message.group(1)


# -- the world ----------------------------------------------------------------------------------


def test_world_builds_quickly_and_its_media_exist() -> None:
    started = time.perf_counter()
    world = build_world()
    assert time.perf_counter() - started < 0.5  # ~10 ms; generous for a loaded CI machine
    for test in world.tests:
        for session in test.sessions:
            if session.media:
                assert (DEFAULT_MEDIA_DIR / session.media).is_file(), session.media
                assert session.media in world.clips, session.media
    assert build_world(world.anchor).summary() == world.summary()  # deterministic


def test_world_summary_over_http(api: Api) -> None:
    world = api.admin("GET", "world")
    tests = {t["uuid"]: t for t in world["tests"]}
    assert tests[str(CHECKOUT_TEST_ID)]["title"] == "Checkout think-out-loud"
    assert tests[str(ONBOARDING_TEST_ID)]["session_count"] == ONBOARDING_SESSION_COUNT
    assert tests[str(CLASSIC_TEST_ID)]["in_results_api"] is False
    checkout = {s["session_id"]: s for s in tests[str(CHECKOUT_TEST_ID)]["sessions"]}
    first = checkout[str(CHECKOUT_SPEECH_SESSION_IDS[0])]
    assert first["media"] == SPEECH_CLIPS[0] and first["has_transcript"] and first["text"]
    assert checkout[str(CHECKOUT_NO_VIDEO_SESSION_ID)]["has_video"] is False
    assert checkout[str(CHECKOUT_IN_PROGRESS_SESSION_ID)]["finishTime"] is None
    assert world["media"]["empty.mp4"]["size"] == 0


def test_anchor_moves_the_world(tight: Any) -> None:
    api = tight("anchor")
    assert api.admin("GET", "world")["anchor"] == "2025-01-15T12:00:00.000Z"
    sessions = api.get("/api/v2/sessionResults", params={"testId": str(CHECKOUT_TEST_ID)}).json()["sessions"]
    anchor = datetime.fromisoformat(TIGHT_ANCHOR)
    for session in sessions:
        started = datetime.fromisoformat(session["startTime"])
        assert timedelta(0) < anchor - started < timedelta(days=1)


# -- OAuth --------------------------------------------------------------------------------------


def test_token_endpoint_issues_a_signed_jwt(api: Api) -> None:
    response = api.http.post(
        f"{api.url}{TOKEN_PATH}",
        data={
            "grant_type": "client_credentials",
            "client_id": "main",
            "client_secret": "main-secret",
            "scope": "studies:read",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "studies:read"
    assert isinstance(body["expires_in"], int) and body["expires_in"] == 3600
    header, claims, signature = body["access_token"].split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "=="))["alg"] == "HS256"
    assert json.loads(base64.urlsafe_b64decode(claims + "=="))["cid"] == "main"
    assert len(base64.urlsafe_b64decode(signature + "=")) == 32
    basic = base64.b64encode(b"other:other-secret").decode()
    by_basic = api.http.post(
        f"{api.url}{TOKEN_PATH}",
        data={"grant_type": "client_credentials", "scope": "studies:read"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert by_basic.status_code == 200
    assert api.admin("GET", "stats")["tokens_issued"] == 2


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "nobody"}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"scope": "studies:write"}, 400, "invalid_scope"),
        ({"scope": ""}, 400, "invalid_scope"),
    ],
)
def test_token_endpoint_refusals(api: Api, form: dict[str, str], status: int, error: str) -> None:
    data = {"grant_type": "client_credentials", "client_id": "main", "client_secret": "main-secret"}
    data |= {"scope": "studies:read", **form}
    response = api.http.post(f"{api.url}{TOKEN_PATH}", data=data)
    assert response.status_code == status
    assert response.json()["error"] == error and response.json()["error_description"]
    assert api.admin("GET", "stats")["tokens_issued"] == 0


def test_requests_without_a_valid_token_get_401(api: Api) -> None:
    token = api.fetch_token()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    path = f"/api/v3/sessionResults/{CHECKOUT_SPEECH_SESSION_IDS[0]}"
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": f"Bearer {forged}"}):
        response = api.http.get(f"{api.url}{path}", headers=headers)
        assert response.status_code == 401
        assert response.json() == NEST_401
        assert "x-ratelimit-remaining" not in response.headers
    v1 = api.http.get(f"{api.url}/usertesting/api/v1/workspaces")
    assert v1.status_code == 401
    assert v1.json() == {"errorCode": "UNAUTHORIZED", "errorMessage": "Unauthorized"}
    calls = api.admin("GET", "stats")["api_requests"]
    assert [(c["status"], c["client_id"], c["counted"]) for c in calls] == [(401, None, False)] * 4


def test_an_expired_token_gets_401(tight: Any) -> None:
    api = tight("expiry")
    api.fetch_token()
    path = f"/api/v3/sessionResults/{CHECKOUT_SPEECH_SESSION_IDS[0]}"
    assert api.get(path).status_code == 200
    time.sleep(1.1)
    expired = api.get(path)
    assert expired.status_code == 401 and expired.json() == NEST_401
    api.fetch_token()
    assert api.get(path).status_code == 200


# -- session lists ------------------------------------------------------------------------------


def test_listing_pages_past_500(api: Api, schemas: dict[str, Any]) -> None:
    ids: list[str] = []
    for offset in (0, 500, 1000):
        response = api.get(
            "/api/v2/sessionResults",
            params={"testId": str(ONBOARDING_TEST_ID), "limit": 500, "offset": offset},
        )
        assert response.status_code == 200
        body = response.json()
        assert_valid(body, schemas["SessionSummaryResultsResponseDto"])
        assert body["meta"]["pagination"] == {
            "limit": 500,
            "offset": offset,
            "totalCount": ONBOARDING_SESSION_COUNT,
        }
        ids += [s["sessionId"] for s in body["sessions"]]
        finishes = [s["finishTime"] for s in body["sessions"]]
        assert finishes == sorted(finishes, reverse=True)
    assert ids == [str(onboarding_session_id(i)) for i in range(ONBOARDING_SESSION_COUNT)]
    past_the_end = api.get(
        "/api/v2/sessionResults", params={"testId": str(ONBOARDING_TEST_ID), "offset": 1300}
    )
    assert past_the_end.json()["sessions"] == []
    assert [c["operation"] for c in api.admin("GET", "stats")["api_requests"]] == [LIST] * 4


def test_listing_is_newest_first_and_defaults_to_25(api: Api, schemas: dict[str, Any]) -> None:
    body = api.get("/api/v2/sessionResults", params={"testId": str(CHECKOUT_TEST_ID)}).json()
    assert_valid(body, schemas["SessionSummaryResultsResponseDto"])
    assert body["meta"]["pagination"] == {"limit": 25, "offset": 0, "totalCount": 6}
    sessions = body["sessions"]
    assert sessions[0]["sessionId"] == str(CHECKOUT_IN_PROGRESS_SESSION_ID)
    assert sessions[0]["status"] == "IN_PROGRESS" and sessions[0]["finishTime"] is None
    order = [s["finishTime"] or s["startTime"] for s in sessions]
    assert order == sorted(order, reverse=True)
    anchor = datetime.fromisoformat(api.admin("GET", "world")["anchor"])
    for session_id in CHECKOUT_SPEECH_SESSION_IDS:
        (entry,) = [s for s in sessions if s["sessionId"] == str(session_id)]
        finished = datetime.fromisoformat(entry["finishTime"])
        assert 0 < (anchor - finished).total_seconds() < 24 * 3600
    onboarding = api.get(
        "/api/v2/sessionResults", params={"testId": str(ONBOARDING_TEST_ID), "limit": 1}
    ).json()
    newest = datetime.fromisoformat(onboarding["sessions"][0]["finishTime"])
    assert (datetime.now(UTC) - newest).total_seconds() < 24 * 3600


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit must not be less than 1"),
        ({"limit": "501"}, "limit must not be greater than 500"),
        ({"limit": "2.5"}, "limit must be an integer number"),
        ({"limit": "ten"}, "limit must be an integer number"),
        ({"offset": "-1"}, "offset must not be less than 0"),
        ({"offset": "10001"}, "offset must not be greater than 10000"),
        ({"offset": "x"}, "offset must be an integer number"),
        ({"testId": "not-a-uuid"}, "testId must be a UUID"),
        ({"testId": None}, "testId must be a UUID"),
    ],
)
def test_listing_rejects_bad_parameters(api: Api, params: dict[str, str | None], message: str) -> None:
    query = {k: v for k, v in ({"testId": str(CHECKOUT_TEST_ID)} | params).items() if v is not None}
    response = api.get("/api/v2/sessionResults", params=query)
    assert response.status_code == 400
    assert response.json() == {"statusCode": 400, "message": message, "error": "Bad Request"}


@pytest.mark.parametrize("test_id", [CLASSIC_TEST_ID, UUID(int=7)])
def test_listing_an_unknown_or_classic_test_is_404(api: Api, test_id: UUID) -> None:
    response = api.get("/api/v2/sessionResults", params={"testId": str(test_id)})
    assert response.status_code == 404
    assert response.json() == {"statusCode": 404, "message": "Test not found", "error": "Not Found"}


# -- session details, video links, transcripts --------------------------------------------------


@pytest.mark.parametrize(
    "session_id",
    [
        CHECKOUT_SPEECH_SESSION_IDS[0],
        CHECKOUT_IN_PROGRESS_SESSION_ID,
        onboarding_session_id(1229),
        PRICING_SESSION_IDS[0],
        EDGE_EMPTY_SESSION_ID,
    ],
)
def test_session_details_match_the_v3_schema(api: Api, schemas: dict[str, Any], session_id: UUID) -> None:
    response = api.get(f"/api/v3/sessionResults/{session_id}")
    assert response.status_code == 200
    body = response.json()
    assert_valid(body, schemas["SessionResultsV3ResponseDto"])
    assert body["sessionId"] == str(session_id)
    assert {d["code"] for d in body["sessionParticipant"]["demographicsInfo"]} >= {"GENDER", "AGE_GROUP"}
    assert body["tasks"]


def test_unknown_and_malformed_session_ids(api: Api) -> None:
    unknown = api.get(f"/api/v3/sessionResults/{UUID(int=1)}")
    assert unknown.status_code == 404 and unknown.json()["message"] == "Session not found"
    malformed = api.get("/api/v3/sessionResults/12345")
    assert malformed.status_code == 400
    assert malformed.json() == {
        "statusCode": 400,
        "message": "Validation failed (uuid is expected)",
        "error": "Bad Request",
    }


def test_video_links_have_the_s3_shape(api: Api, schemas: dict[str, Any]) -> None:
    session_id = CHECKOUT_SPEECH_SESSION_IDS[1]
    response = api.get(f"/api/v2/sessionResults/{session_id}/videoDownloadUrl")
    assert response.status_code == 200
    body = response.json()
    assert_valid(body, schemas["VideoDownloadResponseDto"])
    assert body["sessionId"] == str(session_id)
    url = urlsplit(body["videoUrl"])
    assert url.path == f"/usertesting-sandbox-videos/videos/{session_id}/session.mp4"
    query = parse_qs(url.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert re.fullmatch(r"AKIA[A-Z0-9]{16}/\d{8}/us-east-2/s3/aws4_request", query["X-Amz-Credential"][0])
    assert "%2F" in url.query  # the credential's slashes are encoded, as in the spec's example
    assert re.fullmatch(r"\d{8}T\d{6}Z", query["X-Amz-Date"][0])
    assert query["X-Amz-Expires"] == ["60"] and query["X-Amz-SignedHeaders"] == ["host"]
    assert re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"][0])
    expires = datetime.fromisoformat(body["expiresAt"])
    assert 55 < (expires - datetime.now(UTC)).total_seconds() <= 60
    assert api.admin("GET", "stats")["links_issued"] == {str(session_id): 1}


@pytest.mark.parametrize(
    "session_id",
    [CHECKOUT_NO_VIDEO_SESSION_ID, CHECKOUT_IN_PROGRESS_SESSION_ID, PRICING_SESSION_IDS[2], UUID(int=3)],
)
def test_no_video_no_link(api: Api, session_id: UUID) -> None:
    response = api.get(f"/api/v2/sessionResults/{session_id}/videoDownloadUrl")
    assert response.status_code == 404
    assert response.json() == {"statusCode": 404, "message": "Video not found", "error": "Not Found"}


def test_transcripts_are_webvtt_of_the_spoken_text(api: Api) -> None:
    world = build_world()
    for session_id, clip in [
        *zip(CHECKOUT_SPEECH_SESSION_IDS, SPEECH_CLIPS, strict=True),
        (EDGE_AUDIO_ONLY_SESSION_ID, "audio-only.mp4"),
    ]:
        response = api.get(f"/api/v2/sessionResults/{session_id}/transcript")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/vtt")
        lines = response.text.splitlines()
        assert lines[0] == "WEBVTT"
        cues = [line for line in lines if "-->" in line]
        assert cues and all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", c) for c in cues)
        spoken = " ".join(line for line in lines[1:] if line and "-->" not in line)
        assert spoken == world.clips[clip].text


@pytest.mark.parametrize(
    "session_id",
    [
        onboarding_session_id(0),  # interaction tests have no transcripts
        PRICING_SESSION_IDS[0],
        CHECKOUT_NO_VIDEO_SESSION_ID,
        CHECKOUT_CORRUPT_SESSION_ID,
        CHECKOUT_IN_PROGRESS_SESSION_ID,
        EDGE_NO_AUDIO_SESSION_ID,
        EDGE_EMPTY_SESSION_ID,
        EDGE_CORRUPT_SESSION_ID,
    ],
)
def test_no_speech_no_transcript(api: Api, session_id: UUID) -> None:
    response = api.get(f"/api/v2/sessionResults/{session_id}/transcript")
    assert response.status_code == 404
    assert response.json()["message"] == "Transcript not found"


# -- v1 workspaces ------------------------------------------------------------------------------


def test_v1_workspaces_and_their_tests(api: Api, schemas: dict[str, Any]) -> None:
    workspaces = api.get("/usertesting/api/v1/workspaces").json()
    assert_valid(workspaces, array_of(schemas["Workspace"]))
    assert [w["uuid"] for w in workspaces] == [str(WORKSPACE_ID)]
    studies = api.get(f"/usertesting/api/v1/workspaces/{WORKSPACE_ID}").json()
    assert_valid(studies, array_of(schemas["WorkspaceStudy"]))
    kinds = {s["uuid"]: (s["type"], s["productType"]) for s in studies}
    assert kinds == {
        str(CHECKOUT_TEST_ID): ("STUDYV2", "THINK_OUT_LOUD"),
        str(ONBOARDING_TEST_ID): ("STUDYV2", "NON_THINK_OUT_LOUD"),
        str(PRICING_TEST_ID): ("STUDYV2", "SURVEY"),
        str(MEDIA_EDGE_TEST_ID): ("STUDYV2", "LIVE_CONVERSATION"),
        str(CLASSIC_TEST_ID): ("WEB", "INSIGHT_CORE"),
    }
    assert studies[0]["cursor"] == "MQ"  # base64 of "1", as in the spec's example
    after_second = api.get(
        f"/usertesting/api/v1/workspaces/{WORKSPACE_ID}", params={"after": studies[1]["cursor"]}
    ).json()
    assert after_second == studies[2:]
    before_third = api.get(
        f"/usertesting/api/v1/workspaces/{WORKSPACE_ID}", params={"before": studies[2]["cursor"]}
    ).json()
    assert before_third == studies[:2]
    assert (
        api.get(f"/usertesting/api/v1/workspaces/{WORKSPACE_ID}").json() == studies
    )  # the spec's server path


@pytest.mark.parametrize(
    ("path", "params", "status", "body"),
    [
        (
            "/usertesting/api/v1/workspaces/nope",
            {},
            400,
            {"errorCode": "BAD_REQUEST", "errorMessage": "Not a valid UUID"},
        ),
        (
            f"/usertesting/api/v1/workspaces/{UUID(int=5)}",
            {},
            404,
            {"errorCode": "NOT_FOUND", "errorMessage": "Workspace not found"},
        ),
        (
            f"/usertesting/api/v1/workspaces/{WORKSPACE_ID}",
            {"after": "!!"},
            400,
            {"errorCode": "BAD_REQUEST", "errorMessage": "Invalid cursor"},
        ),
    ],
)
def test_v1_errors(
    api: Api, schemas: dict[str, Any], path: str, params: dict[str, str], status: int, body: dict[str, str]
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status
    assert response.json() == body
    assert_valid(response.json(), schemas["HttpErrorResponse"])


def test_unknown_routes_answer_like_nestjs(api: Api) -> None:
    response = api.get("/api/v2/nothing")
    assert response.status_code == 404
    assert response.json() == {
        "statusCode": 404,
        "message": "Cannot GET /api/v2/nothing",
        "error": "Not Found",
    }


# -- headers and the rate limit -----------------------------------------------------------------


def test_every_api_answer_carries_the_spec_headers(api: Api) -> None:
    paths = [
        f"/api/v2/sessionResults?testId={CHECKOUT_TEST_ID}",
        f"/api/v3/sessionResults/{UUID(int=9)}",  # a 404 too
        f"/api/v2/sessionResults/{CHECKOUT_SPEECH_SESSION_IDS[0]}/transcript",
        "/usertesting/api/v1/workspaces",
    ]
    for n, path in enumerate(paths, start=1):
        headers = api.get(path).headers
        assert headers["cache-control"] == "private, no-store"
        assert headers["pragma"] == "no-cache"
        assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
        assert headers["x-ratelimit-limit"] == "1000"
        assert headers["x-ratelimit-remaining"] == str(1000 - n)
        assert 1 <= int(headers["x-ratelimit-reset"]) <= 60


def test_the_rate_limit_is_a_sliding_window_per_client(tight: Any) -> None:
    api, other = tight("rate"), tight("link")
    api.fetch_token()
    path = f"/api/v3/sessionResults/{CHECKOUT_SPEECH_SESSION_IDS[0]}"
    assert api.http.get(f"{api.url}{path}").status_code == 401  # 401s are not counted
    remaining = [api.get(path).headers["x-ratelimit-remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    refused = api.get(path)
    assert refused.status_code == 429
    assert refused.json() == NEST_429
    assert refused.headers["x-ratelimit-limit"] == "3" and refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["retry-after"] == refused.headers["x-ratelimit-reset"] == "1"
    assert other.get(path).status_code == 200  # another client has a window of its own
    time.sleep(float(refused.headers["retry-after"]))
    api.fetch_token()  # tokens live one second on this server too; fetching one is not rate limited
    assert api.get(path).status_code == 200
    calls = [c for c in api.admin("GET", "stats")["api_requests"] if c["client_id"] == "rate"]
    assert [(c["status"], c["counted"]) for c in calls] == [(200, True)] * 3 + [(429, False), (200, True)]
    counted = [c["t"] for c in calls if c["counted"]]
    assert all(b - a >= 1.0 for a, b in zip(counted, counted[3:], strict=False))


# -- video downloads ----------------------------------------------------------------------------


def test_a_link_downloads_the_file_once(api: Api) -> None:
    session_id = CHECKOUT_SPEECH_SESSION_IDS[0]
    expected = media_bytes(SPEECH_CLIPS[0])
    link = api.video_link(session_id)
    response = api.http.get(link)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(expected).digest()
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-length"] == str(len(expected))
    assert response.headers["etag"] == f'"{hashlib.md5(expected).hexdigest()}"'
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["last-modified"].endswith(" GMT")
    again = api.http.get(link)
    assert again.status_code == 403
    assert s3_error_code(again)[0] == "AccessDenied"
    fresh = api.http.get(api.video_link(session_id))  # a new link works
    assert fresh.status_code == 200
    videos = api.admin("GET", "stats")["video_requests"]
    assert [(v["status"], v["bytes_sent"], v["completed"]) for v in videos] == [
        (200, len(expected), True),
        (403, 0, False),
        (200, len(expected), True),
    ]
    assert all(v["session_id"] == str(session_id) for v in videos)


def test_range_requests_resume_and_the_last_byte_uses_the_link(api: Api) -> None:
    expected = media_bytes(SPEECH_CLIPS[2])
    size = len(expected)
    link = api.video_link(CHECKOUT_SPEECH_SESSION_IDS[2])
    head = api.http.get(link, headers={"Range": "bytes=0-999"})
    assert head.status_code == 206
    assert head.headers["content-range"] == f"bytes 0-999/{size}"
    assert head.content == expected[:1000]
    middle = api.http.get(link, headers={"Range": "bytes=1000-1999"})
    assert middle.status_code == 206 and middle.content == expected[1000:2000]
    unsatisfiable = api.http.get(link, headers={"Range": f"bytes={size}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
    assert s3_error_code(unsatisfiable)[0] == "InvalidRange"
    rest = api.http.get(link, headers={"Range": "bytes=2000-"})
    assert rest.status_code == 206
    assert rest.headers["content-range"] == f"bytes 2000-{size - 1}/{size}"
    assert head.content + middle.content + rest.content == expected
    assert api.http.get(link, headers={"Range": "bytes=0-9"}).status_code == 403  # used up
    suffix = api.http.get(api.video_link(CHECKOUT_SPEECH_SESSION_IDS[2]), headers={"Range": "bytes=-100"})
    assert suffix.status_code == 206 and suffix.content == expected[-100:]
    ranges = [v["range"] for v in api.admin("GET", "stats")["video_requests"]]
    assert ranges == [
        "bytes=0-999",
        "bytes=1000-1999",
        f"bytes={size}-",
        "bytes=2000-",
        "bytes=0-9",
        "bytes=-100",
    ]


def test_an_empty_object_downloads_as_zero_bytes(api: Api) -> None:
    link = api.video_link(EDGE_EMPTY_SESSION_ID)
    response = api.http.get(link)
    assert response.status_code == 200 and response.content == b""
    assert api.http.get(link).status_code == 403


def test_if_match_must_match_the_etag(api: Api) -> None:
    expected = media_bytes(SPEECH_CLIPS[1])
    link = api.video_link(CHECKOUT_SPEECH_SESSION_IDS[1])
    mismatch = api.http.get(link, headers={"If-Match": '"0123456789abcdef0123456789abcdef"'})
    assert mismatch.status_code == 412
    assert s3_error_code(mismatch) == (
        "PreconditionFailed",
        "At least one of the pre-conditions you specified did not hold",
    )
    match = api.http.get(link, headers={"If-Match": f'"{hashlib.md5(expected).hexdigest()}"'})
    assert match.status_code == 200 and match.content == expected


def test_tampered_or_unsigned_links_are_refused(api: Api) -> None:
    link = api.video_link(CHECKOUT_SPEECH_SESSION_IDS[0])
    longer = link.replace("X-Amz-Expires=60", "X-Amz-Expires=999999")
    other_object = link.replace(str(CHECKOUT_SPEECH_SESSION_IDS[0]), str(CHECKOUT_SPEECH_SESSION_IDS[1]))
    for url in (longer, other_object):
        response = api.http.get(url)
        assert response.status_code == 403
        assert s3_error_code(response)[0] == "SignatureDoesNotMatch"
    assert api.http.put(link, content=b"x").status_code == 403  # the signature covers the method
    unsigned = api.http.get(link.split("?")[0])
    assert unsigned.status_code == 403 and s3_error_code(unsigned)[0] == "AccessDenied"
    assert api.http.get(link).status_code == 200  # the genuine link is still unused


def test_an_expired_link_is_refused_with_s3s_error(tight: Any) -> None:
    api = tight("link")
    link = api.video_link(CHECKOUT_SPEECH_SESSION_IDS[0])
    partial = api.http.get(link, headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206
    time.sleep(1.1)
    resumed = api.http.get(link, headers={"Range": "bytes=100-"})
    assert resumed.status_code == 403
    assert s3_error_code(resumed) == ("AccessDenied", "Request has expired")
    assert "<X-Amz-Expires>1</X-Amz-Expires>" in resumed.text


def test_a_download_started_before_expiry_finishes(tight: Any) -> None:
    api = tight("slow")
    session_id = CHECKOUT_SPEECH_SESSION_IDS[1]
    expected = media_bytes(SPEECH_CLIPS[1])
    api.admin(
        "POST", "faults", json=[{"target": "video", "session_id": str(session_id), "delay_seconds": 1.5}]
    )
    link = api.video_link(session_id)
    started = time.monotonic()
    with api.http.stream("GET", link) as response:
        assert response.status_code == 200  # headers at once, then the body stalls past expiry
        body = response.read()
    assert time.monotonic() - started >= 1.5
    assert body == expected
    assert api.http.get(link).status_code == 403


def test_paced_downloads_are_counted_as_they_stream() -> None:
    expected = media_bytes(SPEECH_CLIPS[1])
    rate = len(expected) * 2  # half a second a download
    with (
        spawn("sandbox.server", ["--video-bytes-per-second", str(rate)]) as server,
        httpx.Client(timeout=30) as http,
    ):
        api = Api(server.url, "sandbox-client", "sandbox-secret", http)  # the default client
        link = api.video_link(CHECKOUT_SPEECH_SESSION_IDS[1])
        started = time.monotonic()
        with http.stream("GET", link) as response:
            chunks = response.iter_raw()
            first = next(chunks)
            (midway,) = api.admin("GET", "stats")["video_requests"]
            body = first + b"".join(chunks)
        assert time.monotonic() - started >= 0.4
    assert body == expected
    assert 0 < midway["bytes_sent"] < len(expected) and midway["completed"] is False


# -- injected faults ----------------------------------------------------------------------------


def test_drop_after_bytes_cuts_the_body_and_the_link_survives(api: Api) -> None:
    session_id = CHECKOUT_SPEECH_SESSION_IDS[0]
    expected = media_bytes(SPEECH_CLIPS[0])
    api.admin("POST", "faults", json=[{"target": "video", "drop_after_bytes": 100_000}])
    link = api.video_link(session_id)
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), api.http.stream("GET", link) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
    assert bytes(received) == expected[:100_000]
    resumed = api.http.get(link, headers={"Range": "bytes=100000-"})
    assert resumed.status_code == 206
    assert bytes(received) + resumed.content == expected
    videos = api.admin("GET", "stats")["video_requests"]
    assert [(v["status"], v["bytes_sent"], v["completed"]) for v in videos] == [
        (200, 100_000, False),
        (206, len(expected) - 100_000, True),
    ]


def test_status_faults_fire_once_and_are_counted(api: Api) -> None:
    session_id = CHECKOUT_SPEECH_SESSION_IDS[2]
    faults = [
        {"target": VIDEO_URL, "session_id": str(session_id), "status": 503},
        {"target": DETAILS, "status": 429, "times": 2},
        {"target": "video", "status": 500},
        {"target": "token", "status": 502},
    ]
    pending = api.admin("POST", "faults", json=faults)["pending"]
    assert len(pending) == 4
    assert api.http.post(f"{api.url}{TOKEN_PATH}", data={}).status_code == 502
    url_path = f"/api/v2/sessionResults/{session_id}/videoDownloadUrl"
    failed = api.get(url_path)
    assert failed.status_code == 503
    assert failed.json() == {"statusCode": 503, "message": "Service Unavailable"}
    assert "x-ratelimit-remaining" in failed.headers
    link = api.get(url_path).json()["videoUrl"]
    throttled = [api.get(f"/api/v3/sessionResults/{session_id}") for _ in range(3)]
    assert [r.status_code for r in throttled] == [429, 429, 200]
    assert throttled[0].json() == NEST_429 and int(throttled[0].headers["retry-after"]) >= 1
    s3_failure = api.http.get(link)
    assert s3_failure.status_code == 500 and s3_error_code(s3_failure)[0] == "InternalError"
    assert api.http.get(link).status_code == 200
    stats = api.admin("GET", "stats")
    assert [c["status"] for c in stats["api_requests"]] == [503, 200, 429, 429, 200]
    assert [v["status"] for v in stats["video_requests"]] == [500, 200]
    assert [t["status"] for t in stats["token_requests"]] == [502, 200]


def test_delay_faults_slow_an_answer(api: Api) -> None:
    api.fetch_token()
    api.admin("POST", "faults", json=[{"target": "listWorkspaces", "delay_seconds": 0.4}])
    started = time.monotonic()
    assert api.get("/usertesting/api/v1/workspaces").status_code == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert api.get("/usertesting/api/v1/workspaces").status_code == 200
    assert time.monotonic() - started < 0.4


def test_garbage_answers_replace_or_edit_the_real_one(api: Api) -> None:
    test_id = str(CHECKOUT_TEST_ID)
    faults = [
        {"target": LIST, "body": "<html>gateway</html>"},
        {
            "target": LIST,
            "patch": [
                {"op": "replace", "path": "/sessions/1/sessionId", "value": "not-a-uuid"},
                {"op": "remove", "path": "/sessions/2/finishTime"},
                {"op": "add", "path": "/sessions/-", "value": {"junk": True}},
            ],
        },
    ]
    api.admin("POST", "faults", json=faults)
    garbage = api.get("/api/v2/sessionResults", params={"testId": test_id})
    assert garbage.status_code == 200 and garbage.text == "<html>gateway</html>"
    edited = api.get("/api/v2/sessionResults", params={"testId": test_id}).json()
    real = api.get("/api/v2/sessionResults", params={"testId": test_id}).json()
    assert (
        edited["sessions"][1]["sessionId"] == "not-a-uuid"
        and real["sessions"][1]["sessionId"] != "not-a-uuid"
    )
    assert "finishTime" not in edited["sessions"][2] and "finishTime" in real["sessions"][2]
    assert edited["sessions"][-1] == {"junk": True} and len(edited["sessions"]) == len(real["sessions"]) + 1
    assert edited["sessions"][0] == real["sessions"][0]


@pytest.mark.parametrize(
    "fault",
    [
        {"target": "video", "body": "x"},
        {"target": LIST, "patch": [{"op": "move", "path": "/a"}]},
        {"target": "nothing", "status": 500},
        {"target": "video", "status": 500, "delay_seconds": 1},
        {"target": "video"},
        {"target": LIST, "drop_after_bytes": 10},
        {"target": "video", "status": 200},
        {"target": "video", "status": 500, "colour": "red"},
    ],
)
def test_malformed_faults_are_rejected(api: Api, fault: dict[str, Any]) -> None:
    response = api.http.post(f"{api.url}/_sandbox/faults", json=[fault])
    assert response.status_code == 422
    assert response.json()["detail"]


def test_reset_forgets_tokens_links_faults_and_counts(api: Api) -> None:
    link = api.video_link(CHECKOUT_SPEECH_SESSION_IDS[0])
    api.admin("POST", "faults", json=[{"target": LIST, "status": 500}])
    api.admin("POST", "reset")
    stats = api.admin("GET", "stats")
    assert stats == {
        "api_requests": [],
        "video_requests": [],
        "token_requests": [],
        "links_issued": {},
        "tokens_issued": 0,
    }
    assert api.get("/usertesting/api/v1/workspaces").status_code == 401  # the old token is forgotten
    api.fetch_token()
    assert api.get("/api/v2/sessionResults", params={"testId": str(CHECKOUT_TEST_ID)}).status_code == 200
    expired = api.http.get(link)
    assert expired.status_code == 403 and s3_error_code(expired) == ("AccessDenied", "Request has expired")


def test_task_timings_fall_within_the_recording(api: Api) -> None:
    """Tasks run one after another inside the video (a lead-in and gaps belong to no task), so the
    dataset can align speech and frames with them."""
    manifest = json.loads((DEFAULT_MEDIA_DIR / "manifest.json").read_text())["clips"]
    for session_id, clip in zip(CHECKOUT_SPEECH_SESSION_IDS, SPEECH_CLIPS, strict=True):
        tasks = api.get(f"/api/v3/sessionResults/{session_id}").json()["tasks"]
        spans = [(t["response"]["startTimeMs"], t["response"]["endTimeMs"]) for t in tasks]
        assert len(spans) == 2 and spans[0][0] > 0
        assert all(start < end for start, end in spans) and spans[0][1] < spans[1][0]
        assert spans[-1][1] == round(manifest[clip]["duration"] * 1000)
