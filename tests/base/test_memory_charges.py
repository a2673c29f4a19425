"""What the memory budget is charged is what the objects take (tracemalloc), for candle
windows read from the store and for live trades decoded from WebSocket frames alike. When one
holder's charge ran high (windows, 1.43x: their shared market strings counted per candle, and
each start counted twice), every window the budget evicted for live trades freed less than it
was charged, and the soak's RSS kept climbing while the budget's total stayed flat."""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

from marketspine._base.memory import CandleMemory, MemoryBudget
from marketspine._base.time import format_utc
from marketspine._base.timeframes import TIMEFRAMES
from marketspine._live.state import LiveState
from marketspine._store.sqlite import SQLiteStore
from marketspine._upbit.rest import decode_candles
from marketspine._upbit.ws import decode_ws
from marketspine.records import Candle, Trade

T0 = 28_333_334 * 60_000  # a minute start in 2023
MARKETS = [f"KRW-M{i:02d}" for i in range(8)]
LOW, HIGH = 0.85, 1.15  # real / charged


def traced(work: Callable[[], object]) -> int:
    """Bytes ``work()`` left allocated (Python-level, every thread)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = work()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before


async def traced_async(work: Callable[[], Awaitable[object]]) -> int:
    """Bytes ``await work()`` left allocated (Python-level, every thread)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def random_minute(market: str, i: int, rng: random.Random) -> Candle:
    """The ``i``-th 1m candle from T0, its six prices and amounts drawn from ``rng``."""
    open_, high, low, close, volume, value = (rng.uniform(1, 1e6) for _ in range(6))
    start = T0 + i * 60_000
    return Candle(market, "1m", start, open_, high, low, close, volume, value, start + 59_000)


async def store_minutes(store: SQLiteStore, count: int, rng: random.Random) -> tuple[int, int]:
    """``count`` random 1m candles from T0 for each of MARKETS; returns their span."""
    span = (T0, T0 + count * 60_000)
    for market in MARKETS:
        rows = [random_minute(market, i, rng) for i in range(count)]
        await store.write_page(market, TIMEFRAMES["1m"], rows, span)
    await store.read(MARKETS[0], TIMEFRAMES["1m"], *span)  # the connection's caches
    return span


async def test_a_window_read_from_the_store_is_charged_what_it_takes(tmp_path: Path) -> None:
    tf = TIMEFRAMES["1m"]
    budget = MemoryBudget(2**30)
    memory = CandleMemory(budget=budget)
    async with SQLiteStore(tmp_path / "charges.db") as store:
        span = await store_minutes(store, 1000, random.Random(7))

        async def fill() -> None:
            for market in MARKETS:  # as Spine fills a window on a memory miss
                memory.put((market, "1m"), *span, await store.read(market, tf, *span))

        real = await traced_async(fill)
    assert memory.statistics().candles == 8000
    assert LOW <= real / budget.used_bytes <= HIGH, (real, budget.used_bytes)


def upstream_page(market: str, starts: range, rng: random.Random) -> bytes:
    """A REST candle answer as Upbit sends it (newest first)."""
    return json.dumps([
        {
            "market": market, "candle_date_time_utc": format_utc(start)[:19],
            "candle_date_time_kst": format_utc(start + 9 * 3_600_000)[:19],
            "opening_price": rng.uniform(1, 1e6), "high_price": rng.uniform(1, 1e6),
            "low_price": rng.uniform(1, 1e6), "trade_price": rng.uniform(1, 1e6),
            "timestamp": start + 59_000, "candle_acc_trade_price": rng.uniform(0, 1e9),
            "candle_acc_trade_volume": rng.uniform(0, 1e3), "unit": 1,
        }
        for start in reversed(starts)
    ]).encode()  # fmt: skip


async def test_a_window_of_stored_and_fetched_candles_is_charged_what_it_takes(
    tmp_path: Path,
) -> None:
    # A chart's window: what the store held, joined by the newest pages fetched upstream.
    # Charged a market string for every candle (as if each decoded candle brought its own),
    # such a mixed window would hold 0.74 of its charge.
    tf, rng = TIMEFRAMES["1m"], random.Random(9)
    async with SQLiteStore(tmp_path / "charges.db") as store:
        _, stored_end = await store_minutes(store, 800, rng)
        end = stored_end + 200 * 60_000
        pages = [upstream_page(m, range(stored_end, end, 60_000), rng) for m in MARKETS]
        budget = MemoryBudget(2**30)
        memory = CandleMemory(budget=budget)

        async def fill() -> None:
            for market, page in zip(MARKETS, pages, strict=True):
                stored = await store.read(market, tf, T0, stored_end)
                memory.put((market, "1m"), T0, stored_end, stored)
                memory.put((market, "1m"), stored_end, end, decode_candles(page, tf)[::-1])

        real = await traced_async(fill)
    assert memory.statistics().candles == 8000
    assert LOW <= real / budget.used_bytes <= HIGH, (real, budget.used_bytes)


def test_live_trades_from_websocket_frames_are_charged_what_they_take() -> None:
    rng = random.Random(11)
    frames = [
        json.dumps({
            "type": "trade", "code": market, "timestamp": T0 + k, "trade_timestamp": T0 + k,
            "trade_price": rng.uniform(1, 1e6), "trade_volume": rng.uniform(0, 10),
            "ask_bid": rng.choice(["ASK", "BID"]), "prev_closing_price": 100.0,
            "change": "RISE", "change_price": rng.uniform(0, 5),
            "sequential_id": 17_000_000_000_000_000 + k * 8 + i,
            "best_ask_price": rng.uniform(1, 1e6), "best_ask_size": rng.uniform(0, 9),
            "best_bid_price": rng.uniform(1, 1e6), "best_bid_size": rng.uniform(0, 9),
            "stream_type": "REALTIME",
        }).encode()
        for k in range(1500)
        for i, market in enumerate(MARKETS)
    ]  # fmt: skip
    budget = MemoryBudget(2**30)
    live = LiveState(clock=lambda: 0.0, budget=budget)

    def apply() -> LiveState:
        for frame in frames:
            event = decode_ws(frame)
            assert isinstance(event, Trade)
            live.apply(event)
        return live

    real = traced(apply)  # past the per-market cap: one in, one out
    assert LOW <= real / budget.used_bytes <= HIGH, (real, budget.used_bytes)
