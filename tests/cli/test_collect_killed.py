"""kill -9 and Ctrl-C at random instants lose nothing acknowledged and corrupt nothing.

The real ``marketspine collect`` command backfills from a loopback simulator, several pages of
a market in flight at once (the pipeline stores them in order); it is
SIGKILLed (and now and then interrupted with SIGINT, as Ctrl-C does) at random instants —
after a random number of stored pages plus a random fraction of the next one, or during
start-up — then started again, and finally run to completion. After every interruption the
database passes ``PRAGMA integrity_check`` and its coverage is exact (every covered range
holds exactly the rows of an uninterrupted run); at the end every table equals the
uninterrupted run's.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import InFlight, UnpacedBudget

from marketspine._base.time import parse_time
from marketspine._base.timeframes import TIMEFRAMES
from marketspine._client.client import Client
from marketspine._store.backfill import collect
from marketspine._store.sqlite import SQLiteStore
from marketspine.sim import SimConfig, create_app

pytestmark = pytest.mark.process

NOW = parse_time("2026-11-20T12:34:56.789Z")
KILLS = 10
INTERRUPTS = 3
# Dense and sparse markets, and one (KRW-WAL, listed 2026-10-20) whose listing is reached.
MARKETS = ("KRW-BTC", "KRW-ETH", "KRW-MOC", "KRW-WAL", "KRW-SOL")
SINCE, UNTIL = "2026-08-01", "2026-11-20T12:00:00Z"  # 57 pages, 13,356 rows
PAGE_ROWS = 200


class Collector:
    """One ``marketspine collect`` process."""

    def __init__(self, url: str, db: Path) -> None:
        self.db = db
        self.process = subprocess.Popen(
            [sys.executable, "-m", "marketspine", "collect", *MARKETS, "-t", "1h",
             "--since", SINCE, "--until", UNTIL, "--db", str(db), "--upstream", url, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C must reach it even when this test runs in the background, where the
            # shell set SIGINT to "ignore" and children inherit that.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip

    def wait_for_rows(self, rows: int, timeout: float = 30.0) -> bool:
        """Wait until the database holds ``rows`` candles; False if the run ended first."""
        deadline = time.monotonic() + timeout
        while stored_rows(self.db) < rows:
            if self.process.poll() is not None:
                return False
            assert time.monotonic() < deadline, f"no {rows} rows within {timeout} s"
            time.sleep(0.002)
        return True

    def finish(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for a successful end; returns its JSON summary."""
        out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, err
        summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return summary

    def stop(self, sig: signal.Signals) -> tuple[int, str]:
        """Send ``sig``; returns the exit code and what the process wrote on stderr."""
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, err


def stored_rows(db: Path) -> int:
    """Candles committed so far (a reader beside the writer, as WAL allows)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM candles").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if not tables:  # killed after SQLite created the file, before the schema: empty
            return {table: [] for table in ("candles", "coverage", "listing")}
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


async def uninterrupted(app: Any, db: Path) -> int:
    """The uninterrupted run, in-process against the same simulator (the command runs the
    same ``collect``; unpaced here, where the processes keep Upbit's 10 requests/s).
    Returns the pages it fetched."""
    async with (
        SQLiteStore(db) as store,
        Client(
            "http://sim",
            transport=httpx.ASGITransport(app=app),
            budget=UnpacedBudget(),
        ) as client,
    ):
        summary = await collect(
            client, store, MARKETS, TIMEFRAMES["1h"],
            since_ms=parse_time(SINCE), until_ms=parse_time(UNTIL), now_ms=NOW,
            keep_below=False,  # as the command does
        )  # fmt: skip
    return summary.upstream_calls


def test_kill_9_and_ctrl_c_at_random_instants_then_rerun_gives_the_uninterrupted_database(
    running_sim: Callable[..., AbstractContextManager[str]], tmp_path: Path
) -> None:
    rng = random.Random(20261121)
    app = create_app(SimConfig(rate_limit=0, latency_ms=3, jitter_ms=3), clock=lambda: NOW)
    reference = tmp_path / "reference.sqlite"
    pages = asyncio.run(uninterrupted(app, reference))
    full = dump(reference)
    total = len(full["candles"])
    assert total > 5_000 and full["listing"], "a meaningful workload"
    assert pages > 2 * (KILLS + INTERRUPTS), "enough pages to interrupt"
    # The commands' simulator answers after 150 ms, more than the 102 ms between two paced
    # LOW requests: a market's pages meet at the simulator only when they are pipelined.
    # (Same seed and clock: the same history as the reference run's.)
    seen = InFlight(
        create_app(SimConfig(rate_limit=0, latency_ms=150, jitter_ms=3), clock=lambda: NOW)
    )
    with running_sim(app=seen) as url:
        db = tmp_path / "killed.sqlite"
        signals = [signal.SIGKILL] * KILLS + [signal.SIGINT] * INTERRUPTS
        rng.shuffle(signals)
        progressed: list[int] = []
        for sig in signals:
            collector = Collector(url, db)
            # A SIGINT while the interpreter itself starts gets Python's own traceback,
            # before any code of ours runs: interrupt only once collecting has begun.
            if sig == signal.SIGKILL and rng.random() < 0.3:
                # somewhere during start-up or the first pages
                time.sleep(rng.uniform(0, 1.0))
            else:
                target = stored_rows(db) + rng.randint(1, 3) * PAGE_ROWS
                assert collector.wait_for_rows(target), "finished before the kill; grow the work"
                time.sleep(rng.uniform(0, 0.1))  # a random point inside a later page
            code, err = collector.stop(sig)
            if sig == signal.SIGKILL:
                assert code == -signal.SIGKILL, f"finished before the kill landed: {err}"
            else:
                # 130 from our handler; -SIGINT if it landed before Python's own was set.
                assert code in (130, -signal.SIGINT) and "Traceback" not in err, err
            progressed.append(stored_rows(db))
            assert_coverage_is_exact(dump(db), full)
        assert 0 < progressed[-1] < total and progressed == sorted(progressed)

        Collector(url, db).finish()
        assert dump(db) == full
    # The runs kept several pages of one market in flight (pipelined, stored in order).
    assert seen.most_of["KRW-BTC"] > 1
