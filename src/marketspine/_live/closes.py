"""Closed candles built from the trade stream, handed out only when the stream provably saw
every trade of their window (pure: events in, answers out; ``LiveState`` feeds it).

A window ``[s, e)`` of a followed (market, timeframe) is *proven* when:

- the market's trades have been delivered without a break since a trade before ``s`` (a
  *run*: it starts with the first trade delivered, the subscription's SNAPSHOT being the
  latest trade before it; a ``Gap`` of any kind — even one filled from REST —, a lost
  connection, a dropped subscription or trades a slow consumer dropped end it), under the
  stream's current liveness epoch (no reconnect or change of source since the run began);
- the builder has every trade of the window: it began after the oldest trade the builder
  started from (the live state's held trades, the last ones delivered) or, with none held,
  after the newest trade delivered before it was followed;
- every trade before ``e`` has arrived and was applied: a trade at or after ``e`` was
  delivered in the run (the stream sends trades in order, and the state is fed in order),
  or the caller says the stream is *flushed* (``LiveFeed.delivered``: a ping sent after the
  close came back, so everything upstream sent before it has been read, no fill of the
  market's trades is pending and the state has applied all of it) — how a quiet market's
  close is proven;
- no trade of the window arrived after a later one (a late trade), which would leave it
  unclear what upstream's candle holds.

What is handed out is the candle of the window, or None when the window had no trade.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._base.timeframes import Timeframe
from ..records import Candle, Trade
from .listener import Gap, Health, Overflow

__all__ = ["CloseProof", "LiveCloses", "add_trade", "first_candle"]

_LATE_KEPT = 8  # late-trade windows remembered per series: only the newest few matter


def first_candle(tf: Timeframe, trade: Trade) -> Candle:
    """The candle of ``trade``'s window holding that trade alone."""
    price = trade.price
    return Candle(
        trade.market, tf.name, tf.floor(trade.ms), price, price, price, price,
        trade.volume, price * trade.volume, trade.ms,
    )  # fmt: skip


def add_trade(candle: Candle, trade: Trade) -> Candle:
    """``candle`` with ``trade`` (of the same window) added; the close is the newest trade's."""
    return Candle(
        candle.market,
        candle.timeframe,
        candle.start_ms,
        candle.open,
        max(candle.high, trade.price),
        min(candle.low, trade.price),
        trade.price if trade.ms >= candle.last_trade_ms else candle.close,
        candle.volume + trade.volume,
        candle.value + trade.price * trade.volume,
        max(candle.last_trade_ms, trade.ms),
    )


class CloseProof(enum.Enum):
    PROVEN = "proven"  # every trade of the window was seen: the answer is final
    PENDING = "pending"  # not yet: no trade after the window has arrived
    UNPROVABLE = "unprovable"  # never: a trade of it may have been missed


@dataclass(slots=True)
class _Run:
    """A market's unbroken delivery: every trade after ``first_ms`` arrived, under ``epoch``."""

    first_ms: int
    epoch: int
    top_ms: int = -1  # the newest trade delivered in the run


@dataclass(slots=True)
class _Builder:
    """One followed (market, timeframe): the forming and the last closed candle."""

    tf: Timeframe
    from_ms: int  # windows starting at or after this were built from their first trade
    forming: Candle | None = None
    closed: Candle | None = None
    late: list[int] = field(default_factory=list)  # windows a late trade arrived for

    def add(self, trade: Trade) -> int | None:
        """Take one trade; returns the start of the window it arrived late for, if so."""
        start = self.tf.floor(trade.ms)
        current = self.forming
        if current is None or start > current.start_ms:
            self.closed = current
            self.forming = first_candle(self.tf, trade)
        elif start == current.start_ms:
            self.forming = add_trade(current, trade)
        else:
            self.late = [*self.late[-(_LATE_KEPT - 1) :], start]
            return start
        return None


class LiveCloses:
    """The followed series of every market; ``epoch()`` is the stream's liveness epoch (None
    while it is not live). ``on_late(market, timeframe, start_ms)`` hears of a trade that
    arrived after a later one, so a window handed out already can be taken back."""

    def __init__(self, epoch: Callable[[], int | None]) -> None:
        self._epoch = epoch
        self._runs: dict[str, _Run] = {}
        self._builders: dict[str, dict[str, _Builder]] = {}
        self._top_ms: dict[str, int] = {}  # the newest trade delivered per market, any run
        self.on_late: Callable[[str, str, int], None] = lambda market, timeframe, start: None

    def follow(self, market: str, tf: Timeframe, recent: Sequence[Trade] = ()) -> None:
        """Build ``tf``'s closed candles of ``market`` (kept if followed already), starting
        with ``recent``: the trades delivered last, in order, none missing among them."""
        held = self._builders.setdefault(market, {})
        if tf.name in held:
            return
        # A window starting after the oldest of them has all its trades among them or later;
        # without any, after the newest trade delivered (an earlier one is not held).
        oldest = recent[0].ms if recent else self._top_ms.get(market, -1)
        builder = held[tf.name] = _Builder(tf, oldest + 1)
        for trade in recent:
            builder.add(trade)

    def unfollow(self, market: str, timeframe: str) -> None:
        held = self._builders.get(market)
        if held is not None:
            held.pop(timeframe, None)
            if not held:
                del self._builders[market]

    def followed(self, market: str) -> list[str]:
        """The timeframes of ``market`` followed."""
        return list(self._builders.get(market, {}))

    def trade(self, trade: Trade) -> None:
        """A trade delivered (not a duplicate), in stream order."""
        market = trade.market
        self._top_ms[market] = max(self._top_ms.get(market, -1), trade.ms)
        epoch = self._epoch()
        run = self._runs.get(market)
        if epoch is None:
            self._runs.pop(market, None)  # not live: what comes now proves nothing
        elif run is None or run.epoch != epoch:
            self._runs[market] = _Run(trade.ms, epoch, trade.ms)
        else:
            run.top_ms = max(run.top_ms, trade.ms)
        for name, builder in self._builders.get(market, {}).items():
            late = builder.add(trade)
            if late is not None:
                self.on_late(market, name, late)

    def event(self, event: object) -> None:
        """Any other stream event: what breaks a run does so here."""
        if isinstance(event, Gap):
            # Even a hole filled from REST ends the run: its trades came from another source.
            # The first trade after the hole begins the next one.
            epoch = self._epoch()
            if epoch is None:
                self._runs.pop(event.market, None)
            else:
                self._runs[event.market] = _Run(event.until_ms, epoch)
        elif isinstance(event, Health) and event.state != "connected":
            self._runs.clear()
        elif isinstance(event, Overflow) and event.kind in ("trade", "gap", ""):
            if event.market:
                self._runs.pop(event.market, None)
            else:
                self._runs.clear()

    def unsubscribed(self, market: str) -> None:
        """The market's trades are no longer streamed: a later subscription starts afresh."""
        self._runs.pop(market, None)

    def close(
        self, market: str, timeframe: str, start_ms: int, *, flushed: bool = False
    ) -> tuple[CloseProof, Candle | None]:
        """Whether the stream proves the window of ``timeframe`` starting at ``start_ms``
        closed, and its candle (None: the window had no trade). ``flushed``: every trade
        upstream sent until after the window's end has been applied (see the module)."""
        builder = self._builders.get(market, {}).get(timeframe)
        run = self._runs.get(market)
        if (
            builder is None
            or run is None
            or run.first_ms >= start_ms
            or start_ms < builder.from_ms
            or start_ms in builder.late
            or run.epoch != self._epoch()
        ):
            return CloseProof.UNPROVABLE, None
        if run.top_ms < builder.tf.next_start(start_ms) and not flushed:
            return CloseProof.PENDING, None
        # The window's candle is the forming one (no trade after it yet) or the last closed
        # one; when neither starts there, it had no trade unless a later window has closed
        # since (its candle is no longer held).
        for candle in (builder.forming, builder.closed):
            if candle is not None and candle.start_ms == start_ms:
                return CloseProof.PROVEN, candle
        newest = [c.start_ms for c in (builder.forming, builder.closed) if c is not None]
        if sum(1 for s in newest if s > start_ms) == 2:
            return CloseProof.UNPROVABLE, None
        return CloseProof.PROVEN, None
