"""Live state fed by the WebSocket stream (pure: records in, answers out).

Latest ticker and orderbook per market, the most recent trades per market (deduplicated by
``sequential_id``), and the forming candle per market and timeframe as Upbit's candle stream
reports it. Every entry remembers when it arrived so callers can bound its age.

Everything a market holds here is one entry of the shared ``MemoryBudget``: the least
recently used market's tickers, book and trades are dropped when the budget is full (its
forming candles stay: they are tiny and cannot be rebuilt from REST).

Upbit sends a ticker only when something trades and a book only when it changes, so a quiet
market's last ticker may be an hour old and still current. While the stream's ``Liveness``
says everything sent upstream has arrived, ``live_ticker``/``live_orderbook`` answer what is
held whatever its age, as long as it arrived under the current epoch (the same connection or
source) and the subscription was not dropped since.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from .._base.memory import DEFAULT_MEMORY_MB, MemoryBudget, record_bytes
from .._base.timeframes import Timeframe
from ..records import Candle, Orderbook, Ticker, Trade
from .closes import LiveCloses, add_trade, first_candle
from .listener import Gap
from .stream import Liveness

__all__ = ["LiveState", "LiveStatistics"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LiveStatistics:
    tickers: int
    orderbooks: int
    trade_markets: int
    trades: int
    candles: int
    bytes: int = 0
    evicted_markets: int = 0


# A trade's slot in its market's deque: one pointer (each 64-slot block adds two links).
_TRADE_SLOT = 8
_LIVE = "live"


class LiveState:
    """What the stream has told us, bounded: at most ``trades_per_market`` trades each."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        trades_per_market: int = 1000,
        budget: MemoryBudget | None = None,
    ) -> None:
        self._clock = clock  # monotonic seconds
        self._trades_per_market = trades_per_market
        self.budget = budget or MemoryBudget.megabytes(DEFAULT_MEMORY_MB)
        self.budget.register(_LIVE, self._evicted)
        self._bytes: dict[str, int] = {}  # per market, as charged
        self._evicted_markets = 0
        self._tickers: dict[str, tuple[Ticker, float]] = {}
        self._books: dict[str, tuple[Orderbook, float]] = {}
        # The liveness epoch each ticker/book arrived under (see ``live_ticker``).
        self._epochs: dict[tuple[str, str], int] = {}
        self._liveness: Callable[[], Liveness | None] = lambda: None
        # Trades kept ascending by (ms, seq); seq alone does not guarantee order upstream.
        self._trades: dict[str, _Trades] = {}
        self._candles: dict[tuple[str, str], tuple[Candle, float]] = {}
        # Forming candles built from the trade stream, per market: timeframe name ->
        # (forming candle or None, the candle it closed last, trades at or before this ms
        # are already inside the REST seed).
        self._tracked: dict[str, dict[str, _Forming]] = {}
        # Closed candles of followed series, handed out once the stream proves them final.
        self.closes = LiveCloses(self.epoch)
        # Set (and replaced) whenever an event is applied; made on the first wait.
        self._applied: asyncio.Event | None = None

    def follow_liveness(self, liveness: Callable[[], Liveness | None]) -> None:
        """Take the stream's ``liveness()`` as the source of ``live_ticker``'s answers."""
        self._liveness = liveness

    def epoch(self) -> int | None:
        """The stream's current liveness epoch (None while it is not live)."""
        live = self._liveness()
        return None if live is None else live.epoch

    def apply(self, event: object) -> None:
        """Take one stream event; anything that is not market data is ignored."""
        now = self._clock()
        if isinstance(event, Ticker):
            held_ticker = self._tickers.get(event.market)
            self._tickers[event.market] = (event, now)
            self._stamp("ticker", event.market, self.epoch())
            self._resize(event.market, event, None if held_ticker is None else held_ticker[0])
        elif isinstance(event, Orderbook):
            held_book = self._books.get(event.market)
            self._books[event.market] = (event, now)
            self._stamp("orderbook", event.market, self.epoch())
            self._resize(event.market, event, None if held_book is None else held_book[0])
        elif isinstance(event, Trade):
            self._add_trade(event)
        elif isinstance(event, Gap) and not event.complete:
            # Trades were lost for good: every forming candle that spans the hole is wrong.
            for forming in self._tracked.get(event.market, {}).values():
                forming.invalidate(event.until_ms)
            self.closes.event(event)
        elif isinstance(event, Candle):
            key = (event.market, event.timeframe)
            held = self._candles.get(key)
            # A frame for an older window arriving late must not replace the newer one.
            if held is None or event.start_ms >= held[0].start_ms:
                self._candles[key] = (event, now)
                self._resize(event.market, event, None if held is None else held[0])
        else:
            self.closes.event(event)  # a filled gap, health, overflow: may break a run
        if self._applied is not None:
            self._applied.set()  # wakes every waiter; later waits get a fresh event
            self._applied = None

    async def wait_for(self, read: Callable[[], T | None]) -> T:
        """What ``read()`` returns once it is not None, asked again after every applied
        event (no polling); bound the wait with ``asyncio.timeout``."""
        while (value := read()) is None:
            if self._applied is None:
                self._applied = asyncio.Event()
            await self._applied.wait()
        return value

    def _resize(self, market: str, added: object | None, removed: object | None) -> None:
        """Charge the budget for ``market`` after a record was added and/or replaced."""
        size = self._bytes.get(market, 0)
        if added is not None:
            size += record_bytes(added)
        if removed is not None:
            size -= record_bytes(removed)
        self._bytes[market] = size
        self.budget.charge(_LIVE, market, size)

    def _stamp(self, kind: str, market: str, epoch: int | None) -> None:
        if epoch is None:
            self._epochs.pop((kind, market), None)
        else:
            self._epochs[(kind, market)] = epoch

    def unsubscribed(self, kind: str, market: str) -> None:
        """The stream stopped following ``kind`` of ``market``: what is held stays as an
        answer of known age, no longer a live one (a later subscription may come back to
        it before upstream's new snapshot has)."""
        self._epochs.pop((kind, market), None)
        if kind == "trade":
            self.closes.unsubscribed(market)

    def seed(self, kind: str, records: list[Ticker] | list[Orderbook], epoch: int | None) -> None:
        """Hold REST answers of subscribed markets as live ones: asked while the stream was
        live under ``epoch`` (read before asking) and still is, every change since the REST
        answer arrives over the stream. Older records than those held are ignored."""
        if epoch is None or self.epoch() != epoch:
            return
        now = self._clock()
        for record in records:
            if isinstance(record, Ticker):
                held_ticker = self._tickers.get(record.market)
                if held_ticker is None or held_ticker[0].trade_ms < record.trade_ms:
                    self._tickers[record.market] = (record, now)
                    old: object = None if held_ticker is None else held_ticker[0]
                elif self._epochs.get((kind, record.market)) != epoch:
                    old = record  # the held one is as new: it becomes live, same size
                else:
                    continue
            else:
                held_book = self._books.get(record.market)
                if held_book is None or held_book[0].ms < record.ms:
                    self._books[record.market] = (record, now)
                    old = None if held_book is None else held_book[0]
                elif self._epochs.get((kind, record.market)) != epoch:
                    old = record
                else:
                    continue
            self._stamp(kind, record.market, epoch)
            self._resize(record.market, record, old)

    def _evicted(self, key: Hashable) -> None:
        """The budget dropped this market: forget what it held (not its forming candles)."""
        market = str(key)
        self._tickers.pop(market, None)
        self._books.pop(market, None)
        self._epochs.pop(("ticker", market), None)
        self._epochs.pop(("orderbook", market), None)
        self._trades.pop(market, None)
        for candle_key in [k for k in self._candles if k[0] == market]:
            del self._candles[candle_key]
        self._bytes.pop(market, None)
        self._evicted_markets += 1

    def _touch(self, market: str) -> None:
        self.budget.touch(_LIVE, market)

    def track(self, market: str, timeframe: Timeframe, seed: Candle | None) -> None:
        """Keep the forming ``timeframe`` candle of ``market`` current from the trade stream,
        starting from ``seed`` (upstream's forming candle, or None if its window has no trade
        yet); trades up to the seed's last trade are already inside it."""
        cut = seed.last_trade_ms if seed is not None else -1
        forming = _Forming(timeframe, seed, None, cut)
        # Trades that arrived before tracking began still belong to the forming candle.
        held = self._trades.get(market)
        for trade in held.rows if held is not None else ():
            forming.add(trade)
        self._tracked.setdefault(market, {})[timeframe.name] = forming

    def untrack(self, market: str, timeframe: str) -> int:
        """Stop building ``timeframe``'s forming candle; returns how many stay tracked."""
        held = self._tracked.get(market, {})
        held.pop(timeframe, None)
        return len(held)

    def tracked_count(self, market: str) -> int:
        """How many forming candles of ``market`` are built from its trades."""
        return len(self._tracked.get(market, {}))

    def tracking(self, market: str, timeframe: str) -> bool:
        """True while the trade stream keeps this forming candle exact (False before
        tracking and after trades were lost, until a window starts after the loss)."""
        held = self._tracked.get(market, {}).get(timeframe)
        return held is not None and held.valid

    def forming(self, market: str, timeframe: str) -> Candle | None:
        """The forming candle built from trades (None before the first trade of a window)."""
        held = self._tracked.get(market, {}).get(timeframe)
        return None if held is None else held.candle

    def last_closed(self, market: str, timeframe: str) -> Candle | None:
        """The candle the trade stream closed most recently for ``timeframe``."""
        held = self._tracked.get(market, {}).get(timeframe)
        return None if held is None else held.closed

    def follow_closes(self, market: str, timeframe: Timeframe) -> None:
        """Build the closed candles of ``timeframe`` from the trade stream (``closes``),
        starting with the trades held: they are the last ones delivered, none missing among
        them, so a window that began after the oldest of them is whole already."""
        held = self._trades.get(market)
        self.closes.follow(market, timeframe, list(held.rows) if held is not None else [])

    def _add_trade(self, trade: Trade) -> None:
        held = self._trades.get(trade.market)
        if held is None:
            held = self._trades[trade.market] = _Trades()
        elif held.has(trade.seq):
            return
        for forming in self._tracked.get(trade.market, {}).values():
            forming.add(trade)
        self.closes.trade(trade)
        held.add(trade)
        if len(held.rows) > self._trades_per_market:
            held.rows.popleft()
            self._touch(trade.market)  # same size as before: one in, one out
        else:
            self._bytes[trade.market] = self._bytes.get(trade.market, 0) + _TRADE_SLOT
            self._resize(trade.market, trade, None)

    def ticker(self, market: str, max_age_s: float | None = None) -> Ticker | None:
        """The latest ticker if it is at most ``max_age_s`` old (any age when None)."""
        self._touch(market)
        return self._fresh(self._tickers.get(market), max_age_s)

    def orderbook(self, market: str, max_age_s: float | None = None) -> Orderbook | None:
        self._touch(market)
        return self._fresh(self._books.get(market), max_age_s)

    def live_ticker(self, market: str, max_age_s: float | None = None) -> Ticker | None:
        """The held ticker if the stream proves it current within ``max_age_s`` (see the
        module's docstring), else as ``ticker``: if it arrived at most that long ago."""
        self._touch(market)
        return self._live("ticker", market, self._tickers.get(market), max_age_s)

    def live_orderbook(self, market: str, max_age_s: float | None = None) -> Orderbook | None:
        """As ``live_ticker``, for the book."""
        self._touch(market)
        return self._live("orderbook", market, self._books.get(market), max_age_s)

    def _live(
        self, kind: str, market: str, held: tuple[T, float] | None, max_age_s: float | None
    ) -> T | None:
        if held is None:
            return None
        live = self._liveness()
        if (
            live is not None
            and self._epochs.get((kind, market)) == live.epoch
            and (max_age_s is None or live.age_s <= max_age_s)
        ):
            return held[0]
        return self._fresh(held, max_age_s)

    def candle(self, market: str, timeframe: str, max_age_s: float | None = None) -> Candle | None:
        """The latest candle the stream reported for ``timeframe`` (``Timeframe.name``)."""
        return self._fresh(self._candles.get((market, timeframe)), max_age_s)

    def trades(self, market: str, count: int) -> list[Trade]:
        """Up to ``count`` most recent trades, newest first."""
        self._touch(market)
        held = self._trades.get(market)
        if held is None or count <= 0:
            return []
        return list(itertools.islice(reversed(held.rows), count))

    def trade_count(self, market: str) -> int:
        held = self._trades.get(market)
        return 0 if held is None else len(held.rows)

    def age_s(self, kind: str, market: str) -> float | None:
        """Seconds since the last ``ticker``/``orderbook`` of ``market`` arrived."""
        held: tuple[object, float] | None
        if kind == "ticker":
            held = self._tickers.get(market)
        elif kind == "orderbook":
            held = self._books.get(market)
        else:
            raise ValueError(f"unknown kind {kind!r}: expected ticker or orderbook")
        return None if held is None else self._clock() - held[1]

    def _fresh(self, held: tuple[T, float] | None, max_age_s: float | None) -> T | None:
        if held is None:
            return None
        if max_age_s is not None and self._clock() - held[1] > max_age_s:
            return None
        return held[0]

    def statistics(self) -> LiveStatistics:
        return LiveStatistics(
            tickers=len(self._tickers),
            orderbooks=len(self._books),
            trade_markets=len(self._trades),
            trades=sum(len(held.rows) for held in self._trades.values()),
            candles=len(self._candles),
            bytes=sum(self._bytes.values()),
            evicted_markets=self._evicted_markets,
        )


class _Trades:
    """One market's most recent trades, ascending by (ms, seq).

    A deque and no set of ids beside it: the deque grows and shrinks in fixed blocks, where
    a list regrown after every eviction and a set's table rebuilt as ids come and go left
    holes in the C heap that kept RSS climbing while the budget's total stayed flat."""

    __slots__ = ("rows", "top")

    def __init__(self) -> None:
        self.rows: deque[Trade] = deque()
        self.top = -1  # the highest sequential id held: a higher one is new without a scan

    def has(self, seq: int) -> bool:
        return seq <= self.top and any(held.seq == seq for held in self.rows)

    def add(self, trade: Trade) -> None:
        rows = self.rows
        if not rows or (rows[-1].ms, rows[-1].seq) <= (trade.ms, trade.seq):
            rows.append(trade)
        else:
            at = bisect.bisect(rows, (trade.ms, trade.seq), key=lambda t: (t.ms, t.seq))
            rows.insert(at, trade)
        self.top = max(self.top, trade.seq)


class _Forming:
    """One forming candle fed by trades (mutable, owned by LiveState)."""

    __slots__ = ("candle", "closed", "cut_ms", "timeframe", "valid")

    def __init__(
        self, timeframe: Timeframe, candle: Candle | None, closed: Candle | None, cut_ms: int
    ) -> None:
        self.timeframe = timeframe
        self.candle = candle
        self.closed = closed
        self.cut_ms = cut_ms
        self.valid = True

    def invalidate(self, lost_until_ms: int) -> None:
        """Trades before ``lost_until_ms`` are missing: drop what was built and start again
        with the first window that begins after the loss."""
        self.candle = self.closed = None
        self.valid = False
        self.cut_ms = self.timeframe.next_start(self.timeframe.floor(lost_until_ms)) - 1

    def add(self, trade: Trade) -> None:
        if not self.valid:
            if trade.ms <= self.cut_ms:
                return
            self.valid = True
        if (
            trade.ms <= self.cut_ms
            and self.candle is not None
            and self.timeframe.floor(trade.ms) == self.candle.start_ms
        ):
            return  # already inside the REST seed
        start = self.timeframe.floor(trade.ms)
        current = self.candle
        if current is not None and start < current.start_ms:
            return  # a late trade of a closed window: that candle is final upstream too
        if current is None or start > current.start_ms:
            if current is not None:
                self.closed = current
            self.candle = first_candle(self.timeframe, trade)
            return
        self.candle = add_trade(current, trade)
