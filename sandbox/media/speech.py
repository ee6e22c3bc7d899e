"""Synthesize a clip's sound track with espeak-ng: speech of a known text, with exact pauses.

espeak-ng is only needed to regenerate the media, never at run time (the results are committed).
Its output is deterministic for a given version, and splicing the pieces here with the ``wave``
module (not with ffmpeg) keeps every pause and padding exact to the sample.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import wave
from pathlib import Path

from sandbox.media.clips import FPS, LEAD_SECONDS, TAIL_SECONDS, Part

SAMPLE_RATE = 22050  # espeak-ng's native rate
_SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 882: a track padded to whole frames matches the video exactly
VOICE = "en-us"
WORDS_PER_MINUTE = 150


def _espeak(text: str, out: Path, voice: str = VOICE) -> bytes:
    """Speak ``text`` with espeak-ng's ``voice`` into ``out`` and return its 16-bit mono PCM samples."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is needed to regenerate the media: apt-get install espeak-ng")
    subprocess.run([exe, "-v", voice, "-s", str(WORDS_PER_MINUTE), "-w", str(out), text], check=True)
    with wave.open(str(out), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise RuntimeError(f"unexpected espeak-ng output format in {out}")
        return wav.readframes(wav.getnframes())


def _silence(seconds: float) -> bytes:
    return bytes(2 * round(seconds * SAMPLE_RATE))


def speak(parts: tuple[Part, ...], out: Path, min_seconds: float = 0.0, voice: str = VOICE) -> float:
    """Write the spoken ``parts`` to the WAV file ``out``; return its duration in seconds.

    The track starts with a short silence, ends with one, and is padded to a whole number of video
    frames (and to at least ``min_seconds``) so that a video of the same length lines up exactly.
    """
    pcm = bytearray(_silence(LEAD_SECONDS))
    for index, part in enumerate(parts):
        if isinstance(part, str):
            pcm += _espeak(part, out.with_name(f"{out.stem}.part{index}.wav"), voice)
        else:
            pcm += _silence(part)
    pcm += _silence(TAIL_SECONDS)
    samples = max(len(pcm) // 2, round(min_seconds * SAMPLE_RATE))
    samples = math.ceil(samples / _SAMPLES_PER_FRAME) * _SAMPLES_PER_FRAME
    pcm += bytes(2 * samples - len(pcm))
    write_wav(out, bytes(pcm))
    return samples / SAMPLE_RATE


def write_wav(out: Path, pcm: bytes) -> None:
    """Store 16-bit mono PCM at :data:`SAMPLE_RATE` as a WAV file."""
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm)


def read_pcm(path: Path) -> bytes:
    """The samples of a WAV file written by :func:`speak` or :func:`write_wav`."""
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())
