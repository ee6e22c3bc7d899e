"""One manifest entry per corpus recording: what it holds and what processing must make of it.

The entry is written from the design (``cases.py``), never from what the pipeline produced, so the
end-to-end test checks the pipeline against the design. Its ``expect`` section is what
``tests/test_corpus.py`` asserts; ``contract`` holds the transcript fields that wait on the transcript
contract (``language``, ``language_probability``, ``language_detected``) landing in
``tasks/media/transcribe.py``: with the bundled English-only model every transcript must say "en", not
detected, whatever was spoken (the Spanish case included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sandbox.corpus.cases import Expect
from sandbox.corpus.screens import Change

# What the bundled English-only model reports once the transcript contract lands.
ENGLISH_ONLY_LANGUAGE = {"language": "en", "language_probability": None, "language_detected": False}


@dataclass(frozen=True)
class Streams:
    """How many video and audio streams a file holds (a webcam stream, a second audio track...)."""

    video: int = 0
    audio: int = 0


def entry(
    description: str,
    *,
    text: str | None,
    language: str,
    seconds: float,
    fps: int | None,
    changes: list[Change] | None,
    expect: Expect,
    streams: Streams,
    size: tuple[int, int] | None = None,
    extra_audio_before: int = 0,
    video_cuts: list[float] | None = None,
    speech_starts: float | None = None,
) -> dict[str, Any]:
    """The manifest entry of one recording.

    ``size`` is the screen's own size, the default for the frames' displayed size;
    ``extra_audio_before`` counts audio streams ahead of the one with speech; ``video_cuts`` are the
    cuts of a video playing inside the page (not changes of page, but a frame-difference detector
    cannot tell: the test allows a scene frame there); ``speech_starts`` is when the first word
    begins, on the file's clock.
    """
    done = expect.status == "done"
    outputs = []
    if done and streams.video:
        outputs.append("frames")
    if done and streams.audio:
        outputs.append("transcript")
    sizes = [list(s) for s in expect.sizes] or ([list(size)] if size and streams.video else [])
    video_stream = expect.video_stream if expect.video_stream is not None else (0 if streams.video else None)
    audio_stream = expect.audio_stream
    if audio_stream is None and streams.audio:
        audio_stream = streams.video + extra_audio_before
    english = language == "en" and bool(text)
    return {
        "description": description,
        "text": text,
        "language": language,
        "duration": round(seconds, 3),
        "fps": fps,
        "streams": {"video": streams.video, "audio": streams.audio},
        "changes": None if changes is None else [[c.start, c.end, c.kind] for c in changes],
        "video_cuts": video_cuts or [],
        "speech_starts": speech_starts,
        "expect": {
            "status": expect.status,
            "outputs": outputs,
            "missing": dict(expect.missing),
            "error": expect.error,
            "sizes": sizes if done else [],
            "video_stream": video_stream if done else None,
            "audio_stream": audio_stream if done else None,
            "lost": expect.lost,
            "wer": english,
        },
        "contract": dict(ENGLISH_ONLY_LANGUAGE) if done and streams.audio else {},
    }
