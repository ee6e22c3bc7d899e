"""What the committed test clips contain: the spoken text, the pauses and the "slides" on screen.

Everything the manifest promises (text, cut times) is decided here, before any encoding, so the
generator can check the encoded files against it instead of trusting its own output. The slides are
flat coloured boxes drawn with ffmpeg's color/drawbox/testsrc2 sources, because drawtext depends on
fonts the machine may not have; each looks like a different page of a shop so that consecutive slides
differ strongly and scene detection finds exactly the intended cuts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

FPS = 25
KEYFRAME_INTERVAL = 2 * FPS  # frames: one keyframe every two seconds, as screen recorders do
LEAD_SECONDS = 0.5  # silence before the first word, so no word is clipped by AAC priming
TAIL_SECONDS = 0.5  # silence after the last word


@dataclass(frozen=True)
class Box:
    """A filled rectangle; position and size are fractions of the frame, so slides scale."""

    x: float
    y: float
    w: float
    h: float
    colour: str


@dataclass(frozen=True)
class Slide:
    """One full-screen picture: a background with boxes, or ffmpeg's moving test pattern."""

    name: str
    background: str = ""
    boxes: tuple[Box, ...] = ()
    moving_pattern: bool = False

    def filter(self, width: int, height: int, seconds: float, fps: int = FPS) -> str:
        """An ffmpeg filter chain that produces this slide for ``seconds`` at ``width``x``height``."""
        size = f"s={width}x{height}:r={fps}:d={seconds:.2f}"
        if self.moving_pattern:
            return f"testsrc2={size},format=yuv420p"
        chain = [f"color=c={self.background}:{size}", "format=yuv420p"]
        for box in self.boxes:
            x, w = round(box.x * width), round(box.w * width)
            y, h = round(box.y * height), round(box.h * height)
            chain.append(f"drawbox=x={x}:y={y}:w={w}:h={h}:color={box.colour}:t=fill")
        return ",".join(chain)


CART = Slide(
    "cart",
    "0xf2f2f2",
    (
        Box(0, 0, 1, 0.13, "0x1f3a93"),
        Box(0.06, 0.2, 0.58, 0.18, "0xc8c8c8"),
        Box(0.06, 0.44, 0.58, 0.18, "0xc8c8c8"),
        Box(0.7, 0.2, 0.24, 0.42, "0xcfe3ff"),
        Box(0.7, 0.72, 0.24, 0.12, "0x1565c0"),
    ),
)
MODAL = Slide(
    "modal",
    "0x333333",
    (Box(0.25, 0.2, 0.5, 0.6, "0xffffff"), Box(0.55, 0.66, 0.16, 0.09, "0xff8c00")),
)
FORM = Slide(
    "form",
    "0xfff1c9",
    (
        Box(0, 0, 1, 0.13, "0x1b5e20"),
        Box(0.1, 0.22, 0.8, 0.1, "0xffffff"),
        Box(0.1, 0.38, 0.8, 0.1, "0xffffff"),
        Box(0.1, 0.54, 0.38, 0.1, "0xffffff"),
        Box(0.52, 0.54, 0.38, 0.1, "0xffffff"),
        Box(0.1, 0.74, 0.3, 0.12, "0x2e7d32"),
    ),
)
DELIVERY = Slide(
    "delivery",
    "0xd7f0dd",
    (
        Box(0.08, 0.15, 0.84, 0.2, "0xffffff"),
        Box(0.08, 0.4, 0.84, 0.2, "0xffffff"),
        Box(0.1, 0.2, 0.05, 0.1, "0x00897b"),
        Box(0.08, 0.72, 0.3, 0.12, "0x6a1b9a"),
    ),
)
PAYMENT = Slide(
    "payment",
    "0x1e2a4a",
    (
        Box(0.2, 0.18, 0.6, 0.42, "0xf5f5f5"),
        Box(0.25, 0.3, 0.5, 0.08, "0x9e9e9e"),
        Box(0.35, 0.7, 0.3, 0.13, "0x43a047"),
    ),
)
CONFIRM = Slide("confirm", "0x2e7d32", (Box(0.4, 0.28, 0.2, 0.36, "0xffffff"),))
VIDEO = Slide("video", moving_pattern=True)

Part = str | float  # a sentence to speak, or a pause in seconds


@dataclass(frozen=True)
class Clip:
    """One committed media file as designed.

    ``slides`` pairs each slide with how long it shows; in a clip with speech the last slide stays
    up until the speech (plus the lead and tail silences) ends. No slides means no video stream;
    no parts means no audio stream.
    """

    file: str
    description: str
    parts: tuple[Part, ...] = ()
    slides: tuple[tuple[Slide, float], ...] = ()

    @property
    def text(self) -> str | None:
        """The words spoken, in order, as one string (None when nothing is said)."""
        sentences = [part for part in self.parts if isinstance(part, str)]
        return " ".join(sentences) if sentences else None


def fill(slides: tuple[tuple[Slide, float], ...], seconds: float) -> tuple[tuple[Slide, float], ...]:
    """The slides with the last one stretched so that together they last ``seconds``.

    Every duration must be a whole number of frames, or the cut would land between two frames.
    """
    if any(abs(d * FPS - round(d * FPS)) > 1e-6 for d in (seconds, *(d for _, d in slides))):
        raise ValueError(f"slide durations must be multiples of 1/{FPS} s")
    shown = sum(duration for _, duration in slides[:-1])
    last, minimum = slides[-1]
    if seconds - shown < minimum - 1e-9:
        raise ValueError(f"{seconds:.2f} s is too short for these slides")
    return (*slides[:-1], (last, round(seconds - shown, 2)))


def cut_times(slides: tuple[tuple[Slide, float], ...]) -> list[float]:
    """When the picture changes: each boundary between two different slides, in seconds."""
    cuts, start = [], 0.0
    for (before, duration), (after, _) in itertools.pairwise(slides):
        start += duration
        if before != after:
            cuts.append(round(start, 2))
    return cuts


SPEECH_1 = Clip(
    "speech-1.mp4",
    "A user on the cart page of a shop: four slides (cart, dialog, moving test pattern, payment).",
    (
        "Okay, I am on the checkout page now. I can see my cart with two items, and the total "
        "price is at the bottom. I will click the blue button to continue.",
    ),
    ((CART, 3.0), (MODAL, 3.0), (VIDEO, 3.0), (PAYMENT, 1.0)),
)
SPEECH_2 = Clip(
    "speech-2.mp4",
    "A user filling in a shipping form, with a two-second pause mid-way: four slides.",
    (
        "First I need to type my shipping address. The form asks for my street, my city, and my zip code.",
        2.0,
        "Now I am looking at the delivery options. I would pick the free one.",
    ),
    ((FORM, 4.0), (DELIVERY, 4.0), (CART, 3.0), (MODAL, 1.0)),
)
SPEECH_3 = Clip(
    "speech-3.mp4",
    "A user paying and seeing the order confirmation: four slides.",
    (
        "The payment page looks simple. I will pay with my credit card. It was easy to find the "
        "place order button, and I got a confirmation email right away.",
    ),
    ((PAYMENT, 2.4), (VIDEO, 3.0), (CONFIRM, 3.0), (DELIVERY, 1.0)),
)
NO_AUDIO = Clip(
    "no-audio.mp4",
    "Video only (no audio stream), as when a recording's microphone failed: three slides, 6 s.",
    slides=((DELIVERY, 2.0), (PAYMENT, 2.0), (CONFIRM, 2.0)),
)
AUDIO_ONLY = Clip(
    "audio-only.mp4",
    "AAC audio only in an MP4 container (no video stream): one spoken sentence pair.",
    ("Thanks, that was the whole task. I have no more comments.",),
)

SPEECH_CLIPS = (SPEECH_1, SPEECH_2, SPEECH_3)
ENCODED_CLIPS = (*SPEECH_CLIPS, NO_AUDIO, AUDIO_ONLY)

EMPTY_FILE = "empty.mp4"
EMPTY_DESCRIPTION = "Zero bytes: a download that produced nothing."
CORRUPT_FILE = "corrupt.mp4"
CORRUPT_SOURCE = SPEECH_1.file
CORRUPT_DESCRIPTION = (
    f"The bytes of {CORRUPT_SOURCE} with the moov atom's type and contents overwritten by seeded "
    "random bytes: the header survives but no decoder can find the index, so opening it fails."
)
