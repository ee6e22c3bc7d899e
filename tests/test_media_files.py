"""The committed media files are what ``sandbox/media/manifest.json`` says they are.

Other tests build on these facts (which file has audio, how long it is, where the cuts are), so a
regeneration that changes a file without its manifest, or a file damaged in git, fails here first.
"""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.media import MEDIA_DIR
from sandbox.media.manifest import load_manifest
from sandbox.media.probe import decodes, probe, scene_changes

MANIFEST = load_manifest()
DURATION_TOLERANCE = 0.2  # seconds


EXPECTED = {
    "speech-1.mp4",
    "speech-2.mp4",
    "speech-3.mp4",
    "no-audio.mp4",
    "audio-only.mp4",
    "empty.mp4",
    "corrupt.mp4",
}


def test_manifest_lists_exactly_the_media_files() -> None:
    on_disk = {path.name for path in MEDIA_DIR.iterdir() if path.suffix in {".mp4", ".m4a"}}
    assert on_disk == set(MANIFEST) == EXPECTED


def test_media_stay_small_enough_to_commit() -> None:
    assert sum((MEDIA_DIR / name).stat().st_size for name in MANIFEST) < 3 * 1024 * 1024


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_file_matches_manifest(name: str) -> None:
    clip: dict[str, Any] = MANIFEST[name]
    path = MEDIA_DIR / name
    info = probe(path)

    assert (info.has_audio, info.has_video) == (clip["has_audio"], clip["has_video"])
    if clip["duration"] is None:  # deliberately unreadable
        assert not info.readable
        assert not decodes(path)
        return
    assert path.stat().st_size > 1000
    assert info.duration == pytest.approx(clip["duration"], abs=DURATION_TOLERANCE)
    assert decodes(path)
    assert (clip["text"] is not None) == clip["has_audio"]
    assert (clip["silence"] is not None) == clip["has_audio"]
    for start, end in clip["silence"] or []:
        assert 0 <= start < end <= clip["duration"]


@pytest.mark.parametrize("name", sorted(n for n, clip in MANIFEST.items() if clip["scene_changes"]))
def test_scene_changes_are_where_the_manifest_says(name: str) -> None:
    cuts = MANIFEST[name]["scene_changes"]
    assert cuts == sorted(cuts)
    # Threshold 10 of 100: the slides differ by 20 or more, frames within a slide by under 1.
    assert scene_changes(MEDIA_DIR / name, threshold=10) == pytest.approx(cuts, abs=0.02)


def test_empty_file_is_empty() -> None:
    assert (MEDIA_DIR / "empty.mp4").stat().st_size == 0
