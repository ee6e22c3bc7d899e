"""Recordings shaped like real UserTesting sessions, with the outcome processing owes each of them.

``cases.py`` designs them, ``generate.py`` writes the small ones here with ``manifest.json`` (needs
espeak-ng), ``derived.py`` builds the long one at test time from committed material. See README.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CORPUS_DIR = Path(__file__).resolve().parent
REPO_ROOT = CORPUS_DIR.parent.parent
MANIFEST_NAME = "manifest.json"


def load_corpus(directory: Path = CORPUS_DIR) -> dict[str, Any]:
    """The corpus manifest: ``{"cases": {file: entry}, "material": {...}}``."""
    return json.loads((directory / MANIFEST_NAME).read_text())
