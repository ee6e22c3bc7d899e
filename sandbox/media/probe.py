"""Inspect media with the bundled ffmpeg binary, so nothing needs a system ffprobe.

imageio-ffmpeg ships ffmpeg but not ffprobe, hence these helpers parse what ``ffmpeg -i`` and its
analysis filters (volumedetect, silencedetect, scdet) print to stderr. The generator uses them to
check its own output and to measure the manifest values; the tests use them to check the manifest.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: (Video|Audio): ", re.MULTILINE)
_MEAN = re.compile(r"mean_volume: (-?[\d.]+|-inf) dB")
_MAX = re.compile(r"max_volume: (-?[\d.]+|-inf) dB")
_SILENCE_START = re.compile(r"silence_start: (-?[\d.]+)")
_SILENCE_END = re.compile(r"silence_end: (-?[\d.]+)")
_SCENE = re.compile(r"lavfi\.scd\.time: ([\d.]+)")


def ffmpeg_exe() -> str:
    """Path of the static ffmpeg that imageio-ffmpeg installed with the wheel (no download)."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ffmpeg quietly (no banner, no stdin) and return its output; raise on failure if ``check``."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if check and result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-4000:]}")
    return result


@dataclass(frozen=True)
class Probe:
    """What the container header says; ``readable`` is False when ffmpeg cannot open the file."""

    readable: bool
    duration: float | None
    has_video: bool
    has_audio: bool


def probe(path: Path) -> Probe:
    """Open ``path`` like ``ffprobe`` would: read the header, decode nothing."""
    # With no output file ffmpeg always exits 1 ("At least one output file must be specified"),
    # so success is judged by whether it printed the input's description.
    err = ffmpeg("-i", path, check=False).stderr
    if "Input #0" not in err:
        return Probe(readable=False, duration=None, has_video=False, has_audio=False)
    match = _DURATION.search(err)
    duration = None
    if match:
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    kinds = set(_STREAM.findall(err))
    return Probe(readable=True, duration=duration, has_video="Video" in kinds, has_audio="Audio" in kinds)


def decodes(path: Path) -> bool:
    """True when every stream of ``path`` decodes from start to end without a single error."""
    result = ffmpeg("-v", "error", "-xerror", "-i", path, "-f", "null", "-", check=False)
    return result.returncode == 0 and not result.stderr.strip()


def audio_levels(path: Path) -> tuple[float, float]:
    """Mean and peak volume of the audio in dBFS; a silent track reads as ``-inf`` or about -91."""
    err = ffmpeg("-i", path, "-vn", "-af", "volumedetect", "-f", "null", "-").stderr
    mean, peak = _MEAN.search(err), _MAX.search(err)
    if not mean or not peak:
        raise RuntimeError(f"volumedetect printed no levels for {path}")
    return float(mean.group(1)), float(peak.group(1))


def silences(path: Path, noise_db: float, min_seconds: float) -> list[tuple[float, float]]:
    """Stretches quieter than ``noise_db`` lasting at least ``min_seconds``, as (start, end) pairs."""
    err = ffmpeg(
        "-i", path, "-vn", "-af", f"silencedetect=noise={noise_db}dB:d={min_seconds}", "-f", "null", "-"
    ).stderr
    starts = [float(s) for s in _SILENCE_START.findall(err)]
    ends = [float(e) for e in _SILENCE_END.findall(err)]
    # A silence running to the end of the file has a start but no end line.
    if len(ends) < len(starts):
        ends.append(probe(path).duration or starts[-1])
    return list(zip(starts, ends, strict=True))


def scene_changes(path: Path, threshold: float) -> list[float]:
    """Times (seconds) of the frames that ffmpeg's scdet filter scores above ``threshold`` (0-100)."""
    err = ffmpeg("-i", path, "-an", "-vf", f"scdet=threshold={threshold}", "-f", "null", "-").stderr
    return [float(t) for t in _SCENE.findall(err)]
