"""The widening read-back: its schedule (N, 4N, 16N ... windows before T) and when it stops."""

from __future__ import annotations

from marketspine._base.reach_back import MAX_READS, reach_windows, read_back, span_start
from marketspine._base.time import parse_time
from marketspine._base.timeframes import parse_timeframe

MINUTE = 60_000
HOUR = parse_timeframe("1h")
ONE_MINUTE = parse_timeframe("1m")
T = parse_time("2024-05-01T12:00:00Z")


def test_the_schedule_starts_at_the_windows_wanted_and_widens_fourfold() -> None:
    assert [reach_windows(5, attempt) for attempt in range(4)] == [5, 20, 80, 320]
    assert reach_windows(0, 0) == 1 and reach_windows(-3, 2) == 16  # never an empty span


def test_a_span_is_whole_windows_starting_before_the_end() -> None:
    assert span_start(HOUR, T, 1) == T - 3_600_000
    assert span_start(HOUR, T, 3) == T - 3 * 3_600_000
    # An end inside a window: that window starts before it and counts as the first.
    assert span_start(HOUR, T + 1, 1) == T
    assert span_start(parse_timeframe("1M"), parse_time("2024-05-01"), 2) == parse_time(
        "2024-03-01"
    )


class Market:
    """Candle starts of a sparse 1m market; records every read's ``lo``."""

    def __init__(self, starts: list[int]) -> None:
        self.starts = starts
        self.reads: list[int] = []

    async def read(self, lo: int) -> list[int]:
        self.reads.append(lo)
        return [s for s in self.starts if lo <= s < T]


async def test_a_busy_market_is_answered_by_the_first_read() -> None:
    market = Market([T - i * MINUTE for i in range(1, 100)])
    rows = await read_back(ONE_MINUTE, 10, T, market.read, oldest_ms=0)
    assert market.reads == [T - 10 * MINUTE] and len(rows) == 10


async def test_a_sparse_market_widens_until_enough_are_found() -> None:
    # One candle every 7 minutes: 10 need 70 windows, found in the third read (160).
    market = Market([T - 7 * i * MINUTE for i in range(1, 1000)])
    rows = await read_back(ONE_MINUTE, 10, T, market.read, oldest_ms=0)
    assert market.reads == [T - 10 * MINUTE, T - 40 * MINUTE, T - 160 * MINUTE]
    assert len(rows) == 22  # the caller keeps the newest 10


async def test_reading_stops_at_the_oldest_start_with_what_exists() -> None:
    listing = T - 30 * MINUTE
    market = Market([listing, T - 5 * MINUTE])
    rows = await read_back(ONE_MINUTE, 10, T, market.read, oldest_ms=listing)
    assert market.reads == [T - 10 * MINUTE, T - 40 * MINUTE]
    assert rows == [listing, T - 5 * MINUTE]


async def test_reading_stops_when_the_caller_says_nothing_more_can_be_found() -> None:
    market = Market([T - 5 * MINUTE])
    asked: list[tuple[int, int]] = []

    async def exhausted(rows: list[int], lo: int) -> bool:
        asked.append((len(rows), lo))
        return lo <= T - 40 * MINUTE  # e.g. upstream failing, or its horizon reached

    rows = await read_back(ONE_MINUTE, 10, T, market.read, oldest_ms=0, exhausted=exhausted)
    assert asked == [(1, T - 10 * MINUTE), (1, T - 40 * MINUTE)]
    assert rows == [T - 5 * MINUTE]


async def test_enough_found_or_the_oldest_reached_needs_no_exhaustion_check() -> None:
    async def never(rows: list[int], lo: int) -> bool:
        raise AssertionError("asked although the read already decided")

    busy = Market([T - i * MINUTE for i in range(1, 20)])
    await read_back(ONE_MINUTE, 3, T, busy.read, oldest_ms=0, exhausted=never)
    empty = Market([])
    await read_back(ONE_MINUTE, 3, T, empty.read, oldest_ms=T - 3 * MINUTE, exhausted=never)
    assert len(busy.reads) == len(empty.reads) == 1


async def test_the_number_of_reads_is_bounded() -> None:
    empty = Market([])
    await read_back(ONE_MINUTE, 1, T, empty.read, oldest_ms=-(1 << 80), max_reads=5)
    assert len(empty.reads) == 5
    unbounded = Market([])
    await read_back(ONE_MINUTE, 1, T, unbounded.read, oldest_ms=-(1 << 80))
    assert len(unbounded.reads) == MAX_READS
