"""Local scratch space for ffmpeg and Whisper: one folder per run, removed at its end.

Processing copies a session's video from the bucket to local disk (ffmpeg wants a seekable file),
writes audio and frames next to it, uploads what lasts and deletes the rest. All of that lives in
``{root}/run-{run_id}/``, so a run's leftovers are one folder. A run killed with SIGKILL cannot
remove its folder; the next run on the machine sweeps it. Whether a folder's run is alive is told
by an ``flock`` its process holds on ``{root}/.locks/run-{run_id}.lock``: the kernel drops the lock
when the process dies, however it dies, so the check cannot be fooled by a reused pid.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

log = logging.getLogger("ut_pipeline.scratch")

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "ut-pipeline"


class ScratchSpace:
    """The scratch folders of the runs in this process under ``root``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or DEFAULT_ROOT
        self._locks: dict[str, int] = {}
        self._guard = threading.Lock()

    def run_dir(self, run_id: str) -> Path:
        """The run's folder, created (and its lock taken) on first use."""
        name = f"run-{UUID(run_id)}"
        with self._guard:
            if name not in self._locks:
                locks = self.root / ".locks"
                locks.mkdir(parents=True, exist_ok=True)
                handle = os.open(locks / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(handle, fcntl.LOCK_EX)
                self._locks[name] = handle
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            return folder

    @contextmanager
    def session_dir(self, run_id: str, session_id: UUID) -> Iterator[Path]:
        """A fresh folder for one session's files inside the run's folder, removed afterwards."""
        folder = Path(tempfile.mkdtemp(prefix=f"{session_id}-", dir=self.run_dir(run_id)))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def finish_run(self, run_id: str) -> None:
        """Remove the run's folder and drop its lock."""
        name = f"run-{UUID(run_id)}"
        shutil.rmtree(self.root / name, ignore_errors=True)
        with self._guard:
            handle = self._locks.pop(name, None)
        if handle is not None:
            (self.root / ".locks" / f"{name}.lock").unlink(missing_ok=True)
            os.close(handle)

    def sweep(self) -> list[Path]:
        """Remove the folders of runs whose process is gone; returns what was removed."""
        removed = []
        if not self.root.is_dir():
            return removed
        for folder in sorted(self.root.glob("run-*")):
            lock = self.root / ".locks" / f"{folder.name}.lock"
            with self._guard:
                if folder.name in self._locks:
                    continue
            handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644) if lock.parent.is_dir() else None
            try:
                if handle is not None:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run's
            finally:
                if handle is not None:
                    os.close(handle)
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
            removed.append(folder)
        if removed:
            log.info("removed %d scratch folder(s) left by killed runs under %s", len(removed), self.root)
        return removed
