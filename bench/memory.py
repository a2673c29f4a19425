"""Memory benchmark (issue 9 item 6): fill Spine's one byte budget (``memory_mb``) with
candle windows of many markets and the live state of 250 watched markets, and show that the
process's RSS stays under the budget plus the interpreter's baseline.

Also: one market's backfill (``collect``) over 15 and 60 days, whose peak RSS must not grow
with the days collected. Each runs in a fresh process, so the figure is its own.
`python -m bench memory`; `python -m bench.memory fill [MB]` or `collect [DAYS]` prints the
rows of one as JSON lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._sim import simulator
from marketspine._base.memory import HELD_SHARE
from marketspine._budget.local import LocalRateBudget
from marketspine._spine.spine import Spine

Row = dict[str, Any]
MIB = 2**20


def row(name: str, value: float, unit: str, goal: str) -> Row:
    return {"benchmark": name, "value": value, "unit": unit, "goal": goal}


async def fill(url: str, db: Path, memory_mb: float) -> list[Row]:
    import psutil

    process = psutil.Process(os.getpid())
    budget = LocalRateBudget(limit=1000)  # the simulator runs with --rate-limit 0
    async with Spine(url, db, budget=budget, memory_mb=memory_mb, warmup_every_s=0) as spine:
        codes = [m.market for m in await spine.markets()]
        charts = codes[:100]
        await spine.candles(codes[0], "1m", count=10, closed_only=True)  # warm the code paths
        baseline = process.memory_info().rss
        await spine.watch(["ticker", "orderbook", "trade"], codes)
        peak = baseline
        started = time.monotonic()
        # Candle windows until the budget has evicted plenty: 5,000 1m candles per market.
        rounds = 0
        full = 0.98 * spine.statistics().memory_limit_bytes
        while spine.statistics().memory_bytes < full or rounds < 2:
            for code in charts:
                await spine.candles(code, "1m", count=5000, closed_only=True)
                peak = max(peak, process.memory_info().rss)
            rounds += 1
            if time.monotonic() - started > 300:
                break
        # Live trades keep arriving; hold the budget full for a while and watch RSS.
        for _ in range(20):
            await asyncio.sleep(0.5)
            peak = max(peak, process.memory_info().rss)
        stats = spine.statistics()
        live = spine._live.statistics()
        memory = spine._memory.statistics()
    over = (peak - baseline) / MIB
    return [
        row(
            f"memory_mb={memory_mb:g}: budget charged when full "
            f"({memory.series} windows, {live.trades:,} live trades)",
            stats.memory_bytes / MIB,
            "MiB",
            f"≤ {memory_mb * HELD_SHARE:g} (the held share of {memory_mb:g})",
        ),
        row(
            f"memory_mb={memory_mb:g}: peak RSS above baseline "
            f"({baseline / MIB:.0f} MiB baseline, {memory.evictions:,} windows evicted)",
            over,
            "MiB",
            f"≤ {memory_mb:g}",
        ),
    ]


async def collect_peak(url: str, db: Path, days: int) -> list[Row]:
    """One market's ``days`` of 1m collected (unpaced): the process's peak RSS above what
    it held before the first page, sampled at every page stored. Flat in ``days`` when the
    collector holds only the pages in flight."""
    import psutil

    from marketspine._base.time import DAY_MS
    from marketspine._base.timeframes import TIMEFRAMES
    from marketspine._client.client import Client
    from marketspine._store.backfill import collect
    from marketspine._store.sqlite import SQLiteStore

    process = psutil.Process(os.getpid())
    budget = LocalRateBudget(limit=1000)  # the simulator runs with --rate-limit 0
    async with SQLiteStore(db) as store, Client(url, budget=budget) as client:
        now = await client.synced_now_ms("KRW-BTC")
        baseline = peak = process.memory_info().rss

        def sample(_: object) -> None:
            nonlocal peak
            peak = max(peak, process.memory_info().rss)

        summary = await collect(
            client, store, ["KRW-BTC"], TIMEFRAMES["1m"],
            since_ms=now - days * DAY_MS, until_ms=now, now_ms=now, progress=sample,
        )  # fmt: skip
    name = (
        f"collect of one market, {days} days of 1m ({summary.candles_written:,} candles, "
        f"{summary.upstream_calls} pages): peak RSS above the start's"
    )
    return [row(name, (peak - baseline) / MIB, "MiB", "flat in the days collected")]


def _probe(*args: str) -> list[Row]:
    """The rows ``python -m bench.memory ARGS`` prints: each probe in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def run() -> list[Row]:
    return [*_probe("fill", "100"), *_probe("collect", "15"), *_probe("collect", "60")]


def main() -> None:
    if sys.argv[1:2] == ["fill"]:
        memory_mb = float(sys.argv[2]) if len(sys.argv) > 2 else 100.0
        with (
            tempfile.TemporaryDirectory() as tmp,
            simulator("--markets", "250", "--rate-limit", "0") as url,
        ):
            for item in asyncio.run(fill(url, Path(tmp) / "m.db", memory_mb)):
                print(json.dumps(item))
        return
    if sys.argv[1:2] == ["collect"]:
        days = int(sys.argv[2]) if len(sys.argv) > 2 else 60
        with tempfile.TemporaryDirectory() as tmp, simulator("--rate-limit", "0") as url:
            for item in asyncio.run(collect_peak(url, Path(tmp) / "c.db", days)):
                print(json.dumps(item))
        return
    for item in run():
        print(f"{item['benchmark']:<90} {item['value']:>10,.2f} {item['unit']:<5} {item['goal']}")


if __name__ == "__main__":
    main()
