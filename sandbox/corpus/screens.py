"""What a corpus recording shows: screen "pages", navigations, scrolling, a pointer, a video in the page.

A :class:`Screen` is a timeline of :class:`Still` pages and :class:`Scroll` gestures over a tall page,
with a moving pointer and a video playing inside the page laid over it. It renders to one ffmpeg
filter graph (``color``/``drawbox``/``crop``/``overlay``, no fonts needed) and it knows its own truth:
:meth:`Screen.changes` lists when the view changes (a navigation to another page, a scroll to another
part of the page), which the scene-detection benchmark and the end-to-end tests check against. The
pointer and the video in the page are distractors: they move, but the page the user sees does not
change, so they are never in that list.

Pages are :class:`sandbox.media.clips.Slide` objects (boxes placed as fractions of the frame); the
helpers here draw web-like pages with a header and grey "text lines", so that two pages of the same
site differ only in their lines, as real navigations between similar white pages do.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from sandbox.media.clips import Box, Slide

HEADER = 0.09  # height of a page's header bar, as a fraction of the page
LINE = 0.02  # height of a text line
LINE_GAP = 0.042  # distance between two text lines


def text_page(
    name: str, seed: int, *, header: str = "0x2b5797", background: str = "white", tall: int = 1
) -> Slide:
    """A white page of a site: the site's header bar, paragraphs of grey text lines, a picture box.

    ``seed`` decides the paragraphs; two pages with the same header and different seeds look alike,
    the way two pages of one site do. ``tall`` pages (2, 3, ...) are that many screens high, to scroll.
    """
    rng = random.Random(seed)
    boxes = [Box(0, 0, 1, HEADER / tall, header)]
    y = (HEADER + 0.06) / tall
    picture_at = rng.randrange(2, 5)
    paragraph = 0
    while y < 1 - 0.1 / tall:
        lines = rng.randrange(2, 6)
        for _ in range(lines):
            if y >= 1 - 0.1 / tall:
                break
            boxes.append(Box(0.06, y, rng.uniform(0.35, 0.6), LINE / tall, "0x5a5a5a"))
            y += LINE_GAP / tall
        paragraph += 1
        if paragraph % picture_at == 0:
            boxes.append(
                Box(0.7, y - 0.12 / tall, 0.24, 0.2 / tall, rng.choice(("0xdedede", "0xc9d9ea", "0xe6dcc8")))
            )
        y += 0.05 / tall
    return Slide(name, background, tuple(boxes))


@dataclass(frozen=True)
class Still:
    """``page`` on screen, unchanged, for ``seconds``."""

    page: Slide
    seconds: float


@dataclass(frozen=True)
class Move:
    """One scroll gesture: the view's top goes from ``start`` to ``end`` (fractions of the tall page)
    between ``at`` and ``at + seconds`` of its :class:`Scroll` segment, at a constant speed."""

    at: float
    seconds: float
    start: float
    end: float


@dataclass(frozen=True)
class Scroll:
    """A ``page`` that is ``page_screens`` screens tall, viewed one screen at a time for ``seconds``,
    with the view moved by ``moves`` (in time order, not overlapping)."""

    page: Slide
    page_screens: int
    seconds: float
    moves: tuple[Move, ...]


Segment = Still | Scroll


@dataclass(frozen=True)
class Pointer:
    """A mouse pointer (a small dark box) moving through ``path``: ``(time, x, y)`` points, x and y as
    fractions of the screen, in straight lines between them; it rests at the last point."""

    path: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class InPageVideo:
    """A video playing inside the page from ``start`` to ``end`` seconds, in the box ``x, y, w, h``
    (fractions of the screen). ``cuts`` are the times (from ``start``) at which the video itself cuts
    to another picture: a promotional video's own edits, which are not a change of page."""

    x: float
    y: float
    w: float
    h: float
    start: float
    end: float
    cuts: tuple[float, ...] = ()


@dataclass(frozen=True)
class Change:
    """A change of what the user sees: a navigation (at one instant), a scroll (over a span), or a
    resize (the picture's size changes: a phone turned, a window resized)."""

    start: float
    end: float
    kind: str  # "navigation", "scroll" or "resize"


@dataclass(frozen=True)
class Screen:
    """A screen recording's picture: ``segments`` back to back, with overlays, at one size and rate."""

    segments: tuple[Segment, ...]
    width: int = 1280
    height: int = 720
    fps: int = 25
    pointer: Pointer | None = None
    videos: tuple[InPageVideo, ...] = field(default=())

    @property
    def seconds(self) -> float:
        return round(sum(s.seconds for s in self.segments), 6)

    def stretched(self, seconds: float) -> Screen:
        """The same screen with its last segment lengthened so the whole lasts ``seconds``."""
        *head, last = self.segments
        extra = seconds - self.seconds
        if extra < -1e-9:
            raise ValueError(f"the screen lasts {self.seconds} s, longer than {seconds} s")
        longer = Still(last.page, last.seconds + extra) if isinstance(last, Still) else _longer(last, extra)
        return Screen((*head, longer), self.width, self.height, self.fps, self.pointer, self.videos)

    def changes(self) -> list[Change]:
        """Every change of view, in time order: page to other page, and each scroll gesture."""
        found: list[Change] = []
        at, previous = 0.0, None
        for segment in self.segments:
            if previous is not None and segment.page != previous:
                found.append(Change(round(at, 3), round(at, 3), "navigation"))
            if isinstance(segment, Scroll):
                found += [
                    Change(round(at + m.at, 3), round(at + m.at + m.seconds, 3), "scroll")
                    for m in segment.moves
                ]
            previous = segment.page
            at += segment.seconds
        return found

    def video_cuts(self) -> list[float]:
        """When a video playing inside the page cuts to another picture (no change of page)."""
        return sorted(round(video.start + cut, 3) for video in self.videos for cut in video.cuts)

    def graph(self, label: str = "v") -> str:
        """An ffmpeg filter graph (no inputs) whose output pad ``[label]`` is this screen."""
        chains = [f"{_segment(s, self)}[p{i}]" for i, s in enumerate(self.segments)]
        joined = "".join(f"[p{i}]" for i in range(len(self.segments)))
        chains.append(f"{joined}concat=n={len(self.segments)}:v=1:a=0[base]")
        current = "base"
        for i, video in enumerate(self.videos):
            chains.append(f"{_in_page_video(video, self)}[iv{i}]")
            x, y = round(video.x * self.width), round(video.y * self.height)
            enable = f"between(t\\,{video.start}\\,{video.end - 0.001})"
            chains.append(f"[{current}][iv{i}]overlay=x={x}:y={y}:enable='{enable}':eof_action=pass[o{i}]")
            current = f"o{i}"
        if self.pointer is not None:
            chains.append(
                f"color=c=0x202020:s={_even(self.width / 90)}x{_even(self.width / 60)}:r={self.fps}[ptr]"
            )
            x = _piecewise([(t, px * self.width) for t, px, _ in self.pointer.path])
            y = _piecewise([(t, py * self.height) for t, _, py in self.pointer.path])
            chains.append(f"[{current}][ptr]overlay=x='{x}':y='{y}':eval=frame:shortest=1[ptrd]")
            current = "ptrd"
        chains.append(f"[{current}]format=yuv420p[{label}]")
        return ";".join(chains)


def _longer(scroll: Scroll, extra: float) -> Scroll:
    return Scroll(scroll.page, scroll.page_screens, scroll.seconds + extra, scroll.moves)


def _segment(segment: Segment, screen: Screen) -> str:
    if isinstance(segment, Still):
        return segment.page.filter(screen.width, screen.height, segment.seconds, screen.fps)
    tall = screen.height * segment.page_screens
    page = segment.page.filter(screen.width, tall, segment.seconds, screen.fps)
    points = [(0.0, 0.0)]
    for move in segment.moves:
        points += [(move.at, move.start * tall), (move.at + move.seconds, move.end * tall)]
    return f"{page},crop={screen.width}:{screen.height}:0:'{_piecewise(points)}'"


def _in_page_video(video: InPageVideo, screen: Screen) -> str:
    """The video's picture: ffmpeg's moving test pattern, cut to bars and back at each of ``cuts``."""
    w, h = _even(video.w * screen.width), _even(video.h * screen.height)
    bounds = [0.0, *video.cuts, video.end - video.start]
    parts = []
    for i in range(len(bounds) - 1):
        source = "testsrc2" if i % 2 == 0 else "smptehdbars"
        parts.append(f"{source}=s={w}x{h}:r={screen.fps}:d={bounds[i + 1] - bounds[i]:.3f}[ivp{i}]")
    if len(parts) == 1:
        return parts[0].rsplit("[", 1)[0]
    inputs = "".join(f"[ivp{i}]" for i in range(len(parts)))
    return ";".join(parts) + f";{inputs}concat=n={len(parts)}:v=1:a=0"


def _piecewise(points: list[tuple[float, float]]) -> str:
    """An ffmpeg expression of ``t`` through ``(time, value)`` points, linear between them and flat
    outside. Commas are escaped for use inside a filter graph."""
    expression = f"{points[-1][1]:.2f}"
    for (t0, v0), (t1, v1) in reversed(list(itertools.pairwise(points))):
        segment = f"{v1:.2f}" if t1 <= t0 else f"{v0:.2f}+({v1 - v0:.2f})*(t-{t0:.3f})/{t1 - t0:.3f}"
        expression = f"if(lt(t\\,{t1:.3f})\\,{segment}\\,{expression})"
    return f"if(lt(t\\,{points[0][0]:.3f})\\,{points[0][1]:.2f}\\,{expression})"


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)
