"""Spine benchmarks: in-process latencies, the design documents' four client scenarios, and
RSS with 250 live markets.

The simulator runs as a separate process (`marketspine sim --latency-ms 30`), so its CPU time
never counts against Spine's. Run with `python -m bench spine` (or `make bench`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench._sim import simulator
from marketspine._base.time import DAY_MS
from marketspine._budget.local import LocalRateBudget
from marketspine._spine.quotes import Channel
from marketspine._spine.spine import Spine

Row = dict[str, Any]


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def in_process(url: str, db: Path) -> list[Row]:
    rows: list[Row] = []
    async with Spine(url, db, warmup_every_s=0) as spine:
        await spine.candles("KRW-BTC", "1m", count=200, closed_only=True)
        warm = await timed(
            lambda: spine.candles("KRW-BTC", "1m", count=200, closed_only=True), 3000
        )
        rows.append(row("candles(200) warm, p50", pct(warm, 0.5), "ms", "-"))
        rows.append(row("candles(200) warm, p99", pct(warm, 0.99), "ms", "≤ 0.2"))

        now = spine.client.upstream_now_ms()
        end = now - now % 3_600_000
        start = end - 1000 * 3_600_000
        await spine.candles("KRW-ETH", "1h", start=start, end=end)

        async def cold() -> None:
            spine.clear_memory()  # forget memory: the store must answer
            await spine.candles("KRW-ETH", "1h", start=start, end=end)

        cold_samples = await timed(cold, 200)
        rows.append(row("candles(1000) cold from SQLite, p50", pct(cold_samples, 0.5), "ms", "-"))
        rows.append(
            row("candles(1000) cold from SQLite, p99", pct(cold_samples, 0.99), "ms", "≤ 5")
        )

        await spine.ticker("KRW-BTC", channel=Channel.WEBSOCKET_ONLY)  # waits for the stream
        live = await timed(lambda: spine.ticker("KRW-BTC", max_age_s=3600), 5000)
        rows.append(row("ticker from live state, p50", pct(live, 0.5), "ms", "-"))
        rows.append(row("ticker from live state, p99", pct(live, 0.99), "ms", "≤ 0.05"))
    return rows


async def scenarios(url: str, db: Path) -> list[Row]:
    rows: list[Row] = []
    async with Spine(url, db, warmup_every_s=0) as spine:
        started = time.perf_counter()
        chart = await spine.candles("KRW-XRP", "15m", count=1000)
        cold_s = time.perf_counter() - started
        rows.append(
            row(
                f"chart viewer 1,000 candles cold ({chart.meta.upstream_calls} calls)",
                cold_s * 1000,
                "ms",
                "< 2,000",
            )
        )
        cached = await timed(lambda: spine.candles("KRW-XRP", "15m", count=1000), 20)
        rows.append(
            row(
                "chart viewer 1,000 candles cached (incl. forming call)",
                statistics.median(cached),
                "ms",
                "< 100",
            )
        )
        cached_closed = await timed(
            lambda: spine.candles("KRW-XRP", "15m", count=1000, closed_only=True), 20
        )
        rows.append(
            row(
                "chart viewer 1,000 closed candles cached",
                statistics.median(cached_closed),
                "ms",
                "< 100",
            )
        )

        screener = await timed(lambda: spine.tickers(quote="KRW", max_age_s=0), 10)
        rows.append(
            row("screener: all KRW tickers (REST)", statistics.median(screener), "ms", "< 500")
        )
        bot = await timed(lambda: spine.ticker("KRW-BTC", max_age_s=0), 20)
        rows.append(row("bot: ticker over REST", statistics.median(bot), "ms", "< 50"))

        now = spine.client.upstream_now_ms()
        end = now - now % 60_000
        started = time.perf_counter()
        backtest = await spine.candles("KRW-BTC", "1m", start=end - 90 * DAY_MS, end=end)
        seconds = time.perf_counter() - started
        rows.append(
            row(
                f"backtester: 3 months of 1m ({len(backtest):,} candles), candles/s",
                len(backtest) / seconds,
                "candles/s",
                "≥ 1,900 (95% of 2,000)",
            )
        )
        started = time.perf_counter()
        frame = backtest.to_pandas()
        rows.append(
            row(
                f"backtester: to_pandas of {len(frame):,} rows",
                (time.perf_counter() - started) * 1000,
                "ms",
                "-",
            )
        )
        again = await spine.candles("KRW-BTC", "1m", start=end - 90 * DAY_MS, end=end)
        rows.append(
            row(
                "backtester: same 3 months again, upstream calls",
                again.meta.upstream_calls,
                "calls",
                "0",
            )
        )
    return rows


async def live_rss(url: str, db: Path, markets: int) -> list[Row]:
    import psutil

    process = psutil.Process(os.getpid())
    budget = LocalRateBudget(limit=1000)  # the simulator runs with --rate-limit 0
    async with Spine(url, db, budget=budget, warmup_every_s=0) as spine:
        codes = [m.market for m in await spine.markets()][:markets]
        baseline = process.memory_info().rss
        await spine.watch(["ticker", "orderbook", "trade"], codes)
        for code in codes:
            for trade in await spine.trades(code, count=1000):
                spine._live.apply(trade)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            held = spine._live.statistics()
            if held.tickers >= len(codes) * 0.9 and held.orderbooks >= len(codes) * 0.9:
                break
            await asyncio.sleep(0.1)
        held = spine._live.statistics()
        rss = process.memory_info().rss
    return [
        row(
            f"RSS with {len(codes)} live markets ({held.trades:,} trades, {held.orderbooks} books)",
            rss / 2**20,
            "MiB",
            "≤ 150",
        ),
        row("  of which the live state and stream", (rss - baseline) / 2**20, "MiB", "-"),
    ]


def row(name: str, value: float, unit: str, goal: str) -> Row:
    return {"benchmark": name, "value": value, "unit": unit, "goal": goal}


def run() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        with simulator("--latency-ms", "30") as url:
            rows += asyncio.run(in_process(url, Path(tmp) / "a.db"))
            rows += asyncio.run(scenarios(url, Path(tmp) / "b.db"))
        rss = subprocess.run(
            [sys.executable, "-m", "bench.spine", "rss"],
            capture_output=True,
            text=True,
            check=True,
        )
        rows += [eval_row(line) for line in rss.stdout.splitlines() if line.startswith("{")]
    return rows


def eval_row(line: str) -> Row:
    import json

    value: Row = json.loads(line)
    return value


def main() -> None:
    import json

    if sys.argv[1:] == ["rss"]:
        # A fresh process, so the figure is Spine's own and not the other benchmarks'.
        with (
            tempfile.TemporaryDirectory() as tmp,
            simulator("--markets", "250", "--rate-limit", "0") as url,
        ):
            for item in asyncio.run(live_rss(url, Path(tmp) / "r.db", 250)):
                print(json.dumps(item))
        return
    for item in run():
        print(f"{item['benchmark']:<70} {item['value']:>12,.3f} {item['unit']:<10} {item['goal']}")


if __name__ == "__main__":
    main()
