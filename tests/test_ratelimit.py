"""The limiter's algorithm on a simulated clock, and its file store across real processes.

The end-to-end proof (8 callers in two processes against the sandbox, counted by the sandbox)
lives in test_results_api.py; these tests pin down the arithmetic and the store's atomicity.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from pathlib import Path

import pytest

from sandbox.local import max_in_window
from tasks.api.ratelimit import Entry, FileLedgerStore, Ledger, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def make_limiter(tmp_path: Path, clock: FakeClock, **kwargs: float) -> RateLimiter:
    params = {"limit": 10, "window": 60.0, "margin": 0.5, "lease": 120.0, **kwargs}
    return RateLimiter(
        FileLedgerStore(tmp_path / "ledger.json"),
        limit=int(params["limit"]),
        window=params["window"],
        margin=params["margin"],
        lease=params["lease"],
        clock=clock,
        sleep=clock.sleep,
    )


def test_ledger_json_round_trip() -> None:
    ledger = Ledger(entries=(Entry("a", 1.0, 2.5), Entry("b", 1.5, 70.0, released=True)), blocked_until=9.0)
    assert Ledger.from_json(ledger.to_json()) == ledger
    assert Ledger.from_json(b"") == Ledger()


def test_burst_of_limit_then_waits_a_full_window_after_the_first_response(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = make_limiter(tmp_path, clock)
    start = clock.now
    for _ in range(10):
        permit = limiter.acquire()
        clock.sleep(0.2)  # the request's latency
        limiter.release(permit)
    assert clock.now == pytest.approx(start + 2.0)  # ten requests went without waiting
    eleventh = limiter.acquire()
    # The first answer came at start+0.2; its slot frees window+margin later.
    assert eleventh.granted_at == pytest.approx(start + 0.2 + 60.5, abs=0.05)
    assert eleventh.waited > 58


def test_unreleased_entry_blocks_until_its_lease_ends(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = make_limiter(tmp_path, clock, limit=1, window=10.0, margin=0.0, lease=30.0)
    limiter.acquire()  # a worker that dies before its response: never released
    start = clock.now
    second = limiter.acquire()
    assert second.granted_at - start == pytest.approx(40.0, abs=1.1)


def test_block_pauses_every_caller(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = make_limiter(tmp_path, clock)
    limiter.block(7.0)
    other = make_limiter(tmp_path, clock)  # another worker sharing the same ledger
    assert other.acquire().waited == pytest.approx(7.0, abs=0.05)


@pytest.mark.parametrize("seed", range(5))
def test_simulated_backlog_never_exceeds_limit_and_wastes_no_slot(tmp_path: Path, seed: int) -> None:
    """Random latencies; the server sees each request at a random moment between send and answer."""
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = make_limiter(tmp_path, clock, margin=0.25)
    arrivals, grants, ends = [], [], []
    for _ in range(60):
        permit = limiter.acquire()
        latency = rng.uniform(0.05, 2.0)
        grants.append(permit.granted_at)
        arrivals.append(clock.now + rng.uniform(0, latency))
        clock.sleep(latency)
        ends.append(clock.now)
        limiter.release(permit)
    assert max_in_window(arrivals, 60.0) <= 10
    # Efficiency: each request goes as soon as the slot of the one ten before it frees (plus jitter).
    for i in range(10, 60):
        earliest = max(ends[i - 1], ends[i - 10] + 60.25)
        assert grants[i] == pytest.approx(earliest, abs=0.05)


def _worker(path: str, out: str, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    limiter = RateLimiter(FileLedgerStore(Path(path)), limit=4, window=0.6, margin=0.02, lease=5.0)
    stamps = []
    for _ in range(rounds):
        with limiter.slot():
            sent = time.time()
            time.sleep(rng.uniform(0.0, 0.03))
            stamps.append((sent + time.time()) / 2)
    Path(out).write_text(json.dumps(stamps))


def test_file_store_holds_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(str(tmp_path / "ledger.json"), str(tmp_path / f"out{i}"), 4, i))
        for i in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    stamps = [t for i in range(4) for t in json.loads((tmp_path / f"out{i}").read_text())]
    assert len(stamps) == 16
    assert max_in_window(stamps, 0.6) <= 4
