"""Regenerate the committed test media, or make long / large files for benchmarks.

    python -m sandbox.media.generate                      # the committed set, into sandbox/media
    python -m sandbox.media.generate --out DIR            # the committed set, elsewhere
    python -m sandbox.media.generate --out DIR --long-minutes 30 --large-mib 512   # benchmarks only

Needs espeak-ng (``apt-get install espeak-ng``); ffmpeg comes from imageio-ffmpeg. The committed set
is checked after encoding (each file decodes or fails as intended, the speech is not silent, scene
detection finds exactly the designed cuts), so a broken regeneration stops here, not in some test.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from sandbox.media import MEDIA_DIR
from sandbox.media.bench import build_large, build_long
from sandbox.media.clips import (
    CORRUPT_DESCRIPTION,
    CORRUPT_FILE,
    CORRUPT_SOURCE,
    EMPTY_DESCRIPTION,
    EMPTY_FILE,
    ENCODED_CLIPS,
    FPS,
    Clip,
    cut_times,
    fill,
)
from sandbox.media.manifest import MANIFEST_NAME, SILENCE_MIN_SECONDS, load_manifest, measure, write_manifest
from sandbox.media.probe import audio_levels, decodes, probe, scene_changes
from sandbox.media.render import encode_clip
from sandbox.media.speech import speak

WIDTH, HEIGHT = 640, 360
CORRUPT_SEED = 1729
SCENE_THRESHOLD = 10.0  # scdet scores our cuts at 11 or more, frames within a slide below 1
MIN_MEAN_DB = -35.0  # espeak speech measures about -20 dB mean; a silent track about -91


def _encode(clip: Clip, out: Path, workdir: Path) -> tuple[float, list[float] | None]:
    """Encode ``clip`` into ``out``; return its planned length and its cut times (None: no video)."""
    seconds = sum(duration for _, duration in clip.slides)
    wav = None
    if clip.parts:
        wav = workdir / f"{Path(clip.file).stem}.wav"
        seconds = speak(clip.parts, wav, min_seconds=seconds)
    slides = fill(clip.slides, seconds) if clip.slides else ()
    encode_clip(out, wav=wav, slides=slides, width=WIDTH, height=HEIGHT)
    return seconds, cut_times(slides) if slides else None


def corrupt(source: Path, out: Path, seed: int = CORRUPT_SEED) -> None:
    """Copy ``source`` with its ``moov`` box (type and contents) overwritten by seeded random bytes.

    The box's size field stays, so a parser walks past the garbage to ``mdat`` but never finds an
    index: every decoder fails to open the file, while it still looks like an MP4 by size and prefix.
    """
    data = bytearray(source.read_bytes())
    offset = data.find(b"moov") - 4
    if offset < 0:
        raise RuntimeError(f"no moov box in {source}")
    size = int.from_bytes(data[offset : offset + 4], "big")
    data[offset + 4 : offset + size] = random.Random(seed).randbytes(size - 4)
    out.write_bytes(bytes(data))


def _check_clip(path: Path, clip: Clip, planned: float, entry: dict[str, Any]) -> list[str]:
    """Ways in which the encoded ``path`` (measured as ``entry``) differs from its design."""
    problems = []
    if not decodes(path):
        problems.append("does not decode cleanly")
    if (entry["has_audio"], entry["has_video"]) != (bool(clip.parts), bool(clip.slides)):
        problems.append(f"streams: audio={entry['has_audio']} video={entry['has_video']}")
    if entry["duration"] is None or abs(entry["duration"] - planned) > 0.1:
        problems.append(f"duration {entry['duration']} s, planned {planned:.2f} s")
    if entry["has_audio"] and (levels := audio_levels(path))[0] < MIN_MEAN_DB:
        problems.append(f"audio is too quiet: mean and peak {levels} dB")
    pauses = [part for part in clip.parts if isinstance(part, float) and part >= SILENCE_MIN_SECONDS]
    if len(entry["silence"] or []) != len(pauses):
        problems.append(f"silences {entry['silence']}, designed pauses {pauses}")
    if (cuts := entry["scene_changes"]) is not None:
        found = scene_changes(path, SCENE_THRESHOLD)
        if len(found) != len(cuts) or any(abs(a - b) > 0.5 / FPS for a, b in zip(found, cuts, strict=False)):
            problems.append(f"scene changes found at {found}, designed at {cuts}")
    return problems


def build_committed(out: Path) -> dict[str, dict[str, Any]]:
    """Write every committed file and the manifest into ``out``; return the manifest's clips."""
    out.mkdir(parents=True, exist_ok=True)
    clips: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ut-media-") as tmp:
        for clip in ENCODED_CLIPS:
            path = out / clip.file
            planned, cuts = _encode(clip, path, Path(tmp))
            clips[clip.file] = measure(path, text=clip.text, description=clip.description, scene_changes=cuts)
            problems += [f"{clip.file}: {p}" for p in _check_clip(path, clip, planned, clips[clip.file])]
    (out / EMPTY_FILE).write_bytes(b"")
    corrupt(out / CORRUPT_SOURCE, out / CORRUPT_FILE)
    for name, description in ((EMPTY_FILE, EMPTY_DESCRIPTION), (CORRUPT_FILE, CORRUPT_DESCRIPTION)):
        if probe(out / name).readable or decodes(out / name):
            problems.append(f"{name}: ffmpeg can read it")
        clips[name] = measure(out / name, text=None, description=description, scene_changes=None)
    if problems:
        raise RuntimeError("generated media do not match their design:\n" + "\n".join(problems))
    write_manifest(out, clips)
    return clips


def build_benchmarks(out: Path, long_minutes: int | None, large_mib: int | None) -> dict[str, dict[str, Any]]:
    """Write the requested benchmark files into ``out``, add them to the manifest there, return them."""
    out.mkdir(parents=True, exist_ok=True)
    built: dict[str, dict[str, Any]] = {}
    if long_minutes is not None:
        built.update(build_long(out, long_minutes))
    if large_mib is not None:
        built.update(build_large(out, large_mib))
    existing = load_manifest(out) if (out / MANIFEST_NAME).exists() else {}
    write_manifest(out, {**existing, **built})
    return built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.media.generate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, help=f"output directory (default for the committed set: {MEDIA_DIR})"
    )
    parser.add_argument(
        "--long-minutes", type=int, metavar="N", help="benchmark: N minutes of 720p speech and slides"
    )
    parser.add_argument(
        "--large-mib", type=int, metavar="N", help="benchmark: an MP4 of at least N MiB (noise video)"
    )
    args = parser.parse_args(argv)
    if args.long_minutes is not None or args.large_mib is not None:
        if min(n for n in (args.long_minutes, args.large_mib) if n is not None) < 1:
            parser.error("--long-minutes and --large-mib must be at least 1")
        if args.out is None or args.out.resolve() == MEDIA_DIR:
            parser.error("benchmark files need --out, a directory other than the committed media")
        out = args.out
        clips = build_benchmarks(out, args.long_minutes, args.large_mib)
    else:
        out = args.out or MEDIA_DIR
        clips = build_committed(out)
    for name in sorted(clips):
        size = (out / name).stat().st_size
        print(f"{name:24} {size:>14,} bytes  {clips[name]['duration']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
