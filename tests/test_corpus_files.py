"""The committed corpus is what ``sandbox/corpus/manifest.json`` says, and the manifest is its design.

The end-to-end test (test_corpus.py) trusts the manifest; these checks make sure a regeneration
that changed a file, or a design change without a regeneration, shows up here first.
"""

from __future__ import annotations

import pytest

from sandbox.corpus import CORPUS_DIR, load_corpus
from sandbox.corpus.cases import CASES, Case
from sandbox.corpus.derived import MATERIAL, MINUTES
from sandbox.corpus.generate import case_entry
from sandbox.media.probe import probe

MANIFEST = load_corpus()
SUFFIXES = {".mp4", ".m4a", ".webm", ".mkv", ".ts", ".mov"}
MAX_BYTES = 4 * 1024 * 1024


def test_manifest_lists_exactly_the_recordings() -> None:
    on_disk = {path.name for path in CORPUS_DIR.iterdir() if path.suffix in SUFFIXES}
    assert on_disk == set(MANIFEST["cases"]) == {case.file for case in CASES}


def test_corpus_stays_small_enough_to_commit() -> None:
    sizes = [(CORPUS_DIR / name).stat().st_size for name in MANIFEST["cases"]]
    assert sum(sizes) + MATERIAL.stat().st_size < MAX_BYTES


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.file)
def test_manifest_entry_is_the_design(case: Case) -> None:
    """Everything but the measured length comes from cases.py: regenerate after changing a case."""
    entry = MANIFEST["cases"][case.file]
    assert entry == case_entry(case, entry["duration"])


@pytest.mark.parametrize("name", sorted(MANIFEST["cases"]))
def test_file_has_the_streams_of_its_design(name: str) -> None:
    entry = MANIFEST["cases"][name]
    found = probe(CORPUS_DIR / name)
    streams = entry["streams"]
    assert found.readable == bool(streams["video"] or streams["audio"])
    assert (found.has_video, found.has_audio) == (streams["video"] > 0, streams["audio"] > 0)


def test_material_holds_a_remark_for_every_minute_of_the_long_session() -> None:
    remarks = MANIFEST["material"]["remarks"]
    assert len(remarks) >= MINUTES
    assert all(0 <= start < end for start, end, _ in remarks)
    assert len({text for *_, text in remarks}) == len(remarks)  # distinct, so none can stand in for another
