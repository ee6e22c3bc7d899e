"""Regenerate the committed speech in other languages (``python -m sandbox.media.lang.generate``).

Each clip is espeak-ng's speech between half a second of silence at each end, encoded as AAC in an
MP4 container (``.m4a``) with the same reproducible ffmpeg settings as the other committed media, then
checked: it decodes, lasts what the speech lasts, and is not silent.
"""

from __future__ import annotations

import argparse
import tempfile
import wave
from pathlib import Path

from sandbox.media.lang import CLIPS, LANG_DIR, speak
from sandbox.media.probe import audio_levels, decodes, probe
from sandbox.media.render import encode_clip
from sandbox.media.speech import SAMPLE_RATE, write_wav

PAD_SECONDS = 0.5
MIN_MEAN_DB = -35.0  # espeak speech measures about -20 dB mean; a silent track about -91


def build(name: str, out_dir: Path) -> Path:
    """Speak and encode clip ``name`` of :data:`CLIPS` into ``out_dir``; return the file."""
    _, voice, text = CLIPS[name]
    out = out_dir / name
    with tempfile.TemporaryDirectory(prefix="ut-lang-") as tmp:
        spoken = speak(voice, text, Path(tmp) / "speech.wav")
        with wave.open(str(spoken), "rb") as wav:
            if wav.getframerate() != SAMPLE_RATE:
                raise RuntimeError(f"espeak-ng spoke at {wav.getframerate()} Hz, not {SAMPLE_RATE}")
            pcm = wav.readframes(wav.getnframes())
        pad = bytes(2 * round(PAD_SECONDS * SAMPLE_RATE))
        padded = Path(tmp) / "padded.wav"
        write_wav(padded, pad + pcm + pad)
        seconds = (len(pcm) / 2) / SAMPLE_RATE + 2 * PAD_SECONDS
        encode_clip(out, wav=padded, slides=(), width=0, height=0)
    measured = probe(out).duration
    if not decodes(out) or measured is None or abs(measured - seconds) > 0.1:
        raise RuntimeError(f"{out}: does not decode, or lasts {measured} s instead of {seconds:.2f} s")
    if audio_levels(out)[0] < MIN_MEAN_DB:
        raise RuntimeError(f"{out}: the speech is (nearly) silent")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=LANG_DIR, help="folder to write the clips to")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in CLIPS:
        path = build(name, args.out)
        print(f"{path}: {path.stat().st_size} bytes, {probe(path).duration:.2f} s")


if __name__ == "__main__":
    main()
