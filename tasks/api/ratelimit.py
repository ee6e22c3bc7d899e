"""One rate limiter for every Results API request, shared by threads, processes and machines.

UserTesting allows N requests per W seconds per client. The limiter keeps a *ledger* of the
requests in flight or recently made, in a store every worker can reach (an object in the work
bucket, or a local file), and admits a request only while fewer than N ledger entries are live.

An entry's life is what makes this both safe and close to the budget:

- when a request is admitted, its entry lives until ``start + lease + W + margin`` (the lease
  bounds how long a request can take, so a worker that dies mid-request frees its slot later);
- when the response arrives at ``end``, the entry is shortened to ``end + W + margin``.

The server saw the request somewhere in ``[start, end]``, so the next request to reuse that slot
reaches the server more than W seconds after it: no sliding (hence no fixed) window of W ever
holds more than N requests. With a backlog a slot is reused as soon as it frees, so throughput is
``N / (W + latency + margin)``: about 98.4 % of the budget for W=60 s, 0.5 s margin and 0.5 s
latency. The margin absorbs clock skew between machines sharing one ledger.

A 429 (another client on the same credentials, or a server that counts differently) blocks the
whole ledger until the server's reset time, so every worker pauses, not only the one that saw it.

Stores apply a pure function to the ledger atomically: the file store under ``flock``, the S3
store by compare-and-swap with conditional writes (``If-Match`` / ``If-None-Match``), which S3 and
MinIO perform atomically.
"""

from __future__ import annotations

import fcntl
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One admitted request: who holds it and until when it counts against the window."""

    id: str
    start: float
    until: float
    released: bool = False


@dataclass(frozen=True)
class Ledger:
    entries: tuple[Entry, ...] = ()
    blocked_until: float = 0.0

    def live(self, now: float) -> Ledger:
        """The ledger without the entries that no longer count."""
        kept = tuple(e for e in self.entries if e.until > now)
        return self if len(kept) == len(self.entries) else replace(self, entries=kept)

    def to_json(self) -> bytes:
        body = {
            "version": 1,
            "blocked_until": self.blocked_until,
            "entries": [[e.id, e.start, e.until, e.released] for e in self.entries],
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Ledger:
        if not raw.strip():
            return cls()
        body = json.loads(raw)
        entries = tuple(Entry(str(i), float(s), float(u), bool(r)) for i, s, u, r in body.get("entries", []))
        return cls(entries=entries, blocked_until=float(body.get("blocked_until", 0.0)))


class LedgerStore(Protocol):
    """Somewhere all workers sharing one API client can keep the ledger."""

    def update(self, fn: Callable[[Ledger], tuple[Ledger, T]]) -> T:
        """Apply ``fn`` atomically: read, compute, write back only if nobody wrote in between."""
        ...


class FileLedgerStore:
    """A ledger in a local file, locked with ``flock``: shared by every process on one machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def update(self, fn: Callable[[Ledger], tuple[Ledger, T]]) -> T:
        with self.path.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            ledger = Ledger.from_json(handle.read())
            new, result = fn(ledger)
            if new != ledger:
                handle.seek(0)
                handle.truncate()
                handle.write(new.to_json())
                handle.flush()
            return result


class S3LedgerStore:
    """A ledger in one S3 object, updated by compare-and-swap: shared by every machine."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key

    def update(self, fn: Callable[[Ledger], tuple[Ledger, T]]) -> T:
        while True:
            try:
                obj = self.s3.get_object(Bucket=self.bucket, Key=self.key)
                ledger, etag = Ledger.from_json(obj["Body"].read()), obj["ETag"]
            except self.s3.exceptions.NoSuchKey:
                ledger, etag = Ledger(), None
            new, result = fn(ledger)
            if new == ledger:
                return result
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=new.to_json(), **condition)
                return result
            except self.s3.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code not in {
                    "PreconditionFailed",
                    "ConditionalRequestConflict",
                    "NoSuchKey",
                    "412",
                    "409",
                }:
                    raise
            time.sleep(random.uniform(0, 0.02))


@dataclass(frozen=True)
class Permit:
    """The right to send one request; hand it back with :meth:`RateLimiter.release`."""

    entry_id: str
    granted_at: float
    waited: float


@dataclass
class RateLimiter:
    """At most ``limit`` requests in any ``window`` seconds, across everyone sharing ``store``."""

    store: LedgerStore
    limit: int
    window: float
    margin: float = 0.5
    lease: float = 120.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    _local: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def acquire(self) -> Permit:
        """Block until a request may be sent, then record it in the ledger."""
        began = self.clock()
        entry_id = uuid.uuid4().hex

        def take(ledger: Ledger) -> tuple[Ledger, float]:
            now = self.clock()
            ledger = ledger.live(now)
            if ledger.blocked_until > now:
                return ledger, ledger.blocked_until - now
            if len(ledger.entries) < self.limit:
                entry = Entry(entry_id, now, now + self.lease + self.window + self.margin)
                return replace(ledger, entries=(*ledger.entries, entry)), 0.0
            # A request still in flight frees its slot later than any already answered one
            # (end + W + margin), so the earliest answered entry says exactly when to look again.
            released = [e.until for e in ledger.entries if e.released]
            if released:
                return ledger, min(released) - now
            return ledger, min(self._poll_interval, min(e.until for e in ledger.entries) - now)

        while True:
            with self._local:
                wait = self.store.update(take)
            if wait <= 0:
                now = self.clock()
                return Permit(entry_id=entry_id, granted_at=now, waited=now - began)
            self.sleep(wait + random.uniform(0, self._jitter))

    def release(self, permit: Permit) -> None:
        """The response arrived: the slot frees ``window + margin`` seconds from now."""

        def shorten(ledger: Ledger) -> tuple[Ledger, None]:
            now = self.clock()
            until = now + self.window + self.margin
            live = ledger.live(now)
            entries = tuple(
                replace(e, until=min(e.until, until), released=True) if e.id == permit.entry_id else e
                for e in live.entries
            )
            return replace(live, entries=entries), None

        with self._local:
            self.store.update(shorten)

    def block(self, seconds: float) -> None:
        """The server said 429: nobody sharing the ledger sends anything for ``seconds``."""

        def pause(ledger: Ledger) -> tuple[Ledger, None]:
            until = self.clock() + seconds
            return replace(ledger, blocked_until=max(ledger.blocked_until, until)), None

        with self._local:
            self.store.update(pause)

    @contextmanager
    def slot(self) -> Iterator[Permit]:
        """Hold a permit for the duration of one request."""
        permit = self.acquire()
        try:
            yield permit
        finally:
            self.release(permit)

    @property
    def _poll_interval(self) -> float:
        # When every slot is held by a request in flight, the next one frees when a response
        # arrives, which no entry predicts: look again soon, but without hammering the store.
        return max(0.02, min(1.0, self.window / 60))

    @property
    def _jitter(self) -> float:
        return min(0.02, self.window / 1000)
