"""The mixed workload (issue 9 item 4): a bot polling the last 200 1m candles and the ticker
every second for 5 markets, a chart opening 1,000 15m candles on 10 markets (again every
30 s; its memory is cleared once, a minute in, as a restart would), a screener of all KRW
tickers every 10 s — run for ``SECONDS`` against two
simulators at once: once through Spine (memory, database, live state) and once straight
through the Client (no layers: every request goes upstream). Upstream calls are what each
simulator served (`GET /sim/stats`).

Which layer could answer a candle request that memory missed is judged from the requests
alone, not from Spine's internals: the first read of a series, and a read after a window of
its timeframe closed (a candle nobody has stored yet), can only come from upstream; every
other miss asks for candles an earlier answer already brought, so the database holds them —
unless that answer held closes built from the trade stream (``meta.provisional``), which
stay in memory only: after the simulated restart such a read can only come from upstream.
The database's rate is taken over those; the others have a row of their own.

`python -m bench workload` (or `python -m bench.workload [SECONDS]`).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench._sim import simulator
from marketspine._base.timeframes import parse_timeframe
from marketspine._budget.local import DEFAULT_LIMIT, DEFAULT_MARGIN
from marketspine._budget.rules import Priority
from marketspine._client.client import Client
from marketspine._spine.result import ResultMeta
from marketspine._spine.spine import Spine

Row = dict[str, Any]
SECONDS = 120.0
BOT = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-DOGE"]
CHART: list[str] = []  # the next 10 listed KRW markets, filled from the simulator


# One candle request: its series (market, timeframe), the start of the window forming on
# upstream's clock just before it was asked, and its answer's meta.
Read = tuple[tuple[str, str], int, ResultMeta]


def row(name: str, value: float, unit: str, goal: str) -> Row:
    return {"benchmark": name, "value": value, "unit": unit, "goal": goal}


async def served(url: str, group: str | None = None) -> int:
    """Requests the simulator served: all of them, or those of one rate-limit group."""
    async with httpx.AsyncClient(base_url=url) as http:
        stats = (await http.get("/sim/stats")).json()
    by_group: dict[str, int] = stats["requests"]["by_group"]
    return int(by_group.get(group, 0) if group is not None else sum(by_group.values()))


async def every(seconds: float, until: float, job: Callable[[], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while next_at < until:
        await job()
        next_at += seconds
        await asyncio.sleep(max(0.0, next_at - loop.time()))


async def with_layers(url: str, db: Path, seconds: float) -> dict[str, Any]:
    metas: list[tuple[str, ResultMeta]] = []
    reads: list[Read] = []
    async with Spine(url, db, warmup_every_s=0) as spine:

        async def candles(market: str, tf: str, count: int, priority: Priority) -> None:
            window = parse_timeframe(tf).floor(spine.client.upstream_now_ms())
            result = await spine.candles(market, tf, count=count, priority=priority)
            metas.append(("candles", result.meta))
            reads.append(((market, tf), window, result.meta))

        await spine.watch(["ticker", "candle.1m"], BOT)
        await spine.watch(["candle.15m"], CHART)  # a chart keeps its forming candle live
        until = asyncio.get_running_loop().time() + seconds

        async def bot() -> None:
            for market in BOT:
                await candles(market, "1m", 200, Priority.HIGH)
                # the stream keeps a watched ticker current: a quiet market's is just older
                tickers = await spine.tickers([market], max_age_s=10, priority=Priority.HIGH)
                metas.append(("ticker", tickers.meta))

        opened = 0
        cold: dict[str, float] = {}

        async def open_chart() -> None:
            for market in CHART:
                await candles(market, "15m", 1000, Priority.NORMAL)

        async def chart() -> None:
            nonlocal opened
            opened += 1
            if opened == 3:  # a restart a minute in: memory is empty, the database is not
                spine.clear_memory()
            if opened > 1:
                await open_chart()
                return
            # The cold opening: how long it took, and how much of the candles budget it shared.
            calls, started = await served(url, "candles"), time.perf_counter()
            await open_chart()
            cold["seconds"] = time.perf_counter() - started
            cold["calls"] = await served(url, "candles") - calls

        async def screener() -> None:
            result = await spine.tickers(quote="KRW", max_age_s=5, priority=Priority.LOW)
            metas.append(("screener", result.meta))

        await asyncio.gather(
            every(1, until, bot), every(30, until, chart), every(10, until, screener)
        )
        memory = spine._memory.statistics()
        stats = spine.statistics()
    return {
        "calls": await served(url),
        "metas": metas,
        "reads": reads,
        "memory": memory,
        "closes": (stats.hot_closes_live, stats.hot_closes_fetched),
        "waited": (stats.hot_reads_waited, stats.hot_reads_waited_in_vain),
        "cold": cold,
    }


async def without_layers(url: str, seconds: float) -> int:
    async with Client(url) as client:
        until = asyncio.get_running_loop().time() + seconds

        async def bot() -> None:
            for market in BOT:
                await client.candles(market, "1m", count=200, priority=Priority.HIGH)
                await client.tickers([market], priority=Priority.HIGH)

        async def chart() -> None:
            for market in CHART:
                to_ms = None
                for _ in range(5):  # 1,000 candles: five pages
                    page = await client.candles(market, "15m", count=200, to_ms=to_ms)
                    if len(page) < 200:
                        break
                    to_ms = page[-1].start_ms

        async def screener() -> None:
            await client.tickers_by_quote(["KRW"], priority=Priority.LOW)

        await asyncio.gather(
            every(1, until, bot), every(30, until, chart), every(10, until, screener)
        )
    return await served(url)


def misses_by_cause(
    reads: list[Read],
) -> tuple[list[ResultMeta], list[ResultMeta], list[ResultMeta]]:
    """The answers memory missed, split into (first reads, reads after a window closed and
    reads after an answer holding closes built from trades, which only memory held: nothing
    stored could answer them; the rest: an earlier answer brought their candles, so the
    database could answer them) and, of the first kind, those after a close."""
    unstored: list[ResultMeta] = []
    stored: list[ResultMeta] = []
    closes: list[ResultMeta] = []
    last_window: dict[tuple[str, str], int] = {}
    memory_only: set[tuple[str, str]] = set()  # the last answer held provisional closes
    for series, window, meta in reads:
        before = last_window.get(series)
        last_window[series] = window if before is None else max(before, window)
        held_only_in_memory = series in memory_only
        if meta.provisional:
            memory_only.add(series)
        else:
            memory_only.discard(series)
        if set(meta.sources) <= {"memory", "live"}:
            continue
        closed = before is not None and window > before
        (unstored if before is None or closed or held_only_in_memory else stored).append(meta)
        if closed:
            closes.append(meta)
    return unstored, stored, closes


def summarize(layered: dict[str, Any], plain_calls: int, seconds: float) -> list[Row]:
    metas: list[tuple[str, ResultMeta]] = layered["metas"]
    calls = layered["calls"]
    label = f"mixed workload {seconds:g} s"
    candle_metas = [m for kind, m in metas if kind == "candles"]
    from_memory = sum(1 for m in candle_metas if set(m.sources) <= {"memory", "live"})
    unstored, stored, closes = misses_by_cause(layered["reads"])
    from_db = sum(1 for m in stored if "upstream" not in m.sources)
    unstored_up = sum(1 for m in unstored if "upstream" in m.sources)
    by_priority: dict[str, list[float]] = defaultdict(list)
    for _, meta in metas:
        by_priority[meta.priority.name if meta.priority is not None else "?"].append(
            meta.elapsed_ms
        )
    rows = [
        row(f"{label}: upstream calls without layers (Client only)", plain_calls, "calls", "-"),
        row(f"{label}: upstream calls through Spine", calls, "calls", "-"),
        row(f"{label}: upstream calls saved", 100 * (1 - calls / plain_calls), "%", "≥ 80"),
        row(f"{label}: upstream calls per minute through Spine", calls * 60 / seconds, "/min", "-"),
        row(
            f"{label}: candle requests answered by memory/live ({len(candle_metas)} requests)",
            100 * from_memory / max(1, len(candle_metas)),
            "%",
            "≥ 90",
        ),
        row(
            f"{label}: memory misses the database could answer (stored before), "
            f"answered by it ({from_db} of {len(stored)})",
            100 * from_db / max(1, len(stored)),
            "%",
            "≥ 95",
        ),
        row(
            f"{label}: memory misses of candles not stored yet (first reads, new closes, "
            f"closes built from trades), asked upstream ({unstored_up} of them)",
            len(unstored),
            "misses",
            "-",
        ),
        row(
            f"{label}: of which new closes (learned series keep them hot)",
            len(closes),
            "misses",
            "≤ 2",
        ),
        row(
            f"{label}: closes of kept-hot series taken from the trade stream "
            f"(of {sum(layered['closes'])}; the others one REST page a market)",
            layered["closes"][0],
            "closes",
            "-",
        ),
        row(
            f"{label}: polls that waited for a close the keeper was about to hold "
            f"({layered['waited'][1]} of them in vain, then asked on)",
            layered["waited"][0],
            "reads",
            "-",
        ),
    ]
    for name in ("HIGH", "NORMAL", "LOW"):
        samples = sorted(by_priority.get(name, []))
        if samples:
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            rows.append(
                row(
                    f"{label}: {name} latency p50 ({len(samples):,} answers)",
                    statistics.median(samples),
                    "ms",
                    "-",
                )
            )
            rows.append(row(f"{label}: {name} latency p99", p99, "ms", "-"))
    # The chart's cold reads are bound by the budget: 10 reads of 5 pages, one after the
    # other, beside the watch's forming-candle seeds and the bot's first reads, at 10/s.
    for name in ("HIGH", "NORMAL"):
        cold = sorted(m.elapsed_ms for m in candle_metas if _asked(m, name))
        warm = sorted(
            m.elapsed_ms
            for kind, m in metas
            if m.priority is not None and m.priority.name == name and "upstream" not in m.sources
        )
        if warm:
            p99 = warm[min(len(warm) - 1, int(len(warm) * 0.99))]
            rows.append(
                row(f"{label}: {name} latency p99 without upstream ({len(warm):,})", p99, "ms", "-")
            )
        if cold:
            rows.append(
                row(
                    f"{label}: {name} candle reads that asked upstream ({len(cold)}): "
                    f"median / max {statistics.median(cold):,.0f} /",
                    cold[-1],
                    "ms",
                    "-",
                )
            )
    rows += opening_rows(label, layered["cold"], len(CHART))
    return rows


def opening_rows(label: str, cold: dict[str, float], reads: int) -> list[Row]:
    """The floor the budget puts under the chart's cold opening (its reads one after the
    other): the candle calls upstream served while it ran (its pages, the bot's first reads
    and the watches' seeds), of which one window's worth can go at once and the rest at
    most 10 per window + margin floor (``LocalRateBudget``'s 1.02 s), so its reads together take
    at least that long, and the slowest of them at least their mean: under 100 answers of
    a priority, p99 is the slowest."""
    if not cold:
        return []
    calls = int(cold["calls"])
    floor_s = max(0, calls - DEFAULT_LIMIT) * (1 + DEFAULT_MARGIN) / DEFAULT_LIMIT
    return [
        row(
            f"{label}: NORMAL cold opening ({reads} reads in turn, {calls} candle calls "
            f"upstream while it ran): took",
            cold["seconds"] * 1000,
            "ms",
            f"≥ {floor_s * 1000:,.0f} (the budget's floor)",
        ),
        row(
            f"{label}: NORMAL cold opening: the budget's floor under its slowest read, "
            "hence under NORMAL p99 (the floor's mean per read)",
            floor_s * 1000 / reads,
            "ms",
            "-",
        ),
    ]


def _asked(meta: ResultMeta, priority: str) -> bool:
    return (
        meta.priority is not None and meta.priority.name == priority and "upstream" in meta.sources
    )


async def both(seconds: float, tmp: Path) -> list[Row]:
    with simulator("--latency-ms", "30") as a, simulator("--latency-ms", "30") as b:
        async with httpx.AsyncClient(base_url=a) as http:
            listed = [m["market"] for m in (await http.get("/v1/market/all")).json()]
        CHART[:] = [m for m in listed if m.startswith("KRW-") and m not in BOT][:10]
        layered, plain = await asyncio.gather(
            with_layers(a, tmp / "w.db", seconds), without_layers(b, seconds)
        )
    return summarize(layered, plain, seconds)


def run(seconds: float = SECONDS) -> list[Row]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(both(seconds, Path(tmp)))
    elapsed = time.perf_counter() - started
    rows.append(row("mixed workload: wall time of the run", elapsed, "s", "-"))
    return rows


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else SECONDS
    for item in run(seconds):
        print(f"{item['benchmark']:<85} {item['value']:>10,.2f} {item['unit']:<6} {item['goal']}")


if __name__ == "__main__":
    main()
