"""Memory windows: hits only for fully covered ranges, merging, bounded by LRU."""

from __future__ import annotations

from marketspine._memory import CandleMemory
from marketspine._records import Candle

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
