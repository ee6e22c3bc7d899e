"""Probe a session video and extract, in one decode, Whisper's audio and the dataset's frames.

``probe`` reads the container header with PyAV (imageio-ffmpeg ships no ffprobe). ``extract`` runs one
ffmpeg process that decodes the video once and writes, as asked:

- ``audio.wav``: 16 kHz mono PCM s16le, which is what Whisper expects. Its time 0 is the video's
  time 0 (a late-starting audio track is padded with silence), so transcript times line up with
  frame times.
- ``frames/interval_SSSSSS.mmm.jpg``: the picture on screen every ``1 / frame_rate`` seconds.
- ``frames/scene_SSSSSS.mmm.jpg``: every frame whose scene score beats ``scene_threshold``.

File names carry the frame's presentation time in seconds from the start of the file. The times
come from ffmpeg's per-packet encoder statistics, not from arithmetic on the requested rate, so
they hold for variable frame rate recordings too.

ffmpeg can exit 0 with a short or empty result (a file cut off at a packet boundary reads as a
clean end of file), so every extraction is checked afterwards against the probed stream lengths.
Nothing here imports Prefect: the pipeline wraps these functions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import av.logging
import ffmpeg
import imageio_ffmpeg
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.stream import Disposition, Stream
from av.video.stream import VideoStream

SAMPLE_RATE = 16_000  # Whisper's input rate
JPEG_QUALITY = 3  # mjpeg -q:v, from 2 (best) to 31 (worst)
# The output's length may differ from the header's by the AAC priming and padding (about 20 ms) and
# by rounding; a cut-off file misses whole seconds.
LENGTH_TOLERANCE = 0.1  # seconds
# Frame times go through the encoder's time base. ffmpeg's default is 1 / the average frame rate,
# which moves variable frame rate timestamps onto a grid; milliseconds are exact enough for names.
FRAME_TIME_BASE = "1:1000"
STDERR_LINES = 3  # how much of ffmpeg's complaint a MediaError carries

FrameKind = Literal["interval", "scene"]
KINDS: tuple[FrameKind, ...] = ("interval", "scene")

# ffmpeg's closing remarks after a failure, which repeat what the lines before them said.
_NOISE = re.compile(r"Conversion failed!|Terminating thread with return code|Task finished with error code")
_CONTEXT_ADDRESS = re.compile(r" @ 0x[0-9a-f]+\]")
_PYAV_LOG_LEVEL = threading.Lock()
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame, not DHT/JPG/DAC


class MediaError(Exception):
    """The media cannot be probed or extracted; the message is meant for the operator's failure record."""


@dataclass(frozen=True)
class VideoInfo:
    """The video stream that ``extract`` reads; ``width`` and ``height`` are before any display rotation."""

    index: int  # the stream's index in the container
    codec: str
    width: int
    height: int
    fps: float | None  # average rate; None when the container does not say
    frames: int | None  # frame count from the header; None when unknown
    start: float  # seconds after the container's start
    duration: float | None


@dataclass(frozen=True)
class AudioInfo:
    """The audio stream that ``extract`` reads."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    start: float
    duration: float | None


@dataclass(frozen=True)
class MediaInfo:
    """What the container header says about a file; nothing is decoded."""

    format: str  # PyAV's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration: float | None  # seconds; None when the container does not say (e.g. live WebM)
    size: int  # bytes
    video: VideoInfo | None
    audio: AudioInfo | None


@dataclass(frozen=True)
class FrameInfo:
    """One extracted JPEG. ``timestamp`` is seconds from the start of the file."""

    path: Path
    timestamp: float
    kind: FrameKind
    width: int
    height: int


@dataclass(frozen=True)
class Extraction:
    """What ``extract`` wrote, and what it probed of the input. ``seconds`` is the wall time, for metrics."""

    info: MediaInfo
    audio: Path | None
    audio_duration: float | None
    frames: list[FrameInfo]
    seconds: float


def ffmpeg_binary(configured: str | None) -> str:
    """The ffmpeg to run: ``configured`` (a path or a name on PATH) if set, else imageio-ffmpeg's own.

    A configured binary that is missing fails here, naming it, rather than as an obscure error
    from the first video.
    """
    if configured is None:
        return imageio_ffmpeg.get_ffmpeg_exe()
    found = shutil.which(configured)
    if found is None:
        raise MediaError(f"configured ffmpeg {configured!r} is not an executable file")
    return found


def probe(path: Path) -> MediaInfo:
    """Read ``path``'s container header: format, duration, size, and its first video and audio stream.

    A cover picture (an attached-picture stream) is not the video. Raises MediaError for an empty
    file, a container PyAV cannot read, and a file with neither audio nor video.
    """
    size = path.stat().st_size
    if size == 0:
        raise MediaError("empty file (0 bytes)")
    # PyAV keeps FFmpeg's log quiet by default, and then its exceptions carry only the generic
    # error code ("Invalid data found ..."); with logging on, they also carry the demuxer's reason
    # ("moov atom not found"). Capture keeps that log out of the application's own logging.
    # The level is process-wide: the lock keeps concurrent probes from restoring each other's setting.
    with _PYAV_LOG_LEVEL:
        level = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)
        try:
            with av.logging.Capture(), av.open(str(path)) as container:
                return _media_info(container, size)
        except av.FFmpegError as exc:
            reason = exc.strerror or str(exc)
            if exc.log and exc.log[2].strip():
                reason = f"{exc.log[2].strip()} ({reason})"
            raise MediaError(f"cannot read the container: {reason}") from exc
        finally:
            av.logging.set_level(level)


def _media_info(container: InputContainer, size: int) -> MediaInfo:
    # ffmpeg shifts its outputs so that the container's start is 0: stream times are kept relative to it.
    origin = container.start_time / av.time_base if container.start_time is not None else 0.0
    videos = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    audios = container.streams.audio
    if not videos and not audios:
        raise MediaError("no audio or video stream")
    return MediaInfo(
        format=container.format.name,
        duration=container.duration / av.time_base if container.duration is not None else None,
        size=size,
        video=_video_info(videos[0], origin) if videos else None,
        audio=_audio_info(audios[0], origin) if audios else None,
    )


def _video_info(stream: VideoStream, origin: float) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        index=stream.index,
        codec=stream.codec_context.name,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        fps=float(rate) if rate else None,
        frames=stream.frames or None,
        start=_start(stream, origin),
        duration=_duration(stream),
    )


def _audio_info(stream: AudioStream, origin: float) -> AudioInfo:
    return AudioInfo(
        index=stream.index,
        codec=stream.codec_context.name,
        sample_rate=stream.codec_context.sample_rate,
        channels=stream.codec_context.channels,
        start=_start(stream, origin),
        duration=_duration(stream),
    )


def _start(stream: Stream, origin: float) -> float:
    return float(stream.start_time * stream.time_base) - origin if stream.start_time is not None else 0.0


def _duration(stream: Stream) -> float | None:
    return float(stream.duration * stream.time_base) if stream.duration else None


def extract(
    video: Path,
    out_dir: Path,
    *,
    frame_rate: float = 1.0,
    scene_threshold: float = 0.2,
    want_audio: bool = True,
    want_frames: bool = True,
    ffmpeg: str | None = None,
) -> Extraction:
    """Write ``out_dir/audio.wav`` and/or ``out_dir/frames/*.jpg`` from one decode of ``video``.

    Those outputs belong to this function: an existing ``audio.wav`` or ``frames/`` is replaced, and
    a failed extraction removes what it wrote, so partial output never passes for a result.
    ``scene_threshold`` is ffmpeg's scene score (0 to 1) a frame must exceed to count as a cut.
    ``ffmpeg`` is the configured binary (see ``ffmpeg_binary``). Raises MediaError with the message the
    pipeline records: "no audio stream" / "no video stream" when a wanted stream is missing, ffmpeg's
    last error lines when it fails, or what is wrong with an output that ffmpeg reported as fine.
    """
    if not (want_audio or want_frames):
        raise ValueError("nothing to extract: want_audio and want_frames are both False")
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    if not 0 < scene_threshold < 1:
        raise ValueError(f"scene_threshold must be between 0 and 1, got {scene_threshold}")
    started = time.monotonic()
    binary = ffmpeg_binary(ffmpeg)
    info = probe(video)
    if want_audio and info.audio is None:
        raise MediaError("no audio stream")
    if want_frames and info.video is None:
        raise MediaError("no video stream")

    out_dir = out_dir.resolve()
    audio: _AudioJob | None = None
    frames: _FramesJob | None = None
    if want_audio and info.audio:
        audio = _AudioJob(info.audio, out_dir / "audio.wav", _stream_end(info.audio, info))
    if want_frames and info.video:
        frames = _FramesJob(info.video, out_dir / "frames", _stream_end(info.video, info), frame_rate)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove(audio, frames)
    try:
        if frames is not None:
            frames.directory.mkdir()
        cmd = _command(binary, video.resolve(), audio, frames, scene_threshold)
        result = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace"
        )
        if result.returncode != 0:
            raise MediaError(f"ffmpeg failed (exit {result.returncode}): {_complaint(result.stderr)}")
        audio_duration = audio.check() if audio is not None else None
        written = frames.collect() if frames is not None else []
    except BaseException:
        _remove(audio, frames)
        raise
    return Extraction(
        info=info,
        audio=audio.wav if audio is not None else None,
        audio_duration=audio_duration,
        frames=written,
        seconds=time.monotonic() - started,
    )


def frames_index(extraction: Extraction, key_prefix: str) -> list[dict[str, Any]]:
    """The entries of ``frames/index.json``: one per frame, in time order, keyed by its object key."""
    return [
        {
            "key": f"{key_prefix}{frame.path.name}",
            "timestamp": frame.timestamp,
            "kind": frame.kind,
            "width": frame.width,
            "height": frame.height,
        }
        for frame in extraction.frames
    ]


def _stream_end(stream: VideoInfo | AudioInfo, info: MediaInfo) -> float | None:
    """Where a stream ends on the output's clock; the container's duration when the stream has none."""
    return stream.start + stream.duration if stream.duration is not None else info.duration


@dataclass(frozen=True)
class _AudioJob:
    """The wav output: how to ask ffmpeg for it and how to check what came back."""

    stream: AudioInfo
    wav: Path
    end: float | None  # where the audio stream ends: the wav's expected duration

    def output(self, source: Any) -> Any:
        # first_pts=0 pads a late audio start with silence, so the wav's 0 is the video's 0.
        audio = source[str(self.stream.index)].filter("aresample", first_pts=0)
        return ffmpeg.output(audio, str(self.wav), acodec="pcm_s16le", ac=1, ar=SAMPLE_RATE)

    def check(self) -> float:
        """The wav's duration, once it is known to be 16 kHz mono s16 and as long as the audio stream."""
        try:
            with wave.open(str(self.wav), "rb") as reader:
                shape = (reader.getframerate(), reader.getnchannels(), reader.getsampwidth())
                duration = reader.getnframes() / reader.getframerate()
        except (OSError, EOFError, wave.Error) as exc:
            raise MediaError(f"ffmpeg reported success but audio.wav is unreadable: {exc}") from exc
        if shape != (SAMPLE_RATE, 1, 2):
            raise MediaError(f"audio.wav is {shape[0]} Hz, {shape[1]} channel(s), {8 * shape[2]}-bit")
        if self.end is not None and abs(duration - self.end) > LENGTH_TOLERANCE:
            raise MediaError(
                f"audio.wav is {duration:.2f} s but the audio stream ends at {self.end:.2f} s: "
                "the file is probably truncated"
            )
        return duration


@dataclass(frozen=True)
class _FramesJob:
    """The two JPEG outputs (interval and scene frames) from one split of the decoded video."""

    stream: VideoInfo
    directory: Path
    end: float | None  # where the video stream ends
    frame_rate: float

    def outputs(self, source: Any, scene_threshold: float) -> list[Any]:
        branches = source[str(self.stream.index)].filter_multi_output("split")
        # round=up keeps, for each tick n / rate, the last frame shown at or before it. The default
        # (near) takes a frame up to half an interval *later*: the next slide, just before a cut.
        interval = branches[0].filter("fps", fps=self.frame_rate, round="up")
        scene = branches[1].filter("select", f"gt(scene,{scene_threshold})")
        return [self._output(interval, "interval"), self._output(scene, "scene")]

    def _output(self, stream: Any, kind: FrameKind) -> Any:
        # image2 expands % anywhere in the path, so the directory's own % signs are escaped.
        pattern = f"{str(self.directory).replace('%', '%%')}/_{kind}_%06d.jpg"
        return ffmpeg.output(
            stream,
            pattern,
            start_number=0,
            fps_mode="passthrough",
            enc_time_base=FRAME_TIME_BASE,
            # One line per JPEG written, in order: its number and its exact presentation time.
            stats_enc_post=str(self._stats(kind)),
            stats_enc_post_fmt="{n} {tb} {pts}",
            **{"q:v": JPEG_QUALITY},
        )

    def _stats(self, kind: FrameKind) -> Path:
        return self.directory / f"_{kind}.stats"

    def collect(self) -> list[FrameInfo]:
        """Name ffmpeg's numbered JPEGs after their times; check the video was read to its end."""
        frames = []
        for kind in KINDS:
            stats = self._stats(kind)
            lines = stats.read_text().splitlines() if stats.exists() else []
            stats.unlink(missing_ok=True)
            numbered = list(self.directory.glob(f"_{kind}_*.jpg"))
            if len(numbered) != len(lines):
                raise MediaError(f"ffmpeg wrote {len(numbered)} {kind} frames but reported {len(lines)}")
            for line in lines:
                number, time_base, pts = line.split()
                timestamp = float(int(pts) * Fraction(time_base))
                path = self.directory / f"{kind}_{timestamp:010.3f}.jpg"
                (self.directory / f"_{kind}_{int(number):06d}.jpg").rename(path)
                width, height = _jpeg_size(path)
                frames.append(
                    FrameInfo(path=path, timestamp=timestamp, kind=kind, width=width, height=height)
                )

        last = max((f.timestamp for f in frames if f.kind == "interval"), default=None)
        if last is None:
            raise MediaError("ffmpeg reported success but wrote no frames")
        # The last tick lies within one interval of the end; earlier means the decode stopped early.
        if self.end is not None and last < self.end - 1 / self.frame_rate - LENGTH_TOLERANCE:
            raise MediaError(
                f"frames stop at {last:.2f} s but the video stream ends at {self.end:.2f} s: "
                "the file is probably truncated"
            )
        return sorted(frames, key=lambda f: (f.timestamp, f.kind))


def _command(
    binary: str, video: Path, audio: _AudioJob | None, frames: _FramesJob | None, scene_threshold: float
) -> list[str]:
    """The single ffmpeg invocation: one input, one decode, a filter graph feeding every output.

    Streams are mapped by the index ``probe`` chose, so ffmpeg reads exactly the probed streams.
    ``-xerror`` turns a decode error (a damaged or cut-off packet) into a failure instead of a gap.
    """
    source = ffmpeg.input(str(video))
    outputs = []
    if audio is not None:
        outputs.append(audio.output(source))
    if frames is not None:
        outputs.extend(frames.outputs(source, scene_threshold))
    command = ffmpeg.merge_outputs(*outputs).global_args(
        "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-xerror"
    )
    return command.overwrite_output().compile(cmd=binary)


def _jpeg_size(path: Path) -> tuple[int, int]:
    """Width and height from a JPEG's start-of-frame header: the size as written, after any rotation."""
    data = path.read_bytes()
    if data[:2] != b"\xff\xd8":
        raise MediaError(f"{path.name} is not a JPEG")
    offset = 2
    while offset + 9 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[offset + 5 : offset + 7], "big")
            width = int.from_bytes(data[offset + 7 : offset + 9], "big")
            return width, height
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    raise MediaError(f"{path.name} has no JPEG frame header")


def _complaint(stderr: str) -> str:
    """ffmpeg's last few distinct error lines, without its closing remarks and memory addresses."""
    lines: list[str] = []
    for raw in stderr.splitlines():
        line = _CONTEXT_ADDRESS.sub("]", raw.strip())
        if line and not _NOISE.search(line) and line not in lines:
            lines.append(line)
    return "; ".join(lines[-STDERR_LINES:]) or "no error message"


def _remove(audio: _AudioJob | None, frames: _FramesJob | None) -> None:
    if audio is not None:
        audio.wav.unlink(missing_ok=True)
    if frames is not None and frames.directory.exists():
        shutil.rmtree(frames.directory)
