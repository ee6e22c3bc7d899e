"""Long and large MP4s for benchmarks, made in seconds rather than minutes.

Both encode one short video segment and join copies of it without re-encoding (``-c copy``), with
the speech of the three committed speech clips looped underneath as one continuous AAC track. The
long file is a realistic 720p recording (slides that change every few seconds, speech with pauses);
the large one is incompressible noise at about 160 Mbit/s, to stress downloads and uploads.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from sandbox.media.clips import SPEECH_CLIPS, Slide, cut_times, fill
from sandbox.media.manifest import measure
from sandbox.media.render import encode_clip, encode_noise, repeat_with_audio
from sandbox.media.speech import read_pcm, speak, write_wav

WIDTH, HEIGHT = 1280, 720
NOISE_SEGMENT_SECONDS = 2.0  # one keyframe interval
NOISE_SEED = 7


def _speech_cycle(workdir: Path) -> tuple[Path, tuple[tuple[Slide, float], ...], float]:
    """The three speech clips back to back: their joined sound track, slides and total length."""
    pcm, slides, seconds = bytearray(), [], 0.0
    for index, clip in enumerate(SPEECH_CLIPS):
        wav = workdir / f"cycle{index}.wav"
        length = speak(clip.parts, wav, min_seconds=sum(duration for _, duration in clip.slides))
        pcm += read_pcm(wav)
        slides += fill(clip.slides, length)
        seconds += length
    cycle = workdir / "cycle.wav"
    write_wav(cycle, bytes(pcm))
    return cycle, tuple(slides), seconds


def build_long(out: Path, minutes: int) -> dict[str, dict[str, Any]]:
    """``long-<N>min.mp4``: the speech cycle repeated to at least ``minutes`` minutes, at 720p."""
    path = out / f"long-{minutes}min.mp4"
    with tempfile.TemporaryDirectory(prefix="ut-media-") as tmp:
        wav, slides, seconds = _speech_cycle(Path(tmp))
        segment = Path(tmp) / "segment.mp4"
        encode_clip(
            segment,
            wav=None,
            slides=slides,
            width=WIDTH,
            height=HEIGHT,
            preset="veryfast",
            crf=23,
            single_thread=False,
        )
        times = math.ceil(minutes * 60 / seconds)
        repeat_with_audio(path, video=segment, times=times, seconds=times * seconds, wav=wav)
    text = " ".join(clip.text or "" for clip in SPEECH_CLIPS * times)
    description = f"{times} repeats of speech-1..3 (their speech and slides) at 1280x720, 25 fps."
    return {
        path.name: measure(path, text=text, description=description, scene_changes=cut_times(slides * times))
    }


def build_large(out: Path, mib: int) -> dict[str, dict[str, Any]]:
    """``large-<N>mib.mp4``: at least ``mib`` MiB of 720p noise video with looped speech."""
    path = out / f"large-{mib}mib.mp4"
    with tempfile.TemporaryDirectory(prefix="ut-media-") as tmp:
        wav, _, _ = _speech_cycle(Path(tmp))
        segment = Path(tmp) / "noise.mp4"
        encode_noise(segment, seconds=NOISE_SEGMENT_SECONDS, width=WIDTH, height=HEIGHT, seed=NOISE_SEED)
        times = math.ceil(mib * 2**20 / segment.stat().st_size)
        repeat_with_audio(path, video=segment, times=times, seconds=times * NOISE_SEGMENT_SECONDS, wav=wav)
    description = (
        f"{times * NOISE_SEGMENT_SECONDS:.0f} s of seeded noise at 1280x720 (incompressible, about 160 Mbit/s) "
        "with the speech of speech-1..3 looped and cut off at the end; scene changes are meaningless."
    )
    return {path.name: measure(path, text=None, description=description, scene_changes=None)}
