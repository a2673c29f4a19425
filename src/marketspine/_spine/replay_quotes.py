"""What the quotation paths answer during a replay, as of the replay clock: the ticker and
book at the clock, the recent trades up to it, and candles built from the recorded trades up
to it (the last one forming while the clock is inside its window).

The ticker and book come from the events the replay has handed out (``ReplayState``); before
a market's first one, from the last stored before the clock (looked for an hour back).
Trades and candles are read from the store, up to the clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .._base.timeframes import Timeframe
from .._store.recording import RecordingStore
from ..records import Candle, Orderbook, Ticker, Trade

__all__ = ["LOOK_BACK_MS", "ReplayQuotes", "ReplayState", "add_trade", "candles_of"]

LOOK_BACK_MS = 3_600_000  # how far before the clock a ticker or book is looked for
_TRADE_WINDOWS_MS = (60_000, 3_600_000, 86_400_000, 7 * 86_400_000)


Q = TypeVar("Q", Ticker, Orderbook)


@dataclass
class ReplayState:
    """The last ticker and book of each market handed out by the replay."""

    tickers: dict[str, Ticker] = field(default_factory=dict)
    books: dict[str, Orderbook] = field(default_factory=dict)


def add_trade(candle: Candle | None, trade: Trade, tf: Timeframe) -> Candle:
    """The ``tf`` candle ``candle`` becomes with ``trade`` (a new one when the trade is in a
    later window, or there is none yet). A trade of an earlier window leaves it as it is."""
    start = tf.floor(trade.ms)
    price, volume = trade.price, trade.volume
    if candle is None or start > candle.start_ms:
        return Candle(
            trade.market, tf.name, start, price, price, price, price, volume, price * volume,
            trade.ms,
        )  # fmt: skip
    if start < candle.start_ms:
        return candle
    c = candle
    return Candle(
        c.market, c.timeframe, start, c.open, max(c.high, price), min(c.low, price), price,
        c.volume + volume, c.value + price * volume, max(c.last_trade_ms, trade.ms),
    )  # fmt: skip


def candles_of(trades: list[Trade], tf: Timeframe) -> list[Candle]:
    """The ``tf`` candles of ``trades`` (one market, in time order), ascending; windows
    without a trade have none."""
    out: list[Candle] = []
    for t in trades:
        if out and tf.floor(t.ms) == out[-1].start_ms:
            out[-1] = add_trade(out[-1], t, tf)
        elif not out or tf.floor(t.ms) > out[-1].start_ms:
            out.append(add_trade(None, t, tf))
    return out


class ReplayQuotes:
    """Quotation reads of ``recording`` as of ``now_ms()`` (the replay clock)."""

    def __init__(
        self, recording: RecordingStore, state: ReplayState, now_ms: Callable[[], int]
    ) -> None:
        self._recording = recording
        self._state = state
        self._now_ms = now_ms

    async def tickers(self, markets: list[str]) -> list[Ticker]:
        """The ticker of each market at the clock (markets with none yet are left out)."""
        return await self._as_of(markets, self._state.tickers, self._recording.tickers)

    async def orderbooks(self, markets: list[str]) -> list[Orderbook]:
        """The book of each market at the clock (markets with none yet are left out)."""
        return await self._as_of(markets, self._state.books, self._recording.orderbooks)

    async def _as_of(
        self,
        markets: list[str],
        held: Mapping[str, Q],
        recorded: Callable[[str, int, int], Awaitable[Sequence[Q]]],
    ) -> list[Q]:
        """Each market's latest record at the clock: the one the replay holds, unless it is
        newer than the clock (a seek back), else the latest recorded in the look-back."""
        now = self._now_ms()
        out = []
        for market in markets:
            record = held.get(market)
            if record is None or record.ms > now:
                found = await recorded(market, now - LOOK_BACK_MS, now + 1)
                record = found[-1] if found else None
            if record is not None:
                out.append(record)
        return out

    async def trades(self, market: str, count: int, cursor: int | None = None) -> list[Trade]:
        """The ``count`` most recent trades at or before the clock (before the trade
        ``cursor``, a sequential_id, when given), newest first."""
        now = self._now_ms()
        found: list[Trade] = []
        for window in _TRADE_WINDOWS_MS:
            found = await self._recording.trades(market, now - window, now + 1)
            if cursor is not None:
                found = [t for t in found if t.seq < cursor]
            if len(found) >= count:
                break
        return found[::-1][:count]

    async def candles(
        self, market: str, tf: Timeframe, count: int, to_ms: int | None = None
    ) -> tuple[list[Candle], int | None]:
        """The ``count`` most recent ``tf`` candles starting before ``to_ms`` (Upbit's
        ``to``, exclusive; None: now), built from the trades up to the clock, ascending;
        and the start of the one still forming at the clock (None when none is)."""
        now = self._now_ms()
        first = await self._recording.first_trade(market)
        if first is None:
            return [], None
        last_start = tf.floor(now) if to_ms is None else min(tf.floor(now), tf.floor(to_ms - 1))
        hi = min(now + 1, tf.next_start(last_start))
        span = count
        while True:
            lo = tf.shift(last_start, -(span - 1))
            trades = await self._recording.trades(market, lo, hi)
            trades.sort(key=lambda t: (t.ms, t.seq))
            candles = candles_of(trades, tf)
            if len(candles) >= count or lo <= first.ms:
                break
            span *= 2
        candles = candles[-count:]
        forming = (
            candles[-1].start_ms if candles and tf.next_start(candles[-1].start_ms) > now else None
        )
        return candles, forming
