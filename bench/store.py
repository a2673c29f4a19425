"""The candle store and the backfill: candles/s against a loopback simulator (its own
process, Upbit's 10 req/s limit, 30 ms latency) side by side with pyupbit's ``get_ohlcv``
and a ccxt ``fetch_ohlcv`` loop on the same range; upstream calls when a covered range is
asked again; reading 1,000 candles cold from SQLite; three months of 1m into pandas.

``python -m bench.store [PAGES]`` prints the table; PAGES (default 60) is the backfill size
in 200-candle pages of a dense market.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench._libs import ccxt_ohlcv, pyupbit_ohlcv
from bench._sim import start_simulator
from marketspine._base.time import DAY_MS, MINUTE_MS, now_ms
from marketspine._base.timeframes import parse_timeframe
from marketspine._client.client import Client
from marketspine._spine.result import CandleResult
from marketspine._store.backfill import collect
from marketspine._store.sqlite import SQLiteStore
from marketspine.records import Candle

LATENCY_MS = 30.0
LIMIT = 10
MARKET = "KRW-BTC"  # trades every second in the simulator: every minute has a candle
CEILING = LIMIT * 200  # candles/s at 10 pages/s of 200
_ONE_MINUTE = parse_timeframe("1m")


def _row(name: str, value: float, unit: str, goal: str) -> dict[str, Any]:
    return {"benchmark": name, "value": round(value, 3), "unit": unit, "goal": goal}


def _start_sim() -> tuple[subprocess.Popen[str], str]:
    return start_simulator("--latency-ms", str(LATENCY_MS), "--rate-limit", str(LIMIT))


def _stats(base: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(base + "/sim/stats", timeout=10).json()
    return stats


def _reset(base: str) -> None:
    httpx.post(base + "/sim/reset", timeout=10).raise_for_status()
    time.sleep(1.1)  # a fresh upstream second: one run's tail must not cost the next a 429


def _candle_calls(base: str) -> int:
    return int(_stats(base)["requests"]["by_group"].get("candles", 0))


async def _marketspine(base: str, db: Path, since: int, until: int) -> tuple[float, int]:
    """Returns (candles/s, candles written) of a fresh backfill."""
    async with Client(base) as client, SQLiteStore(db) as store:
        summary = await collect(
            client, store, [MARKET], _ONE_MINUTE, since_ms=since, until_ms=until, now_ms=now_ms()
        )
    return summary.candles_written / summary.seconds, summary.candles_written


async def _again(base: str, db: Path, since: int, until: int) -> int:
    before = int(_stats(base)["requests"]["total"])
    async with Client(base) as client, SQLiteStore(db) as store:
        await collect(
            client, store, [MARKET], _ONE_MINUTE, since_ms=since, until_ms=until, now_ms=now_ms()
        )
    return int(_stats(base)["requests"]["total"]) - before


async def _reads(folder: Path) -> list[dict[str, Any]]:
    db = folder / "three_months.sqlite"
    start = _ONE_MINUTE.floor(now_ms()) - 120 * DAY_MS
    minutes = 92 * 1440  # three months
    async with SQLiteStore(db) as store:
        for first in range(0, minutes, 10_000):
            batch = [
                Candle(MARKET, "1m", start + i * MINUTE_MS, 1e8 + i, 1e8 + i + 5, 1e8 + i - 5,
                       1e8 + i + 1, 0.5, 5e7, start + i * MINUTE_MS + 59_000)
                for i in range(first, min(first + 10_000, minutes))
            ]  # fmt: skip
            covered = (batch[0].start_ms, batch[-1].start_ms + MINUTE_MS)
            await store.write_page(MARKET, _ONE_MINUTE, batch, covered)
    end = start + minutes * MINUTE_MS
    async with SQLiteStore(db) as store:  # a new connection: SQLite's page cache is cold
        middle = start + 40 * DAY_MS
        started = time.perf_counter()
        thousand = await store.read(MARKET, _ONE_MINUTE, middle, middle + 1000 * MINUTE_MS)
        read_ms = (time.perf_counter() - started) * 1000
        assert len(thousand) == 1000
    async with SQLiteStore(db) as store:
        started = time.perf_counter()
        candles = await store.read(MARKET, _ONE_MINUTE, start, end)
        frame = CandleResult(MARKET, _ONE_MINUTE, candles).to_pandas()
        frame_s = time.perf_counter() - started
        assert len(frame) == minutes
    return [
        _row("read 1,000 1m candles, cold connection", read_ms, "ms", "<= 10 ms"),
        _row(f"3 months of 1m ({minutes:,} candles) -> pandas", frame_s, "s", "<= 2 s"),
    ]


def run(pages: int = 60) -> list[dict[str, Any]]:
    proc, base = _start_sim()
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as name:
            folder = Path(name)
            until = _ONE_MINUTE.floor(now_ms()) - DAY_MS
            since = until - pages * 200 * MINUTE_MS
            goal = f">= {0.95 * CEILING:,.0f} (95% of {CEILING:,})"

            _reset(base)
            rate, written = asyncio.run(_marketspine(base, folder / "db.sqlite", since, until))
            limited = int(_stats(base)["429"])
            rows.append(_row(f"marketspine collect, {written:,} 1m", rate, "candles/s", goal))
            rows.append(_row("marketspine collect: 429 answers", limited, "count", "0"))
            calls = asyncio.run(_again(base, folder / "db.sqlite", since, until))
            rows.append(_row("covered range asked again: upstream calls", calls, "calls", "0"))

            _reset(base)
            elapsed, written = pyupbit_ohlcv(base, until, pages * 200)
            rate = written / elapsed
            rows.append(_row(f"pyupbit get_ohlcv, {written:,} 1m", rate, "candles/s", "compare"))
            rows.append(_row("pyupbit: 429 answers", int(_stats(base)["429"]), "count", "-"))

            _reset(base)
            elapsed, written = ccxt_ohlcv(base, since, until)
            rate = written / elapsed
            rows.append(
                _row(f"ccxt fetch_ohlcv loop, {written:,} 1m", rate, "candles/s", "compare")
            )
            rows.append(_row("ccxt: 429 answers", int(_stats(base)["429"]), "count", "-"))

            rows += asyncio.run(_reads(folder))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rows


if __name__ == "__main__":
    from rich.console import Console
    from rich.table import Table

    table = Table(title="marketspine store and backfill")
    for column in ("benchmark", "value", "unit", "goal"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else 60):
        table.add_row(row["benchmark"], f"{row['value']:,}", row["unit"], row["goal"])
    Console().print(table)
