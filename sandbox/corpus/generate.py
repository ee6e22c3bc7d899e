"""Regenerate the committed corpus: every case of ``cases.py``, the remarks material and the manifest.

    python -m sandbox.corpus.generate              # into sandbox/corpus
    python -m sandbox.corpus.generate --out DIR    # the same set, elsewhere

Needs espeak-ng (``apt-get install espeak-ng``); ffmpeg comes from imageio-ffmpeg. Each file is
checked against its design before the manifest is written (streams, length, clean decoding where
intended, unreadable where intended), so a broken regeneration stops here, not in a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from sandbox.corpus import CORPUS_DIR, MANIFEST_NAME
from sandbox.corpus.cases import CASES, Case
from sandbox.corpus.encode import AUDIO_BITRATE, build
from sandbox.corpus.manifest import Streams, entry
from sandbox.corpus.screens import Change
from sandbox.media.clips import LEAD_SECONDS
from sandbox.media.probe import decodes, ffmpeg, probe
from sandbox.media.speech import SAMPLE_RATE, read_pcm, speak, write_wav

LENGTH_TOLERANCE = 0.25  # seconds: AAC priming and the last frame's duration
REMARK_GAP = 0.6  # seconds of silence between two remarks in the material
# One distinct remark a minute for the 20-minute session (derived.py): distinct, so that Whisper,
# which conditions each window on the text before it, cannot skip a remark it has "just said".
REMARKS = (
    "Okay, the home page has loaded and I can see the main menu.",
    "I am looking for the winter jackets, maybe under the sale section.",
    "The search box is at the top, so I will type jacket in there.",
    "There are many results, and the filters are on the left side.",
    "I will sort the list by price, from the lowest to the highest.",
    "This green jacket looks nice, let me open the product page.",
    "The photos are large, but I cannot find the size chart.",
    "Now I scroll down to read the reviews from other customers.",
    "Most people say that the sleeves are a little bit short.",
    "I think I will add the medium size to my shopping cart.",
    "The cart shows the right price, and shipping is free today.",
    "Let me check if there is a discount code for new customers.",
    "I would like to pay with my card, the form looks familiar.",
    "It asks for my phone number, which I do not like very much.",
    "The delivery date is next Tuesday, which is good for me.",
    "I go back to the account page to look at my older orders.",
    "The order history is easy to read, with one line per order.",
    "Now I want to change my address, the button is hard to see.",
    "Finally I found it under settings, that took me a while.",
    "Overall the site was fine, but the checkout could be shorter.",
)


def streams(case: Case) -> Streams:
    """The streams ``case`` is designed to have."""
    if case.raw is not None:
        return Streams()
    video = (1 + case.webcam) if case.screen is not None else 0
    audio = (case.audio != "none") + case.silent_track_first
    return Streams(video=video, audio=audio)


def changes(case: Case, seconds: float) -> list[Change] | None:
    """When the view changes in ``case`` (``seconds`` long); the picture's size change is one too."""
    if case.screen is None:
        return None
    if case.resize is None:
        return case.screen.stretched(seconds).changes()
    at = case.screen.seconds
    second = case.resize.stretched(seconds - at).changes()
    return [
        *case.screen.changes(),
        Change(at, at, "resize"),
        *(Change(c.start + at, c.end + at, c.kind) for c in second),
    ]


def case_entry(case: Case, seconds: float) -> dict[str, Any]:
    screen = case.screen
    return entry(
        case.description,
        text=case.text,
        language=case.language,
        seconds=seconds,
        fps=screen.fps if screen else None,
        changes=changes(case, seconds),
        expect=case.expect,
        streams=streams(case),
        size=(screen.width, screen.height) if screen else None,
        extra_audio_before=int(case.silent_track_first),
        video_cuts=screen.video_cuts() if screen else None,
        speech_starts=speech_starts(case),
    )


def speech_starts(case: Case) -> float | None:
    """When the first word begins: the audio's delay, the track's lead-in and any opening pause."""
    if case.text is None:
        return None
    pauses = 0.0
    for part in case.speech:
        if isinstance(part, str):
            break
        pauses += part
    return round(case.audio_delay + LEAD_SECONDS + pauses, 3)


def check(case: Case, path: Path, seconds: float) -> list[str]:
    """Ways in which the written ``path`` differs from ``case``'s design."""
    found = probe(path)
    designed = streams(case)
    if case.raw is not None:
        return [] if not found.readable else ["ffmpeg can read it"]
    problems = []
    if (found.has_video, found.has_audio) != (designed.video > 0, designed.audio > 0):
        problems.append(f"streams: video={found.has_video} audio={found.has_audio}")
    if case.damage is None and not decodes(path):
        problems.append("does not decode cleanly")
    if case.damage is not None and decodes(path):
        problems.append("decodes cleanly despite its damage")
    live = case.container == "webm"  # written live: no duration in the header
    expected = seconds + case.timestamp_offset
    if not live and (found.duration is None or abs(found.duration - expected) > LENGTH_TOLERANCE):
        problems.append(f"duration {found.duration} s, designed {expected:.2f} s")
    if live and found.duration is not None:
        problems.append(f"a live WebM with a duration in its header ({found.duration} s)")
    return problems


def build_material(out: Path, workdir: Path) -> dict[str, Any]:
    """``material/remarks.m4a``: the remarks, one after another, and where each one lies."""
    out.mkdir(parents=True, exist_ok=True)
    pcm, remarks = bytearray(), []
    for index, text in enumerate(REMARKS):
        wav = workdir / f"remark{index}.wav"
        speak((text,), wav)
        start = len(pcm) / 2 / SAMPLE_RATE
        pcm += read_pcm(wav)
        remarks.append([round(start, 3), round(len(pcm) / 2 / SAMPLE_RATE, 3), text])
        pcm += bytes(2 * round(REMARK_GAP * SAMPLE_RATE))
    joined = workdir / "remarks.wav"
    write_wav(joined, bytes(pcm))
    ffmpeg(
        *("-y", "-i", joined, "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ac", "1", "-ar", "48000"),
        *("-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1", "-movflags", "+faststart"),
        out / "remarks.m4a",
    )
    return {"remarks": remarks}


def build_corpus(out: Path) -> dict[str, Any]:
    """Write every case, the material and the manifest into ``out``; return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    cases: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ut-corpus-") as tmp:
        for case in CASES:
            path = out / case.file
            seconds = build(case, path, Path(tmp))
            cases[case.file] = case_entry(case, seconds)
            problems += [f"{case.file}: {p}" for p in check(case, path, seconds)]
        material = build_material(out / "material", Path(tmp))
    if problems:
        raise RuntimeError("generated corpus does not match its design:\n" + "\n".join(problems))
    manifest = {"cases": dict(sorted(cases.items())), "material": material}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.corpus.generate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, default=CORPUS_DIR, help=f"output directory (default {CORPUS_DIR})"
    )
    args = parser.parse_args(argv)
    manifest = build_corpus(args.out)
    total = 0
    for name in sorted(manifest["cases"]):
        size = (args.out / name).stat().st_size
        total += size
        print(f"{name:32} {size:>10,} bytes  {manifest['cases'][name]['duration']:7.2f} s", file=sys.stderr)
    material = (args.out / "material" / "remarks.m4a").stat().st_size
    print(f"{'material/remarks.m4a':32} {material:>10,} bytes", file=sys.stderr)
    print(f"{'total':32} {total + material:>10,} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
