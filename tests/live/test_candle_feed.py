"""Candle kinds of a stream, pure part: trades build the forming candle, closed windows are
reported once, windows that had no trade are passed over, and lost trades force a read."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from marketspine._base.timeframes import TIMEFRAMES
from marketspine._live.candle_feed import (
    CLOSE_SETTLE_MS,
    CandleFollower,
    ClosedCandle,
    follow_candles,
)
from marketspine._live.listener import Gap
from marketspine.errors import UpstreamError
from marketspine.records import Candle, Trade

MINUTE = TIMEFRAMES["1m"]
T0 = 1_785_000_000_000 // 60_000 * 60_000  # a minute boundary in 2026


def trade(ms: int, price: float, seq: int, volume: float = 1.0) -> Trade:
    return Trade("KRW-BTC", ms, price, volume, "BID", seq, 100.0, 0.0)


def test_trades_build_the_forming_candle_on_top_of_the_seed() -> None:
    seed = Candle("KRW-BTC", "1m", T0, 100.0, 101.0, 99.0, 100.5, 2.0, 201.0, T0 + 5_000)
    follower = CandleFollower("KRW-BTC", MINUTE, seed, T0 + 6_000)
    assert follower.current() == seed
    assert follower.current() is None  # nothing new since
    # A trade already inside the seed changes nothing; a later one updates the candle.
    assert follower.apply(trade(T0 + 5_000, 150.0, 1)) is None
    updated = follower.apply(trade(T0 + 7_000, 102.0, 2))
    assert updated is not None
    assert (updated.open, updated.high, updated.close, updated.volume) == (100.0, 102.0, 102.0, 3.0)
    assert follower.due(T0 + 59_999) is None
    assert follower.due(T0 + 60_000) == (T0, T0 + 60_000)
    final = Candle("KRW-BTC", "1m", T0, 100.0, 102.0, 99.0, 102.0, 3.5, 350.0, T0 + 7_000)
    assert follower.done(T0 + 60_000, [final]) == [final]
    assert follower.due(T0 + 60_000) is None
    # A late trade of the reported window changes nothing and is never reported again.
    assert follower.apply(trade(T0 + 8_000, 103.0, 3)) is None
    assert follower.due(T0 + 120_000) is None


def candle_at(start: int) -> Candle:
    return Candle("KRW-BTC", "1m", start, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, start + 10)


def test_windows_without_a_trade_are_passed_over() -> None:
    follower = CandleFollower("KRW-BTC", MINUTE, None, T0 + 1_000)
    assert follower.current() is None
    assert follower.due(T0 + 3 * 60_000) is None  # three quiet minutes: nothing to read
    assert follower.next_close_ms() is None
    follower.apply(trade(T0 + 3 * 60_000 + 10, 100.0, 1))
    assert follower.next_close_ms() == T0 + 4 * 60_000
    assert follower.due(T0 + 5 * 60_000) == (T0 + 3 * 60_000, T0 + 5 * 60_000)


def test_a_trade_that_arrives_after_its_window_closed_is_still_reported() -> None:
    follower = CandleFollower("KRW-BTC", MINUTE, None, T0 + 1_000)
    assert follower.due(T0 + 2 * 60_000) is None  # the clock ran ahead of the trade stream
    follower.apply(trade(T0 + 30_000, 100.0, 1))
    assert follower.due(T0 + 2 * 60_000) == (T0, T0 + 2 * 60_000)
    rows = [candle_at(T0), candle_at(T0 + 60_000)]
    # Only the window seen trading is reported: the other may be a read of a quiet window.
    assert follower.done(T0 + 2 * 60_000, rows) == [rows[0]]


def test_a_trade_of_a_window_before_the_start_is_not_reported() -> None:
    follower = CandleFollower("KRW-BTC", MINUTE, None, T0 + 1_000)
    assert follower.apply(trade(T0 - 1, 100.0, 1)) is None
    assert follower.due(T0 + 60_000) is None


def test_lost_trades_make_every_closed_window_worth_a_read() -> None:
    follower = CandleFollower("KRW-BTC", MINUTE, None, T0 + 1_000)
    follower.apply(Gap("KRW-BTC", T0 + 2_000, T0 + 50_000, 0, False, "test"))
    assert follower.due(T0 + 60_000) == (T0, T0 + 60_000)
    assert follower.done(T0 + 60_000, [candle_at(T0)]) == [candle_at(T0)]
    # Until a trade after the loss arrives, every closed window is still worth a read.
    assert follower.due(T0 + 120_000) == (T0 + 60_000, T0 + 120_000)
    follower.apply(trade(T0 + 120_500, 100.0, 9))
    assert follower.done(T0 + 120_000, []) == []
    assert follower.due(T0 + 180_000) == (T0 + 120_000, T0 + 180_000)


class FakeListener:
    """A listener fed by the test."""

    def __init__(self) -> None:
        self.items: deque[object] = deque()
        self.arrived = asyncio.Event()
        self.closed = False

    def put(self, item: object) -> None:
        self.items.append(item)
        self.arrived.set()

    def get_nowait(self) -> object | None:
        return self.items.popleft() if self.items else None

    async def __anext__(self) -> object:
        while not self.items:
            if self.closed:
                raise StopAsyncIteration
            self.arrived.clear()
            await self.arrived.wait()
        return self.items.popleft()


async def test_follow_yields_forming_then_closed_candles_from_the_reader() -> None:
    clock = [T0 + 1_000]
    listener = FakeListener()
    follower = CandleFollower("KRW-BTC", MINUTE, None, clock[0])
    final = Candle("KRW-BTC", "1m", T0, 100.0, 100.0, 100.0, 100.0, 1.0, 100.0, T0 + 2_000)
    reads: list[tuple[int, int]] = []
    failures = [1]

    async def read_closed(f: CandleFollower, lo: int, hi: int) -> Sequence[Candle]:
        if failures[0]:
            failures[0] -= 1
            raise UpstreamError("down for a moment")
        reads.append((lo, hi))
        return [final]

    events = follow_candles(
        listener,
        [follower],
        pass_trades=False,
        upstream_now_ms=lambda: clock[0],
        read_closed=read_closed,
    )
    listener.put(trade(T0 + 2_000, 100.0, 1))
    forming = await asyncio.wait_for(anext(events), 5)
    assert isinstance(forming, Candle) and forming.start_ms == T0  # the trade itself is not passed
    clock[0] = T0 + 60_000 + CLOSE_SETTLE_MS
    listener.put(trade(T0 + 60_500, 101.0, 2))  # wakes the loop; the first read fails
    second = await asyncio.wait_for(anext(events), 5)
    assert isinstance(second, Candle) and second.start_ms == T0 + 60_000
    closed = await asyncio.wait_for(anext(events), 5)  # retried on the next wake-up
    assert closed == ClosedCandle(final)
    assert reads == [(T0, T0 + 60_000)]
    listener.closed = True
    listener.arrived.set()
    await events.aclose()
