"""The quotation reads of a replay, as of a hand-set replay clock: the ticker and book at the
clock (the replay's last, else the last stored before it), the trades up to it newest first,
and candles built from the trades up to it — the last one forming while the clock is inside
its window, Upbit's exclusive ``to``, and enough windows read back to fill ``count``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from replay_support import BTC, ETH, T0, Recorded, recorded, write_recording

from marketspine._base.timeframes import parse_timeframe
from marketspine._spine.replay_quotes import ReplayQuotes, ReplayState, candles_of
from marketspine._store.recording_sqlite import SQLiteRecording
from marketspine._store.sqlite import SQLiteStore


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[tuple[SQLiteRecording, Recorded]]:
    data = recorded()
    await write_recording(tmp_path / "rec.db", data)
    async with SQLiteStore(tmp_path / "rec.db", read_only=True) as store:
        yield SQLiteRecording(store), data


async def test_ticker_and_book_at_the_clock(opened: tuple[SQLiteRecording, Recorded]) -> None:
    recording, data = opened
    state, clock = ReplayState(), Clock(T0 + 30_000)
    quotes = ReplayQuotes(recording, state, clock)
    stored = [t for t in data.tickers if t.market == BTC and t.ms <= clock.ms][-1]
    assert await quotes.tickers([BTC]) == [stored]
    book = [b for b in data.books if b.market == ETH and b.ms <= clock.ms][-1]
    assert await quotes.orderbooks([ETH]) == [book]
    later = next(t for t in data.tickers if t.market == BTC and t.ms > clock.ms)
    state.tickers[BTC] = later  # handed out by the replay: answered once the clock is there
    assert await quotes.tickers([BTC]) == [stored]
    clock.ms = later.ms
    assert await quotes.tickers([BTC]) == [later]
    clock.ms = T0 - 1  # before anything was recorded
    assert await quotes.tickers([BTC, ETH]) == [] and await quotes.orderbooks([ETH]) == []


async def test_trades_up_to_the_clock_newest_first(
    opened: tuple[SQLiteRecording, Recorded],
) -> None:
    recording, data = opened
    clock = Clock(T0 + 45_000)
    quotes = ReplayQuotes(recording, ReplayState(), clock)
    btc = sorted((t for t in data.trades if t.market == BTC), key=lambda t: t.seq)
    upto = [t for t in btc if t.ms <= clock.ms]
    assert await quotes.trades(BTC, 5) == upto[::-1][:5]
    assert await quotes.trades(BTC, 5, cursor=upto[-3].seq) == upto[:-3][::-1][:5]
    assert await quotes.trades(BTC, 500) == upto[::-1]  # fewer exist: every one


async def test_candles_up_to_the_clock(opened: tuple[SQLiteRecording, Recorded]) -> None:
    recording, data = opened
    tf = parse_timeframe("1m")
    clock = Clock(T0 + 150_000)  # 14:15:50, inside the 14:15 window
    quotes = ReplayQuotes(recording, ReplayState(), clock)
    btc = sorted((t for t in data.trades if t.market == BTC), key=lambda t: t.ms)
    want = candles_of([t for t in btc if t.ms <= clock.ms], tf)
    candles, forming = await quotes.candles(BTC, tf, 200)
    assert candles == want and len(want) == 3
    assert forming == tf.floor(clock.ms) == candles[-1].start_ms
    assert candles[-1].last_trade_ms <= clock.ms
    two, _ = await quotes.candles(BTC, tf, 2)
    assert two == want[-2:]
    before, none_forming = await quotes.candles(BTC, tf, 200, to_ms=want[-1].start_ms)
    assert before == want[:-1] and none_forming is None
    clock.ms = T0 + 180_000  # 14:16:20: the 14:15 window has closed, 14:16 is forming
    later, forming = await quotes.candles(BTC, tf, 3)
    assert forming == tf.floor(clock.ms) == later[-1].start_ms
    assert later[:2] == candles_of([t for t in btc if t.ms < forming], tf)[-2:]
    assert later[1].start_ms == candles[-1].start_ms and later[1].volume > candles[-1].volume
