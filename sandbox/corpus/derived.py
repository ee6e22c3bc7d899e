"""The long corpus recording, made at test time from committed material (no espeak-ng needed).

``long-20min.mp4`` is a 20-minute screen recording: one minute of screen (four pages of one site, a
scroll, a pointer) encoded once and joined to itself twenty times without re-encoding, with one
distinct spoken remark a minute taken from ``material/remarks.m4a`` (committed; its remarks' times
and texts are in the manifest's ``material`` section). Building it takes a few seconds; the result
is cached under ``.work/corpus/<version>-<material hash>/`` so a test run builds it once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from sandbox.corpus import CORPUS_DIR, REPO_ROOT, load_corpus
from sandbox.corpus.cases import ACCOUNT, HOME, LONG_ARTICLE, RESULTS, Expect
from sandbox.corpus.manifest import Streams, entry
from sandbox.corpus.screens import Change, Move, Pointer, Screen, Scroll, Still
from sandbox.media.probe import ffmpeg
from sandbox.media.speech import SAMPLE_RATE, read_pcm, write_wav

VERSION = "1"  # bump when the recipe below changes: the cache key holds it
LONG_FILE = "long-20min.mp4"
MINUTES = 20
REMARK_AT = 5.0  # seconds into each minute
MATERIAL = CORPUS_DIR / "material" / "remarks.m4a"

MINUTE = Screen(
    (
        Still(HOME, 15.0),
        Still(RESULTS, 15.0),
        Scroll(LONG_ARTICLE, 3, 20.0, (Move(8.0, 1.5, 0.0, 0.3),)),
        Still(ACCOUNT, 10.0),
    ),
    width=960,
    height=540,
    pointer=Pointer(((0.0, 0.3, 0.3), (20.0, 0.6, 0.5), (40.0, 0.4, 0.7), (60.0, 0.3, 0.3))),
)


def cache_dir() -> Path:
    digest = hashlib.sha256(MATERIAL.read_bytes()).hexdigest()[:12]
    return REPO_ROOT / ".work" / "corpus" / f"{VERSION}-{digest}"


def long_session() -> tuple[Path, dict[str, Any]]:
    """The 20-minute recording and its manifest entry, built on first use and then cached."""
    folder = cache_dir()
    path, entry_file = folder / LONG_FILE, folder / "entry.json"
    if not (path.exists() and entry_file.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ut-corpus-", dir=folder) as tmp:
            built = Path(tmp) / LONG_FILE
            entry = _build(built, Path(tmp))
            entry_file.write_text(json.dumps(entry, indent=2) + "\n")
            shutil.move(built, path)
    return path, json.loads(entry_file.read_text())


def _build(out: Path, workdir: Path) -> dict[str, Any]:
    remarks = load_corpus()["material"]["remarks"]
    if len(remarks) < MINUTES:
        raise RuntimeError(f"{MATERIAL} holds {len(remarks)} remarks, {MINUTES} are needed")
    minute = workdir / "minute.mp4"
    ffmpeg(
        *("-y", "-filter_complex", MINUTE.graph("v"), "-map", "[v]"),
        *("-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-g", "50", "-pix_fmt", "yuv420p"),
        *("-fflags", "+bitexact", "-map_metadata", "-1", minute),
    )
    speech = workdir / "remarks.wav"
    ffmpeg("-y", "-i", MATERIAL, "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", speech)
    samples = np.frombuffer(read_pcm(speech), dtype=np.int16)
    track = np.zeros(round(MINUTES * MINUTE.seconds * SAMPLE_RATE), dtype=np.int16)
    texts = []
    for index, (start, end, text) in enumerate(remarks[:MINUTES]):
        piece = samples[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        at = round((index * MINUTE.seconds + REMARK_AT) * SAMPLE_RATE)
        track[at : at + len(piece)] = piece
        texts.append(text)
    wav = workdir / "track.wav"
    write_wav(wav, track.tobytes())
    playlist = workdir / "minutes.txt"
    playlist.write_text(f"file '{minute.resolve()}'\n" * MINUTES)
    ffmpeg(
        *("-y", "-f", "concat", "-safe", "0", "-i", playlist, "-i", wav),
        *("-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "32k", "-ac", "1"),
        *("-movflags", "+faststart", "-fflags", "+bitexact", "-map_metadata", "-1", out),
    )
    changes: list[Change] = []
    for m in range(MINUTES):
        offset = m * MINUTE.seconds
        if m:  # the join of two minutes: the last page, then the first page again
            changes.append(Change(offset, offset, "navigation"))
        changes += [Change(c.start + offset, c.end + offset, c.kind) for c in MINUTE.changes()]
    description = (
        f"{MINUTES} minutes of a site at 960x540: the same minute of screen {MINUTES} times with a distinct "
        f"spoken remark each minute, built at test time from {MATERIAL.name}."
    )
    return entry(
        description,
        text=" ".join(texts),
        language="en",
        seconds=MINUTES * MINUTE.seconds,
        fps=MINUTE.fps,
        changes=changes,
        expect=Expect(sizes=((MINUTE.width, MINUTE.height),)),
        streams=Streams(video=1, audio=1),
        speech_starts=REMARK_AT,
    )
