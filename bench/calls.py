"""Upstream-call benchmarks (issue 9): what a cold chart costs on a dense and on an illiquid
market, counted by the simulator (`GET /sim/stats`), which runs as a separate process with
30 ms latency and Upbit's 10 requests/s per group; and a 30-day backfill under combined
faults (jitter, 5xx, hangs), run three times: no 429, and what the hangs cost.

Run with `python -m bench calls` (or `make bench`).
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._sim import simulator
from marketspine._base.time import DAY_MS
from marketspine._base.timeframes import parse_timeframe
from marketspine._budget.process import forget_process_budgets
from marketspine._client.client import Client
from marketspine._spine.spine import Spine
from marketspine._store.backfill import collect
from marketspine._store.sqlite import SQLiteStore

ONE_MINUTE = parse_timeframe("1m")

Row = dict[str, Any]

DENSE = "KRW-BTC"  # a trade every second
ILLIQUID = "KRW-AHT"  # about 12 trades a day
COUNT = 1000


def row(name: str, value: float, unit: str, goal: str) -> Row:
    return {"benchmark": name, "value": value, "unit": unit, "goal": goal}


async def sim_calls(url: str) -> int:
    async with httpx.AsyncClient(base_url=url) as http:
        stats = (await http.get("/sim/stats")).json()
    return int(sum(stats["requests"]["by_group"].values()))


async def cold_chart(url: str, db: Path, market: str, label: str) -> list[Row]:
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/sim/reset")
    forget_process_budgets()  # a new Spine stands for a new process: a budget of its own
    async with Spine(url, db, warmup_every_s=0) as spine:
        started = time.perf_counter()
        result = await spine.candles(market, "1m", count=COUNT)
        elapsed = time.perf_counter() - started
        span_days = (result[-1].start_ms - result[0].start_ms) / 86_400_000
    calls = await sim_calls(url)
    goal_calls = math.ceil(COUNT / 200) + 1
    return [
        row(
            f"cold 1m count={COUNT:,} on {label} {market} ({span_days:,.1f} days), calls",
            calls,
            "calls",
            f"≤ {goal_calls}",
        ),
        row(f"cold 1m count={COUNT:,} on {label} {market}, time", elapsed * 1000, "ms", "< 2,000"),
    ]


async def adjacent(url: str, db: Path) -> list[Row]:
    """A miss of 14 candles, then 60: the second is inside the first's full page."""
    async with Spine(url, db, warmup_every_s=0) as spine:
        await spine.candles(DENSE, "1m", count=14, closed_only=True)
        spine.clear_memory()
        second = await spine.candles(DENSE, "1m", count=60, closed_only=True)
    return [
        row(
            "14 closed 1m candles, then 60: upstream calls of the second",
            second.meta.upstream_calls,
            "calls",
            "0 (1 if a minute closed)",
        )
    ]


async def backfill(url: str, db: Path, days: int) -> tuple[float, dict[str, Any], float]:
    """A 30-day 1m backfill of KRW-BTC through the Client: (seconds, simulator stats,
    the per-attempt timeout the client ended with)."""
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/sim/reset")
    async with Client(url) as client, SQLiteStore(db) as store:
        now = await client.synced_now_ms(DENSE)
        started = time.perf_counter()
        since = now - days * DAY_MS
        await collect(client, store, [DENSE], ONE_MINUTE, since_ms=since, until_ms=now, now_ms=now)
        elapsed = time.perf_counter() - started
        timeout_s = client.statistics().timeout_s
    async with httpx.AsyncClient(base_url=url) as http:
        stats: dict[str, Any] = (await http.get("/sim/stats")).json()
    return elapsed, stats, timeout_s


FAULTS = ("--jitter-ms", "50", "--error-rate", "0.05", "--hang-rate", "0.02")


def fault_rows(tmp: Path, runs: int = 3, days: int = 30) -> list[Row]:
    with simulator("--latency-ms", "30", "--jitter-ms", "50") as url:
        clean, _, _ = asyncio.run(backfill(url, tmp / "clean.db", days))
    times, rejected, hung, errors, timeouts = [], 0, 0, 0, []
    with simulator("--latency-ms", "30", *FAULTS) as url:
        for run in range(runs):
            elapsed, stats, timeout_s = asyncio.run(backfill(url, tmp / f"f{run}.db", days))
            times.append(elapsed)
            rejected += stats["429"] + stats["418"]
            hung += stats["hung"]
            errors += sum(n for code, n in stats["status"].items() if code.startswith("5"))
            timeouts.append(timeout_s)
    label = f"{days}-day 1m backfill, 50 ms jitter + 5% errors + 2% hangs"
    return [
        row(f"{label}: 429s + 418s over {runs} runs", rejected, "count", "0"),
        row(f"{label}: faults injected over {runs} runs (hangs)", hung, "count", "> 0"),
        row(f"{label}: faults injected over {runs} runs (5xx)", errors, "count", "> 0"),
        row(f"{label}: timeout a hang waited (max of runs)", max(timeouts), "s", "≤ 2"),
        row(f"{label}: time, mean of {runs} runs", sum(times) / runs, "s", "-"),
        row(f"{days}-day 1m backfill, 50 ms jitter only: time", clean, "s", "-"),
    ]


def run() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, simulator("--latency-ms", "30") as url:
        rows += asyncio.run(cold_chart(url, Path(tmp) / "dense.db", DENSE, "dense"))
        rows += asyncio.run(cold_chart(url, Path(tmp) / "sparse.db", ILLIQUID, "illiquid"))
        rows += asyncio.run(adjacent(url, Path(tmp) / "adjacent.db"))
    with tempfile.TemporaryDirectory() as tmp:
        rows += fault_rows(Path(tmp))
    return rows


def main() -> None:
    for item in run():
        print(f"{item['benchmark']:<75} {item['value']:>12,.3f} {item['unit']:<8} {item['goal']}")


if __name__ == "__main__":
    main()
    sys.exit(0)
