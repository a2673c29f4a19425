"""kill -9 at random instants loses nothing acknowledged and corrupts nothing.

A real collector process backfills from a loopback simulator; it is SIGKILLed at random
instants (right after a random page, plus a random fraction of a page), restarted, killed
again, and finally run to completion. After every kill the database passes
``PRAGMA integrity_check`` and its coverage is exact (every covered range holds exactly the
rows of an uninterrupted run); at the end every table equals the uninterrupted run's.
"""

from __future__ import annotations

import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from marketspine._time import parse_time
from marketspine.sim import SimConfig

NOW = parse_time("2026-11-20T12:34:56.789Z")
KILLS = 10

WORKER = """
import asyncio, sys
from marketspine._client import Client
from marketspine._collect import collect
from marketspine._ratebudget import LocalRateBudget
from marketspine._store import SQLiteStore
from marketspine._time import parse_time

url, db, now = sys.argv[1], sys.argv[2], int(sys.argv[3])
JOBS = [
    (["KRW-BTC", "KRW-ETH", "KRW-MOC"], "1m", now - 2 * 86_400_000),
    (["KRW-WAL", "KRW-SOL"], "1h", parse_time("2026-08-01")),
]

def report(event):
    print("page", event.market, event.pages, flush=True)

async def main():
    async with Client(url, budget=LocalRateBudget(limit=1000)) as client, SQLiteStore(db) as store:
        for markets, timeframe, since in JOBS:
            await collect(client, store, markets, timeframe, since_ms=since, until_ms=now,
                          now_ms=now, progress=report)
    print("done", flush=True)

asyncio.run(main())
"""


class Worker:
    """One collector process; its stdout lines arrive on a queue (read by a thread)."""

    def __init__(self, url: str, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(db), str(NOW)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_for_pages(self, pages: int, timeout: float = 30.0) -> int:
        """Wait until ``pages`` page lines arrived (or the run ended); returns how many."""
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < pages:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None or line == "done":
                break
            seen += line.startswith("page")
        return seen

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for a successful end; returns the pages it reported."""
        pages = self.wait_for_pages(sys.maxsize, timeout)
        self.process.wait(timeout=timeout)
        assert self.process.stderr is not None
        assert self.process.returncode == 0, self.process.stderr.read()
        return pages

    def kill(self) -> int:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        return self.process.returncode


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()
            for table in ("candles", "coverage", "listing")
        }


def assert_coverage_is_exact(state: dict[str, list[Any]], full: dict[str, list[Any]]) -> None:
    """Every covered range holds exactly the uninterrupted run's rows; nothing lies outside."""
    rows = set(state["candles"])
    reference = set(full["candles"])
    for market, key, start, end in state["coverage"]:
        mine = {r for r in rows if r[:2] == (market, key) and start <= r[2] < end}
        theirs = {r for r in reference if r[:2] == (market, key) and start <= r[2] < end}
        assert mine == theirs, f"{market} {key} [{start}, {end}) is not exact"
        rows -= mine
    assert rows == set(), "rows outside any covered range"
    full_listing = {(m, k): s for m, k, s in full["listing"]}
    for market, key, start in state["listing"]:
        assert full_listing[(market, key)] == start


def test_kill_9_at_random_instants_then_rerun_gives_the_uninterrupted_database(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    rng = random.Random(20261121)
    config = SimConfig(rate_limit=0, latency_ms=3, jitter_ms=3)
    with running_sim(config=config, clock=lambda: NOW) as url:
        reference = tmp_path / "reference.sqlite"
        total_pages = Worker(url, reference).finish()
        full = dump(reference)
        assert len(full["candles"]) > 5_000 and full["listing"], "a meaningful workload"
        assert total_pages > 4 * KILLS, "enough pages that every kill interrupts the run"

        db = tmp_path / "killed.sqlite"
        kills = progressed = 0
        while kills < KILLS:
            worker = Worker(url, db)
            if rng.random() < 0.2:
                # somewhere during start-up or the first page
                worker.wait_for_pages(0)
                time.sleep(rng.uniform(0, 0.4))
            else:
                progressed += worker.wait_for_pages(rng.randint(1, 4))
                time.sleep(rng.uniform(0, 0.01))  # a random point inside the next page
            if worker.kill() != -signal.SIGKILL:
                break  # it finished before the kill landed: nothing left to interrupt
            kills += 1
            assert_coverage_is_exact(dump(db), full)
        assert kills == KILLS, f"the run finished after {kills} kills; make the workload bigger"
        assert 0 < progressed < total_pages

        Worker(url, db).finish()
        assert dump(db) == full
