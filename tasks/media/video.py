"""Probe a session video and extract Whisper's audio and the dataset's frames, as recordings really come.

``probe`` reads the container header with PyAV (imageio-ffmpeg ships no ffprobe) and the first
picture of the screen stream (for its display rotation). ``extract`` runs two ffmpeg processes at
once, one per output, so that a quirk of one stream cannot fail the other (a picture-size change
rebuilds the video filters and used to restart the audio's timestamps when both shared a graph):

- audio: ``audio.wav``, 16 kHz mono PCM s16le, what Whisper expects. Its time 0 is the file's
  time 0 (a late audio track is padded with silence, gaps left by damaged packets are filled), so
  transcript times line up with frame times. A file with several audio tracks gets one wav per
  track, and the track with speech is kept (see ``_choose_audio``).
- frames: ``frames/interval_SSSSSS.mmm.jpg``, the picture on screen every ``1 / frame_rate``
  seconds, and ``frames/scene_SSSSSS.mmm.jpg``: the first picture (the opening scene), then every
  picture whose ffmpeg scene score beats ``scene_threshold``, at most one per ``SCENE_MIN_GAP``
  seconds. A video with no change at all gets exactly one scene frame.

The screen is the video stream with the largest picture (a webcam stream is smaller). Frames come
out the way people saw the screen: ffmpeg applies the display rotation, and when the picture size
changes mid-recording (a phone turned, a window resized) each stretch of one size is extracted on
its own, at its own size, starting a new scene. File names carry each frame's presentation time in
seconds from the start of the file, taken from ffmpeg's per-frame encoder statistics, so they hold
for variable frame rate recordings and for files whose timestamps do not start at zero.

Damage is measured, not guessed: ffmpeg reports per stream how many packets it read and how many
it could not decode, and for containers with an index (MP4/MOV) the decoded length is compared with
what the index promises (a cut-off file). The lost share of each stream must stay within
``max_loss``; otherwise, as for unreadable files, ``extract`` raises MediaError. A missing stream is
no error: it is reported in ``Extraction.missing`` and the other output is still made.
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
import numpy as np
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.stream import Disposition, Stream
from av.video.stream import VideoStream

SAMPLE_RATE = 16_000  # Whisper's input rate
JPEG_QUALITY = 3  # mjpeg -q:v, from 2 (best) to 31 (worst)
# A decoded stream may end short of its index by the AAC priming and padding (about 20 ms) and by
# rounding; a cut-off file misses whole seconds.
LENGTH_TOLERANCE = 0.1  # seconds
# Frame times go through the encoder's time base. ffmpeg's default is 1 / the average frame rate,
# which moves variable frame rate timestamps onto a grid; milliseconds are exact enough for names.
FRAME_TIME_BASE = "1:1000"
# A scroll scores on many consecutive frames; one scene frame per second of it is enough (measured
# with bench/scenes.py: the gap keeps scrolls from producing bursts at any threshold from 0.05 to 0.09).
SCENE_MIN_GAP = 1.0  # seconds
DEFAULT_SCENE_THRESHOLD = 0.07  # ffmpeg's scene score: chosen with bench/scenes.py on the corpus
DEFAULT_MAX_LOSS = 0.02  # share of a stream that damage may cost before the file counts as failed
SILENT_DB = -60.0  # RMS, dBFS: a track this quiet holds no sound (digital silence is -inf)
STABLE_SIZE = 1.0  # seconds a new picture size must last to start its own stretch of frames
SEEK_MARGIN = 0.0005  # seconds: ffmpeg prints times to the microsecond, rounded
STDERR_LINES = 3  # how much of ffmpeg's complaint a MediaError carries

FrameKind = Literal["interval", "scene"]
KINDS: tuple[FrameKind, ...] = ("interval", "scene")
StreamKind = Literal["audio", "video"]

# ffmpeg's closing remarks after a failure, which repeat what the lines before them said.
_NOISE = re.compile(r"Conversion failed!|Terminating thread with return code|Task finished with error code")
_CONTEXT_ADDRESS = re.compile(r" @ 0x[0-9a-f]+\]")
_LEVEL = re.compile(r"\[(panic|fatal|error|warning|info|verbose|debug|trace)\] ")
_DECODE_STATS = re.compile(
    r"Input stream #0:(\d+) \((audio|video)\): (\d+) packets read .*?; (\d+) (?:frames|samples) decoded; "
    r"(\d+) decode errors"
)
_RECONFIGURED = "Reconfiguring filter graph because video parameters changed"
_SHOWINFO = re.compile(r"pts_time:\s*(-?[\d.]+).*? s:(\d+)x(\d+)")
_PYAV_LOG_LEVEL = threading.Lock()
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame, not DHT/JPG/DAC


class MediaError(Exception):
    """The media cannot be probed or extracted; the message is meant for the operator's failure record."""


@dataclass(frozen=True)
class VideoInfo:
    """A video stream. ``width``/``height`` are as displayed (after the rotation); ``coded_*`` as stored."""

    index: int  # the stream's index in the container
    codec: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int  # degrees the picture is turned for display: 0, 90, 180 or 270
    fps: float | None  # average rate; None when the container does not say
    frames: int | None  # frame count from the header; None when unknown
    start: float  # seconds after the container's start
    duration: float | None


@dataclass(frozen=True)
class AudioInfo:
    """An audio stream."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    start: float
    duration: float | None


@dataclass(frozen=True)
class MediaInfo:
    """What the container header says about a file, and the first picture of its screen stream.

    ``indexed`` is True for containers whose header indexes every packet (MP4, MOV): their stream
    durations are exact and promise what the file must hold. Elsewhere (WebM, Matroska, MPEG-TS)
    durations are estimates or absent, and the file holds what it holds.
    """

    format: str  # PyAV's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration: float | None  # seconds; None when the container does not say (e.g. live WebM)
    size: int  # bytes
    videos: tuple[VideoInfo, ...]
    audios: tuple[AudioInfo, ...]
    indexed: bool

    @property
    def video(self) -> VideoInfo | None:
        """The screen: the stream with the largest picture (the first of equals), not a webcam."""
        return max(self.videos, key=lambda v: v.width * v.height, default=None)

    @property
    def video_choice(self) -> str | None:
        """Why ``video`` is the screen, when there are several video streams."""
        if len(self.videos) < 2 or self.video is None:
            return None
        chosen = self.video
        others = ", ".join(f"stream {v.index}: {v.width}x{v.height}" for v in self.videos if v is not chosen)
        return f"stream {chosen.index}: the largest picture ({chosen.width}x{chosen.height}; {others})"

    @property
    def audio(self) -> AudioInfo | None:
        """The first audio stream; ``extract`` listens to every one and keeps the one with speech."""
        return self.audios[0] if self.audios else None

    def promised_end(self, stream: VideoInfo | AudioInfo) -> float | None:
        """Where the index says ``stream`` ends on the output's clock; None where nothing is promised."""
        if not self.indexed or stream.duration is None:
            return None
        return stream.start + stream.duration


@dataclass(frozen=True)
class FrameInfo:
    """One extracted JPEG. ``timestamp`` is seconds from the start of the file; the size is as displayed."""

    path: Path
    timestamp: float
    kind: FrameKind
    width: int
    height: int


@dataclass(frozen=True)
class StreamLoss:
    """What decoding one stream could not read: undecodable packets and a tail the index promised."""

    index: int
    kind: StreamKind
    packets: int
    decode_errors: int
    missing_tail: float  # seconds the index promises beyond what was decoded
    length: float  # seconds: the stream's length, the measure for ``share``

    @property
    def lost_seconds(self) -> float:
        """Undecodable packets at the stream's mean packet duration, plus the missing tail."""
        per_packet = self.length / self.packets if self.packets else 0.0
        return self.decode_errors * per_packet + self.missing_tail

    @property
    def share(self) -> float:
        return self.lost_seconds / self.length if self.length > 0 else 0.0


@dataclass(frozen=True)
class Extraction:
    """What ``extract`` wrote, and what it found. ``seconds`` is the wall time, for metrics.

    ``missing`` names each wanted output ("audio", "frames") the file cannot give, with the reason.
    ``duration`` is the measured length (the decoded audio and video), None when nothing was decoded.
    """

    info: MediaInfo
    audio: Path | None
    audio_duration: float | None
    audio_stream: AudioInfo | None
    audio_choice: str | None  # why that track, when the file has several
    video_stream: VideoInfo | None
    frames: list[FrameInfo]
    missing: dict[str, str]
    losses: list[StreamLoss]
    duration: float | None
    seconds: float

    @property
    def lost_seconds(self) -> float:
        return sum(loss.lost_seconds for loss in self.losses)

    @property
    def decode_errors(self) -> int:
        return sum(loss.decode_errors for loss in self.losses)


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
    """Read ``path``'s container header: format, duration, size and every audio and video stream.

    A cover picture (an attached-picture stream) is not video. Raises MediaError for an empty file,
    a container PyAV cannot read, and a file with neither audio nor video.
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
    screen = max(videos, key=lambda s: s.codec_context.width * s.codec_context.height, default=None)
    rotation = _rotation(container, screen) if screen is not None else 0
    return MediaInfo(
        format=container.format.name,
        duration=container.duration / av.time_base if container.duration is not None else None,
        size=size,
        videos=tuple(_video_info(s, origin, rotation if s is screen else 0) for s in videos),
        audios=tuple(_audio_info(s, origin) for s in audios),
        indexed="mp4" in container.format.name.split(","),
    )


def _rotation(container: InputContainer, stream: VideoStream) -> int:
    """The display rotation of ``stream``'s first picture (its display matrix), in 0/90/180/270.

    PyAV exposes the matrix on decoded frames only, so one picture is decoded; a file whose first
    packets do not decode is taken as unrotated (the extraction then reports the damage).
    """
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                return round(frame.rotation / 90) % 4 * 90
    except av.FFmpegError:
        pass
    return 0


def _video_info(stream: VideoStream, origin: float, rotation: int) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    coded_width, coded_height = stream.codec_context.width, stream.codec_context.height
    turned = rotation in (90, 270)
    return VideoInfo(
        index=stream.index,
        codec=stream.codec_context.name,
        width=coded_height if turned else coded_width,
        height=coded_width if turned else coded_height,
        coded_width=coded_width,
        coded_height=coded_height,
        rotation=rotation,
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
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    want_audio: bool = True,
    want_frames: bool = True,
    ffmpeg: str | None = None,
    max_loss: float = DEFAULT_MAX_LOSS,
) -> Extraction:
    """Write ``out_dir/audio.wav`` and/or ``out_dir/frames/*.jpg`` from ``video``.

    Those outputs belong to this function: an existing ``audio.wav`` or ``frames/`` is replaced, and
    a failed extraction removes what it wrote, so partial output never passes for a result.
    ``scene_threshold`` is ffmpeg's scene score (0 to 1) a picture must exceed to count as a change;
    ``max_loss`` the share of a stream that damage may cost (undecodable packets, a cut-off tail).
    ``ffmpeg`` is the configured binary (see ``ffmpeg_binary``). A wanted output whose stream the
    file lacks is named in ``Extraction.missing``. Raises MediaError with the message the pipeline
    records: the container's or ffmpeg's complaint, or how much of which stream was lost.
    """
    if not (want_audio or want_frames):
        raise ValueError("nothing to extract: want_audio and want_frames are both False")
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be positive, got {frame_rate}")
    if not 0 < scene_threshold < 1:
        raise ValueError(f"scene_threshold must be between 0 and 1, got {scene_threshold}")
    if not 0 <= max_loss <= 1:
        raise ValueError(f"max_loss must be between 0 and 1, got {max_loss}")
    started = time.monotonic()
    binary = ffmpeg_binary(ffmpeg)
    info = probe(video)
    missing: dict[str, str] = {}
    if want_audio and not info.audios:
        missing["audio"] = "no audio stream"
    if want_frames and info.video is None:
        missing["frames"] = "no video stream"

    out_dir = out_dir.resolve()
    audio = _AudioJob(info, out_dir) if want_audio and info.audios else None
    frames = (
        _FramesJob(info, out_dir / "frames", frame_rate, scene_threshold)
        if want_frames and info.video
        else None
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove(audio, frames)
    try:
        if frames is not None:
            frames.directory.mkdir()
        source = video.resolve()
        jobs = [job for job in (audio, frames) if job is not None]
        results = _run_all([job.command(binary, source) for job in jobs], [job.log for job in jobs])
        ran = {job.log: result for job, result in zip(jobs, results, strict=True)}
        audio_result = None
        if audio is not None:
            code, log = ran[audio.log]
            if code != 0:
                raise MediaError(f"ffmpeg failed (exit {code}): {_complaint(log)}")
            audio_result = audio.finish(log)
        frames_result = frames.finish(*ran[frames.log], binary, source) if frames is not None else None
        losses = [
            *(audio_result.losses if audio_result else []),
            *(frames_result.losses if frames_result else []),
        ]
        for loss in losses:
            check_loss(loss, max_loss)
        for result, name in ((audio_result, "audio"), (frames_result, "frames")):
            if result is not None and result.empty:
                missing[name] = result.empty
    except BaseException:
        _remove(audio, frames)
        raise
    ends = [
        end for end in (audio_result and audio_result.duration, frames_result and frames_result.end) if end
    ]
    return Extraction(
        info=info,
        audio=audio_result.wav if audio_result and not audio_result.empty else None,
        audio_duration=audio_result.duration if audio_result and not audio_result.empty else None,
        audio_stream=audio_result.stream if audio_result else None,
        audio_choice=audio_result.choice if audio_result else None,
        video_stream=info.video if frames is not None else None,
        frames=frames_result.frames if frames_result else [],
        missing=missing,
        losses=losses,
        duration=round(max(ends), 3) if ends else None,
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


def check_loss(loss: StreamLoss, max_loss: float) -> None:
    """Raise MediaError when ``loss`` is more than ``max_loss`` of its stream, saying how it was lost."""
    if loss.share <= max_loss:
        return
    allowed = f"more than the {max_loss:.1%} allowed"
    if loss.missing_tail > loss.lost_seconds / 2:
        raise MediaError(
            f"truncated: the {loss.kind} stops {loss.missing_tail:.2f} s before the end its index promises "
            f"({loss.share:.0%} of {loss.length:.2f} s missing, {allowed})"
        )
    raise MediaError(
        f"damaged: {loss.decode_errors} of {loss.packets} {loss.kind} packets could not be decoded "
        f"(about {loss.lost_seconds:.1f} s, {loss.share:.1%} of the {loss.kind}, {allowed})"
    )


def _quiet(*args: str) -> list[str]:
    """ffmpeg's global options here: no banner or prompts, every line tagged with its level."""
    return ["-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+verbose", *args]


@dataclass
class _AudioResult:
    wav: Path
    duration: float
    stream: AudioInfo
    choice: str | None
    losses: list[StreamLoss]
    empty: str | None  # why there is no audio after all (a track without a single packet)


class _AudioJob:
    """One wav per audio track from one ffmpeg process, then the track with speech is kept."""

    def __init__(self, info: MediaInfo, out_dir: Path) -> None:
        self.info = info
        self.wav = out_dir / "audio.wav"
        self.log = out_dir / ".audio.log"
        self.tracks = {stream.index: out_dir / f".audio-{stream.index}.wav" for stream in info.audios}

    def command(self, binary: str, video: Path) -> list[str]:
        source = ffmpeg.input(str(video))
        outputs = [
            # async=1 fills gaps (packets lost to damage) with silence and first_pts=0 pads a late
            # start, so that the wav's time t is the video's time t.
            ffmpeg.output(
                source[str(index)].filter("aresample", **{"async": 1, "first_pts": 0}),
                str(path),
                acodec="pcm_s16le",
                ac=1,
                ar=SAMPLE_RATE,
                f="wav",
            )
            for index, path in self.tracks.items()
        ]
        return ffmpeg.merge_outputs(*outputs).global_args(*_quiet()).overwrite_output().compile(cmd=binary)

    def finish(self, log: str) -> _AudioResult:
        stats = _decode_stats(log)
        index, choice = _choose_audio(self.tracks)
        self.tracks[index].rename(self.wav)
        for path in self.tracks.values():
            path.unlink(missing_ok=True)
        self.log.unlink(missing_ok=True)
        stream = next(s for s in self.info.audios if s.index == index)
        duration = _check_wav(self.wav)
        packets, errors = stats.get(index, (0, 0))
        if packets == 0:
            self.wav.unlink()
            return _AudioResult(
                self.wav, duration, stream, choice, [], f"audio stream {index} holds no sound"
            )
        promised = self.info.promised_end(stream)
        tail = max(0.0, promised - duration - LENGTH_TOLERANCE) if promised is not None else 0.0
        length = promised if promised is not None else duration
        loss = StreamLoss(index, "audio", packets, errors, tail, max(length - stream.start, 0.0))
        return _AudioResult(self.wav, duration, stream, choice, [loss], None)


def _check_wav(path: Path) -> float:
    """The wav's duration, once it is known to be 16 kHz mono s16."""
    try:
        with wave.open(str(path), "rb") as reader:
            shape = (reader.getframerate(), reader.getnchannels(), reader.getsampwidth())
            duration = reader.getnframes() / reader.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise MediaError(f"ffmpeg reported success but audio.wav is unreadable: {exc}") from exc
    if shape != (SAMPLE_RATE, 1, 2):
        raise MediaError(f"audio.wav is {shape[0]} Hz, {shape[1]} channel(s), {8 * shape[2]}-bit")
    return duration


def _choose_audio(tracks: dict[int, Path]) -> tuple[int, str | None]:
    """The track that carries the session's speech, and why it was chosen (None when there is one).

    Screen recorders often store the computer's sound and the microphone as separate tracks, and
    the first is not always the voice. Tracks quieter than ``SILENT_DB`` hold nothing; among the
    others the one with the most speech wins, measured with Silero VAD (the model faster-whisper
    ships), then the louder one.
    """
    if len(tracks) == 1:
        return next(iter(tracks)), None
    levels = {index: _rms_db(path) for index, path in tracks.items()}
    heard = [index for index in tracks if levels[index] > SILENT_DB]
    described = ", ".join(f"stream {i}: {levels[i]:.0f} dBFS" for i in tracks)
    if not heard:
        first = next(iter(tracks))
        return first, f"stream {first}: every audio stream is silent ({described})"
    if len(heard) == 1:
        return heard[0], f"stream {heard[0]}: the only audio stream with sound ({described})"
    speech = {index: _speech_seconds(tracks[index]) for index in heard}
    best = max(heard, key=lambda i: (speech[i], levels[i]))
    spoken = ", ".join(f"stream {i}: {speech[i]:.1f} s" for i in heard)
    return best, f"stream {best}: the most speech ({spoken})"


def _samples(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)


def _rms_db(path: Path) -> float:
    samples = _samples(path).astype(np.float64)
    if not samples.size:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples**2))) / 32768
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def _speech_seconds(path: Path) -> float:
    from faster_whisper.vad import VadOptions, get_speech_timestamps  # loaded only for multi-track files

    audio = _samples(path).astype(np.float32) / 32768
    spans = get_speech_timestamps(audio, VadOptions())
    return sum(span["end"] - span["start"] for span in spans) / SAMPLE_RATE


@dataclass
class _FramesResult:
    frames: list[FrameInfo]
    end: float | None  # where the decoded video ends
    losses: list[StreamLoss]
    empty: str | None


@dataclass(frozen=True)
class _Stretch:
    """A part of the video with one picture size: from ``start`` to ``end`` (None: the end of the file)."""

    start: float
    end: float | None
    number: int
    width: int
    height: int

    @property
    def seek(self) -> float:
        """Where ffmpeg starts reading: just before ``start``, as ffmpeg prints times rounded."""
        return max(0.0, self.start - SEEK_MARGIN)


class _FramesJob:
    """Interval and scene JPEGs of the screen stream, one stretch of picture size at a time."""

    def __init__(self, info: MediaInfo, directory: Path, frame_rate: float, scene_threshold: float) -> None:
        assert info.video is not None
        self.info, self.stream = info, info.video
        self.directory = directory
        self.log = directory.parent / ".frames.log"
        self.frame_rate, self.scene_threshold = frame_rate, scene_threshold

    def command(self, binary: str, video: Path, stretch: _Stretch | None = None) -> list[str]:
        """The ffmpeg command for the whole video (no ``stretch``) or for one stretch of one size.

        The whole-video command lets ffmpeg rebuild its filters when the picture changes; the rebuilt
        interval clock starts over, the encoder refuses the older times, and ``finish`` reads the
        rebuild in the log and starts again by stretches. A stretch command keeps the filters
        (``-reinit_filter 0``: the interval clock and the last scene survive a short-lived size) and
        holds every picture at the stretch's size with ``scale``, so nothing downstream sees two
        sizes (the scene score of two pictures of different sizes crashes ffmpeg 9). ``scale``
        converts every picture (it doubled the CPU time of the whole-video pass), hence only here.
        """
        options: dict[str, Any] = {}
        start = 0.0
        if stretch is not None:
            options["reinit_filter"] = 0
            start = stretch.seek
            if start > 0:
                options["ss"] = f"{start:.6f}"
            if stretch.end is not None:
                options["t"] = f"{stretch.end - start:.6f}"
        picture = ffmpeg.input(str(video), **options)[str(self.stream.index)]
        if start > 0:  # back onto the file's clock: -ss makes the stretch start at 0
            picture = picture.filter("setpts", f"PTS+{start:.6f}/TB")
        if stretch is not None:
            picture = picture.filter("scale", stretch.width, stretch.height)
        branches = picture.filter_multi_output("split")
        # round=up keeps, for each tick n / rate, the last picture shown at or before it (the default,
        # near, takes one up to half an interval later: the next page, just before a change);
        # start_time pads the first ticks with the first picture when the video starts late.
        interval = branches[0].filter("fps", fps=self.frame_rate, round="up", start_time=start)
        scene = branches[1].filter(
            "select",
            f"eq(n,0)+gt(scene,{self.scene_threshold})*gte(t-prev_selected_t,{SCENE_MIN_GAP})",
        )
        number = stretch.number if stretch is not None else 0
        outputs = [self._output(interval, "interval", number), self._output(scene, "scene", number)]
        return ffmpeg.merge_outputs(*outputs).global_args(*_quiet()).overwrite_output().compile(cmd=binary)

    def _output(self, stream: Any, kind: FrameKind, number: int) -> Any:
        # image2 expands % anywhere in the path, so the directory's own % signs are escaped.
        pattern = f"{str(self.directory).replace('%', '%%')}/_{number}_{kind}_%06d.jpg"
        return ffmpeg.output(
            stream,
            pattern,
            start_number=0,
            fps_mode="passthrough",
            enc_time_base=FRAME_TIME_BASE,
            # One line per JPEG written, in order: its number and its exact presentation time.
            stats_enc_post=str(self._stats(kind, number)),
            stats_enc_post_fmt="{n} {tb} {pts}",
            **{"q:v": JPEG_QUALITY},
        )

    def _stats(self, kind: FrameKind, number: int) -> Path:
        return self.directory / f"_{number}_{kind}.stats"

    def finish(self, code: int, log: str, binary: str, video: Path) -> _FramesResult:
        """Name the JPEGs after their times and measure the stream; when ffmpeg rebuilt its filters
        (the picture changed mid-way), start again one stretch of size at a time. Packets and decode
        errors come from the first pass, which read the whole stream once."""
        self.log.unlink(missing_ok=True)
        stats = _decode_stats(log)
        parts: list[tuple[int, float | None]] = [(0, None)]
        if _RECONFIGURED in log:
            for path in self.directory.iterdir():
                path.unlink()
            stretches = self._stretches(binary, video)
            for stretch in stretches:
                stretch_code, stretch_log = _run_all([self.command(binary, video, stretch)], [self.log])[0]
                self.log.unlink(missing_ok=True)
                if stretch_code != 0:
                    raise MediaError(f"ffmpeg failed (exit {stretch_code}): {_complaint(stretch_log)}")
            parts = [(stretch.number, stretch.end) for stretch in stretches]
        elif code != 0:
            raise MediaError(f"ffmpeg failed (exit {code}): {_complaint(log)}")
        frames = [frame for number, end in parts for frame in self._collect(number, end)]
        packets, errors = stats.get(self.stream.index, (0, 0))
        ticks = [f.timestamp for f in frames if f.kind == "interval"]
        if not ticks:
            if packets == 0:
                return _FramesResult([], None, [], f"video stream {self.stream.index} holds no picture")
            raise MediaError("ffmpeg reported success but no picture could be decoded")
        # The last tick shows a picture that lasts at most until the next tick: where the decoded
        # video ends, to one interval; the index, where there is one, says it to the frame.
        decoded_end = ticks[-1] + 1 / self.frame_rate
        promised = self.info.promised_end(self.stream)
        tail = max(0.0, promised - decoded_end - LENGTH_TOLERANCE) if promised is not None else 0.0
        if promised is not None:
            decoded_end = min(decoded_end, promised)
        length = (promised if promised is not None else decoded_end) - self.stream.start
        loss = StreamLoss(self.stream.index, "video", packets, errors, tail, max(length, 0.0))
        return _FramesResult(sorted(frames, key=lambda f: (f.timestamp, f.kind)), decoded_end, [loss], None)

    def _stretches(self, binary: str, video: Path) -> list[_Stretch]:
        """The stretches of one picture size, from a pass that logs the first picture after each change.

        Without ``-reinit_filter 0`` ffmpeg rebuilds the filters at every change of size, so
        ``select=eq(n,0)`` fires once per size. A size that lasts less than ``STABLE_SIZE`` (a window
        being dragged) gets no stretch of its own: its pictures go with the stretch before, scaled.
        """
        cmd = [binary, *_quiet(), "-i", str(video), "-map", f"0:{self.stream.index}"]
        cmd += ["-vf", "select=eq(n\\,0),showinfo=checksum=0", "-f", "null", "-"]
        result = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace"
        )
        if result.returncode != 0:
            raise MediaError(f"ffmpeg failed (exit {result.returncode}): {_complaint(result.stderr)}")
        changes = [(float(t), (int(w), int(h))) for t, w, h in _SHOWINFO.findall(result.stderr)]
        starts = stable_sizes(changes)
        return [
            _Stretch(at, starts[n + 1][0] if n + 1 < len(starts) else None, n, *size)
            for n, (at, size) in enumerate(starts)
        ]

    def _collect(self, number: int, end: float | None) -> list[FrameInfo]:
        """Name one pass's numbered JPEGs after their times, dropping those at or past ``end`` (the
        next stretch's own)."""
        frames = []
        for kind in KINDS:
            stats = self._stats(kind, number)
            lines = stats.read_text().splitlines() if stats.exists() else []
            stats.unlink(missing_ok=True)
            numbered = list(self.directory.glob(f"_{number}_{kind}_*.jpg"))
            if len(numbered) != len(lines):
                raise MediaError(f"ffmpeg wrote {len(numbered)} {kind} frames but reported {len(lines)}")
            for line in lines:
                count, time_base, pts = line.split()
                timestamp = float(int(pts) * Fraction(time_base))
                source = self.directory / f"_{number}_{kind}_{int(count):06d}.jpg"
                if end is not None and timestamp >= end - 1e-6:
                    source.unlink()  # the next stretch's own tick
                    continue
                path = self.directory / f"{kind}_{timestamp:010.3f}.jpg"
                source.rename(path)
                width, height = _jpeg_size(path)
                frames.append(
                    FrameInfo(path=path, timestamp=timestamp, kind=kind, width=width, height=height)
                )
        return frames


def stable_sizes(changes: list[tuple[float, tuple[int, int]]]) -> list[tuple[float, tuple[int, int]]]:
    """Where each stretch of one picture size starts, from the times the size changed.

    The first stretch starts at 0. A size that lasts less than ``STABLE_SIZE`` seconds (the sizes a
    window goes through while it is dragged) starts no stretch, nor does a return to the size
    already showing.
    """
    starts: list[tuple[float, tuple[int, int]]] = []
    for i, (at, size) in enumerate(changes):
        lasts = (changes[i + 1][0] if i + 1 < len(changes) else float("inf")) - at
        if not starts or (lasts >= STABLE_SIZE and size != starts[-1][1]):
            starts.append((0.0 if not starts else at, size))
    return starts


def _decode_stats(log: str) -> dict[int, tuple[int, int]]:
    """Packets read and decode errors per input stream, from ffmpeg's verbose closing report."""
    return {
        int(index): (int(packets), int(errors)) for index, _, packets, _, errors in _DECODE_STATS.findall(log)
    }


def _run_all(commands: list[list[str]], logs: list[Path]) -> list[tuple[int, str]]:
    """Run ``commands`` at once, each logging to its file; their exit codes and logs, in order."""
    running: list[subprocess.Popen[bytes]] = []
    try:
        for command, log in zip(commands, logs, strict=True):
            with log.open("wb") as handle:
                running.append(
                    subprocess.Popen(
                        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=handle
                    )
                )
        codes = [process.wait() for process in running]
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [(code, log.read_text(errors="replace")) for code, log in zip(codes, logs, strict=True)]


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


def _complaint(log: str) -> str:
    """ffmpeg's last few distinct error lines, without its closing remarks and memory addresses."""
    lines: list[str] = []
    for raw in log.splitlines():
        level = _LEVEL.search(raw)
        if level is not None and level.group(1) not in ("panic", "fatal", "error"):
            continue
        line = _CONTEXT_ADDRESS.sub("]", _LEVEL.sub("", raw).strip())
        if line and not _NOISE.search(line) and line not in lines:
            lines.append(line)
    return "; ".join(lines[-STDERR_LINES:]) or "no error message"


def _remove(audio: _AudioJob | None, frames: _FramesJob | None) -> None:
    if audio is not None:
        for path in (audio.wav, audio.log, *audio.tracks.values()):
            path.unlink(missing_ok=True)
    if frames is not None:
        frames.log.unlink(missing_ok=True)
        if frames.directory.exists():
            shutil.rmtree(frames.directory)
