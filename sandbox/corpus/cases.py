"""The corpus: recordings shaped like real UserTesting sessions, each with the outcome processing owes it.

Every :class:`Case` says how its file is made (what the screen shows, what is said, which container,
codecs and quirks) and what the pipeline must make of it (:class:`Expect`): done with which outputs,
or failed with which reason. The generator writes both into ``manifest.json``; the end-to-end test
(``tests/test_corpus.py``) runs each file through ``reprocess`` from the local S3 and checks every
record and output against it. The spoken texts are distinct from case to case, so a transcript can
only match the recording it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.corpus.screens import InPageVideo, Move, Pointer, Screen, Scroll, Still, text_page
from sandbox.media.clips import CART, CONFIRM, DELIVERY, FORM, MODAL, PAYMENT, Part, Slide

Container = Literal["mp4", "mp4-moov-at-end", "fragmented-mp4", "webm", "mkv", "mpegts", "mov"]
VideoCodec = Literal["h264", "h264-444", "vp9", "hevc-10bit"]
Damage = Literal["truncate", "chunk"]

# One site: a home page, a search result, an article and an account page, all white with the same
# header, so that moving between them changes only lines and pictures (scene score 0.1 to 0.2).
HOME = text_page("home", 11)
RESULTS = text_page("results", 12)
ARTICLE = text_page("article", 13)
ACCOUNT = text_page("account", 14)
LONG_ARTICLE = text_page("long-article", 15, tall=3)
MOBILE_HOME = text_page("mobile-home", 16, header="0xc2185b")
MOBILE_MENU = text_page("mobile-menu", 17, header="0xc2185b", background="0xfafafa")


@dataclass(frozen=True)
class Expect:
    """What processing must make of a case.

    ``status`` is the record's final status. A ``done`` session has every output its media allows;
    ``missing`` names the outputs it cannot have and a fragment of the recorded reason. A ``failed``
    one has ``error`` as a fragment of its reason (stage ``media``). ``sizes`` are the displayed
    picture sizes the frames come out in, in order of appearance. ``video_stream``/``audio_stream``
    are the container's stream indexes processing must choose. ``lost`` says the record must report
    some of the media as lost to damage.
    """

    status: Literal["done", "failed"] = "done"
    missing: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    sizes: tuple[tuple[int, int], ...] = ()
    video_stream: int | None = None
    audio_stream: int | None = None
    lost: bool = False


@dataclass(frozen=True)
class Case:
    """One corpus recording, as it is made.

    ``screen`` is the picture (None: no video stream) and ``speech`` what is said (parts as in
    :mod:`sandbox.media.clips`: sentences and pauses in seconds); ``audio`` is "speech", "silence"
    (a microphone that heard only room tone) or "none" (no audio stream). The screen is stretched to
    the speech's length. ``resize`` is a second screen of another size that follows the first
    (a phone turned, a browser window resized); ``webcam`` puts a 320x240 camera stream before the
    screen; ``silent_track_first`` puts a silent "system audio" track before the microphone;
    ``rotation`` stores the picture turned with a display matrix that turns it back (a phone held
    upright); ``audio_delay`` starts the audio that much later than the video; ``timestamp_offset``
    starts every timestamp there; ``variable_rate`` keeps only frames that differ (a capture that
    emits frames on change); ``damage`` cuts the file short or overwrites a chunk in its middle;
    ``raw`` is the whole file, for something that is no media at all.
    """

    file: str
    description: str
    expect: Expect = field(default_factory=Expect)
    screen: Screen | None = None
    speech: tuple[Part, ...] = ()
    audio: Literal["speech", "silence", "none"] = "speech"
    voice: str = "en-us"
    language: str = "en"
    container: Container = "mp4"
    video_codec: VideoCodec = "h264"
    resize: Screen | None = None
    webcam: bool = False
    silent_track_first: bool = False
    rotation: int = 0
    audio_delay: float = 0.0
    timestamp_offset: float = 0.0
    variable_rate: bool = False
    damage: Damage | None = None
    raw: bytes | None = None

    @property
    def text(self) -> str | None:
        """The words spoken, or None when nothing is said."""
        sentences = [part for part in self.speech if isinstance(part, str)]
        return " ".join(sentences) if sentences and self.audio == "speech" else None


def _pages(*pages: tuple[Slide, float], **screen: Any) -> Screen:
    return Screen(tuple(Still(page, seconds) for page, seconds in pages), **screen)


SHOP = _pages((CART, 4.0), (MODAL, 3.0), (PAYMENT, 3.0), (CONFIRM, 2.0))
SITE = _pages((HOME, 5.0), (RESULTS, 5.0), (ARTICLE, 4.0))

CASES: tuple[Case, ...] = (
    Case(
        "static-minute.mp4",
        "One page on screen for a whole minute, nothing moves; the user reads it and talks now and then.",
        screen=_pages((HOME, 60.0)),
        speech=(
            "I am reading the home page now, and nothing on it is moving.",
            12.0,
            "The text is quite long, so I am taking my time with it.",
            14.0,
            "I still have not found the price of the basic plan anywhere.",
            12.0,
            "I think I would give up here and call the company instead.",
        ),
    ),
    Case(
        "still-navigations.mp4",
        "A screen recording with long still periods and three navigations between different pages.",
        screen=_pages((FORM, 12.0), (DELIVERY, 10.0), (CART, 9.0), (CONFIRM, 5.0)),
        speech=(
            "This is the shipping form, and I will fill it in slowly.",
            7.0,
            "Now I can choose how fast the parcel should arrive.",
            6.0,
            "Here is my basket again with the two chairs in it.",
            5.0,
            "Great, the order went through and I can see the confirmation.",
        ),
    ),
    Case(
        "variable-frame-rate.mp4",
        "Variable frame rate capture: frames only when the picture changes (a pointer moving now and then), "
        "so the gaps between frames range from 33 ms to several seconds.",
        screen=_pages(
            (HOME, 7.0),
            (RESULTS, 7.0),
            fps=30,
            pointer=Pointer(
                (
                    (0.0, 0.3, 0.4),
                    (1.5, 0.5, 0.5),
                    (5.0, 0.5, 0.5),
                    (6.0, 0.2, 0.7),
                    (11.0, 0.2, 0.7),
                    (12.0, 0.6, 0.3),
                )
            ),
        ),
        speech=("The page only changes when I move the mouse, otherwise the recorder sends nothing at all.",),
        variable_rate=True,
    ),
    Case(
        "phone-portrait.mov",
        "An iPhone recording held upright: HEVC 10-bit (yuv420p10le) stored 960x540 with a display "
        "matrix that turns it 90 degrees, so people see a 540x960 portrait picture.",
        screen=_pages((MOBILE_HOME, 5.0), (MOBILE_MENU, 4.0), width=540, height=960, fps=30),
        speech=("On my phone the menu opens from the left side, which I did not expect.",),
        container="mov",
        video_codec="hevc-10bit",
        rotation=90,
        expect=Expect(sizes=((540, 960),)),
    ),
    Case(
        "odd-size.webm",
        "A VP9 WebM of odd dimensions (853x479), as a browser tab captured at an uneven size gives.",
        screen=_pages((RESULTS, 5.0), (ARTICLE, 4.0), width=853, height=479),
        speech=("The search results look fine, and the first article is the one I wanted.",),
        container="webm",
        video_codec="vp9",
        expect=Expect(sizes=((853, 479),)),
    ),
    Case(
        "yuv444-odd.mp4",
        "H.264 High 4:4:4 (yuv444p) at 1365x767: a desktop recorder keeping full colour at an odd size.",
        screen=_pages((ACCOUNT, 5.0), (HOME, 4.0), width=1365, height=767),
        speech=("My account page shows the last three orders and my saved address.",),
        expect=Expect(sizes=((1365, 767),)),
        video_codec="h264-444",
    ),
    Case(
        "no-audio.mp4",
        "A screen recording whose microphone failed: no audio stream at all.",
        screen=SHOP,
        audio="none",
        expect=Expect(missing={"transcript": "no audio stream"}),
    ),
    Case(
        "audio-only.m4a",
        "The microphone only: AAC in an MP4 container without a video stream.",
        speech=("I could not share my screen, so I will just describe what I see on the page.",),
        container="mp4",
        expect=Expect(missing={"frames": "no video stream"}),
    ),
    Case(
        "silent-audio.mp4",
        "A recording with an audio track that holds only faint room tone: nothing is said.",
        screen=SITE,
        audio="silence",
    ),
    Case(
        "late-speech.mp4",
        "Speech that starts after forty seconds of silence: the user reads before saying anything.",
        screen=_pages((ARTICLE, 40.0), (ACCOUNT, 8.0)),
        speech=(40.0, "Sorry, I was reading. I would now like to open my account settings."),
    ),
    Case(
        "late-audio.mp4",
        "The audio stream starts 2.5 s after the video (the microphone joined late): transcript times "
        "must still line up with the video.",
        screen=SITE,
        speech=("The audio started a little late, but the words should still line up with the video.",),
        audio_delay=2.5,
    ),
    Case(
        "mediarecorder.webm",
        "What a browser's MediaRecorder writes: WebM with VP9 and Opus, written live, so the header "
        "has no duration and the file no index.",
        screen=SITE,
        speech=("This was recorded in the browser, and the file has no duration in its header.",),
        container="webm",
        video_codec="vp9",
    ),
    Case(
        "mediarecorder-fragmented.mp4",
        "Fragmented MP4 (an empty moov, then moof and mdat fragments), as MediaRecorder writes MP4.",
        screen=SHOP,
        speech=("Safari saved this recording as a fragmented file, one piece after another.",),
        container="fragmented-mp4",
    ),
    Case(
        "moov-at-end.mp4",
        "An MP4 whose index (moov) comes after the media data, as recorders write when they finish.",
        screen=SITE,
        speech=("The recorder wrote the index at the very end of the file when I stopped it.",),
        container="mp4-moov-at-end",
    ),
    Case(
        "sixty-fps.mp4",
        "60 frames per second, with two smooth scrolls.",
        screen=Screen(
            (Scroll(LONG_ARTICLE, 3, 12.0, (Move(3.0, 1.0, 0.0, 0.2), Move(7.0, 1.5, 0.2, 0.45))),),
            fps=60,
        ),
        speech=("Let me scroll down this long page to find the return policy.",),
    ),
    Case(
        "truncated.mp4",
        "The first 55 % of a recording's bytes (index at the front): the index promises more than the file holds.",
        screen=SITE,
        speech=("This recording was cut off in the middle, so most of it is missing.",),
        damage="truncate",
        expect=Expect(status="failed", error="truncated"),
    ),
    Case(
        "damaged-middle.mp4",
        "One 4 KiB chunk in the middle of the media data overwritten with random bytes: a few packets are "
        "damaged, everything around them decodes.",
        screen=_pages(
            (HOME, 20.0), (RESULTS, 20.0), (ARTICLE, 20.0), (ACCOUNT, 20.0), (CART, 20.0), (CONFIRM, 20.0)
        ),
        speech=(
            "First I look at the home page and the main offers.",
            16.0,
            "The search results come next, sorted by price.",
            16.0,
            "I open an article about the new garden furniture.",
            16.0,
            "Then I check my account to see if the order is there.",
            16.0,
            "The basket still holds the two chairs from yesterday.",
            16.0,
            "And here is the confirmation, so I am done with the task.",
        ),
        damage="chunk",
        expect=Expect(lost=True),
    ),
    Case(
        "phone-turned.mp4",
        "A phone screen recording turned mid-way: H.264 in MP4 whose picture changes from 540x960 to "
        "960x540 at 6 s (new sequence headers in the stream).",
        screen=_pages((MOBILE_HOME, 6.0), width=540, height=960, fps=30),
        resize=_pages((MOBILE_MENU, 6.0), width=960, height=540, fps=30),
        speech=("I will turn my phone on its side, because the table is easier to read that way.",),
        expect=Expect(sizes=((540, 960), (960, 540))),
    ),
    Case(
        "window-resized.webm",
        "A browser window resized during a WebM capture: VP9 frames change from 1280x720 to 1024x640 at 6 s.",
        screen=_pages((HOME, 6.0)),
        resize=_pages((RESULTS, 6.0), width=1024, height=640),
        speech=("I will make the window smaller so that I can see my notes next to it.",),
        container="webm",
        video_codec="vp9",
        expect=Expect(sizes=((1280, 720), (1024, 640))),
    ),
    Case(
        "offset-10s.mkv",
        "Matroska whose timestamps start at 10 s (a recorder that kept its clock running).",
        screen=SITE,
        speech=("My recorder keeps its own clock, so the times in this recording begin late.",),
        container="mkv",
        timestamp_offset=10.0,
    ),
    Case(
        "obs.ts",
        "MPEG-TS as OBS records it: H.264 and AAC, timestamps from 1.4 s, durations only estimated.",
        screen=SITE,
        speech=("I recorded this with the streaming software, straight into a transport stream.",),
        container="mpegts",
    ),
    Case(
        "two-audio-tracks.mp4",
        "Two audio tracks: system audio first (silent), the microphone second.",
        screen=SHOP,
        speech=("My voice is on the second audio track, the first one is the computer sound.",),
        silent_track_first=True,
        expect=Expect(audio_stream=2),
    ),
    Case(
        "webcam-first.mp4",
        "A 320x240 webcam stream before the 1280x720 screen stream, then the audio.",
        screen=SHOP,
        speech=("The camera shows my face, but the screen is what you should look at.",),
        webcam=True,
        expect=Expect(video_stream=1, sizes=((1280, 720),)),
    ),
    Case(
        "pointer-only.mp4",
        "One page, only the mouse pointer moves, all the time.",
        screen=_pages(
            (ACCOUNT, 12.0),
            pointer=Pointer(
                tuple((t, 0.15 + 0.07 * (t % 9), 0.2 + 0.05 * ((3 * t) % 13)) for t in range(0, 14))
            ),
        ),
        speech=("I keep moving the mouse around, but I am still on the same page.",),
    ),
    Case(
        "scrolling.mp4",
        "A long article scrolled down three times, with pauses to read between the scrolls.",
        screen=Screen(
            (
                Scroll(
                    LONG_ARTICLE,
                    3,
                    16.0,
                    (Move(3.0, 1.2, 0.0, 0.15), Move(7.0, 0.8, 0.15, 0.32), Move(11.0, 2.0, 0.32, 0.6)),
                ),
            ),
            pointer=Pointer(((0.0, 0.8, 0.5), (16.0, 0.8, 0.5))),
        ),
        speech=("I scroll down a bit, read, and then scroll again to the next part of the story.",),
    ),
    Case(
        "similar-pages.mp4",
        "Navigations between similar white pages of one site (same header, different lines), with a "
        "small animated banner in the corner that never stops moving.",
        screen=_pages(
            (HOME, 4.0),
            (RESULTS, 4.0),
            (ARTICLE, 4.0),
            (ACCOUNT, 4.0),
            (HOME, 3.0),
            videos=(InPageVideo(0.8, 0.12, 0.16, 0.1, 0.0, 19.0),),
        ),
        speech=("All the pages on this website look very similar to me.",),
    ),
    Case(
        "video-in-page.mp4",
        "A product video plays inside the page (with its own cuts at 4 and 7 s: to a still title card "
        "and back) while the pointer moves; at 12 s, with the video still playing, the user navigates "
        "to another page.",
        screen=_pages(
            (HOME, 12.0),
            (ACCOUNT, 5.0),
            pointer=Pointer(((0.0, 0.2, 0.6), (4.0, 0.4, 0.5), (8.0, 0.3, 0.8), (11.5, 0.5, 0.5))),
            videos=(InPageVideo(0.52, 0.2, 0.4, 0.4, 0.0, 12.0, (4.0, 7.0)),),
        ),
        speech=("The video on the home page plays by itself, and I watch it for a while.",),
    ),
    Case(
        "spanish.mp4",
        "Spanish speech: the bundled English-only model cannot detect the language or transcribe it "
        "well; the session still ends done with a transcript.",
        screen=SITE,
        speech=("Estoy buscando el precio del plan básico, pero no lo encuentro en esta página.",),
        voice="es",
        language="es",
    ),
    Case(
        "abandoned-4s.mp4",
        "A session abandoned after 4 seconds: one page, room tone, nothing said.",
        screen=_pages((HOME, 4.0)),
        audio="silence",
    ),
    Case(
        "error-page.mp4",
        "Not media at all: the XML error document of a storage service saved as the video.",
        raw=(
            b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            b"<Message>Request has expired</Message><RequestId>7Q4ZJ9M2</RequestId></Error>\n"
        ),
        audio="none",
        expect=Expect(status="failed", error="cannot read the container"),
    ),
)
