"""The sandbox's world: one workspace, its tests and their sessions, all of it deterministic.

Ids are ``uuid5`` of fixed names, so tests and the demo import them instead of discovering them.
Timestamps hang off an anchor (the server's start time by default), so "finished within the last
24 hours" holds whenever the sandbox runs. Sessions name their media file and nothing more: bytes,
size and ETag are read from the file when a download asks, which keeps the world cheap to build
(about 10 ms for its 1,244 sessions) and lets media files be gigabytes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import UUID

from sandbox.media import MEDIA_DIR as DEFAULT_MEDIA_DIR

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://sandbox.ut-video-pipeline.invalid/")
MANIFEST_NAME = "manifest.json"


def sandbox_uuid(name: str) -> UUID:
    """The id of a named thing in the sandbox: the same on every run and machine."""
    return uuid.uuid5(NAMESPACE, name)


# Media files (produced by sandbox/media; described by its manifest.json).
SPEECH_CLIPS = ("speech-1.mp4", "speech-2.mp4", "speech-3.mp4")
NO_AUDIO_CLIP = "no-audio.mp4"
AUDIO_ONLY_CLIP = "audio-only.mp4"
EMPTY_CLIP = "empty.mp4"
CORRUPT_CLIP = "corrupt.mp4"

WORKSPACE_ID = sandbox_uuid("workspace/sandbox-research")
WORKSPACE_NAME = "Sandbox Research"
WORKSPACE_NUMERIC_ID = "4711"

CHECKOUT_TEST_ID = sandbox_uuid("test/checkout-think-out-loud")
ONBOARDING_TEST_ID = sandbox_uuid("test/onboarding-interaction-test")
PRICING_TEST_ID = sandbox_uuid("test/pricing-survey")
MEDIA_EDGE_TEST_ID = sandbox_uuid("test/media-edge-cases")
CLASSIC_TEST_ID = sandbox_uuid("test/classic-homepage-study")

CHECKOUT_SPEECH_SESSION_IDS = tuple(sandbox_uuid(f"session/checkout/{clip}") for clip in SPEECH_CLIPS)
CHECKOUT_NO_VIDEO_SESSION_ID = sandbox_uuid("session/checkout/no-video")
CHECKOUT_CORRUPT_SESSION_ID = sandbox_uuid("session/checkout/corrupt")
CHECKOUT_IN_PROGRESS_SESSION_ID = sandbox_uuid("session/checkout/in-progress")

ONBOARDING_SESSION_COUNT = 1230
ONBOARDING_SPAN = timedelta(days=730)

PRICING_SESSION_IDS = tuple(sandbox_uuid(f"session/pricing/{n}") for n in range(1, 5))

EDGE_NO_AUDIO_SESSION_ID = sandbox_uuid("session/media-edge/no-audio")
EDGE_AUDIO_ONLY_SESSION_ID = sandbox_uuid("session/media-edge/audio-only")
EDGE_EMPTY_SESSION_ID = sandbox_uuid("session/media-edge/empty")
EDGE_CORRUPT_SESSION_ID = sandbox_uuid("session/media-edge/corrupt")


def onboarding_session_id(index: int) -> UUID:
    """The id of the onboarding test's ``index``-th session, 0 being the newest."""
    return sandbox_uuid(f"session/onboarding/{index}")


class TestType(StrEnum):
    """v1 ``WorkspaceStudy.type``: how a test is delivered; only STUDYV2 tests exist in v2/v3."""

    __test__ = False  # not a pytest class, despite the name

    STUDYV2 = "STUDYV2"
    WEB = "WEB"


class ProductType(StrEnum):
    """What kind of research a test is; decides which v2 endpoints answer for its sessions."""

    THINK_OUT_LOUD = "THINK_OUT_LOUD"
    NON_THINK_OUT_LOUD = "NON_THINK_OUT_LOUD"
    SURVEY = "SURVEY"
    LIVE_CONVERSATION = "LIVE_CONVERSATION"
    INSIGHT_CORE = "INSIGHT_CORE"


class SessionStatus(StrEnum):
    COMPLETE = "COMPLETE"
    IN_PROGRESS = "IN_PROGRESS"


# Product types whose sessions have videos (videoDownloadUrl) and transcripts, per the v2 spec.
VIDEO_PRODUCT_TYPES = frozenset(
    {ProductType.THINK_OUT_LOUD, ProductType.NON_THINK_OUT_LOUD, ProductType.LIVE_CONVERSATION}
)
TRANSCRIPT_PRODUCT_TYPES = frozenset({ProductType.THINK_OUT_LOUD, ProductType.LIVE_CONVERSATION})


@dataclass(frozen=True, slots=True)
class MediaClip:
    """One entry of the media manifest: what a file holds, so answers can be checked against it."""

    name: str
    text: str | None
    duration: float | None  # seconds; None when no decoder can read the file
    has_audio: bool
    has_video: bool
    description: str


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class TaskDef:
    """A task of a test plan; each session answers it (v3 ``tasks``)."""

    task_id: UUID
    text: str
    type: str


@dataclass(frozen=True, slots=True)
class Participant:
    participant_id: UUID
    gender: str
    age_group: str
    country: str


@dataclass(frozen=True, slots=True)
class Session:
    """One participant's run through a test. ``media`` names the file behind its video, if any."""

    session_id: UUID
    test_id: UUID
    index: int
    status: SessionStatus
    start_time: datetime
    finish_time: datetime | None
    audience_id: UUID | None
    media: str | None

    @property
    def sort_time(self) -> datetime:
        """The time the session list orders by, newest first: finish time, else start time."""
        return self.finish_time or self.start_time


@dataclass(frozen=True, slots=True)
class Test:
    """A test (v1: study) of the workspace; ``sessions`` run newest first."""

    __test__ = False  # not a pytest class, despite the name

    test_id: UUID
    title: str
    type: TestType
    product_type: ProductType
    ordered_at: datetime
    ordered_by: Person
    test_plan_id: UUID
    tasks: tuple[TaskDef, ...]
    sessions: tuple[Session, ...]

    @property
    def in_results_api(self) -> bool:
        """Whether the v2/v3 endpoints know this test (only STUDYV2 tests are)."""
        return self.type is TestType.STUDYV2


@dataclass(frozen=True, slots=True)
class Workspace:
    uuid: UUID
    id: str
    name: str


@dataclass(frozen=True)
class World:
    """Everything the sandbox serves, indexed for the API's lookups."""

    anchor: datetime
    media_dir: Path
    workspace: Workspace
    tests: tuple[Test, ...]
    clips: dict[str, MediaClip]
    _tests_by_id: dict[UUID, Test]
    _sessions_by_id: dict[UUID, Session]

    def test(self, test_id: UUID) -> Test | None:
        return self._tests_by_id.get(test_id)

    def session(self, session_id: UUID) -> Session | None:
        return self._sessions_by_id.get(session_id)

    def test_of(self, session: Session) -> Test:
        return self._tests_by_id[session.test_id]

    def has_video(self, session: Session) -> bool:
        """Whether ``videoDownloadUrl`` gives a link: a finished session of a video product, with media."""
        return (
            session.media is not None
            and session.status is SessionStatus.COMPLETE
            and self.test_of(session).product_type in VIDEO_PRODUCT_TYPES
        )

    def media_path(self, session: Session) -> Path | None:
        return self.media_dir / session.media if session.media else None

    def transcript_text(self, session: Session) -> str | None:
        """The words spoken in a session's video, when UserTesting would have a transcript of them."""
        if not self.has_video(session) or self.test_of(session).product_type not in TRANSCRIPT_PRODUCT_TYPES:
            return None
        clip = self.clips.get(session.media or "")
        if clip is None or not clip.has_audio or not clip.text:
            return None
        return clip.text

    def task_timings(self, session: Session) -> list[tuple[int, int]]:
        """When each task of the session's test ran, as (start, end) in ms from the session's start.

        The tasks share the recording (the clip's length; the session's wall time when it has no
        readable clip) by how long such tasks take: a think-aloud or navigation task several times a
        rating. The participant reads the first prompt before starting and each next prompt between
        tasks, so there is a lead-in and a gap between tasks (4 % of the recording each) that belong
        to no task.
        """
        tasks = self.test_of(session).tasks
        clip = self.clips.get(session.media or "")
        if clip is not None and clip.duration:
            total = round(clip.duration * 1000)
        else:
            total = round(((session.finish_time or self.anchor) - session.start_time).total_seconds() * 1000)
        weights = [TASK_WEIGHTS.get(task.type, 1) for task in tasks]
        pause = round(total * 0.04)
        usable = total - pause * len(tasks)
        timings, start = [], pause
        for n, weight in enumerate(weights):
            end = total if n == len(tasks) - 1 else start + usable * weight // sum(weights)
            timings.append((start, end))
            start = end + pause
        return timings

    def participant(self, session: Session) -> Participant:
        """The session's participant, with demographics picked from fixed lists by the session's index."""
        i = session.index + self.tests.index(self.test_of(session))
        return Participant(
            participant_id=sandbox_uuid(f"participant/{session.session_id}"),
            gender=GENDERS[i % len(GENDERS)],
            age_group=AGE_GROUPS[i % len(AGE_GROUPS)],
            country=COUNTRIES[i % len(COUNTRIES)],
        )

    def summary(self) -> dict[str, Any]:
        """The world as JSON, for tests and the demo (``GET /_sandbox/world``)."""
        return {
            "anchor": isoformat_ms(self.anchor),
            "media_dir": str(self.media_dir),
            "workspace": {
                "uuid": str(self.workspace.uuid),
                "id": self.workspace.id,
                "name": self.workspace.name,
            },
            "media": {name: self._clip_summary(clip) for name, clip in self.clips.items()},
            "tests": [self._test_summary(test) for test in self.tests],
        }

    def _clip_summary(self, clip: MediaClip) -> dict[str, Any]:
        path = self.media_dir / clip.name
        return {
            "text": clip.text,
            "duration": clip.duration,
            "has_audio": clip.has_audio,
            "has_video": clip.has_video,
            "description": clip.description,
            "size": path.stat().st_size if path.is_file() else None,
        }

    def _test_summary(self, test: Test) -> dict[str, Any]:
        return {
            "uuid": str(test.test_id),
            "title": test.title,
            "type": test.type,
            "productType": test.product_type,
            "in_results_api": test.in_results_api,
            "session_count": len(test.sessions),
            "sessions": [
                {
                    "session_id": str(s.session_id),
                    "status": s.status,
                    "startTime": isoformat_ms(s.start_time),
                    "finishTime": isoformat_ms(s.finish_time) if s.finish_time else None,
                    "has_video": self.has_video(s),
                    "media": s.media,
                    "has_transcript": self.transcript_text(s) is not None,
                    "text": self.clips[s.media].text if s.media in self.clips else None,
                }
                for s in test.sessions
            ],
        }


# Relative time a task of each type takes: looking around and thinking aloud against a quick answer.
TASK_WEIGHTS = {"WRITTEN": 4, "URL": 4, "FIGMA": 4, "BLANK": 2}

GENDERS = ("Female", "Male", "Non-binary", "Prefer not to say")
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
COUNTRIES = ("United States", "United Kingdom", "Canada", "Australia", "Germany", "India", "Brazil")


def isoformat_ms(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and a ``Z``, as the Results API writes timestamps."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_anchor() -> datetime:
    """Now, in UTC, to the whole second."""
    return datetime.now(UTC).replace(microsecond=0)


def load_clips(media_dir: Path) -> dict[str, MediaClip]:
    """The media manifest; without it the sandbox cannot say what its videos contain, so it is required."""
    manifest_path = media_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no media manifest at {manifest_path}: the sandbox needs its media files")
    raw = json.loads(manifest_path.read_text())
    return {
        name: MediaClip(
            name=name,
            text=entry.get("text"),
            duration=None if entry.get("duration") is None else float(entry["duration"]),
            has_audio=bool(entry.get("has_audio", False)),
            has_video=bool(entry.get("has_video", False)),
            description=str(entry.get("description", "")),
        )
        for name, entry in raw["clips"].items()
    }


RESEARCHER = Person(name="Sandbox Researcher", email="researcher@sandbox.invalid")


def _task(test_key: str, n: int, text: str, task_type: str) -> TaskDef:
    return TaskDef(sandbox_uuid(f"task/{test_key}/{n}"), text, task_type)


def _millis(seed: UUID) -> timedelta:
    """A stable sub-second offset, so timestamps carry realistic, distinct milliseconds."""
    return timedelta(milliseconds=seed.int % 1000)


def _finished(
    session_id: UUID,
    test_id: UUID,
    index: int,
    finish: datetime,
    *,
    minutes: float,
    media: str | None,
    audience_id: UUID | None,
) -> Session:
    """A COMPLETE session that lasted about ``minutes`` and finished at ``finish`` (plus stable ms)."""
    finish += _millis(session_id)
    return Session(
        session_id=session_id,
        test_id=test_id,
        index=index,
        status=SessionStatus.COMPLETE,
        start_time=finish - timedelta(minutes=minutes, milliseconds=(session_id.int >> 10) % 1000),
        finish_time=finish,
        audience_id=audience_id,
        media=media,
    )


def _newest_first(sessions: list[Session]) -> tuple[Session, ...]:
    return tuple(sorted(sessions, key=lambda s: s.sort_time, reverse=True))


def _checkout(anchor: datetime) -> Test:
    test_id, audience = CHECKOUT_TEST_ID, sandbox_uuid("audience/checkout")
    hours_ago = (1.2, 4.6, 13.3)
    sessions = [
        _finished(
            sid, test_id, i, anchor - timedelta(hours=h), minutes=9 + i, media=clip, audience_id=audience
        )
        for i, (sid, clip, h) in enumerate(
            zip(CHECKOUT_SPEECH_SESSION_IDS, SPEECH_CLIPS, hours_ago, strict=True)
        )
    ]
    sessions += [
        _finished(
            CHECKOUT_NO_VIDEO_SESSION_ID,
            test_id,
            3,
            anchor - timedelta(hours=18),
            minutes=7,
            media=None,
            audience_id=audience,
        ),
        _finished(
            CHECKOUT_CORRUPT_SESSION_ID,
            test_id,
            4,
            anchor - timedelta(hours=21, minutes=30),
            minutes=11,
            media=CORRUPT_CLIP,
            audience_id=audience,
        ),
        Session(
            session_id=CHECKOUT_IN_PROGRESS_SESSION_ID,
            test_id=test_id,
            index=5,
            status=SessionStatus.IN_PROGRESS,
            start_time=anchor - timedelta(minutes=25, milliseconds=417),
            finish_time=None,
            audience_id=audience,
            media=None,
        ),
    ]
    return Test(
        test_id=test_id,
        title="Checkout think-out-loud",
        type=TestType.STUDYV2,
        product_type=ProductType.THINK_OUT_LOUD,
        ordered_at=anchor - timedelta(days=3, hours=2),
        ordered_by=RESEARCHER,
        test_plan_id=sandbox_uuid("test-plan/checkout"),
        tasks=(
            _task(
                "checkout",
                1,
                "Add a pair of running shoes to your cart and check out. Think out loud.",
                "WRITTEN",
            ),
            _task("checkout", 2, "How easy was it to check out?", "RATING_SCALE"),
        ),
        sessions=_newest_first(sessions),
    )


def _onboarding(anchor: datetime) -> Test:
    """1,230 sessions evenly over two years, newest 45 minutes before the anchor: three pages of 500."""
    test_id, audience = ONBOARDING_TEST_ID, sandbox_uuid("audience/onboarding")
    step = timedelta(
        seconds=(ONBOARDING_SPAN - timedelta(hours=2)).total_seconds() // (ONBOARDING_SESSION_COUNT - 1)
    )
    newest = anchor - timedelta(minutes=45)
    sessions = tuple(
        _finished(
            onboarding_session_id(i),
            test_id,
            i,
            newest - step * i,
            minutes=6 + i % 13,
            media=SPEECH_CLIPS[0],
            audience_id=audience,
        )
        for i in range(ONBOARDING_SESSION_COUNT)
    )
    return Test(
        test_id=test_id,
        title="Onboarding interaction test",
        type=TestType.STUDYV2,
        product_type=ProductType.NON_THINK_OUT_LOUD,
        ordered_at=anchor - ONBOARDING_SPAN - timedelta(days=1),
        ordered_by=RESEARCHER,
        test_plan_id=sandbox_uuid("test-plan/onboarding"),
        tasks=(
            _task("onboarding", 1, "Open the app and create an account.", "URL"),
            _task("onboarding", 2, "Which onboarding step was the most confusing?", "MULTIPLE_CHOICE"),
        ),
        sessions=sessions,
    )


def _pricing(anchor: datetime) -> Test:
    test_id = PRICING_TEST_ID
    sessions = [
        _finished(
            sid, test_id, i, anchor - timedelta(days=1 + 1.5 * i), minutes=4, media=None, audience_id=None
        )
        for i, sid in enumerate(PRICING_SESSION_IDS)
    ]
    return Test(
        test_id=test_id,
        title="Pricing survey",
        type=TestType.STUDYV2,
        product_type=ProductType.SURVEY,
        ordered_at=anchor - timedelta(days=10),
        ordered_by=RESEARCHER,
        test_plan_id=sandbox_uuid("test-plan/pricing"),
        tasks=(
            _task("pricing", 1, "How likely are you to recommend our plans to a friend?", "NPS"),
            _task("pricing", 2, "Which plan would you choose?", "MULTIPLE_CHOICE"),
        ),
        sessions=_newest_first(sessions),
    )


def _media_edge(anchor: datetime) -> Test:
    test_id, audience = MEDIA_EDGE_TEST_ID, sandbox_uuid("audience/media-edge")
    cases = (
        (EDGE_NO_AUDIO_SESSION_ID, NO_AUDIO_CLIP),
        (EDGE_AUDIO_ONLY_SESSION_ID, AUDIO_ONLY_CLIP),
        (EDGE_EMPTY_SESSION_ID, EMPTY_CLIP),
        (EDGE_CORRUPT_SESSION_ID, CORRUPT_CLIP),
    )
    sessions = [
        _finished(
            sid, test_id, i, anchor - timedelta(hours=2 + 5 * i), minutes=20, media=clip, audience_id=audience
        )
        for i, (sid, clip) in enumerate(cases)
    ]
    return Test(
        test_id=test_id,
        title="Media edge cases",
        type=TestType.STUDYV2,
        product_type=ProductType.LIVE_CONVERSATION,
        ordered_at=anchor - timedelta(days=1, hours=6),
        ordered_by=RESEARCHER,
        test_plan_id=sandbox_uuid("test-plan/media-edge"),
        tasks=(_task("media-edge", 1, "Warm-up: tell us about the last thing you bought online.", "BLANK"),),
        sessions=_newest_first(sessions),
    )


def _classic(anchor: datetime) -> Test:
    """A classic (v1) test: listed in the workspace, unknown to the v2/v3 endpoints."""
    return Test(
        test_id=CLASSIC_TEST_ID,
        title="Homepage first impressions (classic)",
        type=TestType.WEB,
        product_type=ProductType.INSIGHT_CORE,
        ordered_at=anchor - timedelta(days=400),
        ordered_by=RESEARCHER,
        test_plan_id=sandbox_uuid("test-plan/classic"),
        tasks=(),
        sessions=(),
    )


def build_world(anchor: datetime | None = None, media_dir: Path = DEFAULT_MEDIA_DIR) -> World:
    """The sandbox's world as of ``anchor`` (default: now), with videos backed by files in ``media_dir``."""
    anchor = (anchor or default_anchor()).astimezone(UTC)
    tests = (_checkout(anchor), _onboarding(anchor), _pricing(anchor), _media_edge(anchor), _classic(anchor))
    return World(
        anchor=anchor,
        media_dir=media_dir,
        workspace=Workspace(uuid=WORKSPACE_ID, id=WORKSPACE_NUMERIC_ID, name=WORKSPACE_NAME),
        tests=tests,
        clips=load_clips(media_dir),
        _tests_by_id={t.test_id: t for t in tests},
        _sessions_by_id={s.session_id: s for t in tests for s in t.sessions},
    )
