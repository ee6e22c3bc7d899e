"""The Results API client over real HTTP against the sandbox, with the sandbox's own counters as truth."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from sandbox.local import LocalWorld, max_in_window
from sandbox.world import (
    CHECKOUT_NO_VIDEO_SESSION_ID,
    CHECKOUT_SPEECH_SESSION_IDS,
    CHECKOUT_TEST_ID,
    CLASSIC_TEST_ID,
    MEDIA_EDGE_TEST_ID,
    ONBOARDING_TEST_ID,
    PRICING_TEST_ID,
    WORKSPACE_ID,
    onboarding_session_id,
)
from tasks.api.client import ApiError, ApiUnavailable, BadRequest, ResultsApiClient, open_client
from tasks.api.models import NotFound, VideoDownload
from tasks.settings import load_settings


def study_ids_by_title(client: ResultsApiClient) -> dict[str, UUID]:
    (workspace,) = client.workspaces()
    return {
        s.title or "": UUID(s.uuid) for s in client.workspace_tests(workspace.uuid) if s.is_results_api_test
    }


LIST_OP = "SessionResultsController_getSessionSummaryResults"


def test_paging_past_500_sessions(world: LocalWorld, client: ResultsApiClient) -> None:
    onboarding = study_ids_by_title(client)["Onboarding interaction test"]
    mark = world.mark()
    sessions = list(client.completed_sessions(onboarding))
    assert len(sessions) == 1230
    assert len({s.session_id for s in sessions}) == 1230
    finishes = [s.finish_time for s in sessions]
    assert finishes == sorted(finishes, reverse=True)
    pages = world.api_calls(LIST_OP, since=mark)
    assert [c["status"] for c in pages] == [200, 200, 200]


def test_paging_stops_early_at_since(world: LocalWorld, client: ResultsApiClient) -> None:
    onboarding = study_ids_by_title(client)["Onboarding interaction test"]
    everything = list(client.completed_sessions(onboarding))
    newest = everything[0].finish_time
    assert newest is not None
    since = newest - timedelta(days=30)
    mark = world.mark()
    recent = list(client.completed_sessions(onboarding, since=since))
    assert recent == [s for s in everything if s.finish_time and s.finish_time >= since]
    assert 0 < len(recent) < 500
    assert len(world.api_calls(LIST_OP, since=mark)) == 1  # the first page already reaches back past `since`


def test_until_bounds_and_incomplete_sessions_are_left_out(
    world: LocalWorld, client: ResultsApiClient
) -> None:
    checkout = study_ids_by_title(client)["Checkout think-out-loud"]
    page = client.list_sessions_page(checkout)
    assert not isinstance(page, NotFound)
    complete = [s for s in page.sessions if s["status"] == "COMPLETE"]  # the page's items stay raw
    assert len(complete) < len(page.sessions)  # the sandbox has a session still in progress
    listed = list(client.completed_sessions(checkout))
    assert [str(s.session_id) for s in listed] == [s["sessionId"] for s in complete]
    cutoff = listed[0].finish_time
    assert cutoff is not None
    assert [s.session_id for s in client.completed_sessions(checkout, until=cutoff)] == [
        s.session_id for s in listed[1:]
    ]


def test_404_is_a_typed_answer_and_never_retried(world: LocalWorld, client: ResultsApiClient) -> None:
    missing = uuid4()
    no_video = str(CHECKOUT_NO_VIDEO_SESSION_ID)
    mark = world.mark()
    assert isinstance(client.session_details(missing), NotFound)
    answer = client.video_download_url(no_video)
    assert isinstance(answer, NotFound)
    assert answer.resource_id == no_video
    with pytest.raises(ApiError) as raised:
        list(client.completed_sessions(missing))
    assert raised.value.status == 404
    assert [c["status"] for c in world.api_calls(since=mark)] == [404, 404, 404]


def test_400_carries_the_api_message(client: ResultsApiClient) -> None:
    checkout = study_ids_by_title(client)["Checkout think-out-loud"]
    with pytest.raises(BadRequest) as raised:
        client.list_sessions_page(checkout, limit=501)
    assert raised.value.status == 400
    assert raised.value.message


def test_video_link_transcript_and_details(world: LocalWorld, client: ResultsApiClient) -> None:
    speech = {"session_id": str(CHECKOUT_SPEECH_SESSION_IDS[0])}
    link = client.video_download_url(speech["session_id"])
    assert isinstance(link, VideoDownload)
    assert "X-Amz-Signature" in link.video_url.get_secret_value()
    assert "X-Amz-Signature" not in repr(link) and "X-Amz-Signature" not in str(link.model_dump())
    details = client.session_details(speech["session_id"])
    assert not isinstance(details, NotFound)
    assert str(details.session_id) == speech["session_id"]
    vtt = client.transcript_vtt(speech["session_id"])
    assert isinstance(vtt, str) and vtt.startswith("WEBVTT")


def test_recovers_from_429_by_pausing_until_reset(world: LocalWorld, client: ResultsApiClient) -> None:
    world.admin(
        "POST", "faults", json=[{"target": "SessionResultsV3Controller_getSessionResults", "status": 429}]
    )
    session = str(CHECKOUT_SPEECH_SESSION_IDS[0])
    started = time.monotonic()
    details = client.session_details(session)
    assert not isinstance(details, NotFound)
    statuses = [c["status"] for c in world.api_calls("SessionResultsV3Controller_getSessionResults")]
    assert statuses == [429, 200]
    assert time.monotonic() - started >= 0.9  # waited for the server's reset before the retry


def test_retries_5xx_and_timeouts_then_gives_up(world: LocalWorld, client: ResultsApiClient) -> None:
    session = str(CHECKOUT_SPEECH_SESSION_IDS[0])
    op = "SessionResultsV3Controller_getSessionResults"
    world.admin("POST", "faults", json=[{"target": op, "status": 503}, {"target": op, "status": 500}])
    assert not isinstance(client.session_details(session), NotFound)
    assert [c["status"] for c in world.api_calls(op)] == [503, 500, 200]

    mark = world.mark()
    world.admin("POST", "faults", json=[{"target": op, "status": 502, "times": 10}])
    with pytest.raises(ApiUnavailable):
        client.session_details(session)
    assert len(world.api_calls(op, since=mark)) == client.max_attempts


def test_read_timeout_is_retried(world_env: dict[str, str], world: LocalWorld) -> None:
    session = str(CHECKOUT_SPEECH_SESSION_IDS[0])
    op = "SessionResultsV3Controller_getSessionResults"
    world.admin("POST", "faults", json=[{"target": op, "delay_seconds": 2.0}])
    api = open_client(load_settings(http_timeout_seconds=0.5))
    api.max_backoff = 0.1
    try:
        assert not isinstance(api.session_details(session), NotFound)
    finally:
        api.close()
    assert len(world.api_calls(op)) == 2


def test_token_refreshed_before_expiry(
    fresh_world: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = fresh_world(token_ttl=2.0)
    for name, value in {
        **world.env,
        "UT_RATE_LIMIT_DIR": str(tmp_path),
        "UT_RATE_LIMIT_BACKEND": "file",
    }.items():
        monkeypatch.setenv(name, value)
    api = open_client(load_settings(rate_limit_window_seconds=1.0, rate_limit_margin_seconds=0.02))
    session = str(CHECKOUT_SPEECH_SESSION_IDS[0])
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            assert not isinstance(api.session_details(session), NotFound)
            time.sleep(0.3)
    finally:
        api.close()
    stats = world.admin("GET", "stats")
    assert stats["tokens_issued"] >= 3  # 5 s of calls on 2 s tokens
    assert all(c["status"] == 200 for c in stats["api_requests"])  # refreshed ahead: never a 401
    assert api.tokens.fetches == stats["tokens_issued"]


def test_401_refreshes_the_token_once_for_all_threads(world: LocalWorld, client: ResultsApiClient) -> None:
    session = str(CHECKOUT_SPEECH_SESSION_IDS[0])
    assert not isinstance(client.session_details(session), NotFound)
    world.admin("POST", "reset")  # the sandbox forgets every token it issued: the next call gets 401
    threads = [threading.Thread(target=client.session_details, args=(session,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = world.admin("GET", "stats")
    assert stats["tokens_issued"] == 1  # one refresh shared by six callers
    assert sum(1 for c in stats["api_requests"] if c["status"] == 200) == 6


def test_every_call_is_logged_without_credentials(
    world: LocalWorld, client: ResultsApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []
    client.observers.append(calls.append)
    speech = {"session_id": str(CHECKOUT_SPEECH_SESSION_IDS[1])}
    with caplog.at_level(logging.DEBUG):
        link = client.video_download_url(speech["session_id"])
        assert isinstance(link, VideoDownload)
        client.session_details(speech["session_id"])
    token = client.tokens.get()
    logged = caplog.text + json.dumps([c.as_dict() for c in calls])
    for secret in (token, world.client_secret, link.video_url.get_secret_value().partition("?")[2]):
        assert secret not in logged
    assert "X-Amz-Signature" not in logged
    assert [c.endpoint for c in calls] == [
        "/api/v2/sessionResults/{sessionId}/videoDownloadUrl",
        "/api/v3/sessionResults/{sessionId}",
    ]
    assert all(c.status == 200 and c.ratelimit_remaining is not None and c.attempt == 1 for c in calls)
    api_lines = [r for r in caplog.records if r.name == "ut_pipeline.api" and "status=200" in r.getMessage()]
    assert len(api_lines) == 2


# -- the limiter, counted by the sandbox ---------------------------------------------------------------


def _caller_process(env: dict[str, str], session_ids: list[str], threads: int, out: str) -> None:
    os.environ.update(env)
    api = open_client(load_settings())
    statuses: list[int] = []

    def work(ids: list[str]) -> None:
        for sid in ids:
            answer = api.session_details(sid)
            statuses.append(404 if isinstance(answer, NotFound) else 200)

    workers = [threading.Thread(target=work, args=(session_ids[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    Path(out).write_text(json.dumps(statuses))


@pytest.mark.parametrize("backend", ["s3", "file"])
def test_limiter_holds_across_processes_counted_by_the_sandbox(
    fresh_world: Any, tmp_path: Path, backend: str
) -> None:
    """8 concurrent callers in two processes share one quota of 5 requests per 1.5 s."""
    limit, window = 5, 1.5
    world = fresh_world(rate_limit=limit, rate_window=window)
    env = {
        **world.env,
        "UT_RATE_LIMIT_REQUESTS": str(limit),
        "UT_RATE_LIMIT_WINDOW_SECONDS": str(window),
        "UT_RATE_LIMIT_MARGIN_SECONDS": "0.03",
        "UT_RATE_LIMIT_BACKEND": backend,
        "UT_RATE_LIMIT_DIR": str(tmp_path / "ledger"),
    }
    sessions = [str(onboarding_session_id(i)) for i in range(24)]
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_caller_process, args=(env, sessions[i::2], 4, str(tmp_path / f"out{i}")))
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    results = [s for i in range(2) for s in json.loads((tmp_path / f"out{i}").read_text())]
    assert results == [200] * 24
    calls = world.admin("GET", "stats")["api_requests"]
    assert len(calls) == 24
    assert [c for c in calls if c["status"] == 429] == []
    assert max_in_window([c["t"] for c in calls], window) <= limit


def test_workspaces_give_their_results_api_tests(client: ResultsApiClient) -> None:
    covered = client.tests_to_cover([CHECKOUT_TEST_ID], [WORKSPACE_ID])
    assert covered[0] == CHECKOUT_TEST_ID  # named tests first, never twice
    assert set(covered) == {CHECKOUT_TEST_ID, ONBOARDING_TEST_ID, PRICING_TEST_ID, MEDIA_EDGE_TEST_ID}
    assert CLASSIC_TEST_ID not in covered  # a v1 (WEB) test: the Results API does not serve it
