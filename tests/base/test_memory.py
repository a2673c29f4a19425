"""Memory windows: hits only for fully covered ranges, merging, bounded by LRU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from marketspine._base.memory import HELD_SHARE, CandleMemory, MemoryBudget, record_bytes
from marketspine._live.state import LiveState
from marketspine.records import Candle, Orderbook, OrderbookUnit, Trade

M = 60_000


def candles(first: int, last: int, market: str = "KRW-A") -> list[Candle]:
    return [Candle(market, "1m", i * M, 1, 1, 1, 1, 1, 1, i * M) for i in range(first, last)]


def test_hit_only_inside_the_complete_range() -> None:
    memory = CandleMemory()
    key = ("KRW-A", "1min")
    memory.put(key, 10 * M, 20 * M, candles(10, 20))
    got = memory.get(key, 12 * M, 15 * M)
    assert got is not None and [c.start_ms // M for c in got] == [12, 13, 14]
    assert memory.get(key, 5 * M, 15 * M) is None  # starts before the window
    assert memory.get(key, 12 * M, 21 * M) is None  # ends after it
    latest = memory.latest(key, 3, 20 * M)
    assert latest is not None and [c.start_ms // M for c in latest] == [17, 18, 19]
    assert memory.latest(key, 11, 20 * M) is None
    stats = memory.statistics()
    assert (stats.hits, stats.misses) == (2, 3)


def test_touching_ranges_merge_and_sparse_windows_count_as_covered() -> None:
    memory = CandleMemory()
    key = ("KRW-A", "1min")
    memory.put(key, 10 * M, 20 * M, candles(10, 12))  # 12..19 had no trades
    memory.put(key, 20 * M, 30 * M, candles(25, 30))
    assert memory.covered(key) == (10 * M, 30 * M)
    got = memory.get(key, 10 * M, 30 * M)
    assert got is not None and [c.start_ms // M for c in got] == [10, 11, 25, 26, 27, 28, 29]
    memory.put(key, 100 * M, 110 * M, candles(100, 110))  # disjoint: replaces
    assert memory.covered(key) == (100 * M, 110 * M)


def test_provisional_candles_answer_counts_not_ranges_until_replaced() -> None:
    memory = CandleMemory()
    key = ("KRW-A", "1min")
    memory.put(key, 10 * M, 20 * M, candles(10, 20))
    built = Candle("KRW-A", "1m", 20 * M, 2, 2, 2, 2, 2, 2, 20 * M)  # from the trade stream
    memory.put(key, 20 * M, 21 * M, [built], provisional=True)
    latest = memory.latest(key, 3, 21 * M)
    assert latest is not None and latest[-1] == built  # a poll by count takes it
    assert memory.get(key, 15 * M, 21 * M) is None  # a range holding it reads upstream's
    assert memory.get(key, 15 * M, 20 * M) is not None
    # Upstream's own candle for that range replaces it, and ranges hit again.
    memory.put(key, 19 * M, 21 * M, candles(19, 21))
    got = memory.get(key, 15 * M, 21 * M)
    assert got is not None and got[-1] == candles(20, 21)[0]
    # A late trade takes a provisional candle back: the whole window goes.
    memory.put(key, 21 * M, 22 * M, [], provisional=True)  # a window without a trade
    assert not memory.drop_provisional(key, 20 * M)  # upstream's now: kept
    memory.put(key, 22 * M, 23 * M, candles(22, 23), provisional=True)
    assert memory.drop_provisional(key, 22 * M)
    assert memory.covered(key) is None


def test_bounded_by_lru_across_series_and_per_series() -> None:
    memory = CandleMemory(max_candles=25, per_series=15)
    memory.put(("KRW-A", "1min"), 0, 20 * M, candles(0, 20, "KRW-A"))
    assert memory.covered(("KRW-A", "1min")) == (5 * M, 20 * M)  # oldest 5 dropped
    memory.put(("KRW-B", "1min"), 0, 10 * M, candles(0, 10, "KRW-B"))
    assert memory.get(("KRW-A", "1min"), 5 * M, 6 * M) is not None  # A is now most recent
    memory.put(("KRW-C", "1min"), 0, 10 * M, candles(0, 10, "KRW-C"))
    assert memory.covered(("KRW-B", "1min")) is None  # least recently used went first
    assert memory.statistics().candles <= 25


def test_clear_forgets_every_window() -> None:
    memory = CandleMemory()
    memory.put(("KRW-A", "1min"), 0, 10 * M, candles(0, 10))
    memory.clear()
    assert memory.covered(("KRW-A", "1min")) is None
    assert memory.statistics().candles == 0


# -- one budget in bytes over candle windows and live state ------------------------------------


def trade(market: str, seq: int) -> Trade:
    return Trade(market, seq * 1000, 100.0, 1.0, "BID", 10**16 + seq, 99.0, 1.0)


def test_the_byte_budget_evicts_least_recently_used_across_windows_and_markets() -> None:
    probe = CandleMemory()
    probe.put(("KRW-A", "1min"), 0, 100 * M, candles(0, 100))
    per_window = probe.statistics().bytes  # one 100-candle window
    budget = MemoryBudget(per_window * 6)
    memory = CandleMemory(budget=budget)
    live = LiveState(clock=lambda: 0.0, budget=budget, trades_per_market=10_000)
    for name in ("KRW-A", "KRW-B", "KRW-C"):
        memory.put((name, "1min"), 0, 100 * M, candles(0, 100, name))
    seq = 0
    while live.statistics().bytes < 2 * per_window:  # a live market as big as two windows
        live.apply(trade("KRW-L", seq))
        seq += 1
    assert memory.statistics().series == 3
    assert budget.used_bytes <= budget.limit_bytes
    assert memory.get(("KRW-A", "1min"), 0, M) is not None  # A read: now recently used
    grown = 2 * seq
    for more in range(seq, grown):  # the live market grows past what is left
        live.apply(trade("KRW-L", more))
    assert budget.used_bytes <= budget.limit_bytes
    # B and C were least recently used; A (read) survived, and the live market holds all.
    assert memory.covered(("KRW-B", "1min")) is None
    assert memory.covered(("KRW-A", "1min")) is not None
    assert live.trade_count("KRW-L") == grown
    assert budget.statistics().evictions >= 1
    # Now the live market is the oldest: a new window pushes it out, forming candles aside.
    live.trades("KRW-X", 1)  # reading an unknown market touches nothing
    memory.put(("KRW-D", "1min"), 0, 100 * M, candles(0, 100, "KRW-D"))
    memory.put(("KRW-E", "1min"), 0, 100 * M, candles(0, 100, "KRW-E"))
    memory.put(("KRW-F", "1min"), 0, 100 * M, candles(0, 100, "KRW-F"))
    assert live.trade_count("KRW-L") == 0 and live.statistics().evicted_markets == 1
    assert budget.used_bytes <= budget.limit_bytes
    assert live.statistics().bytes == 0


def test_tickers_and_books_are_charged_and_replacements_do_not_grow() -> None:
    budget = MemoryBudget(10**6)
    live = LiveState(clock=lambda: 0.0, budget=budget)
    book = Orderbook("KRW-A", 1, 1.0, 1.0, tuple(OrderbookUnit(1, 1, 1, 1) for _ in range(15)), 0)
    live.apply(book)
    once = budget.used_bytes
    assert once >= record_bytes(book) > 15 * 4 * 24
    for _ in range(100):
        live.apply(book)
    assert budget.used_bytes == once


def test_one_series_never_takes_more_than_half_the_budget() -> None:
    budget = MemoryBudget(record_bytes(candles(0, 1)[0]) * 100)
    memory = CandleMemory(budget=budget)
    memory.put(("KRW-A", "1min"), 0, 1000 * M, candles(0, 1000))
    held = memory.statistics()
    assert 0 < held.candles < 50 and held.bytes <= budget.limit_bytes // 2
    covered = memory.covered(("KRW-A", "1min"))
    assert covered is not None and covered[1] == 1000 * M  # the newest are kept
    memory.clear()
    assert budget.used_bytes == 0 and memory.statistics().candles == 0


async def test_spine_keeps_candle_windows_within_memory_mb(
    tmp_path: Path, sim_app: Any, sim_clock: Callable[[], int]
) -> None:
    import httpx

    from marketspine._spine.spine import Spine

    async with Spine(  # the simulator's clock stands still: no minute closes meanwhile
        "http://sim",
        tmp_path / "m.db",
        transport=httpx.ASGITransport(app=sim_app),
        memory_mb=0.5,
        warmup_every_s=0,
        wall_ms=sim_clock,
    ) as spine:
        markets = [m.market for m in await spine.markets()][:6]
        for market in markets:  # 6 x 400 candles: about twice what 0.5 MiB holds
            await spine.candles(market, "1m", count=400, closed_only=True)
            stats = spine.statistics()
            assert 0 < stats.memory_bytes <= stats.memory_limit_bytes == int(2**19 * HELD_SHARE)
        assert spine.statistics().memory_series < len(markets)  # the oldest were evicted
        again = await spine.candles(markets[-1], "1m", count=400, closed_only=True)
        assert again.meta.source == "memory"  # the most recent one is still held
