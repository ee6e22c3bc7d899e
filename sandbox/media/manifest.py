"""``manifest.json``: the facts about each media file that tests may rely on, measured from the file.

Durations and silences come from ffmpeg reading the encoded file (not from the plan), so they hold for
what a decoder really sees; texts and cut times are the design, which the generator checks against the
encoded result before writing them down.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sandbox.media import MEDIA_DIR
from sandbox.media.probe import probe, silences

MANIFEST_NAME = "manifest.json"
# A pause counts when it is at least this long and this quiet: espeak's gaps between sentences are
# shorter, so only deliberate pauses are listed.
SILENCE_DB = -40.0
SILENCE_MIN_SECONDS = 1.0


def load_manifest(directory: Path = MEDIA_DIR) -> dict[str, dict[str, Any]]:
    """The ``clips`` mapping of ``directory``'s manifest: file name to its facts."""
    return json.loads((directory / MANIFEST_NAME).read_text())["clips"]


def write_manifest(directory: Path, clips: dict[str, dict[str, Any]]) -> Path:
    """Write ``clips`` (sorted, stable formatting) as ``directory``'s manifest and return its path."""
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps({"clips": dict(sorted(clips.items()))}, indent=2) + "\n")
    return path


def measure(
    path: Path, *, text: str | None, description: str, scene_changes: list[float] | None
) -> dict[str, Any]:
    """The manifest entry for ``path``: the given design facts plus what ffmpeg measures.

    ``duration`` is None when ffmpeg cannot open the file; ``silence`` is None without an audio
    stream, and ``scene_changes`` should be None without a video stream.
    """
    info = probe(path)
    pauses = silences(path, SILENCE_DB, SILENCE_MIN_SECONDS) if info.has_audio else None
    return {
        "text": text,
        "duration": info.duration,
        "has_audio": info.has_audio,
        "has_video": info.has_video,
        "description": description,
        "scene_changes": scene_changes,
        "silence": None if pauses is None else [[round(start, 2), round(end, 2)] for start, end in pauses],
    }
