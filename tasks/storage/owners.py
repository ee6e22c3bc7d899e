"""Who holds a claim, and whether that holder is provably gone.

A run claims a session with a lease (see ``tasks/storage/records.py``). A lease that simply lapses is safe
but slow: a run killed with SIGKILL would keep its sessions for the whole lease. So a lease names its
holder precisely enough to check: the flow run, and the machine and process it runs in. Two checks
can prove the holder gone before the lease lapses:

- on the same machine (same host name and boot), the process is no longer there, or its pid now
  belongs to a process started at another time (pid reuse);
- the orchestrator (Prefect) reports the flow run as finished (completed, failed, crashed,
  cancelled). That check lives with the Prefect wrappers; it reaches this module as a callable.

Anything else (another machine, an orchestrator that cannot be asked) is "not known to be gone",
and the lease's own expiry decides. Nothing here imports Prefect.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

RunFinished = Callable[[str], bool]
"""``run_finished(run_id)``: True only if the orchestrator says that run is over."""


@cache
def boot_id() -> str:
    """This boot of this machine (Linux); empty where unknown, which disables the process check."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field 22); None if absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Holder:
    """A process of a run: enough to tell, from the same machine, whether it still exists."""

    run_id: str
    host: str
    pid: int
    boot: str
    started: int | None

    @classmethod
    def this_process(cls, run_id: str) -> Holder:
        pid = os.getpid()
        return cls(run_id, socket.gethostname(), pid, boot_id(), process_start(pid))

    def is_gone_locally(self) -> bool:
        """True if this holder ran on this machine, in this boot, and its process has ended."""
        if not self.boot or self.boot != boot_id() or self.host != socket.gethostname():
            return False
        started = process_start(self.pid)
        return started is None or (self.started is not None and started != self.started)


def holder_gone(holder: Holder, run_finished: RunFinished | None) -> bool:
    """Whether a claim's holder is provably gone: its process ended, or its run is over."""
    if holder.is_gone_locally():
        return True
    return run_finished is not None and run_finished(holder.run_id)
